"""Running phase 0 and the shops' phases, and reporting on them: shared by `demo` and `migrate`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from handyshop_migration.cli.environment import say, table


def run_phase0(defs: Any, instance: Any, shops: Sequence[int] | None = None) -> tuple[bool, list[str]]:
    """Phase 0; `shops` are the shops this migration moves (the connection budget plans for them)."""
    from handyshop_migration.pipeline.runner import run_job

    say("phase 0: backup, catalog drift, validation …")
    config = {"ops": {"source_validation": {"config": {"shops": list(shops)}}}} if shops is not None else None
    outcome = run_job(defs, instance, "prepare_source", run_config=config)
    lines = []
    for c in outcome.checks:
        if c.passed:
            continue
        first = c.metadata.get("first") or c.metadata.get("fix") or ""
        lines.append(f"  [{'FAILED' if c.severity == 'ERROR' else 'warning'}] {c.check}: {first}")
        details = c.metadata.get("details") or []
        if c.check == "cross_shop_references":
            for d in details:
                for ref in (d.get("details") or {}).get("references", [])[:20]:
                    lines.append(
                        f"      {d.get('table')}.id={ref.get('id')} (shop {ref.get('shop')}) -> "
                        f"{(d.get('details') or {}).get('parent_table')}.id={ref.get('parent_id')} "
                        f"(shop {ref.get('parent_shop')})"
                    )
    for failure in outcome.failures:
        if "blocking asset check" not in failure:
            lines.append(f"  [FAILED] {failure}")
    for line in lines:
        say(line)
    ok = not outcome.failed_checks and all("blocking asset check" in f for f in outcome.failures)
    say(f"phase 0 {'passed' if ok else 'FAILED'} in {outcome.seconds:.1f}s ({len(outcome.checks)} checks)")
    return ok, lines


def shop_line(o: Any) -> str:
    """One line per shop: where it is now, what the runs of this command did, and why it stopped."""
    done = "done" if o.done else "NOT done"
    extra = f" — {o.notes[0]}" if o.notes and not o.done else ""
    already = " (already there before this run)" if o.already else ""
    return (
        f"  shop {o.shop_id}: {o.state} ({done}{already}), {o.tables} tables, {o.rows} rows, {o.gates_passed} gates "
        f"passed, {o.gates_failed} failed ({o.seconds:.1f}s){extra}"
    )


def summary(outcomes: Sequence[Any], names: dict[int, str], writes: dict[int, Any] | None = None) -> str:
    headers = ["shop", "name", "tables", "rows", "gates passed", "gates failed", "verified", "state"]
    if writes is not None:
        headers += ["writes during migration", "found where it lives"]
    rows = []
    for o in outcomes:
        row: list[object] = [o.shop_id, names.get(o.shop_id, "")[:28], o.tables, o.rows, o.gates_passed,
                             o.gates_failed, "yes" if o.verified else "NO", o.state]
        if writes is not None:
            w = writes.get(o.shop_id)
            row += [w.made if w else 0, f"{w.found}/{w.rows}" if w else "-"]
        rows.append(row)
    total: list[object] = ["all", "", sum(o.tables for o in outcomes), sum(o.rows for o in outcomes),
                           sum(o.gates_passed for o in outcomes), sum(o.gates_failed for o in outcomes),
                           f"{sum(o.verified for o in outcomes)}/{len(outcomes)}", ""]
    if writes is not None:
        total += [sum(w.made for w in writes.values()),
                  f"{sum(w.found for w in writes.values())}/{sum(w.rows for w in writes.values())}"]
    return table(headers, [*rows, total])


def shop_names(source: Any, catalog: Any = None) -> dict[int, str]:
    """Every tenant the catalog's tenants table lists (the catalog of HANDYSHOP_CATALOG by default)."""
    import os

    from handyshop_migration import settings
    from handyshop_migration.tenancy.engine.catalog import load_catalog
    from handyshop_migration.tenancy.engine.shops import list_shops

    catalog = catalog or load_catalog(os.environ.get(settings.CATALOG) or None)
    with source.connect() as conn:
        return {s.id: s.name for s in list_shops(conn, catalog.require_tenants())}

