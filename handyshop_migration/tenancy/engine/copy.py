"""Phase 2: copy one shop's rows from the shared database into its tenant database.

- One consistent snapshot: every table of a shop is read inside one REPEATABLE READ, READ ONLY
  transaction on the source (`SourceSnapshot`); its exported snapshot id lets other connections (other
  processes) read the very same data.
- Streamed: `COPY (SELECT <columns but the tenant column> ... WHERE shop_id = N) TO STDOUT` is piped into
  `COPY ... FROM STDIN` chunk by chunk; no row is materialised in Python, memory stays flat. BINARY
  format, except for tables whose types embed server-specific OIDs (arrays of enums, composites), which
  go as text.
- A replay: each load runs in replica mode (`db.replaying`), so no trigger of the tenant fires — not its
  write guard, not a trigger carried over from the application — and the rows are the source's exactly.
- Rerunnable: per table, one tenant transaction truncates and loads (`COPY FREEZE`: no second write of
  every page for hint bits), so a rerun leaves exactly the source rows. This is only allowed while the
  tenant is not live.
- Fast: for large slices the primary key, unique constraints and indexes are dropped and built after the
  load (2-3x faster than maintaining them per row; benchmarks/copy_throughput.py); foreign
  keys touching the table are always dropped for the load and re-added, validated, once both ends hold
  data from the same snapshot — so all foreign keys of a shop exist again when its last table is in.
- Sequences are set past the copied ids and to where the source's own sequence would go on (a never-used
  one included), so an insert without an id succeeds in the tenant and cannot reuse an id the shared
  database already handed out.
- Triggers of the tenant schema do not fire on the load (replica-mode transaction): the rows are the
  source's, `last_update` values included. Materialized views are refreshed once the shop is in.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from queue import Queue
from threading import Thread

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.db import one_row, replaying
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Table
from handyshop_migration.tenancy.engine.migrations import META_SCHEMA
from handyshop_migration.tenancy.engine.tenant_schema import TenantSchema, TenantTable
from handyshop_migration.tenancy.errors import CopyError
from handyshop_migration.tenancy.names import SNAPSHOT_APPLICATION

CHUNK = 256 * 1024  # re-batched write size: fewer, larger COPY messages keep the tenant side busy
QUEUE_DEPTH = 8  # chunks in flight between the reader thread and the writer: bounds memory to ~2 MB
REBUILD_THRESHOLD = 20_000  # estimated rows above which keys and indexes are built after the load

_STATE_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    table_name text PRIMARY KEY,
    shop_id bigint NOT NULL,
    snapshot text NOT NULL,
    rows bigint NOT NULL,
    copied_at timestamptz NOT NULL DEFAULT now(),
    -- the source side of the verification, taken in the copy's snapshot: later checks compare against it
    source_rows bigint,
    source_checksum text
)
"""


def state_table() -> sql.Identifier:
    return sql.Identifier(META_SCHEMA, "copy_state")


@dataclass(frozen=True)
class TableCopy:
    table: str
    shop_id: int
    rows: int
    bytes: int
    seconds: float
    format: str  # "binary" or "text"
    snapshot: str
    rebuilt_indexes: bool
    foreign_keys_pending: tuple[str, ...]  # FKs not re-added: the other table is from another snapshot

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float(self.rows)


