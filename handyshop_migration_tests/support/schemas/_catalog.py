"""Two comparisons a test needs on top of a fixture's INFO: the objects a database has for a set of tables
(to assert that a tenant database has every object the source has for them), and a checksum of their rows.

    table_objects(source, INFO.tenant_tables) == table_objects(tenant, INFO.tenant_tables)

Both read only the schema `public`.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg
from psycopg import sql

_OBJECTS = """
SELECT c.relname, 'column ' || a.attname,
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
       || CASE a.attgenerated WHEN 's' THEN ' GENERATED STORED' ELSE '' END
       || CASE a.attidentity WHEN 'a' THEN ' IDENTITY ALWAYS' WHEN 'd' THEN ' IDENTITY BY DEFAULT' ELSE '' END
       || coalesce(' COLLATE ' || nullif(co.collname, 'default'), '')
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
 WHERE c.oid = ANY(%(oids)s) AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT c.relname, 'index ' || i.relname, pg_get_indexdef(i.oid)
  FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
 WHERE c.oid = ANY(%(oids)s)
UNION ALL
-- NOT NULL constraints are pg_constraint rows from PostgreSQL 18 on; the column entry covers them.
SELECT c.relname, 'constraint ' || con.conname, pg_get_constraintdef(con.oid)
  FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
 WHERE c.oid = ANY(%(oids)s) AND con.contype <> 'n'
UNION ALL
SELECT c.relname, 'trigger ' || t.tgname, pg_get_triggerdef(t.oid) || CASE t.tgenabled WHEN 'D' THEN ' DISABLED' ELSE '' END
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE c.oid = ANY(%(oids)s) AND NOT t.tgisinternal
UNION ALL
SELECT c.relname, 'policy ' || p.polname,
       p.polcmd::text || ' ' || p.polpermissive::text || ' ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '') || ' '
       || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
 WHERE c.oid = ANY(%(oids)s)
UNION ALL
SELECT c.relname, 'row level security', c.relrowsecurity::text || ' forced ' || c.relforcerowsecurity::text
  FROM pg_class c WHERE c.oid = ANY(%(oids)s) AND c.relrowsecurity
UNION ALL
SELECT c.relname, 'partition ' || p.relname, pg_get_expr(p.relpartbound, p.oid)
  FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhparent JOIN pg_class p ON p.oid = h.inhrelid
 WHERE c.oid = ANY(%(oids)s)
UNION ALL
SELECT c.relname, 'partition key', pg_get_partkeydef(c.oid)
  FROM pg_class c WHERE c.oid = ANY(%(oids)s) AND c.relkind = 'p'
UNION ALL
SELECT c.relname, 'comment' || coalesce(' ' || a.attname, ''), d.description
  FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0
 WHERE d.classoid = 'pg_class'::regclass AND c.oid = ANY(%(oids)s)
UNION ALL
SELECT c.relname, 'owned sequence ' || s.relname, format_type(q.seqtypid, NULL) || ' increment '
       || q.seqincrement || ' start ' || q.seqstart
  FROM pg_depend dep
  JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S'
  JOIN pg_sequence q ON q.seqrelid = s.oid
  JOIN pg_class c ON c.oid = dep.refobjid
 WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
   AND dep.deptype IN ('a', 'i') AND c.oid = ANY(%(oids)s)
"""


def _oids(conn: psycopg.Connection, tables: Iterable[str]) -> list[int]:
    names = list(tables)
    rows = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relname = ANY(%s)", (names,)
    ).fetchall()
    if len(rows) != len(set(names)):
        found = {r[0] for r in conn.execute(
            "SELECT relname FROM pg_class WHERE oid = ANY(%s)", ([r[0] for r in rows],)).fetchall()}
        raise LookupError(f"no such table(s) in public: {sorted(set(names) - found)}")
    return [r[0] for r in rows]


def table_objects(conn: psycopg.Connection, tables: Iterable[str]) -> dict[str, dict[str, str]]:
    """table -> {"column x" | "index i" | "constraint c" | "trigger t" | "policy p" | "partition p" |
    "comment [column]" | "owned sequence s" | ...: its definition}. Partitions of a partitioned table are
    listed under it, not compared on their own."""
    result: dict[str, dict[str, str]] = {}
    for table, key, definition in conn.execute(_OBJECTS, {"oids": _oids(conn, tables)}).fetchall():
        result.setdefault(table, {})[key] = definition
    return result


def table_checksums(
    conn: psycopg.Connection, tables: Iterable[str], skip_columns: Iterable[str] = ()
) -> dict[str, tuple[int, str]]:
    """table -> (row count, md5 of its rows in a fixed order), leaving out the columns named
    "table.column" in `skip_columns` (and STORED generated columns, which follow from the others)."""
    skip = set(skip_columns)
    result: dict[str, tuple[int, str]] = {}
    for table in tables:
        columns = [
            r[0] for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (table,)
            ).fetchall()
            if f"{table}.{r[0]}" not in skip
        ]
        row = sql.SQL("ROW({})::text").format(sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        query = sql.SQL("SELECT count(*), coalesce(md5(string_agg({row}, E'\\n' ORDER BY {row})), '') FROM {t}").format(
            row=row, t=sql.Identifier(table))
        count, digest = conn.execute(query).fetchone()  # type: ignore[misc]
        result[table] = (count, digest)
    return result
