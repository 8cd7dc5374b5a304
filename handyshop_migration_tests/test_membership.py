"""Rows that belong to a shop without carrying its id (implied tables, reached through foreign keys),
reference tables copied whole into every tenant, and global rows of tenant tables copied into every tenant.

On the store fixture (Pagila split by store: rental -> inventory -> store, payment -> rental, partitioned by
month; the catalogue, the geography and the addresses as reference tables) and the seeded Handyshop (the
global device catalog under shop 1682, the global templates under shop 0)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from handyshop_migration.tenancy.engine import membership
from handyshop_migration.tenancy.engine.catalog import (
    IMPLIED,
    REFERENCE,
    Catalog,
    introspect,
    membership_diff,
)
from handyshop_migration.tenancy.engine.retirement import archive_shop, restore_shop, retire_shop
from handyshop_migration.tenancy.engine.validation import validate_source
from handyshop_migration.tenancy.engine.verification import verify_tables
from handyshop_migration.tenancy.errors import CatalogError, CopyError, RetirementRefused
from handyshop_migration_tests.plugins.worlds import World
from handyshop_migration_tests.support.schemas import store

STORE_ARGS = {"exclude": ["store", "ddl_log"]}
INFO = store.INFO


def _hops(path: tuple) -> tuple:
    return tuple((h.table, h.columns, h.ref_table) for h in path)


def _store_world(make_world: Callable[..., World], **inspect_args: object) -> World:
    return make_world(schema=store.create, tenant_column="store_id", shop_ids=[1, 2, 3],
                      inspect_args={**STORE_ARGS, **inspect_args})


def _rows(conn: psycopg.Connection, query: str | sql.Composable, params: tuple = ()) -> list[tuple]:
    return conn.execute(query, params).fetchall()


def test_inspect_finds_implied_and_reference_tables_with_their_paths(make_world: Callable[..., World]) -> None:
    world = _store_world(make_world)
    c = world.catalog
    implied = {t.name: t for t in c.of_role(IMPLIED)}
    assert set(implied) == set(INFO.implied_tables)
    for name, path in INFO.implied_tables.items():
        assert _hops(implied[name].path) == path
        assert {_hops(p) for p in implied[name].alternative_paths} == set(INFO.other_paths.get(name, ()))
        assert implied[name].tenant_column == ""
    assert {t.name for t in c.of_role(REFERENCE)} == set(INFO.reference_tables)
    assert {t.name for t in c.tenant_tables} == set(INFO.tenant_tables)
    payment = c.table("payment")
    assert payment.partition_key == "RANGE (payment_date)"
    assert tuple(p.name for p in payment.partitions) == INFO.partitioned["payment"]
    assert {s.name for s in c.shared_tables} == set(INFO.shared_only)
    # parents before children: a payment's rental, a rental's inventory
    order = c.table_names
    assert order.index("inventory") < order.index("rental") < order.index("payment")
    assert c.membership["payment"] == "implied via payment.rental_id -> rental, rental.inventory_id -> inventory"
    # the file keeps it all
    again = Catalog.from_json(c.to_json())
    assert again == c


def test_operator_chooses_another_path_and_the_diff_shows_it(make_world: Callable[..., World]) -> None:
    world = _store_world(make_world)
    chosen = introspect(world.source, tenant_column="store_id", paths={"rental": ["customer_id"]}, **STORE_ARGS)
    assert _hops(chosen.table("rental").path) == (("rental", ("customer_id",), "customer"),)
    # the payment follows its rental's path
    assert _hops(chosen.table("payment").path) == (("payment", ("rental_id",), "rental"),
                                                   ("rental", ("customer_id",), "customer"))
    diff = membership_diff(world.catalog, chosen)
    assert diff == [
        "~ payment: implied via payment.rental_id -> rental, rental.inventory_id -> inventory -> "
        "implied via payment.rental_id -> rental, rental.customer_id -> customer",
        "~ rental: implied via rental.inventory_id -> inventory -> implied via rental.customer_id -> customer",
    ]
    unreferenced = introspect(world.source, tenant_column="store_id", not_reference=["actor"], **STORE_ARGS)
    assert "+ actor: shared (not declared reference)" not in membership_diff(world.catalog, unreferenced)
    assert "~ actor: reference (copied whole into every tenant) -> shared (not declared reference)" in \
        membership_diff(world.catalog, unreferenced)
    assert membership_diff(world.catalog, world.catalog) == []
    with pytest.raises(CatalogError, match=r"rental has no foreign key on \(return_date\)"):
        introspect(world.source, tenant_column="store_id", paths={"rental": ["return_date"]}, **STORE_ARGS)


def test_ambiguous_and_orphan_children_are_reported_with_their_ids(make_world: Callable[..., World]) -> None:
    world = _store_world(make_world)
    with world.source.connect() as conn:
        found = {(f.table, f.kind): f for f in membership.findings(conn, world.catalog, tenants=[1, 2, 3])}
    assert set(found) == {("rental", "ambiguous"), ("payment", "orphan")}
    assert found["rental", "ambiguous"].ids == tuple(f"({i})" for i in INFO.ambiguous_rows["rental"])
    assert found["payment", "orphan"].ids == (f'("2025-03-03 10:00:00",{INFO.orphan_rows["payment"][0]})',)
    assert found["payment", "orphan"].count == 1
    assert "9001" in found["rental", "ambiguous"].line() and "rental.inventory_id -> inventory" in \
        found["rental", "ambiguous"].line()
    # the copy of store 1 (where the chosen path puts rental 9001) cannot keep its foreign key to store 2's customer
    world.workflow.provision(1)
    with pytest.raises(CopyError, match=r"rental rows reference customer rows that are not the shop's.*=\(21\)"):
        world.workflow.copy(1)


def _fix_ambiguous_rental(world: World) -> None:
    """What an operator does about phase 0's finding: rental 9001's customer becomes one of store 1's."""
    with world.source.connect() as conn:
        conn.execute("UPDATE rental SET customer_id = 1 WHERE rental_id = 9001")


