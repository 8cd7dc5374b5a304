"""Checksum verification of one shop's 1,000,000-row `repairs` slice, as a ratio of its copy time.

    .venv/bin/python benchmarks/verification.py [--rows 1000000] [--repeat 3]

Each run, after a CHECKPOINT: `copy_table` of the big shop's repairs into a tenant database built from the
tenant DDL, then at once `verify_tables(snapshot.conn, tenant, catalog, 1, ["repairs"])` on the copy's own
snapshot: row count and `sum(hash_record_extended(ROW(...), 0))` (every repairs column hashes the same in
every database; see tenancy/verification.py) on both sides. The ratio verification / copy is taken per run
(same conditions) and for the best of each.

Also measured, for the picture: each side alone — the pipeline's copy step records the source side, its
blocking parity check computes the tenant side (`check_copied_table`) — and the row-text checksum
(`hashtextextended(ROW(...)::text, 0)`) the library falls back to for tables whose types do not hash alike
in every database (enums, composites, json).

Target: verification <= 0.5x the copy time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - after the path tweak that lets `python benchmarks/x.py` find it
    BIG_SHOP,
    add_server_args,
    bench_server,
    big_shop_source,
    checkpoint,
    create_tenant_database,
    drop_database,
    fmt_times,
    header,
    median,
    verdict,
)

from handyshop_migration.tenancy.engine.copy import SourceSnapshot, copy_table, state_table
from handyshop_migration.tenancy.engine.verification import check_copied_table, table_checksum, verify_tables

TABLE = "repairs"
TARGET = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="repairs of the big shop (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="copy + verification runs (default 3)")
    parser.add_argument("--shops", type=int, default=5, help="shops in the shared database (default 5)")
    add_server_args(parser)
    args = parser.parse_args(argv)

    copy_s: list[float] = []
    verify_s: list[float] = []
    source_alone: list[float] = []
    tenant_alone: list[float] = []
    recheck_s: list[float] = []
    alt_source: list[float] = []
    rows = 0
    with bench_server(args.server_dir) as server:
        admin = server.spec()
        header(f"verification of one shop's {args.rows:,}-row {TABLE} slice vs its copy", admin)
        source, catalog, schema = big_shop_source(admin, args.rows, args.shops)
        table = catalog.table(TABLE)
        alternative = sql.SQL("SELECT count(*), sum(hashtextextended(ROW({})::text, 0)) FROM ONLY {} WHERE {} = {}").format(
            sql.SQL(", ").join(map(sql.Identifier, table.copy_columns)),
            sql.Identifier(table.schema, table.name),
            sql.Identifier(table.tenant_column),
            sql.Literal(BIG_SHOP),
        )
        tenant_name = "bench_verify_tenant"
        try:
            tenant = create_tenant_database(admin, tenant_name, schema, no_autovacuum=(TABLE,))
            for rep in range(args.repeat):
                checkpoint(admin)
                with SourceSnapshot(source) as snapshot, tenant.connect() as conn:
                    started = time.perf_counter()
                    result = copy_table(snapshot, conn, schema, TABLE, BIG_SHOP)
                    copy_s.append(time.perf_counter() - started)
                    rows = result.rows
                    # Straight after the copy, on the copy's snapshot: exactly the copy asset's sequence.
                    started = time.perf_counter()
                    (v,) = verify_tables(snapshot.conn, conn, catalog, BIG_SHOP, [TABLE])
                    verify_s.append(time.perf_counter() - started)
                    assert v.ok and v.tenant.rows == rows, v.describe()
                    # Each side alone (sequential), then the pipeline's parity re-check (tenant side).
                    started = time.perf_counter()
                    table_checksum(snapshot.conn, table, BIG_SHOP)
                    source_alone.append(time.perf_counter() - started)
                    conn.rollback()
                    started = time.perf_counter()
                    table_checksum(conn, table)
                    tenant_alone.append(time.perf_counter() - started)
                    conn.rollback()
                    # For scale, the fallback checksum (each row's text) on the source side alone.
                    started = time.perf_counter()
                    snapshot.conn.execute(alternative)
                    alt_source.append(time.perf_counter() - started)
                    # Record the source side as verify_copied_table does (without scanning both sides again).
                    conn.execute(
                        sql.SQL("UPDATE {} SET source_rows = %s, source_checksum = %s WHERE table_name = %s").format(
                            state_table()
                        ),
                        (v.source.rows, v.source.checksum, TABLE),
                    )
                    conn.commit()
                    started = time.perf_counter()
                    check = check_copied_table(conn, catalog, TABLE, BIG_SHOP)
                    recheck_s.append(time.perf_counter() - started)
                    assert check.ok
                print(
                    f"   run {rep + 1}/{args.repeat}: copy {copy_s[-1]:.2f} s, verification {verify_s[-1]:.2f} s "
                    f"(ratio {verify_s[-1] / copy_s[-1]:.2f}); source side alone {source_alone[-1]:.2f} s, "
                    f"tenant side alone {tenant_alone[-1]:.2f} s, parity re-check {recheck_s[-1]:.2f} s",
                    flush=True,
                )
        finally:
            drop_database(admin, tenant_name)
            if args.server_dir is None:
                drop_database(admin, source.dbname)

    ratios = [v / c for v, c in zip(verify_s, copy_s, strict=True)]
    best_ratio = min(verify_s) / min(copy_s)
    print()
    print(f"{rows:,} rows; {args.repeat} runs")
    print(f"   copy_table                            best {min(copy_s):6.2f} s   runs {fmt_times(copy_s)}")
    print(f"   verify_tables (both sides)            best {min(verify_s):6.2f} s   runs {fmt_times(verify_s)}")
    print(f"     source side alone                   best {min(source_alone):6.2f} s   runs {fmt_times(source_alone)}")
    print(f"     tenant side alone                   best {min(tenant_alone):6.2f} s   runs {fmt_times(tenant_alone)}")
    print(f"   parity re-check (tenant side only)    best {min(recheck_s):6.2f} s   runs {fmt_times(recheck_s)}")
    print(f"   row-text fallback, source side          best {min(alt_source):6.2f} s   runs {fmt_times(alt_source)}"
          f"   = {min(alt_source) / min(source_alone):.1f}x the record hash's cost")
    print()
    print(f"verification / copy: best/best {best_ratio:.2f}, per run median {median(ratios):.2f} "
          f"(runs {fmt_times(ratios)})   target <= {TARGET}  {verdict(best_ratio <= TARGET and median(ratios) <= TARGET)}")
    pipeline = (min(source_alone) + min(recheck_s)) / min(copy_s)
    print(f"in the pipeline each side is checksummed once (source in the copy step, tenant in the parity check): "
          f"{pipeline:.2f}x the copy time in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
