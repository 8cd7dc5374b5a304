"""The registry, exported into the real app's own `tenant_connections` table, in the app's own secret format.

The Handyshop app (reference §4.1, server/tenancy/connectionRegistry.ts) finds a shop's database through rows
`shop_id, database_name, username, encrypted_password, encrypted_connection_string, host, port, is_active,
created_at, last_used`, whose two secrets are AES-256-GCM under the app's key, stored as
`ivHex:tagHex:ciphertextHex` (random 12-byte iv, 16-byte tag, lower-case hex, no associated data). Our registry
keeps its passwords under our own key and format (`encryption.py`), so the app cannot read it: this module writes
every registry entry into a table of the app's shape, in the schema and database the caller names, re-encrypted
under the app's key, so the app's ConnectionRegistry can load the shops the migration provisioned.

- The connection string is `postgresql://user:password@host:port/database` with every part percent-encoded: the
  app builds its own from the raw password, which breaks on the `@ # % / ...` its generator produces.
- Upsert on shop_id, in one transaction. A row whose fields and decrypted secrets already equal the entry is left
  as it is (a second export changes nothing, not even a ciphertext); a row whose secrets do not open under the
  given app key is refused rather than overwritten: the app would be reading that table with another key.
- `is_active` is false for entries whose database may not exist (`provisioning`, `failed`); the app lists only
  active rows.
- Nothing here logs, returns or raises a password, a connection string or a key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
from collections.abc import Collection
from dataclasses import dataclass

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg import sql

from handyshop_migration.tenancy.application.registry import ConnectionRegistry, TenantCredentials
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import (
    ConfigurationError,
    DecryptionError,
    EncryptionKeyError,
    ExportError,
)
from handyshop_migration.tenancy.secrets import Secret, database_url, one_line

log = logging.getLogger(__name__)

APP_TABLE = "tenant_connections"
# The app refuses to start with this key (validateEncryptionKey), and so do we.
APP_DEFAULT_KEY = "default-key-change-in-production-environment"
_IV_LEN = 12
_TAG_LEN = 16
_HEX = frozenset("0123456789abcdefABCDEF")
_INT4_MAX = 2**31 - 1

# The app's table (shared/schema.ts and masterSchema.ts), created when the target has none; the foreign key to
# `shops` of schema.ts is left out (masterSchema.ts has none), as the target need not hold a shops table.
_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    shop_id integer PRIMARY KEY,
    database_name text NOT NULL,
    username text NOT NULL,
    encrypted_password text NOT NULL,
    encrypted_connection_string text NOT NULL,
    host text NOT NULL,
    port integer NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamp NOT NULL DEFAULT now(),
    last_used timestamp NOT NULL DEFAULT now()
)
"""
_COLUMNS = (
    "shop_id", "database_name", "username", "encrypted_password", "encrypted_connection_string", "host", "port",
    "is_active", "created_at", "last_used",
)
_WRITTEN = _COLUMNS[:8]  # created_at and last_used come from their defaults on insert


def app_key_bytes(key: Secret) -> bytes:
    """The app's 32 key bytes by its own rules (getKeyBuffer, validateEncryptionKey): exactly 64 hexadecimal
    characters are the raw bytes, exactly 44 characters are base64, anything else is hashed with SHA-256; a key
    shorter than 32 characters, or the app's placeholder default, is refused as the app refuses it."""
    if not isinstance(key, Secret):
        raise TypeError("the app's key must be a Secret")
    raw = key.reveal()
    where = "the app's encryption key (the one its ConnectionRegistry reads, e.g. CONNECTION_ENCRYPTION_KEY)"
    if len(raw) < 32:
        raise EncryptionKeyError(
            f"{where} has {len(raw)} characters; the app refuses keys shorter than 32. Give the app's real key "
            "(`openssl rand -hex 32`)."
        )
    if raw == APP_DEFAULT_KEY:
        raise EncryptionKeyError(f"{where} is the app's placeholder default, which the app refuses; give its real key.")
    if len(raw) == 64 and _HEX.issuperset(raw):
        return bytes.fromhex(raw)
    if len(raw) == 44:
        # The app decodes 44 characters as base64 (Node's Buffer.from(key, 'base64') reads both alphabets).
        try:
            decoded = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != 32:
            raise EncryptionKeyError(
                f"{where} has 44 characters, so the app reads it as base64, but it is not base64 of 32 bytes; "
                "the app cannot use it either. Give the app's real key."
            )
        return decoded
    return hashlib.sha256(raw.encode("utf-8")).digest()


