"""Each phase and each way back of one shop as one library call that enforces its own rules.

The Dagster assets, the CLI and an application call these and report what they return; none of them
sequences engine calls or writes a shop's records itself. Every call

- checks the shop's lifecycle state first and refuses from the wrong one (`LifecycleRefused`, naming the
  state and what to do) before touching anything;
- checks the tenant's roles (`Provisioner.require_clean`) before writing into its database, and writes into
  it only as the tenant's owner role (never as a superuser: nothing a tenant created can run with our
  rights);
- records its transitions through `Lifecycle` (state, routing, shared-side fence in one transaction);
- can be interrupted anywhere and run again: a step found in progress (`provisioning`, `copying`,
  `cutting_over`, `rolling_back`, `retiring`, `restoring`, `deprovisioning`) is completed — or, for a cutover,
  rolled back by choice — from what is actually in the databases.

The order inside the steps encodes the safety rules: capture is enabled (and older writers waited out)
before the copy takes its snapshot, so every write is in the snapshot or in the change log; the shared
database's fence and the routing flip are in one transaction; the tenant refuses writes before the
rollback copies its writes back.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from handyshop_migration.tenancy.application.encryption import CredentialCipher
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.application.routing import install_route_function
from handyshop_migration.tenancy.dsn import ConnectionSpec, pinned_search_path
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.copy import (
    SourceSnapshot,
    TableCopy,
    copy_table,
    pending_foreign_keys,
    refresh_materialized_views,
)
from handyshop_migration.tenancy.engine.cutover import CutoverReport, reserve_ids, verify_both_sides
from handyshop_migration.tenancy.engine.provisioning import Provisioner, ProvisionResult
from handyshop_migration.tenancy.engine.retirement import (
    Archive,
    archive_shop,
    restore_shop,
    retire_shop,
)
from handyshop_migration.tenancy.engine.tenant_schema import TenantSchema, render
from handyshop_migration.tenancy.engine.verification import (
    TableVerification,
    check_copied_table,
    table_checksum,
    verify_copied_table,
)
from handyshop_migration.tenancy.errors import (
    CutoverRefused,
    HandyshopError,
    LifecycleRefused,
    RetirementRefused,
)
from handyshop_migration.tenancy.fleet.provisioner import FleetProvisioner
from handyshop_migration.tenancy.lifecycle import TENANT_WRITES, Lifecycle, ShopState, State

DEFAULT_ID_BLOCK = 1_000_000
# States whose tenant exists and must not take the shop's writes (where `_settle_tenant` looks).
_SETTLED_ON_SHARED = frozenset(
    {State.PROVISIONED, State.COPYING, State.COPIED, State.VERIFIED, State.SYNCING, State.READS_ROLLOUT}
)


@dataclass(frozen=True)
class TableResult:
    copy: TableCopy
    verification: TableVerification


@dataclass
class CopyReport:
    shop_id: int
    snapshot: str = ""
    tables: list[TableResult] = field(default_factory=list)
    pending_foreign_keys: list[str] = field(default_factory=list)
    state: State = State.COPIED
    seconds: float = 0.0

    @property
    def verified(self) -> bool:
        return self.state == State.VERIFIED

    @property
    def rows(self) -> int:
        return sum(t.copy.rows for t in self.tables)

    @property
    def problems(self) -> list[str]:
        bad = [t.verification.describe() for t in self.tables if not t.verification.ok]
        if self.pending_foreign_keys:
            bad.append(
                f"foreign keys pending: {', '.join(self.pending_foreign_keys)} (tables copied from different "
                "snapshots: copy the shop's tables together)"
            )
        return bad


@dataclass
class VerifyReport:
    shop_id: int
    tables: list[TableVerification]
    pending_foreign_keys: list[str]
    state: State

    @property
    def verified(self) -> bool:
        return self.state in (State.VERIFIED, State.SYNCING) and not self.problems

    @property
    def problems(self) -> list[str]:
        bad = [v.describe() for v in self.tables if not v.ok]
        if self.pending_foreign_keys:
            bad.append(f"foreign keys pending: {', '.join(self.pending_foreign_keys)}")
        return bad


@dataclass
class RetirementReport:
    shop_id: int
    archive: Archive
    deleted: dict[str, int]
    seconds: float
    resumed: bool = False


@dataclass
class Workflow:
    """One migration: the shared database (also the control database), its catalog, the tenant server(s)
    through the provisioner (one server's, or the fleet's: `tenancy.fleet`), and the shops' lifecycle."""

    source: ConnectionSpec
    catalog: Catalog
    provisioner: Provisioner | FleetProvisioner
    lifecycle: Lifecycle
    capture_writes: bool = True  # capture a shop's writes from before its copy's snapshot (phase 3 needs it)
    archive_dir: Path = Path("archives")
    id_block: int = DEFAULT_ID_BLOCK
    # the fence starts once fewer changes than this are pending (the rest is drained inside it)
    fence_pending: int = 200
    fence_lease: float = capture.DEFAULT_LEASE_SECONDS  # renewed while the cutover works; runs out if it dies
    schema: TenantSchema = field(init=False)

    session: dict[str, str] = field(init=False)  # settings of our sessions in tenant databases

    def __post_init__(self) -> None:
        self.schema = render(self.catalog)
        self.session = pinned_search_path(*sorted({t.schema for t in self.catalog.tables}))

    @property
    def registry(self) -> ConnectionRegistry:
        return self.provisioner.registry

    def setup(self) -> None:
        """The control records (registry, lifecycle, routing function, placement) exist; idempotent."""
        ensure_control(self.source, self.registry.cipher)
        if isinstance(self.provisioner, FleetProvisioner):
            self.provisioner.ensure_schema()

    def tenant(self, shop_id: int) -> ConnectionSpec:
        """Where the migration connects for a shop: its tenant database, as its owner role, with the search path
        pinned (see `dsn.pinned_search_path`)."""
        return self.registry.get(shop_id).owner_spec().with_settings(self.session)

    def _state(self, shop_id: int, transition: str) -> ShopState:
        """The shop's record, refusing (before anything is done) if `transition` is not allowed from it."""
        return self.lifecycle.check(shop_id, transition)

    def _fail(self, shop_id: int, exc: BaseException) -> None:
        """Keep why a step stopped (status shows it); the state stays where the step left it."""
        try:
            self.lifecycle.record_error(shop_id, f"{type(exc).__name__}: {exc}")
        except HandyshopError:
            pass  # the control database is gone too: the original error is what matters

    # -- phase 1 ---------------------------------------------------------------------------------------

    def register(self, shop_ids: Sequence[int]) -> list[int]:
        for shop in shop_ids:
            self.provisioner._check_shop_id(shop)  # global ids are refused before they get a record
        return self.lifecycle.register(shop_ids)

    def provision(self, shop_id: int) -> ProvisionResult | None:
        """Database and roles for the shop (idempotent). None if it is past provisioning (nothing to do:
        the admin never touches a tenant database again once it is handed over)."""
        self.register([shop_id])
        st = self.lifecycle.get(shop_id)
        if st.state not in (State.REGISTERED, State.PROVISIONING):
            return None
        try:
            if isinstance(self.provisioner, FleetProvisioner):
                self.provisioner.place(shop_id)  # a shop no server can take is refused before anything starts
            # A database or role of the shop's names that is not ours: refused before the shop is recorded as
            # provisioning (nothing of it is altered; the shop stays registered, the error kept for `status`).
            self.provisioner.refuse_foreign(shop_id)
        except HandyshopError as exc:
            self._fail(shop_id, exc)
            raise
        self.lifecycle.apply(shop_id, "start_provisioning", reason="provisioning its database and roles")
        try:
            result = self.provisioner.provision(shop_id)
            with self.tenant(shop_id).connect() as tconn:
                capture.claim_tenant_guard(tconn, shop_id)  # it refuses every write but ours until the shop is live
        except BaseException as exc:
            self._fail(shop_id, exc)
            raise
        self.lifecycle.apply(
            shop_id, "finish_provisioning", reason=f"{result.database} ready on {result.server} ({result.schema_version})",
            details={"server": result.server, "schema_version": result.schema_version},
        )
        return result

    # -- phase 2 ---------------------------------------------------------------------------------------

    def copy(self, shop_id: int, tables: Sequence[str] | None = None) -> CopyReport:
        """Copy the shop's tables from one snapshot of the shared database (capture first), verify each,
        and mark the shop verified when every table equals its slice and every foreign key is in place.
        Also the way back from phase 2 (a reload) and the resumption of an interrupted copy."""
        st = self._state(shop_id, "start_copy")
        self.provisioner.require_clean(shop_id)
        self._settle_tenant(shop_id, st)
        started = time.perf_counter()
        names = list(tables) if tables is not None else [t.name for t in self.schema.tables]
        captured = self.capture_writes or st.captured
        self.lifecycle.apply(shop_id, "start_copy", reason=f"copying {len(names)} tables", captured=captured)
        report = CopyReport(shop_id)
        try:
            if captured:
                # Capture first, then the snapshot: every write is in the snapshot or in the change log.
                with self.source.connect() as conn:
                    capture.enable(conn, self.catalog, shop_id)
            with SourceSnapshot(self.source) as snap, self.tenant(shop_id).connect() as tconn:
                report.snapshot = snap.token
                for name in names:
                    copied = copy_table(snap, tconn, self.schema, name, shop_id)
                    verified = verify_copied_table(snap.conn, tconn, self.catalog, name, shop_id)
                    report.tables.append(TableResult(copied, verified))
                report.pending_foreign_keys = pending_foreign_keys(tconn, self.schema)
                if tables is None and not report.pending_foreign_keys:
                    # every table holds the shop's rows of one snapshot: fill the materialized views from them
                    refresh_materialized_views(tconn, self.schema, shop_id)
        except BaseException as exc:
            self._fail(shop_id, exc)
            raise
        self.lifecycle.apply(
            shop_id, "finish_copy", reason=f"{report.rows} rows in {len(report.tables)} tables",
            details={"snapshot": report.snapshot, "rows": report.rows, "tables": len(report.tables)},
        )
        report.state = self._judge(shop_id, report.problems, captured)
        report.seconds = time.perf_counter() - started
        return report

    def _judge(self, shop_id: int, problems: list[str], captured: bool) -> State:
        if problems:
            self.lifecycle.apply(
                shop_id, "verification_failed", reason="verification failed", error="; ".join(problems)[:2000]
            )
            return State.COPIED
        return self.lifecycle.apply(
            shop_id, "verified", target=State.VERIFIED, reason="every table equals its source slice"
        ).state

    def verify(self, shop_id: int) -> VerifyReport:
        """Check every table of the tenant again against its slice as it was copied (nothing is copied)."""
        st = self._state(shop_id, "verified")
        with self.tenant(shop_id).connect() as tconn:
            results = [check_copied_table(tconn, self.catalog, t.name, shop_id) for t in self.catalog.tables]
            pending = pending_foreign_keys(tconn, self.schema)
        report = VerifyReport(shop_id, results, pending, st.state)
        if report.problems:
            report.state = self._judge(shop_id, report.problems, st.captured)
        elif st.state == State.COPIED:
            report.state = self._judge(shop_id, [], st.captured)
        return report

    # -- phase 3 ---------------------------------------------------------------------------------------

    def sync(self, shop_id: int) -> capture.SyncResult:
        """Apply the shop's captured writes to its tenant (idempotent)."""
        st = self._state(shop_id, "synced")
        if not st.captured:
            raise LifecycleRefused(
                f"shop {shop_id}'s writes are not captured (its copy ran with capture off, or capture was stopped): "
                "copy the shop again with capture on (the way back from phase 2)."
            )
        self.provisioner.require_clean(shop_id)
        try:
            result = capture.apply_changes(capture.TO_TENANT, self.source, self.tenant(shop_id), self.catalog, shop_id)
        except BaseException as exc:
            self._fail(shop_id, exc)
            raise
        self.lifecycle.apply(shop_id, "synced", reason=f"{result.changes} changes applied")
        return result

    def stop_capture(self, shop_id: int) -> int:
        """The way back from phase 3: stop capturing the shop's writes and drop its change log."""
        st = self._state(shop_id, "stop_capture")
        with self.source.connect() as conn:
            dropped = capture.disable(conn, shop_id)
        target = State.COPIED if st.state == State.COPIED else State.VERIFIED
        self.lifecycle.apply(
            shop_id, "stop_capture", target=target, captured=False,
            reason=f"capture stopped, {dropped} pending changes dropped (the tenant is frozen at its last sync)",
        )
        return dropped

    # -- phase 4 ---------------------------------------------------------------------------------------

    def open_reads(self, shop_id: int, *, full: bool = False, reason: str = "") -> ShopState:
        """The shop's reads go to its tenant: by the global rollout percentage, or all of them (`full`)."""
        self._state(shop_id, "open_reads")
        return self.lifecycle.apply(
            shop_id, "open_reads", reads="tenant" if full else "rollout",
            reason=reason or ("all reads to the tenant" if full else "reads to the tenant by rollout percentage"),
        )

    def close_reads(self, shop_id: int, *, reason: str = "reads back to the shared database") -> ShopState:
        st = self._state(shop_id, "close_reads")
        return self.lifecycle.apply(
            shop_id, "close_reads", target=State.SYNCING if st.captured else State.VERIFIED, reason=reason
        )

    def set_read_percent(self, percent: int, reason: str) -> None:
        self.lifecycle.set_read_percent(percent, reason)

    def cut_over(self, shop_id: int, *, reason: str = "write cutover") -> CutoverReport:
        """Move the shop's writes (and reads) to its tenant; resumes an interrupted cutover forward.

        Outside the fence (the shop still writes to the shared database): sync until little is pending;
        verify every table in full, consistently, except the keys still pending; reserve id blocks; capture
        the tenant's own writes (the way back). Inside the fence — the shop's writes wait in the shared
        database, a lease that runs out if this process dies: drain the last changes, verify only the keys
        changed since the full verification, flip routing and make the fence permanent in one transaction,
        open the tenant. So the fence lasts as long as the last changes take, whatever the shop's size. A
        failed gate lifts the fence and leaves the shop where it was."""
        report = CutoverReport(shop_id)
        st = self.lifecycle.get(shop_id)
        if st.state == State.LIVE:
            with self.tenant(shop_id).connect() as tconn:
                guard = capture.tenant_guard_state(tconn)
                if guard is None or not guard.accepts_writes:  # interrupted after the flip, or after a rollback's fence
                    capture.open_tenant_writes(tconn, self.catalog, shop_id, f"{reason}: live (resumed)")
                    report.step("the tenant takes the shop's writes again (an interrupted step left it closed)")
            if st.tenant_closed:
                self.lifecycle.record_details(shop_id, {TENANT_WRITES: "open"})
            report.state = st.state.value
            report.step("already live")
            return report
        st = self._state(shop_id, "start_cutover")
        if not st.captured:
            raise CutoverRefused(
                f"shop {shop_id}'s writes are not captured; copy it with capture on and sync it (phase 3) first."
            )
        self.provisioner.require_clean(shop_id)
        self._settle_tenant(shop_id, st)
        back_to = State.READS_ROLLOUT if st.reads != "shared" else State.SYNCING
        tenant = self.tenant(shop_id)
        reservations: dict[str, list[int]] = dict(st.details.get("id_reservations") or {})
        if st.state != State.CUTTING_OVER:
            pre = capture.apply_changes(
                capture.TO_TENANT, self.source, tenant, self.catalog, shop_id, until_pending_below=self.fence_pending
            )
            report.changes_drained += pre.changes
            report.step(f"synced {pre.changes} changes while the shop still wrote to the shared database")
            with SourceSnapshot(self.source) as snap, tenant.connect() as tconn:
                checked, left_out = capture.verify_outside_pending(snap.conn, tconn, self.catalog, shop_id)
            bad = [v.describe() for v in checked if not v.ok]
            if bad:
                raise CutoverRefused(
                    f"shop {shop_id}: verification before the fence failed for {', '.join(bad)}; writes stay on the "
                    "shared database. Re-copy the shop (phase 2) or find what changed the tenant."
                )
            with self.source.connect() as sconn:
                capture.forget_touched(sconn, shop_id)  # from here on, what changes is checked inside the fence
            report.verification = checked
            report.step(f"verified {len(checked)} tables in full outside the fence ({left_out} pending keys left to it)")
            with self.source.connect() as sconn, tenant.connect() as tconn:
                reserved = reserve_ids(sconn, tconn, self.catalog, shop_id, self.id_block)
                capture.enable_tenant_capture(tconn, self.catalog, shop_id)
            reservations = {k: list(v) for k, v in reserved.items()}
            report.step(f"reserved id blocks of {self.id_block} in {len(reserved)} sequences")
        else:
            report.step("resuming an interrupted cutover")
        report.reservations = {k: (v[0], v[1]) for k, v in reservations.items()}
        with self.source.connect() as sconn:
            capture.prepare_fence(sconn, shop_id)
        # The waiter's connection is opened before the fence: "older than the fence" is then read the moment the
        # fence commits. A write that begins after that sees the fence and is held, and must not be waited for
        # (it waits for us); opened afterwards, a login's milliseconds let such writes in and the cutover would
        # wait out their hold (seen as p95 windows of 2-4 s against a p50 of 0.17 s).
        with self.source.connect() as waiter:
            fenced_at = time.perf_counter()  # the window counts from the fence, the wait for older writers included
            self.lifecycle.apply(
                shop_id, "start_cutover", reason=f"{reason}: fencing the shop's writes in the shared database",
                details={"id_reservations": reservations},
                effects=[lambda c: capture.set_fence(c, shop_id, reason, self.fence_lease)],
            )
            capture.wait_for_older_transactions(waiter)
        report.step("shared database holds the shop's writes (a lease)")
        try:
            drained = capture.apply_changes(capture.TO_TENANT, self.source, tenant, self.catalog, shop_id)
            report.changes_drained += drained.changes
            if drained.lag.pending:
                raise CutoverRefused(f"shop {shop_id}: {drained.lag.pending} changes still pending after draining")
            report.step(f"drained {drained.changes} changes: lag 0")
            with self.source.connect() as sconn, tenant.connect() as tconn:
                capture.renew(sconn, shop_id, self.fence_lease)
                touched = capture.verify_touched(sconn, tconn, self.catalog, shop_id)
            bad = [v.describe() for v in touched if not v.ok]
            if bad:
                raise CutoverRefused(
                    f"shop {shop_id}: verification inside the fence failed for {', '.join(bad)}; writes stay on the "
                    "shared database. Re-copy the shop (phase 2) or find what changed the tenant."
                )
            report.step(f"verified the {sum(v.tenant.rows for v in touched)} rows changed since, in {len(touched)} tables")
            report.verification = _merge(report.verification, touched)
            final = self.lifecycle.apply(
                shop_id, "finish_cutover", reason=f"{reason}: reads and writes to the tenant",
                # until the tenant is opened below: killed in between, the next migrate opens it (runner.next_job)
                details={TENANT_WRITES: "closed"},
                effects=[lambda c: capture.make_permanent(c, shop_id, reason=f"{reason}: live on the tenant")],
            )
        except BaseException as exc:
            self.lifecycle.apply(
                shop_id, "abort_cutover", target=back_to, reason=f"{reason} aborted: {exc}"[:2000],
                error=str(exc)[:2000], effects=[lambda c: capture.clear_fence(c, shop_id)],
            )
            with self.source.connect() as sconn:
                capture.unfence(sconn, shop_id)  # and the triggers stop checking its writes
            raise
        with tenant.connect() as tconn:
            capture.open_tenant_writes(tconn, self.catalog, shop_id, f"{reason}: live")
        report.fenced_seconds = time.perf_counter() - fenced_at
        self._record_window(shop_id, st, report.fenced_seconds)
        report.state = final.state.value
        report.step(f"live: reads and writes go to the tenant (writes waited {report.fenced_seconds:.2f}s)")
        return report

    def _record_window(self, shop_id: int, st: ShopState, seconds: float) -> None:
        """How long the shop's writes waited at this cutover (status reports the fleet's p50/p95); and that
        the tenant takes them now."""
        self.lifecycle.record_details(
            shop_id, {"fence_windows": [*st.details.get("fence_windows", []), round(seconds, 4)], TENANT_WRITES: "open"}
        )

    def roll_back_cutover(self, shop_id: int, *, reason: str = "rollback of the cutover") -> CutoverReport:
        """The way back from phase 4: every write the tenant took goes back to the shared database, then
        reads and writes follow. Resumes an interrupted rollback (and finishes one whose last step, the
        tenant's, was interrupted). A cutover that was interrupted (`cutting_over`) is aborted instead: its
        writes never went to the tenant, so nothing is copied back (`abort_cutover`)."""
        st = self.lifecycle.get(shop_id)
        if st.state == State.RETIRED:
            raise CutoverRefused(
                f"shop {shop_id} is retired: its rows are no longer in the shared database. Restore its archive "
                "(the way back from phase 5) before rolling back the cutover."
            )
        if st.state == State.CUTTING_OVER:
            return self.abort_cutover(shop_id, reason=f"{reason}: the cutover was interrupted, aborted")
        if st.state not in (State.LIVE, State.ROLLING_BACK) and st.writes == "shared":
            if self._settle_tenant(shop_id, st):
                report = CutoverReport(shop_id, state=st.state.value)
                report.step("finished an interrupted rollback: the tenant no longer takes the shop's writes")
                return report
        self._state(shop_id, "start_rollback")
        self.provisioner.require_clean(shop_id)
        report = CutoverReport(shop_id)
        tenant = self.tenant(shop_id)
        if st.state == State.LIVE:  # killed before start_rollback, the next migrate opens the tenant again
            self.lifecycle.record_details(shop_id, {TENANT_WRITES: "closed"})
        with tenant.connect() as tconn:
            capture.close_tenant_writes(tconn, shop_id, reason)  # the tenant refuses the shop's writes (waits out older ones)
        fenced_at = time.perf_counter()
        self.lifecycle.apply(shop_id, "start_rollback", reason=f"{reason}: the tenant refuses writes")
        report.step("tenant database refuses the shop's writes")
        try:
            back = capture.apply_changes(capture.TO_SHARED, tenant, self.source, self.catalog, shop_id)
            report.changes_drained = back.changes
            report.step(
                f"copied back {back.changes} changes the tenant took ({back.upserted} rows written, {back.deleted} deleted"
                + (f", {len(set(back.recopied))} tables without a key copied whole)" if back.recopied else ")")
            )
            verify_both_sides(report, self.source, tenant, self.catalog, shop_id, "after copying back; writes stay on the tenant.")
        except BaseException as exc:
            with tenant.connect() as tconn:
                capture.open_tenant_writes(tconn, self.catalog, shop_id, f"{reason} aborted")
            self.lifecycle.apply(
                shop_id, "abort_rollback", reason=f"{reason} aborted: {exc}"[:2000], error=str(exc)[:2000],
                details={TENANT_WRITES: "open"},
            )
            raise
        final = self.lifecycle.apply(
            shop_id, "finish_rollback", reason=f"{reason}: reads and writes back to the shared database",
            effects=[lambda c: capture.clear_fence(c, shop_id)],
        )
        # Killed here (or anywhere before the tenant's side ended), the tenant still says live and refuses writes:
        # `_settle_tenant` finishes it on the next step of the shop (a rerun of this rollback, a reload, a cutover).
        with self.source.connect() as sconn:
            capture.unfence(sconn, shop_id)  # the triggers stop checking its writes
        with tenant.connect() as tconn:
            _end_tenant_live(tconn, self.catalog, shop_id, f"{reason}: back on the shared database")
        report.fenced_seconds = time.perf_counter() - fenced_at
        report.state = final.state.value
        report.step(f"back on the shared database (writes waited {report.fenced_seconds:.2f}s)")
        return report

    def abort_cutover(self, shop_id: int, *, reason: str = "cutover aborted") -> CutoverReport:
        """Undo an interrupted cutover (`cutting_over`): the shop's writes go on in the shared database. The
        tenant's side first (not live, no capture), then the fence is lifted in the lifecycle's transaction
        (and the triggers stop checking the shop's writes), so that no moment exists where the shop is routed
        to the shared database while the tenant believes it is live (a reload would be refused). Writes were
        routed to the shared database throughout (the tenant opens only after the flip), so the tenant took
        none — unless something wrote into it directly: then the abort is refused and the cutover can only be
        finished (its writes would be lost otherwise)."""
        st = self._state(shop_id, "abort_cutover")
        self.provisioner.require_clean(shop_id)
        report = CutoverReport(shop_id)
        back_to = State.READS_ROLLOUT if st.reads != "shared" else State.SYNCING
        with self.tenant(shop_id).connect() as tconn:
            taken = capture.tenant_lag(tconn).pending
            if taken:
                raise CutoverRefused(
                    f"shop {shop_id}'s tenant database took {taken} writes while its cutover was interrupted (something "
                    "wrote into it directly, not through routing); aborting would lose them. Finish the cutover "
                    f"instead: handyshop-migration migrate --shops {shop_id} --through-phase 4."
                )
            _end_tenant_live(tconn, self.catalog, shop_id, f"{reason}: not live")
        report.step("the tenant database does not take the shop's writes")
        final = self.lifecycle.apply(
            shop_id, "abort_cutover", target=back_to, reason=reason,
            effects=[lambda c: capture.clear_fence(c, shop_id)],
        )
        with self.source.connect() as sconn:
            capture.unfence(sconn, shop_id)  # the triggers stop checking its writes (they pass already)
        report.state = final.state.value
        report.step("the shared database takes the shop's writes again (fence lifted, routing unchanged)")
        return report

    def _settle_tenant(self, shop_id: int, st: ShopState) -> bool:
        """Finish what an interrupted way back left: the lifecycle routes the shop's writes to the shared
        database (the rollback committed, or the cutover was aborted), yet the tenant still says live or keeps
        its capture. The tenant took no write since (it refused them, or was never routed to), so its side is
        simply ended, and the shared database's fence lifted in case the kill came before that. Returns
        whether there was anything to finish."""
        if st.writes != "shared" or st.state not in _SETTLED_ON_SHARED:
            return False
        with self.tenant(shop_id).connect() as tconn:
            if not _tenant_marked(tconn, self.catalog):
                return False
            self.provisioner.require_clean(shop_id)
            with self.source.connect() as sconn:
                if capture.is_captured(sconn, shop_id):
                    capture.unfence(sconn, shop_id)
            _end_tenant_live(tconn, self.catalog, shop_id, "an interrupted way back finished: back on the shared database")
        return True

    # -- phase 5 ---------------------------------------------------------------------------------------

    def retire(self, shop_id: int, *, confirm: bool) -> RetirementReport:
        """Archive the shop's rows of the shared database, then delete exactly those (one transaction).
        Resumes an interrupted retirement (the archive is reused; a deletion that committed is recognised)."""
        st = self._state(shop_id, "start_retirement")
        if not confirm:
            raise RetirementRefused(
                f"retiring shop {shop_id} deletes its rows from the shared database (archived first): it needs an "
                "explicit confirmation."
            )
        started = time.perf_counter()
        archive = _load_archive(st.details.get("archive"))
        if st.state == State.LIVE or archive is None:
            self.lifecycle.apply(shop_id, "start_retirement", reason="archiving the shop's rows of the shared database")
            if archive is None:
                _remove_incomplete_archives(self.archive_dir, shop_id)
                archive = archive_shop(self.source, self.catalog, shop_id, self.archive_dir)
                self.lifecycle.apply(
                    shop_id, "start_retirement", reason=f"archived {archive.rows} rows to {archive.path}",
                    details={"archive": str(archive.path)},
                )
        resumed = False
        if self._shop_rows(shop_id) == 0 and archive.rows > 0:
            deleted = {t.table: t.rows for t in archive.tables}  # the deletion committed before an interruption
            resumed = True
        else:
            deleted = retire_shop(self.source, self.catalog, archive, confirm=True, state="live").deleted
        self.lifecycle.apply(
            shop_id, "finish_retirement", reason=f"retired: {sum(deleted.values())} rows deleted, archive {archive.path}"
        )
        return RetirementReport(shop_id, archive, deleted, time.perf_counter() - started, resumed)

    def _shop_rows(self, shop_id: int) -> int:
        with self.source.connect() as conn:
            return sum(table_checksum(conn, t, shop_id, catalog=self.catalog, owned=True).rows
                       for t in self.catalog.owned_tables)

    def restore(self, shop_id: int) -> dict[str, int]:
        """The way back from phase 5: the archive goes back into the shared database, checked byte for byte."""
        st = self._state(shop_id, "start_restore")
        archive = _load_archive(st.details.get("archive"))
        if archive is None:
            raise RetirementRefused(f"shop {shop_id} has no retirement archive recorded; nothing to restore.")
        self.lifecycle.apply(shop_id, "start_restore", reason=f"restoring {archive.path}")
        if self._shop_rows(shop_id) == archive.rows:
            restored = {t.table: t.rows for t in archive.tables}  # restored before an interruption
        else:
            restored = restore_shop(self.source, self.catalog, archive)
        self.lifecycle.apply(shop_id, "finish_restore", reason=f"retirement undone: {archive.path} restored")
        return restored

    # -- the way back from phase 1 -----------------------------------------------------------------------

    def deprovision(self, shop_id: int) -> str:
        """Drop the shop's tenant database and roles, its registry entry and its captured changes."""
        self._state(shop_id, "start_deprovisioning")
        self.lifecycle.apply(shop_id, "start_deprovisioning", reason="dropping its tenant database and roles")
        with self.source.connect() as conn:
            dropped = capture.disable(conn, shop_id)
        result = self.provisioner.deprovision(shop_id)
        self.lifecycle.apply(
            shop_id, "finish_deprovisioning", captured=False, details={"snapshot": None, "archive": None},
            reason=f"tenant dropped ({result.database}), {dropped} captured changes dropped",
        )
        return (
            f"database dropped={result.dropped_database}, role dropped={result.dropped_role}, registry entry "
            f"removed={result.removed_registry_entry}, {dropped} captured changes dropped"
        )


