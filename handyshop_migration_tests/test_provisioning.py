"""Phase 1: a database and two roles per shop, isolated from each other and from us, idempotent, never
taking over what it did not create."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.capture import open_tenant_writes
from handyshop_migration.tenancy.engine.catalog import introspect
from handyshop_migration.tenancy.engine.migrations import INITIAL, tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming
from handyshop_migration.tenancy.errors import ConnectionFailed, ProvisioningError
from handyshop_migration.tenancy.names import TEMPLATE_OWNER
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.support.databases import drop_namespace, unique_namespace
from handyshop_migration_tests.support.schemas import exotic


@pytest.fixture
def provisioner(fresh_db: ConnectionSpec, pg_server: ConnectionSpec) -> Iterator[Provisioner]:
    with fresh_db.connect() as conn:
        exotic.create(conn)
    catalog = introspect(fresh_db, tenant_column="tenant_id")
    ns = unique_namespace()
    registry = ConnectionRegistry(fresh_db, CredentialCipher(generate_key()))
    registry.ensure_schema()
    naming = TenantNaming(database=ns + "shop_{id}_db", role=ns + "shop_user_{id}", owner=ns + "shop_owner_{id}")
    prov = Provisioner(pg_server, registry, tenant_migrations(catalog), naming=naming)
    try:
        yield prov
    finally:
        drop_namespace(pg_server, ns)
        prov.close()
        registry.close()


def _live(provisioner: Provisioner, source: ConnectionSpec, shop: int) -> None:
    """The shop's tenant takes the application's writes (its write guard open), as at a cutover."""
    catalog = introspect(source, tenant_column="tenant_id")
    with provisioner.registry.get(shop).owner_spec().connect() as conn:
        open_tenant_writes(conn, catalog, shop, "test: the application writes here")


def _one(spec: ConnectionSpec, query: str, *params: object) -> object:
    with spec.connect() as conn:
        row = conn.execute(query.encode(), params).fetchone()
        return row[0] if row else None


def _owners(admin: ConnectionSpec, database: str) -> set[str]:
    """Owners of every object of ours in a tenant database (schemas, relations, types, routines)."""
    with admin.with_db(database).connect() as conn:
        rows = conn.execute(
            """
            SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
            UNION SELECT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
            UNION SELECT pg_get_userbyid(t.typowner) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
            UNION SELECT pg_get_userbyid(p.proowner) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
            """
        ).fetchall()
    return {r[0] for r in rows}


def test_provision_creates_an_isolated_least_privileged_tenant(
    provisioner: Provisioner, pg_server: ConnectionSpec, fresh_db: ConnectionSpec
) -> None:
    one, two = provisioner.provision(1), provisioner.provision(2)
    assert one.created_database and one.created_role and one.schema_version == INITIAL
    role, owner = provisioner.naming.role_name(1), provisioner.naming.owner_name(1)
    with pg_server.connect() as conn:
        for name in (role, owner):
            attrs = conn.execute(
                "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
                "FROM pg_roles WHERE rolname = %s",
                (name,),
            ).fetchone()
            assert attrs == (False, False, False, False, False, True)
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (one.database,)).fetchone() == (role,)
        # PUBLIC may not connect; the other tenant's roles may not either
        assert conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (one.database,)).fetchone() == (False,)
        for other in (two.role, two.owner):
            assert conn.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')", (other, one.database)).fetchone() == (False,)
    # every object in the tenant database belongs to its owner role: nothing to the admin or the placeholder
    assert _owners(pg_server, one.database) == {owner}
    assert provisioner.audit(1) == [] and provisioner.verify_access(1).ok

    creds = provisioner.registry.get(1)
    assert _one(creds.spec(), "SELECT current_user") == role
    assert _one(creds.owner_spec(), "SELECT current_user") == owner
    assert _one(creds.spec(), 'SELECT count(*) FROM "Things"') == 0
    assert _one(creds.spec(), "SELECT count(*) FROM information_schema.columns WHERE column_name = 'tenant_id'") == 0
    # no login without the registered password
    with pytest.raises(ConnectionFailed, match="password authentication failed"):
        creds.spec().with_user(role, Secret("guess")).connect()
    with pytest.raises(ConnectionFailed, match="no password supplied"):
        creds.spec().with_user(role, None).connect()
    # the other tenant's credentials cannot reach this database
    for other in (provisioner.registry.get(2).spec(), provisioner.registry.get(2).owner_spec()):
        with pytest.raises(ConnectionFailed, match="permission denied for database"):
            other.with_db(one.database).connect()
    _live(provisioner, fresh_db, 1)
    # the application role writes data, but cannot change the schema, attach code to our tables or touch our
    # bookkeeping: nothing it creates can run in the migration's sessions
    with creds.spec().connect() as conn:
        conn.execute('INSERT INTO "MixedCase" ("Key") VALUES (%s)', ("k",))
        conn.commit()
        for statement in (
            "DELETE FROM handyshop_migration.schema_migrations",
            'ALTER TABLE "Things" ADD COLUMN x int',
            "CREATE FUNCTION public.f() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'; "
            'CREATE TRIGGER t BEFORE INSERT ON "MixedCase" FOR EACH ROW EXECUTE FUNCTION public.f()',
            'CREATE RULE r AS ON INSERT TO "MixedCase" DO ALSO NOTHING',
            'ALTER TABLE "MixedCase" ALTER COLUMN "Value" SET DEFAULT \'x\'',
            "SET session_replication_role = replica",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())
            conn.rollback()
    # the owner role may replay in replica mode (its one parameter)
    with creds.owner_spec().connect() as conn:
        conn.execute("SET session_replication_role = replica")


def test_rerun_changes_nothing_and_keeps_data(
    provisioner: Provisioner, pg_server: ConnectionSpec, fresh_db: ConnectionSpec
) -> None:
    first = provisioner.provision(1)
    creds = provisioner.registry.get(1)
    _live(provisioner, fresh_db, 1)
    with creds.spec().connect() as conn:
        conn.execute('INSERT INTO "MixedCase" ("Key", "Value") VALUES (%s, %s)', ("keep", "me"))
        conn.commit()
    oid = _one(pg_server, "SELECT oid FROM pg_database WHERE datname = %s", first.database)
    again = provisioner.provision(1)
    assert (again.created_database, again.created_role, again.new_password) == (False, False, False)
    assert again.migrations.applied == ()
    assert _one(pg_server, "SELECT oid FROM pg_database WHERE datname = %s", first.database) == oid
    provisioner.registry.invalidate()
    after = provisioner.registry.get(1)
    assert after.password == creds.password and after.owner_password == creds.owner_password
    assert _one(after.spec(), """SELECT "Value" FROM "MixedCase" WHERE "Key" = 'keep'""") == "me"


def test_resumes_what_an_interrupted_attempt_of_its_own_left(provisioner: Provisioner, pg_server: ConnectionSpec) -> None:
    first = provisioner.provision(3)
    creds = provisioner.registry.get(3)
    # interrupted after the roles, before the database: the roles and the registry entry are there
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(first.database)))
    result = provisioner.provision(3)
    assert result.created_database and not result.created_role and not result.new_password
    provisioner.registry.invalidate()
    assert provisioner.registry.get(3).password == creds.password
    assert _one(creds.spec(), 'SELECT count(*) FROM "Things"') == 0
    assert _owners(pg_server, first.database) == {first.owner}
    # interrupted after the database, before the hand-over: the placeholder still owns the objects
    with pg_server.with_db(first.database).connect() as conn:
        conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(first.owner), sql.Identifier(TEMPLATE_OWNER)))
        conn.commit()
    assert first.owner not in _owners(pg_server, first.database)
    provisioner.provision(3)
    assert _owners(pg_server, first.database) == {first.owner}


def test_a_database_or_role_it_did_not_create_is_refused_and_left_alone(
    provisioner: Provisioner, pg_server: ConnectionSpec
) -> None:
    db, role = provisioner.naming.database_name(6), provisioner.naming.role_name(6)
    intruder = db.removesuffix("shop_6_db") + "intruder"
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'theirs'").format(sql.Identifier(intruder)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(intruder)))
    with pg_server.with_db(db).connect() as conn:
        conn.execute("CREATE TABLE precious (v text); INSERT INTO precious VALUES ('still here')")
        conn.commit()
    with pytest.raises(ProvisioningError, match=rf"database {db} already exists, owned by {intruder}.*nothing was changed"):
        provisioner.provision(6)
    with pg_server.connect() as conn:
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (db,)).fetchone() == (intruder,)
        assert conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (db,)).fetchone() == (True,)
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (role,)).fetchone() == (0,)
    assert provisioner.registry.find(6) is None
    assert _one(pg_server.with_db(db), "SELECT v FROM precious") == "still here"
    # the same for a role of the tenant's name that someone else made: its password still works
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(db)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'keep-me'").format(sql.Identifier(role)))
    with pytest.raises(ProvisioningError, match=rf"role {role} already exists and was not created by handyshop-migration"):
        provisioner.provision(6)
    assert provisioner.registry.find(6) is None
    assert _one(pg_server.with_db("postgres").with_user(role, Secret("keep-me")), "SELECT current_user") == role
    with pytest.raises(ProvisioningError, match="was not created by handyshop-migration"):
        provisioner.deprovision(6)


def test_an_escalated_tenant_role_is_refused(provisioner: Provisioner, pg_server: ConnectionSpec) -> None:
    result = provisioner.provision(2)
    other = provisioner.provision(1)
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(result.owner)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(other.role), sql.Identifier(result.role)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(other.database), sql.Identifier(result.role)))
    problems = provisioner.audit(2)
    assert f"role {result.owner} has CREATEROLE" in problems
    assert f"role {result.role} is a member of {other.role}" in problems
    assert any(p.startswith(f"role {result.role} holds objects or privileges outside {result.database}") for p in problems)
    with pytest.raises(ProvisioningError, match="hold privileges they must not.*CREATEROLE"):
        provisioner.require_clean(2)
    assert not provisioner.verify_access(2).ok
    assert provisioner.audit(1) == []  # the other shop is untouched by it


def test_bad_shop_ids_and_names_are_refused(provisioner: Provisioner) -> None:
    for shop in (0, 1682):
        with pytest.raises(ProvisioningError, match="marks global rows"):
            provisioner.provision(shop)
    with pytest.raises(ProvisioningError, match="not a valid shop id"):
        provisioner.provision(-4)
    with pytest.raises(ProvisioningError, match="must contain"):
        TenantNaming(database="shop_db")
    with pytest.raises(ProvisioningError, match="at most 63 bytes"):
        TenantNaming(database="x" * 50 + "_{id}")
    with pytest.raises(ProvisioningError, match="must differ"):
        TenantNaming(role="r_{id}", owner="r_{id}")


def test_deprovision_is_the_way_back(provisioner: Provisioner, pg_server: ConnectionSpec) -> None:
    result = provisioner.provision(2)
    gone = provisioner.deprovision(2)
    assert gone.dropped_database and gone.dropped_role and gone.removed_registry_entry
    assert _one(pg_server, "SELECT count(*) FROM pg_database WHERE datname = %s", result.database) == 0
    assert _one(pg_server, "SELECT count(*) FROM pg_roles WHERE rolname = ANY(%s)", [result.role, result.owner]) == 0
    assert provisioner.registry.find(2) is None
    again = provisioner.deprovision(2)
    assert not (again.dropped_database or again.dropped_role or again.removed_registry_entry)
