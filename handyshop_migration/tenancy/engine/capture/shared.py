"""The shared database's side of capture: installing, the captured shops (triggers follow them), the
lease fence, the lag. See the package docstring for why it is built this way."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.engine.capture import _sql
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.errors import CaptureError
from handyshop_migration.tenancy.names import SNAPSHOT_APPLICATION

# Trigger names on every tenant table of the shared database while any shop is captured.
INSERT_TRIGGER = "handyshop_capture_ins"
UPDATE_TRIGGER = "handyshop_capture_upd"
DELETE_TRIGGER = "handyshop_capture_del"
TRUNCATE_TRIGGER = "handyshop_capture_truncate"
TRIGGERS = (INSERT_TRIGGER, UPDATE_TRIGGER, DELETE_TRIGGER, TRUNCATE_TRIGGER)
LEGACY_TRIGGER = "handyshop_capture"  # the first version's one row trigger (dropped on install)

# pg_advisory_lock keys: (FENCE_LOCK, hashint8(shop)) serialises a writer passing an expired lease with
# make_permanent / renew / unfence (see admit() in shared_schema.sql); TRIGGER_LOCK serialises trigger rewrites.
FENCE_LOCK = 1752393317
TRIGGER_LOCK = 0x68616E6479736374  # "handysct"

DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_MAX_WAIT_MS = 2000
LOCK_TIMEOUT_MS = 100  # per attempt at a trigger rewrite: writers queue behind it at most this long


@dataclass(frozen=True)
class Lag:
    shop_id: int
    pending: int
    oldest_seconds: float  # age of the oldest pending change (0 when none)


@dataclass(frozen=True)
class FenceState:
    shop_id: int
    captured: bool
    fenced_until: datetime | None  # end of the lease; None when not fenced, or fenced for good
    permanent: bool
    expired: bool  # a lease that ran out: writes flow again
    fenced_at: datetime | None
    reason: str | None
    max_wait_ms: int

    @property
    def fenced(self) -> bool:
        """Writes of the shop are held back now (a running lease, or for good)."""
        return self.permanent or (self.fenced_until is not None and not self.expired)


# -- installing -------------------------------------------------------------------------------------------


def _exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('handyshop_capture.shops') IS NOT NULL").fetchone()
    return bool(row and row[0])


def version() -> str:
    """Of the shared side's SQL: a new version is installed over the old one."""
    text = "".join(_sql.text(f) for f in ("shared_schema.sql", "shared_capture.sql", "shared_capture_implied.sql",
                                           "shared_capture_reference.sql"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _installed(source: psycopg.Connection, catalog: Catalog) -> bool:
    """This version's schema is in place and every table of the catalog registered as it is now."""
    if not _exists(source):
        return False
    row = one_row(
        source,
        "SELECT obj_description('handyshop_capture'::regnamespace, 'pg_namespace') IS NOT DISTINCT FROM %s AND "
        "(SELECT count(*) FROM handyshop_capture.tables t JOIN unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
        " u(s, n, c, k) ON (t.table_schema, t.table_name, t.tenant_column, array_to_string(t.key_columns, ',')) = "
        " (u.s, u.n, u.c, u.k)) = %s",
        (
            version(),
            [t.schema for t in catalog.tables],
            [t.name for t in catalog.tables],
            [t.tenant_column for t in catalog.tables],
            [",".join(t.key_columns) for t in catalog.tables],
            len(catalog.tables),
        ),
    )
    source.rollback()
    return bool(row[0])


def install(source: psycopg.Connection, catalog: Catalog) -> list[str]:
    """Create the capture schema, its functions and one capture function per tenant table (idempotent).

    No trigger is created here: triggers exist only while a shop is captured (`enable`), and carry the
    captured shops in their WHEN clause. Returns the tables whose capture function was (re)registered."""
    if _installed(source, catalog):
        return []  # a live database pays the schema's locks once per version, not on every enable
    registered = []
    with source.transaction():
        source.execute("SELECT pg_advisory_xact_lock(%s)", (TRIGGER_LOCK,))
        source.execute(_sql.text("shared_schema.sql").encode())
        source.execute(sql.SQL("COMMENT ON SCHEMA handyshop_capture IS {}").format(sql.Literal(version())))
        have = {
            (r[0], r[1]): (r[2], list(r[3]))
            for r in source.execute(
                "SELECT table_schema, table_name, tenant_column, key_columns FROM handyshop_capture.tables"
            ).fetchall()
        }
        for t in catalog.tables:
            fn = _sql.function_name(t, "capture")
            source.execute(
                _sql.capture_function("shared_capture.sql", _sql.event_functions("handyshop_capture", fn), t, catalog)
            )
            if have.get((t.schema, t.name)) != (t.tenant_column, list(t.key_columns)):
                registered.append(t.name)
            source.execute(
                "INSERT INTO handyshop_capture.tables (table_schema, table_name, tenant_column, key_columns, function_name) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (table_schema, table_name) DO UPDATE SET "
                "tenant_column = excluded.tenant_column, key_columns = excluded.key_columns, "
                "function_name = excluded.function_name",
                (t.schema, t.name, t.tenant_column, list(t.key_columns), fn),
            )
    return registered


def uninstall(source: psycopg.Connection, catalog: Catalog | None = None) -> None:
    """Remove every capture trigger (only when no shop is captured any more)."""
    if not _exists(source):
        return
    if captured_shops(source):
        raise CaptureError("shops are still captured; roll back or finish their migration before removing capture.")
    _rewrite_triggers(source)


def captured_shops(conn: psycopg.Connection) -> list[int]:
    if not _exists(conn):
        return []
    shops = [int(r[0]) for r in conn.execute("SELECT shop_id FROM handyshop_capture.shops ORDER BY 1").fetchall()]
    conn.rollback()
    return shops


def _registered_tables(conn: psycopg.Connection) -> list[tuple[str, str, str, str]]:
    rows = conn.execute(
        "SELECT table_schema, table_name, tenant_column, function_name FROM handyshop_capture.tables "
        "WHERE to_regclass(format('%I.%I', table_schema, table_name)) IS NOT NULL ORDER BY 1, 2"
    ).fetchall()
    conn.rollback()
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def _trigger_statements(
    schema: str, name: str, column: str, function: str, shops: Sequence[int], checked: Sequence[int]
) -> list[sql.Composable]:
    table = sql.Identifier(schema, name)
    statements: list[sql.Composable] = [
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(LEGACY_TRIGGER), table)
    ]
    if not shops:
        return statements + [
            sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(t), table) for t in TRIGGERS
        ]
    captured = sql.SQL("{}::bigint[]").format(sql.Literal("{" + ",".join(str(int(s)) for s in shops) + "}"))
    tc = sql.Identifier(column)
    # At least one argument: without any, TG_ARGV is NULL and every write would take the slow path.
    args = [str(int(s)) for s in checked] or ["-"]
    functions = _sql.event_functions("handyshop_capture", function)
    call = {
        event: sql.SQL("{}({})").format(functions[f"{event}_function"], sql.SQL(", ").join(map(sql.Literal, args)))
        for event in ("insert", "update", "delete")
    }
    row_trigger = sql.SQL(
        "CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION {fn}"
    )
    new = sql.SQL("NEW.{} = ANY ({})").format(tc, captured)
    old = sql.SQL("OLD.{} = ANY ({})").format(tc, captured)
    if not column:
        # an implied or reference table: no column names the shop, so no WHEN; the function decides
        row_trigger = sql.SQL(
            "CREATE OR REPLACE TRIGGER {name} AFTER {event} ON {table} FOR EACH ROW {when}EXECUTE FUNCTION {fn}"
        )
        new = old = sql.SQL("")
        tc = sql.SQL("")
    return statements + [
        row_trigger.format(
            name=sql.Identifier(INSERT_TRIGGER), event=sql.SQL("INSERT"), table=table, when=new, fn=call["insert"]
        ),
        row_trigger.format(
            name=sql.Identifier(UPDATE_TRIGGER), event=sql.SQL("UPDATE"), table=table,
            when=sql.SQL("{} OR {}").format(old, new) if column else sql.SQL(""), fn=call["update"],
        ),
        row_trigger.format(
            name=sql.Identifier(DELETE_TRIGGER), event=sql.SQL("DELETE"), table=table, when=old, fn=call["delete"]
        ),
        sql.SQL(
            "CREATE OR REPLACE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT "
            "EXECUTE FUNCTION handyshop_capture.refuse_truncate()"
        ).format(sql.Identifier(TRUNCATE_TRIGGER), table),
    ]


