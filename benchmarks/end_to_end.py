"""N small shops through Dagster, one `migrate_shop` run per shop: throughput, and where a run's time goes.

    .venv/bin/python benchmarks/end_to_end.py [--shops 200] [--workers 1] [--storage postgres|sqlite|both]

Per storage variant: an embedded PostgreSQL (durable) holds the shared database (`seed_database(shops=N+2,
scale=1.0)`: about 2,000 rows per shop), the tenant databases and, for `postgres`, Dagster's storage set up by
`LocalStack.ensure_storage()` with the packaged dagster.yaml (the `dev`/`demo` configuration); `sqlite` uses
the same dagster.yaml without its storage section (Dagster's default SQLite storage in DAGSTER_HOME).

1. Phase 0 once (`prepare_source`), then every shop registered as a partition.
2. `--workers` processes (spawned: fresh interpreters) each take shop ids from one queue and call
   `migrate_shop(defs, instance, shop)`: one run per shop, in process. Shops per minute over the wall time
   from the moment all workers are ready to the last result; the projection for 1,000 shops adds phase 0.
3. Where the time goes, measured on two more shops in this process, after the workers are done:
   - one run with wrappers around our code, psycopg logins and SQLAlchemy's dialect (connect, execute,
     commit/rollback, close): exclusive wall time per category (a call inside another is counted only in the
     inner one), the rest being Dagster's own Python (steps, events, serialisation, and SQLAlchemy building
     the storage queries around the driver calls); with counts of storage connections and statements, our
     logins, and the run's events by type (from the event log), and, on Postgres, the server's own count
     of sessions on the storage database;
   - one run under cProfile: self time grouped by package (time in builtins and the standard library goes to
     the package that called it), and the top functions.
4. At the end, every shop's asset check results are read back per partition and must all be there and pass.

Target for a later round (from the issue): 1,000 shops <= 20 minutes on this machine.

Note: phase 0's `connection_budget` check plans one pool of 20 connections per shop after the migration and
fails (blocking every shop) when max_connections is below that. The benchmark's server therefore gets
max_connections = 20 x shops + 200.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import multiprocessing as mp
import os
import pstats
import queue as queue_module
import sys
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header, median, percentile, verdict  # noqa: E402 - after the path tweak

TARGET_SHOPS = 1_000
TARGET_MINUTES = 20.0
POOL_SIZE = 20  # validation's planned connections per tenant pool (its default)


# -- one worker process -------------------------------------------------------------------------------------


def _quiet() -> None:
    import dagster as dg

    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def pool_storage(instance: Any) -> None:
    """The lever `--pooled-storage` measures: Dagster's own `optimize_for_webserver` (what dagster-webserver
    calls) swaps each dagster-postgres storage's NullPool engine for a pooled one (pool_size 1 + overflow),
    so a run stops logging in anew for every storage call. statement_timeout 0: none. No-op on SQLite."""
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=10)


def run_failure_messages(instance: Any, run_id: str) -> list[str]:
    """Why a run failed when no step did (resource init, run-level errors): its error-bearing events."""
    out = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.event_type_value not in ("RUN_FAILURE", "PIPELINE_FAILURE", "ENGINE_EVENT", "STEP_FAILURE", "RESOURCE_INIT_FAILURE"):
            continue
        err = getattr(event.event_specific_data, "error", None)
        text = f"{event.event_type_value}: {entry.user_message or ''} {err.message.strip() if err else ''}".strip()
        if err is not None or event.event_type_value != "ENGINE_EVENT":
            out.append(text[:400])
    if not out:  # no error event at all: say what the run did record
        run = instance.get_run_by_id(run_id)
        kinds = Counter(e.dagster_event.event_type_value for e in instance.all_logs(run_id) if e.dagster_event)
        out.append(f"run status {run.status.value if run else '?'}, no error event; events {dict(kinds)}")
    return out[:3]


def worker(env: dict[str, str], shops: Any, results: Any, ready: Any, go: Any, pooled: bool = False) -> None:
    """Runs in a spawned process: builds the definitions and the instance once, then shop after shop."""
    os.environ.update(env)
    _quiet()
    import dagster as dg

    from handyshop_migration.definitions import build_definitions

    defs = build_definitions(environ=dict(os.environ))
    with dg.DagsterInstance.get() as instance:
        if pooled:
            pool_storage(instance)
        ready.put(os.getpid())
        go.wait()
        while (shop := shops.get()) is not None:
            started = time.perf_counter()
            try:
                outcome = migrate_shop(defs, instance, shop)
                notes = outcome.notes[:3]
                if not outcome.runs[-1].success and not notes:
                    notes = run_failure_messages(instance, outcome.runs[-1].run_id)
                results.put(
                    {
                        "shop": shop,
                        "seconds": time.perf_counter() - started,
                        "success": all(r.success for r in outcome.runs),
                        "verified": outcome.verified,
                        "checks": sum(len(r.checks) for r in outcome.runs),
                        "failed": [f"{c.asset}:{c.check}" for r in outcome.runs for c in r.checks if not c.passed],
                        "notes": notes,
                        "finished": time.perf_counter(),
                    }
                )
            except Exception as exc:  # reported, the parent decides
                results.put({"shop": shop, "seconds": time.perf_counter() - started, "success": False,
                             "verified": False, "checks": 0, "failed": [], "notes": [repr(exc)[:500]],
                             "finished": time.perf_counter()})


# -- exclusive wall time per category -----------------------------------------------------------------------


class Stopwatch:
    """Exclusive wall time per category on the main thread: a wrapped call inside another wrapped call counts
    only in the inner one; what no wrapper covers is the caller's (Dagster's) own time."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._stack: list[list[float]] = []  # [children's seconds] per open wrapped call
        self._undo: list[Callable[[], None]] = []
        self._main = threading.main_thread()

    @contextmanager
    def measure(self, category: str) -> Iterator[None]:
        if threading.current_thread() is not self._main:
            yield  # threads of our own (copy reader, verification) are waited for inside a main-thread call
            return
        frame = [0.0]
        self._stack.append(frame)
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self._stack.pop()
            self.seconds[category] += elapsed - frame[0]
            self.calls[category] += 1
            if self._stack:
                self._stack[-1][0] += elapsed

    def wrap(self, owner: Any, name: str, category: str) -> None:
        original = vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name, None)
        if original is None:
            return  # renamed by a later change: that category just stays empty
        raw = original.__func__ if isinstance(original, classmethod | staticmethod) else original

        @functools.wraps(raw)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self.measure(category):
                return raw(*args, **kwargs)

        replacement: Any = type(original)(wrapper) if isinstance(original, classmethod | staticmethod) else wrapper
        setattr(owner, name, replacement)
        self._undo.append(lambda: setattr(owner, name, original))

    def install(self) -> None:
        import psycopg
        import sqlalchemy.dialects.postgresql.psycopg2 as sa_psycopg2
        from sqlalchemy.engine import default as sa_default

        from handyshop_migration.pipeline import phase1
        from handyshop_migration.tenancy import workflow as workflow_module
        from handyshop_migration.tenancy.application.registry import ConnectionRegistry
        from handyshop_migration.tenancy.engine.provisioning import Provisioner
        from handyshop_migration.tenancy.lifecycle import Lifecycle

        for name, category in (
            ("copy_table", "ours: copy (copy_table)"),
            ("verify_copied_table", "ours: verify both sides (verify_copied_table)"),
            ("check_copied_table", "ours: parity re-check (check_copied_table)"),
            ("pending_foreign_keys", "ours: gates (phase-0 refusal, parity gates, FK check)"),
        ):
            self.wrap(workflow_module, name, category)
        self.wrap(phase1, "phase0_refusal", "ours: gates (phase-0 refusal, parity gates, FK check)")
        self.wrap(Provisioner, "provision", "ours: provisioning (provision)")
        self.wrap(Provisioner, "verify_access", "ours: access check (verify_access)")
        for name in ("find", "register", "ensure_schema"):
            self.wrap(ConnectionRegistry, name, "ours: registry")
        for name in ("apply", "find", "ensure_schema"):
            self.wrap(Lifecycle, name, "ours: lifecycle")
        # ConnectionSpec.connect calls the module attribute `psycopg.connect`.
        self.wrap(psycopg, "connect", "ours: psycopg logins (source, tenant, registry)")
        self.wrap(sa_default.DefaultDialect, "connect", "storage: new connection (login)")
        for name in ("do_execute", "do_execute_no_params", "do_executemany"):
            self.wrap(sa_default.DefaultDialect, name, "storage: statements")
        self.wrap(sa_psycopg2.PGDialect_psycopg2, "do_executemany", "storage: statements")
        for name in ("do_commit", "do_rollback", "do_close"):
            self.wrap(sa_default.DefaultDialect, name, "storage: commit / rollback / close")

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


