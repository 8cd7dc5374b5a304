"""The tenant schema: the source's tables minus the tenant column, and everything around them the
application runs on, rendered as DDL from the catalog.

Rules (each change is a `CatalogFinding`: object, what was done, why — stored in the catalog by inspect,
printed by it, and reported by phase 0; nothing is left out silently):
- the tenant column goes; keys, unique constraints, foreign keys and plain indexes that contain it lose
  it (a composite key `(shop_id, id)` becomes `(id)`), because inside one shop's database it is constant;
- an index, view or materialized view whose text names the tenant column is rewritten on its parse tree
  (`rewrite`): a `tenant = K` condition makes it an object of tenant K's database only (without the
  condition; absent elsewhere), `a.tenant = b.tenant` and the column as an output/GROUP BY/key item go;
  what names it otherwise is left out;
- checks and exclusion constraints that use the tenant column are left out: they cannot be rewritten
  without changing their meaning;
- foreign keys between tenant tables are kept; foreign keys to tables that stay shared are dropped and
  their columns kept, so no value is lost;
- functions, procedures and aggregates are carried as the server defines them; one whose body names the
  tenant column is carried all the same and reported (it fails when called until rewritten: a trigger
  that stops working loudly is better than one that silently disappears); one whose signature needs a
  table that stays shared is left out;
- views reading only tenant tables (and carried views) are carried; views reading a shared table are
  left out; materialized views are created WITH NO DATA and refreshed after the copy (`copy`);
- triggers on tenant tables are carried with their enabled state; ordinary triggers do not fire in
  replica-mode sessions, so the copy and the sync do not fire them, and they are active once the shop is
  live; an ALWAYS or REPLICA trigger would fire during the copy and is reported;
- row-level security policies are carried unless they name the tenant column (meaningless in a database
  of one tenant); event triggers are reported (creating and owning one needs a superuser, tenant
  databases belong to the tenant role);
- comments on tables, columns, types and carried objects are carried; extensions are created (IF NOT
  EXISTS, in their schema);
- everything else arrives as the server printed it: user-defined types, identity and generated columns,
  defaults, collations, CHECKs, partial and unique indexes, quoted mixed-case names.

The rendering is deterministic text: it is the first tenant migration, and its checksum is recorded in
every tenant database. Objects of one tenant only are a second text per shop (`shop_script`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from psycopg import sql

from handyshop_migration.tenancy.engine import rewrite
from handyshop_migration.tenancy.engine.catalog import (
    Catalog,
    CatalogFinding,
    Column,
    ForeignKey,
    Index,
    SchemaObject,
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
    prelude: tuple[str, ...]  # schemas, extensions, types, sequences, functions that tables may use
    tables: tuple[TenantTable, ...]
    findings: tuple[CatalogFinding, ...]
    objects: tuple[str, ...] = ()  # after the tables: functions, aggregates, views, triggers, policies, comments
    shop_objects: dict[int, tuple[str, ...]] = field(default_factory=dict)  # statements of one tenant only
    materialized_views: tuple[str, ...] = ()  # qualified names, refreshed after a copy
    shop_materialized_views: dict[int, tuple[str, ...]] = field(default_factory=dict)
    triggered_tables: frozenset[str] = frozenset()  # tables that get triggers of the source

    @property
    def notes(self) -> tuple[str, ...]:
        """One line per finding (and the catalog's own remarks), as inspect prints them."""
        return tuple(self.catalog.notes) + tuple(f.line() for f in self.findings)

    def table(self, name: str) -> TenantTable:
        for t in self.tables:
            if t.name == name:
                return t
        self.catalog.table(name)  # raises the catalog's clear error
        raise KeyError(name)

    def foreign_keys_touching(self, name: str) -> tuple[TenantForeignKey, ...]:
        """Foreign keys where `name` is the child or the parent."""
        return tuple(fk for t in self.tables for fk in t.foreign_keys if name in (fk.child, fk.parent))

    def _header(self) -> list[str]:
        return [
            _text(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(self.catalog.schema))),
            # as pg_dump does: function bodies may name objects created later in the script
            "SET LOCAL check_function_bodies = off",
        ]

    def script(self) -> str:
        """The whole tenant schema as one SQL script (the first tenant migration)."""
        parts = self._header() + list(self.prelude)
        for t in self.tables:
            parts.append(t.create)
            parts.extend(t.post_create)
            parts.extend(n.create for n in t.keys)
            parts.extend(n.create for n in t.checks)
            parts.extend(n.create for n in t.indexes)
        for t in self.tables:
            parts.extend(fk.create for fk in t.foreign_keys)
        parts.extend(self.objects)
        return ";\n".join(parts) + ";\n"

    def shop_script(self, shop_id: int) -> str:
        """The objects of tenant `shop_id` only (a partial index or view whose condition names it); "" if none."""
        statements = self.shop_objects.get(shop_id, ())
        if not statements:
            return ""
        return ";\n".join(self._header() + list(statements)) + ";\n"

    def refresh_targets(self, shop_id: int) -> tuple[str, ...]:
        """Materialized views to refresh in `shop_id`'s database after its rows are in."""
        return self.materialized_views + self.shop_materialized_views.get(shop_id, ())


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


