"""`handyshop-migration`: the command line.

  demo      embedded server, realistic shared database, every phase through Dagster, verification table
  dev       the same stack under `dagster dev` on 127.0.0.1:3000, to click through the pipeline
  prepare   phase 0 on the servers named by the environment (backup, catalog drift, validation)
  migrate   phases 1-2 (and 3-5 with --through-phase) on the servers named by the environment (production path)
  rollback  the way back from a phase for one shop
  status    one line per shop: phase reached, gates, rows, last run
  inspect   write the catalog of any shared database with a tenant column
  seed      create a realistic shared Handyshop database (for staging, tests, benchmarks)
  add-shop  a shop signing up (to watch the sensor pick it up)

Errors are one line naming the problem and the fix; secrets are never printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from handyshop_migration import settings
from handyshop_migration.tenancy.errors import ConfigurationError, HandyshopError

EPILOG = f"""environment (migrate, prepare, status):
  {settings.SOURCE_URL}      the shared database, postgresql://USER:PASSWORD@HOST:PORT/DBNAME
  {settings.ENCRYPTION_KEY}     64 hex characters (openssl rand -hex 32); encrypts tenant passwords
  {settings.ADMIN_URL}       CREATEDB+CREATEROLE on the tenant server (default: the source server)
  {settings.CATALOG}         catalog file (default: the packaged Handyshop catalog)
  {settings.BACKUP_DIR}      where phase 0 writes its pg_dump (default: ./backups)
  DAGSTER_HOME               the Dagster instance (dagster.yaml) that records the runs
