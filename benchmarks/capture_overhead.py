"""What change capture costs the application's writes, measured from outside with pgbench.

The seeded shared database (20 shops, scale 1.0) on an embedded PostgreSQL 18 of its own (durable); the
app's write mix as one pgbench transaction: a repair's status change with its history row, a customer
edit, a new customer (`-M prepared`, 4 clients). Two kinds of writers: the 19 shops not being migrated,
and shop 1, the captured one. Interleaved rounds in one run, each measuring both writers with capture off
(no triggers: `capture.disable`, the way back from phase 3) and on (`capture.enable(shop 1)`), in
alternating order; each figure is the median over the rounds of (tps on / tps off), and the pooled ratio
(all rounds' transactions) is printed beside it. Targets: the other shops >= 0.95, the captured shop >= 0.8.

    .venv/bin/python benchmarks/capture_overhead.py [--rounds 12] [--seconds 3] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - after the path tweak that lets `python benchmarks/x.py` find it
    add_server_args,
    bench_server,
    checkpoint,
    flush,
    header,
    median,
    psql_env,
    seeded_source,
    source_catalog,
    verdict,
)

from handyshop_migration.tenancy.dsn import ConnectionSpec  # noqa: E402
from handyshop_migration.tenancy.engine import capture  # noqa: E402
from handyshop_migration.tenancy.engine.catalog import Catalog  # noqa: E402
from handyshop_migration.tenancy.engine.pgtools import find_pgbench  # noqa: E402

CAPTURED = 1
OTHERS = (2, 20)  # shops 2..20
TARGET_OTHERS = 0.95
TARGET_CAPTURED = 0.8

# The keys each writer picks from: (group, kind, n) -> a row id of its shops. Outside the tenant tables.
KEYS_DDL = """
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE TABLE bench.keys (grp int, kind "char", n int, id int, shop int, PRIMARY KEY (grp, kind, n));
INSERT INTO bench.keys SELECT 1, 'r', row_number() OVER (ORDER BY id), id, shop_id FROM repairs WHERE shop_id = {cap};
INSERT INTO bench.keys SELECT 2, 'r', row_number() OVER (ORDER BY id), id, shop_id FROM repairs
 WHERE shop_id BETWEEN {lo} AND {hi};
INSERT INTO bench.keys SELECT 1, 'c', row_number() OVER (ORDER BY id), id, shop_id FROM customers WHERE shop_id = {cap};
INSERT INTO bench.keys SELECT 2, 'c', row_number() OVER (ORDER BY id), id, shop_id FROM customers
 WHERE shop_id BETWEEN {lo} AND {hi};
"""

# One transaction of the app's write mix (pgbench variables: grp, nrep, ncust).
SCRIPT = r"""
\set r random(1, :nrep)
\set c random(1, :ncust)
BEGIN;
UPDATE repairs SET status = CASE status WHEN 'in Arbeit' THEN 'fertig' ELSE 'in Arbeit' END,
       status_updated_at = now(), updated_at = now()
 WHERE id = (SELECT id FROM bench.keys WHERE grp = :grp AND kind = 'r' AND n = :r);
INSERT INTO repair_status_history (repair_id, old_status, new_status, changed_by, shop_id)
SELECT id, 'eingegangen', 'in Arbeit', 'pgbench', shop FROM bench.keys WHERE grp = :grp AND kind = 'r' AND n = :r;
UPDATE customers SET phone = '0' || :c, city = 'Linz'
 WHERE id = (SELECT id FROM bench.keys WHERE grp = :grp AND kind = 'c' AND n = :c);
INSERT INTO customers (first_name, last_name, phone, shop_id)
SELECT 'Bench', 'Kundin', '1', shop FROM bench.keys WHERE grp = :grp AND kind = 'c' AND n = :c;
END;
"""

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(postmaster: int) -> float:
    """CPU seconds the server has used: the postmaster, its live children (backends, checkpointer, WAL
    writer, autovacuum) and its reaped children (the backends of finished pgbench runs), from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile: its time is in the postmaster's cutime now
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def prepare_keys(source: ConnectionSpec) -> dict[int, tuple[int, int]]:
    with source.connect() as conn:
        conn.execute(sql.SQL(KEYS_DDL).format(cap=CAPTURED, lo=OTHERS[0], hi=OTHERS[1]))
        counts = {
            (int(g), str(k)): int(n)
            for g, k, n in conn.execute("SELECT grp, kind, count(*) FROM bench.keys GROUP BY 1, 2").fetchall()
        }
        conn.commit()
    return {grp: (counts[(grp, "r")], counts[(grp, "c")]) for grp in (1, 2)}


def pgbench(binary: Path, source: ConnectionSpec, script: Path, grp: int, sizes: tuple[int, int], seconds: int,
            clients: int, postmaster: int) -> tuple[float, float]:
    """(tps, server CPU ms per transaction) of one pgbench run (a separate process: measured from outside)."""
    cpu_before = server_cpu(postmaster)
    args = [
        str(binary), "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
        "-f", str(script), "-D", f"grp={grp}", "-D", f"nrep={sizes[0]}", "-D", f"ncust={sizes[1]}",
    ]
    result = subprocess.run(args, capture_output=True, text=True, env=psql_env(source), cwd="/")
    time.sleep(0.2)  # the postmaster reaps the run's backends: their CPU moves into its cutime
    cpu = server_cpu(postmaster) - cpu_before
    tps, failed, done = _TPS.search(result.stdout), _FAILED.search(result.stdout), _DONE.search(result.stdout)
    if result.returncode != 0 or tps is None or done is None or (failed and int(failed.group(1))):
        raise RuntimeError(f"pgbench failed (exit {result.returncode}): {result.stdout[-800:]} {result.stderr[-800:]}")
    return float(tps.group(1)), cpu * 1000 / max(1, int(done.group(1)))


