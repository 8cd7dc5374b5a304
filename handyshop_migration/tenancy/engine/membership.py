"""Which rows of a table a shop's tenant database holds, and which rows belong to the shop: one place that
turns a table's role into SQL, so that copy, verification, capture, cutover and retirement select exactly
the same rows.

- A **tenant** table: the shop's rows are `tenant_column = N`. Its tenant also holds the rows under the
  catalog's global tenant ids when the table's `global_rows` is `every_tenant` (they stay the shared
  database's: retirement never deletes them). Rows with a NULL tenant column are in no tenant.
- An **implied** table: a row belongs to the tenant its foreign-key path leads to, `child -> parent -> ... ->
  tenant table`: the rows are joined along the path (each hop references a key, so a row joins at most one
  row per hop) and the last table's condition decides. A child of a global row of an `every_tenant` table
  goes to every tenant with its parent.
- A **reference** table: every tenant holds all of it; no row belongs to a shop.

`slice_source` is the rows a tenant holds (copy, verification, the sync's re-read); `owned_source` the rows
that belong to the shop (archive, retirement, copy-back). Both give `FROM … WHERE …` with the table under an
alias, so callers select `alias.column`. `findings` lists, for phase 0, the implied rows whose path leads to
no tenant (they stay behind in the shared database) and the rows whose paths lead to different tenants
(the chosen path decides; the operator should look), with their key values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.engine.catalog import (
    GLOBAL_ROWS_EVERY_TENANT,
    IMPLIED,
    REFERENCE,
    TENANT,
    Catalog,
    Hop,
    Table,
    describe_path,
)

SAMPLE = 20  # ids named per finding


def relation(table: Table) -> sql.Composable:
    """The table for a scan of its own rows: `ONLY t` (no inheritance children), but a partitioned table
    itself, since its rows are in its partitions."""
    ident = sql.Identifier(table.schema, table.name)
    return ident if table.partitioned else sql.SQL("ONLY {}").format(ident)


def columns(alias: str, names: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c)) for c in names)


def _join_path(catalog: Catalog, path: tuple[Hop, ...], alias: str, *, left: bool = False,
               prefix: str | None = None) -> tuple[list[sql.Composable], Table, str]:
    """JOINs along `path` from `alias`; returns them, the table at the end and its alias."""
    joins: list[sql.Composable] = []
    previous = alias
    end: Table | None = None
    for i, hop in enumerate(path):
        end = catalog.table(hop.ref_table)
        here = f"{prefix or alias}_{i + 1}"
        on = sql.SQL(" AND ").join(
            sql.SQL("{}.{} = {}.{}").format(sql.Identifier(previous), sql.Identifier(c), sql.Identifier(here),
                                            sql.Identifier(r))
            for c, r in zip(hop.columns, hop.ref_columns, strict=True)
        )
        joins.append(sql.SQL("{} JOIN {} {} ON {}").format(sql.SQL("LEFT" if left else ""), relation(end),
                                                            sql.Identifier(here), on))
        previous = here
    if end is None:
        raise ValueError("an empty path")
    return joins, end, previous


def _tenant_condition(catalog: Catalog, table: Table, alias: str, shop_id: int, *, owned: bool
                      ) -> tuple[sql.Composable, tuple[object, ...]]:
    tc = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(table.tenant_column))
    if owned or table.global_rows != GLOBAL_ROWS_EVERY_TENANT or not catalog.global_tenant_ids:
        return sql.SQL("{} = %s").format(tc), (shop_id,)
    return sql.SQL("({} = %s OR {} = ANY(%s))").format(tc, tc), (shop_id, list(catalog.global_tenant_ids))


def _source(catalog: Catalog, table: Table, shop_id: int, alias: str, *, owned: bool
            ) -> tuple[sql.Composable, tuple[object, ...]]:
    base = sql.SQL("FROM {} {}").format(relation(table), sql.Identifier(alias))
    if table.role == REFERENCE:
        # always a WHERE clause: callers may append `AND …`
        return sql.SQL("{} WHERE {}").format(base, sql.SQL("false" if owned else "true")), ()
    if table.role == TENANT:
        cond, params = _tenant_condition(catalog, table, alias, shop_id, owned=owned)
        return sql.SQL("{} WHERE {}").format(base, cond), params
    if table.role == IMPLIED:
        joins, end, end_alias = _join_path(catalog, table.path, alias)
        cond, params = _tenant_condition(catalog, end, end_alias, shop_id, owned=owned)
        return sql.SQL("{} {} WHERE {}").format(base, sql.SQL(" ").join(joins), cond), params
    raise ValueError(f"table {table.name} has role {table.role!r}")


def slice_source(catalog: Catalog, table: Table, shop_id: int, alias: str = "t"
                 ) -> tuple[sql.Composable, tuple[object, ...]]:
    """`FROM … WHERE …` of the rows of `table` that shop `shop_id`'s tenant database holds."""
    return _source(catalog, table, shop_id, alias, owned=False)


