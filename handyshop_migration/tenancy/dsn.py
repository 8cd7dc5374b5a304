"""Where a database is: host, port, user, password (a Secret) and database name."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import psycopg
import psycopg.sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from handyshop_migration.tenancy.errors import ConfigurationError, ConnectionFailed
from handyshop_migration.tenancy.names import APPLICATION_NAME
from handyshop_migration.tenancy.secrets import Secret, database_url, one_line, redact

# The same text rendering on every connection, so that checksums of row texts agree between the
# shared database and a tenant database whatever the servers' defaults are.
SESSION_SETTINGS: dict[str, str] = {
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "client_encoding": "UTF8",
}

# For sessions in tenant databases: built-in functions and operators resolve first, then only the schemas
# of the tenant tables (owned by the tenant's owner role; the application's role cannot create in them), never
# "$user" (a schema of the owner role's name could be made by the database's owner) nor pg_temp first. So
# nothing a tenant's application put anywhere (an operator, a function overload) resolves in our sessions.
PINNED_SEARCH_PATH: dict[str, str] = {"search_path": "pg_catalog,pg_temp"}


def pinned_search_path(*schemas: str) -> dict[str, str]:
    """Session settings for our connections to a tenant database whose tables live in `schemas`."""
    quoted = ",".join(psycopg.sql.Identifier(s).as_string(None) for s in schemas)
    return {"search_path": f"pg_catalog,{quoted},pg_temp" if schemas else "pg_catalog,pg_temp"}


@dataclass(frozen=True)
class ConnectionSpec:
    host: str
    port: int
    user: str
    password: Secret | None
    dbname: str
    sslmode: str | None = None
    application_name: str = APPLICATION_NAME
    # session settings every connection of this spec gets (e.g. a pinned search_path for tenant databases)
    settings: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_url(cls, url: str | Secret, *, name: str = "database URL") -> ConnectionSpec:
        """Parse a postgresql:// URL or a libpq conninfo; `name` (an env variable) is used in errors."""
        raw = url.reveal() if isinstance(url, Secret) else url
        if not raw or not raw.strip():
            raise ConfigurationError(f"{name} is empty; set it to postgresql://USER:PASSWORD@HOST:PORT/DBNAME.")
        if raw.startswith("postgresql+") or raw.startswith("postgres+"):
            # SQLAlchemy-style driver suffix (as Dagster's storage needs): libpq does not accept it.
            raw = "postgresql" + raw[raw.index("://") :]
        try:
            parts = conninfo_to_dict(raw)
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(
                f"{name} is not a valid PostgreSQL URL ({redact(str(exc))}); "
                "expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME."
            ) from None
        if not parts.get("user"):
            raise ConfigurationError(f"{name} names no user; expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME.")
        if not parts.get("dbname"):
            raise ConfigurationError(f"{name} names no database; add /DBNAME to the URL.")
        host = str(parts.get("host") or "localhost")
        try:
            port = int(parts.get("port") or 5432)
        except ValueError:
            raise ConfigurationError(f"{name} has a port that is not a number.") from None
        password = parts.get("password")
        return cls(
            host=host,
            port=port,
            user=str(parts["user"]),
            password=Secret(str(password)) if password else None,
            dbname=str(parts["dbname"]),
            sslmode=str(parts["sslmode"]) if parts.get("sslmode") else None,
        )

    def conninfo(self, **extra: Any) -> str:
        """libpq conninfo. It holds the password: pass it to a driver, never to a log."""
        params: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.dbname,
            "application_name": self.application_name,
        }
        if self.password is not None:
            params["password"] = self.password.reveal()
        if self.sslmode:
            params["sslmode"] = self.sslmode
        params.update(extra)
        return make_conninfo(**params)

    def url(self) -> Secret:
        return database_url(self.host, self.port, self.user, self.password, self.dbname)

    def sqlalchemy_url(self, driver: str = "psycopg") -> Secret:
        return Secret(self.url().reveal().replace("postgresql://", f"postgresql+{driver}://", 1))

    def with_db(self, dbname: str) -> ConnectionSpec:
        return replace(self, dbname=dbname)

    def with_user(self, user: str, password: Secret | None) -> ConnectionSpec:
        return replace(self, user=user, password=password)

    def with_settings(self, settings: dict[str, str]) -> ConnectionSpec:
        return replace(self, settings=tuple(sorted({**dict(self.settings), **settings}.items())))

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"

    def __repr__(self) -> str:
        return f"ConnectionSpec({self.describe()})"

    __str__ = __repr__

    def connect(
        self,
        *,
        autocommit: bool = False,
        connect_timeout: int = 10,
        settings: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> psycopg.Connection:
        """Open a connection with the shared session settings (plus `settings`, e.g. PINNED_SEARCH_PATH);
        failures name the target, never the password."""
        options = " ".join(
            f"-c {k}={v.replace(' ', '')}" for k, v in {**SESSION_SETTINGS, **dict(self.settings), **(settings or {})}.items()
        )
        try:
            conn = psycopg.connect(
                self.conninfo(connect_timeout=connect_timeout, options=options), autocommit=autocommit, **kwargs
            )
        except psycopg.OperationalError as exc:
            raise ConnectionFailed(
                # libpq's messages span lines (a hint on the second); an operator's log wants one line
                f"cannot connect to {self.describe()}: {one_line(exc)} "
                "Check that the server runs, the host and port are right, and the credentials are valid."
            ) from None
        return conn