def _rewrite_triggers(conn: psycopg.Connection, *, timeout: float = 300.0) -> list[int]:
    """Make every registered table's triggers match the captured shops now (none: no trigger at all).

    One table per transaction, each under a short lock_timeout and retried: CREATE OR REPLACE TRIGGER
    takes SHARE ROW EXCLUSIVE (writers of that table queue behind it; readers do not), DROP TRIGGER
    ACCESS EXCLUSIVE. Holding one table at a time cannot deadlock with an application transaction, and
    giving up after LOCK_TIMEOUT_MS lets the writers queued behind us through. Taking the lock also waits
    for every transaction that wrote the table before: once the new trigger is committed, each write to the
    table either committed before or is seen by the new trigger. Returns the shops the triggers capture."""
    conn.commit()
    conn.execute("SELECT pg_advisory_lock(%s)", (TRIGGER_LOCK,))
    try:
        rows = conn.execute("SELECT shop_id, checked FROM handyshop_capture.shops ORDER BY 1").fetchall()
        conn.commit()
        shops, checked = [int(r[0]) for r in rows], [int(r[0]) for r in rows if r[1]]
        for schema, name, column, function in _registered_tables(conn):
            statements = _trigger_statements(schema, name, column, function, shops, checked)
            _locked_ddl(conn, statements, f"{schema}.{name}", timeout)
        return shops
    finally:
        conn.rollback()
        conn.execute("SELECT pg_advisory_unlock(%s)", (TRIGGER_LOCK,))
        conn.commit()