RENTALS_OF = ("SELECT r.rental_id FROM rental r JOIN inventory i ON i.inventory_id = r.inventory_id "
              "WHERE i.store_id = %s ORDER BY 1")
PAYMENTS_OF = ("SELECT p.payment_id FROM payment p JOIN rental r ON r.rental_id = p.rental_id "
               "JOIN inventory i ON i.inventory_id = r.inventory_id WHERE i.store_id = %s ORDER BY 1")


def _ids(conn: psycopg.Connection, query: str, *params: object) -> list[int]:
    return [r[0] for r in conn.execute(query, params).fetchall()]


def _whole(conn: psycopg.Connection, table: str) -> list[tuple]:
    return conn.execute(sql.SQL("SELECT t::text FROM {} t ORDER BY 1").format(sql.Identifier(table))).fetchall()


def test_store_tenants_hold_their_rentals_payments_and_every_reference_row(make_world: Callable[..., World]) -> None:
    world = _store_world(make_world)
    _fix_ambiguous_rental(world)
    for shop in (1, 2):
        world.workflow.provision(shop)
        report = world.workflow.copy(shop)
        assert report.verified, report.problems
        checked = {r.verification.table for r in report.tables}
        assert {"rental", "payment", *INFO.reference_tables} <= checked  # a parity gate per table
    with world.source.connect() as src:
        for shop in (1, 2):
            with world.admin_on(shop).connect() as t:
                expected_rentals = _ids(src, RENTALS_OF, shop)
                assert expected_rentals and _ids(t, "SELECT rental_id FROM rental ORDER BY 1") == expected_rentals
                expected_payments = _ids(src, PAYMENTS_OF, shop)
                assert expected_payments and _ids(t, "SELECT payment_id FROM payment ORDER BY 1") == expected_payments
                # each payment is in the same monthly partition as in the source
                where = "SELECT tableoid::regclass::text, count(*) FROM payment WHERE payment_id = ANY(%s) GROUP BY 1 ORDER BY 1"
                assert _rows(t, where, (expected_payments,)) == _rows(src, where, (expected_payments,))
                parts = _ids(t, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                "WHERE i.inhparent = 'payment'::regclass ORDER BY 1")
                assert tuple(parts) == INFO.partitioned["payment"]
                for table in INFO.reference_tables:
                    assert _whole(t, table) == _whole(src, table), table
                fks = set(_ids(t, "SELECT conname FROM pg_constraint WHERE contype = 'f'"))
                assert {"rental_inventory_id_fkey", "payment_rental_id_fkey", "customer_address_id_fkey",
                        "film_language_id_fkey", "inventory_film_id_fkey"} <= fks
        # the rental that was ambiguous goes where its chosen path (its inventory) says: store 1
        with world.admin_on(1).connect() as t1, world.admin_on(2).connect() as t2:
            assert _ids(t1, "SELECT rental_id FROM rental WHERE rental_id = 9001") == [9001]
            assert _ids(t2, "SELECT rental_id FROM rental WHERE rental_id = 9001") == []
            # the orphan payment is in no tenant
            assert _ids(t1, "SELECT payment_id FROM payment WHERE payment_id = 9001") == []


