"""Small helpers around psycopg used across the library."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.errors import PrivilegeMissing, UnexpectedResult


def one_row(conn: psycopg.Connection, query: str | bytes | sql.Composable, params: Any = None) -> tuple[Any, ...]:
    """The row of a query that always returns exactly one (an aggregate, `SELECT f()`); a missing row is a
    broken invariant, raised as an error an operator can report instead of an `assert`."""
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    if row is None:
        text = query.as_string(conn) if isinstance(query, sql.Composable) else str(query)
        raise UnexpectedResult(f"the query returned no row where one is always expected: {' '.join(text.split())[:200]}")
    return tuple(row)


@contextmanager
def replaying(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """A transaction whose writes are a replay of rows that already exist elsewhere (a copy, a sync, a
    copy-back, a retirement or its restore): `SET LOCAL session_replication_role = replica`.

    Ordinary (origin) triggers do not fire in replica mode: the application's own triggers carried into a
    database (a `last_update` trigger would rewrite the copied rows), our capture and guard triggers (a
    replay is neither a change to capture nor a write to refuse) and the foreign-key triggers (the rows are
    a faithful image of rows that were consistent at the origin; checks would only cost). Nothing else
    changes, and nothing outlives the transaction. Nested in a caller's transaction it is a savepoint, and
    the previous setting is back when the block ends.

    The role needs superuser or `GRANT SET ON PARAMETER session_replication_role` (PostgreSQL 15+)."""
    nested = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        previous = str(one_row(conn, "SELECT current_setting('session_replication_role')")[0])
        try:
            with conn.transaction():
                conn.execute("SET LOCAL session_replication_role = replica")
        except psycopg.errors.InsufficientPrivilege:
            raise PrivilegeMissing(
                f"role {conn.info.user} may not set session_replication_role, which replaying rows into "
                f"{conn.info.dbname} needs; run as a superuser: GRANT SET ON PARAMETER session_replication_role "
                f"TO {conn.info.user} (PostgreSQL 15+)."
            ) from None
        yield conn
        if nested and previous != "replica":
            conn.execute(sql.SQL("SET LOCAL session_replication_role = {}").format(sql.Literal(previous)))
