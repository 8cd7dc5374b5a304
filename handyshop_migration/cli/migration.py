"""Verbs of the production path: `prepare`, `migrate`, `rollback`, `status`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from handyshop_migration import settings
from handyshop_migration.cli.environment import dagster_instance, preflight, quiet_dagster, say, table
from handyshop_migration.cli.runs import run_phase0, shop_line, shop_names, summary
from handyshop_migration.tenancy.errors import ConfigurationError
from handyshop_migration.tenancy.names import DEFAULT_DATABASE_PATTERN


def cmd_prepare(args: argparse.Namespace) -> int:
    source = preflight()
    quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.tenancy.engine.catalog import load_catalog

    catalog = load_catalog(os.environ.get(settings.CATALOG) or None)
    planned = None
    if args.shops.strip() != "all":  # the connection budget plans for these shops
        planned = parse_shops(args.shops, list(shop_names(source, catalog)))
    ok, _ = run_phase0(build_definitions(catalog), dagster_instance(), planned)
    return 0 if ok else 1


def parse_shops(text: str, available: Sequence[int]) -> list[int]:
    if text.strip() == "all":
        return list(available)
    try:
        wanted = list(dict.fromkeys(int(x) for x in text.split(",") if x.strip()))
    except ValueError:
        raise ConfigurationError(f"--shops {text!r}: give 'all' or comma-separated shop ids, e.g. --shops 3,7,12") from None
    if not wanted:
        raise ConfigurationError(f"--shops {text!r} names no shop: give 'all' or comma-separated shop ids, e.g. --shops 3,7")
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ConfigurationError(
            f"--shops names shops the shared database does not have (or global ids): {', '.join(map(str, unknown))}."
        )
    return wanted


def phase0_current(instance: object) -> bool:
    """Whether the newest phase 0 run succeeded (a failed one — a backup that ran out of disk — is retried)."""
    import dagster as dg

    runs = instance.get_runs(dg.RunsFilter(job_name="prepare_source"), limit=1)  # type: ignore[attr-defined]
    return bool(runs) and runs[0].status == dg.DagsterRunStatus.SUCCESS


def cmd_migrate(args: argparse.Namespace) -> int:
    source = preflight()
    quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.runner import advance_shops
    from handyshop_migration.tenancy.engine.catalog import load_catalog
    from handyshop_migration.tenancy.lifecycle import Lifecycle

    if args.through_phase == 5 and not args.confirm_retirement:
        raise ConfigurationError(
            "--through-phase 5 deletes the shops' rows from the shared database (after archiving them): "
            "add --confirm-retirement to say so."
        )
    catalog = load_catalog(os.environ.get(settings.CATALOG) or None)
    names = shop_names(source, catalog)
    global_ids = set(settings.global_shop_ids())
    shops = parse_shops(args.shops, [s for s in names if s not in global_ids])
    instance = dagster_instance()
    defs = build_definitions(catalog)
    if not phase0_current(instance):
        ok, lines = run_phase0(defs, instance, shops)
        if any("source_backup" in line for line in lines):
            say("no shop is migrated without a verified backup of the shared database: fix the cause above and run "
                "again (phase 0 runs again first).")
            return 1
    lifecycle = Lifecycle(source)
    lifecycle.ensure_schema()
    naming = os.environ.get(settings.TENANT_DATABASE) or DEFAULT_DATABASE_PATTERN
    workers = min(getattr(args, "workers", 1), len(shops))
    say(f"{len(shops)} shops through phase {args.through_phase}"
        + (f" in {workers} worker processes" if workers > 1 else "") + " …")
    if workers > 1:
        from handyshop_migration.pipeline.runner import register_shops
        from handyshop_migration.pipeline.workers import advance_in_workers

        register_shops(instance, shops)
        outcomes = advance_in_workers(
            workers, shops, args.through_phase, confirm_retirement=args.confirm_retirement, database_pattern=naming,
            progress=lambda o: say(shop_line(o)), lifecycle=lifecycle,
        )
    else:
        outcomes = advance_shops(
            defs, instance, lifecycle, shops, args.through_phase, confirm_retirement=args.confirm_retirement,
            naming=lambda s: naming.format(id=s), progress=lambda o: say(shop_line(o)),
        )
    say()
    say(summary(outcomes, names))
    reach = tenant_reach(outcomes)
    if reach:
        say(f"warning: the tenant roles may connect to {', '.join(reach)} (PUBLIC's default CONNECT): a tenant role "
            "should reach its own database only. On each: REVOKE CONNECT, TEMPORARY ON DATABASE <name> FROM PUBLIC, "
            "then GRANT CONNECT to the roles that need it (README: \"The privilege boundary\").")
    done = sum(o.done for o in outcomes)
    say(f"{done} of {len(outcomes)} shops are through phase {args.through_phase}"
        + (f" ({sum(o.already for o in outcomes)} were already)" if any(o.already for o in outcomes) else "") + ".")
    return 0 if done == len(outcomes) else 1


def tenant_reach(outcomes: Sequence[object]) -> list[str]:
    """Databases other than their own that the tenant roles may connect to, as phase 1's check saw them."""
    return sorted({
        str(d)
        for o in outcomes for r in o.runs for c in r.checks  # type: ignore[attr-defined]
        if c.check == "tenant_access" for d in (c.metadata.get("tenant_roles_may_connect_to") or [])
    })


