"""Small helpers around psycopg used across the library."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.errors import UnexpectedResult


def one_row(conn: psycopg.Connection, query: str | bytes | sql.Composable, params: Any = None) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, `SELECT f()`); a missing row is a
    broken invariant, raised as an error an operator can report instead of an `assert`."""
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    if row is None:
        text = query.as_string(conn) if isinstance(query, sql.Composable) else str(query)
        raise UnexpectedResult(f"the query returned no row where one is always expected: {' '.join(text.split())[:200]}")
    return tuple(row)
