"""`handyshop-migration status` for 1,000 shops, timed from outside: target <= 2 s.

    .venv/bin/python benchmarks/status_time.py [--shops 1000] [--runs-per-shop 2] [--repeat 5]

An embedded PostgreSQL 18 (durable) holds a control database with 1,000 shops' lifecycle records (registered,
then spread over the states with one UPDATE) and Dagster's storage (the packaged dagster.yaml: Postgres) with
1,000 shop partitions and `--runs-per-shop` runs each (written through the Dagster API, `add_run`, as a run
would leave them: tagged with their partition, ended). Nothing is migrated: status only reads.

Timed, each `--repeat` times, alternating, as subprocesses with the environment an operator has:
- `handyshop-migration status` (on Postgres storage it reads the two storage tables directly, without
  importing Dagster);
- the same rows through the Dagster API (`pipeline.status.shop_status` on `DagsterInstance.get()`): what
  status costs when the storage is not Postgres, and what it cost before.
Also `python -c pass` and `import dagster` alone, for scale. Both outputs must hold one row per shop.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_server_args, bench_server, best, create_database, header, median, verdict  # noqa: E402

TARGET_SECONDS = 2.0
STATES = ("registered", "provisioned", "copying", "copied", "verified", "syncing", "live", "retired")
VIA_DAGSTER = """
import os, sys, warnings
warnings.filterwarnings("ignore")
import dagster as dg
from handyshop_migration.cli.environment import table
from handyshop_migration.pipeline.status import shop_status
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.lifecycle import Lifecycle
with dg.DagsterInstance.get() as instance:
    rows = shop_status(instance, Lifecycle(ConnectionSpec.from_url(os.environ["HANDYSHOP_SOURCE_URL"])))
print(table(("shop", "phase", "state", "route", "rows", "last error", "last run"),
            [(r.shop, r.phase, r.state, r.route, r.rows, r.last_error, r.last_run) for r in rows]))
"""


def populate(env: dict[str, str], source: object, shops: int, runs_per_shop: int) -> float:
    import dagster as dg
    from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus
    from dagster._core.utils import make_new_run_id

    from handyshop_migration.tenancy.lifecycle import Lifecycle

    started = time.perf_counter()
    lifecycle = Lifecycle(source)  # type: ignore[arg-type]
    lifecycle.ensure_schema()
    lifecycle.register(range(1, shops + 1))
    with source.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(
            "UPDATE handyshop_migration.shop_lifecycle SET state = (%s::text[])[1 + shop_id %% %s], "
            "details = jsonb_build_object('rows', shop_id * 7, 'tables', 19), "
            "last_error = CASE WHEN shop_id %% 50 = 0 THEN 'RuntimeError: example' END",
            (list(STATES), len(STATES)),
        )
        conn.commit()
    os.environ.update(env)
    with dg.DagsterInstance.get() as instance:
        keys = [str(s) for s in range(1, shops + 1)]
        instance.add_dynamic_partitions("shops", keys)
        for k in keys:
            for i in range(runs_per_shop):
                run = DagsterRun(job_name="migrate_shop" if i == 0 else "sync_shop",
                                 run_id=make_new_run_id(), tags={"dagster/partition": k},
                                 status=DagsterRunStatus.SUCCESS)
                instance.add_run(run)
    return time.perf_counter() - started


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True, cwd="/")
    return time.perf_counter() - started, result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shops", type=int, default=1000)
    parser.add_argument("--runs-per-shop", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    add_server_args(parser)
    args = parser.parse_args(argv)

    import tempfile

    from handyshop_migration.devtools.local import ensure_storage, packaged_dagster_yaml, storage_url
    from handyshop_migration.tenancy.application.encryption import generate_key

    with bench_server(args.server_dir) as server, tempfile.TemporaryDirectory(prefix="handyshop-status-") as tmp:
        admin = server.spec()
        header(f"status for {args.shops} shops ({args.runs_per_shop} runs each)", admin)
        source = create_database(admin, "bench_status_src")
        storage = ensure_storage(admin, "bench-status-storage-password-0123456789", database="bench_status_dagster",
                                 role="bench_status_storage")
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "dagster.yaml").write_text(packaged_dagster_yaml(), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        env.update({"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": storage_url(storage),
                    "HANDYSHOP_SOURCE_URL": source.url().reveal(), "TENANT_ENCRYPTION_KEY": generate_key()})
        print(f"   populated in {populate(env, source, args.shops, args.runs_per_shop):.1f} s")
        cli = str(Path(sys.executable).parent / "handyshop-migration")
        variants = {
            "handyshop-migration status": [cli, "status"],
            "through the Dagster API": [sys.executable, "-c", VIA_DAGSTER],
            "python -c pass": [sys.executable, "-c", "pass"],
            "python -c 'import dagster'": [sys.executable, "-c", "import dagster"],
        }
        times: dict[str, list[float]] = {k: [] for k in variants}
        outputs: dict[str, str] = {}
        for _ in range(args.repeat):
            for name, command in variants.items():
                seconds, out = timed(command, env)
                times[name].append(seconds)
                outputs[name] = out
        print(f"   load avg after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name in variants:
            print(f"   {name:<30} best {best(times[name]):5.2f} s, median {median(times[name]):5.2f} s")
        rows = {name: len(outputs[name].splitlines()) - 2 for name in ("handyshop-migration status",
                                                                       "through the Dagster API")}
        same = outputs["handyshop-migration status"] == outputs["through the Dagster API"]
        print(f"   rows printed: {rows} (one per shop: {args.shops}); identical output: {same}")
        status = median(times["handyshop-migration status"])
        ok = status <= TARGET_SECONDS and rows["handyshop-migration status"] == args.shops and same
        print(f"   status for {args.shops} shops: median {status:.2f} s   target <= {TARGET_SECONDS:.0f} s  "
              f"{verdict(ok)}")
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
