"""Shops as the shared database knows them: the tenants to migrate, read from the catalog's tenants table
(`shops(id, name)` in Handyshop, `companies(id, name)`, `store(store_id)` … elsewhere)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.engine.catalog import TenantsTable

# Ids are handed out by a sequence, but a shop whose transaction commits late can appear below the highest
# id already seen; re-reading a window below the cursor costs nothing and misses no such shop.
LATE_COMMIT_WINDOW = 100


@dataclass(frozen=True)
class Shop:
    id: int
    name: str


def list_shops(
    conn: psycopg.Connection,
    tenants: TenantsTable,
    *,
    after: int | None = None,
    exclude: Sequence[int] = (),
    limit: int | None = None,
) -> list[Shop]:
    """Shops in id order; `after` reads only ids above it minus LATE_COMMIT_WINDOW (one index range scan).
    A tenants table without a name column gives empty names."""
    key = sql.Identifier(tenants.key)
    name = sql.SQL("{}::text").format(sql.Identifier(tenants.name)) if tenants.name else sql.SQL("''")
    query = sql.SQL("SELECT {key}, {name} FROM {table} WHERE {key} > %s AND NOT ({key} = ANY(%s)) ORDER BY 1").format(
        key=key, name=name, table=sql.Identifier(tenants.schema, tenants.table)
    )
    params: list[object] = [(after - LATE_COMMIT_WINDOW) if after is not None else -1, list(exclude)]
    if limit is not None:
        query = sql.SQL("{} LIMIT %s").format(query)
        params.append(limit)
    return [Shop(int(i), str(n or "")) for i, n in conn.execute(query, params).fetchall()]