class AppSecretCipher:
    """The app's secret format: AES-256-GCM, `ivHex:tagHex:ciphertextHex`, no associated data."""

    __slots__ = ("_aes",)

    def __init__(self, key: Secret) -> None:
        self._aes = AESGCM(app_key_bytes(key))  # only the AESGCM object is kept, never the key text

    def __repr__(self) -> str:
        return "AppSecretCipher(***)"

    __str__ = __repr__

    def __reduce__(self) -> object:
        raise TypeError("an AppSecretCipher cannot be pickled; build it from the app's key where it is needed")

    def encrypt(self, plaintext: str) -> str:
        iv = os.urandom(_IV_LEN)
        sealed = self._aes.encrypt(iv, plaintext.encode("utf-8"), None)  # ciphertext followed by the 16-byte tag
        return ":".join((iv.hex(), sealed[-_TAG_LEN:].hex(), sealed[:-_TAG_LEN].hex()))

    def decrypt(self, value: str) -> str:
        parts = value.split(":") if isinstance(value, str) else []
        if len(parts) != 3 or not all(_HEX.issuperset(p) and len(p) % 2 == 0 for p in parts):
            raise DecryptionError("the stored app secret is not ivHex:tagHex:ciphertextHex")
        iv, tag, body = (bytes.fromhex(p) for p in parts)
        if len(iv) != _IV_LEN or len(tag) != _TAG_LEN:
            raise DecryptionError(f"the stored app secret needs a {_IV_LEN}-byte iv and a {_TAG_LEN}-byte tag")
        try:
            return self._aes.decrypt(iv, body + tag, None).decode("utf-8")
        except (InvalidTag, UnicodeDecodeError):
            raise DecryptionError("the stored app secret does not open under the given app key") from None


@dataclass(frozen=True)
class ExportResult:
    """Which shops the export inserted, updated or left as they were; no secret in it."""

    table: str
    inserted: tuple[int, ...]
    updated: tuple[int, ...]
    unchanged: tuple[int, ...]
    not_in_registry: tuple[int, ...]  # rows of the target table the registry does not know; left untouched

    def summary(self) -> str:
        text = (
            f"exported the registry into {self.table}: {len(self.inserted)} inserted, {len(self.updated)} updated, "
            f"{len(self.unchanged)} unchanged"
        )
        if self.not_in_registry:
            ids = ", ".join(map(str, self.not_in_registry))
            text += f"; rows of shops not in the registry left as they were: {ids}"
        return text


@dataclass(frozen=True)
class _AppRow:
    shop_id: int
    database_name: str
    username: str
    host: str
    port: int
    is_active: bool
    password: Secret
    connection_string: Secret


def _desired(creds: TenantCredentials, host: str | None, port: int | None, inactive: Collection[int]) -> _AppRow:
    reach_host, reach_port = host or creds.host, port or creds.port
    if not 0 < creds.shop_id <= _INT4_MAX:
        raise ConfigurationError(
            f"shop {creds.shop_id} does not fit the app's tenant_connections.shop_id (integer); it cannot be exported."
        )
    return _AppRow(
        shop_id=creds.shop_id,
        database_name=creds.database,
        username=creds.role,
        host=reach_host,
        port=reach_port,
        is_active=creds.shop_id not in inactive,
        password=creds.password,
        connection_string=database_url(reach_host, reach_port, creds.role, creds.password, creds.database),
    )


def _same(row: tuple, want: _AppRow, cipher: AppSecretCipher) -> bool:
    """Does the stored row (shop_id, database_name, username, host, port, is_active, password, conn) equal it?"""
    _, database_name, username, host, port, is_active, enc_password, enc_conn = row
    if (database_name, username, host, port, is_active) != (
        want.database_name, want.username, want.host, want.port, want.is_active
    ):
        return False
    return (
        cipher.decrypt(enc_password) == want.password.reveal()
        and cipher.decrypt(enc_conn) == want.connection_string.reveal()
    )


def _ensure_table(conn: psycopg.Connection, schema: str, table: str) -> None:
    target = sql.Identifier(schema, table)
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(sql.SQL(_DDL).format(table=target))
    present = {
        name
        for (name,) in conn.execute(
            "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            (target.as_string(conn),),
        ).fetchall()
    }
    missing = [c for c in _COLUMNS if c not in present]
    if missing:
        raise ConfigurationError(
            f"{schema}.{table} exists but lacks the app's column(s) {', '.join(missing)}; it is not the app's "
            "tenant_connections table. Name the app's table, or a schema where it does not exist yet."
        )