def owned_source(catalog: Catalog, table: Table, shop_id: int, alias: str = "t"
                 ) -> tuple[sql.Composable, tuple[object, ...]]:
    """`FROM … WHERE …` of the rows of `table` that belong to shop `shop_id` (no global rows, no reference rows)."""
    return _source(catalog, table, shop_id, alias, owned=True)


def owner_expression(catalog: Catalog, table: Table, alias: str = "t") -> tuple[list[sql.Composable], sql.Composable]:
    """LEFT JOINs and the expression giving the tenant a row of an implied or tenant table belongs to (NULL:
    none), for queries over every row."""
    if table.role == TENANT:
        return [], sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(table.tenant_column))
    joins, end, end_alias = _join_path(catalog, table.path, alias, left=True)
    return joins, sql.SQL("{}.{}").format(sql.Identifier(end_alias), sql.Identifier(end.tenant_column))


def owner_lookup(catalog: Catalog, table: Table, row: str) -> sql.Composable:
    """For a trigger on an implied table: the scalar subquery giving the tenant that `row` (NEW or OLD)
    belongs to through its path (NULL: none)."""
    first = table.path[0]
    joins, end, end_alias = _join_path(catalog, table.path[1:], "h_1") if len(table.path) > 1 else ([], None, "h_1")
    end = end or catalog.table(first.ref_table)
    where = sql.SQL(" AND ").join(
        sql.SQL("h_1.{} = {}.{}").format(sql.Identifier(r), sql.SQL(row), sql.Identifier(c))
        for c, r in zip(first.columns, first.ref_columns, strict=True)
    )
    return sql.SQL("(SELECT {}.{}::bigint FROM {} h_1 {} WHERE {})").format(
        sql.Identifier(end_alias), sql.Identifier(end.tenant_column), relation(catalog.table(first.ref_table)),
        sql.SQL(" ").join(joins), where,
    )


def children_through(catalog: Catalog, parent: Table) -> list[tuple[Table, int]]:
    """Implied tables whose path passes through `parent`, with the hop that reaches it: their rows move
    with a row of `parent` (a parent changing its tenant takes its children along)."""
    out = []
    for t in catalog.of_role(IMPLIED):
        for i, hop in enumerate(t.path):
            if hop.ref_table == parent.name:
                out.append((t, i))
                break
    return out


def child_keys_query(catalog: Catalog, child: Table, hop: int, parent: Table) -> sql.Composable:
    """Keys (as jsonb) of `child` rows reaching the `parent` rows whose keys are given as a jsonb array
    (parameter 1), through the first `hop + 1` hops of the child's path."""
    joins, _, end_alias = _join_path(catalog, child.path[: hop + 1], "t")
    key = sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(
        sql.SQL("{}, t.{}").format(sql.Literal(c), sql.Identifier(c)) for c in child.key_columns))
    on = sql.SQL(" AND ").join(sql.SQL("{}.{} = k.{}").format(sql.Identifier(end_alias), sql.Identifier(c),
                                                               sql.Identifier(c)) for c in parent.key_columns)
    return sql.SQL(
        "SELECT DISTINCT {key} FROM {rel} t {joins} JOIN jsonb_populate_recordset(NULL::{p}, %s::jsonb) k ON {on}"
    ).format(key=key, rel=relation(child), joins=sql.SQL(" ").join(joins),
             p=sql.Identifier(parent.schema, parent.name), on=on)


