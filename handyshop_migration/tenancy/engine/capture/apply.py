"""One change applier for both directions: the shared database's log into a tenant (phase 3, the drain of
the cutover) and a tenant's log back into the shared database (the way back from phase 4).

The two directions differ only in the log (and whether it is filtered by shop), whether the origin's and
the target's rows carry the tenant column, and the clash policy (a key the shared database holds for
another shop is never overwritten). Each round: one REPEATABLE READ snapshot of the origin; the current
rows of the logged keys are upserted into the target (parents first), keys that vanished or left the shop
deleted (children first), tables without a key copied again whole — one target transaction, in replica
mode; then the consumed log entries are deleted. A crash between the two re-applies the round: harmless,
a key is re-read, not replayed.

Bounded: a sync ends at a watermark taken when it starts — the origin's snapshot (and the log sequence's
value) then: it consumes exactly the entries committed before it started, so a sustained writer cannot
keep it going; what arrives later is the next sync's. `until_pending_below=N` ends it sooner, once fewer
than N changes are pending: the pre-fence sync of a cutover needs a lag small enough for a short fence,
not zero.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.db import one_row, replaying
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import membership
from handyshop_migration.tenancy.engine.capture.shared import Lag
from handyshop_migration.tenancy.engine.catalog import REFERENCE, Catalog, Table
from handyshop_migration.tenancy.engine.copy import SourceSnapshot, copy_out, stream_copy
from handyshop_migration.tenancy.errors import CaptureError
from handyshop_migration.tenancy.names import capture, control


@dataclass(frozen=True)
class Direction:
    name: str
    log: sql.Identifier  # the change log, in the origin database
    log_by_shop: bool  # the log holds several shops' entries (a shop_id column)
    origin_has_shop_column: bool  # rows at the origin carry the tenant column
    target_has_shop_column: bool  # rows at the target carry it: never touch another shop's row there
    bookkeeping: bool  # record sync_state and the touched keys (the shared side keeps them)


TO_TENANT = Direction("shared database → tenant", capture("changes"), True, True, False, True)
TO_SHARED = Direction("tenant → shared database", control("changes"), False, False, True, False)
# A tenant database moved to another server (tenancy.fleet.move): neither side carries the tenant column;
# the move reads the origin's log by watermark itself and never consumes it (`apply_keys`).
TENANT_TO_TENANT = Direction("tenant → tenant", control("changes"), False, False, False, False)


@dataclass
class SyncResult:
    shop_id: int
    direction: str = TO_TENANT.name
    changes: int = 0  # change-log entries consumed
    upserted: int = 0
    deleted: int = 0
    recopied: list[str] = field(default_factory=list)  # tables without a key, copied again
    rounds: int = 0
    seconds: float = 0.0
    snapshot: str = ""  # the last round's snapshot of the origin
    watermark: str = ""  # the origin's snapshot when the sync started: it consumed what that snapshot saw
    stopped: str = ""  # "watermark" | "pending below N" | "max rounds"
    lag: Lag = Lag(0, 0, 0.0)  # pending changes when the sync ended (all of them, after the watermark too)


# -- reading the log and the rows ---------------------------------------------------------------------------


def _keys_json(keys: Iterable[dict[str, Any]]) -> str:
    return json.dumps(list(keys), ensure_ascii=False)


def key_text(key: dict[str, Any], table: Table) -> str:
    return json.dumps([key.get(c) for c in table.key_columns], sort_keys=True, default=str)


def _join_keys(table: Table, alias: str = "t", keys: str = "k") -> sql.Composable:
    return sql.SQL(" AND ").join(
        sql.SQL("{a}.{c} = {k}.{c}").format(a=sql.Identifier(alias), k=sql.Identifier(keys), c=sql.Identifier(c))
        for c in table.key_columns
    )


def _fetch_rows(conn: psycopg.Connection, table: Table, keys: Sequence[dict[str, Any]],
                slice_of: tuple[Catalog, int] | None = None) -> list[dict[str, Any]]:
    """Current rows for `keys` (as jsonb objects: every type survives the round trip exactly); with
    `slice_of` (catalog, shop) only those the shop's tenant holds (`membership.slice_source`)."""
    if slice_of is None:
        source: sql.Composable = sql.SQL("FROM {} t").format(membership.relation(table))
        where: sql.Composable = sql.SQL("WHERE true")
        params: tuple[object, ...] = ()
    else:
        source, params = membership.slice_source(slice_of[0], table, slice_of[1])
        where = sql.SQL("")
    query = sql.SQL(
        "SELECT to_jsonb(t) {source} {where} AND EXISTS (SELECT 1 FROM jsonb_populate_recordset(NULL::{t}, %s::jsonb) k "
        "WHERE {on})"
    ).format(source=source, where=where, t=sql.Identifier(table.schema, table.name), on=_join_keys(table))
    return [r[0] for r in conn.execute(query, (*params, _keys_json(keys))).fetchall()]