"""


# -- output -------------------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def say(text: str = "") -> None:
    print(text, flush=True)


def _require(names: tuple[settings.Required, ...]) -> None:
    missing = settings.missing(names)
    if missing:
        raise ConfigurationError(
            "; ".join(f"{m.name} is not set ({m.purpose})" for m in missing) + ". See `handyshop-migration --help`."
        )


def _preflight() -> Any:
    """Check the environment before any run: variables set, key well-formed, shared database reachable.
    Returns the source ConnectionSpec."""
    from handyshop_migration.tenancy.dsn import ConnectionSpec
    from handyshop_migration.tenancy.encryption import CredentialCipher

    _require(settings.REQUIRED_FOR_MIGRATION)
    CredentialCipher.from_env()
    source = ConnectionSpec.from_url(os.environ[settings.SOURCE_URL], name=settings.SOURCE_URL)
    source.connect().close()
    if os.environ.get(settings.ADMIN_URL):
        ConnectionSpec.from_url(os.environ[settings.ADMIN_URL], name=settings.ADMIN_URL).connect().close()
    return source


def _instance() -> Any:
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME", "")
    if not home:
        raise ConfigurationError(
            "DAGSTER_HOME is not set: point it at a directory holding dagster.yaml (see the repository's "
            "dagster.yaml), so that the runs are recorded where the webserver shows them."
        )
    if not Path(home).is_dir():
        raise ConfigurationError(f"DAGSTER_HOME={home} is not a directory; create it and put dagster.yaml in it.")
    from handyshop_migration.pipeline.runner import prepare_instance

    return prepare_instance(dg.DagsterInstance.get())


def _quiet_dagster() -> None:
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="dagster")


# -- phase 0 and shops, shared by demo and migrate ----------------------------------------------------------


def _run_phase0(defs: Any, instance: Any) -> tuple[bool, list[str]]:
    from handyshop_migration.pipeline.runner import run_job

    say("phase 0: backup, catalog drift, validation …")
    outcome = run_job(defs, instance, "prepare_source")
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


PHASE_NAMES = {2: "verified", 3: "synced", 4: "cut over", 5: "retired"}


def _shop_line(o: Any) -> str:
    state = PHASE_NAMES.get(o.reached, "NOT verified")
    extra = f" — {o.notes[0]}" if o.notes and o.reached < max([2, *o.later]) else ""
    seconds = o.run.seconds + sum(r.seconds for r in o.later.values())
    return (
        f"  shop {o.shop_id}: {state}, {o.tables} tables, {o.rows} rows, {o.gates_passed} gates passed, "
        f"{o.gates_failed} failed ({seconds:.1f}s){extra}"
    )


def _later_phases(defs: Any, instance: Any, outcomes: Sequence[Any], through: int, confirm_retirement: bool) -> None:
    """Phases 3..through for every shop that reached the phase before, phase by phase across shops."""
    from handyshop_migration.pipeline.runner import advance_shop

    for phase in range(3, through + 1):
        ready = [o for o in outcomes if o.reached == phase - 1]
        if not ready:
            return
        say(f"phase {phase} ({PHASE_NAMES[phase]}) for {len(ready)} shops …")
        for o in ready:
            advance_shop(defs, instance, o, phase, confirm_retirement=confirm_retirement)
            say(_shop_line(o))


def _summary(outcomes: Sequence[Any], names: dict[int, str], writes: dict[int, Any] | None = None) -> str:
    headers = ["shop", "name", "tables", "rows", "gates passed", "gates failed", "verified", "phase"]
    if writes is not None:
        headers += ["writes during migration", "found in tenant"]
    rows = []
    for o in outcomes:
        row: list[object] = [o.shop_id, names.get(o.shop_id, "")[:28], o.tables, o.rows, o.gates_passed,
                             o.gates_failed, "yes" if o.verified else "NO", PHASE_NAMES.get(o.reached, "-")]
        if writes is not None:
            w = writes.get(o.shop_id)
            row += [w.made if w else 0, f"{w.found}/{w.rows}" if w and w.tenant else "-"]
        rows.append(row)
    total: list[object] = ["all", "", sum(o.tables for o in outcomes), sum(o.rows for o in outcomes),
                           sum(o.gates_passed for o in outcomes), sum(o.gates_failed for o in outcomes),
                           f"{sum(o.verified for o in outcomes)}/{len(outcomes)}", ""]
    if writes is not None:
        total += [sum(w.made for w in writes.values()),
                  f"{sum(w.found for w in writes.values() if w.tenant)}/{sum(w.rows for w in writes.values() if w.tenant)}"]
    return table(headers, [*rows, total])


def _shop_names(source: Any) -> dict[int, str]:
    from handyshop_migration.tenancy.shops import list_shops

    with source.connect() as conn:
        return {s.id: s.name for s in list_shops(conn)}


# -- commands -----------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from handyshop_migration.local import LocalStack
    from handyshop_migration.seed import ensure_database, seed_database

    _quiet_dagster()
    stack = LocalStack(Path(args.data_dir), version=args.pg_version)
    say(f"demo: fresh stack in {stack.root} (embedded PostgreSQL {args.pg_version}) …")
    stack.reset()
    stack.start()
    app = None
    try:
        stack.ensure_storage()
        source = ensure_database(stack.admin, "handyshop")
        say(f"seeding the shared database: {args.shops} shops, scale {args.scale}, seed {args.seed} …")
        report = seed_database(
            source, shops=args.shops, scale=args.scale, seed=args.seed, cross_shop_reference=args.cross_shop_reference
        )
        say(f"  {sum(report.table_rows.values())} rows in {len(report.table_rows)} tables")
        stack.apply_environment()
        from handyshop_migration.definitions import build_definitions
        from handyshop_migration.pipeline.runner import migrate_shops

        instance = _instance()
        defs = build_definitions()
        if args.through_phase >= 3:
            app, thread, stop = _start_app(source, report.shop_ids, args.seed)
            say("a simulated application writes to random shops from now on (through the routing function) …")
        phase0_ok, _ = _run_phase0(defs, instance)
        say(f"phases 1-2 for {len(report.shop_ids)} shops (one Dagster run each) …")
        outcomes = migrate_shops(defs, instance, report.shop_ids, progress=lambda o: say(_shop_line(o)))
        _later_phases(defs, instance, outcomes, args.through_phase, confirm_retirement=True)
        writes = None
        if app is not None:
            stop.set()
            thread.join()
            writes = _check_writes(app, stack, outcomes)
        say()
        say(_summary(outcomes, _shop_names(source), writes))
        all_found = writes is None or all(w.found == w.rows for w in writes.values() if w.tenant)
        ok = (
            phase0_ok
            and all(o.reached == args.through_phase and o.gates_failed == 0 for o in outcomes)
            and all_found
            and (app is None or not app.errors)
        )
        say()
        if app is not None:
            say(f"the application made {sum(app.writes.values())} writes ({dict(app.ops)}); "
                f"{app.fence_retries} retries met a fence during cutovers; errors: {app.errors[:3] or 'none'}")
            for shop, w in sorted((writes or {}).items()):
                for line in w.missing[:5]:
                    say(f"  MISSING shop {shop}: {line}")
        say("all gates passed." if ok else "some gates FAILED (see above).")
        say(f"runs are recorded in {stack.dagster_home}; `handyshop-migration dev --data-dir {args.data_dir}` shows them.")
        return 0 if ok else 1
    finally:
        if app is not None:
            app.close()
        stack.stop()


def _start_app(source: Any, shops: Sequence[int], seed: int) -> tuple[Any, Any, Any]:
    from handyshop_migration.simulation import SimulatedApp
    from handyshop_migration.tenancy.encryption import CredentialCipher
    from handyshop_migration.tenancy.registry import ConnectionRegistry
    from handyshop_migration.tenancy.routing import RouteResolver, RoutingTable

    registry = ConnectionRegistry(source, CredentialCipher.from_env())
    registry.ensure_schema()
    routing = RoutingTable(source)
    routing.ensure_schema()
    app = SimulatedApp(source, RouteResolver(routing, registry, source, ttl=1.0), shops, seed=seed)
    thread, stop = app.start(pause=0.02)
    return app, thread, stop


def _check_writes(app: Any, stack: Any, outcomes: Sequence[Any]) -> dict[int, Any]:
    """Per shop: writes the app made, and how many of the rows it wrote are as it left them where the shop
    lives now (its tenant once cut over, else the shared database)."""
    from handyshop_migration.tenancy.routing import RoutingTable

    routing = RoutingTable(stack.source)
    naming = os.environ.get(settings.TENANT_DATABASE) or "shop_{id}_db"

    def home(shop: int) -> tuple[Any, bool]:
        if routing.get(shop).writes == "tenant":
            return stack.admin.with_db(naming.format(id=shop)), False
        return stack.source, True

    results = app.verify(home)
    for shop, result in results.items():
        result.tenant = routing.get(shop).writes == "tenant"
    return results


def cmd_dev(args: argparse.Namespace) -> int:
    from handyshop_migration.local import LocalStack
    from handyshop_migration.seed import ensure_database, seed_database

    _quiet_dagster()
    stack = LocalStack(Path(args.data_dir), version=args.pg_version)
    stack.start()
    try:
        stack.ensure_storage()
        with stack.admin.connect() as conn:
            seeded = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'handyshop'").fetchone() is not None
        source = ensure_database(stack.admin, "handyshop")
        if not seeded:
            say(f"seeding the shared database: {args.shops} shops, scale {args.scale} …")
            seed_database(source, shops=args.shops, scale=args.scale, seed=args.seed)
        stack.apply_environment()
        from handyshop_migration.definitions import build_definitions
        from handyshop_migration.pipeline.gates import VALIDATION
        from handyshop_migration.pipeline.runner import register_shops

        instance = _instance()
        defs = build_definitions()
        if not instance.fetch_materializations(VALIDATION, limit=1).records:
            _run_phase0(defs, instance)
        # Existing shops become partitions for the operator to materialize; the sensor takes the new ones.
        register_shops(instance, _shop_names(source).keys())
        say(f"Dagster UI on http://127.0.0.1:{args.port} — materialize shop partitions of tenant_database and the "
            "tenant tables, or add a shop (handyshop-migration add-shop) and watch new_shops_sensor. Ctrl-C stops.")
        cmd = [sys.executable, "-m", "dagster", "dev", "-m", "handyshop_migration.definitions",
               "-h", "127.0.0.1", "-p", str(args.port)]
        proc = subprocess.Popen(cmd, env=os.environ.copy())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            proc.wait(timeout=30)
            return 0
    finally:
        stack.stop()


def cmd_prepare(args: argparse.Namespace) -> int:
    _preflight()
    _quiet_dagster()
    from handyshop_migration.definitions import build_definitions

    ok, _ = _run_phase0(build_definitions(), _instance())
    return 0 if ok else 1


def _parse_shops(text: str, available: Sequence[int]) -> list[int]:
    if text == "all":
        return list(available)
    try:
        wanted = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigurationError(f"--shops {text!r}: give 'all' or comma-separated shop ids, e.g. --shops 3,7,12") from None
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigurationError(
            f"--shops names shops the shared database does not have: {', '.join(map(str, unknown))}."
        )
    return wanted


def cmd_migrate(args: argparse.Namespace) -> int:
    source = _preflight()
    _quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.gates import VALIDATION
    from handyshop_migration.pipeline.runner import migrate_shops

    names = _shop_names(source)
    global_ids = set(settings.global_shop_ids())
    shops = _parse_shops(args.shops, [s for s in names if s not in global_ids])
    instance = _instance()
    defs = build_definitions()
    if not instance.fetch_materializations(VALIDATION, limit=1).records:
        _run_phase0(defs, instance)
    if args.through_phase == 5 and not args.confirm_retirement:
        raise ConfigurationError(
            "--through-phase 5 deletes the shops' rows from the shared database (after archiving them): "
            "add --confirm-retirement to say so."
        )
    say(f"phases 1-2 for {len(shops)} shops …")
    outcomes = migrate_shops(defs, instance, shops, progress=lambda o: say(_shop_line(o)))
    _later_phases(defs, instance, outcomes, args.through_phase, confirm_retirement=args.confirm_retirement)
    say()
    say(_summary(outcomes, names))
    return 0 if all(o.reached == args.through_phase for o in outcomes) else 1


WAYS_BACK = {1: "rollback_shop", 2: "rollback_copy", 3: "rollback_capture", 4: "rollback_cutover", 5: "restore_retired_shop"}


def cmd_rollback(args: argparse.Namespace) -> int:
    _preflight()
    _quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.runner import run_job

    job = WAYS_BACK[args.phase]
    outcome = run_job(
        build_definitions(), _instance(), job, partition_key=str(args.shop),
        run_config={"ops": {f"{job}_op": {"config": {"confirm": args.confirm}}}},
    )
    for failure in outcome.failures:
        say(f"  {failure}")
    say(f"{job} for shop {args.shop}: {'done' if outcome.success else 'FAILED'} (run {outcome.run_id})")
    return 0 if outcome.success else 1


def cmd_status(args: argparse.Namespace) -> int:
    _quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.status import shop_status

    instance = _instance()
    defs = build_definitions()
    rows = shop_status(defs, instance)
    if not rows:
        say("no shops registered yet (run `handyshop-migration migrate` or let new_shops_sensor add them).")
        return 0
    say(table(("shop", "phase", "gates passed", "gates failed", "rows", "registry", "route", "last run"),
              [(r.shop, r.phase, r.gates_passed, r.gates_failed, r.rows, r.registry, r.route, r.last_run) for r in rows]))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from handyshop_migration.tenancy.catalog import introspect
    from handyshop_migration.tenancy.dsn import ConnectionSpec
    from handyshop_migration.tenancy.tenant_schema import render

    url = args.source_url or os.environ.get(settings.SOURCE_URL, "")
    if not url:
        raise ConfigurationError(f"give --source-url or set {settings.SOURCE_URL}.")
    spec = ConnectionSpec.from_url(url, name="--source-url")
    include = [t for t in args.tables.split(",") if t] if args.tables else None
    exclude = [t for t in args.exclude.split(",") if t]
    catalog = introspect(spec, tenant_column=args.tenant_column, schema=args.schema, include=include, exclude=exclude)
    out = Path(args.output)
    catalog.save(out)
    say(f"wrote {out}: {len(catalog.tables)} tenant tables (tenant column {catalog.tenant_column!r}), "
        f"checksum {catalog.checksum[:12]}…")
    say("  tables, parents first: " + ", ".join(catalog.table_names))
    for note in render(catalog).notes:
        say(f"  note: {note}")
    say(f"use it: {settings.CATALOG}={out} (the definitions then build one asset per table)")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from handyshop_migration.seed import ensure_database, seed_database
    from handyshop_migration.tenancy.dsn import ConnectionSpec

    spec = ConnectionSpec.from_url(args.url, name="--url")
    ensure_database(spec.with_db("postgres"), spec.dbname)
    report = seed_database(
        spec,
        shops=args.shops,
        scale=args.scale,
        seed=args.seed,
        big_shop_rows=args.big_shop_rows,
        cross_shop_reference=args.cross_shop_reference,
        orphan_rows=args.orphan_rows,
    )
    say(f"seeded {spec.describe()}: {len(report.shop_ids)} shops, {sum(report.table_rows.values())} rows")
    return 0


def cmd_add_shop(args: argparse.Namespace) -> int:
    from handyshop_migration.seed import add_shop
    from handyshop_migration.tenancy.dsn import ConnectionSpec

    url = args.url or os.environ.get(settings.SOURCE_URL, "")
    if not url and Path(args.data_dir).exists():
        from handyshop_migration.local import LocalStack

        stack = LocalStack(Path(args.data_dir))
        stack.start()
        url = stack.source.url().reveal()
    if not url:
        raise ConfigurationError(f"give --url, set {settings.SOURCE_URL}, or run `handyshop-migration dev` first.")
    shop = add_shop(ConnectionSpec.from_url(url, name="--url"), name=args.name, scale=args.scale)
    say(f"shop {shop} ({args.name}) added; new_shops_sensor picks it up on its next tick.")
    return 0


# -- parser -------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handyshop-migration",
        description="Move a shared multi-tenant PostgreSQL database to one database per shop, through Dagster, "
        "with verification gates and a way back.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    def local_options(p: argparse.ArgumentParser, shops: int) -> None:
        p.add_argument("--shops", type=_positive_int, default=shops, help=f"shops to seed (default {shops})")
        p.add_argument("--scale", type=_positive_float, default=0.1, help="rows per shop, 1.0 ≈ 2,000 (default 0.1)")
        p.add_argument("--seed", type=int, default=42, help="random seed of the generated data (default 42)")
        p.add_argument("--data-dir", default=".handyshop", help="where the embedded server and DAGSTER_HOME live")
        p.add_argument("--pg-version", type=int, choices=(16, 18), default=18, help="embedded PostgreSQL version")

    p = command("demo", cmd_demo, "Seed a realistic shared database on an embedded server, run phases 0-5 "
                "through Dagster while a simulated application keeps writing, print the per-shop verification "
                "table; exit 1 if any gate failed or any write was lost.")
    local_options(p, 5)
    p.add_argument("--cross-shop-reference", action="store_true",
                   help="plant a repair pointing at another shop's customer (the gates must catch it)")
    p.add_argument("--through-phase", type=int, choices=(2, 3, 4, 5), default=5,
                   help="last phase (default 5); from 3 on, a simulated application writes throughout")

    p = command("dev", cmd_dev, "Embedded server + seeded database + `dagster dev` on 127.0.0.1, with the "
                "environment set, to click through the pipeline in the UI.")
    local_options(p, 5)
    p.add_argument("--port", type=int, default=3000, help="webserver port (default 3000)")

    command("prepare", cmd_prepare, "Phase 0 on the servers named by the environment: backup, catalog drift, "
            "validation. Exit 1 if a gate failed.")

    p = command("migrate", cmd_migrate, "Phases 1-2 (provision, copy, verify) and, with --through-phase, 3 (sync), "
                "4 (cutover), 5 (retirement) for shops of the shared database named by the environment; phase 0 "
                "first if it never ran. Exit 1 if a shop did not get through.")
    p.add_argument("--shops", default="all", help="'all' (default) or comma-separated shop ids")
    p.add_argument("--through-phase", type=int, choices=(2, 3, 4, 5), default=2, help="last phase to run (default 2)")
    p.add_argument("--confirm-retirement", action="store_true",
                   help="phase 5 deletes the shops' rows from the shared database (archived first): required for 5")

    p = command("rollback", cmd_rollback, "The way back from a phase for one shop: 1 deprovision, 2 empty and "
                "reload, 3 stop capture, 4 writes back to the shared database, 5 restore the archive.")
    p.add_argument("--phase", type=int, choices=(1, 2, 3, 4, 5), required=True)
    p.add_argument("--shop", type=int, required=True)
    p.add_argument("--confirm", required=True, help="the shop's tenant database name, e.g. shop_5_db")

    command("status", cmd_status, "One line per shop: phase reached, gates passed/failed, rows, last run.")

    p = command("inspect", cmd_inspect, "Write the catalog of a shared database (tables with the tenant column, "
                "columns, keys, foreign-key order) for the definitions to be built from.")
    p.add_argument("--source-url", default="", help=f"shared database URL (default: ${settings.SOURCE_URL})")
    p.add_argument("--output", required=True, help="catalog file to write (JSON)")
    p.add_argument("--tenant-column", default="shop_id", help="the column that names the tenant (default shop_id)")
    p.add_argument("--schema", default="public", help="schema of the tenant tables (default public)")
    p.add_argument("--tables", default="", help="exactly these tables (comma-separated); default: all with the column")
    p.add_argument("--exclude", default="users",
                   help="tables that carry the tenant column but stay shared (default: users)")

    p = command("seed", cmd_seed, "Create a realistic shared Handyshop database (refuses a database that has one).")
    p.add_argument("--url", required=True, help="target database URL (created if missing)")
    p.add_argument("--shops", type=_positive_int, default=5)
    p.add_argument("--scale", type=_positive_float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--big-shop-rows", type=_positive_int, default=None, help="give shop 1 this many repairs")
    p.add_argument("--cross-shop-reference", action="store_true")
    p.add_argument("--orphan-rows", action="store_true")

    p = command("add-shop", cmd_add_shop, "Add a shop to the shared database, as a sign-up would.")
    p.add_argument("--name", required=True)
    p.add_argument("--url", default="", help=f"shared database URL (default: ${settings.SOURCE_URL}, else the dev stack)")
    p.add_argument("--scale", type=_positive_float, default=1.0)
    p.add_argument("--data-dir", default=".handyshop")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HandyshopError as exc:
        print(f"handyshop-migration {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
