"""Phase 1: one database and one role per shop.

`provision(shop_id)` creates role `shop_user_{id}` (LOGIN, random password, no superuser / createdb /
createrole) and database `shop_{id}_db` owned by it; only that role may connect; the tenant schema is in
place; the credentials are in the registry. It is idempotent and resumes: a rerun, or a database or
role left by an earlier failed attempt, is completed, never dropped (the real app's provisioner
dropped live tenant databases on a rerun).

Speed: the tenant schema is built once into a template database named after the migrations'
fingerprint; each tenant is `CREATE DATABASE ... TEMPLATE` (tens of milliseconds) instead of running
the DDL again. A new catalog or migration gives a new fingerprint and so a new template.

Passwords: generated here, stored encrypted in the registry *before* the role gets them (so a crash in
between leaves a password we can still read), and sent to the server as a SCRAM verifier computed
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
from handyshop_migration.tenancy.dsn import ConnectionSpec
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
    DEFAULT_ROLE_PATTERN,
    TEMPLATE_PATTERN,
)
from handyshop_migration.tenancy.secrets import Secret

_NAME = re.compile(r"^[a-z_][a-z0-9_$]*$")


@dataclass(frozen=True)
class TenantNaming:
    """Names of a shop's database and role. Patterns take `{id}`; the defaults are the app's own."""

    database: str = DEFAULT_DATABASE_PATTERN
    role: str = DEFAULT_ROLE_PATTERN
    template: str = TEMPLATE_PATTERN

    def __post_init__(self) -> None:
        for label, pattern in (("database", self.database), ("role", self.role)):
            if "{id}" not in pattern:
                raise ProvisioningError(f"the tenant {label} name pattern {pattern!r} must contain {{id}}.")
            probe = pattern.format(id=2**63 - 1)
            if not _NAME.match(probe) or len(probe.encode()) > 63:
                raise ProvisioningError(
                    f"the tenant {label} name pattern {pattern!r} gives {probe!r}: names must be lower-case "
                    "letters, digits and underscores, at most 63 bytes."
                )

    def database_name(self, shop_id: int) -> str:
        return self.database.format(id=shop_id)

    def role_name(self, shop_id: int) -> str:
        return self.role.format(id=shop_id)

    def template_name(self, fp: str) -> str:
        return self.template.format(fingerprint=fp[:16])


@dataclass(frozen=True)
class ProvisionResult:
    shop_id: int
    database: str
    role: str
    created_database: bool
    created_role: bool
    new_password: bool
    migrations: MigrationReport
    seconds: float

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
    """What the tenant role can do, checked on the server (phase 1's gate)."""

    shop_id: int
    login_ok: bool  # the registered password logs the role into its database
    login_error: str
    role_attributes_ok: bool  # LOGIN, and no SUPERUSER / CREATEDB / CREATEROLE / REPLICATION / BYPASSRLS
    public_can_connect: bool
    others_with_connect: tuple[str, ...]  # non-superuser roles besides the tenant that may connect
    schema_version: str

    @property
    def ok(self) -> bool:
        return self.login_ok and self.role_attributes_ok and not self.public_can_connect and not self.others_with_connect


def generate_password() -> Secret:
    # URL-safe alphabet: the real app's '@#%&' passwords broke URL parsing downstream.
    return Secret(secrets.token_urlsafe(32))


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
        if self._conn is None or self._conn.closed:
            self._conn = self.admin.connect(autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Provisioner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _exists(self, catalog_table: str, column: str, name: str) -> bool:
        q = sql.SQL("SELECT 1 FROM {} WHERE {} = %s").format(sql.Identifier(catalog_table), sql.Identifier(column))
        return self._admin().execute(q, (name,)).fetchone() is not None

    # -- template -------------------------------------------------------------------------------------

    def ensure_template(self) -> str:
        """The template database holding the tenant schema; built once per migrations fingerprint."""
        if self._template:
            return self._template
        name = self.naming.template_name(fingerprint(self.migrations))
        conn = self._admin()
        if not self._exists("pg_database", "datname", name):
            building = name[:54] + "_building"
            conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
            try:
                if not self._exists("pg_database", "datname", name):
                    # A leftover from a crashed build holds no tenant data: it is safe to drop.
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(building)))
                    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(
                        sql.Identifier(building)))
                    with self.admin.with_db(building).connect() as tconn:
                        apply_migrations(tconn, self.migrations)
                    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(building), sql.Identifier(name)))
                    conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                        sql.Identifier(name)))
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        self._template = name
        return name

    # -- provision ------------------------------------------------------------------------------------

    def _check_shop_id(self, shop_id: int) -> None:
        if isinstance(shop_id, bool) or not isinstance(shop_id, int) or shop_id < 0:
            raise ProvisioningError(f"shop id {shop_id!r} is not a valid shop id (a non-negative integer).")
        if shop_id in self.global_shop_ids:
            raise ProvisioningError(
                f"shop id {shop_id} marks global rows (global ids: {', '.join(map(str, self.global_shop_ids))}), "
                "not a tenant; it gets no database of its own."
            )

    def provision(self, shop_id: int) -> ProvisionResult:
        self._check_shop_id(shop_id)
        started = time.perf_counter()
        db, role = self.naming.database_name(shop_id), self.naming.role_name(shop_id)
        conn = self._admin()
        template = self.ensure_template()

        existing = self.registry.find(shop_id)
        if existing is not None and (existing.database != db or existing.role != role):
            raise ProvisioningError(
                f"shop {shop_id} is registered with database {existing.database} and role {existing.role}, "
                f"but the naming now gives {db} / {role}; keep the naming it was provisioned with."
            )
        role_exists = self._exists("pg_roles", "rolname", role)
        new_password = existing is None or not role_exists
        password = generate_password() if new_password else existing.password  # type: ignore[union-attr]
        creds = TenantCredentials(
            shop_id=shop_id,
            server=self.server_name,
            host=self.tenant_host or self.admin.host,
            port=self.tenant_port or self.admin.port,
            database=db,
            role=role,
            password=password,
            status=existing.status if existing is not None else "provisioning",
        )
        if new_password:
            # Registered first: if we crash after ALTER ROLE, the password that role has is on record.
            self.registry.register(creds)

        attrs = sql.SQL("LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
        if new_password:
            verifier = conn.pgconn.encrypt_password(password.reveal().encode(), role.encode(), b"scram-sha-256")
            verb = "ALTER" if role_exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH {} PASSWORD {}").format(
                    sql.Identifier(role), attrs, sql.Literal(verifier.decode())
                )
            )
        else:
            conn.execute(sql.SQL("ALTER ROLE {} WITH {}").format(sql.Identifier(role), attrs))

        created_db = False
        if not self._exists("pg_database", "datname", db):
            try:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {}").format(
                        sql.Identifier(db), sql.Identifier(role), sql.Identifier(template)
                    )
                )
                created_db = True
            except psycopg.errors.DuplicateDatabase:
                pass  # created concurrently by another run: resume with it
        else:
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (db,)
            ).fetchone()
            if owner and owner[0] != role:
                conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(db), sql.Identifier(role)))
        conn.execute(
            sql.SQL(
                "REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role}; "
                # a non-superuser admin keeps its own way in, to apply migrations and load data
                "GRANT CONNECT ON DATABASE {db} TO CURRENT_USER"
            ).format(db=sql.Identifier(db), role=sql.Identifier(role))
        )
        migrations = with_shop(self.migrations, self.shop_migrations(shop_id) if self.shop_migrations else ())
        with self.admin.with_db(db).connect() as tconn:
            if created_db:
                # Built from the template: verify what it recorded instead of re-running anything.
                recorded = applied_migrations(tconn)
                pending = check(recorded, migrations, db)
                tconn.rollback()
                report = (
                    apply_migrations(tconn, migrations)
                    if pending
                    else MigrationReport((), tuple(recorded), 0.0)
                )
            else:
                report = apply_migrations(tconn, migrations)
            self._grant(tconn, role)
        if creds.status in ("provisioning", "failed"):
            self.registry.set_status(shop_id, "provisioned")
        return ProvisionResult(
            shop_id=shop_id,
            database=db,
            role=role,
            created_database=created_db,
            created_role=not role_exists,
            new_password=new_password,
            migrations=report,
            seconds=time.perf_counter() - started,
        )

    def _grant(self, tconn: psycopg.Connection, role: str) -> None:
        """The tenant role reads and writes every table of its database; schema changes go through migrations."""
        r = sql.Identifier(role)
        schemas = [
            row[0]
            for row in tconn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%%' AND nspname <> 'information_schema'"
                " AND nspname <> %s",
                (META_SCHEMA,),
            ).fetchall()
        ]
        statements: list[sql.Composable] = []
        for schema in schemas:
            s = sql.Identifier(schema)
            statements += [
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r),
                sql.SQL(
                    "GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON ALL TABLES IN SCHEMA {} TO {}"
                ).format(s, r),
                sql.SQL("GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r),
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, "
                    "REFERENCES, TRIGGER ON TABLES TO {}"
                ).format(s, r),
                sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {}").format(
                    s, r
                ),
            ]
        # Our bookkeeping is readable (the app may show its schema version) but not writable by the app.
        m = sql.Identifier(META_SCHEMA)
        statements += [
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(m, r),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(m, r),
        ]
        with tconn.transaction():
            tconn.execute(sql.SQL(";\n").join(statements))
        tconn.commit()

    def verify_access(self, shop_id: int) -> AccessReport:
        db, role = self.naming.database_name(shop_id), self.naming.role_name(shop_id)
        conn = self._admin()
        attrs = conn.execute(
            "SELECT rolcanlogin AND NOT (rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls) "
            "FROM pg_roles WHERE rolname = %s",
            (role,),
        ).fetchone()
        public = conn.execute(
            "SELECT has_database_privilege('public', %s, 'CONNECT')", (db,)
        ).fetchone()
        others = conn.execute(
            "SELECT rolname FROM pg_roles WHERE NOT rolsuper AND rolname <> %s AND rolname <> current_user "
            "AND rolname NOT LIKE 'pg\\_%%' "
            "AND has_database_privilege(oid, %s, 'CONNECT') ORDER BY rolname",
            (role, db),
        ).fetchall()
        login_ok, login_error, version = False, "", ""
        creds = self.registry.find(shop_id)
        if creds is None:
            login_error = f"shop {shop_id} has no registry entry"
        else:
            try:
                with creds.spec().connect() as tconn:
                    row = tconn.execute(
                        sql.SQL("SELECT max(name) FROM {}").format(sql.Identifier(META_SCHEMA, "schema_migrations"))
                    ).fetchone()
                    version = str(row[0]) if row and row[0] else ""
                    login_ok = True
            except Exception as exc:  # reported, not raised: the check shows why
                login_error = str(exc)
        return AccessReport(
            shop_id=shop_id,
            login_ok=login_ok,
            login_error=login_error,
            role_attributes_ok=bool(attrs and attrs[0]),
            public_can_connect=bool(public and public[0]),
            others_with_connect=tuple(r[0] for r in others),
            schema_version=version,
        )

    # -- deprovision (the way back from phase 1) --------------------------------------------------------

    def deprovision(self, shop_id: int) -> DeprovisionResult:
        """Drop the shop's database and role and its registry entry. The shared database is untouched."""
        self._check_shop_id(shop_id)
        db, role = self.naming.database_name(shop_id), self.naming.role_name(shop_id)
        conn = self._admin()
        had_db = self._exists("pg_database", "datname", db)
        if had_db:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
        had_role = self._exists("pg_roles", "rolname", role)
        if had_role:
            try:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
            except psycopg.errors.DependentObjectsStillExist as exc:
                raise ProvisioningError(
                    f"role {role} still owns or has privileges on objects outside {db} "
                    f"({exc.diag.message_detail or exc}); revoke them (REASSIGN OWNED / DROP OWNED in those "
                    "databases) and run the rollback again."
                ) from None
        removed = self.registry.remove(shop_id)
        return DeprovisionResult(shop_id, db, role, had_db, had_role, removed)