def _merge(full: list[TableVerification], touched: list[TableVerification]) -> list[TableVerification]:
    """The full verification's results, with the tables checked again inside the fence replaced."""
    by_table = {v.table: v for v in touched}
    return [by_table.pop(v.table, v) for v in full] + list(by_table.values())


def ensure_control(control: ConnectionSpec, cipher: CredentialCipher) -> None:
    """The control records (registry, lifecycle, routing function) exist in the control database; idempotent.
    What an application (or the demo's) needs before it asks `route()`."""
    with ConnectionRegistry(control, cipher) as registry:
        registry.ensure_schema()
    Lifecycle(control).ensure_schema()
    with control.connect() as conn:
        install_route_function(conn)


def _remove_incomplete_archives(directory: Path, shop_id: int) -> None:
    """An archive without its manifest is what a killed retirement left (the manifest is written last): it
    is no archive, and it holds customers' personal data in plaintext. A new one is written instead."""
    for path in (Path(directory).absolute() / f"shop_{shop_id}").glob("*"):
        if path.is_dir() and not (path / "manifest.json").is_file():
            shutil.rmtree(path, ignore_errors=True)


def _load_archive(path: str | None) -> Archive | None:
    if not path or not (Path(path) / "manifest.json").is_file():
        return None
    return Archive.load(path)


def _tenant_marked(tconn: psycopg.Connection, catalog: Catalog) -> bool:
    """Whether the tenant records being (or having been) live: its guard's live mark or open writes, or
    its own capture (triggers on any tenant table)."""
    guard = capture.tenant_guard_state(tconn)
    if guard is not None and (guard.accepts_writes or guard.live_since is not None):
        return True
    return capture.tenant_capture_enabled(tconn, catalog)


def _end_tenant_live(tconn: psycopg.Connection, catalog: Catalog, shop_id: int, reason: str) -> None:
    """The tenant's side of being back on the shared database, in one transaction: not live (it refuses the
    shop's writes and may be reloaded), its capture gone. A tenant without a guard state row (a first-version
    one) only loses its capture."""
    with tconn.transaction():
        if capture.tenant_guard_state(tconn) is not None:
            capture.end_tenant_live(tconn, shop_id, reason)
        capture.disable_tenant_capture(tconn, catalog)


__all__ = [
    "DEFAULT_ID_BLOCK", "CopyReport", "RetirementReport", "TableResult", "VerifyReport", "Workflow", "ensure_control",
]
