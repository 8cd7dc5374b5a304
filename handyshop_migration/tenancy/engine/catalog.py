"""The source catalog: which tables are tenant tables, and everything needed to rebuild them per shop.

The real app's declared schema drifted from its live one (camelCase vs snake_case columns, columns the
ORM does not know), so nothing here comes from a declared schema: the catalog is read from the live
source. SQLAlchemy's inspector gives the structure (tables, columns, keys, foreign keys, checks,
indexes, enums, domains, the foreign-key order); a few pg_catalog functions give the exact DDL texts
the inspector cannot (`format_type`, `pg_get_constraintdef`, `pg_get_indexdef`, composite types,
sequence options), because "arrives unchanged" means byte-for-byte the server's own definition.

A Catalog is a plain value: it serialises to JSON (the file that Dagster definitions are built from,
see `handyshop-migration inspect`) and has a structural checksum used to detect drift.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import dict_row

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import CatalogError

CATALOG_FORMAT = 1
FIRST_USER_OID = 16384  # FirstNormalObjectId: OIDs below are built in, equal on every server


@dataclass(frozen=True)
class SequenceOptions:
    start: int
    increment: int
    minvalue: int
    maxvalue: int
    cache: int
    cycle: bool


@dataclass(frozen=True)
class Identity:
    always: bool
    options: SequenceOptions


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type() text, e.g. "timestamp without time zone", "text[]", "public.mood"
    nullable: bool
    default: str | None = None
    collation: str | None = None  # only when it differs from the type's default
    identity: Identity | None = None
    generated: str | None = None  # expression of a generated column
    generated_kind: str | None = None  # "stored" or "virtual" (PostgreSQL 18)
    binary_copy_safe: bool = True  # False when COPY BINARY would embed server-specific type OIDs
    # True when the type's hash function gives the same value in every database (built-in types with a
    # hash operator class, arrays of them): the checksum may then hash the row itself, not its text.
    hashable: bool = True


@dataclass(frozen=True)
class Constraint:
    name: str
    kind: str  # "primary key", "unique", "check", "exclusion"
    columns: tuple[str, ...]
    definition: str  # pg_get_constraintdef()


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]
    definition: str
    on_update: str = "NO ACTION"
    on_delete: str = "NO ACTION"
    match_full: bool = False
    deferrable: bool = False
    initially_deferred: bool = False


@dataclass(frozen=True)
class Index:
    name: str
    definition: str  # pg_get_indexdef()
    unique: bool
    method: str
    key_columns: tuple[str | None, ...]  # None for an expression
    key_definitions: tuple[str, ...]  # per key column: name plus opclass/collation/order as the server prints it
    include_columns: tuple[str, ...]
    predicate: str | None
    uses_tenant_column: bool


@dataclass(frozen=True)
class SequenceInfo:
    schema: str
    name: str
    column: str
    data_type: str
    options: SequenceOptions
    owned: bool


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: Constraint | None
    constraints: tuple[Constraint, ...]  # unique, check, exclusion (not the primary key)
    foreign_keys: tuple[ForeignKey, ...]  # to other tenant tables (kept in tenant databases)
    external_foreign_keys: tuple[ForeignKey, ...]  # to master tables (dropped; the columns stay)
    indexes: tuple[Index, ...]  # indexes not backing a constraint
    sequences: tuple[SequenceInfo, ...]  # serial / nextval() defaults
    tenant_column: str
    tenant_column_nullable: bool = True

    @property
    def qualified(self) -> tuple[str, str]:
        return (self.schema, self.name)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def tenant_columns(self) -> tuple[Column, ...]:
        """The columns a tenant database has: all but the tenant column."""
        return tuple(c for c in self.columns if c.name != self.tenant_column)

    @property
    def copy_columns(self) -> tuple[str, ...]:
        """Columns written by the copy: generated columns are computed by the tenant database itself."""
        return tuple(c.name for c in self.tenant_columns if c.generated is None)

    @property
    def binary_copy_safe(self) -> bool:
        return all(self.column(c).binary_copy_safe for c in self.copy_columns)

    @property
    def hashable(self) -> bool:
        return all(self.column(c).hashable for c in self.copy_columns)

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Primary key as a tenant database has it (without the tenant column); empty if none."""
        if self.primary_key is None:
            return ()
        return tuple(c for c in self.primary_key.columns if c != self.tenant_column)

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(sorted({fk.ref_table for fk in self.foreign_keys if fk.ref_table != self.name}))


