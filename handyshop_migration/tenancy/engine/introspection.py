"""Reading the catalog from a live source database.

The real app's declared schema drifted from its live one (camelCase vs snake_case columns, columns the ORM
does not know), so nothing here comes from a declared schema: the catalog is read from the live source.
SQLAlchemy's inspector gives the structure (tables, columns, keys, foreign keys, the foreign-key order);
pg_catalog functions give the exact DDL texts (`format_type`, `pg_get_constraintdef`, `pg_get_indexdef`,
`pg_get_functiondef`, `pg_get_viewdef`, `pg_get_triggerdef`, `pg_get_expr`), because "arrives unchanged"
means the server's own definition, and what a tenant database must not have (the tenant column) is decided
on the server's dependency records (`pg_depend`), not by guessing from text, wherever the server keeps them.

Why not `pg_dump --schema-only`, filtered? pg_dump prints the same texts for views, triggers, indexes and
constraints (it calls these very functions), but as one script: the catalog needs each object on its own
(to decide per object whether it is carried, rewritten, created in one tenant only or reported, and to show
that per object in review), with the structure the rewrite works on (a view's target list, an index's
predicate), and loading the definitions or checking drift must not need a client binary of the server's
major version. What pg_dump assembles by hand we assemble the same way: aggregates (from `pg_aggregate`,
the options listed in `_aggregate`; an aggregate with others is reported, not guessed) and policies (from
`pg_policy`). pg_dump's dependency sort is replaced by the fixed order of `tenant_schema` (extensions,
types, sequences, functions, tables, aggregates, views in dependency order, triggers, policies, comments)
with `check_function_bodies = off`, as pg_dump itself sets.

The introspection reads one REPEATABLE READ, READ ONLY snapshot, with `search_path` pinned to the tenant
schema, so the same source always gives the same catalog.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import dict_row

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import (
    FIRST_USER_OID,
    Catalog,
    Column,
    Constraint,
    Extension,
    ForeignKey,
    Identity,
    Index,
    SchemaObject,
    SequenceInfo,
    SequenceOptions,
    SharedTable,
    Table,
    TenantsTable,
    UsersTable,
    UserType,
)
from handyshop_migration.tenancy.errors import CatalogError
from handyshop_migration.tenancy.names import CAPTURE_SCHEMA, CONTROL_SCHEMA

__all__ = ["introspect", "introspect_like"]

OUR_SCHEMAS = (CONTROL_SCHEMA, CAPTURE_SCHEMA)


def _options(d: dict[str, Any]) -> SequenceOptions:
    return SequenceOptions(
        start=int(d["start"]),
        increment=int(d["increment"]),
        minvalue=int(d["minvalue"]),
        maxvalue=int(d["maxvalue"]),
        cache=int(d["cache"]),
        cycle=bool(d["cycle"]),
    )


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
       pg_get_expr(d.adbin, d.adrelid) AS default_expr,
       col_description(a.attrelid, a.attnum) AS comment
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
         WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e') AS extension,
       obj_description(t.oid, 'pg_type') AS comment
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
                    comment=t["comment"],
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


def _qualified(schema: str, name: str) -> str:
    return psycopg.sql.Identifier(schema, name).as_string(None)


def _names_column(text: str | None, column: str) -> bool:
    """Whether SQL or PL/pgSQL text names `column` as a word (`p_shop_id` does not name `shop_id`)."""
    if not text:
        return False
    pattern = rf'(?<![\w$"]){re.escape(column)}(?![\w$"])|"{re.escape(column)}"'
    return re.search(pattern, text, flags=re.IGNORECASE) is not None


def introspect(
    source: ConnectionSpec,
    *,
    tenant_column: str = "shop_id",
    schema: str = "public",
    include: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
    tenants_table: str | None = None,
    tenants_key: str | None = None,
    tenants_name: str | None = None,
    users_table: str | None = None,
) -> Catalog:
    """Read the tenant tables of `source` (tables having `tenant_column`, or exactly `include`), the table
    listing the tenants (found from the foreign keys on the tenant column when not given), and every
    function, view, trigger, policy and extension the tenant databases need."""
    source.connect().close()  # an unreachable server: our one-line ConnectionFailed, not SQLAlchemy's
    url = source.sqlalchemy_url("psycopg").reveal()
    # SQLAlchemy does not know composite types ("Did not recognize type"); their exact text comes from
    # format_type() below, so the warning says nothing useful here.
    warnings.filterwarnings("ignore", message="Did not recognize type", category=sa.exc.SAWarning)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as sa_conn:
            inspector = sa.inspect(sa_conn)
            kinds = dict(
                sa_conn.exec_driver_sql(
                    "SELECT c.relname, CASE WHEN c.relispartition THEN 'partition' ELSE c.relkind::text END "
                    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %(s)s AND c.relkind IN ('r', 'p')",
                    {"s": schema},
                ).all()
            )
            partitions = {t for t, k in kinds.items() if k == "partition"}
            partitioned = {t for t, k in kinds.items() if k == "p"}
            all_tables = [t for t in inspector.get_table_names(schema=schema) if t not in partitions]
            columns_of = {t: inspector.get_columns(t, schema=schema) for t in all_tables}
            tables_with_column = [t for t in all_tables if any(c["name"] == tenant_column for c in columns_of[t])]
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
                    "columns": columns_of[t],
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
            cur = conn.cursor(row_factory=dict_row)
            tenants = _tenants_table(
                cur, source, schema, tenant_column, all_tables, columns_of,
                tenants_table, tenants_key, tenants_name,
            )
            users = _users_table(source, schema, tenant_column, all_tables, columns_of, users_table)
            names = [n for n in names if n != tenants.table]
            catalog = _build(cur, source, schema, tenant_column, names, order, sa_info)
            shared = []
            kept = set(catalog.table_names)
            for t in all_tables:
                if t in kept:
                    continue
                if t == tenants.table:
                    reason = "the tenants table"
                elif users is not None and t == users.table:
                    reason = "the users table"
                elif t in partitioned and t in tables_with_column:
                    reason = "partitioned: partitioned tenant tables are not migrated yet"
                elif t in tables_with_column:
                    reason = "excluded"
                else:
                    reason = f"no {tenant_column} column"
                shared.append(SharedTable(schema, t, reason))
            catalog = replace(
                catalog,
                tenants=tenants,
                users=users,
                shared_tables=tuple(shared),
                phase0_checks=_phase0_checks(catalog, tenants, users),
            )
            conn.rollback()
    finally:
        engine.dispose()
    from handyshop_migration.tenancy.engine.tenant_schema import render

    return replace(catalog, findings=render(catalog).findings)


def introspect_like(source: ConnectionSpec, catalog: Catalog) -> Catalog:
    """The live catalog of `source` read with the settings `catalog` was written with (for the drift check)."""
    tenants = catalog.require_tenants()
    return introspect(
        source,
        tenant_column=catalog.tenant_column,
        schema=catalog.schema,
        include=catalog.table_names,
        tenants_table=tenants.table,
        tenants_key=tenants.key,
        tenants_name=tenants.name,
        users_table=catalog.users.table if catalog.users else None,
    )


def _tenants_table(
    cur: psycopg.Cursor[dict[str, Any]],
    source: ConnectionSpec,
    schema: str,
    tenant_column: str,
    all_tables: list[str],
    columns_of: dict[str, list[dict[str, Any]]],
    table: str | None,
    key: str | None,
    name: str | None,
) -> TenantsTable:
    """The table listing the tenants: as given, else the target of the foreign keys on the tenant column,
    else a table named after it (`shop_id` -> `shops`)."""
    fk_key = None
    if table is None:
        row = cur.execute(
            """
            SELECT fc.relname AS table, fa.attname AS key, count(*) AS n
              FROM pg_constraint c
              JOIN pg_class cc ON cc.oid = c.conrelid
              JOIN pg_namespace n ON n.oid = cc.relnamespace
              JOIN pg_class fc ON fc.oid = c.confrelid
              JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
              JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1]
             WHERE c.contype = 'f' AND n.nspname = %s AND cardinality(c.conkey) = 1 AND a.attname = %s
             GROUP BY 1, 2 ORDER BY 3 DESC, 1 LIMIT 1
            """,
            (schema, tenant_column),
        ).fetchone()
        if row is not None:
            table, fk_key = row["table"], row["key"]
        else:
            base = tenant_column.removesuffix("_id")
            guesses = [base + "s", base, base + "es", base[:-1] + "ies" if base.endswith("y") else base]
            table = next((g for g in guesses if g in all_tables), None)
        if table is None:
            raise CatalogError(
                f"which table lists the tenants? No foreign key names {tenant_column} and no table is called "
                f"{base}s; give --tenants-table TABLE --tenants-key COLUMN (and --tenants-name COLUMN)."
            )
    if table not in all_tables:
        raise CatalogError(
            f"the tenants table {schema}.{table} does not exist in {source.dbname}; give --tenants-table "
            "with the table that has one row per tenant (and --tenants-key, its id column)."
        )
    columns = {c["name"]: c for c in columns_of[table]}
    if key is None:
        pk = cur.execute(
            "SELECT array_agg(a.attname::text) AS cols FROM pg_constraint c JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey) WHERE c.conrelid = %s::regclass "
            "AND c.contype = 'p'",
            (_qualified(schema, table),),
        ).fetchone()
        pk_cols = (pk or {}).get("cols") or []
        key = fk_key or (pk_cols[0] if len(pk_cols) == 1 else None) or ("id" if "id" in columns else None)
        if key is None:
            raise CatalogError(
                f"the tenants table {table} has no single-column primary key; give --tenants-key COLUMN."
            )
    if key not in columns:
        raise CatalogError(
            f"the tenants table {table} has no column {key!r}; give --tenants-key with its id column "
            f"(columns: {', '.join(columns)})."
        )
    if name is not None and name not in columns:
        raise CatalogError(
            f"the tenants table {table} has no column {name!r}; give --tenants-name with its display-name "
            f"column, or leave it out (columns: {', '.join(columns)})."
        )
    if name is None and "name" in columns:
        name = "name"
    return TenantsTable(schema, table, key, name)


def _users_table(
    source: ConnectionSpec,
    schema: str,
    tenant_column: str,
    all_tables: list[str],
    columns_of: dict[str, list[dict[str, Any]]],
    table: str | None,
) -> UsersTable | None:
    if table is None:
        return None
    if table not in all_tables:
        raise CatalogError(
            f"the users table {schema}.{table} does not exist in {source.dbname}; give --users-table with the "
            "table of the application's users, or leave it out (then phase 0 skips the owner checks)."
        )
    cols = {c["name"] for c in columns_of[table]}
    if tenant_column not in cols or "id" not in cols:
        raise CatalogError(
            f"the users table {table} needs the columns id and {tenant_column}; give another --users-table "
            "or leave it out."
        )
    return UsersTable(
        schema,
        table,
        tenant_column,
        role_column="role" if "role" in cols else None,
        superadmin_column="is_superadmin" if "is_superadmin" in cols else None,
        deleted_column="deleted_at" if "deleted_at" in cols else None,
    )


def _phase0_checks(catalog: Catalog, tenants: TenantsTable, users: UsersTable | None) -> dict[str, tuple[str, ...]]:
    """Which validation checks run, and the tables each needs (the tenants table, the users table)."""
    tenant_tables = catalog.table_names
    checks: dict[str, tuple[str, ...]] = {
        "missing_tables": (*tenant_tables, tenants.table, *((users.table,) if users else ())),
        "missing_columns": tenant_tables,
        "extra_columns": tenant_tables,
        "null_shop_rows": tenant_tables,
        "global_rows": tenant_tables,
        "orphan_shop_rows": (*tenant_tables, tenants.table),
        "cross_shop_references": tenant_tables,
        "schema_objects": (),
        "connection_budget": (tenants.table,),
    }
    if users is not None:
        checks["users_without_shop"] = (users.table,)
        if users.role_column:
            checks["shops_without_owner"] = (tenants.table, users.table)
    return dict(sorted(checks.items()))


def _build(
    cur: psycopg.Cursor[dict[str, Any]],
    source: ConnectionSpec,
    schema: str,
    tenant_column: str,
    names: list[str],
    sa_order: list[str],
    sa_info: dict[str, dict[str, Any]],
) -> Catalog:
    notes: list[str] = []
    tables: dict[str, Table] = {}
    walker = _TypeWalker(cur)
    master: set[str] = set()
    names = [n for n in names if _relkind(cur, schema, n) != "p"]
    for name in names:
        tables[name] = _table(cur, walker, schema, tenant_column, name, names, sa_info[name], master)
    # every type of the schema, also those only functions use (a composite result, an enum argument)
    for row in cur.execute(
        "SELECT t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
        "LEFT JOIN pg_class c ON c.oid = t.typrelid "
        "WHERE n.nspname = %s AND t.typtype IN ('e', 'd', 'c') AND (t.typtype <> 'c' OR c.relkind = 'c') "
        "AND NOT EXISTS (SELECT 1 FROM pg_depend x WHERE x.classid = 'pg_type'::regclass AND x.objid = t.oid "
        "AND x.deptype = 'e') ORDER BY t.typname",
        (schema,),
    ).fetchall():
        walker.visit(int(row["oid"]))
    types, _ = walker.types()
    ordered = _fk_order(tables, sa_order, notes)
    version = int(cur.execute("SHOW server_version_num").fetchone()["server_version_num"])
    catalog = Catalog(
        tenant_column=tenant_column,
        tables=tuple(tables[n] for n in ordered),
        types=types,
        extensions=_extensions(cur),
        master_tables=tuple(sorted(master)),
        notes=tuple(notes),
        source=source.dbname,
        server_version=version,
    )
    return replace(catalog, objects=_objects(cur, catalog))


def _relkind(cur: psycopg.Cursor[dict[str, Any]], schema: str, name: str) -> str:
    row = cur.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (_qualified(schema, name),)).fetchone()
    return str(row["relkind"]) if row else ""


def _table(
    cur: psycopg.Cursor[dict[str, Any]],
    walker: _TypeWalker,
    schema: str,
    tenant_column: str,
    name: str,
    names: list[str],
    sa: dict[str, Any],
    master: set[str],
) -> Table:
    qname = _qualified(schema, name)
    rel = cur.execute(
        "SELECT relrowsecurity, relforcerowsecurity, obj_description(oid, 'pg_class') AS comment "
        "FROM pg_class WHERE oid = %s::regclass",
        (qname,),
    ).fetchone() or {}
    pg_cols = cur.execute(_COLUMN_SQL, (qname,)).fetchall()
    safe = {c["type_oid"]: walker.visit(c["type_oid"]) for c in pg_cols}
    sa_cols = {c["name"]: c for c in sa["columns"]}
    columns = []
    for pc in pg_cols:
        sc = sa_cols[pc["name"]]
        ident = sc.get("identity")
        computed = sc.get("computed")
        if computed and _names_column(computed["sqltext"], tenant_column):
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
                comment=pc["comment"],
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
    return Table(
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
        comment=rel.get("comment"),
        row_security=bool(rel.get("relrowsecurity")),
        force_row_security=bool(rel.get("relforcerowsecurity")),
    )


def _extensions(cur: psycopg.Cursor[dict[str, Any]]) -> tuple[Extension, ...]:
    rows = cur.execute(
        "SELECT e.extname, n.nspname, e.extversion FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname <> 'plpgsql' ORDER BY 1"
    ).fetchall()
    return tuple(Extension(r["extname"], r["nspname"], r["extversion"]) for r in rows)


# -- functions, views, triggers, policies --------------------------------------------------------------

_KIND = "CASE p.prokind WHEN 'a' THEN 'aggregate' WHEN 'p' THEN 'procedure' ELSE 'function' END"
_PROC_KEY = (
    f"{_KIND} || ':' || pn.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'"
)
_EXTENSION_OF = """(SELECT e.extname FROM pg_depend x JOIN pg_extension e ON e.oid = x.refobjid
                    WHERE x.classid = {cls}::regclass AND x.objid = {oid} AND x.deptype = 'e')"""

_ROUTINES_SQL = f"""
SELECT p.oid, pn.nspname AS schema, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name,
       {_KIND} AS kind, p.prosrc AS body,
       CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END AS definition,
       obj_description(p.oid, 'pg_proc') AS comment,
       {_EXTENSION_OF.format(cls="'pg_proc'", oid="p.oid")} AS extension,
       ARRAY(SELECT DISTINCT {_PROC_KEY.replace("p.", "q.").replace("pn.", "qn.")}
               FROM pg_depend d JOIN pg_proc q ON q.oid = d.refobjid JOIN pg_namespace qn ON qn.oid = q.pronamespace
              WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.refclassid = 'pg_proc'::regclass
                AND q.oid >= {FIRST_USER_OID} ORDER BY 1) AS calls,
       ARRAY(SELECT DISTINCT rn.nspname || '.' || rc.relname
               FROM pg_depend d JOIN pg_class rc ON rc.oid = d.refobjid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
              WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.refclassid = 'pg_class'::regclass
             UNION  -- a table's row type in the signature needs the table
             SELECT rn.nspname || '.' || rc.relname
               FROM pg_depend d JOIN pg_type rt ON rt.oid = d.refobjid JOIN pg_class rc ON rc.oid = rt.typrelid
               JOIN pg_namespace rn ON rn.oid = rc.relnamespace
              WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.refclassid = 'pg_type'::regclass
                AND rc.relkind IN ('r', 'p', 'v', 'm', 'f')
              ORDER BY 1) AS reads,
       a.aggtransfn::regproc::text AS sfunc, format_type(a.aggtranstype, NULL) AS stype,
       nullif(a.aggfinalfn, 0)::regproc::text AS finalfunc, nullif(a.aggcombinefn, 0)::regproc::text AS combinefunc,
       a.agginitval AS initcond, nullif(a.aggsortop, 0)::regoperator::text AS sortop,
       a.aggkind, a.aggmtransfn <> 0 AS moving, a.aggserialfn <> 0 AS serial, a.aggfinalextra AS finalextra,
       a.aggtransspace AS sspace, p.proparallel AS parallel,
       pg_get_function_arguments(p.oid) AS arguments
  FROM pg_proc p
  JOIN pg_namespace pn ON pn.oid = p.pronamespace
  LEFT JOIN pg_aggregate a ON a.aggfnoid = p.oid
 WHERE pn.nspname = %s
 ORDER BY 3
