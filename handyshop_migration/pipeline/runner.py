"""Running the jobs from the command line (and tests and benchmarks): real runs on a real Dagster instance.

Runs execute in this process (`execute_in_process`) and are recorded in the instance's storage, so the
webserver shows them afterwards exactly as if launched from the UI. One run per shop and phase: a range run
would store its check results without partition (Dagster 1.13 keeps per-partition check results only for
single-partition runs).

What to run next for a shop is read from its lifecycle: `advance` runs the jobs that take it from where it
is (including a step that was interrupted: provisioning, copying, cutting over, retiring; and a live shop
whose tenant was never opened, `ShopState.tenant_closed`) to the phase asked for, and stops at the first
failure. A shop already there (or past it) is done, not an error.
"""

import os
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from handyshop_migration.pipeline.partitions import SHOPS
from handyshop_migration.pipeline.phase2 import SOURCE_POOL
from handyshop_migration.tenancy.errors import HandyshopError
from handyshop_migration.tenancy.lifecycle import PHASE, Lifecycle, ShopState, State

FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)

# The CLI prints its own summary; every event still goes to the event log (and the UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
# Who executes an in-process run: a run whose owner process is gone is recognised and failed (see `reap_dead_runs`).
OWNER_TAG = "handyshop/owner"  # "<host>:<pid>:<process start time>"

# The states each `--through-phase` aims at (reached once the shop is in one of them or beyond).
# An interrupted cutover (cutting_over) is no target: its writes are held in the shared database until it is
# finished (--through-phase 4) or aborted (rollback --phase 4).
TARGETS: dict[int, frozenset[State]] = {
    2: frozenset({State.VERIFIED, State.SYNCING, State.READS_ROLLOUT, State.LIVE, State.RETIRING, State.RETIRED}),
    3: frozenset({State.SYNCING, State.READS_ROLLOUT, State.LIVE, State.RETIRING, State.RETIRED}),
    4: frozenset({State.LIVE, State.RETIRING, State.RETIRED}),
    5: frozenset({State.RETIRED}),
}
# Where an interrupted way back is finished (the forward path never guesses about those).
WAY_BACK_IN_PROGRESS = {
    State.ROLLING_BACK: "the rollback of its cutover was interrupted: finish it with `handyshop-migration rollback --phase 4 "
    "--shop {shop} --confirm {database}`",
    State.RESTORING: "the restore of its archive was interrupted: finish it with `handyshop-migration rollback --phase 5 "
    "--shop {shop} --confirm {database}`",
    State.DEPROVISIONING: "its deprovisioning was interrupted: finish it with `handyshop-migration rollback --phase 1 "
    "--shop {shop} --confirm {database}`",
    State.MOVING: "its tenant database is being moved to another server: finish the move with `handyshop-migration "
    "move-shop --shop {shop} --to SERVER` (the server it was moving to), or give it up with `--abort`",
}
INTERRUPTED_CUTOVER = (
    "its cutover was interrupted and holds its writes in the shared database: finish it with `handyshop-migration "
    "migrate --shops {shop} --through-phase 4`, or abort it with `handyshop-migration rollback --phase 4 --shop {shop} "
    "--confirm {database}`"
)


@dataclass
class CheckOutcome:
    asset: str
    check: str
    passed: bool
    severity: str
    metadata: dict[str, Any]


@dataclass
class RunOutcome:
    job: str
    run_id: str
    success: bool
    seconds: float
    checks: list[CheckOutcome]
    failures: list[str]  # step failure messages
    materialized: list[str]

    @property
    def failed_checks(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.passed and c.severity == "ERROR"]

    @property
    def warned_checks(self) -> list[CheckOutcome]:
        return [c for c in self.checks if not c.passed and c.severity == "WARN"]


@dataclass
class ShopOutcome:
    shop_id: int
    target: int
    runs: list[RunOutcome] = field(default_factory=list)
    record: ShopState | None = None
    notes: list[str] = field(default_factory=list)
    already: bool = False  # it was at (or past) the target before this command

    @property
    def reached(self) -> int:
        return PHASE[self.record.state] if self.record else 0

    @property
    def done(self) -> bool:
        return self.record is not None and self.record.state in TARGETS[self.target] and not self.record.tenant_closed

    @property
    def state(self) -> str:
        return self.record.state.value if self.record else "unknown"

    @property
    def tables(self) -> int:
        return int(self.record.details.get("tables", 0)) if self.record else 0

    @property
    def rows(self) -> int:
        return int(self.record.details.get("rows", 0)) if self.record else 0

    @property
    def verified(self) -> bool:
        return self.record is not None and (self.record.state in TARGETS[2] or self.record.state == State.CUTTING_OVER)

    @property
    def gates_passed(self) -> int:
        return sum(1 for r in self.runs for c in r.checks if c.passed)

    @property
    def gates_failed(self) -> int:
        return sum(len(r.failed_checks) for r in self.runs) + sum(1 for r in self.runs if not r.success and not r.failed_checks)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)