# -- phase 0: rows whose path leads nowhere, or to two tenants -------------------------------------------


@dataclass(frozen=True)
class MembershipFinding:
    table: str
    kind: str  # "orphan" | "ambiguous"
    count: int
    ids: tuple[str, ...]  # key values (ROW text), at most SAMPLE
    detail: str
    shops: tuple[int, ...] = ()  # the tenants the rows' paths lead to

    def line(self) -> str:
        more = f" (first {len(self.ids)})" if self.count > len(self.ids) else ""
        return f"{self.table}: {self.count} {self.kind} rows{more}: {', '.join(self.ids)} — {self.detail}"


def findings(conn: psycopg.Connection, catalog: Catalog, tenants: Sequence[int] | None = None) -> list[MembershipFinding]:
    """For each implied table: rows whose chosen path leads to no tenant (neither a tenant of `tenants`, when
    given, nor a global id) and rows whose paths (the chosen one and the alternatives) lead to different
    tenants. `conn` is a connection to the shared database."""
    out: list[MembershipFinding] = []
    for t in catalog.of_role(IMPLIED):
        key = t.key_columns or tuple(c.name for c in t.tenant_columns)
        ident = sql.SQL("ROW({})::text").format(columns("t", key))
        all_joins: list[sql.Composable] = []
        owners: list[sql.Composable] = []
        for i, path in enumerate((t.path, *t.alternative_paths)):
            joins, end, end_alias = _join_path(catalog, path, "t", left=True, prefix=f"p{i}")
            all_joins.extend(joins)
            owners.append(sql.SQL("{}.{}").format(sql.Identifier(end_alias), sql.Identifier(end.tenant_column)))
        known = list(tenants) if tenants is not None else None
        query = sql.SQL(
            "SELECT kind, count(DISTINCT id), (array_agg(DISTINCT id ORDER BY id))[1:%s],"
            " array_remove(array_agg(DISTINCT s ORDER BY s), NULL) FROM ("
            " SELECT {ident} AS id, o,"
            "  CASE WHEN o[1] IS NULL OR NOT (o[1] = ANY(%s::bigint[]) OR %s::bigint[] IS NULL OR o[1] = ANY(%s::bigint[]))"
            "       THEN 'orphan'"
            "       WHEN (SELECT count(DISTINCT x) FROM unnest(o) x) > 1 THEN 'ambiguous' END AS kind"
            " FROM (SELECT t.*, ARRAY[{owners}]::bigint[] AS o FROM {rel} t {joins}) t"
            ") f LEFT JOIN LATERAL unnest(o) s ON true WHERE kind IS NOT NULL GROUP BY kind ORDER BY kind"
        ).format(ident=ident, owners=sql.SQL(", ").join(owners), rel=relation(t), joins=sql.SQL(" ").join(all_joins))
        rows = conn.execute(query, (SAMPLE, known, known, list(catalog.global_tenant_ids))).fetchall()
        for kind, count, ids, shops in rows:
            if kind == "orphan":
                detail = (f"their path ({describe_path(t.path)}) leads to no tenant: they stay in the shared database "
                          "only; attach them to a parent of a shop, or delete them")
            else:
                detail = (f"their foreign-key paths lead to different tenants; the catalog's path "
                          f"({describe_path(t.path)}) decides where they go — fix the rows or choose another path")
            out.append(MembershipFinding(t.name, kind, int(count), tuple(ids or ()), detail,
                                         tuple(int(x) for x in shops or ())))
    return out


__all__ = [
    "MembershipFinding",
    "child_keys_query",
    "children_through",
    "owner_lookup",
    "columns",
    "findings",
    "owned_source",
    "owner_expression",
    "relation",
    "slice_source",
]