def test_phase0_reports_implied_rows_with_their_keys(make_world: Callable[..., World]) -> None:
    world = _store_world(make_world)
    report = validate_source(world.source, world.catalog)
    found = {f.details["kind"]: f for f in report.by_check("implied_rows")}
    assert set(found) == {"ambiguous", "orphan"}
    assert found["ambiguous"].severity == "error" and found["ambiguous"].table == "rental"
    assert found["ambiguous"].details["keys"] == ["(9001)"] and found["ambiguous"].shop_ids == (1, 2)
    assert report.blocked_shops() >= {1, 2}
    assert found["orphan"].severity == "warning" and found["orphan"].table == "payment"
    assert found["orphan"].details["keys"] == ['("2025-03-03 10:00:00",9001)']
    # no tenant-column checks run on tables that have no tenant column
    assert not [f for f in report.findings if f.table in ("rental", "payment", "film")
                and f.check in ("null_shop_rows", "orphan_shop_rows", "cross_shop_references")]


def test_retirement_deletes_exactly_the_shops_implied_rows_never_reference_rows(
    make_world: Callable[..., World], tmp_path: Path
) -> None:
    world = _store_world(make_world)
    _fix_ambiguous_rental(world)
    for shop in (1, 2):
        world.migrate(shop)
    with world.source.connect() as src:
        rentals = {s: _ids(src, RENTALS_OF, s) for s in (1, 2, 3)}
        payments = {s: _ids(src, PAYMENTS_OF, s) for s in (1, 2, 3)}
        all_rentals = set(_ids(src, "SELECT rental_id FROM rental"))
        all_payments = set(_ids(src, "SELECT payment_id FROM payment"))
        references = {t: _whole(src, t) for t in INFO.reference_tables}
    archive = archive_shop(world.source, world.catalog, 1, tmp_path)
    assert {a.table: a.rows for a in archive.tables}["rental"] == len(rentals[1])
    assert not {a.table for a in archive.tables} & set(INFO.reference_tables)
    # the tenants table still names store 1's manager: nothing may be deleted under it
    with pytest.raises(RetirementRefused, match=r"store rows .*reference shop 1's staff"):
        retire_shop(world.source, world.catalog, archive, confirm=True, state="live")
    with world.source.connect() as src:
        src.execute("ALTER TABLE store DROP CONSTRAINT store_manager_staff_id_fkey")
    result = retire_shop(world.source, world.catalog, archive, confirm=True, state="live")
    assert result.deleted["rental"] == len(rentals[1]) and result.deleted["payment"] == len(payments[1])
    with world.source.connect() as src:
        assert set(_ids(src, "SELECT rental_id FROM rental")) == all_rentals - set(rentals[1])
        assert set(_ids(src, "SELECT payment_id FROM payment")) == all_payments - set(payments[1])
        assert _ids(src, RENTALS_OF, 2) == rentals[2] and _ids(src, PAYMENTS_OF, 3) == payments[3]
        assert {t: _whole(src, t) for t in INFO.reference_tables} == references
    restored = restore_shop(world.source, world.catalog, archive)
    assert restored["payment"] == len(payments[1])
    with world.source.connect() as src:
        assert set(_ids(src, "SELECT payment_id FROM payment")) == all_payments


def _handyshop_with_a_model_under_a_global_brand(make_world: Callable[..., World]) -> tuple[World, int, int]:
    """A seeded Handyshop whose first shop has a model under a global (1682) brand, as the real app allows."""
    world = make_world(shops=2, scale=0.03, seed=7, prefix="t_globals")
    shop = world.shop_ids[0]
    brand = world.report.global_rows[1682]["user_brands"][0]
    with world.source.connect() as conn:
        model = conn.execute(
            "INSERT INTO user_models (name, brand_id, user_id, shop_id, created_at, updated_at) "
            "VALUES ('Galaxy S24 (eigene Variante)', %s, (SELECT min(id) FROM users WHERE shop_id = %s), %s, now(), now()) "
            "RETURNING id", (brand, shop, shop)
        ).fetchone()[0]  # type: ignore[index]
    return world, shop, model