class _Findings:
    def __init__(self) -> None:
        self.items: list[CatalogFinding] = []

    def add(self, obj: str, action: str, reason: str) -> None:
        self.items.append(CatalogFinding(obj, action, reason))


def _index(table: Table, ix: Index, found: _Findings) -> tuple[Named | None, int | None]:
    """The index as a tenant database has it, and the tenant it belongs to (None: every tenant)."""
    drop = _text(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(table.schema, ix.name)))
    if not ix.uses_tenant_column:
        return Named(ix.name, ix.definition, drop), None
    tenant = table.tenant_column
    label = f"index {ix.name} on {table.name}"
    rebuildable = None not in ix.key_columns and tenant not in ix.include_columns
    keys = [d for c, d in zip(ix.key_columns, ix.key_definitions, strict=True) if c != tenant]
    pred = rewrite.predicate(ix.predicate, tenant)
    if not rebuildable or not keys or pred.problem:
        why = pred.problem or (f"{tenant!r} is its only key" if not keys else f"uses {tenant!r} in an expression")
        found.add(label, "left out", f"{why}; tenant databases have no {tenant}")
        return None, None
    body = sql.SQL("CREATE {}INDEX {} ON {} USING {} ({}){}{}").format(
        sql.SQL("UNIQUE " if ix.unique else ""),
        sql.Identifier(ix.name),
        sql.Identifier(table.schema, table.name),
        sql.Identifier(ix.method),
        sql.SQL(", ").join(map(sql.SQL, keys)),
        sql.SQL(" INCLUDE ({})").format(_columns(ix.include_columns)) if ix.include_columns else sql.SQL(""),
        sql.SQL(" WHERE {}").format(sql.SQL(pred.sql)) if pred.sql else sql.SQL(""),
    )
    if pred.tenant is not None:
        found.add(label, f"only in tenant {pred.tenant}",
                  f"its predicate names {tenant} = {pred.tenant}: created in that tenant's database without the "
                  "condition, absent from the others")
    elif len(keys) != len(ix.key_columns):
        found.add(label, "rewritten", f"{tenant!r} removed from its key")
    else:
        found.add(label, "rewritten", f"{tenant!r} removed from its predicate (always true in a tenant database)")
    return Named(ix.name, _text(body), drop), pred.tenant


def _foreign_key(table: Table, fk: ForeignKey, catalog: Catalog, found: _Findings) -> TenantForeignKey | None:
    tenant = table.tenant_column
    if tenant in fk.columns:
        parent_tenant = catalog.table(fk.ref_table).tenant_column
        pairs = [(c, r) for c, r in zip(fk.columns, fk.ref_columns, strict=True) if c != tenant]
        if any(r == parent_tenant for _, r in pairs) or not pairs:
            found.add(f"foreign key {fk.name} on {table.name}", "left out", f"cannot be rewritten without {tenant!r}")
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
        found.add(f"foreign key {fk.name} on {table.name}", "rewritten", f"{tenant!r} removed from the key")
    else:
        body = sql.SQL(fk.definition)
    named = _add_constraint(table, fk.name, body)
    return TenantForeignKey(named.name, named.create, named.drop, parent=fk.ref_table, child=table.name)


