"""Phases 3-5 and the ways back as Dagster runs: gates, confirmations, routing, and what each leaves in the
databases. One stack for the module; every test takes the shops it uses to the state it needs itself (the
runner resumes from wherever a shop is), and no two tests use the same shop."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest
from psycopg import sql

from handyshop_migration.devtools.seed import add_shop
from handyshop_migration.pipeline.runner import run_job
from handyshop_migration.tenancy.db import replaying
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import load_catalog
from handyshop_migration.tenancy.engine.verification import verify_tables
from handyshop_migration.tenancy.lifecycle import State
from handyshop_migration_tests.support.dagster_stack import Stack, dagster_stack

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def stack(pg_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    with dagster_stack(pg_server, tmp_path_factory, "t_phases_src", shops=5, scale=0.03, seed=8) as s:
        yield s


def _confirm(stack: Stack, job: str, shop: int) -> dict[str, object]:
    return {"ops": {f"{job}_op": {"config": {"confirm": stack.database(shop)}}}}


def _shop_rows(stack: Stack, shop: int) -> int:
    with stack.source.connect() as conn:
        return sum(
            conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE shop_id = %s").format(sql.Identifier(t.name)), (shop,)).fetchone()[0]  # type: ignore[index]
            for t in CATALOG.tables
        )


def test_sync_applies_writes_made_after_the_copy_and_reports_lag(stack: Stack) -> None:
    shop = 1
    stack.migrate(shop, 2)
    with stack.source.connect() as conn:
        assert capture.is_captured(conn, shop)  # phase 2 started capture before its snapshot
        cid = conn.execute(
            "INSERT INTO customers (first_name, last_name, phone, shop_id) VALUES ('Nach', 'Kopie', '1', %s) RETURNING id",
            (shop,),
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("DELETE FROM newsletter_subscribers WHERE id = (SELECT min(id) FROM newsletter_subscribers WHERE shop_id = %s)", (shop,))
        conn.commit()
    # the sync sensor sees the pending changes of a verified shop and asks for a run
    sensor = stack.defs.resolve_sensor_def("shop_sync_sensor")
    with dg.build_sensor_context(
        instance=stack.instance, definitions=stack.defs, resources=stack.defs.resources, instance_ref=stack.instance.get_ref()
    ) as ctx:
        result = sensor.evaluate_tick(ctx)
    assert str(shop) in [r.partition_key for r in result.run_requests]
    run = run_job(stack.defs, stack.instance, "sync_shop", partition_key=str(shop))
    assert run.success, run.failures
    mat = stack.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("tenant_sync"), asset_partitions=[str(shop)]), limit=1
    ).records[0].asset_materialization
    assert mat is not None
    assert mat.metadata["changes_applied"].value >= 2 and mat.metadata["lag_changes"].value == 0
    assert stack.lifecycle().get(shop).state == State.SYNCING
    with stack.tenant(shop).connect() as tenant:
        assert tenant.execute("SELECT last_name FROM customers WHERE id = %s", (cid,)).fetchone() == ("Kopie",)
    with stack.source.connect() as src, stack.tenant(shop).connect() as tenant:
        assert all(v.ok for v in verify_tables(src, tenant, CATALOG, shop))


def test_cutover_moves_reads_then_writes_and_records_every_step(stack: Stack) -> None:
    shop = 2
    stack.migrate(shop, 3)
    reads = run_job(
        stack.defs, stack.instance, "cutover_shop", partition_key=str(shop),
        run_config={"ops": {"tenant_cutover": {"config": {"step": "reads", "read_rollout_percent": 100}}}},
    )
    assert reads.success, reads.failures
    record = stack.lifecycle().get(shop)
    assert (record.state, record.reads, record.writes) == (State.READS_ROLLOUT, "rollout", "shared")
    writes = run_job(stack.defs, stack.instance, "cutover_shop", partition_key=str(shop))
    assert writes.success, writes.failures
    record = stack.lifecycle().get(shop)
    assert (record.state, record.reads, record.writes) == (State.LIVE, "tenant", "tenant")
    reasons = [h.reason for h in stack.lifecycle().history(shop)]
    assert any("fencing" in r for r in reasons) and any("writes to the tenant" in r for r in reasons)
    with stack.source.connect() as conn:
        assert capture.is_fenced(conn, shop)
    # a rerun of migrate over a live shop does nothing and says it is done
    again = stack.migrate(shop, 4)
    assert again.already and again.runs == []


def test_retirement_needs_confirmation_and_cutover_then_deletes_exactly_the_shop(stack: Stack) -> None:
    shop, other = 3, 4
    stack.migrate(shop, 4)
    stack.migrate(other, 2)
    before = {s: _shop_rows(stack, s) for s in (shop, other)}
    refused = run_job(stack.defs, stack.instance, "retire_shop", partition_key=str(shop))
    assert not refused.success and f"retire shop {shop}" in refused.failures[0]
    not_cut_over = run_job(
        stack.defs, stack.instance, "retire_shop", partition_key=str(other),
        run_config={"ops": {"legacy_retirement": {"config": {"confirm": f"retire shop {other}"}}}},
    )
    assert not not_cut_over.success and f"shop {other} is verified: it cannot start retirement" in not_cut_over.failures[0]
    done = run_job(
        stack.defs, stack.instance, "retire_shop", partition_key=str(shop),
        run_config={"ops": {"legacy_retirement": {"config": {"confirm": f"retire shop {shop}"}}}},
    )
    assert done.success, done.failures
    assert _shop_rows(stack, shop) == 0 and _shop_rows(stack, other) == before[other]
    assert stack.lifecycle().get(shop).state == State.RETIRED
    # a cutover cannot be rolled back while the shared database lacks the shop's rows
    blocked = run_job(stack.defs, stack.instance, "rollback_cutover", partition_key=str(shop),
                      run_config=_confirm(stack, "rollback_cutover", shop))
    assert not blocked.success and "Restore its archive" in blocked.failures[0]
    # the ways back from phase 5, then 4: every row comes home, also those the tenant took while live
    unconfirmed = run_job(stack.defs, stack.instance, "restore_retired_shop", partition_key=str(shop))
    assert not unconfirmed.success and stack.database(shop) in unconfirmed.failures[0]
    restored = run_job(stack.defs, stack.instance, "restore_retired_shop", partition_key=str(shop),
                       run_config=_confirm(stack, "restore_retired_shop", shop))
    assert restored.success, restored.failures
    assert _shop_rows(stack, shop) == before[shop] and stack.lifecycle().get(shop).state == State.LIVE
    with stack.app(shop).connect() as tenant:
        new_id = tenant.execute(
            "INSERT INTO customers (first_name, last_name, phone) VALUES ('Live', 'Im Tenant', '2') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        tenant.execute("UPDATE customers SET city = 'Linz' WHERE id = (SELECT min(id) FROM customers)")
        tenant.commit()
    back = run_job(stack.defs, stack.instance, "rollback_cutover", partition_key=str(shop),
                   run_config=_confirm(stack, "rollback_cutover", shop))
    assert back.success, back.failures
    with stack.source.connect() as src:
        assert src.execute("SELECT shop_id FROM customers WHERE id = %s", (new_id,)).fetchone() == (shop,)
    with stack.source.connect() as src, stack.tenant(shop).connect() as tenant:
        assert all(v.ok for v in verify_tables(src, tenant, CATALOG, shop))
    record = stack.lifecycle().get(shop)
    assert (record.state, record.reads, record.writes) == (State.SYNCING, "shared", "shared")
    with stack.source.connect() as conn:
        conn.execute("UPDATE customers SET phone = 'wieder im Shared' WHERE id = %s", (new_id,))  # not fenced any more
        conn.rollback()


def test_ways_back_from_phases_3_and_2_and_the_new_shop_path(stack: Stack) -> None:
    shop = 5
    stack.migrate(shop, 3)
    stopped = run_job(stack.defs, stack.instance, "rollback_capture", partition_key=str(shop),
                      run_config=_confirm(stack, "rollback_capture", shop))
    assert stopped.success, stopped.failures
    with stack.source.connect() as conn:
        assert not capture.is_captured(conn, shop)
    sync = run_job(stack.defs, stack.instance, "sync_shop", partition_key=str(shop))
    assert not sync.success and "not captured" in sync.failures[0]
    with stack.tenant(shop).connect() as tenant, replaying(tenant):  # as the owner, past the write guard
        tenant.execute("DELETE FROM newsletter_subscribers")
    reloaded = run_job(stack.defs, stack.instance, "rollback_copy", partition_key=str(shop),
                       run_config=_confirm(stack, "rollback_copy", shop))
    assert reloaded.success, reloaded.failures
    with stack.source.connect() as src, stack.tenant(shop).connect() as tenant:
        assert all(v.ok for v in verify_tables(src, tenant, CATALOG, shop))
    assert stack.lifecycle().get(shop).captured  # the reload captured its writes again
    # a shop that signs up now goes through every phase too
    new_shop = add_shop(stack.source, name="Spät & Gut", seed=2, scale=0.03)
    outcome = stack.migrate(new_shop, 4)
    assert [r.job for r in outcome.runs] == ["migrate_shop", "sync_shop", "cutover_shop"]
    assert stack.lifecycle().get(new_shop).state == State.LIVE