def _children(conn: psycopg.Connection, catalog: Catalog, keys: dict[str, dict[str, dict[str, Any]]]) -> None:
    """Add to `keys` the keys of implied rows whose path passes through a row with a key in `keys`: a parent
    that changed its tenant (or went) takes its children along, though no child row changed."""
    for parent_name in list(keys):
        parent = catalog.table(parent_name)
        if not parent.key_columns:
            continue
        for child, hop in membership.children_through(catalog, parent):
            if not child.key_columns:
                continue
            query = membership.child_keys_query(catalog, child, hop, parent)
            for (key,) in conn.execute(query, (_keys_json(keys[parent_name].values()),)).fetchall():
                keys.setdefault(child.name, {})[key_text(key, child)] = key


@dataclass
class _Batch:
    ids: list[int]
    keys: dict[str, dict[str, dict[str, Any]]]  # table -> key text -> key
    keyless: set[str]


def _read_batch(rows: Sequence[tuple[int, str, dict[str, Any]]], catalog: Catalog) -> _Batch:
    batch = _Batch([], {}, set())
    known = set(catalog.table_names)
    for change_id, table_name, key in rows:
        batch.ids.append(change_id)
        if table_name not in known:
            continue  # a table outside the catalog: not migrated, nothing to apply
        table = catalog.table(table_name)
        if not table.key_columns:
            batch.keyless.add(table_name)
            continue
        batch.keys.setdefault(table_name, {})[key_text(key, table)] = key
    return batch


def _shop_filter(direction: Direction, shop_id: int) -> tuple[sql.Composable, tuple[int, ...]]:
    if direction.log_by_shop:
        return sql.SQL("shop_id = %s AND "), (shop_id,)
    return sql.SQL(""), ()


def _watermark(conn: psycopg.Connection, direction: Direction) -> tuple[str, int]:
    """(snapshot, highest id handed out): the entries visible in that snapshot are this sync's. The
    sequence is read in the same statement, after the snapshot was taken, so it covers all of them."""
    row = one_row(
        conn,
        "SELECT pg_current_snapshot()::text, pg_sequence_last_value(pg_get_serial_sequence(%s, 'id'))",
        (direction.log.as_string(None),),
    )
    conn.rollback()
    return str(row[0]), int(row[1] or 0)


def pending(conn: psycopg.Connection, direction: Direction, shop_id: int) -> Lag:
    where, params = _shop_filter(direction, shop_id)
    row = one_row(
        conn,
        sql.SQL(
            "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(captured_at)), 0) FROM {} WHERE {}true"
        ).format(direction.log, where),
        params,
    )
    conn.rollback()
    return Lag(shop_id, int(row[0]), float(row[1]))


# -- writing the target -------------------------------------------------------------------------------------