class SourceSnapshot:
    """A read-only REPEATABLE READ transaction on the shared database, held open while a shop is copied."""

    def __init__(self, source: ConnectionSpec, *, snapshot_id: str | None = None) -> None:
        self.source = source
        # Named, so that capture's wait for older transactions can leave these read-only ones out.
        self.conn = replace(source, application_name=SNAPSHOT_APPLICATION).connect()
        self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if snapshot_id is not None:
            # Join a snapshot exported by another connection: same data, possibly another process.
            try:
                self.conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)))
            except psycopg.Error as exc:
                self.conn.close()
                raise CopyError(
                    f"cannot import source snapshot {snapshot_id}: {exc.diag.message_primary or exc}; the "
                    "transaction that exported it has ended — copy the shop again in one run."
                ) from None
            self.snapshot_id = snapshot_id
        else:
            row = one_row(self.conn, "SELECT pg_export_snapshot()")
            self.snapshot_id = str(row[0])
        row = one_row(self.conn, "SELECT pg_current_snapshot()::text")
        # pg_current_snapshot (xmin:xmax:xip) identifies the data seen; phase 3 uses it to tell which
        # captured changes the copy already contains.
        self.token = str(row[0])

    def close(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()

    def __enter__(self) -> SourceSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SourceSnapshot({self.source.describe()}, {self.token})"


def _select(t: Table, shop_id: int, fmt: str) -> tuple[sql.Composable, tuple[int]]:
    query = sql.SQL("COPY (SELECT {} FROM ONLY {} WHERE {} = %s) TO STDOUT (FORMAT {})").format(
        sql.SQL(", ").join(map(sql.Identifier, t.copy_columns)),
        sql.Identifier(t.schema, t.name),
        sql.Identifier(t.tenant_column),
        sql.SQL(fmt),
    )
    return query, (shop_id,)


def estimate_rows(snapshot: SourceSnapshot, tt: TenantTable, shop_id: int) -> int:
    """The planner's estimate of the shop's rows in a table: cheap, and enough to choose a load strategy."""
    t = tt.table
    plan = one_row(snapshot.conn,
        sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM ONLY {} WHERE {} = %s").format(
            sql.Identifier(t.schema, t.name), sql.Identifier(t.tenant_column)
        ),
        (shop_id,),
    )
    return int(plan[0][0]["Plan"]["Plan Rows"])


def _finish_copy_out(conn: psycopg.Connection) -> None:
    """Collect the final result of a COPY TO read to its end with `get_copy_data`, as psycopg's own reader
    does (its `Copy.read()` cannot: libpq reports "no COPY in progress" once the end was read); raise the
    server's error if the COPY failed. The connection is then idle in its transaction, as after the iterator."""
    results = []
    while (res := conn.pgconn.get_result()) is not None:
        results.append(res)
    for res in results:
        if res.status != psycopg.pq.ExecStatus.COMMAND_OK:
            raise psycopg.errors.error_from_result(res, encoding=conn.info.encoding)


def copy_out(conn: psycopg.Connection, query: sql.Composable, params: Sequence[object] | None = None) -> Iterator[bytes]:
    """The one COPY-out reader: the data of `COPY (...) TO STDOUT` as chunks of ~CHUNK bytes, read on a
    thread of its own (the copy, the retirement archive and the copy-back of tables without a key use it).

    Reading and writing overlap (a COPY FROM on the other side is the bottleneck); the bounded queue keeps
    memory flat whatever the table size. `conn` is busy until the iterator is exhausted or closed.
    """
    queue: Queue[bytes | BaseException | None] = Queue(maxsize=QUEUE_DEPTH)

    def read() -> None:
        try:
            buf = bytearray()
            # psycopg starts the COPY (binding the parameters client-side); the rows are read below it.
            with conn.cursor().copy(query, params):
                # The server sends one COPY message per row. Iterating the Copy runs a psycopg generator per row
                # (~1.2 s of client CPU per million rows); on 2 cores that CPU is taken from the two backends
                # doing the real work, and the copy took ~1.5x a psql-to-psql pipe. libpq's blocking read
                # (it releases the GIL while it waits) costs half as much: benchmarks/copy_throughput.py.
                pgconn = conn.pgconn
                while True:
                    nbytes, data = pgconn.get_copy_data(0)
                    if nbytes <= 0:  # -1: the COPY is done (or failed: its result says which)
                        break
                    buf += data
                    if len(buf) >= CHUNK:
                        queue.put(bytes(buf))
                        buf.clear()
                _finish_copy_out(conn)
            if buf:
                queue.put(bytes(buf))
            queue.put(None)
        except BaseException as exc:  # handed to the writer, which re-raises it
            queue.put(exc)

    reader = Thread(target=read, name="copy-reader", daemon=True)
    reader.start()
    try:
        while True:
            item = queue.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # If the writer failed, drain so the reader can finish its COPY and release the connection.
        while reader.is_alive():
            try:
                queue.get(timeout=0.05)
            except Exception:  # noqa: S110 - empty queue while the reader winds down
                pass
        reader.join()


