"""Phase 3: capture every write to a shop's rows while it is migrated, and apply them to its tenant.

**The cost is what the application feels, so the design starts there.** Measured from outside with
pgbench on the seeded shared database (20 shops, scale 1.0, 4 clients, the app's write mix: a repair's
status change with its history row, a customer edit, a new customer; benchmarks/capture_overhead.py):

| design | other shops' tps | captured shop's tps |
|---|---|---|
| first version: one SECURITY DEFINER row trigger, every written row turned into jsonb (twice for an update), the capture table probed up to four times | 0.60x | 0.47x |
| this one: row triggers whose WHEN clause names the captured shops, per-table per-event functions reading only the tenant and key columns, one INSERT per captured write | 0.95x (0.94x in another run) | 0.90x (0.79x in another run) |

Medians of 12-14 interleaved rounds on a 2-core machine shared with other test suites (rounds scatter
from 0.7x to 1.4x): the other shops' figure sits at the 5 % target, not clearly inside it. What is left
there is PostgreSQL's own per-statement cost of a table having row triggers at all (the WHEN clause is
deserialised and compiled for every statement, the old row fetched again for an AFTER UPDATE trigger):
5-10 us per written statement, measured in-server; a trigger design cannot go below it. The captured
shop pays one more INSERT per written row, most of it the extra WAL each commit writes and fsyncs.

- **Shops not being captured pay (almost) nothing.** Each tenant table gets AFTER INSERT / UPDATE / DELETE
  row triggers `WHEN (NEW.shop_id = ANY ('{1,5}'::bigint[]))` (OLD for deletes, either for updates). The
  executor evaluates a trigger's WHEN itself, in C, before queueing the event: a write of another shop
  never calls a function, never builds a tuple for it, never probes a table. The captured shops are
  therefore part of the trigger definitions: `enable`/`disable` rewrite them (CREATE OR REPLACE TRIGGER,
  one table per transaction, under a 100 ms lock_timeout, retried: writers of that table queue behind the
  rewrite for at most that long, readers not at all). With no shop captured there are no triggers at
  all: the last `disable` (the way back from phase 3) drops them.
- **A captured shop's write costs one INSERT.** The function is generated per table from
  `shared_capture.sql`: it reads NEW.shop_id and the key columns directly (no `to_jsonb` of the row —
  the repairs rows carry base64 signatures) and logs with one `INSERT … SELECT … FROM shops WHERE shop_id =
  NEW.shop_id AND fenced_until IS NULL`, which is also the fence check. Only when that inserts nothing
  (fenced, or a row moving to or from a shop that is not captured) does it call `admit()`, the slow path.
  The log has one index, not two.
- **Invoker rights.** No SECURITY DEFINER anywhere: the triggers run with the writer's rights, so nothing
  the application can reach runs with the migration owner's. The writers need INSERT on the log and
  SELECT on `shops` (granted to PUBLIC, and harmless: see `shared_schema.sql`). A definer function also
  cannot be inlined and switches user and search_path on every call.
- **Why not statement-level triggers with transition tables:** one call per statement, but every written
  row of every shop is still put into the transition table and joined to the captured shops, and a
  statement of the app's mix writes one row: it is the per-row cost again, for all shops.
- **Why not logical decoding** (row filters, PostgreSQL 15+): it needs `wal_level = logical` (a restart of
  the production server) and a slot that holds WAL for the whole migration, and it cannot refuse or hold
  a write, so the fence would still need a trigger. Triggers work on PostgreSQL 14-18 as they are.

What is logged is the *key* of each changed row (with its shop), not the row image. The sync re-reads
the current rows for the logged keys inside one REPEATABLE READ snapshot and upserts or deletes them in
the tenant. Applying is idempotent (a change applied twice is harmless) and independent of commit order:
change-log ids are allocated before commit, so replaying row images in id order could apply an older
image after a newer one; re-reading state cannot. A row whose `shop_id` changes is logged as leaving the
old shop (its tenant deletes it) and entering the new one. Tables without a primary key log '{}': the sync
copies that table again for the shop from the same snapshot. TRUNCATE is refused while any shop is
captured (HS002): it removes rows without row triggers.

Capture starts before the bulk copy takes its snapshot: `enable()` rewrites the triggers (taking each
table's lock waits for every transaction that wrote it before) and then waits until every transaction
older than that has ended (`wait_for_older_transactions`), so a write is either in the snapshot or in the
log.

**The fence is a lease** (`fence`, `renew`, `make_permanent`, `unfence`, `fence_state`). While a shop's
writes are cut over they *wait* in the shared database (polling, at most `max_wait_ms`, then HS001 with a
hint to retry) instead of failing; once the shop is live (`fenced_until = 'infinity'`, set by the final
flip in the transaction that changes the routing) they fail at once with HS001 and a hint to ask
`route()` again. If the cutover dies, its lease runs out and writes flow again — routing still says
shared, so nothing contradicts. The race of a write that finds the lease run out just as the flip
commits: such a writer takes the shop's fence lock (an advisory lock) shared and reads the fence again in
a new snapshot, holding the lock to its commit; `make_permanent` takes it exclusively, then refuses
unless the lease is still running and no change of the shop is pending. So either the flip committed
first (the writer sees 'infinity' and is refused), or the writer committed first (the flip finds the
lease run out and its change in the log, and refuses). Under REPEATABLE READ a writer cannot see a
commit newer than its snapshot, so on a run-out lease it is refused with "retry" instead.

The mirror image runs in a tenant database once writes go there (`enable_tenant_capture`), so that the
way back from phase 4 can copy back every write the tenant took (`apply_changes(TO_SHARED, ...)`); and the
tenant's write guard (`install_tenant_guard`, …) refuses writes there until it is live. Everything written
*into* a database by the migration runs inside `replaying(conn)` (`session_replication_role = replica`),
which our triggers — ordinary triggers — do not fire for.
"""