"""  # noqa: S608 - constant fragments only

_RELATION_DEPS = """
       ARRAY(SELECT DISTINCT rn.nspname || '.' || rc.relname
               FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
               JOIN pg_class rc ON rc.oid = d.refobjid AND d.refclassid = 'pg_class'::regclass
               JOIN pg_namespace rn ON rn.oid = rc.relnamespace
              WHERE r.ev_class = c.oid AND rc.oid <> c.oid ORDER BY 1) AS reads,
       ARRAY(SELECT DISTINCT rc.relname::text
               FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
               JOIN pg_class rc ON rc.oid = d.refobjid AND d.refclassid = 'pg_class'::regclass
               JOIN pg_attribute ra ON ra.attrelid = rc.oid AND ra.attnum = d.refobjsubid
              WHERE r.ev_class = c.oid AND rc.oid <> c.oid AND ra.attname = %(tc)s ORDER BY 1) AS tenant_refs,
       ARRAY(SELECT DISTINCT {proc_key}
               FROM pg_rewrite r JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
               JOIN pg_proc p ON p.oid = d.refobjid AND d.refclassid = 'pg_proc'::regclass
               JOIN pg_namespace pn ON pn.oid = p.pronamespace
              WHERE r.ev_class = c.oid AND p.oid >= {first} ORDER BY 1) AS calls
