"""The registry exported into the real app's `tenant_connections` (application/export.py), read back the way the
app reads it: in Node.js (support/node/crypto.mjs), whose decrypted passwords and connection strings must log in
to the tenant databases with the `pg` package; idempotent, refusing rows under another key, leaking no secret."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from psycopg import sql

from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.export import (
    APP_DEFAULT_KEY,
    AppSecretCipher,
    app_key_bytes,
    export_registry,
)
from handyshop_migration.tenancy.application.registry import ConnectionRegistry, TenantCredentials
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import (
    ConfigurationError,
    DecryptionError,
    EncryptionKeyError,
    ExportError,
)
from handyshop_migration.tenancy.secrets import Secret, database_url
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    rows,
    unique_namespace,
)
from handyshop_migration_tests.support.node import run_module
from handyshop_migration_tests.support.tenants import AWKWARD, create_tenant

SCHEMA = "app"

OPEN_AND_LOG_IN = """
import { readFileSync } from "node:fs";
import pg from "pg";
import { decryptAppSecret } from "./crypto.mjs";
const { key, rows } = JSON.parse(readFileSync(0, "utf8"));
const who = async (config) => {
  const client = new pg.Client(config);
  await client.connect();
  try {
    return (await client.query("SELECT current_user AS role, current_database() AS db")).rows[0];
  } finally {
    await client.end();
  }
};
const out = [];
for (const row of rows) {
  const password = decryptAppSecret(row.encrypted_password, key);
  const connectionString = decryptAppSecret(row.encrypted_connection_string, key);
  const url = new URL(connectionString); // as the app's parseConnectionString reads it
  out.push({
    shop: row.shop_id,
    password,
    connectionString,
    parsed: { user: decodeURIComponent(url.username), password: decodeURIComponent(url.password),
              host: url.hostname, port: Number(url.port), db: url.pathname.slice(1) },
    byParts: await who({ host: row.host, port: row.port, database: row.database_name, user: row.username, password }),
    byUrl: await who({ connectionString }),
  });
}
console.log(JSON.stringify(out));
"""

KEY_BYTES = """
import { readFileSync } from "node:fs";
import { appKeyBytes } from "./crypto.mjs";
const { keys } = JSON.parse(readFileSync(0, "utf8"));
console.log(JSON.stringify(keys.map((k) => { try { return { hex: appKeyBytes(k).toString("hex") }; }
                                             catch (e) { return { error: e.message }; } })));