def _upsert(conn: psycopg.Connection, table: Table, rows: list[dict[str, Any]], shop_column: tuple[str, int] | None) -> int:
    """INSERT … ON CONFLICT DO UPDATE of whole rows. With `shop_column` (the shared side) the tenant column
    is set, and a conflicting row of another shop is left alone (the count tells the caller)."""
    if not rows:
        return 0
    cols = list(table.copy_columns)
    conflict = list(table.primary_key.columns if (table.primary_key and shop_column) else table.key_columns)
    target = list(cols)
    select: list[sql.Composable] = [sql.Identifier(c) for c in cols]
    if shop_column is not None:
        target.insert(0, shop_column[0])
        select.insert(0, sql.Literal(shop_column[1]))
    updated = [c for c in cols if c not in conflict]
    updates = sql.SQL(", ").join(sql.SQL("{c} = excluded.{c}").format(c=sql.Identifier(c)) for c in updated)
    guard = (
        sql.SQL(" WHERE t.{} = {}").format(sql.Identifier(shop_column[0]), sql.Literal(shop_column[1]))
        if shop_column is not None
        else sql.SQL("")
    )
    action = sql.SQL("DO UPDATE SET {}{}").format(updates, guard) if updated else sql.SQL("DO NOTHING")
    identity = any(table.column(c).identity is not None and table.column(c).identity.always for c in cols)  # type: ignore[union-attr]
    query = sql.SQL(
        "INSERT INTO {t} AS t ({target}) {override}SELECT {select} FROM jsonb_populate_recordset(NULL::{t}, %s::jsonb) "
        "ON CONFLICT ({conflict}) {action}"
    ).format(
        t=sql.Identifier(table.schema, table.name),
        target=sql.SQL(", ").join(map(sql.Identifier, target)),
        override=sql.SQL("OVERRIDING SYSTEM VALUE " if identity else ""),
        select=sql.SQL(", ").join(select),
        conflict=sql.SQL(", ").join(map(sql.Identifier, conflict)),
        action=action,
    )
    return conn.execute(query, (json.dumps(rows, ensure_ascii=False),)).rowcount


def _delete(conn: psycopg.Connection, table: Table, keys: list[dict[str, Any]], shop_column: tuple[str, int] | None) -> int:
    if not keys:
        return 0
    on = [_join_keys(table)]
    if shop_column is not None:
        on.append(sql.SQL("t.{} = {}").format(sql.Identifier(shop_column[0]), sql.Literal(shop_column[1])))
    query = sql.SQL("DELETE FROM {r} t USING jsonb_populate_recordset(NULL::{t}, %s::jsonb) k WHERE {on}").format(
        r=membership.relation(table), t=sql.Identifier(table.schema, table.name), on=sql.SQL(" AND ").join(on)
    )
    return conn.execute(query, (_keys_json(keys),)).rowcount


def _clash(conn: psycopg.Connection, table: Table, rows: list[dict[str, Any]], shop_id: int) -> str:
    keys = [{c: r.get(c) for c in table.key_columns} for r in rows]
    clashes = conn.execute(
        sql.SQL(
            "SELECT {tc}, {kc} FROM ONLY {t} t JOIN jsonb_populate_recordset(NULL::{t}, %s::jsonb) k ON {on} "
            "WHERE t.{tc} IS DISTINCT FROM %s LIMIT 20"
        ).format(
            tc=sql.Identifier(table.tenant_column),
            kc=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in table.key_columns),
            t=sql.Identifier(table.schema, table.name),
            on=_join_keys(table),
        ),
        (_keys_json(keys), shop_id),
    ).fetchall()
    described = ", ".join(f"{list(r[1:])} (shop {r[0]})" for r in clashes)
    return (
        f"copying back shop {shop_id}'s {table.name}: the shared database holds these keys for other shops: "
        f"{described}; nothing of this round was written. Give the tenant rows new ids, then roll back again."
    )


def recopy_table(
    direction: Direction, origin: psycopg.Connection, target: psycopg.Connection, table: Table, shop_id: int,
    catalog: Catalog | None = None,
) -> int:
    """Replace the shop's rows of `table` at the target with the origin's (inside the caller's replica-mode
    target transaction; `origin` is a snapshot connection): the fallback for tables without a key, and the
    copy-back of such tables. DELETE, not TRUNCATE: foreign keys of other tables may point here."""
    ident = sql.Identifier(table.schema, table.name)
    tc = sql.Identifier(table.tenant_column)
    if not direction.target_has_shop_column:
        target.execute(sql.SQL("DELETE FROM {}").format(membership.relation(table)))
        if not direction.origin_has_shop_column:  # tenant to tenant: the whole table is the shop's
            return copy_whole_table(origin, target, table, freeze=False)
        return stream_copy(origin, target, table, shop_id, freeze=False, catalog=catalog)[0]
    if not table.tenant_column:
        raise CaptureError(f"{table.name} has neither a key nor a tenant column: its rows cannot be copied back "
                           "to the shared database per shop; give it a primary key.")
    target.execute(sql.SQL("DELETE FROM ONLY {} WHERE {} = %s").format(ident, tc), (shop_id,))
    cols = sql.SQL(", ").join(map(sql.Identifier, table.copy_columns))
    # Text: the shop id is a literal of the query, and text needs no exact type match for it.
    out = sql.SQL("COPY (SELECT %s, {} FROM ONLY {}) TO STDOUT").format(cols, ident)
    with target.cursor() as cur:
        with cur.copy(sql.SQL("COPY {} ({}, {}) FROM STDIN").format(ident, tc, cols)) as sink:
            for chunk in copy_out(origin, out, (shop_id,)):
                sink.write(chunk)
        return cur.rowcount


