"""Helpers for tests on real databases: scratch databases, tenant namespaces, fingerprints, concurrency."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from psycopg import sql

from handyshop_migration.tenancy.dsn import ConnectionSpec


def create_database(admin: ConnectionSpec, prefix: str) -> ConnectionSpec:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return admin.with_db(name)


def drop_database(admin: ConnectionSpec, name: str) -> None:
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def unique_namespace() -> str:
    """A short unique prefix for cluster-wide names (tenant databases and roles) of one test."""
    return "t" + uuid.uuid4().hex[:6] + "_"


def migration_env(source: ConnectionSpec, backups: Path, namespace: str) -> dict[str, str]:
    """The environment a migration run reads, with tenant names under `namespace` (see drop_namespace)."""
    from handyshop_migration import settings
    from handyshop_migration.tenancy.application.encryption import generate_key

    return {
        settings.SOURCE_URL: source.url().reveal(),
        settings.ENCRYPTION_KEY: generate_key(),
        settings.TENANT_DATABASE: namespace + "shop_{id}_db",
        settings.TENANT_ROLE: namespace + "shop_user_{id}",
        settings.TENANT_OWNER_ROLE: namespace + "shop_owner_{id}",  # else every test shares shop_owner_N
        settings.BACKUP_DIR: str(backups),
    }


def drop_namespace(admin: ConnectionSpec, namespace: str) -> None:
    """Drop every database and role whose name starts with `namespace` (a test's tenants)."""
    pattern = namespace.replace("_", "\\_") + "%"
    with admin.connect(autocommit=True) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (pattern,)).fetchall():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        for (name,) in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", (pattern,)).fetchall():
            # DROP OWNED here revokes its privileges on shared objects too (the replica-mode parameter grant)
            conn.execute(sql.SQL("DROP OWNED BY {}; DROP ROLE IF EXISTS {}").format(sql.Identifier(name), sql.Identifier(name)))


def fingerprint(spec: ConnectionSpec) -> dict[str, tuple[int, int]]:
    """Row count and content checksum of every table of a Handyshop shared database."""
    from handyshop_migration.devtools.seed import MASTER_TABLES, TENANT_TABLES

    out = {}
    for table in MASTER_TABLES + TENANT_TABLES:
        [(count, digest)] = rows(
            spec,
            sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {} t").format(
                sql.Identifier(table)
            ),
        )
        out[table] = (count, int(digest))
    return out


def run_concurrently(work: Callable[[int], None], threads: int) -> None:
    """Run `work(n)` on `threads` threads at once; re-raise the first failure."""
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            work(n)
        except BaseException as exc:  # collected and re-raised in the test's thread
            errors.append(exc)

    pool = [threading.Thread(target=guarded, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise errors[0]


def rows(spec: ConnectionSpec, query: sql.Composable | str, params: tuple[object, ...] = ()) -> list[tuple]:
    with spec.connect() as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]
