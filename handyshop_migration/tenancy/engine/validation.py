"""Phase 0: validate the shared database before anything is copied.

The migration script's validation stops at the first problem and knows only two of them (shops without an
owner, users without a shop, with superadmins wrongly taken for a role). This one collects every finding
of the source as it is — structured, with the offending ids and shops — so that an operator (or the
pipeline) decides per shop: errors block, warnings and infos are known facts about the data.

Everything is read in one REPEATABLE READ, READ ONLY transaction (one consistent picture of the data), with
one aggregate query per table and one join per foreign key: no per-row Python, so a table of millions of
rows costs a sequential scan, not a round trip per row. Names only ever reach SQL as
`psycopg.sql.Identifier`, values only as parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog, ForeignKey, Table
from handyshop_migration.tenancy.errors import ConfigurationError
from handyshop_migration.tenancy.names import DEFAULT_GLOBAL_SHOP_IDS

__all__ = ["MAX_IDS", "Finding", "ValidationReport", "validate_source"]

MAX_IDS = 1000  # ids kept per finding: enough to act on, small enough for Dagster metadata
_IDS_IN_MESSAGE = 10
_INT_TYPES = frozenset({"smallint", "integer", "bigint"})
_BUDGET_WARNING = 0.8  # share of the usable connections above which the budget is tight

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Finding:
    check: str  # stable identifier, e.g. "orphan_shop_rows"
    severity: str  # "error" | "warning" | "info"
    message: str  # one line: what, where, how many, what to do
    table: str | None = None
    ids: tuple[int, ...] = ()  # offending row ids (at most MAX_IDS; the message says when capped)
    shop_ids: tuple[int, ...] = ()  # shops concerned
    details: dict[str, Any] = field(default_factory=dict, hash=False)  # small structured extras

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "severity": self.severity,
            "message": self.message,
            "table": self.table,
            "ids": list(self.ids),
            "shop_ids": list(self.shop_ids),
            "details": self.details,
        }


@dataclass(frozen=True)
class ValidationReport:
    findings: tuple[Finding, ...]
    row_counts: dict[str, int]  # per table (master and tenant tables)
    shop_row_counts: dict[int, dict[str, int]]  # shop id (every non-NULL tenant value) -> tenant table -> rows

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == WARNING)

    @property
    def infos(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == INFO)

    @property
    def ok(self) -> bool:
        """No error finding: the migration may start (warnings are known, accepted facts)."""
        return not self.errors

    def by_check(self, name: str) -> list[Finding]:
        return [f for f in self.findings if f.check == name]

    def blocked_shops(self) -> set[int]:
        """Shops named by an error finding. Errors that name no shop (budget, missing tables) block the
        whole run: check `ok` as well."""
        return {s for f in self.errors for s in f.shop_ids}

    def summary(self) -> str:
        return (
            f"{len(self.errors)} errors, {len(self.warnings)} warnings, {len(self.infos)} infos; "
            f"{len(self.row_counts)} tables, {sum(self.row_counts.values())} rows"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "findings": [f.to_dict() for f in self.findings],
            "row_counts": dict(self.row_counts),
            "shop_row_counts": {str(k): dict(v) for k, v in self.shop_row_counts.items()},
        }


def validate_source(
    source: ConnectionSpec,
    catalog: Catalog,
    *,
    global_shop_ids: Sequence[int] = DEFAULT_GLOBAL_SHOP_IDS,
    migrating: Sequence[int] | None = None,
    planned_pools: int | None = None,
    pool_size: int = 2,
    expected_tables: Sequence[str] | None = None,
) -> ValidationReport:
    """Check the shared database `source` against `catalog`; never writes.

    The tenants table and the users table are the catalog's (`catalog.tenants`, `catalog.users`), and only
    the checks the catalog lists in `phase0_checks` run: without a users table, no owner checks.

    The connection budget plans one tenant connection pool per shop being migrated — `migrating` (the shops
    of this migration), or `planned_pools` pools when given, else every shop the tenants table lists —
    each holding `pool_size` connections in steady state: 2 is the migration script's own estimate
    (current + 2 × shops); a pool's maximum (20) is a burst ceiling, and idle connections close after 30 s.
    `expected_tables` are further tables (in the catalog's schema) that must exist besides the catalog's
    tenant and master tables.
    """
    if pool_size < 1:
        raise ConfigurationError(f"pool_size must be at least 1, got {pool_size}.")
    if planned_pools is not None and planned_pools < 0:
        raise ConfigurationError(f"planned_pools must be 0 or more, got {planned_pools}.")
    if planned_pools is None and migrating is not None:
        planned_pools = len(set(migrating))
    with source.connect() as conn:
        # One snapshot for every query: counts, orphans and references describe the same moment.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            return _Validator(
                conn,
                source,
                catalog,
                global_shop_ids=tuple(global_shop_ids),
                planned_pools=planned_pools,
                pool_size=pool_size,
                expected_tables=tuple(expected_tables or ()),
            ).run()
        finally:
            conn.rollback()


# -- helpers --------------------------------------------------------------------------------------------


def _n(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _id_list(ids: Sequence[Any], total: int) -> str:
    """The first ids for a one-line message, saying how many there are and that the list is capped."""
    shown = ", ".join(str(i) for i in ids[:_IDS_IN_MESSAGE])
    if total > len(ids[:_IDS_IN_MESSAGE]):
        shown += ", …"
    if total > MAX_IDS:
        shown += f" (finding lists the first {MAX_IDS} of {total})"
    return shown


def _shops_text(shops: Iterable[int | None]) -> str:
    return ", ".join("NULL" if s is None else str(s) for s in shops)


@dataclass(frozen=True)
class _RowKey:
    """How a row is named in findings: its integer id, or the text of its key when there is none."""

    expression: sql.Composable
    is_int: bool


def _row_key(table: Table, alias: str) -> _RowKey:
    keys = table.key_columns
    if len(keys) == 1 and table.column(keys[0]).type in _INT_TYPES:
        return _RowKey(sql.Identifier(alias, keys[0]), True)
    if len(keys) == 1:
        return _RowKey(sql.SQL("{}::text").format(sql.Identifier(alias, keys[0])), False)
    if keys:
        cols = sql.SQL(", ").join(sql.Identifier(alias, k) for k in keys)
        return _RowKey(sql.SQL("ROW({})::text").format(cols), False)
    # No primary key: the tuple id is stable within this snapshot, which is all a finding needs.
    return _RowKey(sql.SQL("{}::text").format(sql.Identifier(alias, "ctid")), False)


class _Validator:
    def __init__(
        self,
        conn: psycopg.Connection,
        source: ConnectionSpec,
        catalog: Catalog,
        *,
        global_shop_ids: tuple[int, ...],
        planned_pools: int | None,
        pool_size: int,
        expected_tables: tuple[str, ...],
    ) -> None:
        self.conn = conn
        self.source = source
        self.catalog = catalog
        self.tc = catalog.tenant_column
        self.schema = catalog.tables[0].schema if catalog.tables else "public"
        self.global_ids = global_shop_ids
        self.tenants = catalog.tenants
        self.users = catalog.users
        self.shops_table = catalog.tenants.table if catalog.tenants else ""
        self.shops_key = catalog.tenants.key if catalog.tenants else "id"
        self.users_table = catalog.users.table if catalog.users else ""
        # a catalog without phase0_checks (built by hand) runs every check whose tables it names
        self.checks = set(catalog.phase0_checks) if catalog.phase0_checks else None
        self.planned_pools = planned_pools
        self.pool_size = pool_size
        self.expected_tables = expected_tables
        self.findings: list[Finding] = []
        self.row_counts: dict[str, int] = {}
        self.shop_row_counts: dict[int, dict[str, int]] = {}
        self.columns: dict[tuple[str, str], list[str]] = {}  # (schema, table) -> columns in the source
        self.usable: set[str] = set()  # tenant tables complete enough to query
        self.shop_ids: list[int] = []
        self.schema_tables: list[str] = []

    def add(self, check: str, severity: str, message: str, **kwargs: Any) -> None:
        self.findings.append(Finding(check, severity, message, **kwargs))

    def ident(self, name: str, schema: str | None = None) -> sql.Identifier:
        return sql.Identifier(schema or self.schema, name)

    def runs(self, check: str) -> bool:
        return self.checks is None or check in self.checks

    def run(self) -> ValidationReport:
        self.check_tables()
        if self.tenants is not None and self.has(self.shops_table, self.shops_key):
            rows = self.conn.execute(
                sql.SQL("SELECT {} FROM {} ORDER BY 1").format(
                    sql.Identifier(self.shops_key), self.ident(self.shops_table)
                )
            ).fetchall()
            self.shop_ids = [int(r[0]) for r in rows]
        if self.users is not None and self.runs("shops_without_owner"):
            self.check_owners()
        if self.users is not None and self.runs("users_without_shop"):
            self.check_users_without_shop()
        self.check_schema_objects()
        for table in self.catalog.tables:
            if table.name in self.usable:
                self.check_tenant_rows(table)
        for table in self.catalog.tables:
            if table.name in self.usable:
                for fk in table.foreign_keys:
                    self.check_cross_shop(table, fk)
        self.count_other_tables()
        self.check_connection_budget()
        total = sum(self.row_counts.values())
        largest = sorted(self.row_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        self.add(
            "row_counts",
            INFO,
            f"{total} rows in {len(self.row_counts)} tables of {self.source.dbname}; largest: "
            + ", ".join(f"{t} {n}" for t, n in largest),
            details={"tables": dict(self.row_counts), "total": total},
        )
        return ValidationReport(tuple(self.findings), dict(self.row_counts), self.shop_row_counts)

    # -- structure ------------------------------------------------------------------------------------

    def has(self, table: str, *columns: str, schema: str | None = None) -> bool:
        present = self.columns.get((schema or self.schema, table))
        return present is not None and all(c in present for c in columns)

    def check_tables(self) -> None:
        expected: dict[tuple[str, str], str] = {}  # (schema, table) -> why it is expected
        for t in self.catalog.tables:
            expected[t.qualified] = "a tenant table of the catalog"
        for name in self.catalog.master_tables:
            expected.setdefault((self.schema, name), "a master table the catalog's tenant tables reference")
        for name, why in ((self.shops_table, "the tenants table"), (self.users_table, "the users table")):
            if name:
                expected.setdefault((self.schema, name), why)
        for name in self.expected_tables:
            expected.setdefault((self.schema, name), "listed in expected_tables")
        schemas, names = zip(*expected, strict=True) if expected else ((), ())
        rows = self.conn.execute(
            """
            SELECT n.nspname, c.relname, array_agg(a.attname::text ORDER BY a.attnum)
              FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relkind IN ('r', 'p')
               AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[]))
             GROUP BY 1, 2
            """,
            (list(schemas), list(names)),
        ).fetchall()
        self.columns = {(s, t): list(cols) for s, t, cols in rows}
        # Row counts cover the whole schema (packages, logs, ...), not only what the catalog names.
        self.schema_tables = [
            r[0]
            for r in self.conn.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
                (self.schema,),
            ).fetchall()
        ]
        for (schema, name), why in expected.items():
            if (schema, name) not in self.columns:
                self.add(
                    "missing_tables",
                    ERROR,
                    f"table {schema}.{name} ({why}) does not exist in {self.source.dbname}; check that the "
                    "source URL points at the right database, or re-run `handyshop-migration inspect` "
                    "against it if the schema changed.",
                    table=name,
                    details={"schema": schema, "reason": why},
                )
        for t in self.catalog.tables:
            present = self.columns.get(t.qualified)
            if present is None:
                continue
            expected_cols = [c.name for c in t.columns]
            missing = [c for c in expected_cols if c not in present]
            extra = [c for c in present if c not in expected_cols]
            if missing:
                self.add(
                    "missing_columns",
                    ERROR,
                    f"{t.name} lacks the catalog's columns {', '.join(missing)}; the copy would fail. "
                    "Re-run `handyshop-migration inspect` against this source.",
                    table=t.name,
                    details={"columns": missing},
                )
            if extra:
                self.add(
                    "extra_columns",
                    WARNING,
                    f"{t.name} has columns the catalog does not know ({', '.join(extra)}); the copy would "
                    "leave them out. Re-run `handyshop-migration inspect` against this source.",
                    table=t.name,
                    details={"columns": extra},
                )
            needed = {t.tenant_column, *t.key_columns, *(c for fk in t.foreign_keys for c in fk.columns)}
            if needed <= set(present):
                self.usable.add(t.name)

    # -- users and shops --------------------------------------------------------------------------------

    def check_owners(self) -> None:
        assert self.users is not None  # noqa: S101 - run() checks
        users, u = self.users_table, self.users
        utc = u.tenant_column
        if not (u.role_column and self.has(self.shops_table, self.shops_key) and self.has(users, "id", utc, u.role_column)):
            return
        alive = (
            sql.SQL(" AND u.{} IS NULL").format(sql.Identifier(u.deleted_column))
            if u.deleted_column and self.has(users, u.deleted_column) else sql.SQL("")
        )  # a deleted owner cannot log in: the shop has no usable owner
        rows = self.conn.execute(
            sql.SQL(
                "SELECT s.{key} FROM {shops} s WHERE NOT EXISTS "
                "(SELECT 1 FROM {users} u WHERE u.{tc} = s.{key} AND u.{role} = %s{alive}) ORDER BY 1"
            ).format(shops=self.ident(self.shops_table), users=self.ident(users), tc=sql.Identifier(utc),
                     key=sql.Identifier(self.shops_key), role=sql.Identifier(u.role_column), alive=alive),
            (u.owner_role,),
        ).fetchall()
        shops = [int(r[0]) for r in rows]
        if shops:
            self.add(
                "shops_without_owner",
                WARNING,
                f"{_n(len(shops), 'shop')} without an active owner ({users}.{u.role_column} = '{u.owner_role}'): "
                f"{_id_list(shops, len(shops))}; "
                "they can be migrated, but nobody can log in as their owner — assign an owner in the app.",
                table=self.shops_table,
                ids=tuple(shops[:MAX_IDS]),
                shop_ids=tuple(shops),
                details={"count": len(shops)},
            )

    def check_users_without_shop(self) -> None:
        assert self.users is not None  # noqa: S101 - run() checks
        users, u = self.users_table, self.users
        if not self.has(users, "id", u.tenant_column):
            return
        conditions = [sql.SQL("{} IS NULL").format(sql.Identifier(u.tenant_column))]
        # Superadmins are a flag, not a role: they have no shop by design.
        if u.superadmin_column and self.has(users, u.superadmin_column):
            conditions.append(sql.SQL("NOT coalesce({}, false)").format(sql.Identifier(u.superadmin_column)))
        if u.deleted_column and self.has(users, u.deleted_column):
            # deleted accounts never log in again
            conditions.append(sql.SQL("{} IS NULL").format(sql.Identifier(u.deleted_column)))
        rows = self.conn.execute(
            sql.SQL("SELECT id, count(*) OVER () FROM {} WHERE {} ORDER BY id LIMIT %s").format(
                self.ident(users), sql.SQL(" AND ").join(conditions)
            ),
            (MAX_IDS,),
        ).fetchall()
        if rows:
            ids, total = [int(r[0]) for r in rows], int(rows[0][1])
            self.add(
                "users_without_shop",
                WARNING,
                f"{_n(total, 'user')} without a shop (not superadmins): {_id_list(ids, total)}; "
                f"they will not reach any tenant database — set {users}.{u.tenant_column} or delete them.",
                table=users,
                ids=tuple(ids),
                details={"count": total},
            )

    # -- tenant rows ------------------------------------------------------------------------------------

    def check_tenant_rows(self, table: Table) -> None:
        tc = sql.Identifier(table.tenant_column)
        ident = sql.Identifier(table.schema, table.name)
        counts: dict[int | None, int] = {
            (None if shop is None else int(shop)): int(n)
            for shop, n in self.conn.execute(
                sql.SQL("SELECT {tc}, count(*) FROM {t} GROUP BY 1").format(tc=tc, t=ident)
            ).fetchall()
        }
        self.row_counts[table.name] = sum(counts.values())
        for shop in (*self.shop_ids, *(s for s in counts if s is not None)):
            zeros = {t.name: 0 for t in self.catalog.tables if t.name in self.usable}
            self.shop_row_counts.setdefault(shop, zeros)
            self.shop_row_counts[shop][table.name] = counts.get(shop, 0)

        known = set(self.shop_ids)
        globals_ = sorted(s for s in counts if s is not None and s in self.global_ids)
        orphans = sorted(s for s in counts if s is not None and s not in known and s not in self.global_ids)
        if self.tenants is None or not self.runs("orphan_shop_rows"):
            orphans = []
        nulls = counts.get(None, 0)
        if not (nulls or globals_ or orphans):
            return

        # Ids of the unusual rows only, at most MAX_IDS per shop value, in one scan.
        key = _row_key(table, "t")
        rows = self.conn.execute(
            sql.SQL(
                "SELECT shop, key FROM (SELECT t.{tc} AS shop, {key} AS key, "
                "row_number() OVER (PARTITION BY t.{tc} ORDER BY {key}) AS rn FROM {t} t "
                "WHERE t.{tc} IS NULL OR t.{tc} = ANY(%s::bigint[])) s WHERE rn <= %s ORDER BY key"
            ).format(tc=tc, key=key.expression, t=ident),
            (globals_ + orphans, MAX_IDS),
        ).fetchall()
        keys: dict[int | None, list[Any]] = {}
        for shop, k in rows:
            keys.setdefault(None if shop is None else int(shop), []).append(k)

        def emit(check: str, severity: str, shops: list[int | None], what: str, todo: str) -> None:
            total = sum(counts[s] for s in shops)
            found = sorted(k for s in shops for k in keys.get(s, []))[:MAX_IDS]
            per_shop = {("NULL" if s is None else s): counts[s] for s in shops}
            self.add(
                check,
                severity,
                f"{table.name}: {_n(total, 'row')} {what}: {'ids' if key.is_int else 'keys'} "
                f"{_id_list(found, total)}; {todo}",
                table=table.name,
                ids=tuple(found) if key.is_int else (),
                shop_ids=tuple(s for s in shops if s is not None),
                details={"count": total, "rows_per_shop": per_shop, **({} if key.is_int else {"keys": found})},
            )

        if nulls:
            emit("null_shop_rows", WARNING, [None], f"with {table.tenant_column} NULL",
                 "they stay in the shared database and no tenant receives them; assign a shop if they belong to one.")
        if globals_:
            emit("global_rows", INFO, list(globals_), f"under the global shop ids {_shops_text(globals_)}",
                 "known global data, left in the shared database (not copied to a tenant).")
        if orphans:
            emit("orphan_shop_rows", ERROR, list(orphans),
                 f"under shop ids without a {self.shops_table} row ({_shops_text(orphans)})",
                 "nobody would receive them: reassign them to an existing shop, delete them, or add the ids "
                 "to global_shop_ids if they are global data.")

    def check_cross_shop(self, child: Table, fk: ForeignKey) -> None:
        if fk.ref_table not in self.usable:
            return
        parent = self.catalog.table(fk.ref_table)
        # The tenant column inside a composite FK already pins the shop; the rest says which parent row.
        pairs = [
            (c, r) for c, r in zip(fk.columns, fk.ref_columns, strict=True)
            if c != child.tenant_column and r != parent.tenant_column
        ]
        if not pairs:
            return
        child_key, parent_key = _row_key(child, "c"), _row_key(parent, "p")
        query = sql.SQL(
            "SELECT c.{ctc}, p.{ptc}, count(*), "
            "(array_agg({ck} ORDER BY {ck}))[1:%s], (array_agg({pk} ORDER BY {ck}))[1:%s] "
            "FROM {child} c JOIN {parent} p ON {join} "
            "WHERE c.{ctc} IS DISTINCT FROM p.{ptc} GROUP BY 1, 2 ORDER BY 1, 2"
        ).format(
            ctc=sql.Identifier(child.tenant_column),
            ptc=sql.Identifier(parent.tenant_column),
            ck=child_key.expression,
            pk=parent_key.expression,
            child=sql.Identifier(child.schema, child.name),
            parent=sql.Identifier(parent.schema, parent.name),
            join=sql.SQL(" AND ").join(
                sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(c)) for c, r in pairs
            ),
        )
        groups = self.conn.execute(query, (MAX_IDS, MAX_IDS)).fetchall()
        if not groups:
            return
        references = sorted(
            ((ck, pk, row_shop, parent_shop) for row_shop, parent_shop, _, cks, pks in groups
             for ck, pk in zip(cks, pks, strict=True)),
            key=lambda r: r[0],
        )[:MAX_IDS]
        total = sum(int(g[2]) for g in groups)
        shops = sorted({s for g in groups for s in g[:2] if s is not None})
        columns = ", ".join(fk.columns)
        sample = "; ".join(
            f"{child.name} {ck} (shop {_shops_text([rs])}) → {parent.name} {pk} (shop {_shops_text([ps])})"
            for ck, pk, rs, ps in references[:3]
        )
        capped = f" (finding lists the first {MAX_IDS} of {total})" if total > MAX_IDS else ""
        self.add(
            "cross_shop_references",
            ERROR,
            f"{child.name}.{columns} → {parent.name}: {_n(total, 'row references', 'rows reference')} a "
            f"{parent.name} row of "
            f"another shop: {sample}{', …' if total > 3 else ''}{capped}; the copy would break these references — "
            f"re-point the rows or move the parent to the same shop before migrating shops {_shops_text(shops)}.",
            table=child.name,
            ids=tuple(r[0] for r in references) if child_key.is_int else (),
            shop_ids=tuple(shops),
            details={
                "count": total,
                "constraint": fk.name,
                "columns": list(fk.columns),
                "parent_table": parent.name,
                "parent_ids": sorted({r[1] for r in references}),
                "references": [
                    {"id": ck, "parent_id": pk, "shop": rs, "parent_shop": ps} for ck, pk, rs, ps in references
                ],
                "shop_pairs": [
                    {"shop": rs, "parent_shop": ps, "rows": int(n)} for rs, ps, n, _, _ in groups
                ],
            },
        )

    # -- the rest -------------------------------------------------------------------------------------------

    def check_schema_objects(self) -> None:
        """What the tenant schema leaves out or changes (the catalog's findings): known, accepted facts —
        a warning when something is left out or will fail, an info when it is rewritten faithfully."""
        if not self.runs("schema_objects"):
            return
        for f in self.catalog.findings:
            faithful = f.action == "rewritten" or f.action.startswith("only in tenant")
            # a foreign key to a table that stays shared: the column and its values stay, only the check goes
            severity = INFO if faithful or f.object.startswith("foreign key ") else WARNING
            self.add(
                "schema_objects",
                severity,
                f"{f.object}: {f.action} in tenant databases — {f.reason}.",
                details={"object": f.object, "action": f.action, "reason": f.reason},
            )

    def count_other_tables(self) -> None:
        for name in self.schema_tables:
            if name in self.row_counts:
                continue  # a tenant table, counted by its GROUP BY
            row = self.conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self.ident(name))).fetchone()
            self.row_counts[name] = int(row[0]) if row else 0

    def check_connection_budget(self) -> None:
        row = one_row(
            self.conn,
            """
            SELECT current_setting('max_connections')::int,
                   current_setting('superuser_reserved_connections')::int,
                   coalesce(current_setting('reserved_connections', true)::int, 0),
                   (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int
            """,
        )
        max_conn, su_reserved, reserved, current = (int(v) for v in row)
        # Tenant pools log in as ordinary roles: the reserved slots are not theirs.
        usable = max_conn - su_reserved - reserved
        pools = len(self.shop_ids) if self.planned_pools is None else self.planned_pools
        needed = current + pools * self.pool_size
        details = {
            "max_connections": max_conn,
            "reserved_connections": su_reserved + reserved,
            "usable_connections": usable,
            "current_connections": current,
            "planned_pools": pools,
            "pool_size": self.pool_size,
            "needed_connections": needed,
        }
        numbers = (
            f"{needed} connections needed ({current} open now + {pools} tenant pools × {self.pool_size}) of "
            f"{usable} usable (max_connections {max_conn} minus {su_reserved + reserved} reserved)"
        )
        if needed > usable:
            self.add(
                "connection_budget",
                ERROR,
                f"connection budget exceeded: {numbers}; raise max_connections to at least "
                f"{needed + su_reserved + reserved} (needs a server restart) or plan fewer or smaller pools.",
                details=details,
            )
        elif needed > _BUDGET_WARNING * usable:
            self.add(
                "connection_budget",
                WARNING,
                f"connection budget tight: {numbers}, over {int(_BUDGET_WARNING * 100)} %; consider raising "
                "max_connections or smaller pools.",
                details=details,
            )
        else:
            self.add("connection_budget", INFO, f"connection budget fine: {numbers}.", details=details)