def set_capture(source: ConnectionSpec, catalog: Catalog, on: bool) -> None:
    with source.connect() as conn:
        if on:
            capture.enable(conn, catalog, CAPTURED)
        else:
            capture.disable(conn, CAPTURED)
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'handyshop\\_capture%%' AND NOT tgisinternal"
        ).fetchone()
        conn.rollback()
    expected = 4 * len(catalog.tables) if on else 0
    if triggers != (expected,):
        raise RuntimeError(f"capture {'on' if on else 'off'}: {triggers} capture triggers, expected {expected}")


def logged(source: ConnectionSpec) -> tuple[int, int]:
    """(entries of the captured shop, entries of any other shop) in the change log."""
    with source.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE shop_id = %s), count(*) FILTER (WHERE shop_id <> %s) "
            "FROM handyshop_capture.changes",
            (CAPTURED, CAPTURED),
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=int, default=3, help="length of each pgbench run")
    parser.add_argument("--clients", type=int, default=4)
    add_server_args(parser)
    args = parser.parse_args()

    with bench_server(args.server_dir, prefix="handyshop-bench-capture-") as server:
        admin = server.spec()
        header("capture overhead: the app's write mix with pgbench, capture off vs on (shop 1 captured)", admin)
        source, seeded = seeded_source(admin, "bench_capture_src", shops=20, scale=1.0, seed=42)
        print(f"   seed: {'reused' if seeded is None else f'{seeded:.1f} s'} (20 shops, scale 1.0)")
        catalog = source_catalog(source)
        sizes = prepare_keys(source)
        binary = find_pgbench()
        print(f"   pgbench: {binary}; {args.clients} clients, -M prepared, {args.seconds} s per run, {args.rounds} rounds")
        print(f"   keys: shop {CAPTURED}: {sizes[1][0]} repairs, {sizes[1][1]} customers; shops {OTHERS[0]}-{OTHERS[1]}: "
              f"{sizes[2][0]} repairs, {sizes[2][1]} customers")
        flush()
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        tps: dict[tuple[str, bool], list[float]] = {(w, on): [] for w in ("others", "captured") for on in (False, True)}
        cpu: dict[tuple[str, bool], list[float]] = {key: [] for key in tps}
        with tempfile.TemporaryDirectory(prefix="handyshop-bench-capture-") as tmp:
            script = Path(tmp) / "write_mix.sql"
            script.write_text(SCRIPT, encoding="utf-8")
            set_capture(source, catalog, False)
            # warm-up: caches, prepared plans, the first autovacuum of the fresh tables
            for grp in (2, 1):
                pgbench(binary, source, script, grp, sizes[grp], 2, args.clients, postmaster)
            for r in range(args.rounds):
                line, ratio = [], {}
                writers = (("others", 2), ("captured", 1)) if r % 2 == 0 else (("captured", 1), ("others", 2))
                for i, (writer, grp) in enumerate(writers):
                    # each writer's off and on runs back to back (ABBA across rounds): the machine's drift cancels
                    for on in ((False, True) if (r + i) % 2 == 0 else (True, False)):
                        set_capture(source, catalog, on)
                        checkpoint(admin)
                        value, ms = pgbench(binary, source, script, grp, sizes[grp], args.seconds, args.clients, postmaster)
                        tps[(writer, on)].append(value)
                        cpu[(writer, on)].append(ms)
                        line.append(f"{writer} {'on' if on else 'off'} {value:,.0f} ({ms:.3f} ms)")
                        if on:
                            mine, others = logged(source)
                            if (grp == 1 and mine == 0) or others != 0:
                                raise RuntimeError(f"capture logged {mine} entries of shop {CAPTURED}, {others} of others")
                    ratio[writer] = tps[(writer, True)][-1] / tps[(writer, False)][-1]
                print(f"   round {r + 1}: tps (server CPU per transaction) {', '.join(line)} -> others "
                      f"{ratio['others']:.3f}, captured {ratio['captured']:.3f}")
                flush()
            set_capture(source, catalog, False)

    def ratios(writer: str) -> tuple[float, float, float]:
        per_round = [on / off for on, off in zip(tps[(writer, True)], tps[(writer, False)], strict=True)]
        # the same as a throughput ratio: transactions per CPU second of the server, on / off
        by_cpu = median(cpu[(writer, False)]) / median(cpu[(writer, True)])
        return median(per_round), sum(tps[(writer, True)]) / sum(tps[(writer, False)]), by_cpu

    others, others_pooled, others_cpu = ratios("others")
    captured, captured_pooled, captured_cpu = ratios("captured")
    print(f"== other shops (not captured): tps with capture on / off = {others:.3f} (median of {args.rounds} rounds; "
          f"pooled {others_pooled:.3f}; by server CPU per transaction {others_cpu:.3f}); target >= {TARGET_OTHERS}")
    print(f"== captured shop:              tps with capture on / off = {captured:.3f} (median; pooled "
          f"{captured_pooled:.3f}; by server CPU per transaction {captured_cpu:.3f}); target >= {TARGET_CAPTURED}")
    ok = others >= TARGET_OTHERS and captured >= TARGET_CAPTURED
    print(f"== verdict: {verdict(ok)} (others {verdict(others >= TARGET_OTHERS)}, captured "
          f"{verdict(captured >= TARGET_CAPTURED)})")


if __name__ == "__main__":
    main()
