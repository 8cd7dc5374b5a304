"""The PL/pgSQL of capture lives in this package's `.sql` files; here they are read and the per-table
functions generated from them (names only through `sql.Identifier`/`sql.Literal`)."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.resources import files

from psycopg import sql

from handyshop_migration.tenancy.engine.catalog import Table


@cache
def text(name: str) -> str:
    """The text of one of this package's `.sql` files."""
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


def function_name(table: Table, prefix: str) -> str:
    """A per-table function name: readable, unique per (schema, table), at most 63 bytes."""
    digest = hashlib.sha256(f"{table.schema}.{table.name}".encode()).hexdigest()[:10]
    stem = "".join(ch if ch.isascii() and (ch.isalnum() or ch == "_") else "_" for ch in table.name.lower())
    return f"{prefix}_{stem[:36]}_{digest}"  # room for a 4-byte suffix (_ins, _upd, _del)


def key_object(columns: tuple[str, ...], row: str) -> sql.Composable:
    """`jsonb_build_object('k1', ROW.k1, ...)`: the key of NEW or OLD ('{}' for a table without a key)."""
    if not columns:
        return sql.SQL("'{{}}'::jsonb").format()
    parts: list[sql.Composable] = []
    for c in columns:
        parts += [sql.Literal(c), sql.SQL("{}.{}").format(sql.SQL(row), sql.Identifier(c))]
    return sql.SQL("pg_catalog.jsonb_build_object({})").format(sql.SQL(", ").join(parts))


def key_changed(columns: tuple[str, ...]) -> sql.Composable:
    if not columns:
        return sql.SQL("false")
    return sql.SQL(" OR ").join(
        sql.SQL("OLD.{c} IS DISTINCT FROM NEW.{c}").format(c=sql.Identifier(c)) for c in columns
    )


def event_functions(schema: str, base: str) -> dict[str, sql.Identifier]:
    """The shared side's three per-event functions of one table (see shared_capture.sql)."""
    return {
        f"{event}_function": sql.Identifier(schema, f"{base}_{event[:3]}") for event in ("insert", "update", "delete")
    }


def capture_function(template: str, function: sql.Identifier | dict[str, sql.Identifier], table: Table) -> sql.Composed:
    """The CREATE OR REPLACE FUNCTION(s) of one table from `shared_capture.sql` (a dict of the per-event
    names) or `tenant_capture.sql` (one name)."""
    keys = table.key_columns
    names = function if isinstance(function, dict) else {"function": function}
    return sql.SQL(text(template)).format(
        **names,
        table=sql.Literal(table.name),
        tenant_column=sql.Identifier(table.tenant_column),
        new_key=key_object(keys, "NEW"),
        old_key=key_object(keys, "OLD"),
        key_changed=key_changed(keys),
    )
