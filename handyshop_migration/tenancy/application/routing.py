"""Where each shop's reads and writes go: one SQL function any application can call, and its Python client.

The answer comes from the shop's lifecycle record (`tenancy.lifecycle`: `reads`, `writes`, `version`) and
the registry (where the tenant database is, which role, the encrypted password), both in the control
database. The function is the contract, so that an application in any language follows its shops the
same way:

    SELECT * FROM handyshop_migration.route(5, 'write');
    -- target | host | port | dbname | role | password_token | version
    -- 'shared' (connect to the shared database as you do today) or 'tenant' (connect there)

- `target` 'tenant' comes with the tenant database's host, port, name and the application role, and
  `password_token`: the registry's token `v1.<key id>.<nonce>.<ciphertext+tag>` (base64url, AES-256-GCM,
  key = the 32 bytes of the 64-hex TENANT_ENCRYPTION_KEY, associated data
  `b"handyshop-migration/credential/v1\\x00tenant-credential:shop:<id>"`). README "Routing" shows the
  decryption in Node.js.
- Reads of a shop in `reads_rollout` with reads 'rollout' follow the global percentage: the shop reads from
  its tenant when `(shop_id × 2654435761) mod 2^32 mod 100` is below it (the real app's rule).
- `version` changes whenever the shop's route changes: cache a route by (shop, version) and re-ask on
  any refused write.
- A write refused with SQLSTATE HS001 means the shop has moved or is moving: ask again and retry.

The function is SECURITY DEFINER (an application needs no access to the control tables themselves) with a
pinned search_path; EXECUTE is granted to nobody by default: `GRANT USAGE ON SCHEMA handyshop_migration, EXECUTE
ON FUNCTION handyshop_migration.route(bigint, text) TO <app role>`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.application.encryption import CredentialCipher
from handyshop_migration.tenancy.application.registry import TABLE as REGISTRY_TABLE
from handyshop_migration.tenancy.application.registry import credential_context
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConfigurationError
from handyshop_migration.tenancy.lifecycle import READ_ROLLOUT_PERCENT, read_bucket
from handyshop_migration.tenancy.names import CONTROL_SCHEMA, control
from handyshop_migration.tenancy.secrets import Secret

Intent = Literal["read", "write"]

_FUNCTION = """
CREATE OR REPLACE FUNCTION {route}(p_shop_id bigint, p_kind text)
RETURNS TABLE (target text, host text, port integer, dbname text, role text, password_token text, version bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    l record;
    percent integer;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('read', 'write') THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = format('route(%s, %L): kind must be ''read'' or ''write''',
                                                                  p_shop_id, p_kind);
    END IF;
    SELECT s.reads, s.writes, s.version INTO l FROM {lifecycle} s WHERE s.shop_id = p_shop_id;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'shared'::text, NULL::text, NULL::integer, NULL::text, NULL::text, NULL::text, 0::bigint;
        RETURN;
    END IF;
    IF p_kind = 'write' THEN
        target := l.writes;
    ELSIF l.reads = 'rollout' THEN
        SELECT coalesce(max(value::integer), 0) INTO percent FROM {settings} WHERE key = {percent_key};
        target := CASE WHEN ((p_shop_id::numeric * 2654435761) % 4294967296) % 100 < percent
                       THEN 'tenant' ELSE 'shared' END;
    ELSE
        target := l.reads;
    END IF;
    version := l.version;
    IF target = 'tenant' THEN
        SELECT c.host, c.port, c.database, c.role, c.password_encrypted
          INTO host, port, dbname, role, password_token
          FROM {registry} c WHERE c.shop_id = p_shop_id;
    END IF;
    RETURN NEXT;
END
$fn$;
REVOKE ALL ON FUNCTION {route}(bigint, text) FROM PUBLIC;
"""


def install_route_function(conn: psycopg.Connection) -> None:
    """Create (or replace) `handyshop_migration.route()`; needs the lifecycle and registry tables."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('handyshop_migration.route'))")
        conn.execute(
            sql.SQL(_FUNCTION).format(
                route=control("route"),
                lifecycle=control("shop_lifecycle"),
                settings=control("settings"),
                registry=control(REGISTRY_TABLE),
                percent_key=sql.Literal(READ_ROLLOUT_PERCENT),
            )
        )


def grant_route(conn: psycopg.Connection, role: str) -> None:
    """Let an application role call route() (and nothing else of the control schema)."""
    with conn.transaction():
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}; GRANT EXECUTE ON FUNCTION {}(bigint, text) TO {}").format(
                sql.Identifier(CONTROL_SCHEMA), sql.Identifier(role), control("route"), sql.Identifier(role)
            )
        )


@dataclass(frozen=True)
class Route:
    shop_id: int
    intent: str
    target: str  # "shared" or "tenant"
    spec: ConnectionSpec  # where to connect (holds a password: do not log it; its repr does not show it)
    version: int

    def conninfo(self) -> str:
        return self.spec.conninfo()


class RouteResolver:
    """What a Python application calls for a shop's connection: `route()` in the control database, cached
    for `ttl` seconds per shop. Thread-safe. On a write refused with SQLSTATE HS001, call
    `invalidate(shop_id)` and resolve again."""

    def __init__(
        self, control: ConnectionSpec, cipher: CredentialCipher, shared: ConnectionSpec, *, ttl: float = 2.0
    ) -> None:
        if not ttl >= 0:
            raise ConfigurationError(f"route cache ttl must be >= 0 seconds, got {ttl!r}")
        self.control = control
        self.cipher = cipher
        self.shared = shared
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, str], tuple[float, Route]] = {}
        self._conn: psycopg.Connection | None = None

    def invalidate(self, shop_id: int | None = None) -> None:
        with self._lock:
            if shop_id is None:
                self._cache.clear()
            else:
                for key in [k for k in self._cache if k[0] == shop_id]:
                    del self._cache[key]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _ask(self, shop_id: int, intent: str) -> tuple[str, str | None, int | None, str | None, str | None, str | None, int]:
        with self._lock:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = self.control.connect(autocommit=True)
            row = self._conn.execute(sql.SQL("SELECT * FROM {}(%s, %s)").format(control("route")), (shop_id, intent)).fetchone()
        if row is None:  # the function always returns one row
            raise ConfigurationError(f"route({shop_id}, {intent!r}) returned nothing; reinstall the route function.")
        return row  # type: ignore[return-value]

    def resolve(self, shop_id: int, intent: Intent) -> Route:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get((shop_id, intent))
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        target, host, port, dbname, role, token, version = self._ask(shop_id, intent)
        if target == "tenant":
            if not (host and port and dbname and role and token):
                raise ConfigurationError(f"shop {shop_id} routes to its tenant but has no registry entry; provision it.")
            password = self.cipher.decrypt(token, context=credential_context(shop_id))
            spec = ConnectionSpec(host=host, port=int(port), user=role, password=Secret(password), dbname=dbname)
        else:
            spec = self.shared
        route = Route(shop_id, intent, target, spec, int(version))
        with self._lock:
            self._cache[(shop_id, intent)] = (now, route)
        return route


__all__ = ["Intent", "Route", "RouteResolver", "grant_route", "install_route_function", "read_bucket"]
