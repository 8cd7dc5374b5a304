"""The fleet through Dagster on a real instance and two real servers: phase 0 plans the tenant servers and
refuses a plan over a server's connections (and phase 1 provisions nothing then); shops migrate to the servers
the policy picks; the schema fan-out materializes every shop's tenant_schema partition and lists the stale
ones; the key rotation and a move run as jobs; `status` shows each shop's server and schema version."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from handyshop_migration import settings
from handyshop_migration.definitions import build_definitions
from handyshop_migration.devtools.seed import seed_database
from handyshop_migration.pipeline.fleet import FLEET_SCHEMA, TENANT_SCHEMA
from handyshop_migration.pipeline.runner import advance, run_job
from handyshop_migration.pipeline.status import shop_status
from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.dsn import ConnectionSpec, pinned_search_path
from handyshop_migration.tenancy.lifecycle import Lifecycle
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    migration_env,
    unique_namespace,
)

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def _servers_file(path: Path, *, b_connections: int, pool_size: int, pins: dict[int, str]) -> None:
    pin_text = ", ".join(f"{s}: {srv}" for s, srv in pins.items())
    path.write_text(
        "servers:\n"
        "  - {name: a, admin_url_env: HANDYSHOP_TEST_SERVER_A}\n"
        f"  - {{name: b, admin_url_env: HANDYSHOP_TEST_SERVER_B, max_connections: {b_connections}}}\n"
        f"placement: {{pins: {{{pin_text}}}}}\n"
        f"connections: {{pool_size: {pool_size}, reserve: 0}}\n"
        "schema_changes: {per_server: 2}\n"
    )


@pytest.fixture
def fleet_env(
    pg_server: ConnectionSpec, pg_server_b: ConnectionSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    source = create_database(pg_server, "t_fleet_pipe")
    report = seed_database(source, shops=4, scale=0.03, seed=61)
    ns = unique_namespace()
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    env = {
        **migration_env(source, tmp_path / "backups", ns),
        settings.TENANT_OWNER_ROLE: ns + "shop_owner_{id}",
        settings.ARCHIVE_DIR: str(tmp_path / "archives"),
        settings.SERVERS: str(tmp_path / "servers.yaml"),
        settings.TENANT_MIGRATIONS: str(migrations),
        "HANDYSHOP_TEST_SERVER_A": pg_server.url().reveal(),
        "HANDYSHOP_TEST_SERVER_B": pg_server_b.url().reveal(),
        "SHOPS": ",".join(map(str, report.shop_ids)),
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    try:
        yield env
    finally:
        drop_namespace(pg_server_b, ns)
        drop_namespace(pg_server, ns)
        drop_database(pg_server, source.dbname)


def test_the_fleet_through_dagster(fleet_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = fleet_env
    shops = [int(s) for s in env["SHOPS"].split(",")]
    source = ConnectionSpec.from_url(env[settings.SOURCE_URL])
    first, second, third, fourth = shops
    # a plan over server b's connections: phase 0 refuses it, and no shop is provisioned
    _servers_file(Path(env[settings.SERVERS]), b_connections=30, pool_size=20, pins={first: "b", second: "b"})
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        defs = build_definitions(environ=dict(os.environ))
        phase0 = run_job(defs, instance, "prepare_source")
        assert not phase0.success
        budget = next(c for c in phase0.checks if c.check == "fleet_connection_budget")
        assert not budget.passed
        assert f"shop {second} is pinned to server b, which cannot take it: over its connection budget" in budget.metadata["first"]
        assert "of 30 (max_connections 30 configured)" in budget.metadata["first"]
        lifecycle = Lifecycle(source)
        lifecycle.ensure_schema()
        refused = advance(defs, instance, lifecycle, first, 2)
        assert not refused.done and "latest fleet_plan is refused" in " ".join(refused.notes)
        with ConnectionRegistry(source, CredentialCipher(env[settings.ENCRYPTION_KEY])) as registry:
            registry.ensure_schema()
            assert registry.list() == []

        # room on b: the plan passes; shops go where the policy (and the pin) says
        _servers_file(Path(env[settings.SERVERS]), b_connections=200, pool_size=2, pins={first: "b"})
        defs = build_definitions(environ=dict(os.environ))
        assert run_job(defs, instance, "prepare_source").success
        for shop in shops:
            assert advance(defs, instance, lifecycle, shop, 2).done
        with ConnectionRegistry(source, CredentialCipher(env[settings.ENCRYPTION_KEY])) as registry:
            where = {c.shop_id: c.server for c in registry.list()}
        assert where[first] == "b" and set(where.values()) == {"a", "b"}
        status = {int(r.shop): r for r in shop_status(instance, lifecycle)}
        assert {s: status[s].server for s in shops} == where
        assert {status[s].schema for s in shops} == {"0001_tenant_schema"}

        # a release brings 0002: the fan-out takes every shop there; one that cannot take it shows stale
        Path(env[settings.TENANT_MIGRATIONS], "0002_loyalty.sql").write_text(
            "ALTER TABLE customers ADD COLUMN loyalty_points integer NOT NULL DEFAULT 0;\n"
        )
        with ConnectionRegistry(source, CredentialCipher(env[settings.ENCRYPTION_KEY])) as registry:
            owner = registry.get(third).owner_spec().with_settings(pinned_search_path("public"))
        with owner.connect() as conn:
            conn.execute("ALTER TABLE customers ADD COLUMN loyalty_points integer")
            conn.commit()
        defs = build_definitions(environ=dict(os.environ))
        fanout = run_job(defs, instance, "schema_fanout")
        assert fanout.success  # the others are done; the stale one is a warning, not a failed run
        current = next(c for c in fanout.checks if c.check == "shops_current")
        assert (current.passed, current.severity, current.metadata["stale"]) == (False, "WARN", 1)
        materialization = instance.fetch_materializations(FLEET_SCHEMA, limit=1).records[0].asset_materialization
        assert materialization is not None
        assert materialization.metadata["stale_shops"].value == [third]
        assert materialization.metadata["versions"].value == {"0001_tenant_schema": 1, "0002_loyalty": 3}
        for shop in (first, second, fourth):
            record = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=TENANT_SCHEMA, asset_partitions=[str(shop)]), limit=1
            ).records[0]
            assert record.asset_materialization.metadata["schema_version"].value == "0002_loyalty"  # type: ignore[union-attr]
        # fixed, and retried alone
        with owner.connect() as conn:
            conn.execute("ALTER TABLE customers DROP COLUMN loyalty_points")
            conn.commit()
        retry = run_job(defs, instance, "migrate_tenant_schema", partition_key=str(third))
        assert retry.success, retry.failures
        assert {r.schema for r in shop_status(instance, lifecycle)} == {"0002_loyalty"}

        # key rotation as a job: nothing left under the old key, the tenants log in with the new one alone
        old_key = env[settings.ENCRYPTION_KEY]
        new_key = generate_key()
        monkeypatch.setenv(settings.ENCRYPTION_KEY, new_key)
        monkeypatch.setenv(settings.OLD_ENCRYPTION_KEYS, old_key)
        defs = build_definitions(environ=dict(os.environ))
        rotated = run_job(defs, instance, "rotate_registry_keys", run_config={"ops": {"registry_keys": {"config": {"batch": 2}}}})
        assert rotated.success, rotated.failures
        assert next(c for c in rotated.checks if c.check == "no_old_keys").passed
        with ConnectionRegistry(source, CredentialCipher(new_key)) as registry:
            assert set(registry.key_ids()) == {CredentialCipher(new_key).key_id}
            registry.get(first).spec().connect().close()

        # a live shop moved from b to a by the job, and back
        assert advance(defs, instance, lifecycle, first, 4).done
        moved = run_job(defs, instance, "move_shop", partition_key=str(first),
                        run_config={"ops": {"move_shop_op": {"config": {"to": "a"}}}})
        assert moved.success, moved.failures
        assert lifecycle.get(first).details["server"] == "a"
        back = run_job(defs, instance, "move_shop", partition_key=str(first),
                       run_config={"ops": {"move_shop_op": {"config": {"back": True}}}})
        assert back.success, back.failures
        status = {int(r.shop): r for r in shop_status(instance, lifecycle)}
        assert (status[first].server, status[first].state) == ("b", "live")
