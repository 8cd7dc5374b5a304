"""The fleet: provisioning and a tenant schema fan-out for 1,000 empty tenants across 2 servers.

    .venv/bin/python benchmarks/fleet.py [--tenants 1000] [--workers 2] [--per-server 4]

Two durable embedded PostgreSQL 18 servers of its own ("a", which also holds the control database, and "b").
The shipped Handyshop catalog gives the tenant schema; the tenants are empty.

1. **Provisioning**: `Workflow.provision` for every tenant (lifecycle, placement under its lock with each
   server's caps and connection budget, database from the template, two roles, grants, registry entry): the
   first `--baseline` tenants by one workflow (the baseline), the rest by `--workers` workflows in threads of
   their own. Tenants per minute of each and their ratio; the placement's balance (largest over smallest bytes
   per server, estimated and measured with pg_database_size).
2. **Schema fan-out** of one-statement changes (`ALTER TABLE customers ADD COLUMN …`, metadata only) to every
   tenant, each as the tenant's owner role:
   - a plain loop over the tenant databases (log in, the statement, commit; no bookkeeping): the raw baseline;
   - `SchemaChanges.fan_out(workers=1)` with one at a time (migration `0002`): what our bookkeeping costs
     (checksums, the tenant's advisory lock, the capture contract, the server slot, the lifecycle record);
   - `SchemaChanges.fan_out()` with `--per-server` at a time on each server (migration `0003`): the product.
   Tenants per minute of each and the ratios.

Target: the fan-out of one migration to 1,000 tenants <= 5 min.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import bench_server, create_database, header, verdict  # noqa: E402 - after the path tweak

from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.engine.catalog import load_catalog
from handyshop_migration.tenancy.engine.migrations import tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import TenantNaming
from handyshop_migration.tenancy.fleet.config import ConnectionPlan, FleetConfig, ServerConfig, format_bytes
from handyshop_migration.tenancy.fleet.provisioner import FleetProvisioner
from handyshop_migration.tenancy.fleet.schema_changes import SchemaChanges
from handyshop_migration.tenancy.lifecycle import Lifecycle
from handyshop_migration.tenancy.workflow import Workflow

TARGET_SECONDS = 300.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2, help="provisioning workflows at once (default 2)")
    parser.add_argument("--per-server", type=int, default=4, help="tenant migrations at once per server (default 4)")
    parser.add_argument("--baseline", type=int, default=100, help="tenants provisioned by one workflow first (default 100)")
    args = parser.parse_args(argv)

    catalog = load_catalog()
    prefix = "f" + uuid.uuid4().hex[:5] + "_"
    naming = TenantNaming(
        database=prefix + "shop_{id}_db", role=prefix + "shop_user_{id}", owner=prefix + "shop_owner_{id}",
        template=prefix + "template_{fingerprint}",
    )
    migrations_dir = Path(tempfile.mkdtemp(prefix="fleet-bench-migrations-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, migrations_dir, ignore_errors=True)
        a = stack.enter_context(bench_server(None, prefix="handyshop-bench-fleet-a-"))
        b = stack.enter_context(bench_server(None, prefix="handyshop-bench-fleet-b-"))
        header(f"fleet: {args.tenants} empty tenants across 2 servers", a.spec())
        control = create_database(a.spec(), prefix + "control")
        fleet = FleetConfig(
            (ServerConfig("a", a.spec()), ServerConfig("b", b.spec())),
            connections=ConnectionPlan(pool_size=1, app_instances=1, max_pools_per_server=100, reserve=20),
            schema_per_server=args.per_server, source="benchmark fleet",
        )
        key = generate_key()

        def workflow(migrations: tuple) -> Workflow:  # type: ignore[type-arg]
            registry = ConnectionRegistry(control, CredentialCipher(key))
            provisioner = FleetProvisioner(fleet, registry, migrations, naming=naming)
            stack.callback(provisioner.close)
            stack.callback(registry.close)
            w = Workflow(control, catalog, provisioner, Lifecycle(control))
            w.setup()
            return w

        base = tenant_migrations(catalog)
        workers = [workflow(base) for _ in range(max(1, args.workers))]
        started = time.perf_counter()
        for server in ("a", "b"):  # the others find them
            workers[0].provisioner.provisioner_for(server).ensure_template()  # type: ignore[union-attr]
        template_seconds = time.perf_counter() - started
        print(f"   templates built once per server: {template_seconds:.1f} s (not counted per tenant)")

        shops = list(range(1, args.tenants + 1))
        cut = max(0, min(args.baseline, len(shops) - 1))  # at least one tenant for the workflows at once
        first, rest = shops[:cut], shops[cut:]
        progress = {"done": 0}
        lock = threading.Lock()
        began = time.perf_counter()

        def provision_lane(w: Workflow, lane: list[int]) -> None:
            for shop in lane:
                w.provision(shop)
                with lock:
                    progress["done"] += 1
                    if progress["done"] % 200 == 0:
                        print(f"   … {progress['done']} provisioned ({time.perf_counter() - began:.0f} s)", flush=True)

        started = time.perf_counter()
        provision_lane(workers[0], first)
        baseline_seconds = time.perf_counter() - started
        lanes = [rest[i :: len(workers)] for i in range(len(workers))]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            list(pool.map(provision_lane, workers, lanes))
        provision_seconds = time.perf_counter() - started
        placement = workers[0].provisioner.placement
        estimated = {s: u.bytes for s, u in placement.usage().items()}
        databases = {s: u.databases for s, u in placement.usage().items()}
        measured = placement.measure(naming.database_name)

        # The raw baseline: a plain loop over the tenant databases, one statement each, as each owner role.
        plain = workflow(base)
        customers = next(t for t in catalog.tables if t.name == "customers")
        statement = sql.SQL("ALTER TABLE {} ADD COLUMN bench_plain text").format(
            sql.Identifier(customers.schema, customers.name)
        )
        started = time.perf_counter()
        for shop in shops:
            with plain.tenant(shop).connect() as conn:
                conn.execute(statement)
                conn.commit()
        plain_seconds = time.perf_counter() - started

        (migrations_dir / "0002_bench_note.sql").write_text("ALTER TABLE customers ADD COLUMN bench_note text;\n")
        serial = SchemaChanges(workflow(tenant_migrations(catalog, migrations_dir)), per_server=1)
        started = time.perf_counter()
        base_report = serial.fan_out(workers=1)
        serial_seconds = time.perf_counter() - started
        (migrations_dir / "0003_bench_flag.sql").write_text(
            "ALTER TABLE customers ADD COLUMN bench_flag boolean NOT NULL DEFAULT false;\n"
        )
        fanout = SchemaChanges(workflow(tenant_migrations(catalog, migrations_dir)), per_server=args.per_server)
        started = time.perf_counter()
        report = fanout.fan_out()
        fanout_seconds = time.perf_counter() - started
        stale = fanout.stale()

    n = args.tenants
    print()
    b, r = len(first), len(rest)
    base_rate = b / baseline_seconds * 60 if b else 0.0
    rate = r / provision_seconds * 60
    print(f"provisioning, 1 workflow (baseline): {b} tenants in {baseline_seconds:.1f} s = {base_rate:.0f} tenants/min"
          + (f" ({baseline_seconds / b * 1000:.0f} ms each)" if b else ""))
    print(f"provisioning, {len(workers)} workflows at once: {r} tenants in {provision_seconds:.1f} s = {rate:.0f} tenants/min "
          f"({provision_seconds / r * 1000:.0f} ms per tenant)" + (f", {rate / base_rate:.2f}x the baseline" if b else ""))
    print(f"   placement: {databases} databases; estimated {', '.join(f'{s} {format_bytes(v)}' for s, v in estimated.items())};"
          f" measured {', '.join(f'{s} {format_bytes(v)}' for s, v in sorted(measured.items()))}")
    held = [v for v in measured.values() if v]
    if len(held) > 1:
        print(f"   balance (max / min measured bytes per server): {max(held) / min(held):.3f}")
    print()
    failed = len(base_report.failed) + len(report.failed)
    print(f"one statement to every tenant, a plain loop (raw baseline): {n} tenants in {plain_seconds:.1f} s = "
          f"{n / plain_seconds * 60:.0f} tenants/min ({plain_seconds / n * 1000:.1f} ms each)")
    print(f"one migration, SchemaChanges one at a time: {n} tenants in {serial_seconds:.1f} s = "
          f"{n / serial_seconds * 60:.0f} tenants/min ({serial_seconds / plain_seconds:.2f}x the plain loop's time)")
    print(f"one migration, SchemaChanges {args.per_server} at a time per server: {n} tenants in {fanout_seconds:.1f} s "
          f"= {n / fanout_seconds * 60:.0f} tenants/min ({serial_seconds / fanout_seconds:.2f}x one at a time, "
          f"{plain_seconds / fanout_seconds:.2f}x the plain loop); versions {report.versions()}, {failed} failed, "
          f"{len(stale)} stale")
    projected = fanout_seconds * 1000 / n
    print(f"   target: one migration to 1,000 tenants <= {TARGET_SECONDS:.0f} s: {projected:.0f} s "
          f"{verdict(projected <= TARGET_SECONDS and not failed and not stale)}")
    return 0 if not failed and not stale else 1


if __name__ == "__main__":
    raise SystemExit(main())