# -- cProfile, grouped ----------------------------------------------------------------------------------------

_GROUPS = (
    ("handyshop_migration", "ours (handyshop_migration)"),
    ("/psycopg/", "ours: psycopg 3 (library DB I/O)"),
    ("psycopg_binary", "ours: psycopg 3 (library DB I/O)"),
    ("dagster_postgres", "storage (dagster_postgres, SQLAlchemy, psycopg2, sqlite3)"),
    ("sqlalchemy", "storage (dagster_postgres, SQLAlchemy, psycopg2, sqlite3)"),
    ("psycopg2", "storage (dagster_postgres, SQLAlchemy, psycopg2, sqlite3)"),
    ("sqlite3", "storage (dagster_postgres, SQLAlchemy, psycopg2, sqlite3)"),
    ("alembic", "storage (dagster_postgres, SQLAlchemy, psycopg2, sqlite3)"),
    ("/dagster/_core/storage", "Dagster storage layer (Python)"),
    ("/dagster/", "Dagster machinery (steps, events, definitions)"),
    ("dagster_shared", "Dagster machinery (steps, events, definitions)"),
    ("pydantic", "Dagster machinery (steps, events, definitions)"),
)


def _group_of(func: tuple[str, int, str]) -> str | None:
    filename, _, name = func
    text = filename if filename != "~" else name
    for needle, group in _GROUPS:
        if needle in text:
            return group
    return None  # builtins and the standard library: charged to whoever called them


