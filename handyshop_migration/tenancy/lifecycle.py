"""One lifecycle per shop: its state, its routing, and every transition between them, in one place.

A shop's migration is a workflow with explicit states (in the spirit of Vitess' MoveTables): registered →
provisioning → provisioned → copying → copied → verified → syncing → reads_rollout → cutting_over → live →
retiring → retired, and the ways back (reloads, stopping capture, rolling back the cutover, restoring a
retired shop, deprovisioning). The record lives in the control database — the shared database, schema
`handyshop_migration` — next to the registry and the shared-side fence, in table `shop_lifecycle`:

- `state`, `reads`, `writes` (where the application's statements go), `captured`, a `version` that changes
  whenever the routing changes (clients cache routes by it), the last error, and timestamps;
- `shop_history`: one row per transition, with the states, the routes and the reason.

Every transition is one call of `Lifecycle.apply` (or one of its named wrappers): it locks the shop's row,
refuses a transition from the wrong state with `LifecycleRefused` (naming the state and what to do), writes
the new state and routes and appends the history **in one transaction** — together with any effect the
caller passes (`effects`: the shared-side fence, which lives in the same database, so routing and fence can
never disagree). An exception anywhere inside leaves every record as it was.

Nothing else writes these records: the workflow (`tenancy.workflow`), and through it the pipeline, the CLI
and an application, call this module. `status` reads it (`Lifecycle.all()` is one query).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConfigurationError, LifecycleRefused
from handyshop_migration.tenancy.names import CONTROL_SCHEMA, control


class State(enum.StrEnum):
    REGISTERED = "registered"  # known (a partition); nothing created for it yet
    PROVISIONING = "provisioning"  # its role and database are being created (a rerun resumes)
    PROVISIONED = "provisioned"  # database, role and tenant schema exist; its tenant refuses writes
    COPYING = "copying"  # capture on (unless off by choice); tables being copied from one snapshot
    COPIED = "copied"  # every table loaded; verification pending or failed (`last_error`)
    VERIFIED = "verified"  # every table equals its source slice; every foreign key in place
    SYNCING = "syncing"  # verified, and its captured writes are being applied (phase 3)
    READS_ROLLOUT = "reads_rollout"  # some or all reads go to the tenant; writes to the shared database
    CUTTING_OVER = "cutting_over"  # the shared database holds the shop's writes (a lease); drain, verify, flip
    LIVE = "live"  # reads and writes go to the tenant
    ROLLING_BACK = "rolling_back"  # the tenant refuses writes; what it took is copied back
    RETIRING = "retiring"  # its rows are archived and deleted from the shared database
    RETIRED = "retired"  # only its tenant holds its rows
    RESTORING = "restoring"  # its archive is loaded back into the shared database
    DEPROVISIONING = "deprovisioning"  # its database and role are being dropped (the way back from phase 1)
    MOVING = "moving"  # its tenant database is moved to another server (live or retired before; details.move)


# The phase a state belongs to (what `status` prints and `migrate --through-phase` compares against).
PHASE: dict[State, int] = {
    State.REGISTERED: 0,
    State.PROVISIONING: 1,
    State.PROVISIONED: 1,
    State.DEPROVISIONING: 1,
    State.COPYING: 2,
    State.COPIED: 2,
    State.VERIFIED: 2,
    State.SYNCING: 3,
    State.READS_ROLLOUT: 4,
    State.CUTTING_OVER: 4,
    State.LIVE: 4,
    State.ROLLING_BACK: 4,
    State.RETIRING: 5,
    State.RETIRED: 5,
    State.RESTORING: 5,
    State.MOVING: 4,
}

# The shop's details key saying whether its tenant takes its writes ("open") or may still refuse them
# ("closed"): set at the cutover's flip and after the tenant opens (see `ShopState.tenant_closed`).
TENANT_WRITES = "tenant_writes"

# States a step was interrupted in: a rerun of the same command resumes (or finishes) them.
IN_PROGRESS = frozenset(
    {
        State.PROVISIONING,
        State.COPYING,
        State.CUTTING_OVER,
        State.ROLLING_BACK,
        State.RETIRING,
        State.RESTORING,
        State.DEPROVISIONING,
        State.MOVING,
    }
)
# States whose tenant database takes (or has taken) the shop's writes: never reloaded or dropped.
TENANT_OWNS_WRITES = frozenset(
    {State.LIVE, State.ROLLING_BACK, State.RETIRING, State.RETIRED, State.RESTORING, State.MOVING}
)

READS = ("shared", "rollout", "tenant")
WRITES = ("shared", "tenant")

Effect = Callable[[psycopg.Connection], None]


@dataclass(frozen=True)
class Transition:
    name: str
    sources: frozenset[State]  # states it may start from
    target: State | None  # None: decided by the call (e.g. back to where a cutover started)
    reads: str | None = None  # the route it sets (None: unchanged)
    writes: str | None = None
    hint: str = ""  # what to do when refused
    reroutes: bool = False  # where the tenant is changes (another server): a new routing version either way


def _t(
    name: str, sources: Iterable[State], target: State | None, hint: str, *, reroutes: bool = False, **routes: str
) -> Transition:
    return Transition(name, frozenset(sources), target, hint=hint, reroutes=reroutes, **routes)


_BEFORE_LIVE = (State.PROVISIONED, State.COPYING, State.COPIED, State.VERIFIED, State.SYNCING)

TRANSITIONS: dict[str, Transition] = {
    t.name: t
    for t in (
        _t("register", (), State.REGISTERED, "the shop is already known"),
        _t("start_provisioning", (State.REGISTERED, State.PROVISIONING), State.PROVISIONING,
           "it is provisioned already"),
        _t("finish_provisioning", (State.PROVISIONING,), State.PROVISIONED, "provision it first"),
        _t("start_copy", _BEFORE_LIVE, State.COPYING,
           "a tenant that takes or took the shop's writes is never reloaded: roll back the cutover first"),
        _t("finish_copy", (State.COPYING,), State.COPIED, "copy the shop first"),
        _t("verified", (State.COPIED, State.VERIFIED, State.SYNCING), None, "copy the shop first"),
        _t("verification_failed", (State.COPIED, State.VERIFIED, State.SYNCING), State.COPIED, "copy the shop first"),
        _t("synced", (State.VERIFIED, State.SYNCING), State.SYNCING,
           "only a verified shop that is not live is synced"),
        _t("stop_capture", (State.COPIED, State.VERIFIED, State.SYNCING), None,
           "close its reads and roll back its cutover first"),
        _t("open_reads", (State.VERIFIED, State.SYNCING, State.READS_ROLLOUT), State.READS_ROLLOUT,
           "verify the shop first (migrate it through phase 2)"),
        _t("close_reads", (State.READS_ROLLOUT,), None, "its reads are not rolled out", reads="shared"),
        _t("start_cutover", (State.SYNCING, State.READS_ROLLOUT, State.CUTTING_OVER), State.CUTTING_OVER,
           "sync it first (phase 3): a shop is cut over from a captured, verified copy"),
        _t("finish_cutover", (State.CUTTING_OVER,), State.LIVE, "start the cutover first",
           reads="tenant", writes="tenant"),
        _t("abort_cutover", (State.CUTTING_OVER,), None, "no cutover is in progress"),
        _t("start_rollback", (State.LIVE, State.ROLLING_BACK), State.ROLLING_BACK,
           "only a live shop's cutover can be rolled back"),
        _t("finish_rollback", (State.ROLLING_BACK,), State.SYNCING, "start the rollback first",
           reads="shared", writes="shared"),
        _t("abort_rollback", (State.ROLLING_BACK,), State.LIVE, "no rollback is in progress"),
        _t("start_retirement", (State.LIVE, State.RETIRING), State.RETIRING, "only a live shop is retired"),
        _t("finish_retirement", (State.RETIRING,), State.RETIRED, "start the retirement first"),
        _t("abort_retirement", (State.RETIRING,), State.LIVE, "no retirement is in progress"),
        _t("start_restore", (State.RETIRED, State.RESTORING), State.RESTORING, "only a retired shop is restored"),
        _t("finish_restore", (State.RESTORING,), State.LIVE, "start the restore first"),
        _t("start_deprovisioning", (State.REGISTERED, State.PROVISIONING, State.DEPROVISIONING, *_BEFORE_LIVE),
           State.DEPROVISIONING,
           "a tenant that takes or took the shop's writes is never dropped: roll back the cutover first"),
        _t("finish_deprovisioning", (State.DEPROVISIONING,), State.REGISTERED, "start the deprovisioning first",
           reads="shared", writes="shared"),
        # A move of the tenant database to another server (tenancy.fleet.move): back to live or retired.
        _t("start_move", (State.LIVE, State.RETIRED, State.MOVING), State.MOVING,
           "only the tenant database of a live or retired shop is moved (finish what the shop is doing first)"),
        _t("finish_move", (State.MOVING,), None, "start the move first", reroutes=True),
        _t("abort_move", (State.MOVING,), None, "no move is in progress"),
    )
}


@dataclass(frozen=True)
class ShopState:
    shop_id: int
    state: State
    reads: str
    writes: str
    captured: bool
    version: int
    last_error: str | None
    details: dict[str, Any]
    entered_at: datetime | None
    updated_at: datetime | None

    @property
    def phase(self) -> int:
        return PHASE[self.state]

    @property
    def in_progress(self) -> bool:
        return self.state in IN_PROGRESS

    @property
    def tenant_closed(self) -> bool:
        """Live (routed to its tenant), yet the tenant may still refuse the shop's writes: a cutover was
        interrupted between the flip and opening the tenant, or a rollback right after closing it. Nothing
        takes the shop's writes then; `Workflow.cut_over` on the live shop opens the tenant (the runner sends
        such a shop there). Shops cut over before this was recorded count as open."""
        return self.state == State.LIVE and self.details.get(TENANT_WRITES) == "closed"


@dataclass(frozen=True)
class HistoryEntry:
    shop_id: int
    at: datetime
    transition: str
    from_state: str | None
    to_state: str | None
    reads: str
    writes: str
    reason: str


_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {lifecycle} (
    shop_id bigint PRIMARY KEY,
    state text NOT NULL,
    reads text NOT NULL DEFAULT 'shared' CHECK (reads IN ('shared', 'rollout', 'tenant')),
    writes text NOT NULL DEFAULT 'shared' CHECK (writes IN ('shared', 'tenant')),
    captured boolean NOT NULL DEFAULT false,
    version bigint NOT NULL DEFAULT 1,
    last_error text,
    details jsonb NOT NULL DEFAULT '{{}}',  -- what later steps need: archive path, copy snapshot, id blocks
    entered_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (writes = 'shared' OR reads = 'tenant')  -- whoever writes to the tenant reads from it
);
CREATE TABLE IF NOT EXISTS {history} (
    id bigserial PRIMARY KEY,
    shop_id bigint,  -- NULL: an event of every shop (the read rollout percentage)
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    transition text NOT NULL,
    from_state text,
    to_state text,
    reads text NOT NULL,
    writes text NOT NULL,
    reason text NOT NULL
);
CREATE INDEX IF NOT EXISTS shop_history_shop_idx ON {history} (shop_id, id);
CREATE TABLE IF NOT EXISTS {reservations} (  -- id blocks taken in shared sequences for tenants (cutover)
    shop_id bigint NOT NULL,
    sequence text NOT NULL,
    first_id bigint NOT NULL,
    last_id bigint NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, sequence, first_id)
);
CREATE TABLE IF NOT EXISTS {settings} (
    key text PRIMARY KEY,
    value text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""

_COLUMNS = sql.SQL("shop_id, state, reads, writes, captured, version, last_error, details, entered_at, updated_at")
READ_ROLLOUT_PERCENT = "read_rollout_percent"


def read_bucket(shop_id: int) -> int:
    """The shop's place in the read rollout: the real app's deterministic rule, so that raising the
    percentage moves shops over one by one and never flips one back and forth."""
    return (shop_id * 2654435761) % 2**32 % 100


def _refuse_unless_allowed(current: ShopState, t: Transition) -> None:
    if current.state not in t.sources:
        allowed = ", ".join(sorted(s.value for s in t.sources)) or "none"
        raise LifecycleRefused(
            f"shop {current.shop_id} is {current.state.value}: it cannot {t.name.replace('_', ' ')} from there "
            f"(only from {allowed}); {t.hint}."
        )


def _row(values: dict[str, Any]) -> ShopState:
    return ShopState(**{**values, "state": State(values["state"])})


class Lifecycle:
    """The shops' lifecycle records in the control database. Thread-safe: every call opens its own
    transaction (on the caller's connection, or a short-lived one of its own)."""

    def __init__(self, control: ConnectionSpec) -> None:
        self.control = control

    # -- schema ----------------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        with self.control.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('handyshop_migration.lifecycle'))")
            conn.execute(
                sql.SQL(_DDL).format(
                    schema=sql.Identifier(CONTROL_SCHEMA),
                    lifecycle=control("shop_lifecycle"),
                    history=control("shop_history"),
                    settings=control("settings"),
                    reservations=control("id_reservations"),
                )
            )

    # -- reading ---------------------------------------------------------------------------------------

    def find(self, shop_id: int, conn: psycopg.Connection | None = None) -> ShopState | None:
        query = sql.SQL("SELECT {} FROM {} WHERE shop_id = %s").format(_COLUMNS, control("shop_lifecycle"))

        def read(c: psycopg.Connection) -> ShopState | None:
            try:
                row = c.cursor(row_factory=psycopg.rows.dict_row).execute(query, (shop_id,)).fetchone()
            except psycopg.errors.UndefinedTable:  # nothing registered yet in this control database
                c.rollback()
                return None
            return _row(row) if row else None

        if conn is not None:
            return read(conn)
        with self.control.connect() as c:
            return read(c)

    def get(self, shop_id: int, conn: psycopg.Connection | None = None) -> ShopState:
        found = self.find(shop_id, conn)
        if found is None:
            raise LifecycleRefused(
                f"shop {shop_id} is not registered for migration; register it first "
                f"(handyshop-migration migrate --shops {shop_id})."
            )
        return found

    def all(self, shop_ids: Sequence[int] | None = None) -> list[ShopState]:
        """Every shop's record (or those of `shop_ids`), in one query."""
        where = sql.SQL("WHERE shop_id = ANY(%s)" if shop_ids is not None else "")
        query = sql.SQL("SELECT {} FROM {} {} ORDER BY shop_id").format(_COLUMNS, control("shop_lifecycle"), where)
        with self.control.connect() as conn:
            try:
                rows = conn.cursor(row_factory=psycopg.rows.dict_row).execute(
                    query, (list(shop_ids),) if shop_ids is not None else None
                ).fetchall()
            except psycopg.errors.UndefinedTable:  # nothing registered yet in this control database
                return []
        return [_row(r) for r in rows]

    def check(self, shop_id: int, transition: str, conn: psycopg.Connection | None = None) -> ShopState:
        """The shop's record, or `LifecycleRefused` if `transition` is not allowed from its state — for a step
        that must refuse before it does any work."""
        current = self.get(shop_id, conn)
        _refuse_unless_allowed(current, TRANSITIONS[transition])
        return current

    def history(self, shop_id: int) -> list[HistoryEntry]:
        query = sql.SQL(
            "SELECT shop_id, at, transition, from_state, to_state, reads, writes, reason FROM {} "
            "WHERE shop_id = %s ORDER BY id"
        ).format(control("shop_history"))
        with self.control.connect() as conn:
            return conn.cursor(row_factory=class_row(HistoryEntry)).execute(query, (shop_id,)).fetchall()

    def read_percent(self, conn: psycopg.Connection | None = None) -> int:
        query = sql.SQL("SELECT value FROM {} WHERE key = %s").format(control("settings"))

        def read(c: psycopg.Connection) -> int:
            row = c.execute(query, (READ_ROLLOUT_PERCENT,)).fetchone()
            return int(row[0]) if row else 0

        if conn is not None:
            return read(conn)
        with self.control.connect() as c:
            return read(c)

    # -- transitions -------------------------------------------------------------------------------------

    def register(self, shop_ids: Iterable[int], *, reason: str = "registered for migration") -> list[int]:
        """Known shops become `registered` (idempotent; one transaction). Returns the ones that were new."""
        ids = sorted(set(shop_ids))
        with self.control.connect() as conn, conn.transaction():
            new = [
                int(r[0])
                for r in conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (shop_id, state) SELECT unnest(%s::bigint[]), %s "
                        "ON CONFLICT (shop_id) DO NOTHING RETURNING shop_id"
                    ).format(control("shop_lifecycle")),
                    (ids, State.REGISTERED.value),
                ).fetchall()
            ]
            if new:
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (shop_id, transition, from_state, to_state, reads, writes, reason) "
                        "SELECT unnest(%s::bigint[]), 'register', NULL, %s, 'shared', 'shared', %s"
                    ).format(control("shop_history")),
                    (new, State.REGISTERED.value, reason),
                )
        return sorted(new)

    def apply(
        self,
        shop_id: int,
        name: str,
        *,
        reason: str,
        target: State | None = None,
        reads: str | None = None,
        captured: bool | None = None,
        error: str | None = None,
        details: dict[str, Any] | None = None,
        effects: Sequence[Effect] = (),
        conn: psycopg.Connection | None = None,
    ) -> ShopState:
        """Run transition `name` for one shop, in one transaction with `effects` (each gets the connection).

        `target` is needed where the transition's target depends on the call (where a cutover returns to);
        `reads` where the route of the reads is the caller's choice (open_reads: 'rollout' or 'tenant');
        `captured` records whether the shop's writes are captured; `error` is kept as `last_error`
        (cleared by a transition without one); `details` are merged into the record's details."""
        transition = TRANSITIONS.get(name)
        if transition is None:
            raise ConfigurationError(f"unknown lifecycle transition {name!r}; one of {', '.join(TRANSITIONS)}.")
        if not reason.strip():
            raise ConfigurationError("every lifecycle transition needs a reason.")
        if conn is not None:
            with conn.transaction():
                return self._apply(conn, shop_id, transition, reason, target, reads, captured, error, details, effects)
        with self.control.connect() as own, own.transaction():
            return self._apply(own, shop_id, transition, reason, target, reads, captured, error, details, effects)

    def _apply(
        self,
        conn: psycopg.Connection,
        shop_id: int,
        t: Transition,
        reason: str,
        target: State | None,
        reads: str | None,
        captured: bool | None,
        error: str | None,
        details: dict[str, Any] | None,
        effects: Sequence[Effect],
    ) -> ShopState:
        row = conn.cursor(row_factory=psycopg.rows.dict_row).execute(
            sql.SQL("SELECT {} FROM {} WHERE shop_id = %s FOR UPDATE").format(_COLUMNS, control("shop_lifecycle")),
            (shop_id,),
        ).fetchone()
        if row is None:
            raise LifecycleRefused(
                f"shop {shop_id} is not registered for migration, so it cannot {t.name.replace('_', ' ')}; "
                f"register it first (handyshop-migration migrate --shops {shop_id})."
            )
        current = _row(row)
        _refuse_unless_allowed(current, t)
        new_state = target or t.target
        if new_state is None:
            raise ConfigurationError(f"transition {t.name} needs an explicit target state.")
        new_reads = reads or t.reads or current.reads
        new_writes = t.writes or current.writes
        if new_reads not in READS or new_writes not in WRITES:
            raise ConfigurationError(f"reads must be one of {READS}, writes one of {WRITES}.")
        routed = (new_reads, new_writes) != (current.reads, current.writes) or t.reroutes
        for effect in effects:
            effect(conn)
        updated = conn.cursor(row_factory=psycopg.rows.dict_row).execute(
            sql.SQL(
                "UPDATE {} SET state = %s, reads = %s, writes = %s, captured = coalesce(%s, captured), "
                "version = version + %s, last_error = %s, details = details || %s, updated_at = now(), "
                "entered_at = CASE WHEN state = %s THEN entered_at ELSE now() END "
                "WHERE shop_id = %s RETURNING {}"
            ).format(control("shop_lifecycle"), _COLUMNS),
            (new_state.value, new_reads, new_writes, captured, int(routed), error, Jsonb(details or {}), new_state.value,
             shop_id),
        ).fetchone()
        if updated is None:  # the row is locked FOR UPDATE above: it cannot have vanished
            raise LifecycleRefused(f"shop {shop_id}'s lifecycle record disappeared during {t.name}.")
        if new_state != current.state or routed or t.name != "synced":
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (shop_id, transition, from_state, to_state, reads, writes, reason) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
                ).format(control("shop_history")),
                (shop_id, t.name, current.state.value, new_state.value, new_reads, new_writes, reason),
            )
        return _row(updated)

    def record_details(self, shop_id: int, details: dict[str, Any]) -> None:
        """Merge facts about the shop's current state into its record (no transition, no history row)."""
        with self.control.connect() as conn, conn.transaction():
            conn.execute(
                sql.SQL("UPDATE {} SET details = details || %s, updated_at = now() WHERE shop_id = %s").format(
                    control("shop_lifecycle")
                ),
                (Jsonb(details), shop_id),
            )

    def record_error(self, shop_id: int, error: str) -> None:
        """Keep why the last step failed (shown by `status`); the state stays."""
        with self.control.connect() as conn, conn.transaction():
            conn.execute(
                sql.SQL("UPDATE {} SET last_error = %s, updated_at = now() WHERE shop_id = %s").format(
                    control("shop_lifecycle")
                ),
                (error[:2000], shop_id),
            )

    def note(self, details: Mapping[int, dict[str, Any]]) -> None:
        """Merge facts into shops' details that are no transition (a shop's schema version after a tenant
        migration, say), for many shops in one transaction: no state, route or history changes; `status`
        reads them with the records."""
        if not details:
            return
        with self.control.connect() as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                sql.SQL("UPDATE {} SET details = details || %s, updated_at = now() WHERE shop_id = %s").format(
                    control("shop_lifecycle")
                ),
                [(Jsonb(d), shop) for shop, d in details.items()],
            )

    def set_read_percent(self, percent: int, reason: str) -> None:
        """The global read rollout percentage (shops in reads_rollout with reads 'rollout' follow it)."""
        if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
            raise ConfigurationError(f"read rollout percentage must be a whole number 0..100, got {percent!r}.")
        with self.control.connect() as conn, conn.transaction():
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()"
                ).format(control("settings")),
                (READ_ROLLOUT_PERCENT, str(percent)),
            )
            # Every shop reading by rollout may change its route: bump their versions so clients re-ask.
            conn.execute(
                sql.SQL("UPDATE {} SET version = version + 1, updated_at = now() WHERE reads = 'rollout'").format(
                    control("shop_lifecycle")
                )
            )
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} (shop_id, transition, from_state, to_state, reads, writes, reason) "
                    "VALUES (NULL, 'read_rollout_percent', NULL, NULL, 'rollout', 'shared', %s)"
                ).format(control("shop_history")),
                (f"read rollout set to {percent}%: {reason}",),
            )


__all__ = [
    "IN_PROGRESS",
    "PHASE",
    "TENANT_OWNS_WRITES",
    "TENANT_WRITES",
    "TRANSITIONS",
    "HistoryEntry",
    "Lifecycle",
    "ShopState",
    "State",
    "Transition",
    "read_bucket",
]
