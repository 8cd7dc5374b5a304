"""Shops as the shared database knows them: the tenants to migrate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

# Ids are handed out by a sequence, but a shop whose transaction commits late can appear below the highest
# id already seen; re-reading a window below the cursor costs nothing and misses no such shop.
LATE_COMMIT_WINDOW = 100


@dataclass(frozen=True)
class Shop:
    id: int
    name: str


def list_shops(
    conn: psycopg.Connection,
    *,
    after: int | None = None,
    table: str = "shops",
    exclude: Sequence[int] = (),
    limit: int | None = None,
) -> list[Shop]:
    """Shops in id order; `after` reads only ids above it minus LATE_COMMIT_WINDOW (one index range scan)."""
    query = sql.SQL("SELECT id, name FROM {} WHERE id > %s AND NOT (id = ANY(%s)) ORDER BY id").format(
        sql.Identifier(table)
    )
    params: list[object] = [(after - LATE_COMMIT_WINDOW) if after is not None else -1, list(exclude)]
    if limit is not None:
        query = sql.SQL("{} LIMIT %s").format(query)
        params.append(limit)
    return [Shop(int(i), str(n)) for i, n in conn.execute(query, params).fetchall()]
