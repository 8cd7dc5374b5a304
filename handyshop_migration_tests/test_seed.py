"""The shared-database generator: deterministic, honest about what it planted, and full of the real quirks."""

from __future__ import annotations

import base64
import re
import uuid

import pytest
from psycopg import sql

from handyshop_migration.devtools.seed import (
    GLOBAL_SHOP_IDS,
    MASTER_TABLES,
    TENANT_TABLES,
    SeedReport,
    add_shop,
    ensure_database,
    seed_database,
)
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConfigurationError
from handyshop_migration_tests.support.databases import drop_database, fingerprint, rows

SMALL = {"shops": 4, "scale": 0.05}

# FKs from one tenant table to another, read from the catalog (not from the generator's own list).
_TENANT_FKS = """
SELECT child.relname, a.attname, parent.relname
FROM pg_constraint c
JOIN pg_class child ON child.oid = c.conrelid
JOIN pg_class parent ON parent.oid = c.confrelid
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f' AND child.relname = ANY(%s) AND parent.relname = ANY(%s)
ORDER BY 1, 2
"""

# FKs from tenant tables to users.
_USER_FKS = """
SELECT child.relname, a.attname
FROM pg_constraint c
JOIN pg_class child ON child.oid = c.conrelid
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
WHERE c.contype = 'f' AND c.confrelid = 'users'::regclass AND child.relname = ANY(%s)
"""


def cross_shop_children(spec: ConnectionSpec) -> tuple[list[tuple[str, str, str]], list[tuple]]:
    """All tenant→tenant FKs, and every child row whose parent has another shop_id (NULL counts as a value)."""
    fks = rows(spec, _TENANT_FKS, (list(TENANT_TABLES), list(TENANT_TABLES)))
    bad: list[tuple] = []
    for child, column, parent in fks:
        bad += [
            (child, column, parent, *r)
            for r in rows(
                spec,
                sql.SQL(
                    "SELECT c.id, c.shop_id, p.id, p.shop_id FROM {} c JOIN {} p ON p.id = c.{} "
                    "WHERE c.shop_id IS DISTINCT FROM p.shop_id"
                ).format(sql.Identifier(child), sql.Identifier(parent), sql.Identifier(column)),
            )
        ]
    return fks, bad


def test_same_seed_same_data_other_seed_other_data(pg_server: ConnectionSpec, fresh_db: ConnectionSpec) -> None:
    twin = ensure_database(pg_server, f"seed_twin_{uuid.uuid4().hex[:8]}")
    other = ensure_database(pg_server, f"seed_other_{uuid.uuid4().hex[:8]}")
    try:
        flags = {"cross_shop_reference": True, "orphan_rows": True, **SMALL}
        first = seed_database(fresh_db, seed=7, **flags)
        second = seed_database(twin, seed=7, **flags)
        third = seed_database(other, seed=8, **flags)
        assert fingerprint(fresh_db) == fingerprint(twin)
        assert first == second
        differs = fingerprint(other)
        assert differs != fingerprint(fresh_db)
        assert differs["repairs"][1] != fingerprint(fresh_db)["repairs"][1]
        assert third != first
    finally:
        drop_database(pg_server, twin.dbname)
        drop_database(pg_server, other.dbname)