def copy_whole_table(origin: psycopg.Connection, target: psycopg.Connection, table: Table, *, freeze: bool) -> int:
    """Every row of a tenant table from `origin` (a tenant database, inside its snapshot) into the same
    table of `target` (inside the caller's transaction; `freeze` needs the table emptied by TRUNCATE in it)."""
    fmt = sql.SQL("binary" if table.binary_copy_safe else "text")
    cols = sql.SQL(", ").join(map(sql.Identifier, table.copy_columns))
    ident = sql.Identifier(table.schema, table.name)
    out = sql.SQL("COPY (SELECT {} FROM ONLY {}) TO STDOUT (FORMAT {})").format(cols, ident, fmt)
    sink = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {}{})").format(
        ident, cols, fmt, sql.SQL(", FREEZE" if freeze else "")
    )
    with target.cursor() as cur:
        with cur.copy(sink) as copy:
            for chunk in copy_out(origin, out):
                copy.write(chunk)
        return cur.rowcount


def copy_back_tables(tenant: ConnectionSpec, source: ConnectionSpec, tables: Sequence[Table], shop_id: int) -> None:
    """Tables copied back whole: the shop's rows in the shared database replaced by the tenant's, in one
    transaction, from one snapshot of the tenant."""
    with SourceSnapshot(tenant) as snap, source.connect() as sconn, replaying(sconn):
        for t in tables:
            recopy_table(TO_SHARED, snap.conn, sconn, t, shop_id)


# -- the applier --------------------------------------------------------------------------------------------


def apply_changes(
    direction: Direction,
    origin: ConnectionSpec,
    target: ConnectionSpec,
    catalog: Catalog,
    shop_id: int,
    *,
    until_pending_below: int | None = None,
    batch_size: int = 5000,
    max_rounds: int | None = None,
) -> SyncResult:
    """Apply the shop's logged changes from `origin` to `target` up to the watermark (see the module doc).

    TO_TENANT: origin the shared database, target the shop's tenant database (as the tenant role, or the
    admin). TO_SHARED: origin the tenant, target the shared database; a key the shared database holds for
    another shop stops the round (CaptureError, nothing of it written)."""
    started = time.perf_counter()
    result = SyncResult(shop_id, direction=direction.name)
    where, params = _shop_filter(direction, shop_id)
    with origin.connect() as log_conn, target.connect() as tconn:
        result.watermark, high = _watermark(log_conn, direction)
        batch_query = sql.SQL(
            "SELECT id, table_name, key FROM {} WHERE {}id <= %s AND pg_visible_in_snapshot(xid, %s::pg_snapshot) "
            "ORDER BY id LIMIT %s"
        ).format(direction.log, where)
        while True:
            if max_rounds is not None and result.rounds >= max_rounds:
                result.stopped = "max rounds"
                break
            if until_pending_below is not None and pending(log_conn, direction, shop_id).pending < until_pending_below:
                result.stopped = f"pending below {until_pending_below}"
                break
            with SourceSnapshot(origin) as snap:
                rows = snap.conn.execute(batch_query, (*params, high, result.watermark, batch_size)).fetchall()
                if not rows:
                    result.stopped = "watermark"
                    break
                with replaying(tconn):
                    batch = apply_keys(direction, snap.conn, tconn, catalog, shop_id, rows, result)
                result.snapshot = snap.token
            _consume(log_conn, direction, shop_id, batch, result.snapshot)
            result.changes += len(batch.ids)
            result.rounds += 1
        result.lag = pending(log_conn, direction, shop_id)
    result.seconds = time.perf_counter() - started
    return result


