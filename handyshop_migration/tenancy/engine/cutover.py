"""Phase 4: move a shop's reads, then its writes, to its tenant database — and back.

Write cutover, in order, each step recorded in the routing history:
1. sync while the shop still writes to the shared database (brings the lag down, so the fence is short);
2. fence: the shared database refuses the shop's writes from now on (other shops are untouched);
3. drain the change log to zero;
4. verify every table (count and checksum, shared slice vs tenant) — a mismatch lifts the fence, leaves
   routing on the shared database, and raises: the cutover refuses to proceed past a failed gate;
5. reserve a block of ids in every shared sequence of the tenant tables and point the tenant's
   sequences into it, so rows the tenant creates can be copied back later without colliding with rows
   the shared database hands out to other shops meanwhile;
6. capture the tenant's own writes (the way back), mark it live, flip reads and writes to it.
The shop cannot write between 2 and 6; `CutoverReport.fenced_seconds` says how long that was.

The way back (`roll_back_cutover`) mirrors it: fence the tenant, copy back every write it took, verify,
unfence the shared database, route everything back. Capture of the shared side goes on (phase 3), so the
shop can be cut over again later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.application.routing import RouteState, RoutingTable
from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import Catalog, Table
from handyshop_migration.tenancy.engine.copy import SourceSnapshot
from handyshop_migration.tenancy.engine.verification import TableVerification, verify_tables
from handyshop_migration.tenancy.errors import CutoverRefused

DEFAULT_ID_BLOCK = 1_000_000



@dataclass
class CutoverReport:
    shop_id: int
    steps: list[tuple[float, str]] = field(default_factory=list)
    changes_drained: int = 0
    fenced_seconds: float = 0.0
    verification: list[TableVerification] = field(default_factory=list)
    reservations: dict[str, tuple[int, int]] = field(default_factory=dict)
    route: RouteState | None = None

    def step(self, text: str) -> None:
        self.steps.append((time.time(), text))


def open_reads(routing: RoutingTable, shop_id: int, *, full: bool = False, reason: str = "") -> RouteState:
    """Let the shop's reads go to its tenant: by the global rollout percentage, or all of them (`full`)."""
    current = routing.get(shop_id)
    if current.writes == "tenant":
        return current
    return routing.set(
        shop_id,
        state="reads_rollout",
        reads="tenant" if full else "rollout",
        reason=reason or ("reads to the tenant" if full else "reads to the tenant by rollout percentage"),
        expect=("shared", "reads_rollout"),
    )


def _sequences(conn: psycopg.Connection, table: Table) -> list[tuple[str, str]]:
    """(column, sequence regclass text) of every sequence-backed column of a table in this database."""
    qualified = sql.Identifier(table.schema, table.name).as_string(None)
    out = []
    columns = [(s.column, None if s.owned else sql.Identifier(s.schema, s.name).as_string(None)) for s in table.sequences]
    columns += [(c.name, None) for c in table.tenant_columns if c.identity is not None]
    for column, explicit in columns:
        if explicit:
            out.append((column, explicit))
            continue
        row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (qualified, column)).fetchone()
        if row and row[0]:
            out.append((column, str(row[0])))
    return out


