"""Copy throughput of one big shop's `repairs` slice: the library against a psql pipe and the old script.

    .venv/bin/python benchmarks/copy_throughput.py [--rows 1000000] [--repeat 3] [--script-sample 20000]

Seeds a shared database whose shop 1 has `--rows` repairs, builds tenant databases from the tenant DDL, then,
best of `--repeat`, each run after a CHECKPOINT and in rotating order (so drift hits every method alike):

- library: `copy_table(snapshot, tenant, schema, "repairs", 1)` — the phase-2 code path, timed as a whole
  (truncate, drop keys/indexes, COPY FREEZE, rebuild keys/indexes, sequences, copy state);
- pipe, keyed: `psql "\\copy (SELECT <tenant columns> ...) TO STDOUT (FORMAT binary)" | psql "\\copy repairs
  (<cols>) FROM STDIN (FORMAT binary)"` into the table with its primary key, unique constraint and indexes
  as the DDL creates them (the same end state as the library);
- pipe, bare: the same pipe into the table without any key or index (data movement only), and, timed
  apart, the build of those keys and indexes afterwards.

Foreign keys touching `repairs` are dropped in the pipes' database (the tenant's parents are empty there;
the library drops them for its load too).

Then the migration script's method (../shared/reference/migration-script.md) on a `--script-sample` rows
sample of the same slice: `SELECT * ... WHERE shop_id = 1 LIMIT 1000 OFFSET n` without ORDER BY, one
parameterised `INSERT ... ON CONFLICT DO NOTHING` per row, autocommit, through psycopg, into a tenant table
with its keys, indexes and foreign keys in place (parents copied first, as the script does). It reports
how many distinct rows it really copied.

Targets: library >= 0.9x the pipe's throughput; library >= 100x the script's method.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from psycopg import sql
from psycopg.types.json import Jsonb

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - after the path tweak that lets `python benchmarks/x.py` find it
    BIG_SHOP,
    add_server_args,
    bench_server,
    big_shop_source,
    checkpoint,
    count_rows,
    create_tenant_database,
    drop_database,
    fmt_rate,
    fmt_times,
    header,
    median,
    run_pipe,
    verdict,
)

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.copy import SourceSnapshot, copy_table
from handyshop_migration.tenancy.engine.tenant_schema import TenantSchema

TABLE = "repairs"
LIBRARY_TARGET = 0.9
SCRIPT_TARGET = 100.0
SCRIPT_BATCH = 1_000


def cpu_seconds(who: int) -> float:
    """User + system CPU of this process (RUSAGE_SELF) or of its waited-for children (RUSAGE_CHILDREN)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def library_copy(source: ConnectionSpec, tenant: ConnectionSpec, schema: TenantSchema) -> tuple[float, int, int, float]:
    """One `copy_table` of the big shop's repairs; (seconds, rows, bytes, client CPU seconds)."""
    with SourceSnapshot(source) as snapshot, tenant.connect() as conn:
        cpu = cpu_seconds(resource.RUSAGE_SELF)
        started = time.perf_counter()
        result = copy_table(snapshot, conn, schema, TABLE, BIG_SHOP)
        seconds = time.perf_counter() - started
        cpu = cpu_seconds(resource.RUSAGE_SELF) - cpu
    return seconds, result.rows, result.bytes, cpu


def set_keys(tenant: ConnectionSpec, schema: TenantSchema, present: bool) -> float:
    """Create (or drop) the table's keys and indexes as the DDL has them; returns the seconds it took."""
    tt = schema.table(TABLE)
    with tenant.connect() as conn:
        existing = {
            r[0]
            for r in conn.execute(
                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass UNION "
                "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
                (TABLE, TABLE),
            ).fetchall()
        }
        started = time.perf_counter()
        with conn.transaction():
            if present:
                for named in (*tt.keys, *tt.indexes):
                    if named.name not in existing:
                        conn.execute(named.create.encode())
            else:
                for named in (*tt.indexes, *tt.keys):
                    if named.name in existing:
                        conn.execute(named.drop.encode())
        return time.perf_counter() - started


def truncate(tenant: ConnectionSpec) -> None:
    with tenant.connect() as conn:
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(TABLE)))
        conn.commit()


def drop_foreign_keys(tenant: ConnectionSpec, schema: TenantSchema) -> None:
    with tenant.connect() as conn:
        for fk in schema.foreign_keys_touching(TABLE):
            conn.execute(fk.drop.encode())
        conn.commit()