WAYS_BACK = {1: "rollback_shop", 2: "rollback_copy", 3: "rollback_capture", 4: "rollback_cutover", 5: "restore_retired_shop"}


def cmd_rollback(args: argparse.Namespace) -> int:
    preflight()
    quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.runner import register_shops, run_job

    job = WAYS_BACK[args.phase]
    instance = dagster_instance()
    register_shops(instance, [args.shop])
    outcome = run_job(
        build_definitions(), instance, job, partition_key=str(args.shop),
        run_config={"ops": {f"{job}_op": {"config": {"confirm": args.confirm}}}},
    )
    for failure in outcome.failures:
        say(f"  {failure}")
    say(f"{job} for shop {args.shop}: {'done' if outcome.success else 'FAILED'} (run {outcome.run_id})")
    return 0 if outcome.success else 1


def cmd_status(args: argparse.Namespace) -> int:
    """Read-only, and fast for a thousand shops: one lifecycle query, and on Postgres storage two storage
    queries without importing Dagster (see pipeline/status.py); any other storage through the Dagster API."""
    from pathlib import Path

    from handyshop_migration.pipeline.status import (
        fence_summary,
        postgres_storage_url,
        shop_status,
        shop_status_from_storage,
    )
    from handyshop_migration.tenancy.dsn import ConnectionSpec
    from handyshop_migration.tenancy.lifecycle import Lifecycle

    home = os.environ.get("DAGSTER_HOME", "")
    if not home or not Path(home).is_dir():
        dagster_instance()  # says in one line what is wrong with DAGSTER_HOME
    lifecycle = None
    if os.environ.get(settings.SOURCE_URL):
        lifecycle = Lifecycle(ConnectionSpec.from_url(os.environ[settings.SOURCE_URL], name=settings.SOURCE_URL))
    url = postgres_storage_url(home)
    if url is not None:
        rows = shop_status_from_storage(url, lifecycle)
    else:
        quiet_dagster()
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            rows = shop_status(instance, lifecycle)
    if not rows:
        say("no shops registered yet (run `handyshop-migration migrate` or let new_shops_sensor add them).")
        return 0
    say(table(("shop", "phase", "state", "route", "server", "schema", "rows", "fence", "last error", "last run"),
              [(r.shop, r.phase, r.state, r.route, r.server, r.schema, r.rows, r.fence, r.last_error, r.last_run)
               for r in rows]))
    windows = fence_summary(rows)
    if windows:
        say(windows)
    return 0
