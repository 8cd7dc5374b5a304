"""Phase 2 on the realistic Handyshop database: tenant rows equal source rows, nothing lost, reruns exact,
one snapshot per shop, sequences continue, cross-shop references named."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from handyshop_migration.devtools.seed import GLOBAL_SHOP_IDS, TENANT_TABLES
from handyshop_migration.tenancy.db import replaying
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog, introspect, load_catalog
from handyshop_migration.tenancy.engine.copy import (
    SourceSnapshot,
    copy_shop,
    copy_table,
    pending_foreign_keys,
)
from handyshop_migration.tenancy.engine.tenant_schema import render
from handyshop_migration.tenancy.engine.verification import table_checksum, verify_tables
from handyshop_migration.tenancy.errors import CopyError
from handyshop_migration_tests.plugins.worlds import World
from handyshop_migration_tests.support.databases import create_database, drop_database
from handyshop_migration_tests.support.schemas import exotic


@pytest.fixture
def migration(make_world: Callable[..., World]) -> World:
    return make_world(shops=4, scale=0.05, seed=7, prefix="t_copy_src")


@pytest.fixture
def own_migration(make_world: Callable[..., World], request: pytest.FixtureRequest) -> World:
    """A migration whose source a test may change."""
    args = getattr(request, "param", {})
    return make_world(**{"shops": 3, "scale": 0.03, "seed": 11, "prefix": "t_copy_own", **args})


def _ordered_rows(conn: psycopg.Connection, catalog: Catalog, table: str, shop: int | None) -> list[tuple]:
    t = catalog.table(table)
    cols = sql.SQL(", ").join(map(sql.Identifier, t.copy_columns))
    where = sql.SQL("WHERE {} = %s").format(sql.Identifier(t.tenant_column)) if shop is not None else sql.SQL("")
    query = sql.SQL("SELECT {} FROM {} {} ORDER BY 1").format(cols, sql.Identifier(t.name), where)
    return conn.execute(query, (shop,) if shop is not None else ()).fetchall()


def test_shipped_catalog_matches_the_live_handyshop_schema(migration: World) -> None:
    assert load_catalog().checksum == migration.catalog.checksum


def test_tenants_equal_their_source_slices_and_nothing_is_lost(migration: World) -> None:
    shops = migration.report.shop_ids[:3]
    for shop in shops:
        migration.migrate(shop)
    with migration.source.connect() as src:
        for shop in shops:
            with migration.tenant(shop).connect() as tenant:
                results = verify_tables(src, tenant, migration.catalog, shop)
                assert [r.table for r in results if not r.ok] == []
                assert sum(r.tenant.rows for r in results) == sum(migration.report.shop_rows[shop].values())
                # the checks' word is not enough: compare the rows themselves
                for table in ("customers", "repairs", "cost_estimates", "email_log", "qr_codes", "email_templates"):
                    assert _ordered_rows(src, migration.catalog, table, shop) == _ordered_rows(
                        tenant, migration.catalog, table, None
                    ), table
                assert tenant.execute(
                    "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'shop_id'"
                ).fetchone() == (0,)
                assert pending_foreign_keys(tenant, migration.schema) == []
        # every source row of a tenant table is in exactly one tenant, or is a reported global/NULL/unmigrated row
        for table in TENANT_TABLES:
            t = migration.catalog.table(table)
            total = table_checksum(src, t).rows
            placed = sum(migration.report.shop_rows[s].get(table, 0) for s in migration.report.shop_rows)
            nulls = len(migration.report.null_shop_rows.get(table, []))
            assert total == placed + nulls, table
    assert set(GLOBAL_SHOP_IDS) <= set(migration.report.shop_rows)


def test_sequences_continue_after_the_copied_ids(migration: World) -> None:
    shop = migration.report.shop_ids[0]
    migration.migrate(shop)
    creds = migration.registry.get(shop)
    with migration.source.connect() as src:
        max_customer = src.execute("SELECT max(id) FROM customers").fetchone()[0]  # type: ignore[index]
    with creds.spec().connect() as tenant:
        # not live yet: the tenant refuses the application's writes (its write guard), naming route()
        with pytest.raises(psycopg.Error) as refused:
            tenant.execute("INSERT INTO customers (first_name, last_name, phone) VALUES ('Zu', 'Früh', '1')")
        assert refused.value.sqlstate == "HS001" and "not live yet" in str(refused.value)
        tenant.rollback()
    with migration.tenant(shop).connect() as tenant, replaying(tenant):  # the migration's own replay passes
        new_id = tenant.execute(
            "INSERT INTO customers (first_name, last_name, phone) VALUES ('Neu', 'Kundin', '0660') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        # past every id the shared database handed out, not only past this shop's
        assert new_id > max_customer
        repair_id = tenant.execute(
            "INSERT INTO repairs (customer_id, device_type, brand, model, issue) VALUES (%s, 'Smartphone', 'Apple', "
            "'iPhone 12', 'Display') RETURNING id",
            (new_id,),
        ).fetchone()[0]  # type: ignore[index]
        assert repair_id is not None
        raise psycopg.Rollback()  # leave the tenant as it was


def test_rerunning_provision_and_copy_changes_nothing(migration: World) -> None:
    shop = migration.report.shop_ids[1]
    migration.migrate(shop)
    with migration.tenant(shop).connect() as tenant:
        before = {t.name: table_checksum(tenant, t) for t in migration.catalog.tables}
    migration.migrate(shop)
    with migration.tenant(shop).connect() as tenant:
        after = {t.name: table_checksum(tenant, t) for t in migration.catalog.tables}
        assert pending_foreign_keys(tenant, migration.schema) == []
    assert before == after


def test_copy_reads_one_snapshot_while_the_shop_keeps_writing(own_migration: World) -> None:
    m = own_migration
    shop = m.report.shop_ids[0]
    m.workflow.provision(shop)
    with SourceSnapshot(m.source) as snap, m.tenant(shop).connect() as tenant:
        # the app writes after the snapshot was taken: a new customer with a repair, and a renamed customer
        with m.source.connect() as app:
            cid = app.execute(
                "INSERT INTO customers (first_name, last_name, phone, shop_id) VALUES ('Spät', 'Kommer', '1', %s) RETURNING id",
                (shop,),
            ).fetchone()[0]  # type: ignore[index]
            app.execute(
                "INSERT INTO repairs (customer_id, device_type, brand, model, issue, shop_id) "
                "VALUES (%s, 'Tablet', 'Samsung', 'Tab S9', 'Akku', %s)",
                (cid, shop),
            )
            app.execute("UPDATE customers SET last_name = 'Umbenannt' WHERE id = (SELECT min(id) FROM customers WHERE shop_id = %s)", (shop,))
            app.commit()
        for table in m.catalog.table_names:
            copy_table(snap, tenant, m.schema, table, shop)
        assert all(v.ok for v in verify_tables(snap.conn, tenant, m.catalog, shop))
        assert tenant.execute("SELECT count(*) FROM customers WHERE id = %s", (cid,)).fetchone() == (0,)
        assert tenant.execute("SELECT count(*) FROM customers WHERE last_name = 'Umbenannt'").fetchone() == (0,)
        assert pending_foreign_keys(tenant, m.schema) == []
        with m.source.connect() as now:
            stale = {v.table for v in verify_tables(now, tenant, m.catalog, shop) if not v.ok}
        assert stale == {"customers", "repairs"}


def test_recopying_one_table_alone_leaves_its_foreign_keys_pending(migration: World) -> None:
    shop = migration.report.shop_ids[2]
    migration.migrate(shop)
    copy_shop(migration.source, migration.tenant(shop), migration.schema, shop, tables=["customers"])
    with migration.tenant(shop).connect() as tenant:
        pending = pending_foreign_keys(tenant, migration.schema)
    children = {fk.name for t in migration.schema.tables for fk in t.foreign_keys if fk.parent == "customers"}
    assert set(pending) == children and children
    copy_shop(migration.source, migration.tenant(shop), migration.schema, shop)
    with migration.tenant(shop).connect() as tenant:
        assert pending_foreign_keys(tenant, migration.schema) == []


@pytest.mark.parametrize("own_migration", [{"cross_shop_reference": True}], indirect=True)
def test_a_cross_shop_reference_is_named_and_nothing_half_done(own_migration: World) -> None:
    m = own_migration
    ref = m.report.cross_shop_references[0]
    m.workflow.provision(ref.row_shop)
    with pytest.raises(CopyError) as err:
        m.workflow.copy(ref.row_shop)
    message = str(err.value)
    assert "cross-shop" in message and ref.table in message and str(ref.parent_id) in message
    with m.tenant(ref.row_shop).connect() as tenant:
        assert tenant.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(ref.table))).fetchone() == (0,)
    record = m.lifecycle.get(ref.row_shop)
    assert record.state.value == "copying" and "cross-shop" in (record.last_error or "")  # a rerun resumes it


def test_large_slices_rebuild_keys_and_indexes_after_the_load(migration: World) -> None:
    shop = migration.report.shop_ids[3]
    migration.workflow.provision(shop)
    results = copy_shop(migration.source, migration.tenant(shop), migration.schema, shop, rebuild_threshold=0)
    assert all(r.rebuilt_indexes for r in results)

    def indexes(spec: ConnectionSpec) -> list[tuple]:
        with spec.connect() as conn:
            return conn.execute(
                "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2"
            ).fetchall()

    migration.migrate(migration.report.shop_ids[0])
    assert indexes(migration.tenant(shop)) == indexes(migration.tenant(migration.report.shop_ids[0]))
    with migration.source.connect() as src, migration.tenant(shop).connect() as tenant:
        assert all(v.ok for v in verify_tables(src, tenant, migration.catalog, shop))


def test_verification_detects_changed_missing_and_duplicated_rows(pg_server: ConnectionSpec) -> None:
    source = create_database(pg_server, "t_verify_src")
    target = create_database(pg_server, "t_verify_dst")
    try:
        with source.connect() as conn:
            exotic.create(conn)
        catalog = introspect(source, tenant_column="tenant_id")
        schema = render(catalog)
        with target.connect() as conn:
            conn.execute(schema.script().encode())
            conn.commit()
        copy_shop(source, target, schema, 2)
        with source.connect() as src, target.connect() as dst:
            assert all(v.ok for v in verify_tables(src, dst, catalog, 2))
            dst.execute("""UPDATE "Things" SET "Name" = 'manipuliert' WHERE id = (SELECT min(id) FROM "Things")""")
            dst.execute("DELETE FROM kids WHERE id = (SELECT min(id) FROM kids)")
            dst.execute("INSERT INTO event_log SELECT * FROM event_log LIMIT 1")  # a duplicate in a table without a key
            bad = {v.table: v for v in verify_tables(src, dst, catalog, 2) if not v.ok}
            assert set(bad) == {"Things", "kids", "event_log"}
            assert bad["Things"].row_count_ok and not bad["Things"].checksum_ok
            assert not bad["kids"].row_count_ok and not bad["event_log"].row_count_ok
            # identity and generated columns behave in the tenant as in the source
            dst.rollback()
            new = dst.execute("""INSERT INTO "Things" ("Name", total) VALUES ('neu', 2) RETURNING id, dbl""").fetchone()
            assert new is not None and new[0] > 120 and new[1] == 4
    finally:
        drop_database(pg_server, source.dbname)
        drop_database(pg_server, target.dbname)