def test_handyshop_tenants_hold_the_global_catalog_and_templates_next_to_their_own(
    make_world: Callable[..., World],
) -> None:
    world, shop, model = _handyshop_with_a_model_under_a_global_brand(make_world)
    assert {t.name for t in world.catalog.tenant_tables if t.global_rows == "every_tenant"} == {
        "device_types", "user_brands", "user_models", "email_templates"}
    for s in world.shop_ids:
        world.migrate(s)
    globals_ = world.report.global_rows
    with world.source.connect() as src:
        for s in world.shop_ids:
            with world.admin_on(s).connect() as t:
                for table, ids in (*globals_[1682].items(), *globals_[0].items()):
                    where = f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY 1"  # noqa: S608 - test names
                    assert _ids(t, where, ids) == sorted(ids), (s, table)
                    own = _ids(src, f"SELECT id FROM {table} WHERE shop_id = %s ORDER BY 1", s)  # noqa: S608
                    assert set(_ids(t, f"SELECT id FROM {table}")) == set(own) | set(ids)  # noqa: S608
                # rows with shop_id NULL stay in the shared database
                for table, ids in world.report.null_shop_rows.items():
                    assert _ids(t, f"SELECT id FROM {table} WHERE id = ANY(%s)", ids) == [], table  # noqa: S608
                # the tenant's next ids are past every global row it holds
                top = max(i for ids in globals_[1682].values() for i in ids)
                assert t.execute("SELECT nextval('user_models_id_seq')").fetchone()[0] > top  # type: ignore[index]
        with world.admin_on(shop).connect() as t:
            assert _rows(t, "SELECT b.id FROM user_models m JOIN user_brands b ON b.id = m.brand_id WHERE m.id = %s",
                         (model,)) == [(globals_[1682]["user_brands"][0],)]


def _one(conn: psycopg.Connection, query: str, *params: object) -> int:
    return conn.execute(query, params).fetchone()[0]  # type: ignore[index]


def test_phase3_carries_new_moved_and_reparented_children_and_reference_changes(
    make_world: Callable[..., World],
) -> None:
    world = _store_world(make_world)
    _fix_ambiguous_rental(world)
    for shop in (1, 2):
        world.migrate(shop)  # capture starts before the copy's snapshot
    with world.source.connect() as src:
        inv1 = _one(src, "SELECT min(inventory_id) FROM inventory WHERE store_id = 1")
        inv2 = _one(src, "SELECT min(inventory_id) FROM inventory WHERE store_id = 2")
        cust2 = _one(src, "SELECT min(customer_id) FROM customer WHERE store_id = 2")
        staff2 = _one(src, "SELECT min(staff_id) FROM staff WHERE store_id = 2")
        new = _one(src, "INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) VALUES "
                        "('2025-05-02 11:00', %s, 1, 1) RETURNING rental_id", inv1)
        moved = _one(src, "SELECT min(r.rental_id) FROM rental r JOIN inventory i USING (inventory_id) "
                          "WHERE i.store_id = 1 AND r.rental_id <> %s AND NOT EXISTS "
                          "(SELECT 1 FROM payment p WHERE p.rental_id = r.rental_id)", new)
        src.execute("UPDATE rental SET inventory_id = %s, customer_id = %s, staff_id = %s WHERE rental_id = %s",
                    (inv2, cust2, staff2, moved))
        # an inventory item changes store: its rentals and their payments go with it
        item = _one(src, "SELECT min(i.inventory_id) FROM inventory i JOIN rental r USING (inventory_id) "
                         "JOIN payment p USING (rental_id) WHERE i.store_id = 1 AND i.inventory_id <> %s", inv1)
        src.execute("UPDATE inventory SET store_id = 2 WHERE inventory_id = %s", (item,))
        carried = _ids(src, "SELECT rental_id FROM rental WHERE inventory_id = %s ORDER BY 1", item)
        paid = _ids(src, "SELECT p.payment_id FROM payment p JOIN rental r USING (rental_id) "
                         "WHERE r.inventory_id = %s ORDER BY 1", item)
        # reference rows: a film renamed, a language added
        src.execute("UPDATE film SET title = 'ACADEMY DINOSAUR (Director''s Cut)' WHERE film_id = 1")
        src.execute("INSERT INTO language (name) VALUES ('Klingon')")
        src.commit()
    for shop in (1, 2):
        result = world.workflow.sync(shop)
        assert result.changes > 0
    with world.source.connect() as src, world.admin_on(1).connect() as t1, world.admin_on(2).connect() as t2:
        assert _ids(t1, "SELECT rental_id FROM rental WHERE rental_id = %s", new) == [new]
        assert _ids(t1, "SELECT rental_id FROM rental WHERE rental_id = %s", moved) == []
        assert _ids(t2, "SELECT rental_id FROM rental WHERE rental_id = %s", moved) == [moved]
        assert _ids(t1, "SELECT rental_id FROM rental WHERE rental_id = ANY(%s)", carried) == []
        assert _ids(t2, "SELECT rental_id FROM rental WHERE rental_id = ANY(%s) ORDER BY 1", carried) == carried
        assert _ids(t1, "SELECT payment_id FROM payment WHERE payment_id = ANY(%s)", paid) == []
        assert _ids(t2, "SELECT payment_id FROM payment WHERE payment_id = ANY(%s) ORDER BY 1", paid) == paid
        for t in (t1, t2):
            assert _whole(t, "film") == _whole(src, "film") and _whole(t, "language") == _whole(src, "language")
        for shop, t in ((1, t1), (2, t2)):
            bad = [v.describe() for v in verify_tables(src, t, world.catalog, shop) if not v.ok]
            assert bad == [], bad


