"""Verbs of the fleet after the split: `servers`, `migrate-schemas`, `rotate-keys`, `move-shop`.

Each runs a Dagster job in this process (recorded in the instance like the other verbs) except `servers`,
which only reads: the servers, what they hold and their connection budgets, and the shops behind the newest
tenant migration.
"""

from __future__ import annotations

import argparse

from handyshop_migration.cli.environment import dagster_instance, preflight, quiet_dagster, say, table


def _run(job: str, *, partition: str | None = None, config: dict[str, object] | None = None) -> object:
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.runner import register_shops, run_job

    instance = dagster_instance()
    if partition is not None:
        register_shops(instance, [int(partition)])
    return run_job(build_definitions(), instance, job, partition_key=partition, run_config=config)


def _report(outcome: object, what: str) -> int:
    for failure in outcome.failures:  # type: ignore[attr-defined]
        say(f"  {failure}")
    for check in outcome.checks:  # type: ignore[attr-defined]
        if not check.passed:
            say(f"  [{check.severity.lower()}] {check.check}: {check.metadata.get('first') or check.metadata.get('summary', '')}")
    ok = outcome.success  # type: ignore[attr-defined]
    say(f"{what}: {'done' if ok else 'FAILED'} (run {outcome.run_id})")  # type: ignore[attr-defined]
    return 0 if ok else 1


def cmd_servers(args: argparse.Namespace) -> int:
    import os

    from handyshop_migration import settings
    from handyshop_migration.tenancy.application.encryption import CredentialCipher
    from handyshop_migration.tenancy.application.registry import ConnectionRegistry
    from handyshop_migration.tenancy.engine.catalog import load_catalog
    from handyshop_migration.tenancy.engine.migrations import tenant_migrations
    from handyshop_migration.tenancy.engine.provisioning import TenantNaming
    from handyshop_migration.tenancy.fleet.config import format_bytes
    from handyshop_migration.tenancy.fleet.provisioner import FleetProvisioner
    from handyshop_migration.tenancy.lifecycle import Lifecycle
    from handyshop_migration.tenancy.names import (
        DEFAULT_DATABASE_PATTERN,
        DEFAULT_OWNER_PATTERN,
        DEFAULT_ROLE_PATTERN,
    )

    source = preflight()
    fleet = _fleet_from_env(source)
    naming = TenantNaming(
        database=os.environ.get(settings.TENANT_DATABASE) or DEFAULT_DATABASE_PATTERN,
        role=os.environ.get(settings.TENANT_ROLE) or DEFAULT_ROLE_PATTERN,
        owner=os.environ.get(settings.TENANT_OWNER_ROLE) or DEFAULT_OWNER_PATTERN,
    )
    catalog = load_catalog(os.environ.get(settings.CATALOG) or None)
    migrations = tenant_migrations(catalog, os.environ.get(settings.TENANT_MIGRATIONS) or None)
    with ConnectionRegistry(source, CredentialCipher.from_env()) as registry, FleetProvisioner(
        fleet, registry, migrations, naming=naming  # type: ignore[arg-type]
    ) as fp:
        fp.ensure_schema()
        if args.measure:
            fp.placement.measure(naming.database_name)
        usage = fp.placement.usage()
        budgets = {b.server: b for b in fp.placement.budgets(usage)}
        rows = []
        for s in fp.fleet.servers:
            u, b = usage[s.name], budgets[s.name]
            rows.append((
                s.name, u.databases, format_bytes(u.bytes), u.tenants, f"{b.needed}/{b.usable}",
                "ok" if b.ok else "EXCEEDED", s.describe_caps(), "yes" if s.accept_new else "no (draining)",
            ))
        say(table(("server", "databases", "bytes", "tenants", "connections", "budget", "caps", "takes new"), rows))
        held = [u.bytes for u in usage.values() if u.bytes]
        if len(held) > 1:
            say(f"balance: largest / smallest bytes per server = {max(held) / min(held):.2f}")
    newest = migrations[-1].name
    stale = [r for r in Lifecycle(source).all()
             if r.state.value not in ("registered", "provisioning", "deprovisioning")
             and r.details.get("schema_version") != newest]
    say(f"newest tenant migration {newest}; {len(stale)} shops behind it"
        + (": " + ", ".join(f"{r.shop_id} ({r.details.get('schema_version', '?')})" for r in stale[:20]) if stale else ""))
    return 0


def _fleet_from_env(source: object) -> object:
    import os

    from handyshop_migration import settings
    from handyshop_migration.tenancy.dsn import ConnectionSpec
    from handyshop_migration.tenancy.fleet.config import load_fleet, single_server

    if os.environ.get(settings.SERVERS):
        return load_fleet(os.environ[settings.SERVERS])
    if os.environ.get(settings.ADMIN_URL):
        return single_server(ConnectionSpec.from_url(os.environ[settings.ADMIN_URL], name=settings.ADMIN_URL))
    return single_server(source.with_db("postgres"))  # type: ignore[attr-defined]


def cmd_migrate_schemas(args: argparse.Namespace) -> int:
    preflight()
    quiet_dagster()
    if args.shop is not None:
        return _report(_run("migrate_tenant_schema", partition=str(args.shop)), f"tenant migrations of shop {args.shop}")
    outcome = _run("schema_fanout")
    behind = 0
    for check in outcome.checks:  # type: ignore[attr-defined]
        if check.check == "shops_current":
            behind = int(check.metadata.get("stale", 0))
            say(f"  {behind} shops behind the newest migration (retry one alone: migrate-schemas --shop ID)")
    return max(_report(outcome, "schema fan-out"), int(behind > 0))


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    preflight()
    quiet_dagster()
    outcome = _run("rotate_registry_keys", config={"ops": {"registry_keys": {"config": {"batch": args.batch}}}})
    for check in outcome.checks:  # type: ignore[attr-defined]
        if check.check == "no_old_keys":
            say(f"  {check.metadata.get('summary', '')}")
    return _report(outcome, "key rotation")


def cmd_move_shop(args: argparse.Namespace) -> int:
    preflight()
    quiet_dagster()
    shop = str(args.shop)
    if args.drop_old_copy:
        return _report(
            _run("drop_moved_copy", partition=shop, config={"ops": {"drop_moved_copy_op": {"config": {"confirm": args.confirm}}}}),
            f"dropping shop {shop}'s old copy",
        )
    config = {"to": args.to or "", "back": bool(args.back), "abort": bool(args.abort)}
    return _report(
        _run("move_shop", partition=shop, config={"ops": {"move_shop_op": {"config": config}}}),
        f"move of shop {shop}",
    )
