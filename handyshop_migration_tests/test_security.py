"""The privilege boundary, tried as an attacker: a tenant role plants the worst code it can, then the migration
runs every step that touches its database (copy, sync, cutover, the tenant's own writes, rollback, reload,
verification, provisioning again); nothing planted may ever run with the migration's privileges, and nobody
is promoted. Then every other way a tenant role might try is listed and shown refused or harmless; and each
item of the security issue is tried from outside, through the command (one line, exit status, nothing
altered).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from handyshop_migration import settings
from handyshop_migration.devtools.local import LocalStack
from handyshop_migration.devtools.seed import seed_database
from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import load_catalog
from handyshop_migration.tenancy.engine.migrations import tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming
from handyshop_migration.tenancy.lifecycle import Lifecycle, State
from handyshop_migration.tenancy.workflow import Workflow
from handyshop_migration_tests.plugins.worlds import World
from handyshop_migration_tests.support.databases import (
    unique_namespace,
)
from handyshop_migration_tests.support.faults import Site, fetch, no_traceback, own, seeded_site, workflow

# -- planted by the tenant ------------------------------------------------------------------------------------

# What the strongest role inside a tenant database (its owner: it owns every table) can attach to our tables:
# a trigger function that records who runs it and, when that is a superuser, promotes the application role.
# ENABLE ALWAYS: it fires even in replica mode, where the migration's replays run.
_TRAP = """
CREATE TABLE public.probe_log (
    id bigserial PRIMARY KEY, fired text NOT NULL, current_role_name name NOT NULL, session_role_name name NOT NULL,
    superuser boolean NOT NULL
);
GRANT SELECT, INSERT ON public.probe_log TO PUBLIC;
GRANT USAGE ON SEQUENCE public.probe_log_id_seq TO PUBLIC;
CREATE FUNCTION public.probe_record(what text) RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE su boolean := (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
BEGIN
    INSERT INTO public.probe_log (fired, current_role_name, session_role_name, superuser)
    VALUES (what, current_user, session_user, su);
    IF su THEN
        EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', {app});
    END IF;
END
$fn$;
CREATE FUNCTION public.probe_trigger() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM public.probe_record('trigger ' || TG_OP || ' ' || TG_TABLE_NAME);
    RETURN NULL;
END
$fn$;
CREATE FUNCTION public.probe_default() RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM public.probe_record('default');
    RETURN NULL;
END
$fn$;
ALTER TABLE public.customers ALTER COLUMN city SET DEFAULT public.probe_default();
"""

_TABLE_TRAP = """
CREATE TRIGGER probe_row AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION public.probe_trigger();
CREATE TRIGGER probe_truncate AFTER TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION public.probe_trigger();
ALTER TABLE {t} ENABLE ALWAYS TRIGGER probe_row;
ALTER TABLE {t} ENABLE ALWAYS TRIGGER probe_truncate;
"""

# What the application role (it owns the database, not its objects) can put in the way of our sessions: a
# schema named like our owner role (what "$user" in a default search_path would find first), functions there
# shadowing what our statements call, and its database's default search_path pointing there.
_SHADOWS = """
CREATE SCHEMA {schema};
CREATE FUNCTION {schema}.now() RETURNS timestamptz LANGUAGE plpgsql AS $fn$
BEGIN PERFORM public.probe_record('shadow now'); RETURN pg_catalog.now(); END $fn$;
CREATE FUNCTION {schema}.hashtextextended(text, bigint) RETURNS bigint LANGUAGE plpgsql AS $fn$
BEGIN PERFORM public.probe_record('shadow hashtextextended'); RETURN pg_catalog.hashtextextended($1, $2); END $fn$;
CREATE FUNCTION {schema}.to_jsonb(anyelement) RETURNS jsonb LANGUAGE plpgsql AS $fn$
BEGIN PERFORM public.probe_record('shadow to_jsonb'); RETURN pg_catalog.to_jsonb($1); END $fn$;
CREATE FUNCTION {schema}.setval(regclass, bigint) RETURNS bigint LANGUAGE plpgsql AS $fn$
BEGIN PERFORM public.probe_record('shadow setval'); RETURN pg_catalog.setval($1, $2); END $fn$;
CREATE FUNCTION {schema}.texteq_probe(text, text) RETURNS boolean LANGUAGE plpgsql AS $fn$
BEGIN PERFORM public.probe_record('shadow ='); RETURN $1 OPERATOR(pg_catalog.=) $2; END $fn$;
CREATE OPERATOR {schema}.= (LEFTARG = text, RIGHTARG = text, FUNCTION = {schema}.texteq_probe);
CREATE VIEW {schema}.customers AS SELECT * FROM public.customers;
ALTER DATABASE {db} SET search_path = {schema}, public, pg_catalog;
"""


def plant_traps(owner_spec: ConnectionSpec, app_role: str, tables: list[tuple[str, str]]) -> None:
    """As the owner role (the strongest role inside the tenant): the trap function, the default expression,
    and an ALWAYS trigger on each of `tables` ((schema, name))."""
    with owner_spec.connect() as conn:
        conn.execute(_TRAP.replace("{app}", sql.Literal(app_role).as_string(conn)).encode())
        for schema, name in tables:
            conn.execute(_TABLE_TRAP.format(t=sql.Identifier(schema, name).as_string(conn)).encode())
        conn.commit()


def plant_shadows(world: World, shop: int) -> None:
    """As the application role: the shadows in a schema named like our owner role, and the database's
    search_path pointing there."""
    with world.app(shop).connect() as conn:
        conn.execute(
            _SHADOWS.format(
                schema=sql.Identifier(world.provisioner.naming.owner_name(shop)).as_string(conn),
                db=sql.Identifier(world.provisioner.naming.database_name(shop)).as_string(conn),
            ).encode()
        )
        conn.commit()


def _plant(world: World, shop: int, *, triggers: bool = True) -> None:
    tables = [(t.schema, t.name) for t in world.catalog.tables] if triggers else []
    plant_traps(world.tenant(shop), world.provisioner.naming.role_name(shop), tables)
    plant_shadows(world, shop)


def _log(world: World, shop: int) -> list[tuple[str, str, str, bool]]:
    return [
        (str(f), str(c), str(s), bool(su))
        for f, c, s, su in fetch(
            world.admin_on(shop), "SELECT fired, current_role_name, session_role_name, superuser FROM public.probe_log ORDER BY id"
        )
    ]


def _app_writes_in_tenant(world: World, shop: int) -> None:
    with world.app(shop).connect() as conn:  # as the application would, while live: the traps fire as it
        conn.execute("INSERT INTO customers (first_name, last_name, phone) VALUES ('Probe', 'Tenant', 'app-1')")
        conn.execute("UPDATE customers SET phone = 'app-2' WHERE phone = 'app-1'")
        conn.execute("SELECT now()")  # its own search path leads it to its shadows
        conn.commit()


def test_code_a_tenant_plants_never_runs_with_the_migrations_privileges(make_world: Callable[..., World]) -> None:
    world = make_world(shops=2, scale=0.05, seed=17)
    shop = world.shop_ids[0]
    app_role, owner = world.provisioner.naming.role_name(shop), world.provisioner.naming.owner_name(shop)
    world.migrate(shop)
    _plant(world, shop)
    # the shop keeps writing in the shared database: the sync has something to replay
    with world.source.connect() as conn:
        conn.execute("UPDATE customers SET phone = 'shared-1' WHERE id = (SELECT min(id) FROM customers WHERE shop_id = %s)", (shop,))
        conn.commit()
    flow = world.workflow
    assert flow.sync(shop).changes > 0
    assert flow.cut_over(shop).state == "live"
    _app_writes_in_tenant(world, shop)
    assert flow.roll_back_cutover(shop).state == "syncing"
    assert flow.copy(shop).verified  # the way back from phase 2: TRUNCATE and COPY into the trapped tables
    assert flow.verify(shop).verified
    assert flow.provisioner.verify_access(shop).login_ok
    world.provisioner.provision(shop)  # provisioning again (its admin session in the database it created)

    log = _log(world, shop)
    fired = {" ".join(f.split(" ")[:2]) for f, *_ in log}
    # the traps were armed and did fire — in our replays (as the owner role) and in the application's writes
    assert {"trigger TRUNCATE", "trigger INSERT", "trigger UPDATE", "default"} <= fired, fired
    assert {s for _, _, s, _ in log} == {owner, app_role}, log
    assert not [row for row in log if row[3]], "planted code ran as a superuser"
    assert {c for _, c, _, _ in log} <= {owner, app_role}
    # the shadows on the application's search path fired for the application, never in our sessions
    assert any(f.startswith("shadow") for f, _, s, _ in log if s == app_role), log
    assert not [row for row in log if row[0].startswith("shadow") and row[2] != app_role], log
    # nobody was promoted, and the tenant roles still hold nothing they must not
    for role in (app_role, owner):
        assert fetch(world.admin, "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s", (role,)) == [
            (False, False, False)
        ]
    assert world.provisioner.audit(shop) == []
    with world.app(shop).connect() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT rolpassword FROM pg_authid")


# -- every other way a tenant role might try --------------------------------------------------------------------

# As the application role, in its own database: each must be refused.
REFUSED = [
    ("a trigger on our table", "CREATE TRIGGER t AFTER INSERT ON customers FOR EACH ROW EXECUTE FUNCTION "
     "pg_catalog.suppress_redundant_updates_trigger()"),
    ("a rule on our table", "CREATE RULE r AS ON INSERT TO customers DO ALSO NOTHING"),
    ("a default expression", "ALTER TABLE customers ALTER COLUMN city SET DEFAULT 'x'"),
    ("row-level security", "ALTER TABLE customers ENABLE ROW LEVEL SECURITY"),
    ("a policy", "CREATE POLICY p ON customers USING (true)"),
    ("taking our table", "ALTER TABLE customers OWNER TO CURRENT_USER"),
    ("taking schema public", "ALTER SCHEMA public OWNER TO CURRENT_USER"),
    ("a function on our search path", "CREATE FUNCTION public.now() RETURNS timestamptz LANGUAGE sql AS 'SELECT pg_catalog.now()'"),
    ("an operator on our search path", "CREATE OPERATOR public.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = int8eq)"),
    ("a view on our search path", "CREATE VIEW public.probe_view AS SELECT 1"),
    ("a table in our bookkeeping", "CREATE TABLE handyshop_migration.probe (x int)"),
    ("our bookkeeping rewritten", "DELETE FROM handyshop_migration.schema_migrations"),
    ("default privileges of our owner role", "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} GRANT ALL ON TABLES TO PUBLIC"),
    ("our owner role's settings", "ALTER ROLE {owner} SET search_path = public"),
    ("becoming our owner role", "SET ROLE {owner}"),
    ("making our owner role a member of it", "GRANT {app} TO {owner}"),
    ("an event trigger", "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION pg_catalog.pg_event_trigger_ddl_commands()"),
    ("replica mode (skips every trigger)", "SET session_replication_role = replica"),
    ("a library loaded", "LOAD 'plpgsql'"),
    ("its own promotion", "ALTER ROLE {app} SUPERUSER"),
    ("a new role", "CREATE ROLE probe_role"),
    ("another database", "CREATE DATABASE probe_db"),
    ("the role catalog", "SELECT rolpassword FROM pg_authid"),
]


def test_every_other_way_a_tenant_role_might_try_is_refused_or_harmless(make_world: Callable[..., World]) -> None:
    world = make_world(shops=1, scale=0.05, seed=19)
    shop = world.shop_ids[0]
    world.migrate(shop)
    app_role, owner = world.provisioner.naming.role_name(shop), world.provisioner.naming.owner_name(shop)
    allowed = []
    with world.app(shop).connect(autocommit=True) as conn:
        for what, statement in REFUSED:
            text = statement.format(
                owner=sql.Identifier(owner).as_string(conn), app=sql.Identifier(app_role).as_string(conn)
            )
            try:
                conn.execute(text.encode())
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectNotInPrerequisiteState):
                continue
            allowed.append(f"{what}: {text}")
    assert allowed == []
    # What it may do (it owns the database): its own schema, named like our owner role, with shadows of what our
    # statements call, its database's search_path pointing there, a view over our table. Our sessions pin the
    # search path, so none of it is ever resolved in them.
    _plant(world, shop, triggers=False)
    with world.app(shop).connect() as conn:
        assert conn.execute("SHOW search_path").fetchone()[0].startswith(owner)  # type: ignore[index]
        conn.execute("SELECT now()")  # the application itself meets its shadows
    with world.tenant(shop).connect() as conn:  # ours: pinned, whatever the database's default says
        assert str(conn.execute("SHOW search_path").fetchone()[0]).replace(" ", "").replace('"', "") == "pg_catalog,public,pg_temp"  # type: ignore[index]
    assert world.workflow.copy(shop).verified
    assert world.workflow.verify(shop).verified
    log = _log(world, shop)
    assert ("shadow now", app_role, app_role, False) in log
    assert [row for row in log if row[2] != app_role] == []  # never in a session of ours
    assert world.provisioner.audit(shop) == []


# -- through the command ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(pg_server: ConnectionSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with seeded_site(pg_server, tmp_path_factory.mktemp("security"), "t_security", shops=6, scale=0.03, seed=23) as site:
        yield site


def _shop_line(output: str, shop: int) -> str:
    lines = [line for line in output.splitlines() if line.strip().startswith(f"shop {shop}:")]
    assert len(lines) == 1, output
    return lines[0]


def test_a_trigger_planted_in_a_tenant_promotes_nobody_and_an_escalated_role_is_refused(site: Site) -> None:
    """The issue's reproduction through the command: a trigger planted in shop 2's tenant that promotes the
    application role when it runs as a superuser; `migrate --shops 2 --through-phase 3`; nobody is promoted.
    Then a tenant role that holds more than it should (made SUPERUSER behind our back) is refused in one line
    before anything is done."""
    shop = 2
    with workflow(site) as flow:
        flow.provision(shop)
        app_role, owner = flow.provisioner.naming.role_name(shop), flow.provisioner.naming.owner_name(shop)
        plant_traps(own(flow.tenant(shop)), app_role, [(t.schema, t.name) for t in flow.catalog.tables])
    with own(site.source).connect() as conn:
        conn.execute("UPDATE customers SET phone = 'probe' WHERE shop_id = %s", (shop,))  # something to sync
        conn.commit()
    migrated = site.run("migrate", "--shops", str(shop), "--through-phase", "3")
    assert migrated.returncode == 0, migrated.output
    tenant = site.admin.with_db(site.database(shop))
    log = fetch(tenant, "SELECT DISTINCT session_role_name, superuser FROM public.probe_log")
    assert log == [(owner, False)]  # it fired (copy, sync) — as the owner role, never as a superuser
    assert fetch(site.admin, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (app_role,)) == [(False,)]

    with own(site.admin).connect(autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} SUPERUSER").format(sql.Identifier(app_role)))
    try:
        with workflow(site) as flow:
            before = flow.lifecycle.get(shop)
        refused = site.run("migrate", "--shops", str(shop), "--through-phase", "4")
        assert refused.returncode == 1, refused.output
        no_traceback(refused)
        line = _shop_line(refused.stdout, shop)
        assert f"role {app_role} has SUPERUSER" in line and "Nothing was done" in line, line
        with workflow(site) as flow:
            after = flow.lifecycle.get(shop)
        assert (after.state, after.reads, after.writes, after.version) == (before.state, before.reads, before.writes, before.version)
    finally:
        with own(site.admin).connect(autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} NOSUPERUSER").format(sql.Identifier(app_role)))


def test_a_database_the_project_did_not_create_is_refused_and_left_alone(site: Site) -> None:
    shop = 6
    db = site.database(shop)
    intruder = db.removesuffix(f"shop_{shop}_db") + "intruder"
    with own(site.admin).connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'theirs'").format(sql.Identifier(intruder)))
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(intruder)))
    with own(site.admin.with_db(db)).connect() as conn:
        conn.execute("CREATE TABLE customers (id int, name text); INSERT INTO customers VALUES (1, 'theirs')")
        conn.commit()

    def looks() -> object:
        return (
            fetch(site.admin, "SELECT pg_get_userbyid(datdba), datacl::text, shobj_description(oid, 'pg_database') "
                  "FROM pg_database WHERE datname = %s", (db,)),
            fetch(site.admin, "SELECT rolname FROM pg_roles WHERE rolname LIKE %s ORDER BY 1", (f"%shop\\_%\\_{shop}",)),
            fetch(site.admin.with_db(db), "SELECT * FROM customers"),
            fetch(site.admin.with_db(db), "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'customers'"),
        )

    before = looks()
    refused = site.run("migrate", "--shops", str(shop))
    assert refused.returncode == 1, refused.output
    no_traceback(refused)
    line = _shop_line(refused.stdout, shop)
    assert f"database {db} already exists, owned by {intruder}" in line and "nothing was changed" in line, line
    assert "Rename or drop it yourself" in line
    assert looks() == before  # owner, CONNECT for PUBLIC, its tables and data, no roles of ours: untouched
    with workflow(site) as flow:
        assert flow.registry.find(shop) is None
        assert flow.lifecycle.get(shop).state == State.REGISTERED  # not "provisioning": nothing was started
    with own(site.admin).connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(db)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(intruder)))


def test_a_key_that_cannot_read_the_registry_is_refused_before_anything_is_written(site: Site) -> None:
    with workflow(site) as flow:
        flow.provision(1)  # an entry under the site's key
        keys_before = flow.registry.key_ids()
    other_key = generate_key()
    refused = site.run("migrate", "--shops", "5", env={settings.ENCRYPTION_KEY: other_key})
    assert refused.returncode == 2, refused.output
    no_traceback(refused)
    assert len(refused.stderr.strip().splitlines()) == 1, refused.output
    assert "holds entries this TENANT_ENCRYPTION_KEY cannot read" in refused.stderr
    assert other_key not in refused.stdout + refused.stderr
    with workflow(site) as flow:
        assert flow.registry.key_ids() == keys_before  # nothing under the other key
        assert flow.registry.find(5) is None and flow.lifecycle.find(5) is None
    assert fetch(site.admin, "SELECT count(*) FROM pg_database WHERE datname = %s", (site.database(5),)) == [(0,)]


def test_exhausted_connections_are_reported_with_their_cause(site: Site) -> None:
    """The tenant_access gate cannot log in (the role's connection limit is used up): the failure names the
    server's own message, not just "a blocking check failed"."""
    shop = 4
    with workflow(site) as flow:
        flow.provision(shop)
        app_role = flow.provisioner.naming.role_name(shop)
    with own(site.admin).connect(autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(sql.Identifier(app_role)))
    try:
        failed = site.run("migrate", "--shops", str(shop))
        assert failed.returncode == 1, failed.output
        no_traceback(failed)
        line = _shop_line(failed.stdout, shop)
        assert "too many connections for role" in line, line
    finally:
        with own(site.admin).connect(autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(sql.Identifier(app_role)))


def test_an_empty_shop_list_is_an_error(site: Site) -> None:
    for shops in (",", ""):
        empty = site.run("migrate", f"--shops={shops}")
        assert empty.returncode == 2, empty.output
        assert "names no shop" in empty.stderr and len(empty.stderr.strip().splitlines()) == 1, empty.output


def test_the_tenant_roles_reach_elsewhere_is_reported(site: Site) -> None:
    """On a server the project did not set up, PUBLIC may connect to the shared, maintenance and template
    databases; nothing of it is altered, and `migrate` says so with the statements that close it."""
    shop = 3
    if fetch(site.admin, "SELECT has_database_privilege('public', %s, 'CONNECT')", (site.source.dbname,)) != [(True,)]:
        pytest.skip("this server's shared database is closed to PUBLIC already: nothing to report")
    migrated = site.run("migrate", "--shops", str(shop))
    assert migrated.returncode == 0, migrated.output
    warning = [line for line in migrated.stdout.splitlines() if line.startswith("warning: the tenant roles may connect to")]
    assert len(warning) == 1, migrated.output
    assert site.source.dbname in warning[0]
    assert "REVOKE CONNECT, TEMPORARY ON DATABASE <name> FROM PUBLIC" in warning[0]
    # nothing of that server was altered
    assert fetch(site.admin, "SELECT has_database_privilege('public', %s, 'CONNECT')", (site.source.dbname,)) == [(True,)]


@pytest.fixture
def tiny_backup_dir(tmp_path: Path) -> Iterator[Path]:
    """A backup directory on a 64 kB tmpfs: pg_dump runs out of space for real."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the failed-backup test makes pg_dump really run out of space")
    path = tmp_path / "tiny"
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_failed_backup_stops_the_migration_and_is_retried(site: Site, tmp_path: Path, tiny_backup_dir: Path) -> None:
    own_home = site.with_home(tmp_path / "nospace")
    own_home.env[settings.BACKUP_DIR] = str(tiny_backup_dir)
    shop = 5
    failed = own_home.run("migrate", "--shops", str(shop))
    assert failed.returncode == 1, failed.output
    no_traceback(failed)
    assert "No space left on device" in failed.stdout, failed.output
    assert "no shop is migrated without a verified backup" in failed.stdout
    assert list(tiny_backup_dir.iterdir()) == []  # no half-written file that looks like a backup
    with workflow(site) as flow:
        record = flow.lifecycle.find(shop)
        assert record is None or record.state == State.REGISTERED
    assert fetch(site.admin, "SELECT count(*) FROM pg_database WHERE datname = %s", (site.database(shop),)) == [(0,)]
    # the disk is fixed: the next run does phase 0 again, then the shop
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_backup_dir)], check=True)
    again = own_home.run("migrate", "--shops", str(shop))
    assert again.returncode == 0, again.output
    assert "phase 0 passed" in again.stdout
    assert len(list(tiny_backup_dir.glob("*.dump"))) == 1
    with workflow(site) as flow:
        assert flow.lifecycle.get(shop).state == State.VERIFIED


# -- the demo's own server ------------------------------------------------------------------------------------------


def test_the_demo_stack_lets_tenant_roles_connect_to_their_own_database_only(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "stack")
    stack.start()
    try:
        storage = stack.ensure_storage()
        source = stack.ensure_source()
        seed_database(source, shops=1, scale=0.02)
        catalog = load_catalog(None)
        ns = unique_namespace()
        registry = ConnectionRegistry(source, CredentialCipher(stack.encryption_key()))
        naming = TenantNaming(database=ns + "shop_{id}_db", role=ns + "shop_user_{id}", owner=ns + "shop_owner_{id}")
        provisioner = Provisioner(stack.admin, registry, tenant_migrations(catalog), naming=naming)
        flow = Workflow(source, catalog, provisioner, Lifecycle(source), archive_dir=tmp_path / "archives")
        try:
            flow.setup()
            flow.provision(1)
            creds = registry.get(1)
            access = provisioner.verify_access(1)
            assert access.ok and access.connect_elsewhere == ()
        finally:
            provisioner.close()
            registry.close()
        for spec in (creds.spec(), creds.owner_spec()):
            spec.connect().close()  # its own database
            for other in ("postgres", "template1", source.dbname, storage.dbname):
                with pytest.raises(Exception, match="permission denied for database"):
                    spec.with_db(other).connect()
        storage.connect().close()  # Dagster's storage role still reaches its database
    finally:
        stack.stop()