def test_handyshop_after_phase5_a_shop_lists_the_global_catalog_and_its_own_entries(
    make_world: Callable[..., World],
) -> None:
    world, shop, model = _handyshop_with_a_model_under_a_global_brand(make_world)
    flow = world.workflow
    flow.provision(shop)
    assert flow.copy(shop).verified
    flow.sync(shop)
    assert flow.cut_over(shop).state == "live"
    retired = flow.retire(shop, confirm=True)
    assert retired.deleted["user_models"] > 0
    globals_ = world.report.global_rows
    with world.source.connect() as src:
        # the shop's own rows left the shared database; the global rows stayed there
        assert _one(src, "SELECT count(*) FROM user_models WHERE shop_id = %s", shop) == 0
        for table, ids in globals_[1682].items():
            assert len(_ids(src, f"SELECT id FROM {table} WHERE id = ANY(%s)", ids)) == len(ids)  # noqa: S608
    with world.app(shop).connect() as t:  # as the application sees its own database
        for table in ("device_types", "user_brands", "user_models"):
            listed = set(_ids(t, f"SELECT id FROM {table}"))  # noqa: S608 - test names
            assert set(globals_[1682][table]) <= listed
            assert listed - set(globals_[1682][table])  # and its own entries
        assert set(globals_[0]["email_templates"]) <= set(_ids(t, "SELECT id FROM email_templates"))
        brand = globals_[1682]["user_brands"][0]
        assert _rows(t, "SELECT b.id, b.name IS NOT NULL FROM user_models m JOIN user_brands b ON b.id = m.brand_id "
                        "WHERE m.id = %s", (model,)) == [(brand, True)]
        # every model whose brand is set resolves to a brand in the shop's own database
        assert _one(t, "SELECT count(*) FROM user_models m LEFT JOIN user_brands b ON b.id = m.brand_id "
                       "WHERE m.brand_id IS NOT NULL AND b.id IS NULL") == 0


def test_store_cutover_and_rollback_carry_implied_rows(make_world: Callable[..., World]) -> None:
    world = _store_world(make_world)
    _fix_ambiguous_rental(world)
    flow = world.workflow
    flow.provision(1)
    assert flow.copy(1).verified
    flow.sync(1)
    report = flow.cut_over(1)
    assert report.state == "live"
    assert {v.table for v in report.verification} >= {"rental", "payment", "film"}
    # the store rents out an item in its own database, as the application
    with world.app(1).connect() as t:
        inv = _one(t, "SELECT min(inventory_id) FROM inventory")
        rental = _one(t, "INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) VALUES "
                         "('2025-05-04 12:00', %s, 1, 1) RETURNING rental_id", inv)
        t.commit()
    back = flow.roll_back_cutover(1)
    assert back.state != "live"
    with world.source.connect() as src:
        assert _rows(src, "SELECT inventory_id FROM rental WHERE rental_id = %s", (rental,)) == [(inv,)]
        assert rental in _ids(src, RENTALS_OF, 1)
