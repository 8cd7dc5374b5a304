"""How long a shop's writes wait at its cutover, measured as the application feels it, for a small and a
big shop side by side.

A client process of its own (not the migration's) updates one of the shop's customers every 20 ms, asking
`handyshop_migration.route()` before each write, as an application does: a write refused with HS001 is
retried after asking again, a write held by the fence simply takes longer. The window of one cutover is
from the moment the first write that could not complete normally started (held, refused or retried) to
the moment the first write the tenant accepted completed. Each shop is cut over and rolled back `--rounds`
times; the p50/p95 of its windows are printed beside each other for a shop of ~2,000 rows and one with
`--big-rows` repairs. Target: p95 <= 1 s for both (the fence drains and verifies only what changed since the
full verification outside it, so it does not grow with the shop).

    python benchmarks/fence_window.py [--rounds 7] [--big-rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - after the path tweak that lets `python benchmarks/x.py` find it
    add_server_args,
    bench_server,
    header,
    median,
    percentile,
    seeded_source,
    verdict,
)

from handyshop_migration.devtools.seed import TENANT_TABLES  # noqa: E402
from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key  # noqa: E402
from handyshop_migration.tenancy.application.registry import ConnectionRegistry  # noqa: E402
from handyshop_migration.tenancy.engine.catalog import introspect  # noqa: E402
from handyshop_migration.tenancy.engine.migrations import tenant_migrations  # noqa: E402
from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming  # noqa: E402
from handyshop_migration.tenancy.lifecycle import Lifecycle  # noqa: E402
from handyshop_migration.tenancy.workflow import Workflow  # noqa: E402

TARGET_P95 = 1.0
PAUSE = 0.02


def writer(control_url: str, key: str, shop: int, stop: Any, out: Any) -> None:
    """The application: update a customer of `shop` every 20 ms wherever route() says; report each write as
    (started, ended, target, attempts)."""
    import psycopg

    from handyshop_migration.tenancy.application.encryption import CredentialCipher
    from handyshop_migration.tenancy.application.routing import RouteResolver
    from handyshop_migration.tenancy.dsn import ConnectionSpec

    control = ConnectionSpec.from_url(control_url)
    resolver = RouteResolver(control, CredentialCipher(key), control, ttl=0.0)
    with control.connect() as conn:
        customer = conn.execute("SELECT min(id) FROM customers WHERE shop_id = %s", (shop,)).fetchone()[0]  # type: ignore[index]
    conns: dict[str, psycopg.Connection] = {}
    n = 0
    while not stop.is_set():
        n += 1
        started, attempts = time.monotonic(), 0
        while True:
            attempts += 1
            route = resolver.resolve(shop, "write")
            where = route.target
            conn = conns.get(where)
            if conn is None or conn.closed:
                conn = conns[where] = route.spec.connect(autocommit=True)
            try:
                conn.execute("UPDATE customers SET city = %s WHERE id = %s", (f"w{n}", customer))
                break
            except psycopg.Error as exc:
                if exc.sqlstate != "HS001":
                    raise
                resolver.invalidate(shop)
                if where == "tenant":
                    conns.pop(where).close()
                time.sleep(0.005)
        out.put((started, time.monotonic(), where, attempts))
        time.sleep(PAUSE)
    for conn in conns.values():
        conn.close()


def windows(writes: list[tuple[float, float, str, int]], cutovers: list[tuple[float, float]]) -> list[float]:
    """Per cutover (start, end of the call): first disturbed write's start -> first tenant write's end."""
    normal = median([e - s for s, e, _, a in writes if a == 1]) * 3 + 0.05
    out = []
    for begin, end in cutovers:
        around = [w for w in writes if begin - 1 <= w[0] <= end + 2]
        disturbed = [w for w in around if w[3] > 1 or w[1] - w[0] > normal]
        first_tenant = next((w for w in around if w[2] == "tenant"), None)
        if first_tenant is None:
            continue
        start = min([w[0] for w in disturbed] + [first_tenant[0]])
        out.append(first_tenant[1] - start)
    return out


def measure(workflow: Workflow, control_url: str, key: str, shop: int, rounds: int) -> list[float]:
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=writer, args=(control_url, key, shop, stop, out), daemon=True)
    proc.start()
    time.sleep(1.0)
    cutovers = []
    try:
        for _ in range(rounds):
            workflow.sync(shop)
            begin = time.monotonic()
            report = workflow.cut_over(shop)
            cutovers.append((begin, time.monotonic()))
            print(f"     shop {shop}: fence {report.fenced_seconds:.3f}s inside the library", flush=True)
            time.sleep(0.5)
            workflow.roll_back_cutover(shop)
            time.sleep(0.5)
    finally:
        stop.set()
        writes = []
        deadline = time.monotonic() + 10
        while proc.is_alive() or not out.empty():
            try:
                writes.append(out.get(timeout=0.2))
            except Exception:  # noqa: BLE001,S110 - the queue is drained until the writer has gone
                if time.monotonic() > deadline:
                    break
        proc.join(timeout=10)
    return windows(writes, cutovers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="cutovers per shop (default 7)")
    parser.add_argument("--big-rows", type=int, default=1_000_000, help="repairs of the big shop (default 1,000,000)")
    add_server_args(parser)
    args = parser.parse_args(argv)
    with bench_server(args.server_dir) as server:
        admin = server.spec()
        header(f"fence window: a ~2,000-row shop and a {args.big_rows:,}-repair shop, {args.rounds} cutovers each", admin)
        source, seeded = seeded_source(
            admin, f"bench_fence_src_{args.big_rows}", shops=3, scale=1.0, seed=42, big_shop_rows=args.big_rows
        )
        print(f"   seed: {'reused' if seeded is None else f'{seeded:.1f} s'}", flush=True)
        key = generate_key()
        catalog = introspect(source, include=TENANT_TABLES)
        registry = ConnectionRegistry(source, CredentialCipher(key))
        prefix = f"fw{os.getpid()}_"
        naming = TenantNaming(database=prefix + "shop_{id}_db", role=prefix + "shop_user_{id}", owner=prefix + "shop_owner_{id}")
        provisioner = Provisioner(admin, registry, tenant_migrations(catalog), naming=naming)
        workflow = Workflow(source, catalog, provisioner, Lifecycle(source))
        workflow.setup()
        results: dict[str, list[float]] = {}
        for label, shop in (("small", 2), ("big", 1)):
            started = time.perf_counter()
            workflow.provision(shop)
            report = workflow.copy(shop)
            print(f"   {label} shop {shop}: {report.rows:,} rows copied and verified in {time.perf_counter() - started:.1f} s",
                  flush=True)
            results[label] = measure(workflow, source.url().reveal(), key, shop, args.rounds)
        print()
        print(f"   {'shop':<8} {'rows':>12} {'cutovers':>9} {'p50 (s)':>9} {'p95 (s)':>9} {'max (s)':>9}")
        ok = True
        for label, shop in (("small", 2), ("big", 1)):
            values = results[label]
            rows = Lifecycle(source).get(shop).details.get("rows", 0)
            p50, p95 = percentile(values, 50), percentile(values, 95)
            ok = ok and p95 <= TARGET_P95 and len(values) == args.rounds
            print(f"   {label:<8} {rows:>12,} {len(values):>9} {p50:>9.3f} {p95:>9.3f} {max(values):>9.3f}")
        print(json.dumps({k: [round(v, 4) for v in vs] for k, vs in results.items()}))
        print(verdict(ok) + f" p95 <= {TARGET_P95} s for both")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