def reserve_ids(
    source: psycopg.Connection, tenant: psycopg.Connection, catalog: Catalog, shop_id: int, block: int
) -> dict[str, tuple[int, int]]:
    """Take `block` ids from each shared sequence for the shop's tenant (see the module doc)."""
    reserved: dict[str, tuple[int, int]] = {}
    for table in catalog.tables:
        tenant_seqs = dict(_sequences(tenant, table))
        for column, seq in _sequences(source, table):
            if column not in tenant_seqs:
                continue
            with source.transaction():
                info = one_row(source,
                    "SELECT n.nspname, c.relname, s.seqincrement, s.seqmax FROM pg_sequence s "
                    "JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE s.seqrelid = %s::regclass",
                    (seq,),
                )
                ident = sql.Identifier(info[0], info[1])
                increment, maximum = int(info[2]), int(info[3])
                if increment != 1:
                    continue  # unusual sequences keep their own scheme; the copy-back guard still protects
                # A first nextval() makes the sequence "called" (on a fresh one nextval ignores the increment);
                # ALTER SEQUENCE then holds its lock to commit: concurrent nextval() waits and lands past the block.
                source.execute("SELECT nextval(%s::regclass)", (seq,))
                source.execute(sql.SQL("ALTER SEQUENCE {} INCREMENT BY {}").format(ident, sql.Literal(block)))
                last = int(source.execute("SELECT nextval(%s::regclass)", (seq,)).fetchone()[0])  # type: ignore[index]
                source.execute(sql.SQL("ALTER SEQUENCE {} INCREMENT BY 1").format(ident))
                if last > maximum:
                    raise CutoverRefused(f"sequence {seq} has no room for a block of {block} ids; use a smaller block.")
                first = last - block + 1
                source.execute(
                    "INSERT INTO handyshop_migration.id_reservations (shop_id, sequence, first_id, last_id) "
                    "VALUES (%s, %s, %s, %s)",
                    (shop_id, seq, first, last),
                )
            with tenant.transaction():
                tenant.execute(
                    sql.SQL("SELECT setval(%s::regclass, greatest(%s, (SELECT coalesce(max({}), 0) FROM {})))").format(
                        sql.Identifier(column), sql.Identifier(table.schema, table.name)
                    ),
                    (tenant_seqs[column], first - 1),
                )
            reserved[f"{table.name}.{column}"] = (first, last)
    return reserved


def _verify(
    report: CutoverReport, source: ConnectionSpec, tenant: ConnectionSpec, catalog: Catalog, shop_id: int, refusal: str
) -> None:
    """The gate of both directions: every table equal on both sides, or CutoverRefused (`refusal` says
    where the writes stay)."""
    with SourceSnapshot(source) as snap, tenant.connect() as tconn:
        report.verification = verify_tables(snap.conn, tconn, catalog, shop_id)
    bad = [v.describe() for v in report.verification if not v.ok]
    if bad:
        raise CutoverRefused(f"shop {shop_id}: verification failed for {', '.join(bad)}; {refusal}")
    report.step(f"verified {len(report.verification)} tables: counts and checksums equal")


def cut_over_writes(
    source: ConnectionSpec,
    tenant: ConnectionSpec,
    catalog: Catalog,
    routing: RoutingTable,
    shop_id: int,
    *,
    id_block: int = DEFAULT_ID_BLOCK,
    reason: str = "write cutover",
) -> CutoverReport:
    """Move a shop's writes (and reads) to its tenant. `tenant` is an owner/superuser spec of its database."""
    report = CutoverReport(shop_id)
    current = routing.get(shop_id)
    if current.state == "live":
        report.route = current
        report.step("already live")
        return report
    with source.connect() as sconn:
        if not capture.is_captured(sconn, shop_id):
            raise CutoverRefused(
                f"shop {shop_id}'s writes are not captured; run phase 3 (tenant_sync) before cutting over."
            )
    pre = capture.apply_changes(capture.TO_TENANT, source, tenant, catalog, shop_id)
    report.step(f"synced {pre.changes} changes while the shop still wrote to the shared database")
    routing.set(shop_id, state="cutting_over", reason=f"{reason}: fencing", expect=("shared", "reads_rollout", "cutting_over"))
    with source.connect() as sconn:
        capture.fence(sconn, shop_id, reason)
    fenced_at = time.perf_counter()
    report.step("shared database fences the shop's writes")
    try:
        drained = capture.apply_changes(capture.TO_TENANT, source, tenant, catalog, shop_id)
        report.changes_drained = pre.changes + drained.changes
        if drained.lag.pending:
            raise CutoverRefused(f"shop {shop_id}: {drained.lag.pending} changes still pending after draining")
        report.step(f"drained {drained.changes} changes: lag 0")
        _verify(report, source, tenant, catalog, shop_id,
                "writes stay on the shared database. Re-copy the shop (phase 2) or find what changed the tenant.")
        with source.connect() as sconn, tenant.connect() as tconn:
            report.reservations = reserve_ids(sconn, tconn, catalog, shop_id, id_block)
            report.step(f"reserved id blocks of {id_block} in {len(report.reservations)} sequences")
            capture.enable_tenant_capture(tconn, catalog, shop_id)
        # The shared side's fence for good, then the tenant open, then routing (the lead's flip will make the
        # first and the last one transaction).
        with source.connect() as sconn, sconn.transaction():
            capture.make_permanent(sconn, shop_id, reason=f"{reason}: live on the tenant")
        with tenant.connect() as tconn:
            capture.open_tenant_writes(tconn, catalog, shop_id, reason)
        report.route = routing.set(
            shop_id, state="live", reads="tenant", writes="tenant", reason=f"{reason}: writes to the tenant",
            expect=("cutting_over",),
        )
    except Exception as exc:
        with source.connect() as sconn:
            capture.unfence(sconn, shop_id)
        routing.set(
            shop_id, state=current.state if current.state != "cutting_over" else "shared",
            reads=current.reads, writes="shared", reason=f"{reason} aborted: {exc}",
        )
        raise
    report.fenced_seconds = time.perf_counter() - fenced_at
    report.step(f"live: reads and writes go to the tenant (writes paused {report.fenced_seconds:.2f}s)")
    return report