from handyshop_migration.tenancy.db import replaying
from handyshop_migration.tenancy.engine.capture.apply import (
    TENANT_TO_TENANT,
    TO_SHARED,
    TO_TENANT,
    Direction,
    SyncResult,
    apply_changes,
    apply_keys,
    copy_back_tables,
    copy_whole_table,
    pending,
    recopy_table,
)
from handyshop_migration.tenancy.engine.capture.guard import (
    TenantGuardState,
    claim_tenant_guard,
    close_tenant_writes,
    end_tenant_live,
    install_tenant_guard,
    open_tenant_writes,
    tenant_guard_sql,
    tenant_guard_state,
)
from handyshop_migration.tenancy.engine.capture.shared import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_MAX_WAIT_MS,
    FenceState,
    Lag,
    captured_shops,
    clear_fence,
    disable,
    enable,
    fence,
    fence_state,
    install,
    is_captured,
    is_fenced,
    lag,
    lags,
    make_permanent,
    prepare_fence,
    renew,
    set_fence,
    unfence,
    uninstall,
    wait_for_older_transactions,
)
from handyshop_migration.tenancy.engine.capture.tenant import (
    disable_tenant_capture,
    enable_tenant_capture,
    tenant_capture_enabled,
    tenant_lag,
)
from handyshop_migration.tenancy.engine.capture.verify import (
    forget_touched,
    touched_keys,
    verify_keys,
    verify_outside_pending,
    verify_touched,
)
from handyshop_migration.tenancy.names import FENCE_SQLSTATE, TRUNCATE_SQLSTATE

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_MAX_WAIT_MS",
    "FENCE_SQLSTATE",
    "TENANT_TO_TENANT",
    "TO_SHARED",
    "TO_TENANT",
    "TRUNCATE_SQLSTATE",
    "Direction",
    "FenceState",
    "Lag",
    "SyncResult",
    "TenantGuardState",
    "apply_changes",
    "apply_keys",
    "captured_shops",
    "clear_fence",
    "claim_tenant_guard",
    "close_tenant_writes",
    "copy_back_tables",
    "copy_whole_table",
    "disable",
    "disable_tenant_capture",
    "enable",
    "enable_tenant_capture",
    "end_tenant_live",
    "fence",
    "fence_state",
    "forget_touched",
    "install",
    "install_tenant_guard",
    "is_captured",
    "is_fenced",
    "lag",
    "lags",
    "make_permanent",
    "open_tenant_writes",
    "pending",
    "prepare_fence",
    "recopy_table",
    "renew",
    "replaying",
    "set_fence",
    "tenant_guard_sql",
    "tenant_capture_enabled",
    "tenant_guard_state",
    "tenant_lag",
    "touched_keys",
    "unfence",
    "uninstall",
    "verify_keys",
    "verify_outside_pending",
    "verify_touched",
    "wait_for_older_transactions",
]