def _render_table(
    table: Table, catalog: Catalog, found: _Findings, shop: dict[int, list[str]]
) -> TenantTable:
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
        label = f"{con.kind} {con.name} on {table.name}"
        if con.kind == "check":
            if tenant in con.columns:
                found.add(label, "left out", f"uses {tenant!r}, which tenant databases do not have")
                continue
            checks.append(_add_constraint(table, con.name, sql.SQL(con.definition)))
            continue
        if tenant not in con.columns:
            keys.append(_add_constraint(table, con.name, sql.SQL(con.definition)))
            continue
        remaining = [c for c in con.columns if c != tenant]
        if con.kind == "exclusion" or not remaining:
            found.add(label, "left out", f"uses {tenant!r}, which tenant databases do not have")
            continue
        kind = "PRIMARY KEY" if con.kind == "primary key" else "UNIQUE"
        keys.append(_add_constraint(table, con.name, sql.SQL("{} ({})").format(sql.SQL(kind), _columns(remaining))))
        found.add(label, "rewritten", f"{tenant!r} removed from the key")
    indexes: list[Named] = []
    for ix in table.indexes:
        named, only = _index(table, ix, found)
        if named is None:
            continue
        if only is None:
            indexes.append(named)
        else:
            shop.setdefault(only, []).append(named.create)
    fks = [f for f in (_foreign_key(table, fk, catalog, found) for fk in table.foreign_keys) if f is not None]
    for fk in table.external_foreign_keys:
        if set(fk.columns) == {tenant}:
            found.add(f"foreign key {fk.name} on {table.name}", "left out",
                      f"the reference to the tenants table {fk.ref_table} goes with the tenant column {tenant}")
            continue
        found.add(
            f"foreign key {fk.name} on {table.name}",
            "left out",
            f"references {fk.ref_table}, which stays in the shared database; column {', '.join(fk.columns)} kept",
        )
    return TenantTable(table, create, post, tuple(keys), tuple(checks), tuple(indexes), tuple(fks))


# -- objects besides tables ---------------------------------------------------------------------------

_COMMENT_KINDS = {
    "function": "FUNCTION",
    "procedure": "PROCEDURE",
    "aggregate": "AGGREGATE",
    "view": "VIEW",
    "materialized view": "MATERIALIZED VIEW",
    "index": "INDEX",
}


def _object_ident(o: SchemaObject) -> str:
    """The object's name as COMMENT ON / REFRESH write it: quoted, qualified, with arguments for routines."""
    if "(" in o.name:
        base, args = o.name.split("(", 1)
        return _text(sql.Identifier(o.schema, base)) + "(" + args
    return _text(sql.Identifier(o.schema, o.name))


def _comment(o: SchemaObject) -> str | None:
    if o.comment is None:
        return None
    if o.kind in ("trigger", "policy"):
        target = sql.SQL("{} {} ON {}").format(
            sql.SQL(o.kind.upper()), sql.Identifier(o.name), sql.Identifier(o.schema, o.table or "")
        )
    else:
        target = sql.SQL("{} {}").format(sql.SQL(_COMMENT_KINDS[o.kind]), sql.SQL(_object_ident(o)))
    return _text(sql.SQL("COMMENT ON {} IS {}").format(target, sql.Literal(o.comment)))


def _stay(names: list[str]) -> str:
    return "which stays in the shared database" if len(names) == 1 else "which stay in the shared database"


def _names(text: str, name: str) -> bool:
    """Whether SQL text names `name` as a word (quoted or not)."""
    return re.search(rf'(?<![\w$"."]){re.escape(name)}(?![\w$"])|"{re.escape(name)}"', text) is not None


