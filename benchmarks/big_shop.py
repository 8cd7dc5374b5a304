"""One big shop end to end, from outside, against the hand-made floor on the same server in the same run.

    .venv/bin/python benchmarks/big_shop.py [--rows 1000000] [--shops 20] [--repeat 2]

The shared database holds `--shops` shops, shop 1 with `--rows` repairs (and a quarter as many customers, as
`seed_database(big_shop_rows=...)` makes them). Alternating, `--repeat` times each:

- **migration**: `handyshop-migration inspect --source-url URL --output catalog.json`, then
  `HANDYSHOP_CATALOG=catalog.json handyshop-migration migrate --shops 1` on a fresh Dagster instance (Postgres
  storage, the packaged dagster.yaml, its tables created beforehand): phase 0 (verified pg_dump backup, catalog, validation), provisioning,
  capture, the copy of every table from one snapshot, the parity gates, through Dagster. Timed as a whole
  from outside; the parts from its output (phase 0, the shop's run) and the rest (start-up, inspect).
  Between repeats the shop goes back (`rollback --phase 1`), untimed.
- **floor**: what a careful person would do by hand: `pg_dump -Fc` of the source, then for every tenant table
  `psql "\\copy (SELECT <tenant columns> ... WHERE shop_id = 1) TO STDOUT (FORMAT binary)" | psql "\\copy ...
  FROM STDIN (FORMAT binary)"` into a bare table (created from the tenant DDL without keys, checks, indexes or
  foreign keys), then the tables' primary keys. Sum of the three.

Prints the best of each and the ratio migration / floor; target <= 1.5.
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

from _common import (  # noqa: E402 - after the path tweak
    BIG_SHOP,
    add_server_args,
    bench_server,
    checkpoint,
    create_database,
    drop_database,
    header,
    psql_env,
    run_pipe,
    seeded_source,
    source_catalog,
    verdict,
)

TARGET = 1.5


def floor(server: object, source: object, schema: object, workdir: Path, i: int) -> dict[str, float]:
    admin = server.spec()  # type: ignore[attr-defined]
    pg_dump, psql = server.tool("pg_dump"), server.tool("psql")  # type: ignore[attr-defined]
    started = time.perf_counter()
    subprocess.run([str(pg_dump), "-Fc", "-f", str(workdir / f"floor-{i}.dump")], env=psql_env(source), check=True)
    dump = time.perf_counter() - started
    target = create_database(admin, f"bench_big_floor_{i}")
    with target.connect() as conn:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(schema.tables[0].table.schema)))
            for statement in schema.prelude:
                conn.execute(statement.encode())
            for t in schema.tables:
                conn.execute(t.create.encode())
    pipes = 0.0
    for t in schema.tables:
        cols = sql.SQL(", ").join(map(sql.Identifier, t.table.copy_columns))
        table = sql.Identifier(t.table.schema, t.table.name)
        out_sql = sql.SQL("\\copy (SELECT {} FROM {} WHERE {} = {}) TO STDOUT (FORMAT binary)").format(
            cols, table, sql.Identifier(t.table.tenant_column), sql.Literal(BIG_SHOP)).as_string(None)
        in_sql = sql.SQL("\\copy {} ({}) FROM STDIN (FORMAT binary)").format(table, cols).as_string(None)
        pipes += run_pipe(psql, source, out_sql, target, in_sql)
    started = time.perf_counter()
    with target.connect() as conn:
        for t in schema.tables:
            for key in t.keys:
                if "PRIMARY KEY" in key.create:
                    conn.execute(key.create.encode())
        conn.commit()
    keys = time.perf_counter() - started
    drop_database(admin, target.dbname)
    (workdir / f"floor-{i}.dump").unlink(missing_ok=True)
    return {"pg_dump": dump, "pipes": pipes, "primary_keys": keys, "total": dump + pipes + keys}


def migration(env: dict[str, str], source_url: str, workdir: Path, i: int) -> dict[str, float]:
    from handyshop_migration.devtools.local import ensure_storage, packaged_dagster_yaml, storage_url
    from handyshop_migration.tenancy.dsn import ConnectionSpec

    admin = ConnectionSpec.from_url(env["BENCH_ADMIN_URL"])
    storage = ensure_storage(admin, f"bench-big-storage-{i}-0123456789abcdef", database=f"bench_big_dagster_{i}",
                             role=f"bench_big_storage_{i}")
    home = workdir / f"home-{i}"
    home.mkdir()
    (home / "dagster.yaml").write_text(packaged_dagster_yaml(), encoding="utf-8")
    catalog = workdir / f"catalog-{i}.json"
    run_env = {**{k: v for k, v in env.items() if k != "BENCH_ADMIN_URL"}, "DAGSTER_HOME": str(home),
               "DAGSTER_PG_URL": storage_url(storage), "HANDYSHOP_CATALOG": str(catalog),
               "HANDYSHOP_BACKUP_DIR": str(workdir / f"backups-{i}")}
    cli = str(Path(sys.executable).parent / "handyshop-migration")
    # A deployment's Dagster storage exists before its first migration: its tables are created untimed.
    subprocess.run([sys.executable, "-c", "import dagster; dagster.DagsterInstance.get().dispose()"], env=run_env,
                   check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([cli, "inspect", "--source-url", source_url, "--output", str(catalog)], env=run_env,
                   check=True, capture_output=True)
    inspected = time.perf_counter() - started
    result = subprocess.run([cli, "migrate", "--shops", str(BIG_SHOP)], env=run_env, capture_output=True, text=True)
    total = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    phase0 = float(re.search(r"phase 0 passed in ([\d.]+)s", result.stdout).group(1))  # type: ignore[union-attr]
    shop = float(re.search(rf"shop {BIG_SHOP}: .*\(([\d.]+)s\)", result.stdout).group(1))  # type: ignore[union-attr]
    database = env["HANDYSHOP_TENANT_DATABASE"].format(id=BIG_SHOP)
    back = subprocess.run([cli, "rollback", "--phase", "1", "--shop", str(BIG_SHOP), "--confirm", database],
                          env=run_env, capture_output=True, text=True)
    if back.returncode != 0:
        raise RuntimeError(f"rollback failed: {back.stdout[-2000:]} {back.stderr[-2000:]}")
    return {"inspect": inspected, "phase0": phase0, "shop_run": shop,
            "rest": total - inspected - phase0 - shop, "total": total}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="repairs of the big shop (default 1,000,000)")
    parser.add_argument("--shops", type=int, default=20, help="shops in the shared database (default 20)")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, alternating (default 2)")
    add_server_args(parser)
    args = parser.parse_args(argv)

    from handyshop_migration.tenancy.application.encryption import generate_key
    from handyshop_migration.tenancy.engine.tenant_schema import render

    with bench_server(args.server_dir, max_connections=300) as server, \
            tempfile.TemporaryDirectory(prefix="handyshop-big-") as tmp:
        admin = server.spec()
        header(f"big shop end to end: shop {BIG_SHOP} with {args.rows:,} repairs, {args.shops} shops", admin)
        source, seeded = seeded_source(admin, f"bench_big_src_{args.rows}", shops=args.shops, scale=1.0, seed=42,
                                       big_shop_rows=args.rows)
        print(f"   seed: {'reused' if seeded is None else f'{seeded:.1f} s'}")
        with source.connect() as conn:
            counts = {t: conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE shop_id = %s").format(
                sql.Identifier(t)), (BIG_SHOP,)).fetchone()[0] for t in ("repairs", "customers")}  # type: ignore[index]
        print(f"   shop {BIG_SHOP}: {counts['repairs']:,} repairs, {counts['customers']:,} customers")
        schema = render(source_catalog(source))
        workdir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
        env.update({"HANDYSHOP_SOURCE_URL": source.url().reveal(), "TENANT_ENCRYPTION_KEY": generate_key(),
                    "HANDYSHOP_TENANT_DATABASE": "bench_big_shop_{id}_db", "BENCH_ADMIN_URL": admin.url().reveal(),
                    "HANDYSHOP_ARCHIVE_DIR": str(workdir / "archives")})
        floors, migrations = [], []
        for i in range(args.repeat):
            for name in (("floor", "migration") if i % 2 == 0 else ("migration", "floor")):
                checkpoint(admin)
                if name == "floor":
                    floors.append(floor(server, source, schema, workdir, i))
                    f = floors[-1]
                    print(f"   [{i}] floor {f['total']:.2f} s (pg_dump {f['pg_dump']:.2f} + pipes {f['pipes']:.2f} "
                          f"+ primary keys {f['primary_keys']:.2f}), load {os.getloadavg()[0]:.1f}", flush=True)
                else:
                    migrations.append(migration(env, source.url().reveal(), workdir, i))
                    m = migrations[-1]
                    print(f"   [{i}] migration {m['total']:.2f} s (inspect {m['inspect']:.2f} + phase 0 {m['phase0']:.2f} "
                          f"+ shop's run {m['shop_run']:.2f} + start-up and the rest {m['rest']:.2f}), "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
        f_best = min(floors, key=lambda x: x["total"])
        m_best = min(migrations, key=lambda x: x["total"])
        ratio = m_best["total"] / f_best["total"]
        print()
        print(f"   floor, best: {f_best['total']:.2f} s   migration, best: {m_best['total']:.2f} s")
        print(f"   ratio migration / floor: {ratio:.2f}   target <= {TARGET}  {verdict(ratio <= TARGET)}")
        pairs = [m["total"] / f["total"] for m, f in zip(migrations, floors, strict=False)]
        print(f"   ratio per pair (same repeat): {', '.join(f'{p:.2f}' for p in pairs)}")
        return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
