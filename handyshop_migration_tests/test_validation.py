"""Phase 0 validation against a real seeded shared database: every planted quirk is found, exactly."""

from __future__ import annotations

import pytest
from psycopg import sql

from handyshop_migration.devtools.seed import GLOBAL_SHOP_IDS, TENANT_TABLES, SeedReport, seed_database
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.introspection import introspect
from handyshop_migration.tenancy.engine.validation import MAX_IDS, ValidationReport, validate_source
from handyshop_migration.tenancy.errors import ConfigurationError
from handyshop_migration_tests.support.databases import rows

SMALL = {"shops": 5, "scale": 0.05}


def seeded(spec: ConnectionSpec, *, planted: bool) -> tuple[SeedReport, Catalog]:
    report = seed_database(spec, **SMALL, cross_shop_reference=planted, orphan_rows=planted)
    catalog = introspect(spec, exclude=("users",), users_table="users")
    assert sorted(catalog.table_names) == sorted(TENANT_TABLES)
    return report, catalog


def by_table(report: ValidationReport, check: str) -> dict[str | None, tuple[tuple[int, ...], tuple[int, ...]]]:
    found = report.by_check(check)
    assert len({f.table for f in found}) == len(found), "one finding per table"
    return {f.table: (f.ids, f.shop_ids) for f in found}


def test_every_planted_quirk_is_found_with_its_ids(fresh_db: ConnectionSpec) -> None:
    seed, catalog = seeded(fresh_db, planted=True)
    report = validate_source(fresh_db, catalog)

    # Cross-shop reference: the child row, its parent, both shops.
    [ref] = seed.cross_shop_references
    [cross] = report.by_check("cross_shop_references")
    assert cross.severity == "error"
    assert (cross.table, cross.ids) == (ref.table, (ref.row_id,))
    assert set(cross.shop_ids) == {ref.row_shop, ref.parent_shop}
    assert cross.details["parent_table"] == ref.parent_table
    assert cross.details["parent_ids"] == [ref.parent_id]
    assert cross.details["columns"] == [ref.column]
    assert cross.details["references"] == [
        {"id": ref.row_id, "parent_id": ref.parent_id, "shop": ref.row_shop, "parent_shop": ref.parent_shop}
    ]
    assert str(ref.row_id) in cross.message and ref.parent_table in cross.message

    # Orphan shop ids: an error per table, naming every row and the orphan shop.
    [(orphan_shop, orphan_tables)] = seed.orphan_shop_rows.items()
    assert by_table(report, "orphan_shop_rows") == {
        t: (tuple(sorted(ids)), (orphan_shop,)) for t, ids in orphan_tables.items()
    }
    assert {f.severity for f in report.by_check("orphan_shop_rows")} == {"error"}

    # NULL shop ids: a warning per table.
    assert by_table(report, "null_shop_rows") == {t: (tuple(sorted(ids)), ()) for t, ids in seed.null_shop_rows.items()}
    assert {f.severity for f in report.by_check("null_shop_rows")} == {"warning"}

    # Global rows (0, 1682): info per table, with the global shops they sit under.
    expected_global: dict[str, tuple[list[int], set[int]]] = {}
    for shop, tables in seed.global_rows.items():
        for t, ids in tables.items():
            entry = expected_global.setdefault(t, ([], set()))
            entry[0].extend(ids)
            entry[1].add(shop)
    assert by_table(report, "global_rows") == {
        t: (tuple(sorted(ids)), tuple(sorted(shops))) for t, (ids, shops) in expected_global.items()
    }
    assert {f.severity for f in report.by_check("global_rows")} == {"info"}

    # Users and shops; superadmins are a flag and never reported.
    [no_owner] = report.by_check("shops_without_owner")
    assert (no_owner.severity, no_owner.ids, no_owner.shop_ids) == (
        "warning", tuple(seed.shops_without_owner), tuple(seed.shops_without_owner)
    )
    [no_shop] = report.by_check("users_without_shop")
    assert (no_shop.severity, no_shop.ids) == ("warning", tuple(seed.users_without_shop))
    assert not set(seed.superadmin_ids) & set(no_shop.ids)

    # Nothing else is an error; the orphan shop and both shops of the reference are blocked.
    assert not report.ok
    assert {f.check for f in report.errors} == {"orphan_shop_rows", "cross_shop_references"}
    assert report.blocked_shops() == {orphan_shop, ref.row_shop, ref.parent_shop}

    # Counts: per table (master and tenant) and per shop, as planted.
    assert report.row_counts == seed.table_rows
    assert report.shop_row_counts == seed.shop_rows
    [counts] = report.by_check("row_counts")
    assert counts.severity == "info" and counts.details["tables"] == seed.table_rows


