"""The tenant schema: a source table minus the tenant column, rendered as DDL from the catalog.

Rules (each one visible in `TenantSchema.notes` when it changes something):
- the tenant column goes; keys, unique constraints, foreign keys and plain indexes that contain it lose
  it (a composite key `(shop_id, id)` becomes `(id)`), because inside one shop's database it is constant;
- checks, exclusion constraints and expression/partial indexes that *use* the tenant column are left
  out: they cannot be rewritten without changing their meaning;
- foreign keys between tenant tables are kept; foreign keys to master tables (users, shops, packages)
  are dropped and their columns kept, so no value is lost;
- everything else arrives as the server printed it: user-defined types, identity and generated
  columns, defaults, collations, CHECKs, partial and unique indexes, quoted mixed-case names.

The rendering is deterministic text: it is the first tenant migration, and its checksum is recorded in
every tenant database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from psycopg import sql

from handyshop_migration.tenancy.engine.catalog import (
    Catalog,
    Column,
    ForeignKey,
    Index,
    SequenceOptions,
    Table,
    UserType,
)


def _text(composable: sql.Composable) -> str:
    return composable.as_string(None)


@dataclass(frozen=True)
class Named:
    """One DDL statement that creates a named object; `drop` removes it again."""

    name: str
    create: str
    drop: str


@dataclass(frozen=True)
class TenantForeignKey(Named):
    parent: str
    child: str


@dataclass(frozen=True)
class TenantTable:
    table: Table
    create: str
    post_create: tuple[str, ...]  # sequence ownership
    keys: tuple[Named, ...]  # primary key, unique and exclusion constraints (index-backed)
    checks: tuple[Named, ...]
    indexes: tuple[Named, ...]
    foreign_keys: tuple[TenantForeignKey, ...]  # where this table is the child

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.table.schema, self.table.name)


@dataclass(frozen=True)
class TenantSchema:
    catalog: Catalog
    prelude: tuple[str, ...]  # extensions, schemas, types, sequences
    tables: tuple[TenantTable, ...]
    notes: tuple[str, ...]

    def table(self, name: str) -> TenantTable:
        for t in self.tables:
            if t.name == name:
                return t
        self.catalog.table(name)  # raises the catalog's clear error
        raise KeyError(name)

    def foreign_keys_touching(self, name: str) -> tuple[TenantForeignKey, ...]:
        """Foreign keys where `name` is the child or the parent."""
        return tuple(fk for t in self.tables for fk in t.foreign_keys if name in (fk.child, fk.parent))

    def script(self) -> str:
        """The whole tenant schema as one SQL script (the first tenant migration)."""
        parts = [_text(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(self.catalog.tables[0].schema)))]
        parts += list(self.prelude)
        for t in self.tables:
            parts.append(t.create)
            parts.extend(t.post_create)
            parts.extend(n.create for n in t.keys)
            parts.extend(n.create for n in t.checks)
            parts.extend(n.create for n in t.indexes)
        for t in self.tables:
            parts.extend(fk.create for fk in t.foreign_keys)
        return ";\n".join(parts) + ";\n"


def _uses(expression: str | None, column: str) -> bool:
    if not expression:
        return False
    return re.search(rf'(?<![\w"]){re.escape(column)}(?![\w"])|"{re.escape(column)}"', expression) is not None


def _type_ddl(u: UserType) -> str:
    name = sql.Identifier(u.schema, u.name)
    if u.kind == "enum":
        return _text(sql.SQL("CREATE TYPE {} AS ENUM ({})").format(name, sql.SQL(", ").join(map(sql.Literal, u.labels))))
    if u.kind == "composite":
        attrs = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(a), sql.SQL(t)) for a, t in u.attributes)
        return _text(sql.SQL("CREATE TYPE {} AS ({})").format(name, attrs))
    parts = [sql.SQL("CREATE DOMAIN {} AS {}").format(name, sql.SQL(u.base_type or "text"))]
    if u.default is not None:
        parts.append(sql.SQL("DEFAULT {}").format(sql.SQL(u.default)))
    if u.not_null:
        parts.append(sql.SQL("NOT NULL"))
    for cname, definition in u.checks:
        parts.append(sql.SQL("CONSTRAINT {} {}").format(sql.Identifier(cname), sql.SQL(definition)))
    return _text(sql.SQL(" ").join(parts))


def _sequence_options(o: SequenceOptions) -> sql.Composable:
    return sql.SQL("START WITH {} INCREMENT BY {} MINVALUE {} MAXVALUE {} CACHE {}{}").format(
        sql.Literal(o.start),
        sql.Literal(o.increment),
        sql.Literal(o.minvalue),
        sql.Literal(o.maxvalue),
        sql.Literal(o.cache),
        sql.SQL(" CYCLE" if o.cycle else ""),
    )


def _column_ddl(c: Column) -> sql.Composable:
    parts: list[sql.Composable] = [sql.Identifier(c.name), sql.SQL(c.type)]
    if c.collation:
        parts.append(sql.SQL("COLLATE {}").format(sql.SQL(c.collation)))
    if c.identity is not None:
        parts.append(
            sql.SQL("GENERATED {} AS IDENTITY ({})").format(
                sql.SQL("ALWAYS" if c.identity.always else "BY DEFAULT"), _sequence_options(c.identity.options)
            )
        )
    elif c.generated is not None:
        kind = "VIRTUAL" if c.generated_kind == "virtual" else "STORED"
        parts.append(sql.SQL("GENERATED ALWAYS AS ({}) {}").format(sql.SQL(c.generated), sql.SQL(kind)))
    elif c.default is not None:
        parts.append(sql.SQL("DEFAULT {}").format(sql.SQL(c.default)))
    if not c.nullable:
        parts.append(sql.SQL("NOT NULL"))
    return sql.SQL(" ").join(parts)


def _columns(names: tuple[str, ...] | list[str]) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _add_constraint(table: Table, name: str, body: sql.Composable) -> Named:
    ident = sql.Identifier(table.schema, table.name)
    return Named(
        name=name,
        create=_text(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(ident, sql.Identifier(name), body)),
        drop=_text(sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(ident, sql.Identifier(name))),
    )


def _index(table: Table, ix: Index, notes: list[str]) -> Named | None:
    drop = _text(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(table.schema, ix.name)))
    if not ix.uses_tenant_column:
        return Named(ix.name, ix.definition, drop)
    tenant = table.tenant_column
    rebuildable = None not in ix.key_columns and not _uses(ix.predicate, tenant) and tenant not in ix.include_columns
    keys = [d for c, d in zip(ix.key_columns, ix.key_definitions, strict=True) if c != tenant]
    if not rebuildable or not keys:
        notes.append(f"index {ix.name} on {table.name} uses {tenant!r} in an expression or predicate: left out")
        return None
    body = sql.SQL("CREATE {}INDEX {} ON {} USING {} ({}){}{}").format(
        sql.SQL("UNIQUE " if ix.unique else ""),
        sql.Identifier(ix.name),
        sql.Identifier(table.schema, table.name),
        sql.Identifier(ix.method),
        sql.SQL(", ").join(map(sql.SQL, keys)),
        sql.SQL(" INCLUDE ({})").format(_columns(ix.include_columns)) if ix.include_columns else sql.SQL(""),
        sql.SQL(" WHERE {}").format(sql.SQL(ix.predicate)) if ix.predicate else sql.SQL(""),
    )
    notes.append(f"index {ix.name} on {table.name}: {tenant!r} removed from its key")
    return Named(ix.name, _text(body), drop)


def _foreign_key(table: Table, fk: ForeignKey, catalog: Catalog, notes: list[str]) -> TenantForeignKey | None:
    tenant = table.tenant_column
    if tenant in fk.columns:
        parent_tenant = catalog.table(fk.ref_table).tenant_column
        pairs = [(c, r) for c, r in zip(fk.columns, fk.ref_columns, strict=True) if c != tenant]
        if any(r == parent_tenant for _, r in pairs) or not pairs:
            notes.append(f"foreign key {fk.name} on {table.name} cannot be rewritten without {tenant!r}: left out")
            return None
        body: sql.Composable = sql.SQL("FOREIGN KEY ({}) REFERENCES {} ({}){} ON UPDATE {} ON DELETE {}{}").format(
            _columns([c for c, _ in pairs]),
            sql.Identifier(fk.ref_schema, fk.ref_table),
            _columns([r for _, r in pairs]),
            sql.SQL(" MATCH FULL" if fk.match_full else ""),
            sql.SQL(fk.on_update),
            sql.SQL(fk.on_delete),
            sql.SQL(
                (" DEFERRABLE INITIALLY DEFERRED" if fk.initially_deferred else " DEFERRABLE") if fk.deferrable else ""
            ),
        )
        notes.append(f"foreign key {fk.name} on {table.name}: {tenant!r} removed from the key")
    else:
        body = sql.SQL(fk.definition)
    named = _add_constraint(table, fk.name, body)
    return TenantForeignKey(named.name, named.create, named.drop, parent=fk.ref_table, child=table.name)


def _render_table(table: Table, catalog: Catalog, notes: list[str]) -> TenantTable:
    ident = sql.Identifier(table.schema, table.name)
    tenant = table.tenant_column
    create = _text(
        sql.SQL("CREATE TABLE {} (\n  {}\n)").format(
            ident, sql.SQL(",\n  ").join(_column_ddl(c) for c in table.tenant_columns)
        )
    )
    post = tuple(
        _text(
            sql.SQL("ALTER SEQUENCE {} OWNED BY {}").format(
                sql.Identifier(s.schema, s.name), sql.Identifier(table.schema, table.name, s.column)
            )
        )
        for s in table.sequences
        if s.owned
    )
    keys: list[Named] = []
    checks: list[Named] = []
    for con in ([table.primary_key] if table.primary_key else []) + list(table.constraints):
        if con.kind == "check":
            if tenant in con.columns:
                notes.append(f"check {con.name} on {table.name} uses {tenant!r}: left out")
                continue
            checks.append(_add_constraint(table, con.name, sql.SQL(con.definition)))
            continue
        if tenant not in con.columns:
            keys.append(_add_constraint(table, con.name, sql.SQL(con.definition)))
            continue
        remaining = [c for c in con.columns if c != tenant]
        if con.kind == "exclusion" or not remaining:
            notes.append(f"{con.kind} {con.name} on {table.name} uses {tenant!r}: left out")
            continue
        kind = "PRIMARY KEY" if con.kind == "primary key" else "UNIQUE"
        keys.append(_add_constraint(table, con.name, sql.SQL("{} ({})").format(sql.SQL(kind), _columns(remaining))))
        notes.append(f"{con.kind} {con.name} on {table.name}: {tenant!r} removed from the key")
    indexes = [n for n in (_index(table, ix, notes) for ix in table.indexes) if n is not None]
    fks = [f for f in (_foreign_key(table, fk, catalog, notes) for fk in table.foreign_keys) if f is not None]
    for fk in table.external_foreign_keys:
        if set(fk.columns) == {tenant}:
            continue  # the reference to the tenants' table goes with the tenant column
        notes.append(
            f"foreign key {fk.name} on {table.name} -> {fk.ref_table} (a master table) dropped; "
            f"column {', '.join(fk.columns)} kept"
        )
    return TenantTable(table, create, post, tuple(keys), tuple(checks), tuple(indexes), tuple(fks))


def render(catalog: Catalog) -> TenantSchema:
    notes: list[str] = list(catalog.notes)
    prelude: list[str] = []
    for ext in catalog.extensions:
        prelude.append(_text(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(ext))))
    for schema in sorted({t.schema for t in catalog.tables} | {u.schema for u in catalog.types}):
        if schema != "public":
            prelude.append(_text(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))))
    prelude.extend(_type_ddl(u) for u in catalog.types)
    seen: set[tuple[str, str]] = set()
    for t in catalog.tables:
        for s in t.sequences:
            if (s.schema, s.name) in seen:
                continue
            seen.add((s.schema, s.name))
            prelude.append(
                _text(
                    sql.SQL("CREATE SEQUENCE {} AS {} {}").format(
                        sql.Identifier(s.schema, s.name), sql.SQL(s.data_type), _sequence_options(s.options)
                    )
                )
            )
    tables = tuple(_render_table(t, catalog, notes) for t in catalog.tables)
    return TenantSchema(catalog, tuple(prelude), tables, tuple(notes))