@dataclass(frozen=True)
class UserType:
    schema: str
    name: str
    kind: str  # "enum", "domain", "composite"
    labels: tuple[str, ...] = ()
    base_type: str | None = None
    default: str | None = None
    not_null: bool = False
    checks: tuple[tuple[str, str], ...] = ()  # (name, definition)
    attributes: tuple[tuple[str, str], ...] = ()  # (name, type) of a composite
    depends_on: tuple[str, ...] = ()  # "schema.name" of other user types it uses


@dataclass(frozen=True)
class Catalog:
    tenant_column: str
    tables: tuple[Table, ...]  # parents before children
    types: tuple[UserType, ...] = ()
    extensions: tuple[str, ...] = ()
    master_tables: tuple[str, ...] = ()  # non-tenant tables that tenant rows reference
    notes: tuple[str, ...] = ()  # what the tenant schema leaves out, and why
    source: str = ""  # "dbname" of the source, for humans; no host, no credentials
    server_version: int = 0
    format: int = CATALOG_FORMAT

    # -- lookups ------------------------------------------------------------------------------------

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise CatalogError(
            f"table {name!r} is not in the catalog (tenant tables: {', '.join(self.table_names)}); "
            "re-run `handyshop-migration inspect` if the source changed."
        )

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    def children_of(self, name: str) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables if name in t.parents)

    # -- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    def structure(self) -> dict[str, Any]:
        """What defines the tenant schema: everything except provenance."""
        data = self.to_dict()
        for key in ("source", "server_version", "notes"):
            data.pop(key)
        return data

    @property
    def checksum(self) -> str:
        canonical = json.dumps(self.structure(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Catalog:
        if data.get("format") != CATALOG_FORMAT:
            raise CatalogError(
                f"catalog format {data.get('format')!r} is not supported (expected {CATALOG_FORMAT}); "
                "write a new one with `handyshop-migration inspect --source-url URL --output FILE`."
            )

        def fk(d: dict[str, Any]) -> ForeignKey:
            return ForeignKey(**{**d, "columns": tuple(d["columns"]), "ref_columns": tuple(d["ref_columns"])})

        def constraint(d: dict[str, Any]) -> Constraint:
            return Constraint(**{**d, "columns": tuple(d["columns"])})

        tables = []
        for t in data["tables"]:
            tables.append(
                Table(
                    schema=t["schema"],
                    name=t["name"],
                    columns=tuple(
                        Column(**{**c, "identity": _identity(c["identity"])})
                        for c in t["columns"]
                    ),
                    primary_key=constraint(t["primary_key"]) if t["primary_key"] else None,
                    constraints=tuple(constraint(c) for c in t["constraints"]),
                    foreign_keys=tuple(fk(f) for f in t["foreign_keys"]),
                    external_foreign_keys=tuple(fk(f) for f in t["external_foreign_keys"]),
                    indexes=tuple(
                        Index(
                            **{
                                **i,
                                "key_columns": tuple(i["key_columns"]),
                                "key_definitions": tuple(i["key_definitions"]),
                                "include_columns": tuple(i["include_columns"]),
                            }
                        )
                        for i in t["indexes"]
                    ),
                    sequences=tuple(
                        SequenceInfo(**{**s, "options": SequenceOptions(**s["options"])}) for s in t["sequences"]
                    ),
                    tenant_column=t["tenant_column"],
                    tenant_column_nullable=t["tenant_column_nullable"],
                )
            )
        types = tuple(
            UserType(
                **{
                    **u,
                    "labels": tuple(u["labels"]),
                    "checks": tuple(tuple(x) for x in u["checks"]),
                    "attributes": tuple(tuple(x) for x in u["attributes"]),
                    "depends_on": tuple(u["depends_on"]),
                }
            )
            for u in data["types"]
        )
        return cls(
            tenant_column=data["tenant_column"],
            tables=tuple(tables),
            types=types,
            extensions=tuple(data["extensions"]),
            master_tables=tuple(data["master_tables"]),
            notes=tuple(data["notes"]),
            source=data.get("source", ""),
            server_version=data.get("server_version", 0),
        )

    @classmethod
    def from_json(cls, text: str) -> Catalog:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CatalogError(
                f"catalog file {path} does not exist; write one with "
                "`handyshop-migration inspect --source-url URL --output FILE`."
            ) from None
        try:
            return cls.from_json(text)
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CatalogError(
                f"catalog file {path} is not a valid catalog ({type(exc).__name__}: {exc}); "
                "write it again with `handyshop-migration inspect`."
            ) from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")


def _options(d: dict[str, Any]) -> SequenceOptions:
    return SequenceOptions(
        start=int(d["start"]),
        increment=int(d["increment"]),
        minvalue=int(d["minvalue"]),
        maxvalue=int(d["maxvalue"]),
        cache=int(d["cache"]),
        cycle=bool(d["cycle"]),
    )


def _identity(d: dict[str, Any] | None) -> Identity | None:
    return Identity(d["always"], SequenceOptions(**d["options"])) if d else None


# -- introspection ------------------------------------------------------------------------------------

_FK_ACTIONS = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}

_COLUMN_SQL = """
SELECT a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.atttypid AS type_oid,
       CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0
            THEN (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.collname)
                    FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
                   WHERE c.oid = a.attcollation) END AS collation,
       a.attgenerated AS generated_kind,
       pg_get_expr(d.adbin, d.adrelid) AS default_expr
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum
"""

_CONSTRAINT_SQL = """
SELECT c.conname AS name, c.contype AS kind, pg_get_constraintdef(c.oid) AS definition,
       ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord) AS columns,
       c.confupdtype AS on_update, c.confdeltype AS on_delete, c.confmatchtype AS match_type,
       c.condeferrable AS deferrable, c.condeferred AS deferred,
       fn.nspname AS ref_schema, fc.relname AS ref_table,
       ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.ord) AS ref_columns
  FROM pg_constraint c
  LEFT JOIN pg_class fc ON fc.oid = c.confrelid
  LEFT JOIN pg_namespace fn ON fn.oid = fc.relnamespace
 WHERE c.conrelid = %s::regclass AND c.contype IN ('p', 'u', 'c', 'x', 'f')
 ORDER BY c.conname
"""

_INDEX_SQL = """
SELECT ic.relname AS name, pg_get_indexdef(i.indexrelid) AS definition, i.indisunique AS unique,
       am.amname AS method, i.indnkeyatts AS nkeys,
       ARRAY(SELECT CASE WHEN k.attnum = 0 THEN NULL ELSE a.attname END
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              ORDER BY k.ord) AS columns,
       ARRAY(SELECT pg_get_indexdef(i.indexrelid, g, true)
               FROM generate_series(1, i.indnatts) g ORDER BY g) AS column_defs,
       pg_get_expr(i.indpred, i.indrelid, true) AS predicate,
       EXISTS (SELECT 1 FROM pg_depend d
                WHERE d.classid = 'pg_class'::regclass AND d.objid = i.indexrelid
                  AND d.refobjid = i.indrelid AND d.refobjsubid = %s) AS uses_tenant_column,
       i.indexprs IS NOT NULL AS has_expressions
  FROM pg_index i
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_am am ON am.oid = ic.relam
 WHERE i.indrelid = %s::regclass
   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid)
 ORDER BY ic.relname
"""

_SEQUENCE_SQL = """
SELECT DISTINCT ON (s.seqrelid) sn.nspname AS schema, sc.relname AS name, a.attname AS column,
       format_type(s.seqtypid, NULL) AS data_type, s.seqstart AS start, s.seqincrement AS increment,
       s.seqmin AS minvalue, s.seqmax AS maxvalue, s.seqcache AS cache, s.seqcycle AS cycle,
       EXISTS (SELECT 1 FROM pg_depend o WHERE o.classid = 'pg_class'::regclass AND o.objid = s.seqrelid
                 AND o.refobjid = ad.adrelid AND o.deptype = 'a') AS owned
  FROM pg_attrdef ad
  JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
  JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                  AND d.refclassid = 'pg_class'::regclass
  JOIN pg_sequence s ON s.seqrelid = d.refobjid
  JOIN pg_class sc ON sc.oid = s.seqrelid
  JOIN pg_namespace sn ON sn.oid = sc.relnamespace
 WHERE ad.adrelid = %s::regclass
 ORDER BY s.seqrelid
"""

_TYPE_INFO_SQL = """
SELECT t.oid, n.nspname AS schema, t.typname AS name, t.typtype AS kind, t.typelem AS elem,
       t.typbasetype AS base, t.typsubscript = 'array_subscript_handler'::regproc AS is_array,
       EXISTS (SELECT 1 FROM pg_opclass o JOIN pg_am a ON a.oid = o.opcmethod
                WHERE a.amname = 'hash' AND o.opcdefault AND o.opcintype = t.oid) AS has_hash,
       ARRAY(SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder) AS labels,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END AS base_type,
       t.typdefault AS default, t.typnotnull AS not_null,
       ARRAY(SELECT ARRAY[c.conname, pg_get_constraintdef(c.oid)] FROM pg_constraint c
              WHERE c.contypid = t.oid AND c.contype = 'c' ORDER BY c.conname) AS checks,
       ARRAY(SELECT ARRAY[a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::text] FROM pg_attribute a
              WHERE t.typtype = 'c' AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum) AS attributes,
       (SELECT e.extname FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
         WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e') AS extension
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE t.oid = %s
"""


class _TypeWalker:
    """Follows a column type through domains, arrays and composites.

    It answers two questions: which user-defined types a tenant database needs (and in which order),
    and whether COPY BINARY is safe. Binary arrays and composites embed the OIDs of their element and
    attribute types, and user-defined types have different OIDs in every database, so a table holding
    such a column is copied as text instead.
    """

    def __init__(self, cur: psycopg.Cursor[dict[str, Any]]) -> None:
        self.cur = cur
        self.info: dict[int, dict[str, Any]] = {}
        self.used: dict[int, None] = {}  # user types in dependency order (dict keeps insertion order)

    def _get(self, oid: int) -> dict[str, Any]:
        if oid not in self.info:
            self.info[oid] = self.cur.execute(_TYPE_INFO_SQL, (oid,)).fetchone() or {}
        return self.info[oid]

    def visit(self, oid: int) -> bool:
        """Record the user types `oid` needs; return whether COPY BINARY of it is safe."""
        t = self._get(oid)
        if not t:
            return True
        safe = True
        if t["kind"] == "d":
            safe = self.visit(t["base"])
        elif t["is_array"]:
            elem_safe = self.visit(t["elem"])
            safe = t["elem"] < FIRST_USER_OID and elem_safe
        elif t["kind"] == "c" and oid >= FIRST_USER_OID:
            safe = False
            for attr in t["attributes"]:
                self.visit(int(attr[2]))
        if oid >= FIRST_USER_OID and not t["is_array"]:
            self.used.setdefault(oid, None)
        return safe

    def hashable(self, oid: int) -> bool:
        """Same hash in every database: a built-in type with a default hash opclass (enums hash by OID, json
        has no hash function), or an array of one."""
        t = self._get(oid)
        if not t or oid >= FIRST_USER_OID:
            return False
        if t["is_array"]:
            return self.hashable(t["elem"])
        return bool(t["has_hash"])

    def types(self) -> tuple[tuple[UserType, ...], tuple[str, ...]]:
        extensions = sorted({self.info[o]["extension"] for o in self.used if self.info[o]["extension"]})
        own = [o for o in self.used if not self.info[o]["extension"] and self.info[o]["kind"] in ("e", "d", "c")]
        result = []
        for oid in own:
            t = self.info[oid]
            deps = [t["base"]] if t["kind"] == "d" else [int(a[2]) for a in t["attributes"]]
            dep_names = set()
            for dep in deps:
                d = self._get(dep)
                target = d["elem"] if d.get("is_array") else dep
                if target in own and target != oid:
                    dep_names.add(f"{self.info[target]['schema']}.{self.info[target]['name']}")
            result.append(
                UserType(
                    schema=t["schema"],
                    name=t["name"],
                    kind={"e": "enum", "d": "domain", "c": "composite"}[t["kind"]],
                    labels=tuple(t["labels"]),
                    base_type=t["base_type"],
                    default=t["default"],
                    not_null=bool(t["not_null"]),
                    checks=tuple((c[0], c[1]) for c in t["checks"]),
                    attributes=tuple((a[0], a[1]) for a in t["attributes"]),
                    depends_on=tuple(sorted(dep_names)),
                )
            )
        # dependencies first, then by name: a deterministic order the DDL can run in
        ordered: list[UserType] = []
        pending = sorted(result, key=lambda u: (u.schema, u.name))
        while pending:
            done = {f"{u.schema}.{u.name}" for u in ordered}
            ready = [u for u in pending if set(u.depends_on) <= done]
            if not ready:
                raise CatalogError("user-defined types depend on each other in a cycle: " + ", ".join(u.name for u in pending))
            ordered.extend(ready)
            pending = [u for u in pending if u not in ready]
        return tuple(ordered), tuple(extensions)


def _qualified(schema: str, name: str) -> str:
    return psycopg.sql.Identifier(schema, name).as_string(None)


def introspect(
    source: ConnectionSpec,
    *,
    tenant_column: str = "shop_id",
    schema: str = "public",
    include: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
) -> Catalog:
    """Read the tenant tables of `source` (tables having `tenant_column`, or exactly `include`)."""
    url = source.sqlalchemy_url("psycopg").reveal()
    # SQLAlchemy does not know composite types ("Did not recognize type"); their exact text comes from
    # format_type() below, so the warning says nothing useful here.
    warnings.filterwarnings("ignore", message="Did not recognize type", category=sa.exc.SAWarning)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as sa_conn:
            inspector = sa.inspect(sa_conn)
            all_tables = inspector.get_table_names(schema=schema)
            tables_with_column = [
                t for t in all_tables if any(c["name"] == tenant_column for c in inspector.get_columns(t, schema=schema))
            ]
            excluded = set(exclude)
            if include is not None:
                missing = [t for t in include if t not in all_tables]
                if missing:
                    raise CatalogError(
                        f"the source {source.dbname} lacks the tables {', '.join(missing)}; "
                        "check the table list or the source URL."
                    )
                lacking = [t for t in include if t not in tables_with_column]
                if lacking:
                    raise CatalogError(
                        f"the tables {', '.join(lacking)} have no {tenant_column!r} column; "
                        f"tenant tables must carry the tenant column (or pass --tenant-column)."
                    )
                names = [t for t in include if t not in excluded]
            else:
                names = [t for t in tables_with_column if t not in excluded]
            if not names:
                raise CatalogError(
                    f"no table in schema {schema!r} of {source.dbname} has a column {tenant_column!r}; "
                    "pass the right --tenant-column or --schema."
                )
            sa_info = {
                t: {
                    "columns": inspector.get_columns(t, schema=schema),
                    "pk": inspector.get_pk_constraint(t, schema=schema),
                    "fks": inspector.get_foreign_keys(t, schema=schema),
                }
                for t in names
            }
            order = [t for t, _ in inspector.get_sorted_table_and_fkc_names(schema=schema) if t in names]
        with source.connect() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # Definition texts (defaults, constraints, indexes) qualify names relative to search_path:
            # pin it so the same source always gives the same catalog, and tenant DDL runs under the same.
            conn.execute(psycopg.sql.SQL("SET LOCAL search_path = {}").format(psycopg.sql.Identifier(schema)))
            return _build(conn, source, schema, tenant_column, names, order, sa_info)
    finally:
        engine.dispose()


def _build(
    conn: psycopg.Connection,
    source: ConnectionSpec,
    schema: str,
    tenant_column: str,
    names: list[str],
    sa_order: list[str],
    sa_info: dict[str, dict[str, Any]],
) -> Catalog:
    cur = conn.cursor(row_factory=dict_row)
    notes: list[str] = []
    tables: dict[str, Table] = {}
    walker = _TypeWalker(cur)
    master: set[str] = set()
    for name in names:
        qname = _qualified(schema, name)
        relkind = cur.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (qname,)).fetchone()
        if relkind and relkind["relkind"] == "p":
            raise CatalogError(
                f"table {name!r} is partitioned; partitioned tenant tables are not supported yet — "
                "exclude it (--exclude) and migrate it separately."
            )
        pg_cols = cur.execute(_COLUMN_SQL, (qname,)).fetchall()
        safe = {c["type_oid"]: walker.visit(c["type_oid"]) for c in pg_cols}
        sa_cols = {c["name"]: c for c in sa_info[name]["columns"]}
        columns = []
        for pc in pg_cols:
            sc = sa_cols[pc["name"]]
            ident = sc.get("identity")
            computed = sc.get("computed")
            if computed and re.search(rf'\b"?{re.escape(tenant_column)}"?\b', computed["sqltext"]):
                raise CatalogError(
                    f"generated column {name}.{pc['name']} is computed from the tenant column {tenant_column!r}, "
                    "which tenant databases do not have; change the column or exclude the table."
                )
            columns.append(
                Column(
                    name=pc["name"],
                    type=pc["type"],
                    nullable=bool(sc["nullable"]),
                    default=None if (ident or computed) else pc["default_expr"],
                    collation=pc["collation"],
                    identity=Identity(bool(ident["always"]), _options(ident)) if ident else None,
                    generated=computed["sqltext"] if computed else None,
                    generated_kind=(
                        {"s": "stored", "v": "virtual"}.get(pc["generated_kind"], "stored") if computed else None
                    ),
                    binary_copy_safe=bool(safe.get(pc["type_oid"], True)),
                    hashable=walker.hashable(pc["type_oid"]) and pc["collation"] is None,
                )
            )
        tenant_col = next((c for c in columns if c.name == tenant_column), None)
        if tenant_col is None:  # pragma: no cover - filtered above
            raise CatalogError(f"table {name} has no column {tenant_column!r}")

        primary_key: Constraint | None = None
        constraints: list[Constraint] = []
        fks: list[ForeignKey] = []
        external: list[ForeignKey] = []
        for c in cur.execute(_CONSTRAINT_SQL, (qname,)).fetchall():
            cols = tuple(c["columns"])
            if c["kind"] == "f":
                fk = ForeignKey(
                    name=c["name"],
                    columns=cols,
                    ref_schema=c["ref_schema"],
                    ref_table=c["ref_table"],
                    ref_columns=tuple(c["ref_columns"]),
                    definition=c["definition"],
                    on_update=_FK_ACTIONS[c["on_update"]],
                    on_delete=_FK_ACTIONS[c["on_delete"]],
                    match_full=c["match_type"] == "f",
                    deferrable=c["deferrable"],
                    initially_deferred=c["deferred"],
                )
                if c["ref_schema"] == schema and c["ref_table"] in names:
                    fks.append(fk)
                else:
                    external.append(fk)
                    master.add(c["ref_table"])
                continue
            kind = {"p": "primary key", "u": "unique", "c": "check", "x": "exclusion"}[c["kind"]]
            con = Constraint(name=c["name"], kind=kind, columns=cols, definition=c["definition"])
            if kind == "primary key":
                primary_key = con
            else:
                constraints.append(con)
        tenant_attnum = cur.execute(
            "SELECT attnum FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s", (qname, tenant_column)
        ).fetchone()["attnum"]
        indexes = []
        for ix in cur.execute(_INDEX_SQL, (tenant_attnum, qname)).fetchall():
            nkeys = ix["nkeys"]
            indexes.append(
                Index(
                    name=ix["name"],
                    definition=ix["definition"],
                    unique=ix["unique"],
                    method=ix["method"],
                    key_columns=tuple(ix["columns"][:nkeys]),
                    key_definitions=tuple(ix["column_defs"][:nkeys]),
                    include_columns=tuple(c for c in ix["columns"][nkeys:] if c is not None),
                    predicate=ix["predicate"],
                    uses_tenant_column=ix["uses_tenant_column"],
                )
            )
        sequences = tuple(
            SequenceInfo(s["schema"], s["name"], s["column"], s["data_type"], _options(s), s["owned"])
            for s in cur.execute(_SEQUENCE_SQL, (qname,)).fetchall()
        )
        triggers = cur.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY tgname", (qname,)
        ).fetchall()
        for tg in triggers:
            if not tg["tgname"].startswith("handyshop_capture"):
                notes.append(f"trigger {tg['tgname']} on {name} is not recreated in tenant databases")
        tables[name] = Table(
            schema=schema,
            name=name,
            columns=tuple(columns),
            primary_key=primary_key,
            constraints=tuple(constraints),
            foreign_keys=tuple(fks),
            external_foreign_keys=tuple(external),
            indexes=tuple(indexes),
            sequences=sequences,
            tenant_column=tenant_column,
            tenant_column_nullable=tenant_col.nullable,
        )

    types, extensions = walker.types()
    ordered = _fk_order(tables, sa_order, notes)
    version = int(cur.execute("SHOW server_version_num").fetchone()["server_version_num"])
    conn.rollback()
    return Catalog(
        tenant_column=tenant_column,
        tables=tuple(tables[n] for n in ordered),
        types=types,
        extensions=extensions,
        master_tables=tuple(sorted(master)),
        notes=tuple(notes),
        source=source.dbname,
        server_version=version,
    )