def stream_copy(
    snapshot: SourceSnapshot | psycopg.Connection, tenant: psycopg.Connection, table: Table, shop_id: int, *, freeze: bool
) -> tuple[int, int]:
    """Pipe the shop's rows of `table` from the snapshot (or a connection holding one) into the tenant table
    (inside the caller's transaction). `freeze` needs the table created or truncated in that transaction.
    Returns (rows, bytes)."""
    source = snapshot.conn if isinstance(snapshot, SourceSnapshot) else snapshot
    fmt = "binary" if table.binary_copy_safe else "text"
    query, params = _select(table, shop_id, fmt)
    target = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {}{})").format(
        sql.Identifier(table.schema, table.name),
        sql.SQL(", ").join(map(sql.Identifier, table.copy_columns)),
        sql.SQL(fmt),
        sql.SQL(", FREEZE" if freeze else ""),
    )
    copied = 0
    with tenant.cursor() as cur:
        with cur.copy(target) as sink:
            for chunk in copy_out(source, query, params):
                sink.write(chunk)
                copied += len(chunk)
        return cur.rowcount, copied


def ensure_state_table(tenant: psycopg.Connection) -> None:
    tenant.execute(sql.SQL(_STATE_DDL).format(schema=sql.Identifier(META_SCHEMA), table=state_table()))


def refuse_if_live(tenant: psycopg.Connection, shop_id: int) -> None:
    """A tenant that took the shop's writes (live, or closed again for the way back and not yet copied
    back) must never be truncated and reloaded: that would erase its writes. Read from the tenant's write
    guard (`capture.tenant_guard_state`), the one record of whether a tenant is live."""
    from handyshop_migration.tenancy.engine.capture.guard import tenant_guard_state  # capture imports copy

    state = tenant_guard_state(tenant)
    if state is None and tenant.execute("SELECT to_regclass('handyshop_migration.lifecycle')").fetchone() != (None,):
        # a tenant cut over by the first version, before the write guard: its lifecycle row says it
        legacy = tenant.execute(
            "SELECT live_since FROM handyshop_migration.lifecycle WHERE live_since IS NOT NULL"
        ).fetchone()
        if legacy is not None:
            raise CopyError(
                f"shop {shop_id}'s tenant database is live (since {legacy[0]:%Y-%m-%d %H:%M:%S}, recorded before "
                "the write guard); a copy would erase its writes. Roll back the cutover (phase 4) first."
            )
    if state is not None and state.live_since is not None:
        raise CopyError(
            f"shop {shop_id}'s tenant database is live (it takes the shop's writes since {state.live_since:%Y-%m-%d %H:%M:%S}); "
            "a copy would erase them. Roll back the cutover (phase 4) first."
        )


def _snapshots(tenant: psycopg.Connection) -> dict[str, str]:
    rows = tenant.execute(sql.SQL("SELECT table_name, snapshot FROM {}").format(state_table())).fetchall()
    return {name: snap for name, snap in rows}


def _sequence_of(conn: psycopg.Connection, qualified: str, column: str, owned_by_default: bool, fallback: str) -> str | None:
    if not owned_by_default:
        return fallback  # a sequence used by the default but not owned by the column
    row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (qualified, column)).fetchone()
    return str(row[0]) if row and row[0] else None


