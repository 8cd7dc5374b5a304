"""The local stack behind `demo` and `dev`: an embedded PostgreSQL holding the shared database, the tenant
databases and Dagster's own storage (the `dagster` database, through the same dagster.yaml a deployment
uses), a DAGSTER_HOME, and a generated encryption key kept with mode 0600.

Everything lives in one directory (default `.handyshop/`), so `dev` shows the runs a `demo` made.

Every database of the stack is closed to PUBLIC (`close_public_connect`): PostgreSQL lets every role connect
to every database by default, so a tenant role could otherwise log into the shared database, `postgres`,
`template1` and Dagster's storage (and, as its own database's owner, drop that database from there). The
stack created them all, so it may: a production server's databases are not ours to alter, and the README
("The privilege boundary") gives the statements to run there.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from handyshop_migration import settings
from handyshop_migration.devtools.embedded import EmbeddedPostgres
from handyshop_migration.tenancy.application.encryption import generate_key
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.secrets import Secret

SOURCE_DB = "handyshop"
STORAGE_DB = "dagster"
STORAGE_ROLE = "dagster_storage"


def packaged_dagster_yaml() -> str:
    return resources.files("handyshop_migration").joinpath("deploy/dagster.yaml").read_text(encoding="utf-8")


def ensure_storage(
    admin: ConnectionSpec, password: str, *, database: str = STORAGE_DB, role: str = STORAGE_ROLE
) -> ConnectionSpec:
    """Dagster's storage: database `database` owned by login role `role` (created, or its password reset).

    dagster-postgres opens a new connection for every storage call (its engines use NullPool): about
    1,300 logins for one small shop's run. A SCRAM login with the default 4,096 PBKDF2 iterations costs
    ~6 ms here, 7 of a run's 13 seconds. The role's password is 32 random bytes, so its verifier needs no
    key stretching (stretching slows the guessing of weak passwords; nobody guesses 256 random bits):
    it is stored with few iterations. And each event is its own commit: synchronous_commit off saves a
    WAL flush per event; a crash can lose the last event writes, never tenant data.

    Shared by `LocalStack` (`dev`, `demo`) and the deployment tests, which each use their own names.
    """
    from psycopg import sql

    from handyshop_migration.devtools.seed import ensure_database

    with admin.connect(autocommit=True) as conn:
        ident = sql.Identifier(role)
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        conn.execute("SET scram_iterations = 16")
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256")
        conn.execute(
            sql.SQL("{} ROLE {} LOGIN PASSWORD {}").format(
                sql.SQL("ALTER" if exists else "CREATE"), ident, sql.Literal(verifier.decode())
            )
        )
    spec = ensure_database(admin, database)
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), ident))
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(database)))
    close_public_connect(admin, [database], {database: role})  # its owner connects; nobody else needs to
    return spec.with_user(role, Secret(password))


def close_public_connect(admin: ConnectionSpec, databases: Iterable[str], grants: dict[str, str] | None = None) -> None:
    """REVOKE CONNECT (and TEMPORARY) ON DATABASE … FROM PUBLIC for each of `databases` that exists, and
    GRANT CONNECT to the one role that needs it (`grants`: database -> role). Superusers connect regardless."""
    from psycopg import sql

    with admin.connect(autocommit=True) as conn:
        existing = {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname = ANY(%s)", (list(databases),))}
        for name in sorted(existing):
            conn.execute(sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        for name, role in (grants or {}).items():
            if name in existing:
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(name), sql.Identifier(role)))


def storage_url(spec: ConnectionSpec) -> str:
    """DAGSTER_PG_URL for `spec` (a secret): the psycopg2 driver named, as dagster-postgres needs under
    SQLAlchemy 2.1 (a bare postgresql:// selects psycopg 3, whose NOTIFY fails)."""
    return spec.url().reveal().replace("postgresql://", "postgresql+psycopg2://", 1)


@dataclass
class LocalStack:
    root: Path = field(default_factory=lambda: Path(".handyshop"))
    version: int = 18
    server: EmbeddedPostgres | None = None

    def __post_init__(self) -> None:
        self.root = Path(self.root).absolute()

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster_home"

    def reset(self) -> None:
        """Remove everything of an earlier demo (its own directory only)."""
        if (self.root / "pgdata").exists():
            EmbeddedPostgres(self.root / "pgdata", version=self.version).stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def start(self) -> EmbeddedPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self.server = EmbeddedPostgres(self.root / "pgdata", version=self.version).start()
        self.close_connect()
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        (self.dagster_home / "dagster.yaml").write_text(packaged_dagster_yaml(), encoding="utf-8")
        return self.server

    def close_connect(self) -> None:
        """Only the roles that need a database of the stack may connect to it (see the module doc)."""
        close_public_connect(self.admin, ["postgres", "template1", SOURCE_DB, STORAGE_DB], {STORAGE_DB: STORAGE_ROLE})

    def ensure_source(self) -> ConnectionSpec:
        """The shared database (created empty unless it exists), closed to PUBLIC."""
        from handyshop_migration.devtools.seed import ensure_database

        spec = ensure_database(self.admin, SOURCE_DB)
        close_public_connect(self.admin, [SOURCE_DB])
        return spec

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def admin(self) -> ConnectionSpec:
        assert self.server is not None, "start() first"
        return self.server.spec()

    @property
    def source(self) -> ConnectionSpec:
        return self.admin.with_db(SOURCE_DB)

    def ensure_storage(self) -> ConnectionSpec:
        """Dagster's storage on the embedded server (see `ensure_storage`)."""
        return ensure_storage(self.admin, self._storage_password())

    def _storage_password(self) -> str:
        path = self.root / "dagster_storage.password"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def encryption_key(self) -> str:
        path = self.root / "tenant_encryption.key"
        if not path.exists():
            path.write_text(generate_key())
            path.chmod(0o600)
        return path.read_text().strip()

    def environment(self) -> dict[str, str]:
        """Variables a run needs (they hold secrets: give them to child processes, never print them)."""
        storage = storage_url(self.admin.with_db(STORAGE_DB).with_user(STORAGE_ROLE, Secret(self._storage_password())))
        return {
            settings.SOURCE_URL: self.source.url().reveal(),
            settings.ENCRYPTION_KEY: self.encryption_key(),
            settings.BACKUP_DIR: str(self.root / "backups"),
            "DAGSTER_HOME": str(self.dagster_home),
            "DAGSTER_PG_URL": storage,
        }

    def apply_environment(self) -> None:
        os.environ.update(self.environment())
