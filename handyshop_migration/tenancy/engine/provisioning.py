"""Phase 1: one database and two roles per shop, and the privilege boundary between them and us.

`provision(shop_id)` creates
- role `shop_user_{id}` — the application's: LOGIN, data only (SELECT/INSERT/UPDATE/DELETE/TRUNCATE on the
  tenant tables, sequences, EXECUTE); it owns the database `shop_{id}_db` (the real app's layout) but no
  table, schema or function in it, and has no TRIGGER or REFERENCES privilege;
- role `shop_owner_{id}` — the migration's per-tenant owner: LOGIN, owns every object in that one database,
  may `SET session_replication_role` (replays run in replica mode, so no trigger fires);
- database `shop_{id}_db`, which only those two may connect to, with the tenant schema in place; both
  credentials in the registry.

**The boundary.** After provisioning, the migration connects to a tenant database only as its owner role,
never as a superuser or the admin. Nothing the application's role can create (triggers, rules, defaults:
it owns no table; functions and operators: our sessions pin `search_path`) runs in our sessions, and even
the owner role's rights end at its database: a tenant database is untrusted once live. The admin touches a
tenant database only while it is fresh from the template (before anyone else could have put code there).
`audit(shop_id)` checks, before each step that writes into a tenant, that neither role holds anything it
should not (superuser, createdb, createrole, replication, bypassrls, membership in any role, ownership or
privileges outside its database, CONNECT elsewhere) and refuses loudly when one does.

**Never adopting what we did not create.** Every database and role we create carries a marker comment
(`COMMENT ON DATABASE/ROLE … IS 'handyshop-migration: …'`). A database or role of the tenant's name that
exists without the marker is refused with an error naming it and what to do; nothing of it is altered and
no registry entry is written.

**Idempotent and resuming.** A rerun completes what an interrupted attempt left (a marked role without its
database, a marked database whose objects still belong to the template's placeholder owner); nothing is
ever dropped except by `deprovision`, the way back.

**Speed.** The tenant schema is built once into a template database named after the migrations'
fingerprint, its objects owned by a placeholder NOLOGIN role; each tenant is `CREATE DATABASE … TEMPLATE`
(tens of milliseconds) plus one `REASSIGN OWNED` to its owner role.

**Passwords** are generated here, stored encrypted in the registry *before* the roles get them (a crash in
between leaves passwords we can still read), and sent to the server as SCRAM verifiers computed
client-side, so the plaintext appears in no server log.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.application.registry import ConnectionRegistry, TenantCredentials
from handyshop_migration.tenancy.dsn import PINNED_SEARCH_PATH, ConnectionSpec
from handyshop_migration.tenancy.engine.migrations import (
    LOCK_KEY,
    META_SCHEMA,
    Migration,
    MigrationReport,
    applied_migrations,
    apply_migrations,
    check,
    fingerprint,
    with_shop,
)
from handyshop_migration.tenancy.errors import ProvisioningError
from handyshop_migration.tenancy.names import (
    DEFAULT_DATABASE_PATTERN,
    DEFAULT_GLOBAL_SHOP_IDS,
    DEFAULT_OWNER_PATTERN,
    DEFAULT_ROLE_PATTERN,
    TEMPLATE_OWNER,
    TEMPLATE_PATTERN,
)
from handyshop_migration.tenancy.secrets import Secret

_NAME = re.compile(r"^[a-z_][a-z0-9_$]*$")
MARKER = "handyshop-migration"  # prefix of the comment on everything we create
_ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"


def marker(kind: str, shop_id: int) -> str:
    return f"{MARKER}: {kind} of shop {shop_id}"


@dataclass(frozen=True)
class TenantNaming:
    """Names of a shop's database and roles. Patterns take `{id}`; the defaults are the app's own."""

    database: str = DEFAULT_DATABASE_PATTERN
    role: str = DEFAULT_ROLE_PATTERN
    owner: str = DEFAULT_OWNER_PATTERN
    template: str = TEMPLATE_PATTERN

    def __post_init__(self) -> None:
        for label, pattern in (("database", self.database), ("role", self.role), ("owner role", self.owner)):
            if "{id}" not in pattern:
                raise ProvisioningError(f"the tenant {label} name pattern {pattern!r} must contain {{id}}.")
            probe = pattern.format(id=2**63 - 1)
            if not _NAME.match(probe) or len(probe.encode()) > 63:
                raise ProvisioningError(
                    f"the tenant {label} name pattern {pattern!r} gives {probe!r}: names must be lower-case "
                    "letters, digits and underscores, at most 63 bytes."
                )
        if self.role == self.owner:
            raise ProvisioningError(f"the application and owner role patterns are both {self.role!r}; they must differ.")

    def database_name(self, shop_id: int) -> str:
        return self.database.format(id=shop_id)

    def role_name(self, shop_id: int) -> str:
        return self.role.format(id=shop_id)

    def owner_name(self, shop_id: int) -> str:
        return self.owner.format(id=shop_id)

    def template_name(self, fp: str) -> str:
        return self.template.format(fingerprint=fp[:16])


@dataclass(frozen=True)
class ProvisionResult:
    shop_id: int
    database: str
    role: str
    owner: str
    created_database: bool
    created_role: bool
    new_password: bool
    migrations: MigrationReport
    seconds: float
    server: str = "default"

    @property
    def schema_version(self) -> str:
        return self.migrations.version


@dataclass(frozen=True)
class DeprovisionResult:
    shop_id: int
    database: str
    role: str
    dropped_database: bool
    dropped_role: bool
    removed_registry_entry: bool


@dataclass(frozen=True)
class AccessReport:
    """What a shop's roles can do, checked on the server (phase 1's gate, and before every tenant step)."""

    shop_id: int
    login_ok: bool  # the registered passwords log both roles into the database
    login_error: str
    role_attributes_ok: bool  # LOGIN, and no SUPERUSER / CREATEDB / CREATEROLE / REPLICATION / BYPASSRLS
    public_can_connect: bool
    others_with_connect: tuple[str, ...]  # non-superuser roles besides the tenant's two that may connect
    schema_version: str
    problems: tuple[str, ...] = ()  # privileges a tenant role must not hold (escalation, reach outside)
    connect_elsewhere: tuple[str, ...] = ()  # other databases the roles may connect to (PUBLIC's default)

    @property
    def ok(self) -> bool:
        return (
            self.login_ok
            and self.role_attributes_ok
            and not self.public_can_connect
            and not self.others_with_connect
            and not self.problems
        )


def generate_password() -> Secret:
    # URL-safe alphabet: the real app's '@#%&' passwords broke URL parsing downstream.
    return Secret(secrets.token_urlsafe(32))


# Which objects a role owns or is granted outside its own database, and which roles it belongs to:
# pg_shdepend records every owner ('o') and ACL ('a') dependency of a non-pinned role in every database.
_AUDIT_SQL = """
SELECT r.rolname,
       r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication, r.rolbypassrls, r.rolcanlogin,
       ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
              WHERE m.member = r.oid ORDER BY 1) AS member_of,
       ARRAY(SELECT DISTINCT coalesce(d.datname, '(shared)') || ':' || CASE s.deptype WHEN 'o' THEN 'owns' ELSE 'granted' END
               FROM pg_shdepend s LEFT JOIN pg_database d ON d.oid = s.dbid
              WHERE s.refclassid = 'pg_authid'::regclass AND s.refobjid = r.oid AND s.deptype IN ('o', 'a')
                AND s.dbid IS DISTINCT FROM (SELECT oid FROM pg_database WHERE datname = %(db)s)
                AND NOT (s.classid = 'pg_database'::regclass AND s.objid = (SELECT oid FROM pg_database WHERE datname = %(db)s))
                AND NOT (s.classid = 'pg_parameter_acl'::regclass)
              ORDER BY 1) AS outside,
       ARRAY(SELECT d.datname FROM pg_database d WHERE d.datallowconn AND d.datname <> %(db)s
               AND has_database_privilege(r.oid, d.oid, 'CONNECT') ORDER BY 1) AS connect_elsewhere
  FROM pg_roles r WHERE r.rolname = ANY(%(roles)s)