def _sequence_state(conn: psycopg.Connection, sequence: str) -> tuple[int, bool] | None:
    """The source sequence's (last_value, is_called): with is_called false (never used, or reset with
    `setval(…, false)`) its next value is last_value itself — not last_value minus the increment, which for
    a fresh sequence is below its minimum (`setval: value 0 is out of bounds`)."""
    row = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_sequence s ON s.seqrelid = c.oid WHERE c.oid = %s::regclass",
        (sequence,),
    ).fetchone()
    if row is None:
        return None
    state = one_row(conn, sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(row[0], row[1])))
    return int(state[0]), bool(state[1])


def _set_sequences(snapshot: SourceSnapshot, tenant: psycopg.Connection, tt: TenantTable) -> None:
    t = tt.table
    qualified = sql.Identifier(t.schema, t.name).as_string(None)
    targets = [(s.column, s.owned, sql.Identifier(s.schema, s.name).as_string(None)) for s in t.sequences]
    targets += [(c.name, True, "") for c in t.tenant_columns if c.identity is not None]
    for column, owned, name in targets:
        tenant_seq = _sequence_of(tenant, qualified, column, owned, name)
        source_seq = _sequence_of(snapshot.conn, qualified, column, owned, name)
        if tenant_seq is None:
            continue
        state = _sequence_state(snapshot.conn, source_seq) if source_seq is not None else None
        last, called = state if state is not None else (None, True)
        # The tenant's next id is past the copied ids and where the source's next id would be: called, the
        # source's next is after last_value; not called, it is last_value itself.
        tenant.execute(
            sql.SQL(
                "SELECT CASE WHEN m IS NOT NULL AND (%s OR l IS NULL OR m >= l) THEN setval(%s::regclass, greatest(m, l))"
                " ELSE setval(%s::regclass, l, %s) END"
                " FROM (SELECT (SELECT max({}) FROM {}) AS m, %s::bigint AS l) s WHERE coalesce(m, l) IS NOT NULL"
            ).format(sql.Identifier(column), sql.Identifier(t.schema, t.name)),
            (called, tenant_seq, tenant_seq, called, last),
        )


def copy_table(
    snapshot: SourceSnapshot,
    tenant: psycopg.Connection,
    schema: TenantSchema,
    table: str,
    shop_id: int,
    *,
    rebuild_threshold: int = REBUILD_THRESHOLD,
) -> TableCopy:
    """Replace the tenant's `table` with the shop's rows as of `snapshot`, in one tenant transaction.

    `tenant` is an owner/superuser connection to the shop's database, outside any transaction.
    """
    tt = schema.table(table)
    t = tt.table
    started = time.perf_counter()
    fmt = "binary" if t.binary_copy_safe else "text"
    rebuild = estimate_rows(snapshot, tt, shop_id) >= rebuild_threshold
    touching = schema.foreign_keys_touching(table)
    ident = sql.Identifier(t.schema, t.name)
    try:
        with replaying(tenant):  # a bulk load: the tenant's triggers (and its write guard) do not fire
            ensure_state_table(tenant)
            refuse_if_live(tenant, shop_id)
            for fk in touching:
                tenant.execute(fk.drop.encode())
            tenant.execute(sql.SQL("TRUNCATE ONLY {}").format(ident))
            if rebuild:
                for named in (*tt.indexes, *tt.keys):
                    tenant.execute(named.drop.encode())
            rows, copied_bytes = stream_copy(snapshot, tenant, t, shop_id, freeze=True)
            if rebuild:
                for named in (*tt.keys, *tt.indexes):
                    tenant.execute(named.create.encode())
            _set_sequences(snapshot, tenant, tt)
            tenant.execute(
                sql.SQL(
                    "INSERT INTO {} (table_name, shop_id, snapshot, rows) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (table_name) DO UPDATE SET shop_id = excluded.shop_id, snapshot = excluded.snapshot, "
                    "rows = excluded.rows, copied_at = now(), source_rows = NULL, source_checksum = NULL"
                ).format(state_table()),
                (table, shop_id, snapshot.token, rows),
            )
            states = _snapshots(tenant)
            pending = []
            for fk in touching:
                if states.get(fk.child) == snapshot.token and states.get(fk.parent) == snapshot.token:
                    _add_foreign_key(tenant, fk.create, fk.name, fk.child, fk.parent, shop_id)
                else:
                    pending.append(fk.name)
    except psycopg.Error as exc:
        raise CopyError(
            f"copying {table} of shop {shop_id} failed: {exc.diag.message_primary or exc}"
            + (f" ({exc.diag.message_detail})" if exc.diag.message_detail else "")
            + "; the tenant table was left as it was (one transaction)."
        ) from None
    return TableCopy(
        table=table,
        shop_id=shop_id,
        rows=rows,
        bytes=copied_bytes,
        seconds=time.perf_counter() - started,
        format=fmt,
        snapshot=snapshot.token,
        rebuilt_indexes=rebuild,
        foreign_keys_pending=tuple(pending),
    )


