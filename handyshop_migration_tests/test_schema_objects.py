"""Everything around the tenant tables reaches the tenant databases, or is named with the reason: helper
functions and an aggregate are callable, views return the tenant's rows, a view or partial index that
names one tenant exists in that tenant only, the materialized view is refreshed from the tenant's rows,
the `last_update` trigger does not fire on the copy but does on the tenant's own UPDATE, a never-used
sequence copies and starts where the source's would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import psycopg
import pytest

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.capture import open_tenant_writes
from handyshop_migration.tenancy.engine.catalog import Catalog, Extension
from handyshop_migration.tenancy.engine.migrations import apply_migrations, tenant_migrations
from handyshop_migration.tenancy.engine.verification import verify_tables
from handyshop_migration.tenancy.errors import MigrationError
from handyshop_migration_tests.plugins.worlds import World, build_world
from handyshop_migration_tests.support.databases import create_database, drop_database
from handyshop_migration_tests.support.schemas import objects


@dataclass
class Moved:
    world: World

    @property
    def source(self) -> ConnectionSpec:
        return self.world.source

    @property
    def catalog(self) -> Catalog:
        return self.world.catalog

    def admin(self, shop: int) -> ConnectionSpec:
        """The superuser on the tenant database: to look at its catalog."""
        return self.world.admin_on(shop)

    def as_tenant(self, shop: int) -> psycopg.Connection:
        """The application's connection to the tenant (its role; not in replica mode)."""
        return self.world.app(shop).connect()


@pytest.fixture(scope="module")
def moved(pg_server: ConnectionSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moved]:
    world = build_world(pg_server, tmp_path_factory.mktemp("objects"), schema=objects.create,
                        tenant_column="branch_no", shop_ids=[1, 2], prefix="t_objects_src")
    try:
        for shop in (1, 2):
            world.migrate(shop)
            with world.tenant(shop).connect() as conn:  # the tenant takes the application's writes, as once live
                open_tenant_writes(conn, world.catalog, shop, "test: the application writes here")
        yield Moved(world)
    finally:
        world.close()


def _one(conn: psycopg.Connection, query: str, *params: object) -> object:
    row = conn.execute(query.encode(), params).fetchone()  # type: ignore[call-overload]
    return row[0] if row else None


def _findings(catalog: Catalog) -> dict[str, tuple[str, str]]:
    return {f.object: (f.action, f.reason) for f in catalog.findings}


def test_the_catalog_names_the_tenants_table_and_every_object_it_does_not_carry(moved: Moved) -> None:
    cat = moved.catalog
    assert cat.tenants is not None and (cat.tenants.table, cat.tenants.key, cat.tenants.name) == ("branches", "code", None)
    assert cat.users is None and "shops_without_owner" not in cat.phase0_checks
    assert set(cat.table_names) == set(objects.TENANT_TABLES)
    assert cat.membership["branches"] == "shared (the tenants table)"
    assert {o.kind for o in cat.objects} >= {
        "function", "aggregate", "view", "materialized view", "index", "trigger", "policy", "event trigger"
    }
    assert [e.name for e in cat.extensions] == ["vector"]
    found = _findings(cat)
    assert found["view branch_titles"][0] == "left out" and "public.branches" in found["view branch_titles"][1]
    assert found["view flagship_films"][0] == "only in tenant 1"
    assert found["index film_branch_two_title on film"][0] == "only in tenant 2"
    assert found["event trigger audit_ddl"][0] == "left out" and "superuser" in found["event trigger audit_ddl"][1]
    assert found["policy note_branch_isolation on staff_note"][0] == "left out"
    assert found["function branch_films(p_branch integer)"][0] == "carried, names the tenant column"
    assert found["view film_list"][0] == "rewritten"
    # the JSON round trip keeps all of it
    assert Catalog.from_json(cat.to_json()) == cat