def _outcome(job: str, result: dg.ExecuteInProcessResult, seconds: float) -> RunOutcome:
    checks = [
        CheckOutcome(
            asset="/".join(e.asset_key.path),
            check=e.check_name,
            passed=e.passed,
            severity=e.severity.value,
            metadata={k: v.value for k, v in e.metadata.items()},
        )
        for e in result.get_asset_check_evaluations()
    ]
    failures = []
    materialized = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            err = event.step_failure_data.error
            failures.append(f"{event.step_key}: {_message(err)}")
        elif event.event_type_value == "ASSET_MATERIALIZATION":
            materialized.append("/".join(event.asset_key.path))  # type: ignore[union-attr]
    failed_checks = [f"{c.asset}:{c.check} failed: {_check_detail(c)}" for c in checks if not c.passed and c.severity == "ERROR"]
    if failed_checks:
        # The step a blocking check fails says only "1 blocking asset check failed with ERROR severity": the
        # checks' own messages are the cause, and come first (the CLI prints the first failure of a shop).
        failures = failed_checks + [f for f in failures if "blocking asset check" not in f]
    return RunOutcome(job, result.run_id, result.success, seconds, checks, failures, materialized)


def _check_detail(c: CheckOutcome) -> str:
    """What a failed check saw, in one line: its own message if it has one, else its numbers."""
    for key in ("error", "first", "login_error", "problems"):
        if c.metadata.get(key):
            return str(c.metadata[key])
    shown = {k: v for k, v in c.metadata.items() if isinstance(v, int | str | float) and len(str(v)) < 80}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "see its metadata in the UI"


def _message(err: Any) -> str:
    """The innermost user-facing message of a step failure (Dagster wraps it once or twice)."""
    while err is not None and err.cause is not None and "dagster" in (err.cls_name or "").lower():
        err = err.cause
    text = (err.message if err is not None else "").strip()
    return text.removeprefix("dagster._core.definitions.events.Failure: ").splitlines()[0] if text else ""


