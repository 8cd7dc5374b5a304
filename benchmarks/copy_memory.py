"""Peak memory of a process copying a shop's `repairs`: 10,000 rows against 1,000,000 rows.

    .venv/bin/python benchmarks/copy_memory.py [--sizes 10000,1000000] [--repeat 2]

One shared database per size (shop 1 holding that many repairs) and a tenant database built from the tenant
DDL. Each copy runs in a fresh Python subprocess (this script with `--child`): it imports the library,
connects, notes its RSS, runs `copy_table(...)` and reports VmHWM (its peak RSS) and `ru_maxrss` (shown only:
Linux carries the pre-exec high-water mark, i.e. the forking parent's size, into it). Connection
details reach the child through environment variables, never its command line.

Target: the peak grows by <= 50 MB from the smallest to the largest size (memory must not scale with rows).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - after the path tweak that lets `python benchmarks/x.py` find it
    BIG_SHOP,
    add_server_args,
    bench_server,
    create_tenant_database,
    drop_database,
    header,
    median,
    seeded_source,
    source_catalog,
    verdict,
)

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.tenant_schema import render

TABLE = "repairs"
TARGET_MB = 50.0
_SOURCE_ENV = "HANDYSHOP_BENCH_SOURCE_URL"
_TENANT_ENV = "HANDYSHOP_BENCH_TENANT_URL"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child() -> int:
    """Runs in the subprocess: one copy, then a JSON line with its memory figures."""
    from handyshop_migration.tenancy.engine.copy import SourceSnapshot, copy_table

    source = ConnectionSpec.from_url(os.environ[_SOURCE_ENV], name=_SOURCE_ENV)
    tenant = ConnectionSpec.from_url(os.environ[_TENANT_ENV], name=_TENANT_ENV)
    schema = render(source_catalog(source))  # the whole catalog: copy_table handles the FKs touching the table
    with SourceSnapshot(source) as snapshot, tenant.connect() as conn:
        rss_before = _status_kb("VmRSS")
        hwm_before = _status_kb("VmHWM")
        started = time.perf_counter()
        result = copy_table(snapshot, conn, schema, TABLE, BIG_SHOP)
        seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "rows": result.rows,
                "seconds": seconds,
                "rss_before_kb": rss_before,
                "hwm_before_kb": hwm_before,
                "vmhwm_kb": _status_kb("VmHWM"),
                "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # KiB on Linux
            }
        )
    )
    return 0


def run_child(source: ConnectionSpec, tenant: ConnectionSpec) -> dict[str, float]:
    env = {**os.environ, _SOURCE_ENV: source.url().reveal(), _TENANT_ENV: tenant.url().reveal()}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child"], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"copy subprocess failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000", help="rows per copy, comma-separated (default 10000,1000000)")
    parser.add_argument("--repeat", type=int, default=2, help="fresh subprocesses per size (default 2)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    add_server_args(parser)
    args = parser.parse_args(argv)
    if args.child:
        return child()

    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, list[dict[str, float]]] = {}
    with bench_server(args.server_dir) as server:
        admin = server.spec()
        header(f"copy memory: peak RSS of a process copying {' vs '.join(f'{s:,}' for s in sizes)} rows", admin)
        created: list[str] = []
        try:
            for size in sizes:
                source, seed_seconds = seeded_source(
                    admin, f"bench_copy_src_{size}", shops=5, scale=1.0, seed=42, big_shop_rows=size
                )
                if args.server_dir is None:
                    created.append(source.dbname)
                print(f"   seed {size:,}: {'reused' if seed_seconds is None else f'{seed_seconds:.1f} s'}", flush=True)
                tenant_name = f"bench_mem_tenant_{size}"
                created.append(tenant_name)
                tenant = create_tenant_database(admin, tenant_name, render(source_catalog(source)))
                results[size] = []
                for _ in range(args.repeat):
                    r = run_child(source, tenant)
                    assert r["rows"] == size, r
                    results[size].append(r)
                    print(
                        f"   {size:>9,} rows: {r['seconds']:.2f} s, RSS before the copy {r['rss_before_kb'] / 1024:.1f} MB, "
                        f"peak (VmHWM) {r['vmhwm_kb'] / 1024:.1f} MB (ru_maxrss {r['ru_maxrss_kb'] / 1024:.1f} MB, "
                        "includes the parent's image)",
                        flush=True,
                    )
        finally:
            for name in created:
                drop_database(admin, name)

    print()
    # VmHWM is this process image's own peak. ru_maxrss is shown but not used: Linux carries the high-water
    # mark of the image before exec (the forked parent, this script) into it, so it reports the parent's size.
    peaks = {s: [r["vmhwm_kb"] / 1024 for r in rs] for s, rs in results.items()}
    before = {s: [r["rss_before_kb"] / 1024 for r in rs] for s, rs in results.items()}
    print(f"{'rows':>11}{'peak VmHWM (median)':>20}{'RSS before copy':>18}{'copy adds':>12}")
    for s in sizes:
        print(f"{s:>11,}{median(peaks[s]):>17.1f} MB{median(before[s]):>15.1f} MB{median(peaks[s]) - median(before[s]):>9.1f} MB")
    small, large = sizes[0], sizes[-1]
    growth = median(peaks[large]) - median(peaks[small])
    worst = max(peaks[large]) - min(peaks[small])
    print()
    print(f"peak growth {small:,} -> {large:,} rows: {growth:.1f} MB (worst pair {worst:.1f} MB; "
          f"{large / small:,.0f}x the rows)   target <= {TARGET_MB:.0f} MB  {verdict(worst <= TARGET_MB)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
