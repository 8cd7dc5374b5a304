"""The catalog comes from the live source and survives a JSON round trip; the tenant schema carries
every feature of the source unchanged except the tenant column."""

from __future__ import annotations

from pathlib import Path

import pytest

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.introspection import introspect
from handyshop_migration.tenancy.engine.tenant_schema import render
from handyshop_migration.tenancy.errors import CatalogError
from handyshop_migration_tests.support.schemas import exotic


@pytest.fixture
def exotic_db(fresh_db: ConnectionSpec) -> ConnectionSpec:
    with fresh_db.connect() as conn:
        exotic.create(conn)
    return fresh_db


def test_introspection_finds_tenant_tables_in_fk_order(exotic_db: ConnectionSpec) -> None:
    cat = introspect(exotic_db, tenant_column="tenant_id")
    assert set(cat.table_names) == set(exotic.TENANT_TABLES)
    assert cat.table_names.index("Things") < cat.table_names.index("kids")
    assert cat.master_tables == ("tenants",)
    things = cat.table("Things")
    assert things.column("id").identity is not None and things.column("id").identity.always
    assert things.column("dbl").generated is not None
    assert "dbl" not in things.copy_columns and "tenant_id" not in things.copy_columns
    # arrays of enums and composites embed type OIDs in COPY BINARY: this table goes as text
    assert not things.binary_copy_safe and cat.table("kids").binary_copy_safe
    assert cat.table("event_log").primary_key is None
    assert {t.name for t in cat.types} == {"mood", "posint", "addr"}


def test_catalog_round_trips_and_detects_drift(exotic_db: ConnectionSpec, tmp_path: Path) -> None:
    cat = introspect(exotic_db, tenant_column="tenant_id")
    cat.save(tmp_path / "c.json")
    again = Catalog.load(tmp_path / "c.json")
    assert again == cat and again.checksum == cat.checksum
    assert introspect(exotic_db, tenant_column="tenant_id").checksum == cat.checksum
    with exotic_db.connect() as conn:
        conn.execute("ALTER TABLE kids ADD COLUMN extra text")
        conn.commit()
    assert introspect(exotic_db, tenant_column="tenant_id").checksum != cat.checksum


def test_bad_inputs_give_clear_errors(exotic_db: ConnectionSpec, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="lacks the tables nope"):
        introspect(exotic_db, tenant_column="tenant_id", include=["Things", "nope"])
    with pytest.raises(CatalogError, match="no table .* has a column 'shop_id'"):
        introspect(exotic_db)
    with pytest.raises(CatalogError, match="does not exist; write one with"):
        Catalog.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(CatalogError, match="not a valid catalog"):
        Catalog.load(tmp_path / "bad.json")


def test_tenant_schema_carries_everything_but_the_tenant_column(
    exotic_db: ConnectionSpec, pg_server: ConnectionSpec
) -> None:
    from handyshop_migration_tests.support.databases import create_database, drop_database

    cat = introspect(exotic_db, tenant_column="tenant_id")
    schema = render(cat)
    target = create_database(pg_server, "t_tenant_ddl")
    try:
        with target.connect() as conn:
            conn.execute(schema.script().encode())
            conn.commit()

            def one(q: str, *p: object) -> object:
                row = conn.execute(q.encode(), p).fetchone()
                return row[0] if row else None

            assert one("SELECT count(*) FROM information_schema.columns WHERE column_name = 'tenant_id'") == 0
            assert one("""SELECT attidentity FROM pg_attribute WHERE attrelid = '"Things"'::regclass AND attname = 'id'""") == "a"
            assert one("""SELECT attgenerated FROM pg_attribute WHERE attrelid = '"Things"'::regclass AND attname = 'dbl'""") == "s"
            assert one("SELECT array_agg(enumlabel ORDER BY enumsortorder)::text FROM pg_enum WHERE enumtypid = 'mood'::regtype") == '{happy,sad,"glücklich 😀"}'
            assert one("SELECT count(*) FROM pg_constraint WHERE contypid = 'posint'::regtype") == 1
            assert one("SELECT typtype FROM pg_type WHERE oid = 'addr'::regtype") == "c"
            assert one("SELECT count(*) FROM pg_constraint WHERE conname = 'things_total_nonneg'") == 1
            assert one("SELECT count(*) FROM pg_constraint WHERE conname = 'things_tenant_positive'") == 0
            assert one("SELECT pg_get_indexdef('things_name_uq'::regclass)") == (
                'CREATE UNIQUE INDEX things_name_uq ON public."Things" USING btree ("Name") WHERE ("Name" IS NOT NULL)'
            )
            assert "lower" in str(one("SELECT pg_get_indexdef('things_lower_name'::regclass)"))
            assert one("""SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = '"MixedCase"'::regclass AND contype = 'p'""") == 'PRIMARY KEY ("Key")'
            assert one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'event_log'::regclass AND contype = 'p'") == 0
            assert one("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'kids'::regclass AND contype = 'f'") == (
                'FOREIGN KEY (thing_id) REFERENCES "Things"(id) ON DELETE CASCADE'
            )
    finally:
        drop_database(pg_server, target.dbname)
    joined = "\n".join(schema.notes)
    assert "things_tenant_positive" in joined and "left out" in joined
    # the FK to the tenants table goes with the column itself, and says so
    assert "foreign key Things_tenant_id_fkey on Things: left out — the reference to the tenants table" in joined