def pipe_sql(schema: TenantSchema) -> tuple[str, str]:
    """The two psql meta-commands (they take no parameters: identifiers quoted by psycopg, the id a literal)."""
    t = schema.table(TABLE).table
    cols = sql.SQL(", ").join(map(sql.Identifier, t.copy_columns))
    table = sql.Identifier(t.schema, t.name)
    out_sql = sql.SQL("\\copy (SELECT {} FROM {} WHERE {} = {}) TO STDOUT (FORMAT binary)").format(
        cols, table, sql.Identifier(t.tenant_column), sql.Literal(BIG_SHOP)
    )
    in_sql = sql.SQL("\\copy {} ({}) FROM STDIN (FORMAT binary)").format(table, cols)
    return out_sql.as_string(None), in_sql.as_string(None)


def prepare_script_tenant(source: ConnectionSpec, tenant: ConnectionSpec, schema: TenantSchema) -> None:
    """The script's tenant: full DDL, the parents of `repairs` copied first, repairs' own FKs in place."""
    tt = schema.table(TABLE)
    with SourceSnapshot(source) as snapshot, tenant.connect() as conn:
        for parent in tt.table.parents:
            copy_table(snapshot, conn, schema, parent, BIG_SHOP)
        # copy_table left these pending (repairs is from no snapshot yet); the script's tenant has them.
        present = {r[0] for r in conn.execute("SELECT conname FROM pg_constraint WHERE contype = 'f'").fetchall()}
        for fk in tt.foreign_keys:
            if fk.name not in present:
                conn.execute(fk.create.encode())
        conn.commit()


def script_method(source: ConnectionSpec, tenant: ConnectionSpec, schema: TenantSchema, sample: int) -> tuple[float, int, int]:
    """The migration script's copy loop, capped at `sample` rows; (seconds, rows fetched, rows inserted)."""
    t = schema.table(TABLE).table
    fetched = inserted = 0
    # Autocommit on both sides, as the script's pools do: each SELECT and each INSERT its own transaction.
    # prepare_threshold=None: the script's driver sends each query unprepared (unnamed statement).
    with source.connect(autocommit=True, prepare_threshold=None) as src, tenant.connect(
        autocommit=True, prepare_threshold=None
    ) as dst:
        started = time.perf_counter()
        count_row = src.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(sql.Identifier(TABLE), sql.Identifier(t.tenant_column)),
            (BIG_SHOP,),
        ).fetchone()
        assert count_row is not None
        row_count = min(int(count_row[0]), sample)
        offset = 0
        while offset < row_count:
            cur = src.execute(
                sql.SQL("SELECT * FROM {} WHERE {} = %s LIMIT {} OFFSET {}").format(  # noqa: S608 - the script's query, verbatim
                    sql.Identifier(TABLE), sql.Identifier(t.tenant_column), sql.Literal(SCRIPT_BATCH), sql.Literal(offset)
                ),
                (BIG_SHOP,),
            )
            names = [d.name for d in cur.description or ()]
            json_cols = {i for i, d in enumerate(cur.description or ()) if d.type_code in (114, 3802)}  # json, jsonb
            rows = cur.fetchall()
            if not rows:
                break
            keep = [i for i, n in enumerate(names) if n != t.tenant_column]
            insert = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT DO NOTHING").format(
                sql.Identifier(TABLE),
                sql.SQL(", ").join(sql.Identifier(names[i]) for i in keep),
                sql.SQL(", ").join(sql.Placeholder() for _ in keep),
            )
            for row in rows:
                values = [Jsonb(row[i]) if i in json_cols and row[i] is not None else row[i] for i in keep]
                inserted += dst.execute(insert, values).rowcount
            fetched += len(rows)
            offset += SCRIPT_BATCH
        seconds = time.perf_counter() - started
    return seconds, fetched, inserted