"""

_VIEWS_SQL = f"""
SELECT c.oid, n.nspname AS schema, c.relname AS name,
       CASE c.relkind WHEN 'v' THEN 'view' ELSE 'materialized view' END AS kind,
       pg_get_viewdef(c.oid) AS definition, coalesce(c.reloptions, '{{}}') AS options,
       obj_description(c.oid, 'pg_class') AS comment,
       {_EXTENSION_OF.format(cls="'pg_class'", oid="c.oid")} AS extension,
       {_RELATION_DEPS.format(proc_key=_PROC_KEY, first=FIRST_USER_OID)}
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('v', 'm') AND n.nspname = %(schema)s
 ORDER BY c.relname
"""  # noqa: S608 - constant fragments only

_MATVIEW_INDEX_SQL = """
SELECT i.relname AS name, c.relname AS matview, pg_get_indexdef(x.indexrelid) AS definition
  FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'm' AND n.nspname = %s
 ORDER BY 1
"""

_TRIGGERS_SQL = f"""
SELECT t.tgname AS name, c.relname AS table, pg_get_triggerdef(t.oid) AS definition, t.tgenabled AS enabled,
       {_PROC_KEY} AS call, pn.nspname AS function_schema,
       obj_description(t.oid, 'pg_trigger') AS comment,
       EXISTS (SELECT 1 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_trigger'::regclass AND d.objid = t.oid AND a.attname = %(tc)s)
       OR EXISTS (SELECT 1 FROM unnest(t.tgattr::int2[]) k JOIN pg_attribute a ON a.attrelid = t.tgrelid
                   AND a.attnum = k WHERE a.attname = %(tc)s) AS uses_tenant
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_proc p ON p.oid = t.tgfoid
  JOIN pg_namespace pn ON pn.oid = p.pronamespace
 WHERE n.nspname = %(schema)s AND c.relname = ANY(%(tables)s) AND NOT t.tgisinternal
 ORDER BY c.relname, t.tgname
"""  # noqa: S608 - constant fragments only

_EVENT_TRIGGERS_SQL = f"""
SELECT e.evtname AS name, e.evtevent AS event, e.evtenabled AS enabled, coalesce(e.evttags, '{{}}') AS tags,
       {_PROC_KEY} AS call, pn.nspname AS function_schema, obj_description(e.oid, 'pg_event_trigger') AS comment,
       {_EXTENSION_OF.format(cls="'pg_event_trigger'", oid="e.oid")} AS extension
  FROM pg_event_trigger e JOIN pg_proc p ON p.oid = e.evtfoid JOIN pg_namespace pn ON pn.oid = p.pronamespace
 ORDER BY 1
"""  # noqa: S608 - constant fragments only

_POLICIES_SQL = """
SELECT p.polname AS name, c.relname AS table, p.polcmd AS cmd, p.polpermissive AS permissive,
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END
               FROM unnest(p.polroles) r ORDER BY 1) AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS qual, pg_get_expr(p.polwithcheck, p.polrelid) AS check,
       obj_description(p.oid, 'pg_policy') AS comment,
       EXISTS (SELECT 1 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_policy'::regclass AND d.objid = p.oid AND a.attname = %(tc)s) AS uses_tenant
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = %(schema)s AND c.relname = ANY(%(tables)s)
 ORDER BY c.relname, p.polname
"""

_POLICY_COMMANDS = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}


def _aggregate(r: dict[str, Any]) -> tuple[str, str | None]:
    """CREATE AGGREGATE from pg_aggregate, as pg_dump assembles it; or why it cannot be assembled."""
    if r["aggkind"] != "n" or r["moving"] or r["serial"] or r["finalextra"] or r["sspace"]:
        return "", "ordered-set, moving, serialised or FINALFUNC_EXTRA aggregates are not rendered"
    parts = [f"SFUNC = {r['sfunc']}", f"STYPE = {r['stype']}"]
    if r["finalfunc"]:
        parts.append(f"FINALFUNC = {r['finalfunc']}")
    if r["combinefunc"]:
        parts.append(f"COMBINEFUNC = {r['combinefunc']}")
    if r["initcond"] is not None:
        parts.append("INITCOND = " + psycopg.sql.Literal(r["initcond"]).as_string(None))
    if r["sortop"]:
        parts.append(f"SORTOP = {r['sortop'].split('(')[0]}")
    parts.append("PARALLEL = " + {"s": "SAFE", "r": "RESTRICTED", "u": "UNSAFE"}[r["parallel"]])
    name = psycopg.sql.Identifier(r["schema"], r["name"].split("(")[0]).as_string(None)
    return f"CREATE AGGREGATE {name}({r['arguments']}) (\n    " + ",\n    ".join(parts) + "\n)", None


def _objects(cur: psycopg.Cursor[dict[str, Any]], catalog: Catalog) -> tuple[SchemaObject, ...]:
    schema, tc = catalog.schema, catalog.tenant_column
    tables = list(catalog.table_names)
    out: list[SchemaObject] = []
    for r in cur.execute(_ROUTINES_SQL, (schema,)).fetchall():
        definition, problem = (_aggregate(r) if r["kind"] == "aggregate" else (r["definition"], None))
        out.append(
            SchemaObject(
                kind=r["kind"],
                schema=r["schema"],
                name=r["name"],
                definition=definition,
                reads=tuple(r["reads"]),
                calls=tuple(c for c in r["calls"] if not c.endswith(f":{r['schema']}.{r['name']}")),
                tenant_references=("(body)",) if _names_column(r["body"], tc) else (),
                options=(f"unrendered={problem}",) if problem else (),
                comment=r["comment"],
                owner_extension=r["extension"],
            )
        )
    for r in cur.execute(_VIEWS_SQL, {"schema": schema, "tc": tc}).fetchall():
        out.append(
            SchemaObject(
                kind=r["kind"],
                schema=r["schema"],
                name=r["name"],
                definition=r["definition"],
                reads=tuple(r["reads"]),
                calls=tuple(r["calls"]),
                tenant_references=tuple(r["tenant_refs"]),
                options=tuple(r["options"]),
                comment=r["comment"],
                owner_extension=r["extension"],
            )
        )
    for r in cur.execute(_MATVIEW_INDEX_SQL, (schema,)).fetchall():
        out.append(SchemaObject(kind="index", schema=schema, name=r["name"], definition=r["definition"],
                                table=r["matview"], reads=(f"{schema}.{r['matview']}",)))
    for r in cur.execute(_TRIGGERS_SQL, {"schema": schema, "tc": tc, "tables": tables}).fetchall():
        if r["function_schema"] in OUR_SCHEMAS:
            continue  # our capture and guard triggers: installed by the migration itself
        out.append(
            SchemaObject(
                kind="trigger",
                schema=schema,
                name=r["name"],
                definition=r["definition"],
                table=r["table"],
                reads=(f"{schema}.{r['table']}",),
                calls=(r["call"],),
                tenant_references=(r["table"],) if r["uses_tenant"] else (),
                options=(f"enabled={r['enabled']}",),
                comment=r["comment"],
            )
        )
    for r in cur.execute(_EVENT_TRIGGERS_SQL).fetchall():
        if r["function_schema"] in OUR_SCHEMAS or r["extension"]:
            continue
        tags = f" WHEN TAG IN ({', '.join(psycopg.sql.Literal(t).as_string(None) for t in r['tags'])})" if r["tags"] else ""
        fn = r["call"].split(":", 1)[1].split("(")[0]
        out.append(
            SchemaObject(
                kind="event trigger",
                schema=schema,
                name=r["name"],
                definition=f"CREATE EVENT TRIGGER {psycopg.sql.Identifier(r['name']).as_string(None)} ON "
                f"{r['event']}{tags} EXECUTE FUNCTION {fn}()",
                calls=(r["call"],),
                options=(f"event={r['event']}", f"enabled={r['enabled']}"),
                comment=r["comment"],
            )
        )
    for r in cur.execute(_POLICIES_SQL, {"schema": schema, "tc": tc, "tables": tables}).fetchall():
        ident = psycopg.sql.Identifier
        text = (
            f"CREATE POLICY {ident(r['name']).as_string(None)} ON {ident(schema, r['table']).as_string(None)} "
            f"AS {'PERMISSIVE' if r['permissive'] else 'RESTRICTIVE'} FOR {_POLICY_COMMANDS[r['cmd']]} "
            f"TO {', '.join(r['roles'])}"
            + (f" USING ({r['qual']})" if r["qual"] else "")
            + (f" WITH CHECK ({r['check']})" if r["check"] else "")
        )
        out.append(
            SchemaObject(
                kind="policy",
                schema=schema,
                name=r["name"],
                definition=text,
                table=r["table"],
                reads=(f"{schema}.{r['table']}",),
                tenant_references=(r["table"],) if r["uses_tenant"] else (),
                comment=r["comment"],
            )
        )
    return tuple(out)


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


