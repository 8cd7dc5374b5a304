"""Provisioning time per tenant: database (from the template) + role + schema check + grants + registry entry.

    .venv/bin/python benchmarks/provisioning.py [--tenants 50] [--ddl-samples 5]

A fresh registry (its own schema in a control database) and a fresh naming prefix; the shipped Handyshop
catalog gives the tenant migrations. The template database is built once first and reported apart (a
one-off per schema version). Then `Provisioner.provision(shop_id)` for `--tenants` shops, each timed;
median and p90 against the target. The same runs are broken down by what they spend time on, by wrapping
psycopg's `Connection.execute` / `Connection.connect` and the registry's methods (a few wrapper calls per
tenant: microseconds against tens of milliseconds).

For scale, `--ddl-samples` databases are also created the way provisioning would without a template:
CREATE DATABASE from template1, then the tenant DDL.

Target: median <= 0.1 s per tenant.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402 - after the path tweak that lets `python benchmarks/x.py` find it
    add_server_args,
    bench_server,
    create_database,
    create_tenant_database,
    drop_database,
    header,
    median,
    percentile,
    verdict,
)

import handyshop_migration.tenancy.engine.provisioning as provisioning_module
from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.engine.catalog import load_catalog
from handyshop_migration.tenancy.engine.migrations import tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming
from handyshop_migration.tenancy.engine.tenant_schema import render

TARGET_MEDIAN = 0.1


class Breakdown:
    """Exclusive wall time per category. Outer wrappers (registry, grants) claim everything inside them;
    the SQL-level wrappers count only statements issued outside any outer category."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.depth = 0
        self._undo: list[Callable[[], None]] = []

    def _patch(self, owner: Any, name: str, wrapper: Callable[..., Any]) -> None:
        original = vars(owner)[name]
        setattr(owner, name, wrapper)
        self._undo.append(lambda: setattr(owner, name, original))

    def outer(self, owner: Any, name: str, category: str) -> None:
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - started
                self.calls[category] += 1
                self.depth -= 1

        self._patch(owner, name, wrapper)

    def sql_level(self) -> None:
        execute = psycopg.Connection.execute
        connect = psycopg.Connection.connect.__func__  # type: ignore[attr-defined]

        def classify(query: Any) -> str:
            text = query.decode() if isinstance(query, bytes) else query if isinstance(query, str) else query.as_string(None)
            head = " ".join(text.split()[:3]).upper()
            if head.startswith("CREATE DATABASE"):
                return "CREATE DATABASE ... TEMPLATE"
            if head.startswith(("CREATE ROLE", "ALTER ROLE")):
                return "CREATE ROLE (verifier sent)"
            if head.startswith(("REVOKE", "GRANT")):
                return "database privileges (REVOKE/GRANT CONNECT)"
            if head.startswith("SELECT 1 FROM"):
                return "existence checks (pg_database / pg_roles)"
            return "other SQL on the admin connection"

        def timed_execute(conn: psycopg.Connection, query: Any, *args: Any, **kwargs: Any) -> Any:
            if self.depth:
                return execute(conn, query, *args, **kwargs)
            category = classify(query)
            started = time.perf_counter()
            try:
                return execute(conn, query, *args, **kwargs)
            finally:
                self.seconds[category] += time.perf_counter() - started
                self.calls[category] += 1

        def timed_connect(cls: type, *args: Any, **kwargs: Any) -> Any:
            if self.depth:
                return connect(cls, *args, **kwargs)
            started = time.perf_counter()
            try:
                return connect(cls, *args, **kwargs)
            finally:
                self.seconds["connect to the tenant database (SCRAM login)"] += time.perf_counter() - started
                self.calls["connect to the tenant database (SCRAM login)"] += 1

        self._patch(psycopg.Connection, "execute", timed_execute)
        self._patch(psycopg.Connection, "connect", classmethod(timed_connect))
        # ConnectionSpec.connect calls `psycopg.connect`, bound to the original classmethod at import time.
        self._patch(psycopg, "connect", psycopg.Connection.connect)

    def install(self) -> None:
        for method in ("register", "find"):
            self.outer(ConnectionRegistry, method, "registry (find, register)")
        self.outer(provisioning_module, "_grant_application", "grants inside the tenant database")
        # provision() calls these through its own module's namespace
        for name in ("applied_migrations", "check"):
            self.outer(provisioning_module, name, "schema check (recorded migrations)")
        self.sql_level()

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def scram_seconds(conn: psycopg.Connection, samples: int = 20) -> float:
    """Client-side SCRAM verifier of a tenant password (inside provision(), measured apart)."""
    started = time.perf_counter()
    for i in range(samples):
        conn.pgconn.encrypt_password(f"pw{i}".encode(), b"probe_role", b"scram-sha-256")
    return (time.perf_counter() - started) / samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=50, help="tenants to provision (default 50)")
    parser.add_argument("--ddl-samples", type=int, default=5, help="databases built from template1 + DDL, for scale (default 5)")
    add_server_args(parser)
    args = parser.parse_args(argv)

    catalog = load_catalog()
    migrations = tenant_migrations(catalog)
    prefix = "b" + uuid.uuid4().hex[:6] + "_"
    with bench_server(args.server_dir) as server:
        admin = server.spec()
        header(f"provisioning: {args.tenants} tenants, naming prefix {prefix}", admin)
        control = create_database(admin, prefix + "control")
        registry = ConnectionRegistry(control, CredentialCipher(generate_key()), schema=prefix + "registry")
        registry.ensure_schema()
        naming = TenantNaming(
            database=prefix + "shop_{id}_db", role=prefix + "shop_user_{id}", owner=prefix + "shop_owner_{id}",
            template=prefix + "template_{fingerprint}",
        )
        provisioner = Provisioner(admin, registry, migrations, naming=naming)
        breakdown = Breakdown()
        per_tenant: list[float] = []
        ddl_times: list[float] = []
        deprovision: list[float] = []
        template = ""
        try:
            started = time.perf_counter()
            template = provisioner.ensure_template()
            template_seconds = time.perf_counter() - started
            print(f"   template database built once: {template_seconds:.2f} s (not counted per tenant)")
            breakdown.install()
            try:
                for shop in range(1, args.tenants + 1):
                    started = time.perf_counter()
                    result = provisioner.provision(shop)
                    per_tenant.append(time.perf_counter() - started)
                    assert result.created_database and result.created_role
            finally:
                breakdown.uninstall()
            scram = scram_seconds(provisioner._admin())
            schema = render(catalog)
            for i in range(args.ddl_samples):
                started = time.perf_counter()
                create_tenant_database(admin, f"{prefix}ddl_{i}", schema)
                ddl_times.append(time.perf_counter() - started)
            for shop in range(1, args.tenants + 1):
                started = time.perf_counter()
                provisioner.deprovision(shop)
                deprovision.append(time.perf_counter() - started)
        finally:
            for shop in range(1, args.tenants + 1):
                if len(deprovision) < args.tenants:
                    provisioner.deprovision(shop)
            provisioner.close()
            registry.close()
            for i in range(args.ddl_samples):
                drop_database(admin, f"{prefix}ddl_{i}")
            if template:
                with admin.connect(autocommit=True) as conn:
                    conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(sql.Identifier(template)))
                drop_database(admin, template)
            drop_database(admin, control.dbname)

    n = len(per_tenant)
    med, p90 = median(per_tenant), percentile(per_tenant, 90)
    print()
    print(f"per tenant over {n} provisions (database + role + schema check + grants + registry entry):")
    print(f"   median {med * 1000:.0f} ms, p90 {p90 * 1000:.0f} ms, min {min(per_tenant) * 1000:.0f} ms, "
          f"max {max(per_tenant) * 1000:.0f} ms, total {sum(per_tenant):.2f} s")
    print(f"   target: median <= {TARGET_MEDIAN * 1000:.0f} ms  {verdict(med <= TARGET_MEDIAN)}  (median / target = {med / TARGET_MEDIAN:.2f})")
    print()
    total = sum(per_tenant)
    print(f"where a tenant's time goes (mean per tenant; the categories add up to {sum(breakdown.seconds.values()) / total:.0%} of the total):")
    for category, seconds in sorted(breakdown.seconds.items(), key=lambda kv: -kv[1]):
        print(f"   {category:<48}{seconds / n * 1000:>7.1f} ms  {seconds / total:>5.0%}   ({breakdown.calls[category] / n:.1f} calls)")
    rest = total - sum(breakdown.seconds.values())
    print(f"   {'Python and the rest':<48}{rest / n * 1000:>7.1f} ms  {rest / total:>5.0%}"
          f"   (incl. the client-side SCRAM verifier, {scram * 1000:.1f} ms measured apart)")
    if ddl_times:
        print()
        print(f"without the template (CREATE DATABASE from template1 + tenant DDL), {len(ddl_times)} samples: "
              f"median {median(ddl_times) * 1000:.0f} ms = {median(ddl_times) / med:.1f}x a templated provision")
    print(f"deprovision (DROP DATABASE WITH (FORCE) + DROP ROLE + registry): median {median(deprovision) * 1000:.0f} ms"
          if deprovision else "")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
