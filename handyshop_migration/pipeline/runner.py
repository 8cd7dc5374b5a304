"""Running the jobs from the command line (and tests and benchmarks): real runs on a real Dagster instance.

Runs execute in this process (`execute_in_process`) and are recorded in the instance's storage, so the
webserver shows them afterwards exactly as if launched from the UI. One run per shop: a range run would
store its check results without partition (Dagster 1.13 keeps per-partition check results only for
single-partition runs).
"""

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from handyshop_migration.pipeline.partitions import SHOPS
from handyshop_migration.pipeline.phase2 import SHOP_VERIFIED, SOURCE_POOL

# The CLI prints its own summary; every event still goes to the event log (and the UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class CheckOutcome:
    asset: str
    check: str
    passed: bool
    severity: str
    metadata: dict[str, Any]


@dataclass
class RunOutcome:
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
    run: RunOutcome
    tables: int = 0
    rows: int = 0
    verified: bool = False
    notes: list[str] = field(default_factory=list)
    later: dict[int, RunOutcome] = field(default_factory=dict)  # phase -> its run (3, 4, 5)

    @property
    def reached(self) -> int:
        """The last phase whose run succeeded (2 when verified)."""
        phase = 2 if self.verified else 0
        for p in sorted(self.later):
            if not self.later[p].success:
                break
            phase = p
        return phase

    @property
    def gates_passed(self) -> int:
        return sum(1 for r in (self.run, *self.later.values()) for c in r.checks if c.passed)

    @property
    def gates_failed(self) -> int:
        return sum(len(r.failed_checks) for r in (self.run, *self.later.values())) + sum(
            1 for r in self.later.values() if not r.success
        )


def _outcome(result: dg.ExecuteInProcessResult, seconds: float) -> RunOutcome:
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
    return RunOutcome(result.run_id, result.success, seconds, checks, failures, materialized)


def _message(err: Any) -> str:
    """The innermost user-facing message of a step failure (Dagster wraps it once or twice)."""
    while err is not None and err.cause is not None and "dagster" in (err.cls_name or "").lower():
        err = err.cause
    text = (err.message if err is not None else "").strip()
    return text.removeprefix("dagster._core.definitions.events.Failure: ").splitlines()[0] if text else ""


def prepare_instance(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    """Make an instance fit for running many shops in this process.

    - Pooled storage connections: dagster-postgres otherwise opens a new connection for every storage call
      (~1,300 per shop's run, 45 % of its time); `optimize_for_webserver` is what dagster-webserver does for
      itself (benchmarks/end_to_end.py measured 3.7x per shop).
    - The copy pool's limit row created once: two runs creating it at the same moment race in Dagster 1.13
      (one fails with "current transaction is aborted" on concurrency_limits)."""
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=10)
    init_source_pool(instance)
    return instance


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
        tags=tags,
        raise_on_error=False,
    )
    return _outcome(result, time.perf_counter() - started)


def register_shops(instance: dg.DagsterInstance, shop_ids: Iterable[int]) -> list[str]:
    """Add shops as partitions; returns the ones that were new."""
    known = set(instance.get_dynamic_partitions(SHOPS))
    new = [str(s) for s in shop_ids if str(s) not in known]
    if new:
        instance.add_dynamic_partitions(SHOPS, new)
    return new


def migrate_shop(defs: dg.Definitions, instance: dg.DagsterInstance, shop_id: int, job: str = "migrate_shop") -> ShopOutcome:
    register_shops(instance, [shop_id])
    run = run_job(defs, instance, job, partition_key=str(shop_id), tags={"handyshop/shop": str(shop_id)})
    outcome = ShopOutcome(shop_id, run)
    parity = [c for c in run.checks if c.check == "row_count_parity"]
    outcome.tables = len(parity)
    outcome.rows = sum(int(c.metadata.get("tenant_rows", 0)) for c in parity)
    outcome.verified = "/".join(SHOP_VERIFIED.path) in run.materialized
    outcome.notes = run.failures
    return outcome


def migrate_shops(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    shop_ids: Iterable[int],
    *,
    job: str = "migrate_shop",
    progress: Callable[[ShopOutcome], None] | None = None,
) -> list[ShopOutcome]:
    shop_ids = list(shop_ids)
    register_shops(instance, shop_ids)
    outcomes = []
    for shop in shop_ids:
        outcome = migrate_shop(defs, instance, shop, job)
        outcomes.append(outcome)
        if progress:
            progress(outcome)
    return outcomes


PHASE_JOBS = {3: "sync_shop", 4: "cutover_shop", 5: "retire_shop"}


def retirement_config(shop_id: int) -> dict[str, Any]:
    from handyshop_migration.pipeline.phase5 import confirmation

    return {"ops": {"legacy_retirement": {"config": {"confirm": confirmation(shop_id)}}}}


def advance_shop(
    defs: dg.Definitions, instance: dg.DagsterInstance, outcome: ShopOutcome, phase: int, *, confirm_retirement: bool = False
) -> RunOutcome:
    """Run phase 3, 4 or 5 for a shop that reached the phase before; the outcome records it."""
    config = retirement_config(outcome.shop_id) if phase == 5 and confirm_retirement else None
    run = run_job(defs, instance, PHASE_JOBS[phase], partition_key=str(outcome.shop_id), run_config=config,
                  tags={"handyshop/shop": str(outcome.shop_id)})
    outcome.later[phase] = run
    outcome.notes.extend(run.failures)
    return run
