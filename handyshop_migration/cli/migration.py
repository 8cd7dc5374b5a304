"""Verbs of the production path: `prepare`, `migrate`, `rollback`, `status`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from handyshop_migration import settings
from handyshop_migration.cli.environment import dagster_instance, preflight, quiet_dagster, say, table
from handyshop_migration.cli.runs import later_phases, run_phase0, shop_line, shop_names, summary
from handyshop_migration.tenancy.errors import ConfigurationError


def cmd_prepare(args: argparse.Namespace) -> int:
    source = preflight()
    quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.tenancy.engine.catalog import load_catalog

    catalog = load_catalog(os.environ.get(settings.CATALOG) or None)
    planned = None
    if args.shops != "all":
        planned = parse_shops(args.shops, list(shop_names(source, catalog)))
    ok, _ = run_phase0(build_definitions(catalog), dagster_instance(), planned)
    return 0 if ok else 1


def parse_shops(text: str, available: Sequence[int]) -> list[int]:
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
    source = preflight()
    quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.gates import VALIDATION
    from handyshop_migration.pipeline.runner import migrate_shops
    from handyshop_migration.tenancy.engine.catalog import load_catalog

    catalog = load_catalog(os.environ.get(settings.CATALOG) or None)
    names = shop_names(source, catalog)
    global_ids = set(settings.global_shop_ids())
    shops = parse_shops(args.shops, [s for s in names if s not in global_ids])
    instance = dagster_instance()
    defs = build_definitions(catalog)
    if not instance.fetch_materializations(VALIDATION, limit=1).records:
        run_phase0(defs, instance, shops)
    if args.through_phase == 5 and not args.confirm_retirement:
        raise ConfigurationError(
            "--through-phase 5 deletes the shops' rows from the shared database (after archiving them): "
            "add --confirm-retirement to say so."
        )
    say(f"phases 1-2 for {len(shops)} shops …")
    outcomes = migrate_shops(defs, instance, shops, progress=lambda o: say(shop_line(o)))
    later_phases(defs, instance, outcomes, args.through_phase, confirm_retirement=args.confirm_retirement)
    say()
    say(summary(outcomes, names))
    return 0 if all(o.reached == args.through_phase for o in outcomes) else 1


WAYS_BACK = {1: "rollback_shop", 2: "rollback_copy", 3: "rollback_capture", 4: "rollback_cutover", 5: "restore_retired_shop"}


def cmd_rollback(args: argparse.Namespace) -> int:
    preflight()
    quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.runner import run_job

    job = WAYS_BACK[args.phase]
    outcome = run_job(
        build_definitions(), dagster_instance(), job, partition_key=str(args.shop),
        run_config={"ops": {f"{job}_op": {"config": {"confirm": args.confirm}}}},
    )
    for failure in outcome.failures:
        say(f"  {failure}")
    say(f"{job} for shop {args.shop}: {'done' if outcome.success else 'FAILED'} (run {outcome.run_id})")
    return 0 if outcome.success else 1


def cmd_status(args: argparse.Namespace) -> int:
    quiet_dagster()
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.status import shop_status

    instance = dagster_instance()
    defs = build_definitions()
    rows = shop_status(defs, instance)
    if not rows:
        say("no shops registered yet (run `handyshop-migration migrate` or let new_shops_sensor add them).")
        return 0
    say(table(("shop", "phase", "gates passed", "gates failed", "rows", "registry", "route", "last run"),
              [(r.shop, r.phase, r.gates_passed, r.gates_failed, r.rows, r.registry, r.route, r.last_run) for r in rows]))
    return 0

