"""Phase 1: a database and a role per shop, isolated from each other, idempotent, never dropping data."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import introspect
from handyshop_migration.tenancy.engine.migrations import INITIAL, tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming
from handyshop_migration.tenancy.errors import ConnectionFailed, ProvisioningError
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.support.databases import unique_namespace
from handyshop_migration_tests.support.schemas import exotic


@pytest.fixture
def provisioner(fresh_db: ConnectionSpec, pg_server: ConnectionSpec) -> Iterator[Provisioner]:
    with fresh_db.connect() as conn:
        exotic.create(conn)
    catalog = introspect(fresh_db, tenant_column="tenant_id")
    ns = unique_namespace()
    registry = ConnectionRegistry(fresh_db, CredentialCipher(generate_key()))
    registry.ensure_schema()
    naming = TenantNaming(database=ns + "shop_{id}_db", role=ns + "shop_user_{id}")
    prov = Provisioner(pg_server, registry, tenant_migrations(catalog), naming=naming)
    try:
        yield prov
    finally:
        for shop in (1, 2, 3):
            prov.deprovision(shop)
        prov.close()
        registry.close()


def _one(spec: ConnectionSpec, query: str, *params: object) -> object:
    with spec.connect() as conn:
        row = conn.execute(query.encode(), params).fetchone()
        return row[0] if row else None


def test_provision_creates_an_isolated_least_privileged_tenant(provisioner: Provisioner, pg_server: ConnectionSpec) -> None:
    one, two = provisioner.provision(1), provisioner.provision(2)
    assert one.created_database and one.created_role and one.schema_version == INITIAL
    role = provisioner.naming.role_name(1)
    with pg_server.connect() as conn:
        attrs = conn.execute(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
            "FROM pg_roles WHERE rolname = %s",
            (role,),
        ).fetchone()
        assert attrs == (False, False, False, False, False, True)
        assert conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (one.database,)).fetchone() == (role,)
        # PUBLIC may not connect; the other tenant's role may not either
        assert conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (one.database,)).fetchone() == (False,)
        assert conn.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')", (two.role, one.database)).fetchone() == (False,)

    creds = provisioner.registry.get(1)
    assert _one(creds.spec(), "SELECT current_user") == role
    assert _one(creds.spec(), 'SELECT count(*) FROM "Things"') == 0
    assert _one(creds.spec(), "SELECT count(*) FROM information_schema.columns WHERE column_name = 'tenant_id'") == 0
    # no login without the registered password
    with pytest.raises(ConnectionFailed, match="password authentication failed"):
        creds.spec().with_user(role, Secret("guess")).connect()
    with pytest.raises(ConnectionFailed, match="no password supplied"):
        creds.spec().with_user(role, None).connect()
    # the other tenant's credentials cannot reach this database
    other = provisioner.registry.get(2).spec().with_db(one.database)
    with pytest.raises(ConnectionFailed, match="permission denied for database"):
        other.connect()
    # the tenant role writes data but cannot change the schema or its bookkeeping
    with creds.spec().connect() as conn:
        conn.execute('INSERT INTO "MixedCase" ("Key") VALUES (%s)', ("k",))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM handyshop_migration.schema_migrations")
        conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute('ALTER TABLE "Things" ADD COLUMN x int')


def test_rerun_changes_nothing_and_keeps_data(provisioner: Provisioner, pg_server: ConnectionSpec) -> None:
    first = provisioner.provision(1)
    creds = provisioner.registry.get(1)
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
    assert after.password == creds.password
    assert _one(after.spec(), """SELECT "Value" FROM "MixedCase" WHERE "Key" = 'keep'""") == "me"


def test_resumes_what_a_failed_attempt_left(provisioner: Provisioner, pg_server: ConnectionSpec) -> None:
    db, role = provisioner.naming.database_name(3), provisioner.naming.role_name(3)
    # an earlier attempt made an empty database with something in it, and a role with an unknown password
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'lost'").format(sql.Identifier(role)))
    with pg_server.with_db(db).connect() as conn:
        conn.execute("CREATE TABLE precious (v text); INSERT INTO precious VALUES ('still here')")
        conn.commit()
    result = provisioner.provision(3)
    assert not result.created_database and not result.created_role and result.new_password
    assert result.migrations.applied == (INITIAL,)
    creds = provisioner.registry.get(3)
    assert _one(creds.spec(), "SELECT v FROM precious") == "still here"
    assert _one(creds.spec(), 'SELECT count(*) FROM "Things"') == 0
    assert creds.status == "provisioned"


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


def test_deprovision_is_the_way_back(provisioner: Provisioner, pg_server: ConnectionSpec) -> None:
    result = provisioner.provision(2)
    gone = provisioner.deprovision(2)
    assert gone.dropped_database and gone.dropped_role and gone.removed_registry_entry
    assert _one(pg_server, "SELECT count(*) FROM pg_database WHERE datname = %s", result.database) == 0
    assert _one(pg_server, "SELECT count(*) FROM pg_roles WHERE rolname = %s", result.role) == 0
    assert provisioner.registry.find(2) is None
    again = provisioner.deprovision(2)
    assert not (again.dropped_database or again.dropped_role or again.removed_registry_entry)
