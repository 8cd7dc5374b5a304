"""Fixture factory: a migration world whose tenant databases go to two servers (`pg_server` as "a", where the
shared database is too, and `pg_server_b` as "b"), placed by the fleet's policy.

    def test_x(make_fleet_world):
        fw = make_fleet_world(shops=4, servers={"b": {"max_databases": 1}}, pins={7: "a"})
        fw.workflow.provision(7); fw.server_of(7) == "a"
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.migrations import tenant_migrations
from handyshop_migration.tenancy.fleet.config import ConnectionPlan, FleetConfig, ServerConfig
from handyshop_migration.tenancy.fleet.placement import ShopSizeEstimator
from handyshop_migration.tenancy.fleet.provisioner import FleetProvisioner
from handyshop_migration.tenancy.workflow import Workflow
from handyshop_migration_tests.plugins.worlds import World, build_world
from handyshop_migration_tests.support.databases import drop_namespace


@dataclass
class FleetWorld:
    world: World
    fleet: FleetConfig
    provisioner: FleetProvisioner
    workflow: Workflow
    admins: dict[str, ConnectionSpec]  # superuser of each server (tests only)
    closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def source(self) -> ConnectionSpec:
        return self.world.source

    @property
    def shop_ids(self) -> list[int]:
        return self.world.shop_ids

    @property
    def registry(self):  # type: ignore[no-untyped-def]
        return self.world.registry

    @property
    def lifecycle(self):  # type: ignore[no-untyped-def]
        return self.world.lifecycle

    @property
    def catalog(self):  # type: ignore[no-untyped-def]
        return self.world.catalog

    def server_of(self, shop: int) -> str:
        return self.registry.get(shop).server

    def database(self, shop: int) -> str:
        return self.provisioner.naming.database_name(shop)

    def databases_on(self, server: str) -> set[int]:
        """Shops whose tenant database exists on `server` (looked at as its superuser)."""
        with self.admins[server].connect() as conn:
            names = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
        return {s for s in self.shop_ids if self.database(s) in names}

    def admin_on(self, shop: int, server: str | None = None) -> ConnectionSpec:
        return self.admins[server or self.server_of(shop)].with_db(self.database(shop))

    def migrate(self, shop: int) -> None:
        self.workflow.provision(shop)
        report = self.workflow.copy(shop)
        assert report.verified, report.problems

    def live(self, shop: int) -> None:
        self.migrate(shop)
        self.workflow.sync(shop)
        self.workflow.cut_over(shop)

    def with_migrations(self, directory: Path) -> FleetWorld:
        """The same world once the tenant migrations directory holds more files (what a release brings): a new
        provisioner and workflow over the same databases."""
        self.provisioner.close()
        migrations = tenant_migrations(self.catalog, directory)
        self.provisioner = FleetProvisioner(
            self.fleet, self.registry, migrations, naming=self.provisioner.naming, estimate=self.provisioner.estimate
        )
        self.workflow = Workflow(
            self.source, self.catalog, self.provisioner, self.lifecycle, capture_writes=self.workflow.capture_writes,
            archive_dir=self.workflow.archive_dir,
        )
        self.workflow.setup()
        self.closers.append(self.provisioner.close)
        return self

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def build_fleet_world(
    world: World,
    admins: dict[str, ConnectionSpec],
    *,
    servers: Mapping[str, Mapping[str, Any]] | None = None,
    pins: Mapping[int, str] | None = None,
    connections: ConnectionPlan | None = None,
    schema_per_server: int = 4,
) -> FleetWorld:
    configs = tuple(ServerConfig(name, admin, **dict((servers or {}).get(name, {}))) for name, admin in admins.items())
    fleet = FleetConfig(configs, dict(pins or {}), connections or ConnectionPlan(), schema_per_server, "test fleet")
    provisioner = FleetProvisioner(
        fleet, world.registry, world.provisioner.migrations, naming=world.provisioner.naming,
        estimate=ShopSizeEstimator(world.source, world.catalog),
    )
    workflow = Workflow(
        world.source, world.catalog, provisioner, world.lifecycle, capture_writes=world.workflow.capture_writes,
        archive_dir=world.workflow.archive_dir,
    )
    workflow.setup()
    fw = FleetWorld(world, fleet, provisioner, workflow, admins)
    fw.closers = [
        *(lambda a=a: drop_namespace(a, world.namespace) for name, a in admins.items() if name != "a"),
        provisioner.close,
    ]
    return fw


@pytest.fixture
def make_fleet_world(
    pg_server: ConnectionSpec, pg_server_b: ConnectionSpec, tmp_path: Path
) -> Iterator[Callable[..., FleetWorld]]:
    made: list[tuple[World, FleetWorld]] = []

    def make(
        *,
        servers: Mapping[str, Mapping[str, Any]] | None = None,
        pins: Mapping[int, str] | None = None,
        connections: ConnectionPlan | None = None,
        schema_per_server: int = 4,
        **world_args: Any,
    ) -> FleetWorld:
        world = build_world(pg_server, tmp_path / f"fleet{len(made)}", **world_args)
        try:
            fw = build_fleet_world(
                world, {"a": pg_server, "b": pg_server_b}, servers=servers, pins=pins, connections=connections,
                schema_per_server=schema_per_server,
            )
        except BaseException:
            world.close()
            raise
        made.append((world, fw))
        return fw

    try:
        yield make
    finally:
        for world, fw in reversed(made):
            fw.close()
            world.close()