def _fk_order(tables: dict[str, Table], sa_order: list[str], notes: list[str]) -> list[str]:
    """Parents before children among tenant tables; SQLAlchemy's order breaks ties, cycles are noted."""
    rank = {name: i for i, name in enumerate(sa_order)}
    remaining = dict(tables)
    ordered: list[str] = []
    while remaining:
        ready = sorted(
            (n for n, t in remaining.items() if not (set(t.parents) & set(remaining))),
            key=lambda n: (rank.get(n, len(rank)), n),
        )
        if not ready:
            cycle = sorted(remaining, key=lambda n: (rank.get(n, len(rank)), n))
            notes.append("foreign keys form a cycle between " + ", ".join(cycle) + "; copied in this order")
            ready = cycle[:1]
        ordered.extend(ready)
        for n in ready:
            remaining.pop(n)
    return ordered


# -- the catalog shipped with the package ---------------------------------------------------------------

PACKAGED_CATALOG = Path(__file__).resolve().parents[2] / "catalogs" / "handyshop.json"


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The catalog named by `path`, else the Handyshop catalog shipped with the package."""
    return Catalog.load(path or PACKAGED_CATALOG)


__all__ = [
    "Catalog",
    "Column",
    "Constraint",
    "ForeignKey",
    "Identity",
    "Index",
    "SequenceInfo",
    "SequenceOptions",
    "Table",
    "UserType",
    "introspect",
    "load_catalog",
    "PACKAGED_CATALOG",
]