def test_functions_and_the_aggregate_are_callable_in_the_tenant(moved: Moved) -> None:
    with moved.as_tenant(1) as t:
        assert str(_one(t, "SELECT last_day('2024-02-10'::timestamp)")) == "2024-02-29"
        assert _one(t, "SELECT group_concat(title ORDER BY film_id) FROM film WHERE film_id IN "
                       "(SELECT min(film_id) FROM film)") is not None
        film = _one(t, "SELECT min(film_id) FROM film")
        assert _one(t, "SELECT film_rentals(%s)", film) == 2
        assert _one(t, "SELECT obj_description('last_day(timestamp)'::regprocedure, 'pg_proc')") == "MySQL LAST_DAY()"
        assert _one(t, "SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector") == 1.0  # the extension is there


def test_views_return_the_tenants_rows_and_a_view_pinned_to_one_tenant_is_in_that_tenant_only(moved: Moved) -> None:
    with moved.source.connect() as src:
        for shop in (1, 2):
            expected = src.execute("SELECT film_id, title FROM film_list WHERE branch_no = %s ORDER BY 1", (shop,)).fetchall()
            with moved.as_tenant(shop) as t:
                assert t.execute("SELECT film_id, title FROM film_list ORDER BY 1").fetchall() == expected
                cols = [c.name for c in t.execute("SELECT * FROM film_list LIMIT 0").description or ()]
                assert "branch_no" not in cols and "rentals" in cols
                assert _one(t, "SELECT to_regclass('branch_titles')") is None  # reads the shared branches table
                assert t.execute("SELECT film_id FROM rated_films ORDER BY 1").fetchall() == src.execute(
                    "SELECT film_id FROM rated_films r JOIN film USING (film_id) WHERE branch_no = %s ORDER BY 1",
                    (shop,)).fetchall()
                # refreshed after the copy, from this tenant's rows only; its index lost the tenant column
                assert t.execute("SELECT film_id, n FROM rentals_per_film ORDER BY 1").fetchall() == src.execute(
                    "SELECT film_id, n FROM rentals_per_film WHERE branch_no = %s ORDER BY 1", (shop,)).fetchall()
                assert "(film_id)" in str(_one(t, "SELECT pg_get_indexdef('rentals_per_film_key'::regclass)"))
        flagship = src.execute("SELECT film_id, title FROM flagship_films ORDER BY 1").fetchall()
    with moved.as_tenant(1) as t:
        assert t.execute("SELECT film_id, title FROM flagship_films ORDER BY 1").fetchall() == flagship
    with moved.as_tenant(2) as t:
        assert _one(t, "SELECT to_regclass('flagship_films')") is None


def test_the_partial_index_naming_one_tenant_exists_in_that_tenant_only(moved: Moved) -> None:
    with moved.as_tenant(2) as t:
        assert _one(t, "SELECT pg_get_indexdef('film_branch_two_title'::regclass)") == (
            "CREATE INDEX film_branch_two_title ON public.film USING btree (title)"
        )
    with moved.as_tenant(1) as t:
        assert _one(t, "SELECT to_regclass('film_branch_two_title')") is None


def test_triggers_do_not_fire_on_the_copy_but_do_on_the_tenants_own_writes(moved: Moved) -> None:
    with moved.source.connect() as src:
        source_stamps = src.execute("SELECT film_id, last_update, rentals FROM film WHERE branch_no = 1 ORDER BY 1").fetchall()
    with moved.as_tenant(1) as t:
        # the copy is the source's image: neither last_update nor the rental counter moved
        assert t.execute("SELECT film_id, last_update, rentals FROM film ORDER BY 1").fetchall() == source_stamps
        film, before, rentals = source_stamps[0]
        assert _one(t, "SELECT current_setting('session_replication_role')") == "origin"
        after = _one(t, "UPDATE film SET title = title || '!' WHERE film_id = %s RETURNING last_update", film)
        assert after is not None and after > before
        t.execute("INSERT INTO rental (film_id) VALUES (%s)", (film,))
        assert _one(t, "SELECT rentals FROM film WHERE film_id = %s", film) == rentals + 1
        assert _one(t, "SELECT obj_description(oid, 'pg_trigger') FROM pg_trigger WHERE tgname = 'film_last_updated'") == (
            "keeps last_update"
        )
        t.rollback()