def grouped_self_time(stats: pstats.Stats) -> dict[str, float]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    memo: dict[Any, dict[str, float]] = {}

    def shares(func: Any, seen: frozenset[Any]) -> dict[str, float]:
        group = _group_of(func)
        if group is not None:
            return {group: 1.0}
        if func in memo:
            return memo[func]
        callers = raw[func][4] if func in raw else {}
        weights = {c: v[3] for c, v in callers.items() if c not in seen}
        total = sum(weights.values())
        if not total:
            return {"other (standard library, unattributed)": 1.0}
        out: dict[str, float] = defaultdict(float)
        for caller, weight in weights.items():
            for g, share in shares(caller, seen | {func}).items():
                out[g] += share * weight / total
        memo[func] = dict(out)
        return memo[func]

    result: dict[str, float] = defaultdict(float)
    for func, (_, _, tottime, _, _) in raw.items():
        for group, share in shares(func, frozenset()).items():
            result[group] += tottime * share
    return dict(result)


# -- one storage variant ------------------------------------------------------------------------------------


def storage_sessions(admin: Any, dbname: str) -> int | None:
    with admin.connect(autocommit=True) as conn:
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (dbname,)).fetchone()
    return int(row[0]) if row else None


def check_results(instance: Any, defs: Any, shop: int) -> dict[str, bool]:
    from dagster._core.event_api import PartitionKeyFilter

    keys = list(defs.resolve_asset_graph().asset_check_keys)
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        keys, partition_filter=PartitionKeyFilter(key=str(shop))
    )
    return {
        f"{'/'.join(k.asset_key.path)}:{k.name}": bool(r.event.asset_check_evaluation.passed)
        for k, r in latest.items()
        if r.event is not None and r.event.asset_check_evaluation is not None
    }


def migrate_shop(defs: Any, instance: Any, shop: int) -> Any:
    """Phases 1-2 for one shop, as `handyshop-migration migrate` runs them (one Dagster run)."""
    from handyshop_migration.pipeline.runner import advance
    from handyshop_migration.tenancy.dsn import ConnectionSpec
    from handyshop_migration.tenancy.lifecycle import Lifecycle

    lifecycle = Lifecycle(ConnectionSpec.from_url(os.environ["HANDYSHOP_SOURCE_URL"]))
    return advance(defs, instance, lifecycle, shop, 2)


