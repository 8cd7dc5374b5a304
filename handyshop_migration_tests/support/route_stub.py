"""A STUB of `handyshop_migration.route()` for the Node.js client tests, until the lead's real function lands.

Same signature and result as the routing contract of notes/architecture.md:
`handyshop_migration.route(p_shop_id bigint, p_kind text) RETURNS TABLE (target text, host text, port integer,
dbname text, role text, password_token text, version bigint)`; 'shared' rows carry NULLs but the version.
Where it routes comes from a table of its own, `handyshop_migration.route_stub` (set with `set_route`, which
bumps the shop's version); the tenant's address and password token come from the real registry table
(`handyshop_migration.tenant_connections`, the token exactly as the registry stored it). SECURITY DEFINER: the
application's role gets EXECUTE on it and nothing on the registry.

When the real route() exists, drop this module and install that one instead (its lifecycle call replaces
`set_route`); the writer and the tests' assertions do not change.
"""

from __future__ import annotations

from psycopg import sql

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.dsn import ConnectionSpec

_STUB = """
CREATE SCHEMA IF NOT EXISTS handyshop_migration;
CREATE TABLE IF NOT EXISTS handyshop_migration.route_stub (
    shop_id bigint PRIMARY KEY,
    reads text NOT NULL CHECK (reads IN ('shared', 'tenant')),
    writes text NOT NULL CHECK (writes IN ('shared', 'tenant')),
    version bigint NOT NULL
);
CREATE OR REPLACE FUNCTION handyshop_migration.route(p_shop_id bigint, p_kind text)
RETURNS TABLE (target text, host text, port integer, dbname text, role text, password_token text, version bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    v_target text := 'shared';
    v_version bigint := 0;
BEGIN
    IF p_kind IS NULL OR p_kind NOT IN ('read', 'write') THEN
        RAISE EXCEPTION 'route(): kind must be ''read'' or ''write'', not %', coalesce(p_kind, 'NULL')
            USING ERRCODE = '22023';
    END IF;
    SELECT CASE WHEN p_kind = 'write' THEN s.writes ELSE s.reads END, s.version INTO v_target, v_version
      FROM handyshop_migration.route_stub s WHERE s.shop_id = p_shop_id;
    IF NOT FOUND THEN
        v_target := 'shared';
        v_version := 0;
    END IF;
    IF v_target = 'shared' THEN
        RETURN QUERY SELECT 'shared'::text, NULL::text, NULL::integer, NULL::text, NULL::text, NULL::text, v_version;
        RETURN;
    END IF;
    RETURN QUERY SELECT 'tenant'::text, c.host, c.port, c.database, c.role, c.password_encrypted, v_version
      FROM handyshop_migration.tenant_connections c WHERE c.shop_id = p_shop_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'route(): shop % routes to its tenant database but has no registry entry', p_shop_id
            USING ERRCODE = 'P0002';
    END IF;
END
$fn$;
REVOKE ALL ON FUNCTION handyshop_migration.route(bigint, text) FROM PUBLIC;
"""


def install_route_stub(shared_admin: ConnectionSpec, *, app_role: str) -> None:
    """Create the stub in the shared database (the registry table must exist); `app_role` may call it."""
    with shared_admin.connect() as conn, conn.transaction():
        conn.execute(_STUB.encode())
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA handyshop_migration TO {}").format(sql.Identifier(app_role)))
        conn.execute(
            sql.SQL("GRANT EXECUTE ON FUNCTION handyshop_migration.route(bigint, text) TO {}").format(
                sql.Identifier(app_role)
            )
        )


def set_route(shared_admin: ConnectionSpec, shop_id: int, target: str) -> int:
    """Route the shop's reads and writes to 'shared' or 'tenant'; returns its new version."""
    with shared_admin.connect() as conn, conn.transaction():
        (version,) = one_row(
            conn,
            "INSERT INTO handyshop_migration.route_stub AS s (shop_id, reads, writes, version) "
            "VALUES (%s, %s, %s, 1) ON CONFLICT (shop_id) DO UPDATE "
            "SET reads = EXCLUDED.reads, writes = EXCLUDED.writes, version = s.version + 1 RETURNING version",
            (shop_id, target, target),
        )
    return int(version)