def roll_back_cutover(
    source: ConnectionSpec,
    tenant: ConnectionSpec,
    catalog: Catalog,
    routing: RoutingTable,
    shop_id: int,
    *,
    reason: str = "rollback of the cutover",
) -> CutoverReport:
    """The way back from phase 4: every write the tenant took goes back to the shared database first."""
    report = CutoverReport(shop_id)
    current = routing.get(shop_id)
    if current.state == "retired":
        raise CutoverRefused(
            f"shop {shop_id} is retired: its rows are no longer in the shared database. Restore its archive "
            "(the way back from phase 5) before rolling back the cutover."
        )
    if current.writes != "tenant" and current.state != "rolling_back":
        raise CutoverRefused(f"shop {shop_id}'s writes already go to the shared database (state {current.state}).")
    routing.set(shop_id, state="rolling_back", reason=f"{reason}: fencing the tenant", expect=("live", "rolling_back"))
    with tenant.connect() as tconn:
        capture.close_tenant_writes(tconn, shop_id, reason)
    fenced_at = time.perf_counter()
    report.step("tenant database fences the shop's writes")
    try:
        back = capture.apply_changes(capture.TO_SHARED, tenant, source, catalog, shop_id)
        report.changes_drained = back.changes
        report.step(f"copied back {back.changes} changes the tenant took ({back.upserted} rows written, {back.deleted} deleted)")
        keyless = [t for t in catalog.tables if not t.key_columns]
        if keyless:
            capture.copy_back_tables(tenant, source, keyless, shop_id)
            report.step(f"copied back whole tables without a key: {', '.join(t.name for t in keyless)}")
        _verify(report, source, tenant, catalog, shop_id, "after copying back; writes stay on the tenant.")
        with source.connect() as sconn:
            capture.unfence(sconn, shop_id)
        report.route = routing.set(
            shop_id, state="shared", reads="shared", writes="shared",
            reason=f"{reason}: reads and writes back to the shared database", expect=("rolling_back",),
        )
        with tenant.connect() as tconn:
            capture.end_tenant_live(tconn, shop_id, f"{reason}: back on the shared database")
            capture.disable_tenant_capture(tconn, catalog)
    except Exception as exc:
        with tenant.connect() as tconn:
            capture.open_tenant_writes(tconn, catalog, shop_id, f"{reason} aborted")
        routing.set(shop_id, state="live", reads="tenant", writes="tenant", reason=f"{reason} aborted: {exc}")
        raise
    report.fenced_seconds = time.perf_counter() - fenced_at
    report.step(f"back on the shared database (writes paused {report.fenced_seconds:.2f}s)")
    return report
