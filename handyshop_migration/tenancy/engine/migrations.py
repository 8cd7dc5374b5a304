"""Versioned tenant schema migrations.

Migration 0001 is the tenant schema rendered from the source catalog; later changes are `.sql` files in a
directory, applied in name order. Each tenant database records, per applied migration, its name and the
SHA-256 of its text. A recorded migration whose text has changed is refused: a tenant that was built
from one schema must not silently be treated as built from another (the real app's runner recorded
checksums but nothing ever checked them). Runs hold a transaction-level advisory lock, so two runners on
one tenant database serialise, and all pending migrations apply in one transaction.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.tenant_schema import render
from handyshop_migration.tenancy.errors import MigrationError
from handyshop_migration.tenancy.names import CONTROL_SCHEMA as META_SCHEMA

TABLE = "schema_migrations"
INITIAL = "0001_tenant_schema"
SHOP_SPECIFIC = "0001_tenant_schema_shop"  # objects of one tenant only, from the same catalog
# pg_advisory_xact_lock key: a fixed 64-bit number of our own ("handysh0" in ASCII).
LOCK_KEY = 0x68616E6479736830


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class MigrationReport:
    applied: tuple[str, ...]  # applied by this run
    already: tuple[str, ...]  # applied earlier, checksums verified
    seconds: float

    @property
    def version(self) -> str:
        return schema_version(self.already + self.applied)


def schema_version(names: Sequence[str]) -> str:
    """A tenant's schema version: its newest migration that every tenant gets. A tenant's own objects
    (`SHOP_SPECIFIC`, right after 0001) are no version: with them a shop would look newer than, or
    different from, the others at the same migration (and the fleet would list it as stale)."""
    common = sorted(n for n in names if n != SHOP_SPECIFIC)
    return common[-1] if common else ""


def shop_migrations(catalog: Catalog, shop_id: int) -> tuple[Migration, ...]:
    """The objects of one tenant only (a partial index or a view whose condition names it), as the migration
    `0001_tenant_schema_shop`, applied to that tenant after the template's 0001; empty when it has none."""
    text = render(catalog).shop_script(shop_id)
    return (Migration(SHOP_SPECIFIC, text),) if text else ()


def with_shop(migrations: Sequence[Migration], shop: Sequence[Migration]) -> tuple[Migration, ...]:
    """`migrations` with a tenant's own ones right after 0001 (they are derived from the same catalog)."""
    out = list(migrations)
    at = next((i + 1 for i, m in enumerate(out) if m.name == INITIAL), 0)
    return tuple(out[:at] + list(shop) + out[at:])


def tenant_migrations(catalog: Catalog, directory: str | Path | None = None) -> tuple[Migration, ...]:
    """0001 from the catalog (the tenant tables and the write guard on them), then every `NNNN_name.sql` of
    `directory` in name order."""
    from handyshop_migration.tenancy.engine.capture.guard import (
        tenant_guard_sql,  # capture imports this module
    )

    migrations = [Migration(INITIAL, render(catalog).script() + tenant_guard_sql(catalog) + "\n")]
    if directory is not None:
        path = Path(directory)
        if not path.is_dir():
            raise MigrationError(f"tenant migrations directory {path} does not exist; create it or unset the option.")
        for file in sorted(path.glob("*.sql")):
            if file.stem < "0002":
                raise MigrationError(
                    f"migration file {file.name} sorts before or at {INITIAL}, which is generated from the catalog; "
                    "name it 0002_... or later."
                )
            migrations.append(Migration(file.stem, file.read_text(encoding="utf-8")))
    return tuple(migrations)


def fingerprint(migrations: Sequence[Migration]) -> str:
    """One hash over the whole migration list (names the template database built from it)."""
    h = hashlib.sha256()
    for m in migrations:
        h.update(f"{m.name}:{m.checksum}\n".encode())
    return h.hexdigest()


_CREATE = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    execution_ms integer NOT NULL
)
"""


def _table() -> sql.Identifier:
    return sql.Identifier(META_SCHEMA, TABLE)


def applied_migrations(conn: psycopg.Connection) -> dict[str, str]:
    """name -> checksum recorded in this database (empty if never migrated)."""
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{META_SCHEMA}.{TABLE}",)).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(sql.SQL("SELECT name, checksum FROM {} ORDER BY name").format(_table())).fetchall()
    return {name: checksum for name, checksum in rows}


def check(recorded: dict[str, str], migrations: Sequence[Migration], database: str) -> list[Migration]:
    """Raise on a changed or vanished applied migration; return the pending ones."""
    known = {m.name: m for m in migrations}
    # A changed file is the graver finding (it may be drift of the whole schema): report it first.
    for name, checksum in recorded.items():
        m = known.get(name)
        if m is not None and m.checksum != checksum:
            hint = (
                "the source catalog changed since this tenant was provisioned (schema drift): keep the catalog "
                "file it was built from, and put the change into a new migration file (0002_...sql)"
                if name == INITIAL
                else "an applied migration must never be edited: revert the file and put the change into a new one"
            )
            raise MigrationError(
                f"{database}: migration {name} was applied with checksum {checksum[:12]}… but the file now has "
                f"{m.checksum[:12]}…; {hint}."
            )
    for name in recorded:
        if name not in known:
            raise MigrationError(
                f"{database} has migration {name} applied, but it is not among the migrations now "
                f"({', '.join(known) or 'none'}); restore the file, or point to the migrations directory it came from."
            )
    return [m for m in migrations if m.name not in recorded]


def apply_migrations(conn: psycopg.Connection, migrations: Sequence[Migration]) -> MigrationReport:
    """Apply pending migrations to the database `conn` is connected to (as an owner/superuser)."""
    started = time.perf_counter()
    database = conn.info.dbname
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise MigrationError("apply_migrations needs a connection outside any transaction")
    autocommit = conn.autocommit
    conn.autocommit = False
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            conn.execute(sql.SQL(_CREATE).format(schema=sql.Identifier(META_SCHEMA), table=_table()))
            recorded = applied_migrations(conn)
            pending = check(recorded, migrations, database)
            for m in pending:
                t0 = time.perf_counter()
                try:
                    with conn.transaction():
                        conn.execute(m.sql.encode("utf-8"))  # type: ignore[call-overload]
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"{database}: migration {m.name} failed: {exc.diag.message_primary or exc}; "
                        "nothing of this run was applied (one transaction). Fix the migration and run again."
                    ) from None
                conn.execute(
                    sql.SQL("INSERT INTO {} (name, checksum, execution_ms) VALUES (%s, %s, %s)").format(_table()),
                    (m.name, m.checksum, round((time.perf_counter() - t0) * 1000)),
                )
                # the script may change search_path (SET LOCAL); later statements name their schema anyway
    finally:
        conn.autocommit = autocommit
    already = tuple(m.name for m in migrations if m.name in recorded)
    return MigrationReport(tuple(m.name for m in pending), already, time.perf_counter() - started)