def _order(objects: list[SchemaObject], deps: dict[str, set[str]]) -> list[SchemaObject]:
    """Dependencies first (among `objects`), otherwise in catalog order."""
    keys = {o.key for o in objects}
    done: set[str] = set()
    out: list[SchemaObject] = []
    pending = list(objects)
    while pending:
        ready = [o for o in pending if not ((deps.get(o.key, set()) & keys) - done - {o.key})]
        if not ready:  # a cycle (possible among functions with string bodies): their text does not need order
            ready = pending[:1]
        out.extend(ready)
        done |= {o.key for o in ready}
        pending = [o for o in pending if o.key not in done]
    return out


class _Objects:
    """Decides, object by object, what a tenant database gets."""

    def __init__(self, catalog: Catalog, found: _Findings) -> None:
        self.catalog = catalog
        self.found = found
        self.tc = catalog.tenant_column
        self.tables = {f"{t.schema}.{t.name}" for t in catalog.tables}
        self.by_key = {o.key: o for o in catalog.objects}
        self.relations = {
            f"{o.schema}.{o.name}": o.key for o in catalog.objects if o.kind in ("view", "materialized view")
        }
        self.shared_names = {t.name for t in catalog.shared_tables} | set(catalog.master_tables)
        self.left: dict[str, str] = {}  # key -> why
        self.only: dict[str, int] = {}  # key -> the tenant it belongs to
        self.text: dict[str, str] = {}  # key -> statement(s) creating it

    def deps(self, o: SchemaObject) -> set[str]:
        out = {c for c in o.calls if c in self.by_key}
        out |= {self.relations[r] for r in o.reads if r in self.relations}
        return out

    def leave(self, o: SchemaObject, why: str) -> None:
        self.left[o.key] = why
        self.found.add(o.label, "left out", why)

    def missing_dependency(self, o: SchemaObject) -> str | None:
        for dep in sorted(self.deps(o)):
            if dep in self.left:
                return f"needs {self.by_key[dep].label}, which is left out"
        return None

    def pinned(self, o: SchemaObject) -> int | None | str:
        """The tenant the object's dependencies pin it to; "conflict" when they pin it to several."""
        pins = {self.only[d] for d in self.deps(o) if d in self.only}
        if len(pins) > 1:
            return "conflict"
        return next(iter(pins), None)

    # -- per kind ----------------------------------------------------------------------------------------

    def routine(self, o: SchemaObject) -> None:
        shared = [r for r in o.reads if r not in self.tables]
        if o.options and o.options[0].startswith("unrendered="):
            self.leave(o, o.options[0].split("=", 1)[1])
        elif shared:
            self.leave(o, f"its signature or body needs {', '.join(shared)}, {_stay(shared)}")
        elif (why := self.missing_dependency(o)) is not None:
            self.leave(o, why)
        else:
            self.text[o.key] = o.definition.strip().rstrip(";")
            body = o.definition.split("$", 1)[-1] if o.kind != "aggregate" else ""
            named = sorted(t for t in self.shared_names if _names(body, t))
            if named:
                self.found.add(
                    o.label,
                    "carried, reads a shared table",
                    f"its body names {', '.join(named)}, {_stay(named)}: it fails when called in a tenant "
                    "database until it is there too",
                )
            if o.tenant_references:
                self.found.add(
                    o.label,
                    "carried, names the tenant column",
                    f"its body names {self.tc}, which tenant databases do not have: it fails when called until "
                    f"rewritten without {self.tc} in a tenant migration (0002_….sql)",
                )

    def view(self, o: SchemaObject) -> None:
        shared = [r for r in o.reads if r not in self.tables and r not in self.relations]
        if shared:
            return self.leave(o, f"reads {', '.join(shared)}, {_stay(shared)}")
        if (why := self.missing_dependency(o)) is not None:
            return self.leave(o, why)
        query = o.definition.strip().rstrip(";")
        pin = self.pinned(o)
        if o.tenant_references:
            r = rewrite.view(query, self.tc)
            if r.problem:
                return self.leave(o, f"{r.problem}; tenant databases have no {self.tc}")
            query = r.sql or query
            if r.tenant is not None:
                if pin not in (None, r.tenant):
                    return self.leave(o, "its condition and its dependencies name different tenants")
                pin = r.tenant
                self.found.add(o.label, f"only in tenant {r.tenant}",
                               f"its condition names {self.tc} = {r.tenant}: created in that tenant's database "
                               "without the condition, absent from the others")
            else:
                self.found.add(o.label, "rewritten", f"{self.tc} removed (output column, joins, grouping)")
        if pin == "conflict":
            return self.leave(o, "it depends on objects of different tenants")
        options = [x for x in o.options if not x.startswith("enabled=")]
        with_options = f" WITH ({', '.join(options)})" if options else ""
        if o.kind == "view":
            self.text[o.key] = f"CREATE VIEW {_object_ident(o)}{with_options} AS\n{query}"
        else:
            self.text[o.key] = f"CREATE MATERIALIZED VIEW {_object_ident(o)}{with_options} AS\n{query}\nWITH NO DATA"
        if isinstance(pin, int):
            self.only[o.key] = pin

    def matview_index(self, o: SchemaObject) -> None:
        if (why := self.missing_dependency(o)) is not None:
            return self.leave(o, why)
        r = rewrite.index(o.definition, self.tc)
        if r.problem:
            return self.leave(o, f"{r.problem}; tenant databases have no {self.tc}")
        if r.changed:
            self.found.add(o.label, "rewritten", f"{self.tc} removed from its key")
        self.text[o.key] = r.sql or o.definition
        pin = self.pinned(o)
        if isinstance(pin, int):
            self.only[o.key] = pin

    def trigger(self, o: SchemaObject) -> None:
        if o.tenant_references:
            return self.leave(o, f"its WHEN condition or UPDATE OF list names {self.tc}, which tenant databases do not have")
        if (why := self.missing_dependency(o)) is not None:
            return self.leave(o, why)
        statements = [o.definition]
        enabled = dict(x.split("=", 1) for x in o.options).get("enabled", "O")
        action = {"D": "DISABLE", "R": "ENABLE REPLICA", "A": "ENABLE ALWAYS"}.get(enabled)
        if action:
            statements.append(_text(sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                sql.Identifier(o.schema, o.table or ""), sql.SQL(action), sql.Identifier(o.name))))
        if enabled in ("R", "A"):
            self.found.add(o.label, "carried, fires during the copy",
                           f"it is {action}: it fires in replica-mode sessions too, so the copy and the sync fire it")
        self.text[o.key] = ";\n".join(statements)

    def policy(self, o: SchemaObject) -> None:
        if o.tenant_references:
            return self.leave(o, f"it compares {self.tc}, which is meaningless in a database of one tenant")
        self.text[o.key] = o.definition

    def decide(self) -> None:
        routines = [o for o in self.catalog.objects if o.kind in ("function", "procedure", "aggregate")]
        views = [o for o in self.catalog.objects if o.kind in ("view", "materialized view")]
        deps = {o.key: self.deps(o) for o in self.catalog.objects}
        for o in _order(routines, deps):
            if o.owner_extension is None:
                self.routine(o)
        for o in _order(views, deps):
            if o.owner_extension is None:
                self.view(o)
        for o in self.catalog.objects:
            if o.kind == "index":
                self.matview_index(o)
            elif o.kind == "trigger":
                self.trigger(o)
            elif o.kind == "policy":
                self.policy(o)
            elif o.kind == "event trigger":
                self.leave(o, "creating and owning an event trigger needs a superuser; tenant databases and their "
                              "objects belong to the tenant role (it stays in the shared database)")

    def emit(self, kinds: Iterable[str], only_tables_free: bool | None = None) -> list[SchemaObject]:
        deps = {o.key: self.deps(o) for o in self.catalog.objects}
        chosen = [o for o in self.catalog.objects if o.kind in kinds and o.key in self.text]
        if only_tables_free is not None:
            chosen = [o for o in chosen if (not any(r in self.tables for r in o.reads)) == only_tables_free]
        return _order(chosen, deps)


