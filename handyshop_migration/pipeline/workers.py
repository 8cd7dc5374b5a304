"""`migrate --workers N`: shops advanced by N worker processes at once, each with its own Dagster instance.

One process runs one shop's runs at a time (a run executes in process: `runner.run_job`), and a small shop's
run is mostly Dagster's own Python, so one core does one shop at a time; a second process uses the machine's
second core. Each worker is a fresh interpreter (spawn: nothing of the parent's connections or threads is
inherited), builds the definitions and a pooled instance once, then takes shop after shop from one queue until
it is empty, so a slow shop never holds the others back. Each shop is still its own run (or runs), recorded in
the same storage as if run one after another; the run queue's limits do not apply to in-process runs, the copy
pool (`handyshop_source`) does: no more table copies at once than dagster.yaml allows, however many workers.

Workers inherit the parent's environment (the same command's configuration: source URL, encryption key); the
values are read there through `EnvVar`, as in the parent.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from handyshop_migration.pipeline.runner import ShopOutcome

POLL_SECONDS = 1.0


def _worker(tasks: Any, results: Any, through: int, confirm_retirement: bool, database_pattern: str) -> None:
    import warnings

    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="dagster")
    import os

    from handyshop_migration import settings
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.pipeline.runner import advance, prepare_instance
    from handyshop_migration.tenancy.dsn import ConnectionSpec
    from handyshop_migration.tenancy.lifecycle import Lifecycle

    defs = build_definitions()
    lifecycle = Lifecycle(ConnectionSpec.from_url(os.environ[settings.SOURCE_URL], name=settings.SOURCE_URL))
    with dg.DagsterInstance.get() as instance:
        prepare_instance(instance, reap=False)  # the parent reaped dead runs once, before starting the workers
        from handyshop_migration.pipeline.warm import freeze

        freeze()  # importing it froze what was loaded then; this freezes the definitions and instance too
        while (shop := tasks.get()) is not None:
            try:
                outcome = advance(defs, instance, lifecycle, shop, through, confirm_retirement=confirm_retirement,
                                  database=database_pattern.format(id=shop))
                results.put((shop, outcome, None))
            except Exception as exc:  # noqa: BLE001 - reported for this shop; the worker goes on with the next
                results.put((shop, None, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                             or traceback.format_exc(limit=1)))


def advance_in_workers(
    workers: int,
    shop_ids: Sequence[int],
    through: int,
    *,
    confirm_retirement: bool = False,
    database_pattern: str = "shop_{id}_db",
    progress: Callable[[ShopOutcome], None] | None = None,
    lifecycle: Any = None,
) -> list[ShopOutcome]:
    """Advance `shop_ids` to phase `through` in `workers` processes; outcomes in the order of `shop_ids`.
    A shop whose worker died mid-way is reported not done, with the reason, and its record as it is now."""
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for shop in shop_ids:
        tasks.put(shop)
    count = max(1, min(workers, len(shop_ids)))
    for _ in range(count):
        tasks.put(None)
    procs = [ctx.Process(target=_worker, args=(tasks, results, through, confirm_retirement, database_pattern),
                         name=f"handyshop-migrate-worker-{i + 1}") for i in range(count)]
    for p in procs:
        p.start()
    done: dict[int, ShopOutcome] = {}
    try:
        while len(done) < len(shop_ids):
            try:
                shop, outcome, error = results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if any(p.is_alive() for p in procs):
                    continue
                try:  # every worker ended: collect what they sent last, then give up on the rest
                    shop, outcome, error = results.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    break
            if outcome is None:
                outcome = ShopOutcome(shop, through, notes=[error or "failed"])
                if lifecycle is not None:
                    outcome.record = lifecycle.find(shop)
            done[shop] = outcome
            if progress:
                progress(outcome)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
                p.join(timeout=10)
    for shop in shop_ids:
        if shop not in done:
            lost = ShopOutcome(shop, through, notes=["its worker process ended before the shop was done (see above): "
                                                     "run the same command again, it resumes the shop"])
            if lifecycle is not None:
                lost.record = lifecycle.find(shop)
            done[shop] = lost
            if progress:
                progress(lost)
    return [done[s] for s in shop_ids]