def test_report_matches_database(fresh_db: ConnectionSpec) -> None:
    report = seed_database(fresh_db, seed=3, cross_shop_reference=True, orphan_rows=True, **SMALL)
    assert isinstance(report, SeedReport)
    assert [r[0] for r in rows(fresh_db, "SELECT id FROM shops ORDER BY id")] == report.shop_ids == [1, 2, 3, 4]

    for table in MASTER_TABLES + TENANT_TABLES:
        [(count,)] = rows(fresh_db, sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
        assert report.table_rows[table] == count, table

    # Per shop (real, global and orphan ids), per table.
    orphan_ids = set(report.orphan_shop_rows)
    assert orphan_ids and orphan_ids.isdisjoint(report.shop_ids) and orphan_ids.isdisjoint(GLOBAL_SHOP_IDS)
    assert set(report.shop_rows) == set(report.shop_ids) | set(GLOBAL_SHOP_IDS) | orphan_ids
    for table in TENANT_TABLES:
        in_db = dict(
            rows(
                fresh_db,
                sql.SQL("SELECT shop_id, count(*) FROM {} WHERE shop_id IS NOT NULL GROUP BY 1").format(
                    sql.Identifier(table)
                ),
            )
        )
        reported = {shop: per[table] for shop, per in report.shop_rows.items() if per[table]}
        assert in_db == reported, table
        null_ids = [
            r[0]
            for r in rows(
                fresh_db,
                sql.SQL("SELECT id FROM {} WHERE shop_id IS NULL ORDER BY id").format(sql.Identifier(table)),
            )
        ]
        assert null_ids == report.null_shop_rows.get(table, []), table
    assert {"customers", "email_templates", "repair_status_history"} <= set(report.null_shop_rows)

    # Planted global and orphan rows exist under the stated shop id, and nothing else does.
    assert set(report.global_rows) == set(GLOBAL_SHOP_IDS)
    assert set(report.global_rows[1682]) == {"device_types", "user_brands", "user_models"}
    assert set(report.global_rows[0]) == {"email_templates"}
    planted = [(s, t, ids) for s, per in {**report.global_rows, **report.orphan_shop_rows}.items()
               for t, ids in per.items()]
    assert len(report.orphan_shop_rows[next(iter(orphan_ids))]) >= 2
    for shop, table, ids in planted:
        found = rows(fresh_db, sql.SQL("SELECT id FROM {} WHERE shop_id = %s ORDER BY id").format(
            sql.Identifier(table)), (shop,))
        assert [r[0] for r in found] == ids and ids, (shop, table)
    assert rows(fresh_db, "SELECT count(*) FROM shops WHERE id = ANY(%s)", (list(orphan_ids | {0, 1682}),)) == [(0,)]

    # The one cross-shop reference really crosses, and is the only one.
    [ref] = report.cross_shop_references
    assert ref.row_shop != ref.parent_shop
    assert rows(
        fresh_db,
        sql.SQL("SELECT c.shop_id, c.{}, p.shop_id FROM {} c JOIN {} p ON p.id = c.{} WHERE c.id = %s").format(
            sql.Identifier(ref.column), sql.Identifier(ref.table), sql.Identifier(ref.parent_table),
            sql.Identifier(ref.column),
        ),
        (ref.row_id,),
    ) == [(ref.row_shop, ref.parent_id, ref.parent_shop)]
    _, bad = cross_shop_children(fresh_db)
    assert [(b[0], b[3]) for b in bad] == [(ref.table, ref.row_id)]

    # Users: owners, users without shop, superadmins.
    no_owner = rows(fresh_db, "SELECT s.id FROM shops s WHERE NOT EXISTS "
                              "(SELECT 1 FROM users u WHERE u.shop_id = s.id AND u.role = 'owner') ORDER BY 1")
    assert [r[0] for r in no_owner] == report.shops_without_owner and len(report.shops_without_owner) == 1
    no_shop = rows(fresh_db, "SELECT id FROM users WHERE shop_id IS NULL AND NOT is_superadmin ORDER BY id")
    assert [r[0] for r in no_shop] == report.users_without_shop and len(report.users_without_shop) == 1
    admins = rows(fresh_db, "SELECT id FROM users WHERE is_superadmin AND shop_id IS NULL ORDER BY id")
    assert [r[0] for r in admins] == report.superadmin_ids and len(report.superadmin_ids) == 1


def test_without_flag_every_fk_stays_inside_its_shop(fresh_db: ConnectionSpec) -> None:
    report = seed_database(fresh_db, seed=11, **SMALL)
    assert report.cross_shop_references == [] and report.orphan_shop_rows == {}
    fks, bad = cross_shop_children(fresh_db)
    assert ("email_log", "repairId", "repairs") in fks and ("repairs", "customer_id", "customers") in fks
    assert len(fks) == 12
    assert bad == []

    # Rows reference users of their own shop; global rows reference the superadmin (shop NULL).
    for table, column in rows(fresh_db, _USER_FKS, (list(TENANT_TABLES),)):
        mismatched = rows(
            fresh_db,
            sql.SQL(
                "SELECT t.id FROM {} t JOIN users u ON u.id = t.{} "
                "WHERE t.shop_id IS DISTINCT FROM u.shop_id AND NOT (u.is_superadmin AND t.shop_id = ANY(%s))"
            ).format(sql.Identifier(table), sql.Identifier(column)),
            (list(GLOBAL_SHOP_IDS),),
        )
        assert mismatched == [], (table, column)

    # Ids interleave across shops, as from shared sequences.
    order = [r[0] for r in rows(fresh_db, "SELECT shop_id FROM repairs WHERE shop_id IS NOT NULL ORDER BY id")]
    switches = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    assert switches > len(order) // 4

    # Sequences are past the loaded ids: the app's next insert does not collide.
    for table in TENANT_TABLES:
        [(max_id,)] = rows(fresh_db, sql.SQL("SELECT max(id) FROM {}").format(sql.Identifier(table)))
        [(next_id,)] = rows(fresh_db, "SELECT nextval(pg_get_serial_sequence(%s, 'id'))", (f"public.{table}",))
        assert next_id > max_id, table


def test_quirks_of_the_real_app_are_present(fresh_db: ConnectionSpec) -> None:
    seed_database(fresh_db, seed=5, **SMALL)

    def one(query: str, params: tuple[object, ...] = ()) -> object:
        return rows(fresh_db, query, params)[0][0]

    # camelCase quoted columns next to snake_case shop_id.
    columns = {r[0] for r in rows(fresh_db, "SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = 'email_log'")}
    assert {"repairId", "emailTemplateId", "sentAt", "userId", "shop_id"} <= columns
    assert one('SELECT count(*) FROM email_log WHERE "repairId" IS NOT NULL') > 0
    # Only timestamp without time zone, anywhere.
    assert one("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' "
               "AND data_type = 'timestamp with time zone'") == 0
    assert one("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' "
               "AND data_type = 'timestamp without time zone'") > 30
    # text[] values.
    assert one("SELECT count(*) FROM email_templates WHERE array_length(variables, 1) >= 2") > 0
    assert one("SELECT count(*) FROM users WHERE array_length(backup_codes, 1) = 10") > 0
    # Double-encoded jsonb: a string whose content is an escaped array; and normal arrays.
    assert one("SELECT count(*) FROM cost_estimates WHERE jsonb_typeof(items) = 'string'") >= SMALL["shops"]
    assert one("SELECT count(*) FROM cost_estimates WHERE jsonb_typeof(items) = 'string' "
               "AND jsonb_typeof((items #>> '{}')::jsonb) <> 'array'") == 0
    assert one("SELECT count(*) FROM cost_estimates WHERE jsonb_typeof(items) = 'array'") > 0
    # German comma money in text.
    money = [r[0] for r in rows(fresh_db, "SELECT estimated_cost FROM repairs WHERE estimated_cost IS NOT NULL")]
    assert sum(1 for m in money if re.fullmatch(r"\d+,\d{2}", m)) > len(money) // 2
    assert one("SELECT count(*) FROM cost_estimates WHERE total !~ '^[0-9]+,[0-9]{2}$'") == 0
    # base64 PNG signatures.
    sig = one("SELECT dropoff_signature FROM repairs WHERE dropoff_signature IS NOT NULL LIMIT 1")
    assert isinstance(sig, str) and sig.startswith("data:image/png;base64,")
    assert base64.b64decode(sig.split(",", 1)[1], validate=True).startswith(b"\x89PNG\r\n\x1a\n")
    assert one("SELECT count(*) FROM signatures WHERE signature_data !~ '^data:image/png;base64,[A-Za-z0-9+/=]+$'") == 0
    # Umlauts, emoji, quotes, special COPY characters.
    assert one("SELECT count(*) FROM customers WHERE last_name ~ '[äöüÄÖÜß]'") > 0
    assert one("SELECT count(*) FROM customers WHERE first_name ~ '[\\U0001F300-\\U0001FAFF]'") + one(
        "SELECT count(*) FROM repairs WHERE notes ~ '[\\U0001F300-\\U0001FAFF]'") > 0
    names = {r[0] for r in rows(fresh_db, "SELECT name FROM shops")}
    assert any('"' in n for n in names) and any("'" in n for n in names)
    assert one("SELECT count(*) FROM repairs WHERE notes LIKE %s", ("%\n%",)) > 0
    # App conventions: kiosk rows, umlaut status, order codes, PIN default, nullable non-unique usernames.
    assert one("SELECT count(*) FROM repairs WHERE created_by = 'KIOSK-MODUS'") > 0
    assert one("SELECT count(*) FROM loaner_devices WHERE status = 'verfügbar'") > 0
    assert one("SELECT count(*) FROM repairs WHERE order_code !~ '^([A-Z]{2,}[0-9]+|RA-[0-9]+)$'") == 0
    assert one("SELECT count(*) FROM repairs WHERE creation_month !~ '^20[0-9]{4}$'") == 0
    assert one("SELECT count(*) FROM cost_estimates WHERE reference_number !~ '^KV-[0-9]{4}-[0-9]{3,}'") == 0
    assert one("SELECT count(*) FROM kiosk_devices WHERE pin = '1234'") > 0
    assert one("SELECT count(*) FROM users WHERE role = 'kiosk' AND username IS NULL") == SMALL["shops"]
    assert one("SELECT count(*) - count(DISTINCT email) FROM users") > 0


def test_refuses_to_seed_twice(fresh_db: ConnectionSpec) -> None:
    seed_database(fresh_db, shops=2, scale=0.02)
    before = fingerprint(fresh_db)
    with pytest.raises(ConfigurationError) as err:
        seed_database(fresh_db, shops=2, scale=0.02, seed=1)
    assert fresh_db.dbname in str(err.value) and "new database" in str(err.value)
    assert fingerprint(fresh_db) == before


def test_tiny_scale_still_fills_every_table_of_every_shop(fresh_db: ConnectionSpec) -> None:
    report = seed_database(fresh_db, shops=3, scale=0.01)
    for table in TENANT_TABLES:
        per_shop = dict(rows(fresh_db, sql.SQL("SELECT shop_id, count(*) FROM {} GROUP BY 1").format(
            sql.Identifier(table))))
        for shop in report.shop_ids:
            assert per_shop.get(shop, 0) >= 1, (table, shop)
    assert sum(report.table_rows[t] for t in TENANT_TABLES) < 400


def test_big_shop_and_a_late_signup(pg_server: ConnectionSpec, fresh_db: ConnectionSpec) -> None:
    report = seed_database(fresh_db, shops=2, scale=0.02, big_shop_rows=3000)
    assert report.shop_rows[1]["repairs"] == 3000 and report.shop_rows[1]["customers"] >= 750
    assert rows(fresh_db, "SELECT count(*) FROM repairs WHERE shop_id = 1") == [(3000,)]

    before = fingerprint(fresh_db)
    shop = add_shop(fresh_db, name="Handy-Eck \"Süd\" 🔧", seed=1)
    again = add_shop(fresh_db, name="Zweite Filiale", seed=1)
    assert shop not in report.shop_ids and again == shop + 1
    assert rows(fresh_db, "SELECT name FROM shops WHERE id = %s", (shop,)) == [("Handy-Eck \"Süd\" 🔧",)]
    assert rows(fresh_db, "SELECT count(*) FROM users WHERE shop_id = %s AND role = 'owner'", (shop,)) == [(1,)]
    for table in TENANT_TABLES:
        [(count,)] = rows(fresh_db, sql.SQL("SELECT count(*) FROM {} WHERE shop_id = %s").format(
            sql.Identifier(table)), (shop,))
        assert count >= 1, table
    _, bad = cross_shop_children(fresh_db)
    assert bad == []
    # Earlier shops' rows are untouched.
    after = fingerprint(fresh_db)
    for table in TENANT_TABLES:
        [(count, digest)] = rows(fresh_db, sql.SQL(
            "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {} t "
            "WHERE shop_id IS NULL OR shop_id <> ALL(%s)").format(sql.Identifier(table)), ([shop, again],))
        assert (count, int(digest)) == before[table], table
        assert after[table][0] > before[table][0]
    assert ensure_database(pg_server, fresh_db.dbname) == fresh_db