def apply_keys(
    direction: Direction,
    origin: psycopg.Connection,
    target: psycopg.Connection,
    catalog: Catalog,
    shop_id: int,
    rows: Sequence[tuple[int, str, dict[str, Any]]],
    result: SyncResult,
) -> _Batch:
    """One batch of log entries `(id, table_name, key)` applied: the current rows of their keys read from
    `origin` (a connection inside the round's snapshot) upserted into `target` (parents first), the keys that
    vanished or left the shop deleted (children first), tables without a key copied again whole. Runs in the
    caller's replica-mode target transaction (`replaying`), so a round is all or nothing; counts go into
    `result`. Shared by `apply_changes` and a tenant's move between servers (`tenancy.fleet.move`), which
    reads its log by watermark instead of consuming it."""
    # the shared database stays the owner of reference rows: a tenant's change to one is not copied back
    order = [t.name for t in catalog.tables if direction.origin_has_shop_column or t.role != REFERENCE]
    shop_column = lambda t: (  # noqa: E731 - implied tables have no tenant column to set or guard
        (t.tenant_column, shop_id) if direction.target_has_shop_column and t.tenant_column else None)
    batch = _read_batch(rows, catalog)
    if direction.origin_has_shop_column:
        # children move with their parents: found at the origin (entering) and the target (leaving)
        _children(origin, catalog, batch.keys)
        _children(target, catalog, batch.keys)
    upserts: dict[str, list[dict[str, Any]]] = {}
    deletes: dict[str, list[dict[str, Any]]] = {}
    for name, keys in batch.keys.items():
        if name not in order:
            continue
        table = catalog.table(name)
        current = _fetch_rows(origin, table, list(keys.values()),
                              (catalog, shop_id) if direction.origin_has_shop_column else None)
        present = {key_text(r, table) for r in current}
        upserts[name] = current
        deletes[name] = [k for text, k in keys.items() if text not in present]
    for name in order:
        table = catalog.table(name)
        wanted = upserts.get(name, [])
        done = _upsert(target, table, wanted, shop_column(table))
        if direction.target_has_shop_column and done != len(wanted):
            raise CaptureError(_clash(target, table, wanted, shop_id))
        result.upserted += done
    for name in reversed(order):
        table = catalog.table(name)
        result.deleted += _delete(target, table, deletes.get(name, []), shop_column(table))
    for name in order:
        if name in batch.keyless:
            recopy_table(direction, origin, target, catalog.table(name), shop_id, catalog)
            result.recopied.append(name)
    return batch


def _consume(conn: psycopg.Connection, direction: Direction, shop_id: int, batch: _Batch, snapshot: str) -> None:
    """Delete the applied entries; on the shared side also record the keys for the incremental verification
    and the sync state — in the same transaction, so no applied key is forgotten."""
    where, params = _shop_filter(direction, shop_id)
    with conn.transaction():
        conn.execute(sql.SQL("DELETE FROM {} WHERE {}id = ANY(%s)").format(direction.log, where), (*params, batch.ids))
        if not direction.bookkeeping:
            return
        touched = [(name, json.dumps(k, ensure_ascii=False)) for name, keys in batch.keys.items() for k in keys.values()]
        touched += [(name, "{}") for name in batch.keyless]
        if touched:
            conn.execute(
                "INSERT INTO handyshop_capture.touched (shop_id, table_name, key) "
                "SELECT %s, n, k::jsonb FROM unnest(%s::text[], %s::text[]) u(n, k) "
                "ON CONFLICT (shop_id, table_name, key) DO UPDATE SET touched_at = now()",
                (shop_id, [n for n, _ in touched], [k for _, k in touched]),
            )
        conn.execute(
            "INSERT INTO handyshop_capture.sync_state AS s (shop_id, last_change_id, changes_applied, snapshot) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (shop_id) DO UPDATE SET synced_at = now(), "
            "last_change_id = greatest(s.last_change_id, excluded.last_change_id), "
            "changes_applied = s.changes_applied + excluded.changes_applied, snapshot = excluded.snapshot",
            (shop_id, max(batch.ids), len(batch.ids), snapshot),
        )