def render(catalog: Catalog) -> TenantSchema:
    found = _Findings()
    prelude: list[str] = []
    for schema in sorted({t.schema for t in catalog.tables} | {u.schema for u in catalog.types}
                         | {e.schema for e in catalog.extensions}):
        if schema != "public":
            prelude.append(_text(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))))
    for ext in catalog.extensions:
        prelude.append(_text(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}").format(
            sql.Identifier(ext.name), sql.Identifier(ext.schema))))
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
    shop: dict[int, list[str]] = {}
    tables = tuple(_render_table(t, catalog, found, shop) for t in catalog.tables)

    objs = _Objects(catalog, found)
    objs.decide()
    # functions and procedures that need no tenant table come before the tables (defaults and checks may
    # call them); the others, and aggregates over them, after
    early = objs.emit(("function", "procedure"), only_tables_free=True)
    prelude.extend(objs.text[o.key] for o in early)
    late = [
        *objs.emit(("function", "procedure"), only_tables_free=False),
        *objs.emit(("aggregate",)),
        *objs.emit(("view", "materialized view", "index")),
        *objs.emit(("trigger",)),
        *objs.emit(("policy",)),
    ]
    common: list[str] = []
    matviews: list[str] = []
    shop_matviews: dict[int, list[str]] = {}
    for o in [*early, *late]:
        only = objs.only.get(o.key)
        target = common if only is None else shop.setdefault(only, [])
        if o not in early:
            target.append(objs.text[o.key])
        comment = _comment(o)
        if comment:
            target.append(comment)
        if o.kind == "materialized view":
            (matviews if only is None else shop_matviews.setdefault(only, [])).append(_object_ident(o))
    common.extend(_row_security(catalog, objs, found))
    common.extend(_table_comments(catalog))
    return TenantSchema(
        catalog,
        tuple(prelude),
        tables,
        tuple(found.items),
        objects=tuple(common),
        shop_objects={k: tuple(v) for k, v in sorted(shop.items())},
        materialized_views=tuple(matviews),
        shop_materialized_views={k: tuple(v) for k, v in sorted(shop_matviews.items())},
        triggered_tables=frozenset(o.table for o in objs.emit(("trigger",)) if o.table),
    )


