"""Phases 3-5 on the library, with a simulated application writing all the time: capture, sync, the write
fence, cutover, the way back from phase 4 with the tenant's writes, retirement and its restore.

The tests of this module build on each other in file order (one migration, one writer)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from handyshop_migration.devtools.seed import GLOBAL_SHOP_IDS, TENANT_TABLES, seed_database
from handyshop_migration.devtools.simulation import SimulatedApp
from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.application.routing import RouteResolver, RoutingTable, read_bucket
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import Catalog, introspect
from handyshop_migration.tenancy.engine.copy import copy_shop
from handyshop_migration.tenancy.engine.cutover import (
    CutoverReport,
    cut_over_writes,
    open_reads,
    roll_back_cutover,
)
from handyshop_migration.tenancy.engine.migrations import tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming
from handyshop_migration.tenancy.engine.retirement import (
    archive_shop,
    restore_shop,
    retire_shop,
)
from handyshop_migration.tenancy.engine.tenant_schema import render
from handyshop_migration.tenancy.engine.verification import table_checksum, verify_tables
from handyshop_migration.tenancy.errors import CaptureError, CopyError, RetirementRefused
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    unique_namespace,
)

SHOPS = [1, 2, 3, 4]


@dataclass
class World:
    admin: ConnectionSpec
    source: ConnectionSpec
    catalog: Catalog
    provisioner: Provisioner
    routing: RoutingTable
    app: SimulatedApp
    reports: dict[int, CutoverReport]

    def tenant(self, shop: int) -> ConnectionSpec:
        return self.admin.with_db(self.provisioner.naming.database_name(shop))

    def home(self, shop: int) -> tuple[ConnectionSpec, bool]:
        live = self.routing.get(shop).writes == "tenant"
        return (self.tenant(shop), False) if live else (self.source, True)


@pytest.fixture(scope="module")
def world(pg_server: ConnectionSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    source = create_database(pg_server, "t_zdt_src")
    seed_database(source, shops=len(SHOPS), scale=0.05, seed=9)
    catalog = introspect(source, include=TENANT_TABLES)
    registry = ConnectionRegistry(source, CredentialCipher(generate_key()))
    registry.ensure_schema()
    routing = RoutingTable(source)
    routing.ensure_schema()
    ns = unique_namespace()
    prov = Provisioner(
        pg_server, registry, tenant_migrations(catalog), naming=TenantNaming(ns + "shop_{id}_db", ns + "shop_user_{id}")
    )
    resolver = RouteResolver(routing, registry, source, ttl=0.5)
    app = SimulatedApp(source, resolver, SHOPS, seed=4)
    w = World(pg_server, source, catalog, prov, routing, app, {})
    try:
        yield w
    finally:
        app.close()
        prov.close()
        registry.close()
        drop_namespace(pg_server, ns)
        drop_database(pg_server, source.dbname)


def _wait_for_writes(app: SimulatedApp, at_least: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(app.writes.values()) < at_least:
        assert time.monotonic() < deadline, f"the writer made only {sum(app.writes.values())} writes: {app.errors[:3]}"
        assert not app.errors, app.errors[:3]
        time.sleep(0.05)


def test_writes_during_copy_and_sync_reach_the_tenants_and_cutover_verifies(world: World) -> None:
    thread, stop = world.app.start()
    try:
        _wait_for_writes(world.app, 100)
        with world.source.connect() as conn:
            for shop in SHOPS:
                assert capture.enable(conn, world.catalog, shop)  # before the bulk copy's snapshot
        for shop in SHOPS:
            world.provisioner.provision(shop)
            copy_shop(world.source, world.tenant(shop), render(world.catalog), shop)
        for shop in SHOPS:
            result = capture.apply_changes(capture.TO_TENANT, world.source, world.tenant(shop), world.catalog, shop)
            assert result.changes > 0 and result.lag is not None
        _wait_for_writes(world.app, 1100)
        # reads first, gradually: the bucket rule decides per shop, deterministically
        world.routing.set_read_percent(50, "half of the shops read from their tenants")
        for shop in SHOPS:
            open_reads(world.routing, shop)
        resolver = world.app.resolver
        resolver.invalidate()
        for shop in SHOPS:
            expected = "tenant" if read_bucket(shop) < 50 else "shared"
            assert resolver.resolve(shop, "read").target == expected
            assert resolver.resolve(shop, "write").target == "shared"
        for shop in SHOPS:
            report = cut_over_writes(world.source, world.tenant(shop), world.catalog, world.routing, shop)
            world.reports[shop] = report
            # at cutover the tenant equals its source slice, table by table
            assert [v.table for v in report.verification if not v.ok] == []
            assert len(report.verification) == len(TENANT_TABLES)
            assert report.route is not None and report.route.writes == "tenant" and report.route.state == "live"
        _wait_for_writes(world.app, sum(world.app.writes.values()) + 150)  # the tenants take writes now
    finally:
        stop.set()
        thread.join()
    assert world.app.errors == []
    assert sum(world.app.writes.values()) >= 1000
    assert {"insert_customer", "update_customer", "count", "delete_bulk_row", "move"} <= set(world.app.ops)
    assert world.app.fence_retries >= 0
    # no write lost, none applied twice (counters would be off): every row is as the app left it
    found = world.app.verify(world.home)
    assert {s: r.missing for s, r in found.items() if r.missing} == {}
    assert sum(r.rows for r in found.values()) > 200
    history = [h.state for h in world.routing.history(SHOPS[0])]
    assert history[-3:] == ["reads_rollout", "cutting_over", "live"] or history[-2:] == ["cutting_over", "live"]


def test_the_fence_refuses_a_cut_over_shops_writes_in_the_shared_database_only(world: World) -> None:
    shop = SHOPS[0]
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
        conn.execute("UPDATE customers SET phone = phone WHERE shop_id IS NULL")
        conn.execute("INSERT INTO email_templates (name, subject, body, shop_id) VALUES ('g', 's', 'b', 0)")
        conn.rollback()
        with pytest.raises(psycopg.Error) as err:
            conn.execute("TRUNCATE newsletter_subscribers")
        assert err.value.sqlstate == "HS002"


def test_rollback_of_the_cutover_copies_back_the_tenants_writes(world: World) -> None:
    shop = SHOPS[1]
    thread, stop = world.app.start()
    before = sum(world.app.writes.values())
    try:
        _wait_for_writes(world.app, before + 150)  # writes into the live tenant
        report = roll_back_cutover(world.source, world.tenant(shop), world.catalog, world.routing, shop)
        assert report.changes_drained > 0
        assert [v.table for v in report.verification if not v.ok] == []
        assert world.routing.get(shop).writes == "shared" and world.routing.get(shop).reads == "shared"
        _wait_for_writes(world.app, sum(world.app.writes.values()) + 100)  # and the app keeps going, on shared
    finally:
        stop.set()
        thread.join()
    assert world.app.errors == []
    found = world.app.verify(world.home)
    assert found[shop].missing == [] and found[shop].rows > 0
    # the copy cannot run over a live tenant, but this one is not live any more
    with world.source.connect() as conn:
        assert not capture.is_fenced(conn, shop) and capture.is_captured(conn, shop)


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
                    out[(t.name, shop)] = table_checksum(conn, t, shop, cols)
    return out


def test_retirement_removes_exactly_the_shops_rows_and_restores_byte_for_byte(world: World, tmp_path: Path) -> None:
    shop = SHOPS[2]
    others: list[int | None] = [s for s in SHOPS if s != shop] + list(GLOBAL_SHOP_IDS) + [None]
    with pytest.raises(RetirementRefused, match="not live|routing state 'shared'"):
        archive = archive_shop(world.source, world.catalog, SHOPS[1], tmp_path)
        retire_shop(world.source, world.catalog, archive, confirm=True, state=world.routing.get(SHOPS[1]).state)
    archive = archive_shop(world.source, world.catalog, shop, tmp_path)
    assert archive.rows > 0
    with pytest.raises(RetirementRefused, match="explicit confirmation"):
        retire_shop(world.source, world.catalog, archive, confirm=False, state=world.routing.get(shop).state)
    before_others = _checksums(world.source, world.catalog, others)
    before_shop = _checksums(world.source, world.catalog, [shop])
    result = retire_shop(world.source, world.catalog, archive, confirm=True, state=world.routing.get(shop).state)
    assert sum(result.deleted.values()) == archive.rows
    after = _checksums(world.source, world.catalog, [shop])
    assert all(getattr(v, "rows", None) == 0 for v in after.values())
    assert _checksums(world.source, world.catalog, others) == before_others
    # the tenant still answers for the shop
    with world.tenant(shop).connect() as tenant:
        assert tenant.execute("SELECT count(*) FROM customers").fetchone()[0] > 0  # type: ignore[index]
    # the way back: the archive comes back byte for byte, and nothing is duplicated by a second restore
    restored = restore_shop(world.source, world.catalog, archive)
    assert sum(restored.values()) == archive.rows
    assert _checksums(world.source, world.catalog, [shop]) == before_shop
    with pytest.raises(RetirementRefused, match="duplicate"):
        restore_shop(world.source, world.catalog, archive)


def test_a_live_tenant_is_never_reloaded_and_phase3_can_be_undone(world: World) -> None:
    shop = SHOPS[3]
    with pytest.raises(CopyError, match="is live"):
        copy_shop(world.source, world.tenant(shop), render(world.catalog), shop)
    with world.source.connect() as conn:
        with pytest.raises(CaptureError, match="fenced"):
            capture.disable(conn, shop)
    roll_back_cutover(world.source, world.tenant(shop), world.catalog, world.routing, shop)
    with world.source.connect() as conn:
        capture.disable(conn, shop)
        assert not capture.is_captured(conn, shop)
        assert capture.lag(conn, shop).pending == 0
    with world.source.connect() as src, world.tenant(shop).connect() as tenant:
        assert all(v.ok for v in verify_tables(src, tenant, world.catalog, shop))