def test_a_never_used_sequence_copies_and_starts_where_the_sources_would(moved: Moved) -> None:
    with moved.source.connect() as src:
        assert src.execute("SELECT last_value, is_called FROM film_request_request_id_seq").fetchone() == (1, False)
    with moved.as_tenant(2) as t:
        assert _one(t, "INSERT INTO film_request (title) VALUES ('Zürich Nights') RETURNING request_id") == 1
        t.rollback()
    with moved.source.connect() as src, moved.admin(1).connect() as tenant:
        assert all(v.ok for v in verify_tables(src, tenant, moved.catalog, 1))


def test_policies_comments_and_types_arrive_and_the_tenant_policy_is_left_out(moved: Moved) -> None:
    with moved.admin(1).connect() as t:
        policies = {r[0] for r in t.execute("SELECT polname FROM pg_policy").fetchall()}
        assert policies == {"note_not_private"}
        assert _one(t, "SELECT relrowsecurity FROM pg_class WHERE relname = 'staff_note'") is True
        assert _one(t, "SELECT obj_description('film'::regclass, 'pg_class')") == "Filme der Filiale"
        assert _one(t, "SELECT col_description('film'::regclass, 2)") is not None
        assert _one(t, "SELECT obj_description('rating'::regtype, 'pg_type')") == "MPAA rating"
        assert _one(t, """SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                          WHERE attrelid = 'film'::regclass AND attname = 'release_year'""") == '"jahr_ß"'
        assert _one(t, "SELECT count(*) FROM pg_event_trigger") == 0


def test_every_source_object_of_the_tenant_tables_is_in_a_tenant_or_named_by_a_finding(moved: Moved) -> None:
    query = """
        SELECT 'trigger ' || tgname FROM pg_trigger WHERE tgrelid = ANY(%(t)s::regclass[]) AND NOT tgisinternal
          AND tgname NOT LIKE 'handyshop%%'  -- ours: the capture of phase 3
        UNION ALL SELECT 'index ' || i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
         WHERE x.indrelid = ANY(%(t)s::regclass[])
        UNION ALL SELECT 'policy ' || polname FROM pg_policy WHERE polrelid = ANY(%(t)s::regclass[])
        UNION ALL SELECT 'constraint ' || conname FROM pg_constraint WHERE conrelid = ANY(%(t)s::regclass[])
          AND contype <> 'n'
        UNION ALL SELECT 'view ' || relname FROM pg_class WHERE relkind IN ('v', 'm') AND relnamespace = 'public'::regnamespace
        UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = pg_proc.oid AND d.deptype = 'e')
    """
    tables = list(objects.TENANT_TABLES)
    with moved.source.connect() as src:
        expected = {r[0] for r in src.execute(query, {"t": tables}).fetchall()}
    present: set[str] = set()
    for shop in (1, 2):
        with moved.admin(shop).connect() as t:
            present |= {r[0] for r in t.execute(query, {"t": tables}).fetchall()}
    named = " ".join(f.object for f in moved.catalog.findings)
    missing = sorted(o for o in expected - present if o.split(" ", 1)[1] not in named)
    assert missing == [], missing


def test_an_extension_the_tenant_server_lacks_is_one_clear_error(moved: Moved, pg_server: ConnectionSpec) -> None:
    catalog = replace(moved.catalog, extensions=(*moved.catalog.extensions, Extension("no_such_ext", "public", "1.0")))
    target = create_database(pg_server, "t_no_ext")
    try:
        with target.connect() as conn, pytest.raises(MigrationError) as err:
            apply_migrations(conn, tenant_migrations(catalog))
        message = str(err.value)
        assert "no_such_ext" in message and "not available" in message and "\n" not in message
    finally:
        drop_database(pg_server, target.dbname)
