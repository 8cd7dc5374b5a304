"""The Dagster layer on a real instance and a real server: partitions, per-table gates, the sensor as the
daemon evaluates it, the rollback job, and definitions built from any catalog. One stack for the module;
every test migrates the shops it uses itself, and no two tests use the same shop."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.event_api import PartitionKeyFilter
from psycopg import sql

from handyshop_migration import cli, settings
from handyshop_migration.definitions import build_definitions
from handyshop_migration.devtools.seed import TENANT_TABLES, add_shop
from handyshop_migration.pipeline.partitions import SHOPS
from handyshop_migration.pipeline.phase2 import SHOP_VERIFIED, table_key
from handyshop_migration.pipeline.runner import register_shops, run_job
from handyshop_migration.tenancy.db import replaying
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import load_catalog
from handyshop_migration_tests.support.dagster_stack import Stack, dagster_stack
from handyshop_migration_tests.support.databases import create_database, drop_database
from handyshop_migration_tests.support.schemas import exotic

warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


@pytest.fixture(scope="module")
def stack(pg_server: ConnectionSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with dagster_stack(pg_server, tmp_path_factory, "t_pipe_src", shops=5, scale=0.03, seed=5) as s:
        yield s


def _rows(spec: ConnectionSpec, table: str, shop: int | None) -> list[tuple]:
    cat = load_catalog()
    t = cat.table(table)
    where = sql.SQL("WHERE shop_id = %s") if shop is not None else sql.SQL("")
    query = sql.SQL("SELECT {} FROM {} {} ORDER BY 1").format(
        sql.SQL(", ").join(map(sql.Identifier, t.copy_columns)), sql.Identifier(table), where
    )
    with spec.connect() as conn:
        return conn.execute(query, (shop,) if shop is not None else ()).fetchall()


def _check_results(stack: Stack, shop: int) -> dict[str, bool]:
    keys = list(stack.defs.resolve_asset_graph().asset_check_keys)
    latest = stack.instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=str(shop))
    )
    return {
        f"{'/'.join(k.asset_key.path)}:{k.name}": r.event.asset_check_evaluation.passed  # type: ignore[union-attr]
        for k, r in latest.items()
        if r.event is not None
    }


def test_definitions_load_without_a_database_and_from_an_inspected_catalog(
    pg_server: ConnectionSpec, tmp_path: Path
) -> None:
    defs = build_definitions(environ={})  # no URL, no key: loading needs neither
    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert {table_key(t) for t in TENANT_TABLES} <= keys and SHOP_VERIFIED in keys
    other = create_database(pg_server, "t_pipe_exotic")
    try:
        with other.connect() as conn:
            exotic.create(conn)
        out = tmp_path / "exotic.json"
        assert cli.main(["inspect", "--source-url", other.url().reveal(), "--output", str(out),
                         "--tenant-column", "tenant_id", "--exclude", ""]) == 0
        exotic_defs = build_definitions(environ={settings.CATALOG: str(out)})
        exotic_keys = exotic_defs.resolve_asset_graph().get_all_asset_keys()
        assert {table_key(t) for t in exotic.TENANT_TABLES} <= exotic_keys
        assert table_key("customers") not in exotic_keys
        checks = exotic_defs.resolve_asset_graph().asset_check_keys
        assert dg.AssetCheckKey(table_key("MixedCase"), "checksum_parity") in checks
    finally:
        drop_database(pg_server, other.dbname)


def test_two_shops_through_dagster_equal_their_source_slices(stack: Stack) -> None:
    shops = stack.report.shop_ids[:2]
    for shop in shops:
        outcome = stack.migrate(shop, 2)
        assert [r.job for r in outcome.runs] == ["migrate_shop"] and outcome.verified
        assert outcome.runs[0].success and outcome.gates_failed == 0
    for shop in shops:
        for table in TENANT_TABLES:
            assert _rows(stack.source, table, shop) == _rows(stack.tenant(shop), table, None), (shop, table)
        results = _check_results(stack, shop)
        assert len(results) == 2 * len(TENANT_TABLES) + 1 and all(results.values())
        assert stack.instance.has_dynamic_partition(SHOPS, str(shop))
    materialized = stack.instance.get_materialized_partitions(SHOP_VERIFIED)
    assert {str(s) for s in shops} <= materialized
    record = stack.lifecycle().get(shops[0])
    assert record.state.value == "verified" and record.details["rows"] == sum(stack.report.shop_rows[shops[0]].values())


def test_tampering_fails_only_that_tables_checks_and_blocks_verification(stack: Stack) -> None:
    shop = stack.report.shop_ids[2]
    stack.migrate(shop, 2)
    verified_before = stack.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SHOP_VERIFIED, asset_partitions=[str(shop)]), limit=1
    ).records[0].storage_id
    with stack.tenant(shop).connect() as conn, replaying(conn):  # as the owner, past the write guard
        conn.execute("UPDATE repairs SET issue = issue || ' (manipuliert)' WHERE id = (SELECT min(id) FROM repairs)")
    outcome = run_job(stack.defs, stack.instance, "verify_shop", partition_key=str(shop))
    assert not outcome.success
    failed = {f"{c.asset}:{c.check}" for c in outcome.checks if not c.passed}
    assert failed == {"tenant/repairs:checksum_parity"}
    assert all(c.passed for c in outcome.checks if c.asset != "tenant/repairs")
    # shop_verified was not materialized again
    latest = stack.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=SHOP_VERIFIED, asset_partitions=[str(shop)]), limit=1
    ).records[0].storage_id
    assert latest == verified_before
    record = stack.lifecycle().get(shop)
    assert record.state.value == "copied" and "repairs" in (record.last_error or "")  # no longer verified
    # a fresh copy of the shop heals it
    assert stack.migrate(shop, 2).verified


def test_sensor_adds_exactly_the_new_shops_and_requests_one_run_each(stack: Stack) -> None:
    sensor = stack.defs.resolve_sensor_def("new_shops_sensor")
    register_shops(stack.instance, stack.report.shop_ids)
    # evaluated as the daemon does: evaluate_tick on a real instance (with a ref), resources resolved
    def tick(cursor: str | None) -> dg.SensorExecutionData:
        with dg.build_sensor_context(
            instance=stack.instance,
            cursor=cursor,
            definitions=stack.defs,
            resources=stack.defs.resources,
            instance_ref=stack.instance.get_ref(),
        ) as ctx:
            return sensor.evaluate_tick(ctx)

    first = tick(None)  # every shop is a partition already: nothing to do; the cursor is set
    assert first.run_requests == [] and first.cursor
    new_shop = add_shop(stack.source, name="Neu & Schnell 📱", seed=3, scale=0.03)
    second = tick(first.cursor)
    assert [r.partition_key for r in second.run_requests] == [str(new_shop)]
    assert second.run_requests[0].run_key == f"shop-{new_shop}"
    assert [list(req.partition_keys) for req in second.dynamic_partitions_requests] == [[str(new_shop)]]
    for req in second.dynamic_partitions_requests:  # what the daemon applies
        stack.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    assert tick(second.cursor).run_requests == []
    # and the requested run migrates the shop
    assert stack.migrate(new_shop, 2).verified


def test_rollback_refuses_without_confirmation_then_removes_everything(stack: Stack) -> None:
    shop = stack.report.shop_ids[3]
    stack.migrate(shop, 2)
    db, role = stack.database(shop), stack.env[settings.TENANT_ROLE].format(id=shop)
    refused = run_job(stack.defs, stack.instance, "rollback_shop", partition_key=str(shop))
    assert not refused.success and f"confirm: {db}" in refused.failures[0]
    with stack.admin.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (db,)).fetchone() == (1,)
    done = run_job(
        stack.defs,
        stack.instance,
        "rollback_shop",
        partition_key=str(shop),
        run_config={"ops": {"rollback_shop_op": {"config": {"confirm": db}}}},
    )
    assert done.success, done.failures
    with stack.admin.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (db,)).fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)).fetchone() == (0,)
    with stack.registry() as registry:
        assert registry.find(shop) is None
    assert stack.lifecycle().get(shop).state.value == "registered"
    # and the shop can be migrated again from scratch
    assert stack.migrate(shop, 2).verified


def test_secrets_stay_out_of_run_config_metadata_and_logs(stack: Stack) -> None:
    stack.migrate(stack.report.shop_ids[4], 4)  # runs of every kind that touches credentials
    secrets = [stack.env[settings.ENCRYPTION_KEY], stack.source.password.reveal()]  # type: ignore[union-attr]
    with stack.registry() as registry:
        secrets += [c.password.reveal() for c in registry.list()] + [c.owner_password.reveal() for c in registry.list()]
    runs = stack.instance.get_runs(limit=50)
    assert runs
    for run in runs:
        text = str(run.run_config) + str(run.tags)
        for record in stack.instance.all_logs(run.run_id):
            text += record.user_message or ""
            if record.dagster_event is not None:
                text += str(record.dagster_event.event_specific_data)
        for secret in secrets:
            assert secret not in text