def paging_distinct(source: ConnectionSpec, shop_column: str) -> tuple[int, int, float]:
    """The script's paging alone over the whole slice (its SELECTs, no inserts); (rows, distinct ids, seconds).

    Without ORDER BY, each page is the n-th thousand of whatever order that scan returns; synchronized
    sequential scans start each scan where the last one stopped, so pages overlap and rows are never read.
    """
    ids: set[int] = set()
    fetched = 0
    with source.connect(autocommit=True, prepare_threshold=None) as src:
        started = time.perf_counter()
        row = src.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(sql.Identifier(TABLE), sql.Identifier(shop_column)),
            (BIG_SHOP,),
        ).fetchone()
        assert row is not None
        for offset in range(0, int(row[0]), SCRIPT_BATCH):
            cur = src.execute(
                sql.SQL("SELECT * FROM {} WHERE {} = %s LIMIT {} OFFSET {}").format(  # noqa: S608 - the script's query
                    sql.Identifier(TABLE), sql.Identifier(shop_column), sql.Literal(SCRIPT_BATCH), sql.Literal(offset)
                ),
                (BIG_SHOP,),
            )
            page = cur.fetchall()
            fetched += len(page)
            ids.update(r[0] for r in page)  # id is the first column of repairs
        return fetched, len(ids), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="repairs of the big shop (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per method, best taken (default 3)")
    parser.add_argument("--script-sample", type=int, default=20_000, help="rows for the script's method (default 20,000)")
    parser.add_argument("--shops", type=int, default=5, help="shops in the shared database (default 5)")
    parser.add_argument(
        "--paging-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run the script's paging SELECTs over the whole slice and count the distinct rows they return "
        "(about a minute for 1,000,000 rows; default on)",
    )
    add_server_args(parser)
    args = parser.parse_args(argv)

    with bench_server(args.server_dir) as server:
        admin = server.spec()
        header(f"copy throughput: one shop's {args.rows:,}-row {TABLE} slice", admin)
        source, catalog, schema = big_shop_source(admin, args.rows, args.shops)
        expected = count_rows(source, sql.SQL("SELECT count(*) FROM {} WHERE shop_id = %s").format(sql.Identifier(TABLE)), (BIG_SHOP,))
        tenants = {"lib": "bench_copy_lib", "pipe": "bench_copy_pipe", "script": "bench_copy_script"}
        try:
            lib = create_tenant_database(admin, tenants["lib"], schema, no_autovacuum=(TABLE,))
            pipe = create_tenant_database(admin, tenants["pipe"], schema, no_autovacuum=(TABLE,))
            drop_foreign_keys(pipe, schema)
            out_sql, in_sql = pipe_sql(schema)
            psql = server.tool("psql")
            count_tenant = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(TABLE))

            times: dict[str, list[float]] = {"library": [], "pipe_keyed": [], "pipe_bare": [], "build_after_bare": []}
            # Client-side CPU per run: this process for the library, the two psql processes for the pipes.
            # CPU seconds barely move with the machine's load, unlike wall time: they show the client's share.
            client_cpu: dict[str, list[float]] = {"library": [], "pipe_keyed": [], "pipe_bare": []}
            copied_bytes = 0

            def run_library() -> None:
                nonlocal copied_bytes
                checkpoint(admin)
                seconds, rows, copied_bytes, cpu = library_copy(source, lib, schema)
                assert rows == expected, (rows, expected)
                times["library"].append(seconds)
                client_cpu["library"].append(cpu)

            def piped(name: str) -> None:
                cpu = cpu_seconds(resource.RUSAGE_CHILDREN)
                times[name].append(run_pipe(psql, source, out_sql, pipe, in_sql))
                client_cpu[name].append(cpu_seconds(resource.RUSAGE_CHILDREN) - cpu)
                assert count_rows(pipe, count_tenant) == expected

            def run_pipe_keyed() -> None:
                set_keys(pipe, schema, present=True)
                truncate(pipe)
                checkpoint(admin)
                piped("pipe_keyed")

            def run_pipe_bare() -> None:
                set_keys(pipe, schema, present=False)
                truncate(pipe)
                checkpoint(admin)
                piped("pipe_bare")
                checkpoint(admin)
                times["build_after_bare"].append(set_keys(pipe, schema, present=True))

            methods = [run_library, run_pipe_keyed, run_pipe_bare]
            for rep in range(args.repeat):
                for method in methods[rep % 3 :] + methods[: rep % 3]:  # rotate: no method always first
                    method()
                print(
                    f"   run {rep + 1}/{args.repeat}: library {times['library'][-1]:.2f} s, pipe keyed "
                    f"{times['pipe_keyed'][-1]:.2f} s, pipe bare {times['pipe_bare'][-1]:.2f} s "
                    f"(+ build {times['build_after_bare'][-1]:.2f} s)",
                    flush=True,
                )

            script_result: tuple[float, int, int] | None = None
            if args.script_sample > 0:
                script_tenant = create_tenant_database(admin, tenants["script"], schema, no_autovacuum=(TABLE,))
                prepare_script_tenant(source, script_tenant, schema)
                checkpoint(admin)
                script_result = script_method(source, script_tenant, schema, args.script_sample)
                distinct = count_rows(script_tenant, count_tenant)
                assert distinct == script_result[2]
            paging: tuple[int, int, float] | None = None
            if args.paging_check:
                paging = paging_distinct(source, catalog.table(TABLE).tenant_column)
        finally:
            for name in tenants.values():
                drop_database(admin, name)
            if args.server_dir is None:
                drop_database(admin, source.dbname)

    lib_t = min(times["library"])
    keyed_t = min(times["pipe_keyed"])
    bare_t = min(times["pipe_bare"])
    bare_build_t = min(a + b for a, b in zip(times["pipe_bare"], times["build_after_bare"], strict=True))
    rate = {
        "library": expected / lib_t,
        "pipe_keyed": expected / keyed_t,
        "pipe_bare": expected / bare_t,
        "pipe_bare_build": expected / bare_build_t,
    }
    print()
    print(f"rows copied per run: {expected:,} ({copied_bytes / 1e6:,.0f} MB as COPY binary); best of {args.repeat}")
    print(f"{'method':<44}{'best s':>8}{'rows/s':>14}   runs (s)")
    print(f"{'library copy_table (drop/rebuild keys, FREEZE)':<44}{lib_t:>8.2f}{rate['library']:>14,.0f}   {fmt_times(times['library'])}")
    print(f"{'psql pipe into keyed+indexed table':<44}{keyed_t:>8.2f}{rate['pipe_keyed']:>14,.0f}   {fmt_times(times['pipe_keyed'])}")
    print(f"{'psql pipe into bare table':<44}{bare_t:>8.2f}{rate['pipe_bare']:>14,.0f}   {fmt_times(times['pipe_bare'])}")
    print(f"{'  ... then build keys + indexes':<44}{min(times['build_after_bare']):>8.2f}{'':>14}   {fmt_times(times['build_after_bare'])}")
    print(f"{'psql pipe bare + build (best sum)':<44}{bare_build_t:>8.2f}{rate['pipe_bare_build']:>14,.0f}")
    print(
        f"client CPU per run (median): library process {median(client_cpu['library']):.2f} s, "
        f"the two psql processes {median(client_cpu['pipe_bare']):.2f} s (bare) / {median(client_cpu['pipe_keyed']):.2f} s (keyed)"
    )
    if script_result is not None:
        s_t, fetched, distinct = script_result
        rate["script"] = fetched / s_t
        print(f"{'script method (OFFSET pages, INSERT per row)':<44}{s_t:>8.2f}{rate['script']:>14,.0f}   1 run, {fetched:,} rows fetched")
        print(
            f"   the script copied {distinct:,} distinct rows of the {fetched:,} it fetched: "
            + (
                f"{fetched - distinct:,} ({(fetched - distinct) / fetched:.1%}) were duplicates swallowed by ON CONFLICT "
                "DO NOTHING, and as many source rows were never read"
                if distinct < fetched
                else "no duplicate within the sample (OFFSET paging's losses show over the whole slice)"
            )
        )
    if paging is not None:
        p_rows, p_distinct, p_seconds = paging
        print(
            f"   the script's paging over the whole slice (SELECTs only, {p_seconds:.0f} s): {p_rows:,} rows returned, "
            f"{p_distinct:,} distinct of {expected:,}: {expected - p_distinct:,} rows ({(expected - p_distinct) / expected:.1%}) "
            "would never reach the tenant, while the script logs them all as copied (it counts rows fetched)"
            if p_distinct < expected
            else f"   the script's paging over the whole slice (SELECTs only, {p_seconds:.0f} s): all {expected:,} rows returned"
        )
    print()
    r_keyed = rate["library"] / rate["pipe_keyed"]
    r_bare = rate["library"] / rate["pipe_bare"]
    r_bare_build = rate["library"] / rate["pipe_bare_build"]
    print("ratios (throughput, library / other):")
    print(f"   vs pipe into the DDL's keyed table (same end state): {r_keyed:.2f}x   target >= {LIBRARY_TARGET}x  {verdict(r_keyed >= LIBRARY_TARGET)}")
    print(f"   vs pipe into a bare table, then build keys:          {r_bare_build:.2f}x   (same end state, psql doing what the library does)")
    print(f"   vs pipe into a bare table (no keys at the end):      {r_bare:.2f}x   target >= {LIBRARY_TARGET}x  {verdict(r_bare >= LIBRARY_TARGET)}")
    if script_result is not None:
        r_script = rate["library"] / rate["script"]
        print(f"   vs the script's method:                              {r_script:,.0f}x   target >= {SCRIPT_TARGET:.0f}x  {verdict(r_script >= SCRIPT_TARGET)}")
    print(f"   ({fmt_rate(rate['library'])} library)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
