"""Phase 3: capture every write to a shop's rows while it is migrated, and apply them to its tenant.

Why row triggers, not logical decoding: logical decoding needs `wal_level = logical`, which takes a
server restart, and a replication slot that holds WAL for the whole migration; triggers work on
PostgreSQL 14-18 as they are, can be enabled per shop, and can refuse a write (the write fence) in the
same place that records it. The cost is one trigger call per written row of a tenant table (an index
probe into a small table; a log insert only for shops being migrated).

What is logged is the *key* of each changed row (with its shop and operation), not the row image. The
sync re-reads the current rows for the logged keys inside one REPEATABLE READ snapshot and upserts or
deletes them in the tenant. That makes applying idempotent (a change applied twice is harmless) and
independent of commit order: change-log ids are allocated before commit, so replaying row images in id
order can apply an older image after a newer one; re-reading state cannot. A row whose `shop_id`
changes is logged as leaving the old shop (its tenant deletes it) and entering the new one.

Tables without a primary key have no key to re-read: a logged change marks the table, and the sync
re-copies that table for the shop from the same snapshot (the documented fallback).

Capture must start before the bulk copy takes its snapshot: `enable()` records the shop and then waits
until every transaction older than that record has ended, so a write is either in the snapshot or in the
log. The same wait closes the write fence (`fence()`).

The mirror image runs in a tenant database once writes go there (`enable_tenant_capture`), so that a
rollback of phase 4 can copy back every write the tenant took (`sync_tenant_to_source`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog, Table
from handyshop_migration.tenancy.engine.copy import SourceSnapshot, stream_copy
from handyshop_migration.tenancy.errors import CaptureError
from handyshop_migration.tenancy.names import FENCE_SQLSTATE, SNAPSHOT_APPLICATION

TRIGGER = "handyshop_capture"
TRUNCATE_TRIGGER = "handyshop_capture_truncate"
REPLAYING = "handyshop.replaying"  # a session applying changes itself: neither fenced nor captured

_SOURCE_DDL = r"""
CREATE SCHEMA IF NOT EXISTS handyshop_capture;
CREATE TABLE IF NOT EXISTS handyshop_capture.shops (
    shop_id bigint PRIMARY KEY,
    capture_since timestamptz NOT NULL DEFAULT now(),
    fenced_at timestamptz,
    fence_reason text
);
CREATE TABLE IF NOT EXISTS handyshop_capture.changes (
    id bigserial PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    shop_id bigint NOT NULL,
    table_name text NOT NULL,
    op "char" NOT NULL,
    key jsonb NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS changes_shop_id_idx ON handyshop_capture.changes (shop_id, id);
CREATE TABLE IF NOT EXISTS handyshop_capture.sync_state (
    shop_id bigint PRIMARY KEY,
    synced_at timestamptz NOT NULL DEFAULT now(),
    last_change_id bigint NOT NULL DEFAULT 0,
    changes_applied bigint NOT NULL DEFAULT 0,
    snapshot text
);
REVOKE ALL ON SCHEMA handyshop_capture FROM PUBLIC;

-- One AFTER ROW trigger per tenant table: refuses writes of fenced shops, logs keys of captured shops.
-- TG_ARGV: the tenant column, then the key columns (none for a table without primary key).
CREATE OR REPLACE FUNCTION handyshop_capture.on_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    tcol text := TG_ARGV[0];
    old_j jsonb;
    new_j jsonb;
    old_shop bigint;
    new_shop bigint;
    old_key jsonb := '{}';
    new_key jsonb := '{}';
    fenced timestamptz;
    captured boolean;
    i int;
BEGIN
    IF current_setting('handyshop.replaying', true) = 'on' THEN
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_j := to_jsonb(OLD);
        old_shop := (old_j ->> tcol)::bigint;
        FOR i IN 1 .. TG_NARGS - 1 LOOP
            old_key := old_key || jsonb_build_object(TG_ARGV[i], old_j -> TG_ARGV[i]);
        END LOOP;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_j := to_jsonb(NEW);
        new_shop := (new_j ->> tcol)::bigint;
        FOR i IN 1 .. TG_NARGS - 1 LOOP
            new_key := new_key || jsonb_build_object(TG_ARGV[i], new_j -> TG_ARGV[i]);
        END LOOP;
    END IF;
    -- the write fence: this shop's writes go to its own database now
    FOR i IN 1 .. 2 LOOP
        SELECT s.fenced_at INTO fenced FROM handyshop_capture.shops s
         WHERE s.shop_id = CASE i WHEN 1 THEN old_shop ELSE new_shop END AND s.fenced_at IS NOT NULL;
        IF FOUND THEN
            RAISE EXCEPTION USING
                ERRCODE = 'HS001',
                MESSAGE = format('shop %s has moved to its own database: this %s on %I was refused in the shared '
                                 'database (writes fenced since %s)',
                                 CASE i WHEN 1 THEN old_shop ELSE new_shop END, lower(TG_OP), TG_TABLE_NAME, fenced),
                HINT = 'route the shop''s writes through handyshop_migration.tenancy.application.routing; they go to the tenant database';
        END IF;
    END LOOP;
    IF old_shop IS NOT NULL AND (TG_OP = 'DELETE' OR old_shop IS DISTINCT FROM new_shop OR old_key <> new_key) THEN
        SELECT true INTO captured FROM handyshop_capture.shops WHERE shop_id = old_shop;
        IF FOUND THEN
            INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
            VALUES (old_shop, TG_TABLE_NAME, 'D', old_key);
        END IF;
    END IF;
    IF new_shop IS NOT NULL THEN
        SELECT true INTO captured FROM handyshop_capture.shops WHERE shop_id = new_shop;
        IF FOUND THEN
            INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
            VALUES (new_shop, TG_TABLE_NAME, CASE TG_OP WHEN 'INSERT' THEN 'I' ELSE 'U' END, new_key);
        END IF;
    END IF;
    RETURN NULL;
END
$fn$;

-- TRUNCATE removes rows without row triggers: refuse it while any shop is captured.
CREATE OR REPLACE FUNCTION handyshop_capture.on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF current_setting('handyshop.replaying', true) IS DISTINCT FROM 'on'
       AND EXISTS (SELECT 1 FROM handyshop_capture.shops) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'HS002',
            MESSAGE = format('TRUNCATE of %I is refused while shops are being migrated: their changes could not be '
                             'captured', TG_TABLE_NAME),
            HINT = 'delete the rows with DELETE, or finish or roll back the migrations first';
    END IF;
    RETURN NULL;
END
$fn$;
"""

# The tenant-side mirror: no shop column; one lifecycle row says whether the tenant is fenced.
_TENANT_DDL = r"""
CREATE SCHEMA IF NOT EXISTS handyshop_migration;
CREATE TABLE IF NOT EXISTS handyshop_migration.changes (
    id bigserial PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_name text NOT NULL,
    op "char" NOT NULL,
    key jsonb NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS handyshop_migration.lifecycle (
    shop_id bigint PRIMARY KEY,
    live_since timestamptz,
    capture_since timestamptz,
    fenced_at timestamptz
);
CREATE OR REPLACE FUNCTION handyshop_migration.on_change() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    old_j jsonb;
    new_j jsonb;
    old_key jsonb := '{}';
    new_key jsonb := '{}';
    fenced timestamptz;
    i int;
BEGIN
    IF current_setting('handyshop.replaying', true) = 'on' THEN
        RETURN NULL;
    END IF;
    SELECT l.fenced_at INTO fenced FROM handyshop_migration.lifecycle l WHERE l.fenced_at IS NOT NULL LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING
            ERRCODE = 'HS001',
            MESSAGE = format('this shop is moving back to the shared database: this %s on %I was refused in the '
                             'tenant database (writes fenced since %s)', lower(TG_OP), TG_TABLE_NAME, fenced),
            HINT = 'route the shop''s writes through handyshop_migration.tenancy.application.routing';
    END IF;
    IF TG_OP <> 'INSERT' THEN
        old_j := to_jsonb(OLD);
        FOR i IN 0 .. TG_NARGS - 1 LOOP
            old_key := old_key || jsonb_build_object(TG_ARGV[i], old_j -> TG_ARGV[i]);
        END LOOP;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_j := to_jsonb(NEW);
        FOR i IN 0 .. TG_NARGS - 1 LOOP
            new_key := new_key || jsonb_build_object(TG_ARGV[i], new_j -> TG_ARGV[i]);
        END LOOP;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_key <> new_key) THEN
        INSERT INTO handyshop_migration.changes (table_name, op, key) VALUES (TG_TABLE_NAME, 'D', old_key);
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO handyshop_migration.changes (table_name, op, key)
        VALUES (TG_TABLE_NAME, CASE TG_OP WHEN 'INSERT' THEN 'I' ELSE 'U' END, new_key);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION handyshop_migration.on_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    IF current_setting('handyshop.replaying', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION USING ERRCODE = 'HS002',
            MESSAGE = format('TRUNCATE of %I is refused while the way back to the shared database is kept open',
                             TG_TABLE_NAME);
    END IF;
    RETURN NULL;
END
$fn$;
"""


@dataclass(frozen=True)
class Lag:
    shop_id: int
    pending: int
    oldest_seconds: float  # age of the oldest pending change (0 when none)


@dataclass
class SyncResult:
    shop_id: int
    changes: int = 0  # change-log entries consumed
    upserted: int = 0
    deleted: int = 0
    recopied: list[str] = field(default_factory=list)  # tables without a key, copied again
    rounds: int = 0
    seconds: float = 0.0
    snapshot: str = ""
    lag: Lag = Lag(0, 0, 0.0)  # pending changes when the sync ended


# -- installing -------------------------------------------------------------------------------------------


def _trigger_args(table: Table) -> list[sql.Composable]:
    return [sql.Literal(table.tenant_column), *map(sql.Literal, table.key_columns)]


VERSION = hashlib.sha256(_SOURCE_DDL.encode()).hexdigest()[:16]


def _installed(source: psycopg.Connection, catalog: Catalog) -> bool:
    """Schema, functions of this version and every trigger in place (then install() does nothing)."""
    row = source.execute(
        "SELECT obj_description(to_regprocedure('handyshop_capture.on_change()'), 'pg_proc') = %s AND "
        "(SELECT count(*) FROM pg_trigger WHERE tgname = %s AND tgrelid = ANY(%s::regclass[])) = %s",
        (VERSION, TRIGGER, [sql.Identifier(t.schema, t.name).as_string(None) for t in catalog.tables], len(catalog.tables)),
    ).fetchone()
    source.rollback()
    return bool(row and row[0])


def install(source: psycopg.Connection, catalog: Catalog) -> list[str]:
    """Create the capture schema and one trigger per tenant table (missing ones only: CREATE TRIGGER locks
    the table briefly, so a live database pays it once). Returns the tables that got a trigger."""
    if _installed(source, catalog):
        return []
    with source.transaction():
        source.execute("SELECT pg_advisory_xact_lock(hashtext('handyshop_capture.install'))")
        source.execute(_SOURCE_DDL.encode())
        source.execute(sql.SQL("COMMENT ON FUNCTION handyshop_capture.on_change() IS {}").format(sql.Literal(VERSION)))
        installed = []
        for t in catalog.tables:
            have = source.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname IN (%s, %s)",
                (sql.Identifier(t.schema, t.name).as_string(None), TRIGGER, TRUNCATE_TRIGGER),
            ).fetchall()
            names = {r[0] for r in have}
            ident = sql.Identifier(t.schema, t.name)
            if TRIGGER not in names:
                source.execute(
                    sql.SQL(
                        "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW "
                        "EXECUTE FUNCTION handyshop_capture.on_change({})"
                    ).format(sql.Identifier(TRIGGER), ident, sql.SQL(", ").join(_trigger_args(t)))
                )
                installed.append(t.name)
            if TRUNCATE_TRIGGER not in names:
                source.execute(
                    sql.SQL(
                        "CREATE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT "
                        "EXECUTE FUNCTION handyshop_capture.on_truncate()"
                    ).format(sql.Identifier(TRUNCATE_TRIGGER), ident)
                )
    return installed


def uninstall(source: psycopg.Connection, catalog: Catalog) -> None:
    """Remove the triggers (only when no shop is captured any more)."""
    with source.transaction():
        if _exists(source) and source.execute("SELECT count(*) FROM handyshop_capture.shops").fetchone()[0]:  # type: ignore[index]
            raise CaptureError("shops are still captured; roll back or finish their migration before removing capture.")
        for t in catalog.tables:
            for name in (TRIGGER, TRUNCATE_TRIGGER):
                source.execute(
                    sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), sql.Identifier(t.schema, t.name))
                )


def _exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('handyshop_capture.shops') IS NOT NULL").fetchone()
    return bool(row and row[0])


def wait_for_older_transactions(conn: psycopg.Connection, *, timeout: float = 300.0) -> None:
    """Wait until every transaction of this database that began before this call has ended.

    After `enable()` or `fence()` commits, a transaction that began earlier may still write without having
    seen it; once all of them are gone, every write is either captured (or refused), or committed before
    whatever snapshot is taken next. Our own read-only snapshot sessions (a copy of another shop can hold
    one for minutes) never write, so they are not waited for; nor are other databases' transactions."""
    conn.commit()
    older = conn.execute(
        "SELECT pid, xact_start FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND xact_start IS NOT NULL AND xact_start < clock_timestamp() "
        "AND application_name IS DISTINCT FROM %s",
        (SNAPSHOT_APPLICATION,),
    ).fetchall()
    conn.commit()
    deadline = time.monotonic() + timeout
    delay = 0.005
    while older:
        still = conn.execute(
            "SELECT pid, xact_start FROM pg_stat_activity WHERE (pid, xact_start) IN "
            "(SELECT * FROM unnest(%s::int[], %s::timestamptz[]))",
            ([p for p, _ in older], [x for _, x in older]),
        ).fetchall()
        conn.commit()
        if not still:
            return
        if time.monotonic() > deadline:
            raise CaptureError(
                f"{len(still)} transactions older than the capture start (pids {', '.join(str(p) for p, _ in still)}) "
                f"are still running after {timeout:.0f}s; end them (pg_stat_activity: long or idle in transaction)."
            )
        older = still
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


# -- per shop ---------------------------------------------------------------------------------------------


def enable(source: psycopg.Connection, catalog: Catalog, shop_id: int) -> bool:
    """Start capturing a shop's writes (idempotent). Returns True if it was not captured before."""
    install(source, catalog)
    with source.transaction():
        row = source.execute(
            "INSERT INTO handyshop_capture.shops (shop_id) VALUES (%s) ON CONFLICT DO NOTHING RETURNING shop_id",
            (shop_id,),
        ).fetchone()
    if row is not None:
        wait_for_older_transactions(source)
    return row is not None


def is_captured(source: psycopg.Connection, shop_id: int) -> bool:
    if not _exists(source):
        return False
    row = source.execute("SELECT 1 FROM handyshop_capture.shops WHERE shop_id = %s", (shop_id,)).fetchone()
    source.rollback()
    return row is not None


def disable(source: psycopg.Connection, shop_id: int) -> int:
    """The way back from phase 3: stop capturing a shop and drop its change log. Refused while fenced."""
    if not _exists(source):
        return 0
    with source.transaction():
        row = source.execute(
            "SELECT fenced_at FROM handyshop_capture.shops WHERE shop_id = %s FOR UPDATE", (shop_id,)
        ).fetchone()
        if row is not None and row[0] is not None:
            raise CaptureError(
                f"shop {shop_id} is fenced (its writes go to the tenant database): roll back the cutover first."
            )
        source.execute("DELETE FROM handyshop_capture.shops WHERE shop_id = %s", (shop_id,))
        dropped = source.execute("DELETE FROM handyshop_capture.changes WHERE shop_id = %s", (shop_id,)).rowcount
        source.execute("DELETE FROM handyshop_capture.sync_state WHERE shop_id = %s", (shop_id,))
    return dropped


def set_fence(conn: psycopg.Connection, shop_id: int, reason: str) -> None:
    """Fence the shop inside the caller's transaction (with the lifecycle change that needs it); the caller
    then waits out older writers (`wait_for_older_transactions`) once it has committed."""
    updated = conn.execute(
        "UPDATE handyshop_capture.shops SET fenced_at = coalesce(fenced_at, now()), fence_reason = %s "
        "WHERE shop_id = %s",
        (reason, shop_id),
    ).rowcount
    if not updated:
        raise CaptureError(f"shop {shop_id} is not captured: enable capture (phase 3) before fencing it.")


def clear_fence(conn: psycopg.Connection, shop_id: int) -> None:
    """Lift the shop's fence inside the caller's transaction."""
    conn.execute(
        "UPDATE handyshop_capture.shops SET fenced_at = NULL, fence_reason = NULL WHERE shop_id = %s", (shop_id,)
    )


def fence(source: psycopg.Connection, shop_id: int, reason: str) -> None:
    """From now on the shared database refuses writes to the shop's rows (reads still work)."""
    with source.transaction():
        set_fence(source, shop_id, reason)
    wait_for_older_transactions(source)


def unfence(source: psycopg.Connection, shop_id: int) -> None:
    with source.transaction():
        clear_fence(source, shop_id)


def is_fenced(source: psycopg.Connection, shop_id: int) -> bool:
    if not _exists(source):
        return False
    row = source.execute("SELECT fenced_at IS NOT NULL FROM handyshop_capture.shops WHERE shop_id = %s", (shop_id,)).fetchone()
    source.rollback()
    return bool(row and row[0])


def lag(source: psycopg.Connection, shop_id: int) -> Lag:
    if not _exists(source):
        return Lag(shop_id, 0, 0.0)
    row = one_row(
        source,
        "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(captured_at)), 0) "
        "FROM handyshop_capture.changes WHERE shop_id = %s",
        (shop_id,),
    )
    source.rollback()
    return Lag(shop_id, int(row[0]), float(row[1]))


def lags(source: psycopg.Connection) -> dict[int, Lag]:
    """Pending changes of every captured shop (one query; what a sync sensor asks on each tick)."""
    if not _exists(source):
        return {}
    rows = source.execute(
        "SELECT s.shop_id, count(c.id), coalesce(extract(epoch FROM clock_timestamp() - min(c.captured_at)), 0) "
        "FROM handyshop_capture.shops s LEFT JOIN handyshop_capture.changes c ON c.shop_id = s.shop_id "
        "WHERE s.fenced_at IS NULL GROUP BY s.shop_id"
    ).fetchall()
    source.rollback()
    return {int(r[0]): Lag(int(r[0]), int(r[1]), float(r[2])) for r in rows}


# -- applying ---------------------------------------------------------------------------------------------


def _keys_json(keys: Iterable[dict[str, Any]]) -> str:
    return json.dumps(list(keys), ensure_ascii=False)


def _fetch_rows(
    conn: psycopg.Connection, table: Table, keys: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Current rows for `keys` (as jsonb objects: every type survives the round trip exactly)."""
    key_cols = table.key_columns
    query = sql.SQL(
        "SELECT to_jsonb(t) FROM ONLY {t} t JOIN jsonb_populate_recordset(NULL::{t}, %s::jsonb) k ON {on}"
    ).format(
        t=sql.Identifier(table.schema, table.name),
        on=sql.SQL(" AND ").join(sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in key_cols),
    )
    return [r[0] for r in conn.execute(query, (_keys_json(keys),)).fetchall()]


def _upsert(
    conn: psycopg.Connection, table: Table, rows: list[dict[str, Any]], *, shop_column: tuple[str, int] | None
) -> int:
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


def _delete(
    conn: psycopg.Connection, table: Table, keys: list[dict[str, Any]], *, shop_column: tuple[str, int] | None
) -> int:
    if not keys:
        return 0
    on = [sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in table.key_columns]
    if shop_column is not None:
        on.append(sql.SQL("t.{} = {}").format(sql.Identifier(shop_column[0]), sql.Literal(shop_column[1])))
    query = sql.SQL("DELETE FROM ONLY {t} t USING jsonb_populate_recordset(NULL::{t}, %s::jsonb) k WHERE {on}").format(
        t=sql.Identifier(table.schema, table.name), on=sql.SQL(" AND ").join(on)
    )
    return conn.execute(query, (_keys_json(keys),)).rowcount


def _key_of(row: dict[str, Any], table: Table) -> str:
    return json.dumps([row.get(c) for c in table.key_columns], sort_keys=True, default=str)


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
        batch.keys.setdefault(table_name, {})[_key_of(key, table)] = key
    return batch


def sync_source_to_tenant(
    source: ConnectionSpec,
    tenant: ConnectionSpec,
    catalog: Catalog,
    shop_id: int,
    *,
    batch_size: int = 5000,
    max_rounds: int | None = None,
) -> SyncResult:
    """Apply the shop's captured changes to its tenant until none is pending (or `max_rounds`).

    `tenant` is an owner/superuser spec of the shop's database. Each round: one snapshot of the shared
    database; the current rows of the logged keys are upserted (parents first), vanished or departed keys
    deleted (children first), keyless tables re-copied — one tenant transaction; then the consumed log
    entries are deleted. A crash between the two re-applies the round: harmless."""
    started = time.perf_counter()
    result = SyncResult(shop_id)
    order = list(catalog.table_names)
    with source.connect() as log_conn, tenant.connect() as tconn:
        while max_rounds is None or result.rounds < max_rounds:
            with SourceSnapshot(source) as snap:
                rows = snap.conn.execute(
                    "SELECT id, table_name, key FROM handyshop_capture.changes WHERE shop_id = %s ORDER BY id LIMIT %s",
                    (shop_id, batch_size),
                ).fetchall()
                if not rows:
                    break
                batch = _read_batch(rows, catalog)
                upserts: dict[str, list[dict[str, Any]]] = {}
                deletes: dict[str, list[dict[str, Any]]] = {}
                for name, keys in batch.keys.items():
                    table = catalog.table(name)
                    current = _fetch_rows(snap.conn, table, list(keys.values()))
                    mine = [r for r in current if r.get(table.tenant_column) == shop_id]
                    present = {_key_of(r, table) for r in mine}
                    upserts[name] = mine
                    deletes[name] = [k for text, k in keys.items() if text not in present]
                with tconn.transaction():
                    tconn.execute(sql.SQL("SET LOCAL {} = 'on'").format(sql.Identifier(*REPLAYING.split("."))))
                    for name in order:
                        result.upserted += _upsert(tconn, catalog.table(name), upserts.get(name, []), shop_column=None)
                    for name in reversed(order):
                        result.deleted += _delete(tconn, catalog.table(name), deletes.get(name, []), shop_column=None)
                    for name in order:
                        if name in batch.keyless:
                            _recopy(snap, tconn, catalog.table(name), shop_id)
                            result.recopied.append(name)
                result.snapshot = snap.token
            with log_conn.transaction():
                log_conn.execute("DELETE FROM handyshop_capture.changes WHERE id = ANY(%s)", (batch.ids,))
                log_conn.execute(
                    "INSERT INTO handyshop_capture.sync_state AS s (shop_id, last_change_id, changes_applied, snapshot) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (shop_id) DO UPDATE SET synced_at = now(), "
                    "last_change_id = greatest(s.last_change_id, excluded.last_change_id), "
                    "changes_applied = s.changes_applied + excluded.changes_applied, snapshot = excluded.snapshot",
                    (shop_id, max(batch.ids), len(batch.ids), result.snapshot),
                )
            result.changes += len(batch.ids)
            result.rounds += 1
        result.lag = lag(log_conn, shop_id)
    result.seconds = time.perf_counter() - started
    return result


def _recopy(snap: SourceSnapshot, tconn: psycopg.Connection, table: Table, shop_id: int) -> None:
    """The fallback for a table without a key: its rows for the shop, again, from the round's snapshot.
    DELETE, not TRUNCATE: foreign keys of other tables may point here and must stay checked."""
    ident = sql.Identifier(table.schema, table.name)
    tconn.execute(sql.SQL("DELETE FROM ONLY {}").format(ident))
    stream_copy(snap, tconn, table, shop_id, freeze=False)


# -- the tenant side (for the way back from phase 4) -------------------------------------------------------


def enable_tenant_capture(tenant: psycopg.Connection, catalog: Catalog, shop_id: int) -> None:
    """Log every write the tenant takes from now on, so that a rollback can copy them back."""
    with tenant.transaction():
        tenant.execute(_TENANT_DDL.encode())
        tenant.execute(
            "INSERT INTO handyshop_migration.lifecycle (shop_id, capture_since) VALUES (%s, now()) "
            "ON CONFLICT (shop_id) DO UPDATE SET capture_since = coalesce(handyshop_migration.lifecycle.capture_since, now())",
            (shop_id,),
        )
        for t in catalog.tables:
            if not t.key_columns:
                continue  # copied back whole (the same fallback as forwards)
            ident = sql.Identifier(t.schema, t.name)
            tenant.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRIGGER), ident))
            tenant.execute(
                sql.SQL(
                    "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW "
                    "EXECUTE FUNCTION handyshop_migration.on_change({})"
                ).format(sql.Identifier(TRIGGER), ident, sql.SQL(", ").join(map(sql.Literal, t.key_columns)))
            )
            tenant.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(TRUNCATE_TRIGGER), ident))
            tenant.execute(
                sql.SQL(
                    "CREATE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT "
                    "EXECUTE FUNCTION handyshop_migration.on_truncate()"
                ).format(sql.Identifier(TRUNCATE_TRIGGER), ident)
            )


def disable_tenant_capture(tenant: psycopg.Connection, catalog: Catalog) -> None:
    with tenant.transaction():
        for t in catalog.tables:
            ident = sql.Identifier(t.schema, t.name)
            for name in (TRIGGER, TRUNCATE_TRIGGER):
                tenant.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), ident))
        if tenant.execute("SELECT to_regclass('handyshop_migration.changes')").fetchone() != (None,):
            tenant.execute("TRUNCATE handyshop_migration.changes")
            tenant.execute("UPDATE handyshop_migration.lifecycle SET capture_since = NULL, fenced_at = NULL")


def fence_tenant(tenant: psycopg.Connection) -> None:
    with tenant.transaction():
        tenant.execute("UPDATE handyshop_migration.lifecycle SET fenced_at = coalesce(fenced_at, now())")
    wait_for_older_transactions(tenant)


def unfence_tenant(tenant: psycopg.Connection) -> None:
    with tenant.transaction():
        tenant.execute("UPDATE handyshop_migration.lifecycle SET fenced_at = NULL")


def tenant_lag(tenant: psycopg.Connection) -> Lag:
    if tenant.execute("SELECT to_regclass('handyshop_migration.changes')").fetchone() == (None,):
        tenant.rollback()
        return Lag(0, 0, 0.0)
    row = one_row(
        tenant,
        "SELECT (SELECT shop_id FROM handyshop_migration.lifecycle LIMIT 1), count(*), "
        "coalesce(extract(epoch FROM clock_timestamp() - min(captured_at)), 0) FROM handyshop_migration.changes",
    )
    tenant.rollback()
    return Lag(int(row[0] or 0), int(row[1]), float(row[2]))


def sync_tenant_to_source(
    tenant: ConnectionSpec, source: ConnectionSpec, catalog: Catalog, shop_id: int, *, batch_size: int = 5000
) -> SyncResult:
    """Copy back every write the tenant took (its change log) into the shop's rows of the shared database.

    A key that the shared database holds for *another* shop is never overwritten: the write is refused
    with the ids (the tenant handed out an id the shared database also used — see the id reservation at
    cutover, which prevents it)."""
    started = time.perf_counter()
    result = SyncResult(shop_id)
    order = list(catalog.table_names)
    with tenant.connect() as tlog, source.connect() as sconn:
        while True:
            with SourceSnapshot(tenant) as snap:
                rows = snap.conn.execute(
                    "SELECT id, table_name, key FROM handyshop_migration.changes ORDER BY id LIMIT %s", (batch_size,)
                ).fetchall()
                if not rows:
                    break
                batch = _read_batch(rows, catalog)
                upserts: dict[str, list[dict[str, Any]]] = {}
                deletes: dict[str, list[dict[str, Any]]] = {}
                for name, keys in batch.keys.items():
                    table = catalog.table(name)
                    current = _fetch_rows(snap.conn, table, list(keys.values()))
                    present = {_key_of(r, table) for r in current}
                    upserts[name] = current
                    deletes[name] = [k for text, k in keys.items() if text not in present]
                with sconn.transaction():
                    sconn.execute(sql.SQL("SET LOCAL {} = 'on'").format(sql.Identifier(*REPLAYING.split("."))))
                    for name in order:
                        table = catalog.table(name)
                        rows_ = upserts.get(name, [])
                        done = _upsert(sconn, table, rows_, shop_column=(table.tenant_column, shop_id))
                        if done != len(rows_):
                            raise CaptureError(_foreign_key_clash(sconn, table, rows_, shop_id))
                        result.upserted += done
                    for name in reversed(order):
                        table = catalog.table(name)
                        result.deleted += _delete(sconn, table, deletes.get(name, []), shop_column=(table.tenant_column, shop_id))
                result.snapshot = snap.token
            with tlog.transaction():
                tlog.execute("DELETE FROM handyshop_migration.changes WHERE id = ANY(%s)", (batch.ids,))
            result.changes += len(batch.ids)
            result.rounds += 1
        result.lag = tenant_lag(tlog)
    result.seconds = time.perf_counter() - started
    return result


def _foreign_key_clash(conn: psycopg.Connection, table: Table, rows: list[dict[str, Any]], shop_id: int) -> str:
    keys = [{c: r.get(c) for c in table.key_columns} for r in rows]
    clashes = conn.execute(
        sql.SQL(
            "SELECT {tc}, {kc} FROM ONLY {t} t JOIN jsonb_populate_recordset(NULL::{t}, %s::jsonb) k ON {on} "
            "WHERE t.{tc} IS DISTINCT FROM %s LIMIT 20"
        ).format(
            tc=sql.Identifier(table.tenant_column),
            kc=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in table.key_columns),
            t=sql.Identifier(table.schema, table.name),
            on=sql.SQL(" AND ").join(sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in table.key_columns),
        ),
        (_keys_json(keys), shop_id),
    ).fetchall()
    described = ", ".join(f"{list(r[1:])} (shop {r[0]})" for r in clashes)
    return (
        f"copying back shop {shop_id}'s {table.name}: the shared database holds these keys for other shops: "
        f"{described}; nothing of this round was written. Give the tenant rows new ids, then roll back again."
    )


__all__ = [
    "FENCE_SQLSTATE",
    "Lag",
    "SyncResult",
    "disable",
    "enable",
    "enable_tenant_capture",
    "fence",
    "install",
    "lag",
    "lags",
    "sync_source_to_tenant",
    "sync_tenant_to_source",
]