def prepare_instance(instance: dg.DagsterInstance, *, reap: bool = True) -> dg.DagsterInstance:
    """Make an instance fit for running many shops in this process.

    - Pooled storage connections: dagster-postgres otherwise opens a new connection for every storage call
      (~1,300 per shop's run, 45 % of its time); `optimize_for_webserver` is what dagster-webserver does for
      itself (benchmarks/end_to_end.py measured 3.7x per shop).
    - The copy pool's limit row created once: two runs creating it at the same moment race in Dagster 1.13
      (one fails with "current transaction is aborted" on concurrency_limits).
    - Runs left unfinished by a process that died failed, their concurrency slots freed (`reap_dead_runs`)."""
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=10)
    init_source_pool(instance)
    if reap:
        reap_dead_runs(instance)
    return instance


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` (clock ticks since boot), or None if there is no such process: with the
    pid it names one process for good (a pid is reused, a pid with its start time is not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_tag(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start(pid) or ''}"


def owner_alive(tag: str) -> bool | None:
    """Whether the process named by an owner tag still runs; None when it is another host's (not ours to judge)."""
    host, _, rest = tag.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    return _process_start(int(pid)) == started


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the runs an in-process owner on this host left unfinished when it died (SIGKILL, a crash, a lost
    machine's reboot), and free the concurrency slots they held, so the next run of the shop does not wait on a
    slot nobody will give back. Also frees slots still held by runs that have ended. Returns the runs failed.

    Runs the daemon launched carry no owner tag: their code server fails them when their process dies, and
    run monitoring (`free_slots_after_run_end_seconds` in dagster.yaml) frees their slots."""
    failed = []
    unfinished = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED]
    host = socket.gethostname()
    for run in instance.get_runs(dg.RunsFilter(statuses=unfinished)):
        tag = run.tags.get(OWNER_TAG)
        if not tag or not tag.startswith(f"{host}:") or owner_alive(tag) is not False:
            continue
        instance.report_run_failed(
            run, message=f"the process that executed this run in-process ({tag}) is gone; marked failed and its "
            "concurrency slots freed by the next migration command"
        )
        failed.append(run.run_id)
    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = storage.get_concurrency_run_ids()
        if holders:
            finished = instance.get_runs(dg.RunsFilter(run_ids=list(holders), statuses=list(FINISHED)))
            for run in finished:
                storage.free_concurrency_slots_for_run(run.run_id)
    return failed


def init_source_pool(instance: dg.DagsterInstance) -> None:
    """Create the copy pool's limit row unless it exists. Dagster 1.13's initializer is not idempotent on
    Postgres storage (a second call fails on its own INSERT), hence the check first."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or SOURCE_POOL in storage.get_concurrency_keys():
        return
    try:
        storage.initialize_concurrency_limit_to_default(SOURCE_POOL)
    except Exception:  # noqa: BLE001 - created concurrently by another process: exactly what was wanted
        if SOURCE_POOL not in storage.get_concurrency_keys():
            raise


def run_job(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    job: str,
    *,
    partition_key: str | None = None,
    run_config: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> RunOutcome:
    started = time.perf_counter()
    result = defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config={**QUIET, **(run_config or {})},
        tags={**(tags or {}), OWNER_TAG: owner_tag()},
        raise_on_error=False,
    )
    return _outcome(job, result, time.perf_counter() - started)


def register_shops(instance: dg.DagsterInstance, shop_ids: Iterable[int]) -> list[str]:
    """Add shops as partitions; returns the ones that were new."""
    known = set(instance.get_dynamic_partitions(SHOPS))
    new = [str(s) for s in shop_ids if str(s) not in known]
    if new:
        instance.add_dynamic_partitions(SHOPS, new)
    return new


def retirement_config(shop_id: int) -> dict[str, Any]:
    from handyshop_migration.pipeline.phase5 import confirmation

    return {"ops": {"legacy_retirement": {"config": {"confirm": confirmation(shop_id)}}}}


def next_job(record: ShopState | None, through: int) -> str | None:
    """The job that takes a shop one step towards `through` from where its lifecycle says it is."""
    state = record.state if record else State.REGISTERED
    if record is not None and record.tenant_closed:
        # Live, yet its tenant may still refuse its writes (a cutover killed between the flip and opening the
        # tenant): nothing takes them. The cutover job opens the tenant of a live shop, whatever `through` is.
        return "cutover_shop"
    if state in TARGETS[through]:
        return None
    if state in (State.REGISTERED, State.PROVISIONING, State.PROVISIONED, State.COPYING, State.COPIED):
        return "migrate_shop"
    if state == State.VERIFIED:
        return "sync_shop"
    if state in (State.SYNCING, State.READS_ROLLOUT, State.CUTTING_OVER):
        return "sync_shop" if through == 3 else "cutover_shop"
    if state in (State.LIVE, State.RETIRING):
        return "retire_shop"
    return None


def advance(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    lifecycle: Lifecycle,
    shop_id: int,
    through: int,
    *,
    confirm_retirement: bool = False,
    database: str = "",
) -> ShopOutcome:
    """Run the jobs that take the shop from its lifecycle state to phase `through`, one at a time."""
    register_shops(instance, [shop_id])
    lifecycle.ensure_schema()
    lifecycle.register([shop_id])
    outcome = ShopOutcome(shop_id, through)
    outcome.record = lifecycle.find(shop_id)
    outcome.already = outcome.done
    tags = {"handyshop/shop": str(shop_id)}
    for _ in range(8):  # each job moves the shop at least one state on, or fails
        if outcome.record is not None and outcome.record.state in WAY_BACK_IN_PROGRESS:
            outcome.notes.append(WAY_BACK_IN_PROGRESS[outcome.record.state].format(shop=shop_id, database=database))
            break
        if outcome.record is not None and outcome.record.state == State.CUTTING_OVER and through < 4:
            outcome.notes.append(INTERRUPTED_CUTOVER.format(shop=shop_id, database=database))
            break
        job = next_job(outcome.record, through)
        if job is None:
            break
        config = retirement_config(shop_id) if job == "retire_shop" and confirm_retirement else None
        run = run_job(defs, instance, job, partition_key=str(shop_id), run_config=config, tags=tags)
        outcome.runs.append(run)
        before = outcome.record.state if outcome.record else None
        was_closed = outcome.record is not None and outcome.record.tenant_closed
        try:
            outcome.record = lifecycle.find(shop_id)
        except HandyshopError as exc:  # the server went away: say what failed first, then why we stop
            if run.success:
                raise
            first = run.failures[0] if run.failures else f"run {run.run_id}"
            raise type(exc)(f"shop {shop_id}: {job} failed ({first}); then: {exc}") from None
        if not run.success:
            outcome.notes.extend(run.failures or [f"{job} failed (run {run.run_id})"])
            break
        opened = was_closed and outcome.record is not None and not outcome.record.tenant_closed
        if outcome.record is not None and outcome.record.state == before and job != "sync_shop" and not opened:
            outcome.notes.append(f"{job} succeeded but the shop stayed {before.value if before else 'unregistered'}")
            break
    return outcome


def advance_shops(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    lifecycle: Lifecycle,
    shop_ids: Iterable[int],
    through: int,
    *,
    confirm_retirement: bool = False,
    naming: Callable[[int], str] = str,
    progress: Callable[[ShopOutcome], None] | None = None,
) -> list[ShopOutcome]:
    shop_ids = list(shop_ids)
    register_shops(instance, shop_ids)
    outcomes = []
    for shop in shop_ids:
        outcome = advance(
            defs, instance, lifecycle, shop, through, confirm_retirement=confirm_retirement, database=naming(shop)
        )
        outcomes.append(outcome)
        if progress:
            progress(outcome)
    return outcomes