def run_variant(storage: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    import dagster as dg

    from handyshop_migration.devtools.local import LocalStack, packaged_dagster_yaml
    from handyshop_migration.devtools.seed import ensure_database, seed_database
    from handyshop_migration.pipeline.runner import register_shops, run_job

    report: dict[str, Any] = {"storage": storage, "workers": args.workers, "shops": args.shops,
                              "pooled": args.pooled_storage}
    n_total = args.shops + 2  # two more for the instrumented and the profiled run
    stack = LocalStack(root / storage)
    stack.reset()
    stack.root.mkdir(parents=True, exist_ok=True)
    from handyshop_migration.devtools.embedded import EmbeddedPostgres

    # Started first with room for the connection budget check; LocalStack.start() reuses a running server.
    EmbeddedPostgres(stack.root / "pgdata", version=18, durable=True,
                     max_connections=max(300, POOL_SIZE * n_total + 200)).start()
    stack.start()
    try:
        admin = stack.admin
        if storage == "postgres":
            stack.ensure_storage()
        else:
            config = yaml.safe_load(packaged_dagster_yaml())
            config.pop("storage", None)
            (stack.dagster_home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        source = ensure_database(admin, "handyshop")
        started = time.perf_counter()
        seed_database(source, shops=n_total, scale=args.scale, seed=42)
        report["seed_seconds"] = time.perf_counter() - started
        env = stack.environment()
        if storage != "postgres":
            env.pop("DAGSTER_PG_URL", None)
            os.environ.pop("DAGSTER_PG_URL", None)  # left by a Postgres variant run before; spawned workers inherit it
        os.environ.update(env)
        _quiet()
        from handyshop_migration.definitions import build_definitions

        defs = build_definitions(environ=dict(os.environ))
        with dg.DagsterInstance.get() as instance:
            started = time.perf_counter()
            phase0 = run_job(defs, instance, "prepare_source")
            report["phase0_seconds"] = time.perf_counter() - started
            if not phase0.success:
                raise RuntimeError(f"phase 0 failed: {phase0.failures}")
            shop_ids = list(range(1, n_total + 1))
            register_shops(instance, shop_ids)
            if args.pool_init:
                # Dagster 1.13 creates a pool's limit row lazily, at the first step claiming a slot; two runs doing
                # that at once on Postgres storage make one fail ("current transaction is aborted": its INSERT hits
                # the other's row and it UPDATEs in the aborted transaction). One process creates it first.
                from handyshop_migration.pipeline.phase2 import SOURCE_POOL

                instance.event_log_storage.initialize_concurrency_limit_to_default(SOURCE_POOL)

            # -- throughput: worker processes on a shared queue -----------------------------------------
            ctx = mp.get_context("spawn")
            shops_q, results_q, ready_q, go = ctx.Queue(), ctx.Queue(), ctx.Queue(), ctx.Event()
            for shop in shop_ids[: args.shops]:
                shops_q.put(shop)
            for _ in range(args.workers):
                shops_q.put(None)
            started = time.perf_counter()
            procs = [
                ctx.Process(target=worker, args=(env, shops_q, results_q, ready_q, go, args.pooled_storage))
                for _ in range(args.workers)
            ]
            for p in procs:
                p.start()
            for _ in procs:
                ready_q.get(timeout=600)
            report["worker_start_seconds"] = time.perf_counter() - started
            go.set()
            began = time.perf_counter()
            results: list[dict[str, Any]] = []
            while len(results) < args.shops:
                try:
                    r = results_q.get(timeout=30)
                except queue_module.Empty:
                    if not any(p.is_alive() for p in procs):
                        raise RuntimeError("all workers ended before every shop was done") from None
                    continue
                results.append(r)
                if len(results) % max(1, args.shops // 10) == 0 or not r["success"]:
                    print(f"   [{storage}] {len(results)}/{args.shops} shops, {time.perf_counter() - began:.0f} s"
                          + ("" if r["success"] else f"  shop {r['shop']} FAILED: {r['notes']}"), flush=True)
            report["wall_seconds"] = time.perf_counter() - began
            for p in procs:
                p.join(timeout=60)
            report["results"] = results

            # -- where the time goes: one instrumented run, one cProfile run --------------------------------
            if args.pooled_storage:
                pool_storage(instance)
            watch = Stopwatch()
            sessions_before = storage_sessions(admin, "dagster") if storage == "postgres" else None
            watch.install()
            try:
                started = time.perf_counter()
                outcome = migrate_shop(defs, instance, shop_ids[-2])
                report["instrumented_seconds"] = time.perf_counter() - started
            finally:
                watch.uninstall()
            time.sleep(1.0)  # closed sessions report their statistics on exit
            if sessions_before is not None:
                after = storage_sessions(admin, "dagster")
                report["server_sessions"] = (after or 0) - sessions_before
            report["instrumented_ok"] = outcome.verified
            report["watch"] = (dict(watch.seconds), dict(watch.calls))
            logs = instance.all_logs(outcome.runs[-1].run_id)
            report["events"] = Counter(e.dagster_event.event_type_value if e.dagster_event else "LOG" for e in logs)

            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            profiled = migrate_shop(defs, instance, shop_ids[-1])
            profiler.disable()
            report["profiled_seconds"] = time.perf_counter() - started
            report["profiled_ok"] = profiled.verified
            stats = pstats.Stats(profiler)
            report["profile_groups"] = grouped_self_time(stats)
            report["profile_total"] = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
            top = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:12]  # type: ignore[attr-defined]
            report["profile_top"] = [(pstats.func_std_string(f), v[1], v[2]) for f, v in top]
            if args.profile_out:
                out = Path(args.profile_out).with_suffix(f".{storage}.pstats")
                stats.dump_stats(out)
                report["profile_file"] = str(out)

            # -- every shop's checks stored per partition --------------------------------------------------
            by_shop = {r["shop"]: r for r in results}
            by_shop[shop_ids[-2]] = {"checks": sum(len(r.checks) for r in outcome.runs)}
            by_shop[shop_ids[-1]] = {"checks": sum(len(r.checks) for r in profiled.runs)}
            missing: list[str] = []
            for shop in shop_ids:
                stored = check_results(instance, defs, shop)
                expected = max(x["checks"] for x in by_shop.values())  # a full run's checks
                if len(stored) != expected or not all(stored.values()) or expected == 0:
                    missing.append(f"shop {shop}: {len(stored)} stored of {expected}, "
                                   f"{sum(not v for v in stored.values())} failed")
            report["checks_per_shop"] = max(x["checks"] for x in by_shop.values())
            report["check_problems"] = missing
    finally:
        stack.stop()
        stack.reset()
    return report


# -- report -------------------------------------------------------------------------------------------------


def print_report(r: dict[str, Any]) -> None:
    results = r["results"]
    per_shop = [x["seconds"] for x in results]
    ok = [x for x in results if x["success"] and x["verified"]]
    rate = r["shops"] / r["wall_seconds"] * 60
    projection = TARGET_SHOPS / rate + r["phase0_seconds"] / 60
    tenth = max(1, len(results) // 10)
    ordered = sorted(results, key=lambda x: x["finished"])
    first, last = median([x["seconds"] for x in ordered[:tenth]]), median([x["seconds"] for x in ordered[-tenth:]])
    print()
    pooled = ", pooled storage connections (optimize_for_webserver)" if r["pooled"] else ""
    print(f"== {r['storage']} storage{pooled}, {r['workers']} worker(s), {r['shops']} shops")
    print(f"   seed {r['seed_seconds']:.1f} s, phase 0 {r['phase0_seconds']:.1f} s, worker start {r['worker_start_seconds']:.1f} s")
    print(f"   {len(ok)}/{len(results)} shops migrated and verified in {r['wall_seconds']:.1f} s: "
          f"{rate:.1f} shops/minute")
    print(f"   per shop (inside a worker): median {median(per_shop):.2f} s, p90 {percentile(per_shop, 90):.2f} s, "
          f"max {max(per_shop):.2f} s; first tenth {first:.2f} s -> last tenth {last:.2f} s (median)")
    print(f"   projection for {TARGET_SHOPS:,} shops: {projection:.0f} min (phase 0 + {TARGET_SHOPS:,} / rate)   "
          f"target <= {TARGET_MINUTES:.0f} min  {verdict(projection <= TARGET_MINUTES)}  "
          f"(needs {TARGET_SHOPS / (TARGET_MINUTES * 60) * 60 / rate:.2f}x this rate)")
    problems = r["check_problems"]
    print(f"   check results stored per partition: {len(results) + 2} shops x {r['checks_per_shop']} checks, "
          + ("all present and passed" if not problems else f"PROBLEMS: {problems[:5]}"))
    failed = [x for x in results if not (x["success"] and x["verified"])]
    for x in failed[:5]:
        print(f"   FAILED shop {x['shop']}: {x['failed'][:3]} {x['notes']}")

    seconds, calls = r["watch"]
    total = r["instrumented_seconds"]
    print()
    print(f"   where one shop's run goes (instrumented run: {total:.2f} s wall, "
          f"{'ok' if r['instrumented_ok'] else 'NOT verified'}), exclusive wall time:")
    rest = total - sum(seconds.values())
    rows = sorted(seconds.items(), key=lambda kv: -kv[1]) + [("Dagster's own Python (steps, events, SQLAlchemy query building)", rest)]
    for category, s in sorted(rows, key=lambda kv: -kv[1]):
        n = calls.get(category)
        extra = f"{n:>6} calls, {s / n * 1000:6.2f} ms each" if n else ""
        print(f"     {category:<56}{s:7.2f} s {s / total:5.0%}   {extra}")
    groups: dict[str, float] = defaultdict(float)
    for category, s in rows:
        groups["ours" if category.startswith("ours") else "storage" if category.startswith("storage") else "dagster"] += s
    print(f"     -> our copy/verify/provisioning code {groups['ours']:.2f} s ({groups['ours'] / total:.0%}), "
          f"storage {groups['storage']:.2f} s ({groups['storage'] / total:.0%}), "
          f"Dagster machinery {groups['dagster']:.2f} s ({groups['dagster'] / total:.0%})")
    events = r["events"]
    steps = events.get("STEP_START", 0)
    print(f"   counts for that run: {calls.get('storage: new connection (login)', 0)} storage connections, "
          f"{calls.get('storage: statements', 0)} storage statements, "
          f"{calls.get('ours: psycopg logins (source, tenant, registry)', 0)} logins of our own, "
          f"{sum(events.values())} events in {steps} steps"
          + (f"; the server counted {r['server_sessions']} sessions on the storage database" if "server_sessions" in r else ""))
    print("   events by type: " + ", ".join(f"{k} {v}" for k, v in events.most_common(10)))
    print()
    prof_total = r["profile_total"]
    print(f"   cProfile of another shop's run ({r['profiled_seconds']:.2f} s wall under the profiler; "
          f"{prof_total:.2f} s of self time on the main thread), self time by package:")
    for group, s in sorted(r["profile_groups"].items(), key=lambda kv: -kv[1]):
        print(f"     {group:<62}{s:7.2f} s {s / prof_total:5.0%}")
    print("   top functions by self time:")
    for name, ncalls, tottime in r["profile_top"]:
        print(f"     {tottime:6.2f} s {ncalls:>8} calls  {name[:110]}")
    if "profile_file" in r:
        print(f"   profile saved: {r['profile_file']} (python -m pstats)")


def print_levers(reports: list[dict[str, Any]]) -> None:
    """Concrete levers, each estimated from this run's own measurements (one after the other, not added up)."""
    print()
    print("== levers (estimated from the figures above)")
    by = {r["storage"]: r for r in reports}
    for r in reports:
        seconds, calls = r["watch"]
        total = r["instrumented_seconds"]
        rate = r["shops"] / r["wall_seconds"] * 60
        logins = seconds.get("storage: new connection (login)", 0.0)
        closes = seconds.get("storage: commit / rollback / close", 0.0)
        steps = r["events"].get("STEP_START", 0) or 1
        storage_all = sum(s for c, s in seconds.items() if c.startswith("storage"))
        dagster_own = total - sum(seconds.values())
        recheck = seconds.get("ours: parity re-check (check_copied_table)", 0.0)
        pooled_total = total - (logins if r["storage"] == "postgres" and not r["pooled"] else 0.0)
        per_step = (storage_all - (total - pooled_total) + dagster_own) / steps
        print(f"   [{r['storage']}{', pooled' if r['pooled'] else ''}: one shop {total:.1f} s in this process, "
              f"{rate:.1f} shops/min with {r['workers']} worker(s)]")
        if r["storage"] == "postgres" and not r["pooled"]:
            print(f"   - pooled storage connections: one call, instance.optimize_for_webserver(statement_timeout, "
                  f"pool_recycle, max_overflow) (what dagster-webserver does), in the runner before the shops: "
                  f"{calls.get('storage: new connection (login)', 0)} logins per run cost {logins:.1f} s -> about "
                  f"{pooled_total:.1f} s per shop ({total / pooled_total:.1f}x); measure it with --pooled-storage")
        elif r["storage"] == "sqlite":
            print(f"   - SQLite opens {calls.get('storage: new connection (login)', 0)} connections per run too, cheap "
                  f"({logins:.2f} s); its commits and closes cost {closes:.1f} s (each commit a file sync)")
        print(f"   - fewer steps per run: {steps} steps cost ~{per_step:.2f} s each in Dagster and storage"
              f"{' once pooled' if r['storage'] == 'postgres' else ''}; the 19 parity checks as check_specs of "
              f"their table's asset (one asset per table and step, so a failure still gates only that table) "
              f"remove 19 steps: about -{19 * per_step:.1f} s per shop, plus their tenant re-scan (-{recheck:.2f} s)")
    if "postgres" in by and "sqlite" in by:
        pg, sq = by["postgres"], by["sqlite"]
        pg_rate = pg["shops"] / pg["wall_seconds"] * 60
        sq_rate = sq["shops"] / sq["wall_seconds"] * 60
        print(f"   - measured: SQLite storage {sq_rate:.1f} vs Postgres {pg_rate:.1f} shops/min ({sq_rate / pg_rate:.2f}x)")
    print("   - more workers: this machine has 2 cores; compare --workers 1 and 2 (each worker is a process with its "
          "own instance)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shops", type=int, default=200, help="shops migrated for the throughput (default 200)")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--storage", choices=("postgres", "sqlite", "both"), default="postgres",
                        help="Dagster storage: LocalStack's Postgres (default), SQLite, or both one after the other")
    parser.add_argument("--pooled-storage", action="store_true",
                        help="measure a lever: pooled storage connections via instance.optimize_for_webserver()")
    parser.add_argument("--pool-init", action=argparse.BooleanOptionalAction, default=True,
                        help="create the copy steps' concurrency pool before the workers start (default on; "
                        "--no-pool-init shows Dagster's race when two first runs create it at once)")
    parser.add_argument("--scale", type=float, default=1.0, help="seed scale: ~2,000 rows per shop at 1.0")
    parser.add_argument("--profile-out", default="", help="also save the cProfile stats to this path (+ .<storage>.pstats)")
    parser.add_argument("--root", type=Path, default=None, help="working directory (default: a fresh one under /tmp, removed)")
    parser.add_argument("--paths", default="",
                        help="measure the operators' paths from outside instead, one after the other: daemon (prepare, "
                        "then `dagster dev` and new_shops_sensor), cli (prepare, then `migrate --shops all --workers W`), "
                        "daemon-baseline (daemon with --baseline-yaml); e.g. --paths daemon,cli")
    parser.add_argument("--baseline-yaml", default="", help="dagster.yaml of the daemon-baseline path (e.g. main's)")
    parser.add_argument("--alt-yaml", default="", help="dagster.yaml of the daemon-alt path (a candidate setting)")
    parser.add_argument("--baseline-shops", type=int, default=0,
                        help="shops of the daemon-baseline path (default --shops; it is slow: ~4 shops/min)")
    parser.add_argument("--sensor-interval", type=int, default=0,
                        help="HANDYSHOP_SENSOR_INTERVAL_SECONDS for the paths (default: the product's)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a path may take at most (default 3600)")
    parser.add_argument("--keep", action="store_true", help="keep each path's directory (logs, server) afterwards")
    args = parser.parse_args(argv)
    if args.paths:
        import tempfile

        from _paths import main_paths

        root = args.root or Path(tempfile.mkdtemp(prefix="handyshop-bench-paths-"))
        header(f"operators' paths: {args.paths}, {args.shops} shops at scale {args.scale}, "
               f"cli with {args.workers} worker(s)")
        try:
            return main_paths(args, root)
        finally:
            if args.root is None and not args.keep:
                import shutil

                shutil.rmtree(root, ignore_errors=True)
    if not 1 <= args.shops <= 498:
        parser.error("--shops must be between 1 and 498 (seed_database allows 500 shops; two more are profiled)")

    import tempfile

    root = args.root or Path(tempfile.mkdtemp(prefix="handyshop-bench-e2e-"))
    header(f"end to end: {args.shops} shops through Dagster, {args.workers} worker(s), storage {args.storage}"
           + (", pooled storage connections" if args.pooled_storage else ""))
    reports = []
    try:
        for storage in (("postgres", "sqlite") if args.storage == "both" else (args.storage,)):
            reports.append(run_variant(storage, args, root))
            print_report(reports[-1])
        print_levers(reports)
    finally:
        if args.root is None:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    bad = [r for r in reports if r["check_problems"] or any(not (x["success"] and x["verified"]) for x in r["results"])]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
