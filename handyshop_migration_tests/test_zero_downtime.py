"""Phases 3-5 through the workflow, with a simulated application writing all the time: capture, sync, the
write fence, cutover, the way back from phase 4 with the tenant's writes, retirement and its restore.

Every test sets up its own world (`make_world`): none depends on another having run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import sql

from handyshop_migration.devtools.seed import GLOBAL_SHOP_IDS
from handyshop_migration.devtools.simulation import SimulatedApp
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.verification import table_checksum, verify_tables
from handyshop_migration.tenancy.errors import LifecycleRefused, RetirementRefused
from handyshop_migration.tenancy.lifecycle import State, read_bucket
from handyshop_migration_tests.plugins.worlds import World
from handyshop_migration_tests.support.application import routed_app, wait_for_writes, writing


def _home(world: World) -> Callable[[int], tuple[ConnectionSpec, bool]]:
    def home(shop: int) -> tuple[ConnectionSpec, bool]:
        live = world.lifecycle.get(shop).writes == "tenant"
        return (world.tenant(shop), False) if live else (world.source, True)

    return home


@contextmanager
def _app(world: World, seed: int) -> Iterator[SimulatedApp]:
    with routed_app(world.source, world.cipher, world.shop_ids, seed=seed, ttl=0.5) as app:
        yield app


def _live(world: World, shop: int) -> None:
    world.migrate(shop)
    world.workflow.sync(shop)
    world.workflow.cut_over(shop)


def test_writes_during_copy_and_sync_reach_the_tenants_and_cutover_verifies(make_world: Callable[..., World]) -> None:
    world = make_world(shops=4, scale=0.05, seed=9)
    with _app(world, seed=4) as app:
        with writing(app):
            wait_for_writes(app, 100)
            for shop in world.shop_ids:
                world.migrate(shop)  # capture starts before each copy's snapshot, with the app writing
            for shop in world.shop_ids:
                result = world.workflow.sync(shop)
                assert result.changes > 0
            wait_for_writes(app, 1100)
            # reads first, gradually: the bucket rule decides per shop, deterministically
            world.workflow.set_read_percent(50, "half of the shops read from their tenants")
            for shop in world.shop_ids:
                world.workflow.open_reads(shop)
            app.resolver.invalidate()
            for shop in world.shop_ids:
                expected = "tenant" if read_bucket(shop) < 50 else "shared"
                assert app.resolver.resolve(shop, "read").target == expected
                assert app.resolver.resolve(shop, "write").target == "shared"
            for shop in world.shop_ids:
                report = world.workflow.cut_over(shop)
                # at cutover the tenant equals its source slice, table by table
                assert [v.table for v in report.verification if not v.ok] == []
                assert len(report.verification) == len(world.catalog.tables)
                record = world.lifecycle.get(shop)
                assert (record.state, record.reads, record.writes) == (State.LIVE, "tenant", "tenant")
            wait_for_writes(app, sum(app.writes.values()) + 150)  # the tenants take writes now
        assert app.errors == []
        assert sum(app.writes.values()) >= 1000
        assert {"insert_customer", "update_customer", "count", "delete_bulk_row", "move"} <= set(app.ops)
        # no write lost, none applied twice (counters would be off): every row is as the app left it
        found = app.verify(_home(world))
        assert {s: r.missing for s, r in found.items() if r.missing} == {}
        assert sum(r.rows for r in found.values()) > 200
    history = [h.to_state for h in world.lifecycle.history(world.shop_ids[0])]
    assert history[-3:] == ["reads_rollout", "cutting_over", "live"]


def test_the_fence_refuses_a_cut_over_shops_writes_in_the_shared_database_only(make_world: Callable[..., World]) -> None:
    world = make_world(shops=2, scale=0.05, seed=3)
    shop = world.shop_ids[0]
    _live(world, shop)
    with world.source.connect() as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute("UPDATE customers SET phone = 'bypass' WHERE id = (SELECT min(id) FROM customers WHERE shop_id = %s)", (shop,))
        assert err.value.sqlstate == capture.FENCE_SQLSTATE
        assert f"shop {shop} has moved to its own database" in str(err.value)
        conn.rollback()
        with pytest.raises(psycopg.Error):
            conn.execute("INSERT INTO customers (first_name, last_name, phone, shop_id) VALUES ('x', 'y', 'z', %s)", (shop,))
        conn.rollback()
        # a shop still on the shared database writes as before (a global row too)
        conn.execute("UPDATE customers SET phone = phone WHERE shop_id = %s", (world.shop_ids[1],))
        conn.execute("UPDATE customers SET phone = phone WHERE shop_id IS NULL")
        conn.execute("INSERT INTO email_templates (name, subject, body, shop_id) VALUES ('g', 's', 'b', 0)")
        conn.rollback()
        with pytest.raises(psycopg.Error) as err:
            conn.execute("TRUNCATE newsletter_subscribers")
        assert err.value.sqlstate == "HS002"


def test_rollback_of_the_cutover_copies_back_the_tenants_writes(make_world: Callable[..., World]) -> None:
    world = make_world(shops=2, scale=0.05, seed=5)
    for shop in world.shop_ids:
        _live(world, shop)
    shop = world.shop_ids[1]
    with _app(world, seed=8) as app:
        with writing(app):
            wait_for_writes(app, 150)  # writes into the live tenants
            report = world.workflow.roll_back_cutover(shop)
            assert report.changes_drained > 0
            assert [v.table for v in report.verification if not v.ok] == []
            record = world.lifecycle.get(shop)
            assert (record.state, record.reads, record.writes) == (State.SYNCING, "shared", "shared")
            wait_for_writes(app, sum(app.writes.values()) + 100)  # and the app keeps going, on shared
        assert app.errors == []
        found = app.verify(_home(world))
        assert found[shop].missing == [] and found[shop].rows > 0
    with world.source.connect() as conn:
        assert not capture.is_fenced(conn, shop) and capture.is_captured(conn, shop)
    # and it can be cut over again
    assert world.workflow.cut_over(shop).state == "live"


def _checksums(spec: ConnectionSpec, catalog: Catalog, shops: list[int | None]) -> dict[tuple[str, int | None], object]:
    out: dict[tuple[str, int | None], object] = {}
    with spec.connect() as conn:
        for t in catalog.tables:
            cols = (t.tenant_column, *t.copy_columns)
            for shop in shops:
                if shop is None:
                    q = sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(ROW({})::text, 0)), 0)::text FROM {} WHERE {} IS NULL").format(
                        sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(t.name), sql.Identifier(t.tenant_column))
                    out[(t.name, None)] = conn.execute(q).fetchone()
                else:
                    out[(t.name, shop)] = table_checksum(conn, t, shop, cols, catalog, owned=True)  # the shop's own
    return out


def test_retirement_removes_exactly_the_shops_rows_and_restores_byte_for_byte(make_world: Callable[..., World]) -> None:
    world = make_world(shops=3, scale=0.05, seed=11)
    shop, other = world.shop_ids[2], world.shop_ids[1]
    _live(world, shop)
    world.migrate(other)
    others: list[int | None] = [s for s in world.shop_ids if s != shop] + list(GLOBAL_SHOP_IDS) + [None]
    with pytest.raises(LifecycleRefused, match=f"shop {other} is verified: it cannot start retirement"):
        world.workflow.retire(other, confirm=True)
    with pytest.raises(RetirementRefused, match="explicit confirmation"):
        world.workflow.retire(shop, confirm=False)
    before_others = _checksums(world.source, world.catalog, others)
    before_shop = _checksums(world.source, world.catalog, [shop])
    report = world.workflow.retire(shop, confirm=True)
    assert report.archive.rows > 0 and sum(report.deleted.values()) == report.archive.rows
    assert world.lifecycle.get(shop).state == State.RETIRED
    after = _checksums(world.source, world.catalog, [shop])
    assert all(getattr(v, "rows", None) == 0 for v in after.values())
    assert _checksums(world.source, world.catalog, others) == before_others
    # the tenant still answers for the shop
    with world.app(shop).connect() as tenant:
        assert tenant.execute("SELECT count(*) FROM customers").fetchone()[0] > 0  # type: ignore[index]
    # the way back: the archive comes back byte for byte; a rerun of the restore duplicates nothing
    restored = world.workflow.restore(shop)
    assert sum(restored.values()) == report.archive.rows
    assert _checksums(world.source, world.catalog, [shop]) == before_shop
    assert world.lifecycle.get(shop).state == State.LIVE
    with pytest.raises(LifecycleRefused, match="is live: it cannot start restore"):
        world.workflow.restore(shop)


def test_a_live_tenant_is_never_reloaded_and_phase3_can_be_undone(make_world: Callable[..., World]) -> None:
    world = make_world(shops=1, scale=0.05, seed=13)
    shop = world.shop_ids[0]
    _live(world, shop)
    with pytest.raises(LifecycleRefused, match="never reloaded: roll back the cutover first"):
        world.workflow.copy(shop)
    with pytest.raises(LifecycleRefused, match=f"shop {shop} is live: it cannot stop capture"):
        world.workflow.stop_capture(shop)
    world.workflow.roll_back_cutover(shop)
    world.workflow.stop_capture(shop)
    record = world.lifecycle.get(shop)
    assert (record.state, record.captured) == (State.VERIFIED, False)
    with world.source.connect() as conn:
        assert not capture.is_captured(conn, shop)
        assert capture.lag(conn, shop).pending == 0
    with world.source.connect() as src, world.tenant(shop).connect() as tenant:
        assert all(v.ok for v in verify_tables(src, tenant, world.catalog, shop))
    with pytest.raises(LifecycleRefused, match="not captured"):
        world.workflow.sync(shop)


def test_the_rollback_waits_for_a_tenant_write_that_passed_the_guard_before_it_closed(
    make_world: Callable[..., World],
) -> None:
    """The way back from phase 4 closes the tenant's guard, then must wait for every transaction that began
    before: a write that passed the guard while the shop was live and commits later would otherwise miss the
    copy-back's snapshot, and the tenant's log would be dropped with it (the demo lost a delete and an update
    this way). The application writes as its own role, whose sessions the migration's owner role cannot see
    in pg_stat_activity."""
    world = make_world(shops=1, scale=0.05, seed=17)
    shop = world.shop_ids[0]
    _live(world, shop)
    with world.app(shop).connect() as app, world.app(shop).connect(autocommit=True) as late:
        deleted, updated = app.execute(  # type: ignore[misc]
            "SELECT min(id), max(id) FROM customers c WHERE NOT EXISTS (SELECT FROM repairs r WHERE r.customer_id = c.id)"
        ).fetchone()
        app.commit()
        # one transaction of the application's, past the guard (the tenant is live), not committed yet
        app.execute("DELETE FROM customers WHERE id = %s", (deleted,))
        app.execute("UPDATE customers SET phone = 'committed late' WHERE id = %s", (updated,))
        failures: list[BaseException] = []

        def roll_back() -> None:
            try:
                world.workflow.roll_back_cutover(shop)
            except BaseException as exc:  # re-raised in the test's thread
                failures.append(exc)

        thread = threading.Thread(target=roll_back)
        thread.start()
        try:
            with world.tenant(shop).connect() as tenant:
                deadline = time.monotonic() + 60
                while (guard := capture.tenant_guard_state(tenant)) is not None and guard.accepts_writes:
                    assert time.monotonic() < deadline, "the rollback never closed the tenant's guard"
                    time.sleep(0.02)
            with pytest.raises(psycopg.Error) as err:  # a write starting now is refused ...
                late.execute("UPDATE customers SET phone = 'refused' WHERE id = %s", (updated,))
            assert err.value.sqlstate == capture.FENCE_SQLSTATE
            time.sleep(2.0)  # ... and the one in flight holds the rollback at the fence
            record = world.lifecycle.get(shop)
            assert (record.state, record.writes) == (State.LIVE, "tenant"), (
                "the rollback went past the tenant's fence while a write the tenant accepted was still in flight"
            )
        finally:
            app.commit()
            thread.join(120)
    assert not thread.is_alive() and failures == []
    record = world.lifecycle.get(shop)
    assert (record.state, record.writes) == (State.SYNCING, "shared")
    with world.source.connect() as conn:
        found = conn.execute(
            "SELECT id, phone FROM customers WHERE shop_id = %s AND id = ANY(%s) ORDER BY id", (shop, [deleted, updated])
        ).fetchall()
    assert found == [(updated, "committed late")]  # both writes came back to the shared database
