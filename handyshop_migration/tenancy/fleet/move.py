"""Moving a shop's tenant database to another server while it takes writes (a rebalance, or off a full server),
with the cutover's gates and a way back. The shared database is not touched.

The machinery is the migration's own, tenant to tenant:

1. **Start** (`start_move`: live or retired → `moving`; `details.move` records from, to, the state to return
   to and the step reached): the origin must be clean (`audit`) and at the newest tenant migration; the target
   server must have room (caps, connection budget) and gets a `move_target` placement.
2. **Provision** the target with the shop's *registered* passwords (same roles, same passwords: nothing an
   application holds changes but the host).
3. **Copy** every tenant table from one snapshot of the origin into the target in one replica-mode
   transaction (`COPY … FREEZE`, parents first, no trigger fires), with the sequences past the origin's,
   the origin's tenant change log (the way back of phase 4 needs every write since the cutover, wherever the
   tenant lives), its live marker, and the snapshot as the target's **watermark**.
4. **Sync**: the origin logs the keys its writes change (its tenant capture, `capture.enable_tenant_capture`,
   on since the cutover). Each round takes a snapshot of the origin, reads the log entries committed after
   the watermark (`NOT pg_visible_in_snapshot(xid, watermark)`: exact, whatever order transactions commit
   in — nothing is deleted from the origin's log, which stays the way back's), applies those keys with
   capture's own applier (`capture.apply_keys`, direction `TENANT_TO_TENANT`: current rows re-read and
   upserted, vanished keys deleted, tables without a key copied whole), appends the entries to the target's
   log and moves the watermark, in one replica-mode target transaction.
5. **Cut over**: close the origin's write guard (`capture.close_tenant_writes`: HS001, "ask `route()` again";
   a statement trigger on every tenant table, so tables without a key and TRUNCATE too) and wait out older
   writers; drain; sequences again; verify every table, origin against target (count and checksum); the
   target's guard opens (`capture.open_tenant_writes`); the origin's copy gets the target's snapshot as its
   watermark (the way back); then **one control-database transaction** points the registry entry at the
   target server, flips the placement and finishes the move in the lifecycle (a new routing version:
   `route()` answers with the new host). Afterwards the application role may no longer connect to the old
   copy (sessions already there can read; their writes are refused with HS001).

   A failed gate before the flip opens the origin's guard again and leaves the shop where it was
   (`abort_move`); the target keeps what was copied, for a rerun.

Both copies keep the tenant guard's `live_since` (the target gets the origin's): each holds writes the
shared database may lack (the way back of phase 4), so neither may ever be reloaded by a copy.

**The way back** is a move to the old copy (`move_back`): it holds the shop as of the flip and the watermark
of the new server's log, so only the writes since are synced back, and the same cut over follows. Once the
move is final, `drop_old_copy` (with the database name as confirmation) drops the old copy and frees its room.
A move interrupted anywhere is resumed by running it again (or undone with `abort`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.application.registry import TenantCredentials
from handyshop_migration.tenancy.db import one_row, replaying
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.copy import SourceSnapshot, _set_sequences, copy_out
from handyshop_migration.tenancy.engine.migrations import applied_migrations, check
from handyshop_migration.tenancy.engine.verification import TableVerification, table_checksum
from handyshop_migration.tenancy.errors import ConfigurationError, LifecycleRefused, MoveRefused
from handyshop_migration.tenancy.fleet.provisioner import FleetProvisioner
from handyshop_migration.tenancy.lifecycle import ShopState, State
from handyshop_migration.tenancy.workflow import Workflow

CHUNK = 2000  # keys per upsert / delete statement
PRE_FENCE_LAG = 100  # sync rounds before the fence go on until fewer changes than this are pending
MAX_PRE_FENCE_ROUNDS = 20

_TARGET_DDL = """
CREATE TABLE IF NOT EXISTS handyshop_migration.move_state (
    shop_id bigint PRIMARY KEY,
    origin_server text NOT NULL,
    watermark text NOT NULL,  -- a pg_snapshot of the origin: its log entries visible in it are in this database
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass
class MoveReport:
    shop_id: int
    origin: str
    target: str
    back: bool = False
    steps: list[tuple[float, str]] = field(default_factory=list)
    rows_copied: int = 0
    changes_applied: int = 0
    verification: list[TableVerification] = field(default_factory=list)
    fenced_seconds: float = 0.0
    state: str = ""

    def step(self, text: str) -> None:
        self.steps.append((time.time(), text))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TenantMover:
    """Moves of tenant databases between the fleet's servers, through the workflow (its registry, lifecycle,
    catalog and tenant logins)."""

    def __init__(self, workflow: Workflow) -> None:
        if not isinstance(workflow.provisioner, FleetProvisioner):
            raise ConfigurationError("moving a tenant database needs the fleet's provisioner (HANDYSHOP_SERVERS).")
        self.workflow = workflow
        self.fleet: FleetProvisioner = workflow.provisioner
        self.catalog = workflow.catalog
        self.lifecycle = workflow.lifecycle
        self.registry = workflow.registry

    # -- where things are ----------------------------------------------------------------------------------

    def _address(self, server: str) -> tuple[str, int]:
        p = self.fleet.provisioner_for(server)
        return p.tenant_host or p.admin.host, p.tenant_port or p.admin.port

    def _spec(self, creds: TenantCredentials, server: str) -> ConnectionSpec:
        """The owner role on the shop's database on `server` (same roles and passwords on every server)."""
        host, port = self._address(server)
        return replace(creds.owner_spec(), host=host, port=port).with_settings(self.workflow.session)

    def _move(self, record: ShopState) -> dict[str, Any]:
        return dict(record.details.get("move") or {})

    def _note(self, shop_id: int, move: dict[str, Any]) -> None:
        self.lifecycle.note({shop_id: {"move": move}})

    # -- the public steps -----------------------------------------------------------------------------------

    def move(self, shop_id: int, to_server: str, *, reason: str = "") -> MoveReport:
        """Move the shop's tenant database to `to_server` (resumes an interrupted move there)."""
        record = self.lifecycle.get(shop_id)
        move = self._move(record)
        creds = self.registry.get(shop_id)
        self.fleet.fleet.server(to_server)
        if record.state == State.MOVING:
            if move.get("to") != to_server:
                raise MoveRefused(
                    f"shop {shop_id} is moving to {move.get('to')}: finish that move (move-shop --shop {shop_id} "
                    f"--to {move.get('to')}) or abort it first."
                )
            report = MoveReport(shop_id, move["from"], to_server, bool(move.get("back")))
            report.step(f"resuming the move from {move['from']} to {to_server} at {move.get('step')}")
            return self._run(shop_id, creds, move, report)
        self.lifecycle.check(shop_id, "start_move")
        origin = creds.server
        if origin == to_server:
            raise MoveRefused(f"shop {shop_id}'s tenant database is on {to_server} already; nothing to move.")
        old = move.get("old_copy")
        back = old == to_server
        if old and not back:
            raise MoveRefused(
                f"shop {shop_id} still has the old copy its last move left on {old}: drop it (drop-old-copy) or move "
                f"back there (move-shop --back) before moving it to {to_server}."
            )
        self.fleet.require_clean(shop_id)
        self._require_current_schema(shop_id, self._spec(creds, origin), creds.database)
        estimate = self._size(shop_id, origin)
        self.fleet.placement.reserve_target(shop_id, to_server, estimate)
        new = {
            "from": origin, "to": to_server, "back": back, "return_state": record.state.value,
            "step": "syncing" if back else "provisioning", "started_at": _now(),
            **({"previous": move} if back else {}),
        }
        self.lifecycle.apply(
            shop_id, "start_move", details={"move": new},
            reason=reason or f"{'moving back' if back else 'moving'} its tenant database from {origin} to {to_server}",
        )
        report = MoveReport(shop_id, origin, to_server, back)
        report.step(f"move from {origin} to {to_server} started")
        return self._run(shop_id, creds, new, report)

    def move_back(self, shop_id: int, *, reason: str = "") -> MoveReport:
        """The way back: move the shop to the old copy its last move left (only the writes since are synced)."""
        record = self.lifecycle.get(shop_id)
        move = self._move(record)
        if record.state == State.MOVING and move.get("back"):
            return self.move(shop_id, move["to"], reason=reason)
        old = move.get("old_copy")
        if not old:
            raise MoveRefused(f"shop {shop_id} has no old copy of a move to go back to (it was dropped, or never moved).")
        return self.move(shop_id, old, reason=reason or f"the way back of the move: back to {old}")

    def abort(self, shop_id: int, *, reason: str = "move aborted") -> ShopState:
        """Give up a move in progress: the origin takes writes again, routing never changed."""
        record = self.lifecycle.check(shop_id, "abort_move")
        move = self._move(record)
        creds = self.registry.get(shop_id)
        with self._spec(creds, move["from"]).connect() as conn:
            capture.open_tenant_writes(conn, self.catalog, shop_id, reason)
        return self._aborted(shop_id, move, reason)

    def drop_old_copy(self, shop_id: int, *, confirm: str) -> str:
        """Drop the copy a finished move left on the old server, or what an aborted move copied to its target (its
        room is freed). `confirm`: the database name."""
        record = self.lifecycle.get(shop_id)
        move = self._move(record)
        old = move.get("old_copy") or (move.get("to") if move.get("step") == "aborted" else None)
        database = self.fleet.naming.database_name(shop_id)
        if record.state == State.MOVING:
            raise LifecycleRefused(f"shop {shop_id} is moving: finish or abort the move before dropping a copy.")
        if not old:
            raise MoveRefused(f"shop {shop_id} has no old copy of a move to drop.")
        if confirm != database:
            raise MoveRefused(
                f"dropping shop {shop_id}'s old copy on {old} deletes that database for good (its way back): confirm "
                f"with the database name, {database}."
            )
        result = self.fleet.drop_copy(shop_id, old)
        self._note(shop_id, {**move, "old_copy": None, "step": move.get("step") if move.get("step") == "moved" else "dropped",
                             "dropped": old, "dropped_at": _now()})
        return f"dropped {result.database} on {old} (database dropped={result.dropped_database}, roles dropped={result.dropped_role})"

    # -- the run ---------------------------------------------------------------------------------------------

    def _run(self, shop_id: int, creds: TenantCredentials, move: dict[str, Any], report: MoveReport) -> MoveReport:
        origin, target = move["from"], move["to"]
        source, dest = self._spec(creds, origin), self._spec(creds, target)
        try:
            if move["step"] == "provisioning":
                self.fleet.provision_copy(shop_id, target, creds)
                self.fleet.provisioner_for(target).require_clean(shop_id)
                report.step(f"{creds.database} provisioned on {target} with the shop's registered roles")
                move = {**move, "step": "copying"}
                self._note(shop_id, move)
            for spec in (dest, source):
                with spec.connect() as conn:
                    self._prepare(conn, shop_id)
            if move["step"] == "copying":
                report.rows_copied = self._copy(source, dest, origin, shop_id)
                report.step(f"copied {report.rows_copied} rows from one snapshot of {origin}")
                move = {**move, "step": "syncing"}
                self._note(shop_id, move)
            if move["step"] == "syncing":
                self._check_watermark(dest, shop_id, origin)
                for _ in range(MAX_PRE_FENCE_ROUNDS):
                    applied, pending = self._sync(source, dest, shop_id)
                    report.changes_applied += applied
                    if pending < PRE_FENCE_LAG:
                        break
                report.step(f"synced {report.changes_applied} changes while {origin} still took the shop's writes")
                move = {**move, "step": "cutting_over"}
                self._note(shop_id, move)
            return self._cut_over(shop_id, creds, move, source, dest, report)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self.lifecycle.record_error(shop_id, f"{type(exc).__name__}: {exc}"[:2000])
            raise

    def _cut_over(
        self, shop_id: int, creds: TenantCredentials, move: dict[str, Any], source: ConnectionSpec, dest: ConnectionSpec,
        report: MoveReport,
    ) -> MoveReport:
        origin, target = move["from"], move["to"]
        with source.connect() as oconn:  # the origin refuses the shop's writes now (waits out older ones)
            capture.close_tenant_writes(oconn, shop_id, f"moving to server {target}")
        fenced_at = time.perf_counter()
        report.step(f"{origin} fences the shop's writes")
        try:
            while True:
                applied, pending = self._sync(source, dest, shop_id)
                report.changes_applied += applied
                if not pending:
                    break
            with SourceSnapshot(source) as snap, dest.connect() as tconn, replaying(tconn):
                for tt in self.workflow.schema.tables:
                    _set_sequences(snap, tconn, tt)
            report.step(f"drained: {report.changes_applied} changes applied")
            with SourceSnapshot(source) as snap, dest.connect() as tconn:
                report.verification = [
                    TableVerification(t.name, shop_id, table_checksum(snap.conn, t), table_checksum(tconn, t))
                    for t in self.catalog.tables
                ]
            bad = [v.describe() for v in report.verification if not v.ok]
            if bad:
                raise MoveRefused(
                    f"shop {shop_id}: {target} does not equal {origin} after the drain: {'; '.join(bad)}; the shop stays "
                    f"on {origin}. Run the move again (it copies what differs again) or find what changed {target}."
                )
            report.step(f"verified {len(report.verification)} tables: counts and checksums equal on both servers")
            with dest.connect() as tconn:
                capture.enable_tenant_capture(tconn, self.catalog, shop_id)
                capture.open_tenant_writes(tconn, self.catalog, shop_id, f"moved here from server {origin}")
                watermark = str(one_row(tconn, "SELECT pg_current_snapshot()::text")[0])
                tconn.commit()
            with source.connect() as oconn, oconn.transaction():
                self._set_watermark(oconn, shop_id, target, watermark)  # the way back starts from here
            self._grant_connect(target, creds, True)
        except BaseException as exc:
            with source.connect() as oconn:
                capture.open_tenant_writes(oconn, self.catalog, shop_id, f"move to {target} aborted")
            self._aborted(shop_id, move, f"move to {target} aborted: {exc}"[:2000])
            raise
        host, port = self._address(target)
        final_move = {
            "from": origin, "to": target, "step": "moved", "old_copy": origin, "moved_at": _now(),
            "back": bool(move.get("back")),
        }

        def flip(conn: psycopg.Connection) -> None:
            self.registry.relocate(conn, shop_id, server=target, host=host, port=port)
            self.fleet.placement.flip(conn, shop_id, target)

        final = self.lifecycle.apply(
            shop_id, "finish_move", target=State(move["return_state"]), details={"move": final_move, "server": target},
            reason=f"tenant database moved from {origin} to {target}: route() answers with {target}",
            effects=[flip],
        )
        self.registry.invalidate(shop_id)
        report.fenced_seconds = time.perf_counter() - fenced_at
        self._grant_connect(origin, creds, False)
        report.state = final.state.value
        report.step(
            f"{target} takes the shop's reads and writes (writes paused {report.fenced_seconds:.2f}s); the old copy "
            f"on {origin} is kept as the way back"
        )
        return report

    def _aborted(self, shop_id: int, move: dict[str, Any], reason: str) -> ShopState:
        back = dict(move.get("previous") or {}) if move.get("back") else {}
        if back:
            self._restore_old_copy_kind(shop_id, move["to"])
        return self.lifecycle.apply(
            shop_id, "abort_move", target=State(move["return_state"]), reason=reason, error=reason,
            details={"move": back or {**move, "step": "aborted", "aborted_at": _now()}},
        )

    def _restore_old_copy_kind(self, shop_id: int, server: str) -> None:
        with self.workflow.source.connect() as conn, conn.transaction():
            conn.execute(
                sql.SQL("UPDATE {} SET kind = 'old_copy' WHERE shop_id = %s AND server = %s AND kind = 'move_target'")
                .format(sql.Identifier("handyshop_migration", "tenant_databases")),
                (shop_id, server),
            )

    # -- pieces ------------------------------------------------------------------------------------------------

    def _size(self, shop_id: int, server: str) -> int:
        """The database's size on its server (what it will take on the target); the estimate where the admin
        may not measure it (pg_database_size needs CONNECT, which a non-superuser admin lacks)."""
        try:
            measured = self.fleet.live.connection(server).execute(
                "SELECT pg_database_size(datname) FROM pg_database WHERE datname = %s",
                (self.fleet.naming.database_name(shop_id),),
            ).fetchone()
        except psycopg.errors.InsufficientPrivilege:
            measured = None
        return int(measured[0]) if measured else self.fleet.estimate(shop_id)

    def _require_current_schema(self, shop_id: int, spec: ConnectionSpec, database: str) -> None:
        with spec.connect() as conn:
            pending = check(applied_migrations(conn), self.fleet.migrations_of(shop_id), database)
        if pending:
            raise MoveRefused(
                f"shop {shop_id}'s tenant database is behind the newest tenant migration ({', '.join(m.name for m in pending)} "
                "pending); apply the schema changes to it first (handyshop-migration migrate-schemas), then move it."
            )

    def _prepare(self, conn: psycopg.Connection, shop_id: int) -> None:
        """Our bookkeeping in a tenant database taking part in a move (idempotent): the shop's tenant capture
        (its change log and triggers: the origin's writes are logged for the sync, the target's once it is
        live; the move's own writes are replays, which skip them), its write guard's state row, the move's
        watermark table."""
        capture.enable_tenant_capture(conn, self.catalog, shop_id)
        capture.claim_tenant_guard(conn, shop_id)
        with conn.transaction():
            conn.execute(_TARGET_DDL.encode())

    def _copy(self, source: ConnectionSpec, dest: ConnectionSpec, origin: str, shop_id: int) -> int:
        """Everything of the shop from one snapshot of the origin, in one replica-mode target transaction: the
        tables, the sequences, the tenant change log (the way back of phase 4) and when the shop went live."""
        rows = 0
        with SourceSnapshot(source) as snap, dest.connect() as tconn, replaying(tconn):
            tables = sql.SQL(", ").join(sql.Identifier(t.schema, t.name) for t in self.catalog.tables)
            tconn.execute(sql.SQL("TRUNCATE {}, handyshop_migration.changes").format(tables))
            for t in self.catalog.tables:  # parents first (catalog order); no foreign key fires in replica mode
                rows += capture.copy_whole_table(snap.conn, tconn, t, freeze=True)
            for tt in self.workflow.schema.tables:
                _set_sequences(snap, tconn, tt)
            with tconn.cursor().copy(
                "COPY handyshop_migration.changes (table_name, op, key, captured_at) FROM STDIN"
            ) as sink:
                for chunk in copy_out(
                    snap.conn, sql.SQL("COPY (SELECT table_name, op, key, captured_at FROM handyshop_migration.changes "
                                       "ORDER BY id) TO STDOUT")
                ):
                    sink.write(chunk)
            guard = capture.tenant_guard_state(snap.conn)
            tconn.execute(
                "UPDATE handyshop_migration.tenant_state SET accepts_writes = false, live_since = %s, reason = %s, "
                "since = now() WHERE shop_id = %s",
                (guard.live_since if guard else None, f"being moved here from server {origin}", shop_id),
            )
            self._set_watermark(tconn, shop_id, origin, snap.token)
        return rows

    @staticmethod
    def _set_watermark(conn: psycopg.Connection, shop_id: int, origin: str, watermark: str) -> None:
        conn.execute(
            "INSERT INTO handyshop_migration.move_state (shop_id, origin_server, watermark) VALUES (%s, %s, %s) "
            "ON CONFLICT (shop_id) DO UPDATE SET origin_server = excluded.origin_server, "
            "watermark = excluded.watermark, updated_at = now()",
            (shop_id, origin, watermark),
        )

    def _check_watermark(self, dest: ConnectionSpec, shop_id: int, origin: str) -> None:
        with dest.connect() as tconn:
            row = tconn.execute(
                "SELECT origin_server FROM handyshop_migration.move_state WHERE shop_id = %s", (shop_id,)
            ).fetchone()
        if row is None or row[0] != origin:
            raise MoveRefused(
                f"shop {shop_id}'s database on the target does not hold a copy taken from {origin} "
                f"({'none' if row is None else 'one from ' + str(row[0])}): it cannot be synced from there. Drop it "
                "(drop-old-copy) and move the shop afresh."
            )

    def _sync(self, source: ConnectionSpec, dest: ConnectionSpec, shop_id: int) -> tuple[int, int]:
        """One round (see the module doc). Returns (log entries applied, entries pending after it)."""
        with dest.connect() as tconn:
            watermark = str(one_row(
                tconn, "SELECT watermark FROM handyshop_migration.move_state WHERE shop_id = %s", (shop_id,)
            )[0])
            tconn.rollback()
            with SourceSnapshot(source) as snap:
                entries = snap.conn.execute(
                    "SELECT id, table_name, op, key, captured_at FROM handyshop_migration.changes "
                    "WHERE NOT pg_visible_in_snapshot(xid, %s::pg_snapshot) ORDER BY id",
                    (watermark,),
                ).fetchall()
                token = snap.token
                if entries:
                    self._apply(snap, tconn, shop_id, entries)
        with source.connect() as oconn:
            left = int(one_row(
                oconn,
                "SELECT count(*) FROM handyshop_migration.changes WHERE NOT pg_visible_in_snapshot(xid, %s::pg_snapshot)",
                (token,),
            )[0])
        return len(entries), left

    def _apply(self, snap: SourceSnapshot, tconn: psycopg.Connection, shop_id: int, entries: list[tuple[Any, ...]]) -> None:
        """The rows of the logged keys as the snapshot has them (capture's applier), into the target with the log
        entries and the new watermark: one replica-mode transaction (a round applied twice changes nothing)."""
        with replaying(tconn):
            for i in range(0, len(entries), CHUNK):
                part = entries[i:i + CHUNK]
                capture.apply_keys(
                    capture.TENANT_TO_TENANT, snap.conn, tconn, self.catalog, shop_id, [(e[0], e[1], e[3]) for e in part],
                    capture.SyncResult(shop_id, direction=capture.TENANT_TO_TENANT.name),
                )
                log = [{"t": e[1], "o": e[2], "k": e[3], "c": e[4].isoformat()} for e in part]
                tconn.execute(
                    "INSERT INTO handyshop_migration.changes (table_name, op, key, captured_at) SELECT t, o::\"char\", k, c "
                    "FROM jsonb_to_recordset(%s::jsonb) AS x(t text, o text, k jsonb, c timestamptz)",
                    (json.dumps(log, ensure_ascii=False),),
                )
            tconn.execute(
                "UPDATE handyshop_migration.move_state SET watermark = %s, updated_at = now() WHERE shop_id = %s",
                (snap.token, shop_id),
            )

    def _grant_connect(self, server: str, creds: TenantCredentials, allow: bool) -> None:
        """Whether the application role may connect to the shop's database on `server` (the admin's, on the
        server's maintenance database: the tenant database itself is not touched)."""
        statement = "GRANT CONNECT ON DATABASE {} TO {}" if allow else "REVOKE CONNECT ON DATABASE {} FROM {}"
        self.fleet.live.connection(server).execute(
            sql.SQL(statement).format(sql.Identifier(creds.database), sql.Identifier(creds.role))
        )


__all__ = ["MoveReport", "TenantMover"]