def refresh_materialized_views(tenant: psycopg.Connection, schema: TenantSchema, shop_id: int) -> tuple[str, ...]:
    """Materialized views are created WITH NO DATA: fill them from the shop's rows once they are all in."""
    targets = schema.refresh_targets(shop_id)
    if targets:
        with tenant.transaction():
            for name in targets:
                tenant.execute(sql.SQL("REFRESH MATERIALIZED VIEW {}").format(sql.SQL(name)))
        if tenant.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            tenant.commit()  # the block above was a savepoint inside the caller's (read-only) transaction
    return targets


def _add_foreign_key(tenant: psycopg.Connection, create: str, name: str, child: str, parent: str, shop: int) -> None:
    try:
        with tenant.transaction():
            tenant.execute(create.encode())
    except psycopg.errors.ForeignKeyViolation as exc:
        raise CopyError(
            f"shop {shop}: {child} rows reference {parent} rows that are not the shop's "
            f"({exc.diag.message_detail or exc}); these are cross-shop references — phase 0 validation lists "
            "them with their ids. Fix the rows in the shared database, then copy the shop again."
        ) from None


def copy_shop(
    source: ConnectionSpec,
    tenant_admin: ConnectionSpec,
    schema: TenantSchema,
    shop_id: int,
    *,
    tables: Sequence[str] | None = None,
    rebuild_threshold: int = REBUILD_THRESHOLD,
) -> list[TableCopy]:
    """Copy every tenant table of one shop (parents first) from one snapshot."""
    names = list(tables) if tables is not None else [t.name for t in schema.tables]
    results = []
    with SourceSnapshot(source) as snapshot, tenant_admin.connect() as tenant:
        for name in names:
            results.append(copy_table(snapshot, tenant, schema, name, shop_id, rebuild_threshold=rebuild_threshold))
        if tables is None:
            refresh_materialized_views(tenant, schema, shop_id)
    return results


def empty_tenant(tenant_admin: ConnectionSpec, schema: TenantSchema, shop_id: int) -> int:
    """The way back from phase 2: every tenant table emptied in one transaction (refused while live).
    Returns the number of rows removed."""
    with tenant_admin.connect() as tenant, replaying(tenant):
        ensure_state_table(tenant)
        refuse_if_live(tenant, shop_id)
        removed = 0
        for tt in schema.tables:
            row = tenant.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(tt.ident)).fetchone()
            removed += int(row[0]) if row else 0
        tenant.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(tt.ident for tt in schema.tables)))
        tenant.execute(sql.SQL("DELETE FROM {}").format(state_table()))
    return removed


def pending_foreign_keys(tenant: psycopg.Connection, schema: TenantSchema) -> list[str]:
    """Foreign keys of the tenant schema that are not in place (tables copied from different snapshots)."""
    present = {
        r[0]
        for r in tenant.execute(
            "SELECT conname FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE c.contype = 'f' AND n.nspname = ANY(%s)",
            (sorted({t.table.schema for t in schema.tables}),),
        ).fetchall()
    }
    return [fk.name for t in schema.tables for fk in t.foreign_keys if fk.name not in present]