def test_clean_source_has_no_errors_and_deleted_owners_do_not_count(fresh_db: ConnectionSpec) -> None:
    seed, catalog = seeded(fresh_db, planted=False)
    report = validate_source(fresh_db, catalog)
    assert report.ok, [f.message for f in report.errors]
    assert report.blocked_shops() == set()
    assert not report.by_check("cross_shop_references") and not report.by_check("orphan_shop_rows")
    assert [f.ids for f in report.by_check("shops_without_owner")] == [tuple(seed.shops_without_owner)]
    assert report.by_check("global_rows") and report.by_check("null_shop_rows")
    assert {f.severity for f in report.by_check("connection_budget")} == {"info"}
    assert set(GLOBAL_SHOP_IDS) <= set(report.shop_row_counts)

    # A deleted owner leaves the shop without owner; a deleted user without shop is no longer reported.
    shop = next(s for s in seed.shop_ids if s not in seed.shops_without_owner)
    with fresh_db.connect() as conn:
        conn.execute("UPDATE users SET deleted_at = now() WHERE role = 'owner' AND shop_id = %s", (shop,))
        conn.execute("UPDATE users SET deleted_at = now() WHERE id = ANY(%s)", (seed.users_without_shop,))
    report = validate_source(fresh_db, catalog)
    [no_owner] = report.by_check("shops_without_owner")
    assert no_owner.ids == tuple(sorted([*seed.shops_without_owner, shop]))
    assert report.by_check("users_without_shop") == []


def test_missing_table_is_an_error_naming_it(fresh_db: ConnectionSpec) -> None:
    _, catalog = seeded(fresh_db, planted=False)
    with fresh_db.connect() as conn:
        conn.execute("DROP TABLE signatures")
    report = validate_source(fresh_db, catalog, expected_tables=("packages", "session"))
    missing = report.by_check("missing_tables")
    assert {(f.table, f.severity) for f in missing} == {("signatures", "error"), ("session", "error")}
    assert all("does not exist" in f.message for f in missing)
    assert not report.ok
    # The other tables are still checked and counted.
    assert "signatures" not in report.row_counts and report.row_counts["repairs"] > 0


def test_connection_budget(fresh_db: ConnectionSpec) -> None:
    _, catalog = seeded(fresh_db, planted=False)
    [fine] = validate_source(fresh_db, catalog).by_check("connection_budget")
    usable, current = fine.details["usable_connections"], fine.details["current_connections"]

    [over] = validate_source(fresh_db, catalog, planned_pools=usable, pool_size=20).by_check("connection_budget")
    assert over.severity == "error"
    assert over.details["needed_connections"] == over.details["current_connections"] + usable * 20
    assert over.details["planned_pools"] == usable and over.details["pool_size"] == 20
    assert str(over.details["needed_connections"]) in over.message and "max_connections" in over.message

    tight = int(usable * 0.9) - current  # 90 % of the usable connections, one per pool
    [warn] = validate_source(fresh_db, catalog, planned_pools=tight, pool_size=1).by_check("connection_budget")
    assert warn.severity == "warning"