def _locked_ddl(conn: psycopg.Connection, statements: list[sql.Composable], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{LOCK_TIMEOUT_MS}ms")))
                for statement in statements:
                    conn.execute(statement)
            return
        except psycopg.errors.LockNotAvailable:
            if time.monotonic() > deadline:
                holders = conn.execute(
                    "SELECT string_agg(DISTINCT l.pid::text, ', ') FROM pg_locks l "
                    "WHERE l.relation = to_regclass(%s) AND l.granted AND l.pid <> pg_backend_pid()",
                    (what,),
                ).fetchone()
                conn.rollback()
                raise CaptureError(
                    f"could not change the capture triggers of {what} for {timeout:.0f}s: transactions hold it "
                    f"(pids {holders[0] if holders else '?'}); end them (pg_stat_activity: long or idle in "
                    "transaction) and run the step again."
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def wait_for_older_transactions(conn: psycopg.Connection, *, timeout: float = 300.0) -> None:
    """Wait until every transaction of this database that began before this call has ended.

    After `enable()`, `fence()` or `close_tenant_writes()` commits, a transaction that began earlier may still
    write without having seen it; once all of them are gone, every write is either captured (or held back), or
    committed before whatever snapshot is taken next. Our own read-only snapshot sessions (a copy of another
    shop can hold one for minutes) never write, so they are not waited for; nor are other databases'
    transactions. (Not filtered by `backend_type` either: it too is hidden for another role's sessions.)

    Call it on a connection opened before the fence committed: a write that begins after the fence is held
    by it and is an open transaction too — found by a late look, it would be waited for until its hold ends
    (at most the fence's max wait).

    A transaction is known by the virtual transaction id it holds a lock on from its first statement to its
    end (`pg_locks`, which every role sees in full), not by `pg_stat_activity.xact_start`: that column is
    NULL for another role's sessions unless the reader has pg_read_all_stats, and the migration's owner
    role of a tenant database does not see the application role's transactions there — the tenant's fence
    then waited for nothing, and a write in flight at the rollback's close was lost."""
    conn.commit()
    older = conn.execute(
        "SELECT l.pid, l.virtualxid FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'virtualxid' AND l.mode = 'ExclusiveLock' AND l.granted "
        "AND a.datname = pg_catalog.current_database() AND l.pid <> pg_catalog.pg_backend_pid() "
        # only our own role's snapshot sessions are let off: an application cannot name itself out of the wait
        "AND (a.application_name IS DISTINCT FROM %s "
        "OR a.usesysid IS DISTINCT FROM (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user))",
        (SNAPSHOT_APPLICATION,),
    ).fetchall()
    conn.commit()
    deadline = time.monotonic() + timeout
    delay = 0.005
    while older:
        still = conn.execute(
            "SELECT pid, virtualxid FROM pg_catalog.pg_locks WHERE locktype = 'virtualxid' AND granted AND "
            "(pid, virtualxid) IN (SELECT * FROM unnest(%s::int[], %s::text[]))",
            ([p for p, _ in older], [v for _, v in older]),
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
        delay = min(delay * 2, 0.05)  # a poll of pg_locks is cheap; a writer's wait is not


# -- per shop ---------------------------------------------------------------------------------------------


def enable(source: psycopg.Connection, catalog: Catalog, shop_id: int) -> bool:
    """Start capturing a shop's writes (idempotent). Returns True if it was not captured before.

    When it returns, every write of the shop is in the log or committed before (so in any snapshot taken
    from now on): the triggers were rewritten under their table locks, then older transactions waited out."""
    install(source, catalog)
    with source.transaction():
        row = source.execute(
            "INSERT INTO handyshop_capture.shops (shop_id) VALUES (%s) ON CONFLICT DO NOTHING RETURNING shop_id",
            (shop_id,),
        ).fetchone()
    shops = _rewrite_triggers(source) if row is not None or not _triggers_capture(source, shop_id) else []
    if row is not None:
        if shop_id not in shops:  # disabled concurrently meanwhile
            raise CaptureError(f"capture of shop {shop_id} was stopped while it was being started; start it again.")
        wait_for_older_transactions(source)
    return row is not None


def _triggers_capture(conn: psycopg.Connection, shop_id: int) -> bool:
    """Every registered table has its insert trigger, and it names the shop."""
    row = one_row(
        conn,
        "SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgname = %s "
        "  AND g.tgrelid = to_regclass(format('%%I.%%I', t.table_schema, t.table_name)) "
        "  AND pg_get_triggerdef(g.oid) ~ ('[{,]' || %s || '[,}]'))) FROM handyshop_capture.tables t",
        (INSERT_TRIGGER, str(int(shop_id))),
    )
    conn.rollback()
    return int(row[0]) == 0


def is_captured(source: psycopg.Connection, shop_id: int) -> bool:
    if not _exists(source):
        return False
    row = source.execute("SELECT 1 FROM handyshop_capture.shops WHERE shop_id = %s", (shop_id,)).fetchone()
    source.rollback()
    return row is not None


def disable(source: psycopg.Connection, shop_id: int) -> int:
    """The way back from phase 3: stop capturing a shop and drop its change log; the last shop's disable
    removes the triggers altogether. Refused while the shop is fenced. Returns the changes dropped."""
    if not _exists(source):
        return 0
    with source.transaction():
        row = source.execute(
            "SELECT coalesce(fenced_until > clock_timestamp(), false) FROM handyshop_capture.shops "
            "WHERE shop_id = %s FOR UPDATE",
            (shop_id,),
        ).fetchone()
        if row is None:
            return 0
        if row[0]:
            raise CaptureError(
                f"shop {shop_id} is fenced (its writes go to the tenant database, or are being cut over): roll back "
                "the cutover first."
            )
        source.execute("DELETE FROM handyshop_capture.shops WHERE shop_id = %s", (shop_id,))
        dropped = source.execute("DELETE FROM handyshop_capture.changes WHERE shop_id = %s", (shop_id,)).rowcount
        source.execute("DELETE FROM handyshop_capture.sync_state WHERE shop_id = %s", (shop_id,))
        source.execute("DELETE FROM handyshop_capture.touched WHERE shop_id = %s", (shop_id,))
    _rewrite_triggers(source)
    with source.transaction():  # logged by triggers that still named the shop until they were rewritten
        dropped += source.execute("DELETE FROM handyshop_capture.changes WHERE shop_id = %s", (shop_id,)).rowcount
    return dropped


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
    """Pending changes of every captured shop that is not fenced for good (one query; what a sync sensor
    asks on each tick)."""
    if not _exists(source):
        return {}
    rows = source.execute(
        "SELECT s.shop_id, count(c.id), coalesce(extract(epoch FROM clock_timestamp() - min(c.captured_at)), 0) "
        "FROM handyshop_capture.shops s LEFT JOIN handyshop_capture.changes c ON c.shop_id = s.shop_id "
        "WHERE s.fenced_until IS NULL OR s.fenced_until <> 'infinity' GROUP BY s.shop_id"
    ).fetchall()
    source.rollback()
    return {int(r[0]): Lag(int(r[0]), int(r[1]), float(r[2])) for r in rows}


# -- the fence --------------------------------------------------------------------------------------------


def _lock_fence(conn: psycopg.Connection, shop_id: int) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, hashint8(%s))", (FENCE_LOCK, shop_id))


def fence_state(conn: psycopg.Connection, shop_id: int) -> FenceState:
    """What the shared database does with the shop's writes now (does not end the caller's transaction
    when called inside one)."""
    inside = conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    row = None
    if _exists(conn):
        row = conn.execute(
            "SELECT CASE WHEN fenced_until <> 'infinity' THEN fenced_until END, fenced_until = 'infinity', "
            "fenced_until <= clock_timestamp(), fenced_at, fence_reason, max_wait_ms "
            "FROM handyshop_capture.shops WHERE shop_id = %s",
            (shop_id,),
        ).fetchone()
    if not inside:
        conn.rollback()
    if row is None:
        return FenceState(shop_id, False, None, False, False, None, None, DEFAULT_MAX_WAIT_MS)
    until, permanent, expired, fenced_at, reason, wait = row
    return FenceState(shop_id, True, until, bool(permanent), bool(expired), fenced_at, reason, int(wait))


def is_fenced(source: psycopg.Connection, shop_id: int) -> bool:
    return fence_state(source, shop_id).fenced


def prepare_fence(source: psycopg.Connection, shop_id: int) -> None:
    """Have the capture triggers check the shop's writes against the fence (commits; idempotent). The
    first step of `fence`; on its own, for callers that set the lease inside a transaction of their own
    (`set_fence`). Rewriting a table's trigger waits for the writes already running on it; the shop's
    writes still flow (they pass `admit()`) until a lease is set."""
    with source.transaction():
        marked = source.execute(
            "UPDATE handyshop_capture.shops SET checked = true WHERE shop_id = %s RETURNING checked", (shop_id,)
        ).fetchone()
    if marked is None:
        raise CaptureError(f"shop {shop_id} is not captured: enable capture (phase 3) before fencing it.")
    if not _triggers_check(source, shop_id):
        _rewrite_triggers(source)


def set_fence(
    conn: psycopg.Connection,
    shop_id: int,
    reason: str,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    *,
    max_wait_ms: int = DEFAULT_MAX_WAIT_MS,
) -> None:
    """Start (or restart) the lease inside the caller's transaction, e.g. with the lifecycle change that
    needs it; after committing, the caller waits out older writers (`wait_for_older_transactions`) before
    it drains. Needs `prepare_fence` first (refused otherwise: the triggers would not check the shop). A
    permanent fence is left as it is."""
    if lease_seconds <= 0 or max_wait_ms < 0:
        raise CaptureError(f"fence of shop {shop_id}: the lease must be positive and the wait not negative.")
    _lock_fence(conn, shop_id)
    row = conn.execute(
        "UPDATE handyshop_capture.shops SET "
        "fenced_at = CASE WHEN fenced_until IS NULL OR fenced_until <= clock_timestamp() THEN clock_timestamp() "
        "                 ELSE fenced_at END, "
        "fenced_until = clock_timestamp() + make_interval(secs => %s), fence_reason = %s, max_wait_ms = %s "
        "WHERE shop_id = %s AND checked AND fenced_until IS DISTINCT FROM 'infinity' RETURNING shop_id",
        (lease_seconds, reason, max_wait_ms, shop_id),
    ).fetchone()
    if row is not None:
        return
    state = conn.execute(
        "SELECT checked, fenced_until = 'infinity' FROM handyshop_capture.shops WHERE shop_id = %s", (shop_id,)
    ).fetchone()
    if state is None:
        raise CaptureError(f"shop {shop_id} is not captured: enable capture (phase 3) before fencing it.")
    if not state[1]:
        raise CaptureError(
            f"shop {shop_id}'s writes are not checked against a fence yet: call capture.prepare_fence first."
        )


def clear_fence(conn: psycopg.Connection, shop_id: int) -> None:
    """Lift the shop's fence inside the caller's transaction (see `unfence`)."""
    _lock_fence(conn, shop_id)
    conn.execute(
        "UPDATE handyshop_capture.shops SET fenced_until = NULL, fenced_at = NULL, fence_reason = NULL, "
        "checked = false WHERE shop_id = %s",
        (shop_id,),
    )


def fence(
    source: psycopg.Connection,
    shop_id: int,
    reason: str,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    *,
    max_wait_ms: int = DEFAULT_MAX_WAIT_MS,
) -> FenceState:
    """Hold the shop's writes in the shared database for `lease_seconds` (reads go on): a write waits (at
    most `max_wait_ms`, then HS001 "retry") until `unfence`, or fails with HS001 "moved" once the fence is
    made permanent; if nobody renews the lease (the cutover died), writes flow again when it runs out.

    Returns after waiting out every transaction older than the fence: from then on no write of the shop
    reaches the log until the lease ends, so a drain can reach zero. A permanent fence stays as it is.
    First the triggers check the shop's writes (`prepare_fence`), then the lease starts (`set_fence`): a
    running lease always has checking triggers behind it."""
    prepare_fence(source, shop_id)
    with source.transaction():
        set_fence(source, shop_id, reason, lease_seconds, max_wait_ms=max_wait_ms)
    wait_for_older_transactions(source)
    return fence_state(source, shop_id)


def renew(source: psycopg.Connection, shop_id: int, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> FenceState:
    """Extend a running lease by `lease_seconds` from now. Refused once it ran out: writes may have flowed
    since, so the caller must fence again (and drain) rather than carry on."""
    with source.transaction():
        _lock_fence(source, shop_id)
        row = source.execute(
            "UPDATE handyshop_capture.shops SET fenced_until = clock_timestamp() + make_interval(secs => %s) "
            "WHERE shop_id = %s AND fenced_until > clock_timestamp() AND fenced_until <> 'infinity' RETURNING 1",
            (lease_seconds, shop_id),
        ).fetchone()
    state = fence_state(source, shop_id)
    if row is None and not state.permanent:
        raise CaptureError(_not_held(state, "renew"))
    return state


def _not_held(state: FenceState, what: str) -> str:
    if not state.captured:
        return f"cannot {what} the fence of shop {state.shop_id}: the shop is not captured."
    if state.fenced_until is None and not state.permanent:
        return f"cannot {what} the fence of shop {state.shop_id}: the shop is not fenced; fence it first."
    return (
        f"cannot {what} the fence of shop {state.shop_id}: its lease ran out at {state.fenced_until:%H:%M:%S.%f} "
        "and writes may have reached the shared database since; fence it again, drain and verify."
    )


def make_permanent(conn: psycopg.Connection, shop_id: int, *, reason: str | None = None) -> None:
    """Turn the shop's running lease into a permanent fence, inside the caller's transaction (the final
    flip: commit it together with the routing change). Does not commit.

    Refused (CaptureError, nothing changed) unless the lease is still running and no change of the shop is
    pending: a write that passed because the lease ran out has either committed before this call's lock
    (then the lease is found run out, and its change is in the log) or waits for this transaction and is
    then refused as moved. Needs READ COMMITTED (each statement sees what committed before it)."""
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        raise CaptureError("make_permanent runs inside the caller's transaction: open one (conn.transaction()) first.")
    level = str(one_row(conn, "SELECT current_setting('transaction_isolation')")[0])
    if level != "read committed":
        raise CaptureError(f"make_permanent needs a READ COMMITTED transaction, not {level}.")
    _lock_fence(conn, shop_id)
    row = conn.execute(
        "SELECT fenced_until = 'infinity', fenced_until > clock_timestamp() AND checked "
        "FROM handyshop_capture.shops WHERE shop_id = %s FOR UPDATE",
        (shop_id,),
    ).fetchone()
    if row is not None and row[0]:
        return  # already permanent
    if row is None or not row[1]:
        raise CaptureError(_not_held(fence_state(conn, shop_id), "make permanent"))
    pending = int(one_row(conn, "SELECT count(*) FROM handyshop_capture.changes WHERE shop_id = %s", (shop_id,))[0])
    if pending:
        raise CaptureError(
            f"cannot make the fence of shop {shop_id} permanent: {pending} of its changes are not applied to the "
            "tenant yet; drain them (and verify) first."
        )
    conn.execute(
        "UPDATE handyshop_capture.shops SET fenced_until = 'infinity', fence_reason = coalesce(%s, fence_reason) "
        "WHERE shop_id = %s",
        (reason, shop_id),
    )


def unfence(source: psycopg.Connection, shop_id: int) -> None:
    """Let the shop's writes flow in the shared database again (a failed cutover; the way back). Inside a
    caller's transaction it commits with it (the triggers keep checking the shop's writes, which pass,
    until the next trigger rewrite); otherwise at once, and the triggers stop checking them."""
    inside = source.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    with source.transaction():
        clear_fence(source, shop_id)
    if not inside:
        _rewrite_triggers(source)


def _triggers_check(conn: psycopg.Connection, shop_id: int) -> bool:
    """Every registered table's insert trigger lists the shop among those whose writes it checks."""
    row = one_row(
        conn,
        "SELECT count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgname = %s "
        "  AND g.tgrelid = to_regclass(format('%%I.%%I', t.table_schema, t.table_name)) "
        "  AND strpos(pg_get_triggerdef(g.oid), 'EXECUTE FUNCTION') < strpos(pg_get_triggerdef(g.oid), %s))) "
        "FROM handyshop_capture.tables t",
        (INSERT_TRIGGER, f"'{int(shop_id)}'"),
    )
    conn.rollback()
    return int(row[0]) == 0