"""


@dataclass
class Provisioner:
    admin: ConnectionSpec  # CREATEDB + CREATEROLE (or superuser) on the tenant server
    registry: ConnectionRegistry
    migrations: Sequence[Migration]
    naming: TenantNaming = field(default_factory=TenantNaming)
    server_name: str = "default"
    # address the tenants are reached at, if not the admin's (e.g. a pooler or a private DNS name)
    tenant_host: str | None = None
    tenant_port: int | None = None
    global_shop_ids: tuple[int, ...] = DEFAULT_GLOBAL_SHOP_IDS
    # a shop's own migrations (objects of that tenant only), applied after the template's
    shop_migrations: Callable[[int], Sequence[Migration]] | None = None
    _conn: psycopg.Connection | None = field(default=None, init=False, repr=False)
    _template: str | None = field(default=None, init=False, repr=False)

    # -- connections ----------------------------------------------------------------------------------

    def _admin(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.admin.connect(autocommit=True, settings=PINNED_SEARCH_PATH)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Provisioner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fresh(self, database: str) -> psycopg.Connection:
        """An admin connection to a database only we have touched (the template, a new tenant)."""
        return self.admin.with_db(database).connect(settings=PINNED_SEARCH_PATH)

    def _comment(self, kind: str, name: str) -> str | None:
        catalog = "pg_database" if kind == "database" else "pg_authid"
        column = "datname" if kind == "database" else "rolname"
        row = self._admin().execute(
            sql.SQL("SELECT shobj_description(oid, {}) FROM {} WHERE {} = %s").format(
                sql.Literal(catalog), sql.Identifier("pg_database" if kind == "database" else "pg_roles"),
                sql.Identifier(column),
            ),
            (name,),
        ).fetchone()
        if row is None:
            return None
        return row[0] or ""

    def _exists(self, kind: str, name: str) -> bool:
        return self._comment(kind, name) is not None

    # -- template -------------------------------------------------------------------------------------

    def ensure_template(self) -> str:
        """The template database holding the tenant schema, its objects owned by the placeholder role;
        built once per migrations fingerprint."""
        if self._template:
            return self._template
        name = self.naming.template_name(fingerprint(self.migrations))
        conn = self._admin()
        if not self._exists("database", name):
            building = name[:54] + "_building"
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                if not self._exists("database", name):
                    self._ensure_placeholder()
                    # A leftover from a crashed build holds no tenant data: it is safe to drop.
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(building)))
                    conn.execute(
                        sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(building))
                    )
                    with self._fresh(building) as tconn:
                        apply_migrations(tconn, self.migrations)
                        _hand_over(tconn, TEMPLATE_OWNER)
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(building), sql.Identifier(name))
                    )
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                            sql.Identifier(name)
                        )
                    )
                    conn.execute(
                        sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                            sql.Identifier(name), sql.Literal(f"{MARKER}: tenant template")
                        )
                    )
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        self._template = name
        return name

    def _ensure_placeholder(self) -> None:
        conn = self._admin()
        if not self._exists("role", TEMPLATE_OWNER):
            try:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(TEMPLATE_OWNER)))
            except psycopg.errors.DuplicateObject:
                pass  # created concurrently
            conn.execute(
                sql.SQL("COMMENT ON ROLE {} IS {}").format(
                    sql.Identifier(TEMPLATE_OWNER), sql.Literal(f"{MARKER}: owner of tenant templates' objects")
                )
            )

    # -- provision ------------------------------------------------------------------------------------

    def _check_shop_id(self, shop_id: int) -> None:
        if isinstance(shop_id, bool) or not isinstance(shop_id, int) or shop_id < 0:
            raise ProvisioningError(f"shop id {shop_id!r} is not a valid shop id (a non-negative integer).")
        if shop_id in self.global_shop_ids:
            raise ProvisioningError(
                f"shop id {shop_id} marks global rows (global ids: {', '.join(map(str, self.global_shop_ids))}), "
                "not a tenant; it gets no database of its own."
            )

    def _refuse_foreign(self, kind: str, name: str, shop_id: int, expected: str) -> bool:
        """Whether `name` exists; raise if it exists without our marker (it is not ours to take)."""
        comment = self._comment(kind, name)
        if comment is None:
            return False
        if comment != expected and not (kind == "database" and self._ours_unmarked(name, shop_id)):
            owner = ""
            if kind == "database":
                row = self._admin().execute(
                    "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
                ).fetchone()
                owner = f", owned by {row[0]}" if row else ""
            raise ProvisioningError(
                f"{kind} {name} already exists{owner} and was not created by handyshop-migration for shop "
                f"{shop_id} (its comment is {comment!r}, not {expected!r}); nothing was changed. Rename or drop "
                f"it yourself, or choose other tenant names (HANDYSHOP_TENANT_DATABASE, HANDYSHOP_TENANT_ROLE, "
                "HANDYSHOP_TENANT_OWNER_ROLE)."
            )
        return True

    def _ours_unmarked(self, database: str, shop_id: int) -> bool:
        """A database of ours whose marker is missing or changed: owned by the shop's application role (which
        carries our marker), and named by the shop's registry entry. `CREATE DATABASE` and its `COMMENT` are
        two statements, so a run killed between them leaves exactly that; and the application role owns its
        database, so it may rewrite the comment. Nobody else can make a database owned by our role."""
        role = self.naming.role_name(shop_id)
        row = self._admin().execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if row is None or row[0] != role or self._comment("role", role) != marker("application role", shop_id):
            return False
        entry = self.registry.find(shop_id)
        return entry is not None and entry.database == database and entry.role == role

    def refuse_foreign(self, shop_id: int) -> None:
        """Refuse (ProvisioningError, nothing changed anywhere) if the shop's database or roles exist and are
        not ours: before anything is recorded for the shop."""
        self._check_shop_id(shop_id)
        self._refuse_foreign("database", self.naming.database_name(shop_id), shop_id, marker("tenant database", shop_id))
        self._refuse_foreign("role", self.naming.role_name(shop_id), shop_id, marker("application role", shop_id))
        self._refuse_foreign("role", self.naming.owner_name(shop_id), shop_id, marker("owner role", shop_id))

    def provision(self, shop_id: int, *, adopt: TenantCredentials | None = None) -> ProvisionResult:
        """The shop's database and roles on this server (idempotent; see the module doc).

        `adopt`: the shop's credentials as the registry holds them for its database on another server (a move
        here): the roles get those same passwords and the registry is not written (the move's flip changes
        only where the entry points)."""
        self._check_shop_id(shop_id)
        started = time.perf_counter()
        db = self.naming.database_name(shop_id)
        role, owner = self.naming.role_name(shop_id), self.naming.owner_name(shop_id)
        # Refuse what is not ours before writing anything anywhere.
        db_exists = self._refuse_foreign("database", db, shop_id, marker("tenant database", shop_id))
        role_exists = self._refuse_foreign("role", role, shop_id, marker("application role", shop_id))
        owner_exists = self._refuse_foreign("role", owner, shop_id, marker("owner role", shop_id))
        template = self.ensure_template()
        conn = self._admin()

        existing = adopt if adopt is not None else self.registry.find(shop_id)
        if adopt is None and existing is not None and existing.server != self.server_name:
            raise ProvisioningError(
                f"shop {shop_id} is registered on server {existing.server}, not {self.server_name}; nothing was "
                "changed. A tenant database goes to another server only by a move (handyshop-migration move-shop)."
            )
        if existing is not None and (existing.database, existing.role, existing.owner_role) != (db, role, owner):
            raise ProvisioningError(
                f"shop {shop_id} is registered with database {existing.database} and roles {existing.role}, "
                f"{existing.owner_role}, but the naming now gives {db} / {role} / {owner}; keep the naming it was "
                "provisioned with."
            )
        new_password = adopt is None and (existing is None or not (role_exists and owner_exists))
        creds = TenantCredentials(
            shop_id=shop_id,
            server=self.server_name,
            host=self.tenant_host or self.admin.host,
            port=self.tenant_port or self.admin.port,
            database=db,
            role=role,
            password=generate_password() if new_password else existing.password,  # type: ignore[union-attr]
            owner_role=owner,
            owner_password=generate_password() if new_password else existing.owner_password,  # type: ignore[union-attr]
        )
        if new_password or adopt is not None:
            # Registered first: if we crash after ALTER ROLE, the passwords those roles have are on record.
            # (Adopted passwords are on record already, under the shop's entry for its other server.)
            if adopt is None:
                self.registry.register(creds)
            with conn.transaction():
                for name, password, exists, kind in (
                    (role, creds.password, role_exists, "application role"),
                    (owner, creds.owner_password, owner_exists, "owner role"),
                ):
                    verifier = conn.pgconn.encrypt_password(password.reveal().encode(), name.encode(), b"scram-sha-256")
                    conn.execute(
                        sql.SQL(("ALTER" if exists else "CREATE") + " ROLE {} WITH {} PASSWORD {}").format(
                            sql.Identifier(name), sql.SQL(_ROLE_ATTRIBUTES), sql.Literal(verifier.decode())
                        )
                    )
                    conn.execute(
                        sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name), sql.Literal(marker(kind, shop_id)))
                    )
        # The owner replays in replica mode (no trigger fires): the one parameter it may set beyond its own.
        conn.execute(
            sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(sql.Identifier(owner))
        )

        created_db = False
        if not db_exists:
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {}").format(
                        sql.Identifier(db), sql.Identifier(role), sql.Identifier(template)
                    )
                )
                created_db = True
            except psycopg.errors.DuplicateDatabase:
                pass  # created concurrently by another run: resume with it
        conn.execute(
            sql.SQL(
                "COMMENT ON DATABASE {db} IS {marker}; REVOKE ALL ON DATABASE {db} FROM PUBLIC; "
                "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}; GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {db} "
                "TO {owner}"
            ).format(
                db=sql.Identifier(db), role=sql.Identifier(role), owner=sql.Identifier(owner),
                marker=sql.Literal(marker("tenant database", shop_id)),
            )
        )
        with self._fresh(db) as tconn:
            # Fresh from the template (or an interrupted attempt of ours): hand its objects to the owner role.
            with tconn.transaction():
                tconn.execute(
                    sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(TEMPLATE_OWNER), sql.Identifier(owner))
                )
        # the shop's own objects (an index or view of this tenant only) follow the template's 0001
        migrations = with_shop(self.migrations, self.shop_migrations(shop_id) if self.shop_migrations else ())
        with creds.owner_spec().connect(settings=PINNED_SEARCH_PATH) as oconn:
            recorded = applied_migrations(oconn)
            pending = check(recorded, migrations, db)
            oconn.rollback()
            report = apply_migrations(oconn, migrations) if pending else MigrationReport((), tuple(recorded), 0.0)
            _grant_application(oconn, role)
        return ProvisionResult(
            shop_id=shop_id,
            database=db,
            role=role,
            owner=owner,
            created_database=created_db,
            created_role=not role_exists,
            new_password=new_password,
            migrations=report,
            seconds=time.perf_counter() - started,
            server=self.server_name,
        )

    # -- audit ----------------------------------------------------------------------------------------

    def audit(self, shop_id: int) -> list[str]:
        """What the shop's roles hold that they must not (empty when all is well). One query."""
        db = self.naming.database_name(shop_id)
        role, owner = self.naming.role_name(shop_id), self.naming.owner_name(shop_id)
        rows = self._admin().execute(_AUDIT_SQL, {"db": db, "roles": [role, owner]}).fetchall()
        problems: list[str] = []
        found = {r[0] for r in rows}
        for name in (role, owner):
            if name not in found:
                problems.append(f"role {name} does not exist")
        for name, su, createdb, createrole, replication, bypassrls, login, member_of, outside, _elsewhere in rows:
            attributes = [
                label
                for label, held in (
                    ("SUPERUSER", su), ("CREATEDB", createdb), ("CREATEROLE", createrole),
                    ("REPLICATION", replication), ("BYPASSRLS", bypassrls),
                )
                if held
            ]
            if attributes:
                problems.append(f"role {name} has {', '.join(attributes)}")
            if not login:
                problems.append(f"role {name} cannot log in")
            if member_of:
                problems.append(f"role {name} is a member of {', '.join(member_of)}")
            if outside:
                problems.append(f"role {name} holds objects or privileges outside {db}: {', '.join(outside)}")
        return problems

    def require_clean(self, shop_id: int) -> None:
        """Refuse to go on with a shop whose roles hold more than they should (see `audit`)."""
        problems = self.audit(shop_id)
        if problems:
            raise ProvisioningError(
                f"shop {shop_id}'s tenant roles hold privileges they must not: {'; '.join(problems)}. Nothing was "
                "done. Someone changed them outside the migration: revoke it (ALTER ROLE … NOSUPERUSER, REVOKE …), "
                "check the server for what they did with it, and run again."
            )

    def verify_access(self, shop_id: int) -> AccessReport:
        db = self.naming.database_name(shop_id)
        role, owner = self.naming.role_name(shop_id), self.naming.owner_name(shop_id)
        conn = self._admin()
        rows = conn.execute(_AUDIT_SQL, {"db": db, "roles": [role, owner]}).fetchall()
        attrs_ok = len(rows) == 2 and all(r[6] and not any(r[1:6]) for r in rows)
        public = conn.execute("SELECT has_database_privilege('public', %s, 'CONNECT')", (db,)).fetchone()
        others = conn.execute(
            "SELECT rolname FROM pg_roles WHERE NOT rolsuper AND rolname <> ALL(%s) AND rolname <> current_user "
            "AND rolname NOT LIKE 'pg\\_%%' AND has_database_privilege(oid, %s, 'CONNECT') ORDER BY rolname",
            ([role, owner], db),
        ).fetchall()
        login_ok, login_error, version = False, "", ""
        creds = self.registry.find(shop_id)
        if creds is None:
            login_error = f"shop {shop_id} has no registry entry"
        else:
            try:
                with creds.spec().connect() as tconn, creds.owner_spec().connect(settings=PINNED_SEARCH_PATH) as oconn:
                    row = oconn.execute(
                        sql.SQL("SELECT max(name) FROM {}").format(sql.Identifier(META_SCHEMA, "schema_migrations"))
                    ).fetchone()
                    tconn.execute("SELECT 1")
                    version = str(row[0]) if row and row[0] else ""
                    login_ok = True
            except Exception as exc:  # reported, not raised: the check shows why
                login_error = str(exc)
        return AccessReport(
            shop_id=shop_id,
            login_ok=login_ok,
            login_error=login_error,
            role_attributes_ok=attrs_ok,
            public_can_connect=bool(public and public[0]),
            others_with_connect=tuple(r[0] for r in others),
            schema_version=version,
            problems=tuple(self.audit(shop_id)),
            connect_elsewhere=tuple(sorted({d for r in rows for d in r[9]})),
        )

    # -- deprovision (the way back from phase 1) --------------------------------------------------------

    def deprovision(self, shop_id: int, *, forget: bool = True) -> DeprovisionResult:
        """Drop the shop's database and roles and its registry entry (only what carries our marker).
        The shared database is untouched. `forget=False` keeps the registry entry: the copy dropped here is
        not the one it names (what a finished move left on its old server)."""
        self._check_shop_id(shop_id)
        db = self.naming.database_name(shop_id)
        role, owner = self.naming.role_name(shop_id), self.naming.owner_name(shop_id)
        conn = self._admin()
        had_db = self._refuse_foreign("database", db, shop_id, marker("tenant database", shop_id))
        if had_db:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        dropped = []
        for name, kind in ((role, "application role"), (owner, "owner role")):
            if not self._refuse_foreign("role", name, shop_id, marker(kind, shop_id)):
                continue
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("REVOKE SET ON PARAMETER session_replication_role FROM {}").format(
                        sql.Identifier(name)))
                    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
                dropped.append(name)
            except psycopg.errors.DependentObjectsStillExist as exc:
                raise ProvisioningError(
                    f"role {name} still owns or has privileges on objects outside {db} "
                    f"({exc.diag.message_detail or exc}); revoke them (REASSIGN OWNED / DROP OWNED in those "
                    "databases) and run the rollback again."
                ) from None
        removed = self.registry.remove(shop_id) if forget else False
        return DeprovisionResult(shop_id, db, role, had_db, role in dropped, removed)


