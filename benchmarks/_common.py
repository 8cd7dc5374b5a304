"""Shared pieces of the benchmarks: a durable embedded server of their own, seeding, tenant databases built
from the tenant DDL, and report helpers.

Every benchmark starts its own PostgreSQL 18 (durable: fsync on, as production) in a fresh directory under
/tmp and removes it at the end, so nothing it creates outlives it. `--server-dir DIR` keeps the server's
directory instead (the seeded source is then reused by the next run: handy while iterating, never for the
published figures).

The machine is shared and its speed drifts: every figure is a ratio against a baseline measured in the
same run, and timings are repeated (best of N) where noise matters. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from psycopg import sql

# Runnable as `python benchmarks/x.py` from a checkout: the package is installed in the venv (pip -e).
from handyshop_migration.devtools.embedded import EmbeddedPostgres
from handyshop_migration.devtools.seed import TENANT_TABLES, seed_database
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog, introspect
from handyshop_migration.tenancy.engine.tenant_schema import TenantSchema, render

BIG_SHOP = 1  # seed_database gives shop 1 the `big_shop_rows` repairs


def add_server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server-dir",
        type=Path,
        default=None,
        help="keep the embedded server's data in DIR and reuse its seeded source next time "
        "(default: a fresh directory under /tmp, removed at the end)",
    )


@contextlib.contextmanager
def bench_server(
    server_dir: Path | None, *, max_connections: int = 300, prefix: str = "handyshop-bench-"
) -> Iterator[EmbeddedPostgres]:
    """A durable embedded PostgreSQL 18 of this benchmark's own; removed afterwards unless `server_dir`."""
    keep = server_dir is not None
    root = Path(server_dir) if keep else Path(tempfile.mkdtemp(prefix=prefix))
    server = EmbeddedPostgres(root / "pgdata", version=18, durable=True, max_connections=max_connections)
    server.start()
    try:
        yield server
    finally:
        if keep:
            server.stop()
        else:
            server.destroy()
            shutil.rmtree(root, ignore_errors=True)


def database_exists(admin: ConnectionSpec, name: str) -> bool:
    with admin.connect(autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def create_database(admin: ConnectionSpec, name: str) -> ConnectionSpec:
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin.with_db(name)


def drop_database(admin: ConnectionSpec, name: str) -> None:
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def seeded_source(admin: ConnectionSpec, name: str, **seed_args: object) -> tuple[ConnectionSpec, float | None]:
    """The shared database `name`, seeded with `seed_args` unless a kept server already holds it.

    Returns the spec and the seed's seconds (None when reused)."""
    spec = admin.with_db(name)
    if database_exists(admin, name):
        with spec.connect() as conn:
            if conn.execute("SELECT to_regclass('public.shops') IS NOT NULL").fetchone() == (True,):
                return spec, None
        drop_database(admin, name)  # a seed interrupted earlier: start again
    create_database(admin, name)
    started = time.perf_counter()
    seed_database(spec, **seed_args)  # type: ignore[arg-type]
    return spec, time.perf_counter() - started


def big_shop_source(admin: ConnectionSpec, rows: int, shops: int) -> tuple[ConnectionSpec, Catalog, TenantSchema]:
    """The shared database with one big shop (seeded once, reused by name), its catalog and tenant schema."""
    source, seed_seconds = seeded_source(
        admin, f"bench_copy_src_{rows}", shops=shops, scale=1.0, seed=42, big_shop_rows=rows
    )
    print(f"   seed: {'reused' if seed_seconds is None else f'{seed_seconds:.1f} s'}")
    catalog = source_catalog(source)
    return source, catalog, render(catalog)


def source_catalog(source: ConnectionSpec) -> Catalog:
    return introspect(source, include=TENANT_TABLES)


def create_tenant_database(
    admin: ConnectionSpec, name: str, schema: TenantSchema, *, no_autovacuum: tuple[str, ...] = ()
) -> ConnectionSpec:
    """A database holding the whole tenant schema, created by running the tenant DDL (migration 0001).

    `no_autovacuum` tables get autovacuum off: after a million-row load without FREEZE, autovacuum vacuums
    the table in the background and would slow whichever timed run comes next."""
    spec = create_database(admin, name)
    with spec.connect() as conn:
        with conn.transaction():
            conn.execute(schema.script().encode())  # type: ignore[call-overload]
            for table in no_autovacuum:
                conn.execute(
                    sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(schema.table(table).ident)
                )
    return spec


def checkpoint(admin: ConnectionSpec) -> None:
    """Flush dirty buffers before a timed run, so no run pays for an earlier run's checkpoint."""
    with admin.connect(autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def psql_env(spec: ConnectionSpec) -> dict[str, str]:
    """Environment for a psql child: the password goes through PGPASSWORD, never the command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        PGHOST=spec.host,
        PGPORT=str(spec.port),
        PGUSER=spec.user,
        PGDATABASE=spec.dbname,
        PGPASSWORD=spec.password.reveal() if spec.password else "",
        PGAPPNAME="handyshop-bench",
    )
    return env


def run_pipe(psql: Path, source: ConnectionSpec, out_sql: str, tenant: ConnectionSpec, in_sql: str) -> float:
    """`psql -c OUT_SQL | psql -c IN_SQL`; returns wall seconds; raises if either side failed."""
    started = time.perf_counter()
    producer = subprocess.Popen(
        [str(psql), "-X", "-v", "ON_ERROR_STOP=1", "-c", out_sql],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=psql_env(source),
    )
    consumer = subprocess.run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", in_sql],
        stdin=producer.stdout,
        capture_output=True,
        env=psql_env(tenant),
    )
    assert producer.stdout is not None
    producer.stdout.close()
    producer_err = producer.stderr.read() if producer.stderr else b""
    producer.wait()
    seconds = time.perf_counter() - started
    if producer.returncode != 0 or consumer.returncode != 0:
        raise RuntimeError(
            f"psql pipe failed: out={producer.returncode} {producer_err.decode()[-500:]!r} "
            f"in={consumer.returncode} {consumer.stderr.decode()[-500:]!r}"
        )
    return seconds


def count_rows(spec: ConnectionSpec, query: sql.Composable | str, params: Sequence[object] = ()) -> int:
    with spec.connect() as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])


def server_version(admin: ConnectionSpec) -> str:
    with admin.connect() as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def header(title: str, admin: ConnectionSpec | None = None) -> None:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    pg = f", PostgreSQL {server_version(admin)} (embedded, durable)" if admin is not None else ""
    print(f"== {title}")
    print(
        f"   {dt.datetime.now().isoformat(timespec='seconds')}, {os.cpu_count()} cores, load avg {load}, "
        f"Python {platform.python_version()}{pg}"
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def best(values: Sequence[float]) -> float:
    return min(values)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 50 samples, p90 is the 45th smallest."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def fmt_rate(rows_per_second: float) -> str:
    return f"{rows_per_second:,.0f} rows/s"


def fmt_times(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def flush() -> None:
    sys.stdout.flush()
