"""Fixture factory: a migration world — a shared database (seeded Handyshop, or any schema a callable
creates), its catalog, a registry, a provisioner with tenant names of its own, the lifecycle and the
workflow — torn down with every tenant it created. One factory instead of a setup per test module.

    def test_x(make_world):
        world = make_world(shops=3, scale=0.05)            # seeded Handyshop
        world = make_world(schema=exotic.create, tenant_column="tenant_id", shop_ids=[1, 2, 3])
        world.workflow.provision(2); world.workflow.copy(2)

`scope="module"` variants are left to the modules: call `build_world` from a module fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from handyshop_migration.devtools.seed import TENANT_TABLES, SeedReport, seed_database
from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog, introspect
from handyshop_migration.tenancy.engine.migrations import shop_migrations, tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming
from handyshop_migration.tenancy.engine.tenant_schema import TenantSchema
from handyshop_migration.tenancy.lifecycle import Lifecycle
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration.tenancy.workflow import Workflow
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    unique_namespace,
)


@dataclass
class World:
    admin: ConnectionSpec
    source: ConnectionSpec
    catalog: Catalog
    cipher: CredentialCipher
    registry: ConnectionRegistry
    provisioner: Provisioner
    lifecycle: Lifecycle
    workflow: Workflow
    namespace: str
    shop_ids: list[int]
    key: Secret  # TENANT_ENCRYPTION_KEY of this world (an application decrypts route()'s tokens with it)
    seed: SeedReport | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def tenant(self, shop: int) -> ConnectionSpec:
        """The migration's way into a shop's tenant database: its owner role (search path pinned)."""
        return self.workflow.tenant(shop)

    def app(self, shop: int) -> ConnectionSpec:
        """The application's way into a shop's tenant database: its application role."""
        return self.registry.get(shop).spec()

    @property
    def report(self) -> SeedReport:
        """The seed's report (a seeded Handyshop world only)."""
        if self.seed is None:
            raise AttributeError("this world was not seeded with the Handyshop generator")
        return self.seed

    @property
    def schema(self) -> TenantSchema:
        return self.workflow.schema

    def admin_on(self, shop: int) -> ConnectionSpec:
        """The superuser on a shop's tenant database (tests only: to look at the catalog, or to tamper)."""
        return self.admin.with_db(self.provisioner.naming.database_name(shop))

    def migrate(self, shop: int) -> None:
        """Phases 1-2 for a shop (provision, copy, verify)."""
        self.workflow.provision(shop)
        report = self.workflow.copy(shop)
        assert report.verified, report.problems

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def build_world(
    admin: ConnectionSpec,
    tmp: Path,
    *,
    schema: Callable[[psycopg.Connection], None] | None = None,
    tenant_column: str = "shop_id",
    shop_ids: Sequence[int] | None = None,
    tables: Sequence[str] | None = None,
    capture_writes: bool = True,
    prefix: str = "t_world",
    **seed_args: object,
) -> World:
    """A world on `admin`'s server. Without `schema`, a seeded Handyshop (`seed_args` go to seed_database)."""
    source = create_database(admin, prefix)
    namespace = unique_namespace()
    closers: list[Callable[[], None]] = [lambda: drop_database(admin, source.dbname), lambda: drop_namespace(admin, namespace)]
    try:
        report = None
        if schema is None:
            report = seed_database(source, **{"shops": 3, "scale": 0.05, "seed": 7, **seed_args})  # type: ignore[arg-type]
            ids = list(report.shop_ids)
            include = list(tables) if tables is not None else list(TENANT_TABLES)
        else:
            with source.connect() as conn:
                schema(conn)
                conn.commit()
            ids = list(shop_ids or [])
            include = list(tables) if tables is not None else None
        # a seeded Handyshop names its users table (the shipped catalog does: phase 0's owner checks)
        catalog = introspect(source, tenant_column=tenant_column, include=include,
                             users_table="users" if schema is None else None)
        key = generate_key()
        cipher = CredentialCipher(key)
        registry = ConnectionRegistry(source, cipher)
        naming = TenantNaming(
            database=namespace + "shop_{id}_db", role=namespace + "shop_user_{id}", owner=namespace + "shop_owner_{id}"
        )
        provisioner = Provisioner(admin, registry, tenant_migrations(catalog), naming=naming,
                                  shop_migrations=lambda shop: shop_migrations(catalog, shop))
        lifecycle = Lifecycle(source)
        workflow = Workflow(
            source, catalog, provisioner, lifecycle, capture_writes=capture_writes, archive_dir=tmp / "archives"
        )
        workflow.setup()
        closers[1:1] = [provisioner.close, registry.close]
        return World(
            admin, source, catalog, cipher, registry, provisioner, lifecycle, workflow, namespace, ids, Secret(key), report,
            closers,
        )
    except BaseException:
        for close in reversed(closers):
            close()
        raise


@pytest.fixture
def make_world(pg_server: ConnectionSpec, tmp_path: Path) -> Iterator[Callable[..., World]]:
    worlds: list[World] = []

    def make(**kwargs: object) -> World:
        world = build_world(pg_server, tmp_path / f"world{len(worlds)}", **kwargs)  # type: ignore[arg-type]
        worlds.append(world)
        return world

    try:
        yield make
    finally:
        for world in reversed(worlds):
            world.close()