def _hand_over(conn: psycopg.Connection, to_role: str) -> None:
    """Give every object the admin created in this (template) database to `to_role`: tables (their indexes
    and owned sequences follow), other sequences, views, types, domains, functions, schemas."""
    me = conn.info.parameter_status("session_authorization") or conn.info.user
    rows = conn.execute(
        """
        SELECT kind, ident FROM (
          SELECT 1, 'SCHEMA', quote_ident(n.nspname) FROM pg_namespace n
           WHERE pg_get_userbyid(n.nspowner) = %(me)s AND n.nspname NOT LIKE 'pg\\_%%'
             AND n.nspname <> 'information_schema'
          UNION ALL
          SELECT 2, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                   WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
                 quote_ident(n.nspname) || '.' || quote_ident(c.relname)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE pg_get_userbyid(c.relowner) = %(me)s AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
             AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
             -- a partition depends on its table automatically, yet ALTER TABLE ... OWNER does not follow to it;
             -- a partitioned table depends internally on its own key columns
             AND (c.relispartition OR NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                                   AND d.objid = c.oid AND d.deptype IN ('a', 'i', 'e')
                                                   AND NOT (d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid)))
          UNION ALL
          SELECT 3, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END,
                 quote_ident(n.nspname) || '.' || quote_ident(t.typname)
            FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE pg_get_userbyid(t.typowner) = %(me)s AND t.typtype IN ('e', 'd', 'c', 'r', 'm')
             AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
             AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid
                              AND d.deptype IN ('e', 'i'))
          UNION ALL
          SELECT 4, CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                 p.oid::regprocedure::text
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE pg_get_userbyid(p.proowner) = %(me)s AND n.nspname NOT LIKE 'pg\\_%%'
             AND n.nspname <> 'information_schema'
             AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                              AND d.deptype = 'e')
        ) o(ord, kind, ident) ORDER BY ord, ident
        """,
        {"me": me},
    ).fetchall()
    with conn.transaction():
        for kind, ident in rows:
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kind), sql.SQL(ident), sql.Identifier(to_role)))
        # public belongs to pg_database_owner (the application role once cloned): the owner role takes it.
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(to_role)))


def _grant_application(conn: psycopg.Connection, role: str) -> None:
    """The application role reads and writes every table of its database and uses its sequences and
    functions; it owns nothing and may not create triggers or references; our bookkeeping is read-only to it.
    Run as the owner role; default privileges make later migrations' tables follow."""
    r = sql.Identifier(role)
    schemas = [
        row[0]
        for row in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema' "
            "AND nspname <> %s AND pg_get_userbyid(nspowner) = current_user",
            (META_SCHEMA,),
        ).fetchall()
    ]
    statements: list[sql.Composable] = []
    for schema in schemas:
        s = sql.Identifier(schema)
        statements += [
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r),
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA {} TO {}").format(s, r),
            sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r),
            sql.SQL("GRANT EXECUTE ON ALL ROUTINES IN SCHEMA {} TO {}").format(s, r),
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO {}"
            ).format(s, r),
            sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {}").format(s, r),
        ]
    m = sql.Identifier(META_SCHEMA)
    statements += [
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(m, r),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(m, r),
    ]
    with conn.transaction():
        conn.execute(sql.SQL(";\n").join(statements))
