"""Where each shop's database is and how to log in to it, persisted encrypted in a control table.

Two logins per shop: the application's role (`shop_user_N`: data only) and the migration's per-tenant owner
(`shop_owner_N`: owns the tenant's objects; what the migration logs in as, so that nothing a tenant can create
ever runs with more than that one database's rights). Both passwords are stored encrypted, each bound to its
shop and role by the cipher's associated data.

Unlike the app's ConnectionRegistry, persistence is always on and goes to one place (the control database
the caller names), the cache is a real LRU with a bound and a TTL, and the cache holds only ciphertext, so
no decrypted password sits in memory between calls. Where a shop is in its migration is not kept here: that
is the lifecycle's record (`tenancy.lifecycle`).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from handyshop_migration.tenancy.application.encryption import CredentialCipher
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import DecryptionError, RegistryError
from handyshop_migration.tenancy.secrets import Secret

TABLE = "tenant_connections"
_COLUMNS = (
    "shop_id", "server", "host", "port", "database", "role", "password_encrypted", "owner_role",
    "owner_password_encrypted", "key_id",
)

T = TypeVar("T")


def credential_context(shop_id: int) -> str:
    """Associated data binding the application role's encrypted password to its shop's row."""
    return f"tenant-credential:shop:{shop_id}"


def owner_credential_context(shop_id: int) -> str:
    """Associated data binding the owner role's encrypted password to its shop's row (never interchangeable
    with the application's: a token moved from one column to the other fails to decrypt)."""
    return f"tenant-owner-credential:shop:{shop_id}"


def _missing(shop_id: int) -> RegistryError:
    return RegistryError(
        f"no registry entry for shop {shop_id}; provision it first (handyshop-migration migrate --shops {shop_id})"
    )


@dataclass(frozen=True)
class TenantCredentials:
    shop_id: int
    server: str
    host: str
    port: int
    database: str
    role: str
    password: Secret
    owner_role: str
    owner_password: Secret

    def __post_init__(self) -> None:
        # A plain str here would print in reprs, tracebacks and Dagster metadata.
        if not isinstance(self.password, Secret) or not isinstance(self.owner_password, Secret):
            raise TypeError("TenantCredentials passwords must be Secrets, not plain strings")

    def spec(self, *, sslmode: str | None = None) -> ConnectionSpec:
        """Where the application connects: its role on the tenant database."""
        return ConnectionSpec(
            host=self.host, port=self.port, user=self.role, password=self.password, dbname=self.database, sslmode=sslmode
        )

    def owner_spec(self, *, sslmode: str | None = None) -> ConnectionSpec:
        """Where the migration connects: the per-tenant owner role on the tenant database."""
        return ConnectionSpec(
            host=self.host, port=self.port, user=self.owner_role, password=self.owner_password, dbname=self.database,
            sslmode=sslmode,
        )


@dataclass(frozen=True)
class _Row:
    """A registry row as cached: the password stays encrypted until someone asks for it."""

    shop_id: int
    server: str
    host: str
    port: int
    database: str
    role: str
    token: str
    owner_role: str
    owner_token: str


@dataclass
class _CacheEntry:
    row: _Row
    expires_at: float


class ConnectionRegistry:
    """Tenant credentials in `<schema>.tenant_connections` of the control database, with an LRU+TTL cache."""

    def __init__(
        self,
        control: ConnectionSpec,
        cipher: CredentialCipher,
        *,
        schema: str = "handyshop_migration",
        cache_size: int = 100,
        cache_ttl: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 1:
            raise ValueError(f"cache_size must be an integer of at least 1, got {cache_size!r}")
        if isinstance(cache_ttl, bool) or not isinstance(cache_ttl, int | float) or not cache_ttl > 0:
            raise ValueError(f"cache_ttl must be a number of seconds greater than 0, got {cache_ttl!r}")
        if not schema or len(schema.encode("utf-8")) > 63:
            raise ValueError("schema must be a non-empty PostgreSQL identifier of at most 63 bytes")
        self.control = control
        self.cipher = cipher
        self.schema = schema
        self.cache_size = cache_size
        self.cache_ttl = float(cache_ttl)
        self._clock = clock
        self._table = sql.Identifier(schema, TABLE)
        self._cache: OrderedDict[int, _CacheEntry] = OrderedDict()
        self._cache_lock = threading.Lock()
        # Bumped by every write and invalidation: a read that raced one must not cache what it read.
        self._generation = 0
        # One control connection, serialised by a lock: registry calls are short, and a connection
        # per call would cost a password handshake each time.
        self._conn: psycopg.Connection | None = None
        self._db_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"ConnectionRegistry(control={self.control!r}, schema={self.schema!r}, "
            f"key_id={self.cipher.key_id!r}, cache_len={self.cache_len})"
        )

    __str__ = __repr__

    # -- control connection -------------------------------------------------------------------

    def _run(self, work: Callable[[psycopg.Connection], T]) -> T:
        """Run `work` in one transaction on the control connection, reconnecting if it went away."""
        with self._db_lock:
            conn = self._conn
            if conn is not None:
                try:
                    conn.execute("")  # a dropped connection (server restart, idle kill) shows here, not mid-work
                except psycopg.Error:
                    conn.close()
                    conn = self._conn = None
            if conn is None:
                conn = self._conn = self.control.connect(autocommit=True)
            try:
                with conn.transaction():
                    return work(conn)
            except (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName):
                raise RegistryError(
                    f"the registry table {self.schema}.{TABLE} does not exist in {self.control.describe()}; "
                    "create it with ConnectionRegistry.ensure_schema() before registering shops."
                ) from None
            finally:
                if conn.broken:
                    conn.close()
                    self._conn = None

    def close(self) -> None:
        """Close the control connection (it is reopened on the next call)."""
        with self._db_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> ConnectionRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------------

    def _lock_key(self) -> int:
        digest = hashlib.sha256(f"handyshop-migration:registry-schema:{self.schema}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    def ensure_schema(self) -> None:
        """Create the schema and table if missing; concurrent callers are serialised by an advisory lock."""

        def work(conn: psycopg.Connection) -> None:
            # IF NOT EXISTS alone races: two sessions can both pass the check and one fails on the catalog.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key(),))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(
                sql.SQL(
                    """
                    CREATE TABLE IF NOT EXISTS {} (
                        shop_id bigint PRIMARY KEY,
                        server text NOT NULL,
                        host text NOT NULL,
                        port integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
                        database text NOT NULL,
                        role text NOT NULL,
                        password_encrypted text NOT NULL,
                        owner_role text NOT NULL,
                        owner_password_encrypted text NOT NULL,
                        key_id text NOT NULL,
                        created_at timestamptz NOT NULL DEFAULT now(),
                        updated_at timestamptz NOT NULL DEFAULT now()
                    )
                    """
                ).format(self._table)
            )

        self._run(work)

    # -- cache ----------------------------------------------------------------------------------

    def _purge_expired(self, now: float) -> None:
        # Called with the cache lock held; scanning is fine for a cache bounded to a few hundred entries.
        for shop_id in [s for s, e in self._cache.items() if e.expires_at <= now]:
            del self._cache[shop_id]

    def _cache_get(self, shop_id: int) -> _Row | None:
        with self._cache_lock:
            self._purge_expired(self._clock())
            entry = self._cache.get(shop_id)
            if entry is None:
                return None
            self._cache.move_to_end(shop_id)
            return entry.row

    def _cache_put(self, row: _Row, generation: int | None = None) -> None:
        """Cache a row read under `generation`, or (generation None) a row just written."""
        with self._cache_lock:
            if generation is None:
                self._generation += 1  # readers that started before this write must not cache their row
            elif generation != self._generation:
                return  # a write happened while we read: what we read may be stale
            now = self._clock()
            self._purge_expired(now)
            # The TTL counts from the read, not the last hit: a hot entry must still be re-read.
            self._cache[row.shop_id] = _CacheEntry(row, now + self.cache_ttl)
            self._cache.move_to_end(row.shop_id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def invalidate(self, shop_id: int | None = None) -> None:
        """Forget the cached entry of one shop, or of all shops; the next read goes to the database."""
        with self._cache_lock:
            self._generation += 1
            if shop_id is None:
                self._cache.clear()
            else:
                self._cache.pop(shop_id, None)

    @property
    def cache_len(self) -> int:
        with self._cache_lock:
            self._purge_expired(self._clock())
            return len(self._cache)

    # -- rows -------------------------------------------------------------------------------------

    def _decrypt(self, row: _Row) -> TenantCredentials:
        try:
            password = self.cipher.decrypt(row.token, context=credential_context(row.shop_id))
            owner_password = self.cipher.decrypt(row.owner_token, context=owner_credential_context(row.shop_id))
        except DecryptionError as exc:
            raise DecryptionError(f"cannot read the registry entry of shop {row.shop_id}: {exc}") from None
        return TenantCredentials(
            shop_id=row.shop_id,
            server=row.server,
            host=row.host,
            port=row.port,
            database=row.database,
            role=row.role,
            password=Secret(password),
            owner_role=row.owner_role,
            owner_password=Secret(owner_password),
        )

    def _select(self, where: sql.Composable, params: tuple[Any, ...]) -> list[_Row]:
        query = sql.SQL("SELECT {} FROM {} WHERE {} ORDER BY shop_id").format(
            sql.SQL(", ").join(
                sql.Identifier(c) for c in _COLUMNS if c != "key_id"
            ),
            self._table,
            where,
        )
        return [_Row(*r) for r in self._run(lambda conn: conn.execute(query, params).fetchall())]

    @staticmethod
    def _check_shop_id(shop_id: int) -> None:
        if isinstance(shop_id, bool) or not isinstance(shop_id, int):
            raise TypeError(f"shop_id must be an int, got {type(shop_id).__name__}")

    def register(self, creds: TenantCredentials) -> None:
        """Insert or replace the entry of `creds.shop_id`; the password is stored encrypted."""
        self._check_shop_id(creds.shop_id)
        if not 1 <= creds.port <= 65535:
            raise ValueError(f"port must be between 1 and 65535, got {creds.port}")
        token = self.cipher.encrypt(creds.password.reveal(), context=credential_context(creds.shop_id))
        owner_token = self.cipher.encrypt(creds.owner_password.reveal(), context=owner_credential_context(creds.shop_id))
        row = _Row(
            creds.shop_id, creds.server, creds.host, creds.port, creds.database, creds.role, token, creds.owner_role,
            owner_token,
        )
        updates = [c for c in _COLUMNS if c != "shop_id"]
        query = sql.SQL(
            "INSERT INTO {table} ({cols}) VALUES ({vals}) ON CONFLICT (shop_id) DO UPDATE SET {sets}, updated_at = now()"
        ).format(
            table=self._table,
            cols=sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS),
            vals=sql.SQL(", ").join(sql.Placeholder() for _ in _COLUMNS),
            sets=sql.SQL(", ").join(
                sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in updates
            ),
        )
        params = (
            row.shop_id, row.server, row.host, row.port, row.database, row.role, token, row.owner_role, owner_token,
            self.cipher.key_id,
        )
        try:
            self._run(lambda conn: conn.execute(query, params))
        except BaseException:
            self.invalidate(creds.shop_id)  # the write may or may not have happened
            raise
        self._cache_put(row)

    def find(self, shop_id: int) -> TenantCredentials | None:
        """The shop's credentials, or None if it has no entry (cache first, then the control table)."""
        self._check_shop_id(shop_id)
        row = self._cache_get(shop_id)
        if row is None:
            with self._cache_lock:
                generation = self._generation
            found = self._select(sql.SQL("shop_id = %s"), (shop_id,))
            if not found:
                return None
            row = found[0]
            creds = self._decrypt(row)  # check before caching: a bad entry must not sit in the cache
            self._cache_put(row, generation)
            return creds
        return self._decrypt(row)

    def get(self, shop_id: int) -> TenantCredentials:
        creds = self.find(shop_id)
        if creds is None:
            raise _missing(shop_id)
        return creds

    def remove(self, shop_id: int) -> bool:
        """Delete the shop's entry; False if there was none."""
        self._check_shop_id(shop_id)
        query = sql.SQL("DELETE FROM {} WHERE shop_id = %s").format(self._table)
        try:
            return bool(self._run(lambda conn: conn.execute(query, (shop_id,)).rowcount))
        finally:
            self.invalidate(shop_id)

    def list(self) -> list[TenantCredentials]:
        """Every entry, ordered by shop_id; always read from the control table."""
        return [self._decrypt(r) for r in self._select(sql.SQL("true"), ())]

    def key_ids(self) -> dict[str, int]:
        """How many entries are encrypted under each key id (a rotation is done when only the active one is left)."""
        query = sql.SQL("SELECT key_id, count(*) FROM {} GROUP BY key_id ORDER BY key_id").format(self._table)
        return {str(k): int(n) for k, n in self._run(lambda conn: conn.execute(query).fetchall())}

    def readable_by_active_key(self) -> None:
        """Refuse a cipher that cannot read the entries already registered, before anything is written with it
        (two keys in one registry would leave one half unreadable whichever key is set)."""
        counts = self.key_ids()
        unknown = {k: n for k, n in counts.items() if k not in self.cipher.key_ids}
        if unknown:
            described = ", ".join(f"{n} under key id {k}" for k, n in unknown.items())
            raise DecryptionError(
                f"the registry in {self.control.describe()} holds entries this TENANT_ENCRYPTION_KEY cannot read "
                f"({described}; the key given has id {self.cipher.key_id}): set the key they were written with, or "
                "put it into TENANT_ENCRYPTION_OLD_KEYS while rotating to the new one."
            )

    def relocate(self, conn: psycopg.Connection, shop_id: int, *, server: str, host: str, port: int) -> None:
        """Inside the caller's transaction on the control database (a move's flip, with the lifecycle's routing
        change): the shop's entry points to its tenant database on another server; same roles, same passwords."""
        self._check_shop_id(shop_id)
        updated = conn.execute(
            sql.SQL("UPDATE {} SET server = %s, host = %s, port = %s, updated_at = now() WHERE shop_id = %s").format(
                self._table
            ),
            (server, host, port, shop_id),
        ).rowcount
        self.invalidate(shop_id)
        if not updated:
            raise _missing(shop_id)

    def entries_under_old_keys(self, limit: int, *, after: int = -1) -> list[TenantCredentials]:
        """The next `limit` entries (shop ids above `after`) not under the active key that decrypt; what a
        rotation checks before re-encrypting them. Entries that do not decrypt are left to `rotate_batch`,
        which reports them."""
        query = sql.SQL("SELECT {} FROM {} WHERE key_id <> %s AND shop_id > %s ORDER BY shop_id LIMIT %s").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS if c != "key_id"), self._table
        )
        rows = self._run(lambda conn: conn.execute(query, (self.cipher.key_id, after, limit)).fetchall())
        out = []
        for row in map(lambda r: _Row(*r), rows):
            try:
                out.append(self._decrypt(row))
            except DecryptionError:
                continue
        return out

    def rotate_batch(
        self, limit: int, verify: Callable[[TenantCredentials], str | None] | None = None, *, after: int = -1
    ) -> tuple[int, dict[int, str], int | None]:
        """Re-encrypt up to `limit` entries not under the active key with shop ids above `after`, in one
        transaction, each only once its tokens decrypt under the old key, its new tokens decrypt to the same
        passwords, and `verify(creds)` (a login, say) returns None. Returns (entries rotated, {shop: why it was
        left under its old key}, the highest shop id looked at — None when there was none: done). Entries
        locked by another session are skipped, not waited for; what is left stays readable by the old key."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
        select = sql.SQL(
            "SELECT {} FROM {} WHERE key_id <> %s AND shop_id > %s ORDER BY shop_id LIMIT %s FOR UPDATE SKIP LOCKED"
        ).format(sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS if c != "key_id"), self._table)
        update = sql.SQL(
            "UPDATE {} SET password_encrypted = %s, owner_password_encrypted = %s, key_id = %s, updated_at = now() "
            "WHERE shop_id = %s AND password_encrypted = %s AND owner_password_encrypted = %s"
        ).format(self._table)

        def work(conn: psycopg.Connection) -> tuple[int, dict[int, str], int | None]:
            rotated, left, last = 0, {}, None
            for values in conn.execute(select, (self.cipher.key_id, after, limit)).fetchall():
                row = _Row(*values)
                last = row.shop_id
                try:
                    creds = self._decrypt(row)
                    token = self.cipher.rotate(row.token, context=credential_context(row.shop_id))
                    owner_token = self.cipher.rotate(row.owner_token, context=owner_credential_context(row.shop_id))
                    again = self._decrypt(_Row(*values[:6], token, row.owner_role, owner_token))
                except DecryptionError as exc:
                    left[row.shop_id] = str(exc)
                    continue
                if (again.password, again.owner_password) != (creds.password, creds.owner_password):
                    left[row.shop_id] = "the re-encrypted entry does not decrypt to the same passwords"
                    continue
                problem = verify(creds) if verify is not None else None
                if problem:
                    left[row.shop_id] = problem
                    continue
                conn.execute(update, (token, owner_token, self.cipher.key_id, row.shop_id, row.token, row.owner_token))
                rotated += 1
            return rotated, left, last

        try:
            return self._run(work)
        finally:
            self.invalidate()

    def rotate_keys(self) -> int:
        """Re-encrypt every entry not under the active key; returns how many were rewritten."""
        select = sql.SQL(
            "SELECT shop_id, password_encrypted, owner_password_encrypted FROM {} WHERE key_id <> %s "
            "ORDER BY shop_id FOR UPDATE"
        ).format(self._table)
        update = sql.SQL(
            "UPDATE {} SET password_encrypted = %s, owner_password_encrypted = %s, key_id = %s, updated_at = now() "
            "WHERE shop_id = %s"
        ).format(self._table)

        def work(conn: psycopg.Connection) -> int:
            # One transaction: either every entry moves to the new key or none does.
            rotated = 0
            for shop_id, token, owner_token in conn.execute(select, (self.cipher.key_id,)).fetchall():
                try:
                    new_token = self.cipher.rotate(token, context=credential_context(shop_id))
                    new_owner = self.cipher.rotate(owner_token, context=owner_credential_context(shop_id))
                except DecryptionError as exc:
                    raise DecryptionError(f"cannot rotate the registry entry of shop {shop_id}: {exc}") from None
                conn.execute(update, (new_token, new_owner, self.cipher.key_id, shop_id))
                rotated += 1
            return rotated

        try:
            return self._run(work)
        finally:
            self.invalidate()


__all__ = ["ConnectionRegistry", "TenantCredentials", "credential_context", "owner_credential_context"]