def export_registry(
    registry: ConnectionRegistry,
    target: ConnectionSpec,
    app_key: Secret,
    *,
    schema: str = "public",
    table: str = APP_TABLE,
    host: str | None = None,
    port: int | None = None,
    inactive: Collection[int] = (),
) -> ExportResult:
    """Write every registry entry into `schema.table` of the `target` database, in the app's format.

    `target` connects as a role that may create the table (or write the existing one); `app_key` is the key the
    app's ConnectionRegistry reads (its CONNECTION_ENCRYPTION_KEY / TENANT_ENCRYPTION_KEY / SECRET_KEY), not ours.
    `host`/`port` replace the registry's address where the app reaches the tenant server by another one (a
    container network name). `inactive` are shops whose tenant database the app must not use (yet): a shop still
    being provisioned, or being dropped (the lifecycle says which). Idempotent; all rows or none.
    """
    if port is not None and not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be between 1 and 65535, got {port}.")
    for name, value in (("schema", schema), ("table", table)):
        if not value or len(value.encode("utf-8")) > 63:
            raise ConfigurationError(f"{name} must be a PostgreSQL identifier of 1 to 63 bytes, got {value!r}.")
    cipher = AppSecretCipher(app_key)
    wanted = {w.shop_id: w for w in (_desired(c, host, port, inactive) for c in registry.list())}
    qualified = f"{schema}.{table}"
    target_table = sql.Identifier(schema, table)
    select = sql.SQL(
        "SELECT shop_id, database_name, username, host, port, is_active, encrypted_password, "
        "encrypted_connection_string FROM {} ORDER BY shop_id FOR UPDATE"
    ).format(target_table)
    upsert = sql.SQL(
        "INSERT INTO {table} ({cols}) VALUES ({vals}) ON CONFLICT (shop_id) DO UPDATE SET {sets}, last_used = now()"
    ).format(
        table=target_table,
        cols=sql.SQL(", ").join(map(sql.Identifier, _WRITTEN)),
        vals=sql.SQL(", ").join(sql.Placeholder() for _ in _WRITTEN),
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in _WRITTEN[1:]),
    )
    try:
        with target.connect() as conn, conn.transaction():
            # Two exports into one table are serialised; the app's own upserts are handled by ON CONFLICT.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"handyshop-migration:app-export:{qualified}",)
            )
            _ensure_table(conn, schema, table)
            existing = {row[0]: row for row in conn.execute(select).fetchall()}
            foreign, inserted, updated, unchanged = [], [], [], []
            for shop_id, want in sorted(wanted.items()):
                row = existing.get(shop_id)
                if row is None:
                    inserted.append(shop_id)
                    continue
                try:
                    (unchanged if _same(row, want, cipher) else updated).append(shop_id)
                except DecryptionError:
                    foreign.append(shop_id)
            if foreign:
                raise DecryptionError(
                    f"{qualified} holds rows for shop(s) {', '.join(map(str, foreign))} whose secrets do not open "
                    "under the given app key: the app reads that table with another key. Give the app's key, or "
                    "delete those rows; nothing was written."
                )
            for shop_id in inserted + updated:
                want = wanted[shop_id]
                conn.execute(
                    upsert,
                    (
                        want.shop_id, want.database_name, want.username, cipher.encrypt(want.password.reveal()),
                        cipher.encrypt(want.connection_string.reveal()), want.host, want.port, want.is_active,
                    ),
                )
    except psycopg.Error as exc:
        # The primary message only: a DETAIL line ("Failing row contains ...") would quote the row.
        message = exc.diag.message_primary or type(exc).__name__
        raise ExportError(
            f"exporting the registry into {qualified} of {target.describe()} failed: {one_line(message)} "
            f"[SQLSTATE {exc.sqlstate or '?'}]. Nothing was written."
        ) from None
    result = ExportResult(
        table=qualified,
        inserted=tuple(inserted),
        updated=tuple(updated),
        unchanged=tuple(unchanged),
        not_in_registry=tuple(sorted(set(existing) - set(wanted))),
    )
    log.info(result.summary())
    return result


__all__ = [
    "APP_DEFAULT_KEY",
    "APP_TABLE",
    "AppSecretCipher",
    "ExportResult",
    "app_key_bytes",
    "export_registry",
]
