"""Verbs on the embedded stack: `demo`, `dev`, `add-shop`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handyshop_migration import settings
from handyshop_migration.cli.environment import dagster_instance, quiet_dagster, say
from handyshop_migration.cli.runs import run_phase0, shop_line, shop_names, summary
from handyshop_migration.tenancy.errors import ConfigurationError


def cmd_demo(args: argparse.Namespace) -> int:
    from handyshop_migration.devtools.local import LocalStack
    from handyshop_migration.devtools.seed import seed_database

    quiet_dagster()
    stack = LocalStack(Path(args.data_dir), version=args.pg_version)
    say(f"demo: fresh stack in {stack.root} (embedded PostgreSQL {args.pg_version}) …")
    stack.reset()
    stack.start()
    app = None
    try:
        stack.ensure_storage()
        source = stack.ensure_source()
        say(f"seeding the shared database: {args.shops} shops, scale {args.scale}, seed {args.seed} …")
        report = seed_database(
            source, shops=args.shops, scale=args.scale, seed=args.seed, cross_shop_reference=args.cross_shop_reference
        )
        say(f"  {sum(report.table_rows.values())} rows in {len(report.table_rows)} tables")
        stack.apply_environment()
        from handyshop_migration.definitions import build_definitions
        from handyshop_migration.pipeline.runner import advance_shops
        from handyshop_migration.tenancy.lifecycle import Lifecycle

        instance = dagster_instance()
        defs = build_definitions()
        lifecycle = Lifecycle(source)
        if args.through_phase >= 3:
            app, thread, stop = _start_app(source, report.shop_ids, args.seed)
            say("a simulated application writes to random shops from now on (through the routing function) …")
        phase0_ok, _ = run_phase0(defs, instance)
        say(f"{len(report.shop_ids)} shops through phase {args.through_phase} (one Dagster run per shop and phase) …")
        outcomes = advance_shops(
            defs, instance, lifecycle, report.shop_ids, args.through_phase, confirm_retirement=True,
            progress=lambda o: say(shop_line(o)),
        )
        writes = None
        if app is not None:
            stop.set()
            thread.join()
            writes = _check_writes(app, stack, outcomes)
        say()
        say(summary(outcomes, shop_names(source), writes))
        all_found = writes is None or all(w.found == w.rows for w in writes.values())
        ok = (
            phase0_ok
            and all(o.done and o.gates_failed == 0 for o in outcomes)
            and all_found
            and (app is None or not app.errors)
        )
        say()
        windows = {o.shop_id: o.record.details.get("fence_windows", []) for o in outcomes if o.record is not None}
        if any(windows.values()):
            say("writes waited at cutover (fence window per shop): "
                + ", ".join(f"shop {s} {w[-1]:.2f}s" for s, w in sorted(windows.items()) if w))
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
    from handyshop_migration.devtools.simulation import SimulatedApp
    from handyshop_migration.tenancy.application.encryption import CredentialCipher
    from handyshop_migration.tenancy.application.routing import RouteResolver
    from handyshop_migration.tenancy.workflow import ensure_control

    cipher = CredentialCipher.from_env()
    ensure_control(source, cipher)
    app = SimulatedApp(source, RouteResolver(source, cipher, source, ttl=1.0), shops, seed=seed)
    thread, stop = app.start(pause=0.02)
    return app, thread, stop


def _check_writes(app: Any, stack: Any, outcomes: Sequence[Any]) -> dict[int, Any]:
    """Per shop: writes the app made, and how many of the rows it wrote are as it left them where the shop
    lives now (its tenant once cut over, else the shared database)."""
    from handyshop_migration.tenancy.application.encryption import CredentialCipher
    from handyshop_migration.tenancy.application.registry import ConnectionRegistry
    from handyshop_migration.tenancy.lifecycle import Lifecycle

    lifecycle = Lifecycle(stack.source)
    with ConnectionRegistry(stack.source, CredentialCipher.from_env()) as registry:

        def home(shop: int) -> tuple[Any, bool]:
            if lifecycle.get(shop).writes == "tenant":
                return registry.get(shop).owner_spec(), False
            return stack.source, True

        results = app.verify(home)
    for shop, result in results.items():
        result.tenant = lifecycle.get(shop).writes == "tenant"
    return results


def cmd_dev(args: argparse.Namespace) -> int:
    from handyshop_migration.devtools.local import LocalStack
    from handyshop_migration.devtools.seed import seed_database

    quiet_dagster()
    stack = LocalStack(Path(args.data_dir), version=args.pg_version)
    stack.start()
    try:
        stack.ensure_storage()
        with stack.admin.connect() as conn:
            seeded = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'handyshop'").fetchone() is not None
        source = stack.ensure_source()
        if not seeded:
            say(f"seeding the shared database: {args.shops} shops, scale {args.scale} …")
            seed_database(source, shops=args.shops, scale=args.scale, seed=args.seed)
        stack.apply_environment()
        from handyshop_migration.definitions import build_definitions
        from handyshop_migration.pipeline.gates import VALIDATION
        from handyshop_migration.pipeline.runner import register_shops

        instance = dagster_instance()
        defs = build_definitions()
        if not instance.fetch_materializations(VALIDATION, limit=1).records:
            run_phase0(defs, instance)
        # Existing shops become partitions for the operator to materialize; the sensor takes the new ones.
        register_shops(instance, shop_names(source).keys())
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


def cmd_add_shop(args: argparse.Namespace) -> int:
    from handyshop_migration.devtools.seed import add_shop
    from handyshop_migration.tenancy.dsn import ConnectionSpec

    url = args.url or os.environ.get(settings.SOURCE_URL, "")
    if not url and Path(args.data_dir).exists():
        from handyshop_migration.devtools.local import LocalStack

        stack = LocalStack(Path(args.data_dir))
        stack.start()
        url = stack.source.url().reveal()
    if not url:
        raise ConfigurationError(f"give --url, set {settings.SOURCE_URL}, or run `handyshop-migration dev` first.")
    shop = add_shop(ConnectionSpec.from_url(url, name="--url"), name=args.name, scale=args.scale)
    say(f"shop {shop} ({args.name}) added; new_shops_sensor picks it up on its next tick.")
    return 0