def test_composite_keys_and_text_ids(fresh_db: ConnectionSpec) -> None:
    """A FK that includes the tenant column is joined on its other columns; a NULL-shop child counts."""
    with fresh_db.connect() as conn:
        conn.execute(
            """
            CREATE TABLE shops (id int PRIMARY KEY);
            CREATE TABLE users (id int PRIMARY KEY, shop_id int, role text, is_superadmin boolean);
            CREATE TABLE kits (shop_id int NOT NULL, code text, PRIMARY KEY (shop_id, code));
            CREATE TABLE kit_items (id int PRIMARY KEY, shop_id int, kit_code text,
                                    FOREIGN KEY (shop_id, kit_code) REFERENCES kits (shop_id, code));
            INSERT INTO shops VALUES (1), (2);
            INSERT INTO users VALUES (1, 1, 'owner', false), (2, 2, 'owner', false), (3, NULL, 'owner', true);
            INSERT INTO kits VALUES (1, 'A'), (2, 'B');
            INSERT INTO kit_items VALUES (10, 1, 'A'), (11, NULL, 'B'), (12, 2, 'B');
            """
        )
    catalog = introspect(fresh_db, exclude=("users",), users_table="users")
    report = validate_source(fresh_db, catalog)
    [cross] = report.by_check("cross_shop_references")
    assert (cross.table, cross.ids, cross.shop_ids) == ("kit_items", (11,), (2,))
    assert cross.details["parent_ids"] == ["B"]
    assert cross.details["references"] == [{"id": 11, "parent_id": "B", "shop": None, "parent_shop": 2}]
    assert by_table(report, "null_shop_rows") == {"kit_items": ((11,), ())}
    assert report.by_check("users_without_shop") == [] and report.by_check("shops_without_owner") == []
    assert report.shop_row_counts == {1: {"kits": 1, "kit_items": 1}, 2: {"kits": 1, "kit_items": 1}}


def test_ids_are_capped_and_the_message_says_so(fresh_db: ConnectionSpec) -> None:
    _, catalog = seeded(fresh_db, planted=False)
    n = MAX_IDS + 5
    with fresh_db.connect() as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO customers (first_name, last_name, phone, shop_id) "
                "SELECT 'X', 'Y', '0', NULL FROM generate_series(1, %s)"
            ),
            (n,),
        )
    report = validate_source(fresh_db, catalog)
    [nulls] = [f for f in report.by_check("null_shop_rows") if f.table == "customers"]
    [(total,)] = rows(fresh_db, "SELECT count(*) FROM customers WHERE shop_id IS NULL")
    assert len(nulls.ids) == MAX_IDS and nulls.details["count"] == total
    assert f"first {MAX_IDS} of {total}" in nulls.message


def test_rejects_a_pool_size_below_one(fresh_db: ConnectionSpec) -> None:
    with pytest.raises(ConfigurationError, match="pool_size"):
        validate_source(fresh_db, Catalog(tenant_column="shop_id", tables=()), pool_size=0)


def test_connection_budget_plans_for_the_shops_being_migrated(fresh_db: ConnectionSpec) -> None:
    """500 tenants listed, 2 migrated: the budget plans 2 pools, not 500 (which blocked every shop)."""
    with fresh_db.connect() as conn:
        conn.execute(
            """
            CREATE TABLE accounts (id int PRIMARY KEY, label text);
            CREATE TABLE notes (account_id int NOT NULL REFERENCES accounts (id), id serial, body text,
                                PRIMARY KEY (account_id, id));
            INSERT INTO accounts SELECT g, 'Konto ' || g FROM generate_series(1, 500) g;
            INSERT INTO notes (account_id, body) SELECT g % 500 + 1, 'n' FROM generate_series(1, 1000) g;
            """
        )
    catalog = introspect(fresh_db, tenant_column="account_id")
    assert catalog.tenants is not None and (catalog.tenants.table, catalog.tenants.key) == ("accounts", "id")
    everyone = validate_source(fresh_db, catalog)
    [all_pools] = everyone.by_check("connection_budget")
    assert all_pools.details["planned_pools"] == 500
    usable = all_pools.details["usable_connections"]
    assert (all_pools.severity == "error") == (all_pools.details["needed_connections"] > usable)
    two = validate_source(fresh_db, catalog, migrating=[7, 8])
    [budget] = two.by_check("connection_budget")
    assert budget.severity == "info" and budget.details["planned_pools"] == 2
    assert budget.details["needed_connections"] == budget.details["current_connections"] + 4
    assert two.ok, [f.message for f in two.errors]
    # no users table named: the owner checks do not run, and nothing is missing
    assert not two.by_check("shops_without_owner") and not two.by_check("missing_tables")
    [big] = validate_source(fresh_db, catalog, migrating=[7, 8], pool_size=5).by_check("connection_budget")
    assert big.details["needed_connections"] == big.details["current_connections"] + 10