"""


def app_keys() -> dict[str, str]:
    """One key of each form the app reads (reference §4.1)."""
    return {
        "hex": generate_key(),  # 64 hexadecimal characters: the raw 32 bytes
        "base64": base64.b64encode(os.urandom(32)).decode(),  # 44 characters: base64
        "passphrase": "a long passphrase, not hex and not 44 characters: ünï",  # anything else: SHA-256
    }


@dataclass
class Setup:
    registry: ConnectionRegistry
    target: ConnectionSpec  # the database the app's table goes to (superuser)
    tenants: dict[int, TenantCredentials]


@pytest.fixture
def setup(pg_server: ConnectionSpec, fresh_db: ConnectionSpec) -> Iterator[Setup]:
    namespace = unique_namespace()
    target = create_database(pg_server, "t_app_master")
    registry = ConnectionRegistry(fresh_db, CredentialCipher(generate_key()))
    try:
        registry.ensure_schema()
        tenants = {}
        for shop in (21, 22, 23):
            tenants[shop] = create_tenant(pg_server, namespace, shop, f"p{shop}{AWKWARD}ü")
            registry.register(tenants[shop])
        yield Setup(registry, target, tenants)
    finally:
        registry.close()
        drop_database(pg_server, target.dbname)
        drop_namespace(pg_server, namespace)


def app_rows(target: ConnectionSpec) -> list[dict]:
    with target.connect() as conn:
        cur = conn.execute(sql.SQL("SELECT * FROM {} ORDER BY shop_id").format(sql.Identifier(SCHEMA, "tenant_connections")))
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def open_in_node(rows_: list[dict], key: str) -> dict[int, dict]:
    payload = [
        {k: row[k] for k in ("shop_id", "encrypted_password", "encrypted_connection_string", "host", "port", "database_name", "username")}
        for row in rows_
    ]
    return {r["shop"]: r for r in run_module(OPEN_AND_LOG_IN, {"key": key, "rows": payload})}


@pytest.mark.parametrize("form", ["hex", "base64", "passphrase"])
def test_exported_rows_decrypt_in_node_to_credentials_that_log_in(setup: Setup, form: str) -> None:
    key = app_keys()[form]
    result = export_registry(setup.registry, setup.target, Secret(key), schema=SCHEMA, inactive={23})
    assert result.inserted == (21, 22, 23) and result.updated == result.unchanged == result.not_in_registry == ()

    stored = app_rows(setup.target)
    assert [r["shop_id"] for r in stored] == [21, 22, 23]
    opened = open_in_node(stored, key)
    for row in stored:
        creds, seen = setup.tenants[row["shop_id"]], opened[row["shop_id"]]
        assert (row["database_name"], row["username"], row["host"], row["port"]) == (
            creds.database, creds.role, creds.host, creds.port
        )
        assert row["is_active"] is (row["shop_id"] != 23)
        assert seen["password"] == creds.password.reveal()
        assert seen["connectionString"] == database_url(creds.host, creds.port, creds.role, creds.password, creds.database).reveal()
        assert seen["parsed"] == {
            "user": creds.role, "password": creds.password.reveal(), "host": creds.host, "port": creds.port, "db": creds.database
        }
        assert seen["byParts"] == seen["byUrl"] == {"role": creds.role, "db": creds.database}
        for column in ("encrypted_password", "encrypted_connection_string"):  # ivHex:tagHex:ciphertextHex, lower-case
            iv, tag, body = row[column].split(":")
            assert len(iv) == 24 and len(tag) == 32 and body and row[column] == row[column].lower()
        assert creds.password.reveal() not in row["encrypted_connection_string"]


def test_the_table_has_the_apps_shape(setup: Setup) -> None:
    export_registry(setup.registry, setup.target, Secret(generate_key()), schema=SCHEMA)
    columns = rows(
        setup.target,
        "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'tenant_connections' ORDER BY ordinal_position",
        (SCHEMA,),
    )
    assert columns == [
        ("shop_id", "integer", "NO", None),
        ("database_name", "text", "NO", None),
        ("username", "text", "NO", None),
        ("encrypted_password", "text", "NO", None),
        ("encrypted_connection_string", "text", "NO", None),
        ("host", "text", "NO", None),
        ("port", "integer", "NO", None),
        ("is_active", "boolean", "NO", "true"),
        ("created_at", "timestamp without time zone", "NO", "now()"),
        ("last_used", "timestamp without time zone", "NO", "now()"),
    ]
    assert rows(
        setup.target,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'app.tenant_connections'::regclass AND i.indisprimary",
    ) == [("shop_id",)]


def test_a_second_export_changes_nothing_and_a_new_password_updates_only_its_row(
    setup: Setup, pg_server: ConnectionSpec
) -> None:
    key = Secret(generate_key())
    export_registry(setup.registry, setup.target, key, schema=SCHEMA)
    before = app_rows(setup.target)
    again = export_registry(setup.registry, setup.target, key, schema=SCHEMA)
    assert again.unchanged == (21, 22, 23) and again.inserted == again.updated == ()
    assert app_rows(setup.target) == before, "an export with nothing new rewrote a row"

    # shop 22 gets a new password (as a credential rotation would); a stale app row and a foreign row exist
    new_password = f"new{AWKWARD}pw22"
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(setup.tenants[22].role), sql.Literal(new_password))
        )
    setup.tenants[22] = replace(setup.tenants[22], password=Secret(new_password))
    setup.registry.register(setup.tenants[22])
    cipher = AppSecretCipher(key)
    with setup.target.connect() as conn:
        conn.execute("UPDATE app.tenant_connections SET host = 'stale.example' WHERE shop_id = 21")
        conn.execute(
            "INSERT INTO app.tenant_connections (shop_id, database_name, username, encrypted_password, "
            "encrypted_connection_string, host, port) VALUES (99, 'shop_99_db', 'shop_user_99', %s, %s, 'db', 5432)",
            (cipher.encrypt("x" * 12), cipher.encrypt("postgresql://shop_user_99:x@db:5432/shop_99_db")),
        )
    third = export_registry(setup.registry, setup.target, key, schema=SCHEMA)
    assert (third.inserted, third.updated, third.unchanged, third.not_in_registry) == ((), (21, 22), (23,), (99,))

    after = {r["shop_id"]: r for r in app_rows(setup.target)}
    unchanged = {r["shop_id"]: r for r in before}[23]
    assert after[23] == unchanged and after[99]["username"] == "shop_user_99"
    assert after[21]["host"] == setup.tenants[21].host and after[21]["created_at"] == before[0]["created_at"]
    opened = open_in_node([after[22]], key.reveal())[22]
    assert opened["password"] == new_password and opened["byUrl"] == {"role": setup.tenants[22].role, "db": setup.tenants[22].database}


def test_rows_under_another_app_key_are_refused_not_overwritten(setup: Setup) -> None:
    first, other = generate_key(), generate_key()
    export_registry(setup.registry, setup.target, Secret(first), schema=SCHEMA)
    before = app_rows(setup.target)
    with pytest.raises(DecryptionError) as refused:
        export_registry(setup.registry, setup.target, Secret(other), schema=SCHEMA)
    message = str(refused.value)
    assert "shop(s) 21, 22, 23" in message and "nothing was written" in message
    assert first not in message and other not in message
    assert app_rows(setup.target) == before


def test_the_app_key_is_read_by_the_apps_rules_in_python_and_node() -> None:
    raw = os.urandom(32)
    accepted = {
        raw.hex().upper(): raw,  # 64 hex (either case): the bytes
        base64.b64encode(raw).decode(): raw,  # 44: base64
        "g" * 64: hashlib.sha256(b"g" * 64).digest(),  # 64 characters that are not hex: hashed
        "x" * 40: hashlib.sha256(b"x" * 40).digest(),
    }
    refused = ["x" * 31, APP_DEFAULT_KEY, "!" * 44]
    node = run_module(KEY_BYTES, {"keys": [*accepted, *refused]})
    for (key, expected), seen in zip(accepted.items(), node[: len(accepted)], strict=True):
        assert app_key_bytes(Secret(key)) == expected
        assert seen == {"hex": expected.hex()}
    for key, seen in zip(refused, node[len(accepted):], strict=True):
        assert "error" in seen
        with pytest.raises(EncryptionKeyError) as error:
            app_key_bytes(Secret(key))
        assert key not in str(error.value) and "\n" not in str(error.value)


def test_nothing_secret_reaches_logs_results_or_errors(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    key = generate_key()
    secrets = [key] + [c.password.reveal() for c in setup.tenants.values()]
    with caplog.at_level(logging.DEBUG):
        result = export_registry(setup.registry, setup.target, Secret(key), schema=SCHEMA)
    assert "3 inserted" in caplog.text
    texts = [caplog.text, repr(result), result.summary(), repr(AppSecretCipher(Secret(key)))]

    # a table of another shape is refused in one line; one without a key on shop_id fails in one line
    with setup.target.connect() as conn:
        conn.execute("CREATE TABLE public.tenant_connections (shop_id integer, host text)")
        conn.execute(
            "CREATE TABLE public.keyless (LIKE app.tenant_connections INCLUDING DEFAULTS)"
        )
    with pytest.raises(ConfigurationError) as shape:
        export_registry(setup.registry, setup.target, Secret(key), schema="public")
    assert "lacks the app's column(s) database_name, username" in str(shape.value)
    with pytest.raises(ExportError) as failed:
        export_registry(setup.registry, setup.target, Secret(key), schema="public", table="keyless")
    assert "SQLSTATE 42P10" in str(failed.value) and "Nothing was written" in str(failed.value)
    assert rows(setup.target, "SELECT count(*) FROM public.keyless") == [(0,)]
    texts += [str(shape.value), str(failed.value)]
    for text in texts:
        assert "\n" not in text.strip() or text is caplog.text
        for secret in secrets:
            assert secret not in text