def _row_security(catalog: Catalog, objs: _Objects, found: _Findings) -> list[str]:
    out = []
    for t in catalog.tables:
        if not t.row_security:
            continue
        policies = [o for o in catalog.objects if o.kind == "policy" and o.table == t.name]
        if policies and all(o.key in objs.left for o in policies):
            found.add(f"row level security on {t.name}", "left out",
                      "every policy of the table is left out; enabling it would hide every row from non-owners")
            continue
        ident = sql.Identifier(t.schema, t.name)
        out.append(_text(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(ident)))
        if t.force_row_security:
            out.append(_text(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(ident)))
    return out


def _table_comments(catalog: Catalog) -> list[str]:
    out = []
    for u in catalog.types:
        if u.comment is not None:
            kind = "DOMAIN" if u.kind == "domain" else "TYPE"
            out.append(_text(sql.SQL("COMMENT ON {} {} IS {}").format(
                sql.SQL(kind), sql.Identifier(u.schema, u.name), sql.Literal(u.comment))))
    for t in catalog.tables:
        ident = sql.Identifier(t.schema, t.name)
        if t.comment is not None:
            out.append(_text(sql.SQL("COMMENT ON TABLE {} IS {}").format(ident, sql.Literal(t.comment))))
        for c in t.tenant_columns:
            if c.comment is not None:
                out.append(_text(sql.SQL("COMMENT ON COLUMN {} IS {}").format(
                    sql.Identifier(t.schema, t.name, c.name), sql.Literal(c.comment))))
    return out
