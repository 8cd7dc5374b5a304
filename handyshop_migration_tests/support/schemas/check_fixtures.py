"""Load each fixture into an embedded PostgreSQL 16 and 18 and check every claim of its INFO against the
catalog and the rows. Not a pytest test: run it after changing a fixture.

    .venv/bin/python handyshop_migration_tests/support/schemas/check_fixtures.py [--versions 16,18]
        [--tenants 2,3,5] [store saas billing]

Exit status 0 when every check passed. Wrap it in `flock /tmp/handyshop-heavy.lock` on a shared machine.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

FIXTURES = ("store", "saas", "billing")


class Checker:
    def __init__(self, conn: psycopg.Connection, info: Any, tenants: int) -> None:
        self.conn = conn
        self.info = info
        self.tenants = tenants
        self.passed = 0
        self.failures: list[str] = []

    # -- plumbing ------------------------------------------------------------------------------------

    def ok(self, condition: bool, message: str) -> None:
        if condition:
            self.passed += 1
        else:
            self.failures.append(message)

    def same(self, actual: Any, expected: Any, what: str) -> None:
        self.ok(actual == expected, f"{what}: catalog has {actual!r}, INFO says {expected!r}")

    def rows(self, query: str | sql.Composable, params: Iterable[Any] | None = None) -> list[tuple]:
        return self.conn.execute(query, params).fetchall()  # type: ignore[arg-type]

    def column_set(self, query: str | sql.Composable, params: Iterable[Any] | None = None) -> set:
        return {r[0] for r in self.rows(query, params)}

    # -- the catalog ---------------------------------------------------------------------------------

    def load_catalog(self) -> None:
        self.tables = self.column_set(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        )
        self.columns: dict[str, list[str]] = defaultdict(list)
        for table, column in self.rows(
            "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
            "AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
        ):
            self.columns[table].append(column)
        # Foreign keys of the non-partition tables (partitions hold clones, conparentid <> 0).
        self.fks: list[dict[str, Any]] = []
        for name, child, cols, parent, refcols, deferrable in self.rows(
            """
            SELECT con.conname, c.relname,
                   ARRAY(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
                   p.relname,
                   ARRAY(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                         JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i),
                   con.condeferrable
              FROM pg_constraint con
              JOIN pg_class c ON c.oid = con.conrelid
              JOIN pg_class p ON p.oid = con.confrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE con.contype = 'f' AND n.nspname = 'public' AND NOT c.relispartition AND con.conparentid = 0
            """
        ):
            self.fks.append({"name": name, "child": child, "cols": tuple(cols), "parent": parent,
                             "refcols": tuple(refcols), "deferrable": deferrable})

    def fk(self, hop: tuple[str, tuple[str, ...], str]) -> dict[str, Any] | None:
        child, cols, parent = hop
        for fk in self.fks:
            if fk["child"] == child and fk["cols"] == tuple(cols) and fk["parent"] == parent:
                return fk
        return None

    # -- checks --------------------------------------------------------------------------------------

    def check_tables(self) -> None:
        info = self.info
        listed = list(info.all_tables)
        self.same(len(listed), len(set(listed)), "each table in exactly one class")
        self.same(self.tables, set(listed), "tables (tenant + implied + reference + shared_only)")
        self.ok(info.tenants_key in self.columns[info.tenants_table], "tenants_key is a column of tenants_table")
        if info.tenants_name is not None:
            self.ok(info.tenants_name in self.columns[info.tenants_table], "tenants_name is a column")
        unique_key = self.column_set(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = i.indkey[0] WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indnatts = 1",
            (info.tenants_table,),
        )
        self.ok(info.tenants_key in unique_key, "tenants_key is unique")
        count = self.rows(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(info.tenants_table)))[0][0]
        self.same(count, self.tenants, "rows of tenants_table")
        ids = self.column_set(sql.SQL("SELECT {} FROM {}").format(
            sql.Identifier(info.tenants_key), sql.Identifier(info.tenants_table)))
        self.same(ids, set(info.tenant_ids(self.tenants)), "tenant ids")

        carrying = {t for t in self.tables if info.tenant_column in self.columns[t]} - {info.tenants_table}
        self.same(carrying, set(info.tenant_tables), "tables carrying the tenant column")
        allowed = set(info.tenant_ids(self.tenants)) | set(info.global_ids)
        for table in info.tenant_tables:
            values = self.column_set(sql.SQL("SELECT DISTINCT {} FROM {}").format(
                sql.Identifier(info.tenant_column), sql.Identifier(table)))
            self.ok(values <= allowed, f"{table}.{info.tenant_column} holds only tenant or global ids: {values}")
        with_fk = {t for t in info.tenant_tables if self.fk((t, (info.tenant_column,), info.tenants_table))}
        self.same(with_fk, set(info.tenant_fk_tables), "tenant tables whose tenant column is an FK to the tenants")
        composite: dict[str, set] = defaultdict(set)
        for fk in self.fks:
            pairs = set(zip(fk["cols"], fk["refcols"], strict=True))
            if (fk["child"] in info.tenant_tables and fk["parent"] in info.tenant_tables
                    and (info.tenant_column, info.tenant_column) in pairs):
                composite[fk["child"]].add((fk["child"], fk["cols"], fk["parent"]))
        self.same(dict(composite), {t: set(h) for t, h in info.composite_tenant_fks.items()},
                  "FKs between tenant tables that carry the tenant column")
        for table in (*info.implied_tables, *info.reference_tables):
            self.ok(info.tenant_column not in self.columns[table], f"{table} has no tenant column")

    def fk_paths_from(self, table: str, seen: tuple[str, ...] = ()) -> list[tuple]:
        """Every FK path from `table` to a tenant table through tables without the tenant column."""
        paths: list[tuple] = []
        for fk in self.fks:
            if fk["child"] != table or fk["parent"] in seen or fk["parent"] == table:
                continue
            hop = (table, fk["cols"], fk["parent"])
            if fk["parent"] in self.info.tenant_tables:
                paths.append((hop,))
            elif fk["parent"] not in (self.info.tenants_table, *self.info.shared_only):
                paths.extend((hop, *rest) for rest in self.fk_paths_from(fk["parent"], (*seen, table)))
        return paths

    def check_implied(self) -> None:
        info = self.info
        for table in info.implied_tables:
            declared = info.paths(table)
            for p in declared:
                self.same(p[0][0], table, f"{table}: a path starts at the table")
                self.ok(p[-1][2] in info.tenant_tables, f"{table}: path {p} ends at a tenant table")
                for a, b in zip(p, p[1:], strict=False):
                    self.same(b[0], a[2], f"{table}: path {p} hops chain")
                for hop in p:
                    self.ok(self.fk(hop) is not None, f"{table}: {hop} is a real FK constraint")
            self.same(set(self.fk_paths_from(table)), set(declared), f"{table}: every FK path to a tenant table")
            self.ok(info.id_columns.get(table) in self.columns[table], f"{table}: id column exists")
        for table in self.tables - set(info.implied_tables) - set(info.tenant_tables) - {info.tenants_table}:
            self.same(self.fk_paths_from(table), [], f"{table} has no FK path to a tenant table")
        for table in info.implied_tables:
            self.check_row_paths(table)

    def path_query(self, table: str, path: tuple) -> sql.Composed:
        joins = []
        for i, hop in enumerate(path):
            fk = self.fk(hop)
            assert fk is not None
            on = sql.SQL(" AND ").join(
                sql.SQL("{}.{} = {}.{}").format(sql.Identifier(f"t{i}"), sql.Identifier(c),
                                                sql.Identifier(f"t{i + 1}"), sql.Identifier(r))
                for c, r in zip(fk["cols"], fk["refcols"], strict=True)
            )
            joins.append(sql.SQL("LEFT JOIN {} {} ON {}").format(
                sql.Identifier(hop[2]), sql.Identifier(f"t{i + 1}"), on))
        return sql.SQL("SELECT t0.{}, {}.{} FROM {} t0 {}").format(
            sql.Identifier(self.info.id_columns[table]), sql.Identifier(f"t{len(path)}"),
            sql.Identifier(self.info.tenant_column), sql.Identifier(table), sql.SQL(" ").join(joins))

    def check_row_paths(self, table: str) -> None:
        owners: dict[int, set[int]] = defaultdict(set)
        for path in self.info.paths(table):
            for row_id, tenant in self.rows(self.path_query(table, path)):
                owners.setdefault(row_id, set())
                if tenant is not None:
                    owners[row_id].add(tenant)
        ambiguous = {r for r, t in owners.items() if len(t) > 1}
        orphans = {r for r, t in owners.items() if not t}
        self.same(ambiguous, set(self.info.ambiguous_rows.get(table, ())), f"{table}: ambiguous rows")
        self.same(orphans, set(self.info.orphan_rows.get(table, ())), f"{table}: orphan rows")
        # The application's path alone gives the same owner as every other path for the other rows.
        primary = dict(self.rows(self.path_query(table, self.info.implied_tables[table])))
        for row_id, tenants in owners.items():
            if len(tenants) == 1:
                self.ok(primary[row_id] in tenants, f"{table} {row_id}: the application's path agrees")

    def check_reference(self) -> None:
        info = self.info
        for table in info.joined_reference_tables:
            self.ok(table in info.reference_tables, f"{table}: joined reference table is a reference table")
            named = self.rows(
                "SELECT count(*) FROM pg_views WHERE schemaname = 'public' AND definition ~ %s", (rf"\m{table}\M",)
            )[0][0] + self.rows(
                "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'public' AND p.prosrc ~ %s", (rf"\m{table}\M",)
            )[0][0]
            self.ok(named > 0, f"{table}: joined by a view or function")
        connected = {info.tenants_table, *info.tenant_tables, *info.implied_tables, *info.reference_tables}
        for table in info.reference_tables:
            linked = any(
                (fk["parent"] == table and fk["child"] in connected) or (fk["child"] == table and fk["parent"] in
                                                                         info.reference_tables)
                for fk in self.fks
            )
            self.same(linked, table not in info.joined_reference_tables, f"{table}: connected by FK")

    def check_global_rows(self) -> None:
        info = self.info
        found: dict[str, set] = {}
        for table in info.tenant_tables:
            if not info.global_ids:
                continue
            ids = self.column_set(sql.SQL("SELECT {} FROM {} WHERE {} = ANY(%s)").format(
                sql.Identifier(info.global_id_column), sql.Identifier(table), sql.Identifier(info.tenant_column)),
                (list(info.global_ids),))
            if ids:
                found[table] = ids
        self.same(found, {t: set(ids) for t, ids in info.global_rows.items()}, "global rows")
        for table in info.tenant_tables:
            nulls = self.rows(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NULL").format(
                sql.Identifier(table), sql.Identifier(info.tenant_column)))[0][0]
            self.same(nulls, 0, f"{table}: rows with a NULL tenant column")

    def check_functions(self) -> None:
        info = self.info
        procs = self.rows(
            "SELECT p.proname, p.prokind, p.proretset FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname = 'public'"
        )
        names = {r[0] for r in procs}
        self.same(names, set(info.functions) | set(info.internal_functions) | set(info.aggregates), "functions")
        self.same({r[0] for r in procs if r[1] == "a"}, set(info.aggregates), "aggregates")
        for name, call in info.functions.items():
            self.ok(call.tenant is None or call.tenant in info.tenant_ids(self.tenants), f"{name}: tenant id")
            retset = {r[2] for r in procs if r[0] == name}
            self.same(retset, {call.returns_set}, f"{name}: returns a set")
            try:
                cur = self.conn.execute(call.sql)
                first = cur.fetchone()
                type_name = self.rows("SELECT format_type(%s, NULL)", (cur.description[0].type_code,))[0][0]
                self.same(type_name, call.result_type, f"{name}: result type")
                if call.expected is not None:
                    self.same(first[0] if first else None, call.expected, f"{name}: first value")
            except psycopg.Error as exc:
                self.ok(False, f"{name}: {call.sql} failed: {exc}")
            self.conn.rollback()

    def check_triggers(self) -> None:
        found: dict[str, set] = defaultdict(set)
        for table, trigger in self.rows(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND NOT t.tgisinternal AND t.tgparentid = 0"
        ):
            found[table].add(trigger)
        self.same(dict(found), {t: set(n) for t, n in self.info.triggers.items()}, "triggers")
        events = dict(self.rows("SELECT evtname, evtevent FROM pg_event_trigger WHERE evtenabled <> 'D'"))
        self.same(events, dict(self.info.event_triggers), "event triggers")

    def check_views(self) -> None:
        info = self.info
        self.same(self.column_set("SELECT viewname FROM pg_views WHERE schemaname = 'public'"), set(info.views),
                  "views")
        matviews = dict(self.rows("SELECT matviewname, ispopulated FROM pg_matviews WHERE schemaname = 'public'"))
        self.same(set(matviews), set(info.materialized_views), "materialized views")
        self.ok(all(matviews.values()), "materialized views are populated")
        reads: dict[str, set] = defaultdict(set)
        for view, table in self.rows(
            "SELECT DISTINCT v.relname, t.relname FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
            "JOIN pg_class v ON v.oid = r.ev_class JOIN pg_class t ON t.oid = d.refobjid "
            "WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND t.oid <> v.oid"
        ):
            if table in info.shared_only:
                reads[view].add(table)
        self.same(dict(reads), {v: set(t) for v, t in info.views_reading_shared_only.items()},
                  "views reading shared-only tables")
        pattern = re.compile(rf"\b{re.escape(info.tenant_column)}\s*=\s*(\d+)\b")
        named: dict[str, int] = {}
        for view, definition in self.rows(
            "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' UNION ALL "
            "SELECT matviewname, definition FROM pg_matviews WHERE schemaname = 'public'"
        ):
            match = pattern.search(definition)
            if match:
                named[view] = int(match.group(1))
        self.same(named, dict(info.tenant_specific_views), "views naming one tenant")

    def check_types(self) -> None:
        info = self.info
        domains = dict(self.rows(
            "SELECT t.typname, format_type(t.typbasetype, t.typtypmod) FROM pg_type t "
            "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND t.typtype = 'd'"
        ))
        self.same(domains, dict(info.domains), "domains")
        used = self.column_set(
            "SELECT DISTINCT t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relkind IN ('r', 'p') AND a.attnum > 0"
        )
        for domain in info.domains:
            self.ok(domain in used, f"domain {domain} is used by a column")
        enums: dict[str, tuple] = defaultdict(tuple)
        for name, label in self.rows(
            "SELECT t.typname, e.enumlabel FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid "
            "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' ORDER BY t.typname, e.enumsortorder"
        ):
            enums[name] += (label,)
        self.same(dict(enums), dict(info.enums), "enums and their labels")

    def check_sequences(self) -> None:
        info = self.info
        sequences = self.column_set(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind = 'S'"
        )
        unused = {s for s in sequences
                  if not self.rows(sql.SQL("SELECT is_called FROM {}").format(sql.Identifier(s)))[0][0]}
        self.same(unused, set(info.never_used_sequences), "sequences with is_called = false")
        for seq, target in info.never_used_sequences.items():
            table, column = target.split(".")
            owned = self.rows("SELECT pg_get_serial_sequence(%s, %s)", (table, column))[0][0]
            default = self.rows(
                "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d JOIN pg_attribute a "
                "ON a.attrelid = d.adrelid AND a.attnum = d.adnum WHERE d.adrelid = %s::regclass AND a.attname = %s",
                (table, column),
            )
            self.ok(owned == f"public.{seq}" or bool(default and re.search(rf"nextval\('{seq}'", default[0][0])),
                    f"{seq} feeds {target}")
            count = self.rows(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))[0][0]
            self.same(count, 0, f"{table} (fed by never-used {seq}) rows")
        unowned = {s for s in sequences if not self.rows(
            "SELECT 1 FROM pg_depend WHERE classid = 'pg_class'::regclass AND objid = %s::regclass "
            "AND refclassid = 'pg_class'::regclass AND deptype IN ('a', 'i')", (s,))}
        self.same(unowned, set(info.unowned_sequences), "sequences no column owns")

    def check_indexes_and_partitions(self) -> None:
        info = self.info
        pattern = re.compile(rf"\b{re.escape(info.tenant_column)}\s*=\s*(\d+)\b")
        named: dict[str, int] = {}
        for index, predicate in self.rows(
            "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i JOIN pg_class c "
            "ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND i.indpred IS NOT NULL"
        ):
            match = pattern.search(predicate)
            if match:
                named[index] = int(match.group(1))
        self.same(named, dict(info.tenant_specific_indexes), "indexes whose predicate names one tenant")
        parents = self.column_set(
            "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
        )
        self.same(parents, set(info.partitioned), "partitioned tables")
        for parent, partitions in info.partitioned.items():
            children = self.column_set(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass", (parent,))
            self.same(children, set(partitions), f"partitions of {parent}")

    def check_security_and_columns(self) -> None:
        info = self.info
        policies: dict[str, set] = defaultdict(set)
        for table, policy in self.rows("SELECT tablename, policyname FROM pg_policies WHERE schemaname = 'public'"):
            policies[table].add(policy)
        self.same(dict(policies), {t: set(p) for t, p in info.policies.items()}, "RLS policies")
        rls = self.column_set(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relrowsecurity"
        )
        self.same(rls, set(info.policies), "tables with row-level security enabled")
        columns_query = (
            "SELECT c.relname, a.attname, a.attgenerated = 's', a.attidentity IN ('a', 'd') FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attnum > 0"
        )
        generated: dict[str, set] = defaultdict(set)
        identity: dict[str, set] = defaultdict(set)
        for table, column, is_generated, is_identity in self.rows(columns_query):
            if is_generated:
                generated[table].add(column)
            if is_identity:
                identity[table].add(column)
        self.same(dict(generated), {t: set(c) for t, c in info.generated_columns.items()}, "generated columns")
        self.same(dict(identity), {t: set(c) for t, c in info.identity_columns.items()}, "identity columns")
        comments = {}
        for table, column, text in self.rows(
            "SELECT c.relname, a.attname, d.description FROM pg_description d JOIN pg_class c ON c.oid = d.objoid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_attribute a ON a.attrelid = c.oid "
            "AND a.attnum = d.objsubid AND d.objsubid > 0 WHERE d.classoid = 'pg_class'::regclass "
            "AND n.nspname = 'public'"
        ):
            comments[f"{table}.{column}" if column else table] = text
        self.same(comments, dict(info.comments), "comments on tables and columns")

    def check_cycles(self) -> None:
        info = self.info
        for cycle in info.fk_cycles:
            self.same(cycle[-1][2], cycle[0][0], f"cycle {cycle} closes")
            for hop in cycle:
                self.ok(self.fk(hop) is not None, f"cycle hop {hop} is a real FK constraint")
        deferrable = {fk["name"] for fk in self.fks if fk["deferrable"]}
        self.same(deferrable, set(info.deferrable_fks), "deferrable FKs")

    def check_report(self) -> None:
        for name in self.info.report:
            if " " in name:
                continue
            exists = self.rows(
                "SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = %(n)s) "
                "OR EXISTS (SELECT 1 FROM pg_proc WHERE proname = %(n)s) "
                "OR EXISTS (SELECT 1 FROM pg_constraint WHERE conname = %(n)s) "
                "OR EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = %(n)s) "
                "OR EXISTS (SELECT 1 FROM pg_policy WHERE polname = %(n)s) "
                "OR EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = %(n)s) "
                "OR EXISTS (SELECT 1 FROM pg_type WHERE typname = %(n)s)",
                {"n": name},
            )[0][0]
            self.ok(exists, f"report names an existing object: {name}")

    def check_app_actions(self) -> None:
        for action in self.info.app_actions:
            self.ok(action.tenant is None or action.tenant in self.info.tenant_ids(self.tenants),
                    f"{action.name}: tenant id")
            try:
                cur = None
                for statement in action.statements:
                    cur = self.conn.execute(statement)
                if action.expect is not None:
                    assert cur is not None
                    self.same(cur.fetchone(), action.expect, f"app action '{action.name}'")
                else:
                    self.ok(True, action.name)
            except psycopg.Error as exc:
                self.ok(False, f"app action '{action.name}' failed: {exc}")
            self.conn.rollback()

    def run(self) -> None:
        self.load_catalog()
        self.conn.rollback()
        for check in (self.check_tables, self.check_implied, self.check_reference, self.check_global_rows,
                      self.check_types, self.check_sequences, self.check_indexes_and_partitions,
                      self.check_security_and_columns, self.check_cycles, self.check_views, self.check_triggers,
                      self.check_report, self.check_functions, self.check_app_actions):
            try:
                check()
            except Exception as exc:  # a broken check is a failure, not a crash of the whole run
                self.failures.append(f"{check.__name__} raised {type(exc).__name__}: {exc}")
            self.conn.rollback()


def compare_loads(checker: Checker, first: psycopg.Connection, second: psycopg.Connection, info: Any) -> None:
    from support.schemas._catalog import table_checksums, table_objects

    tables = info.all_tables
    checker.same(table_objects(second, tables), table_objects(first, tables), "objects of a second load")
    skip = info.nondeterministic_columns
    checker.same(table_checksums(second, tables, skip), table_checksums(first, tables, skip), "rows of a second load")
    for column in skip:
        table, name = column.split(".")
        checker.ok(name in checker.columns[table], f"nondeterministic column {column} exists")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixtures", nargs="*", metavar="fixture", help=f"any of {', '.join(FIXTURES)} (default: all)")
    parser.add_argument("--versions", default="16,18")
    parser.add_argument("--tenants", default="2,3,5", help="tenant counts to load each fixture with")
    args = parser.parse_args(argv)
    unknown = set(args.fixtures) - set(FIXTURES)
    if unknown:
        parser.error(f"unknown fixture(s): {', '.join(sorted(unknown))}")
    args.fixtures = args.fixtures or list(FIXTURES)

    # handyshop_migration_tests/ is the import root of the tests (it has no __init__.py).
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from handyshop_migration.embedded import EmbeddedPostgres

    modules = {name: importlib.import_module(f"support.schemas.{name}") for name in args.fixtures}
    failed = 0
    for version in (int(v) for v in args.versions.split(",")):
        with tempfile.TemporaryDirectory(prefix="fixtures-") as tmp:
            server = EmbeddedPostgres(Path(tmp) / "data", version=version, durable=False).start()
            try:
                admin = server.spec()
                with admin.connect(autocommit=True) as conn:
                    server_version = conn.execute("SHOW server_version").fetchone()[0]
                for name, module in modules.items():
                    for tenants in (int(t) for t in args.tenants.split(",")):
                        dbname = f"check_{name}_{tenants}"
                        with admin.connect(autocommit=True) as conn:
                            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
                        started = time.monotonic()
                        with admin.with_db(dbname).connect() as conn:
                            module.create(conn, tenants)
                            loaded = time.monotonic() - started
                            rows = sum(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                                sql.Identifier(t))).fetchone()[0] for t in module.INFO.all_tables)
                            checker = Checker(conn, module.INFO, tenants)
                            checker.run()
                        # Deterministic: a second load has the same objects and the same rows.
                        again = f"{dbname}_again"
                        with admin.connect(autocommit=True) as conn:
                            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(again)))
                        with admin.with_db(again).connect() as second:
                            module.create(second, tenants)
                            with admin.with_db(dbname).connect() as first:
                                compare_loads(checker, first, second, module.INFO)
                        status = "ok" if not checker.failures else f"{len(checker.failures)} FAILED"
                        print(f"PostgreSQL {server_version:<6} {name:<8} tenants={tenants}: loaded in "
                              f"{loaded:.2f}s ({rows} rows), {checker.passed} checks passed, {status}")
                        for failure in checker.failures:
                            print(f"    FAIL {failure}")
                        failed += len(checker.failures)
            finally:
                server.stop()
    print("all checks passed" if not failed else f"{failed} checks failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
