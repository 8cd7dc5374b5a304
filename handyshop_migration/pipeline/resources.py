"""Resources: thin wrappers that hand the tenancy library's objects to assets and ops.

Each is registered with `configure_at_launch(...)` (see `definitions.py`), which gives one shared instance
per run even where one resource uses another. Secrets arrive through `EnvVar`, so they are resolved in
the run worker and never appear in run config, metadata or the UI. Connections live for one run: opened
lazily, closed in `teardown_after_execution`.

- `source`: the shared database (phase 0, the sensors);
- `encryption`: the credential cipher;
- `tenant_server`: where tenant databases are created (the servers file or one admin URL, name patterns,
  later migrations);
- `migration`: the `Workflow` every per-shop asset and way back calls (its provisioner is the fleet's: each
  shop on the server the placement chose, `tenancy.fleet`).
"""

from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from pydantic import PrivateAttr

from handyshop_migration import settings
from handyshop_migration.tenancy.application.encryption import CredentialCipher
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.migrations import Migration, shop_migrations, tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import TenantNaming
from handyshop_migration.tenancy.fleet.config import FleetConfig, load_fleet, single_server
from handyshop_migration.tenancy.fleet.placement import ShopSizeEstimator
from handyshop_migration.tenancy.fleet.provisioner import FleetProvisioner
from handyshop_migration.tenancy.lifecycle import Lifecycle
from handyshop_migration.tenancy.names import (
    DEFAULT_DATABASE_PATTERN,
    DEFAULT_OWNER_PATTERN,
    DEFAULT_ROLE_PATTERN,
)
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration.tenancy.workflow import Workflow


class SourceDatabase(dg.ConfigurableResource):
    """The shared database, which is also the control database (registry, lifecycle, routing)."""

    url: str
    global_shop_ids: list[int] = list(settings.DEFAULT_GLOBAL_SHOP_IDS)
    # Capture a shop's writes from before its copy's snapshot (phase 3 needs it; costs a trigger per write).
    capture: bool = True
    archive_dir: str = settings.DEFAULT_ARCHIVE_DIR

    def spec(self) -> ConnectionSpec:
        return ConnectionSpec.from_url(Secret(self.url), name=settings.SOURCE_URL)

    def connect(self) -> psycopg.Connection:
        return self.spec().connect()

    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.spec())


class Encryption(dg.ConfigurableResource):
    """AES-256-GCM for tenant credentials (TENANT_ENCRYPTION_KEY, and old keys during a rotation)."""

    key: str
    old_keys: str = ""

    def cipher(self) -> CredentialCipher:
        old = [k for k in self.old_keys.replace(" ", "").split(",") if k]
        return CredentialCipher(Secret(self.key), [Secret(k) for k in old])


class TenantServer(dg.ConfigurableResource):
    """The servers the tenant databases live on, reached with an admin role each (superuser, or CREATEDB and
    CREATEROLE): the servers file (`servers_file`, HANDYSHOP_SERVERS; its admin URLs come from the variables
    it names, read in the run worker), else one server: `admin_url`, else the source's server and credentials
    (database `postgres`)."""

    source: SourceDatabase
    admin_url: str = ""
    servers_file: str = ""
    database_pattern: str = DEFAULT_DATABASE_PATTERN
    role_pattern: str = DEFAULT_ROLE_PATTERN
    owner_pattern: str = DEFAULT_OWNER_PATTERN
    migrations_dir: str = ""

    def admin(self) -> ConnectionSpec:
        if self.admin_url:
            return ConnectionSpec.from_url(Secret(self.admin_url), name=settings.ADMIN_URL)
        return self.source.spec().with_db("postgres")

    def fleet(self) -> FleetConfig:
        if self.servers_file:
            return load_fleet(self.servers_file)
        return single_server(self.admin())

    def naming(self) -> TenantNaming:
        return TenantNaming(database=self.database_pattern, role=self.role_pattern, owner=self.owner_pattern)

    def migrations(self, catalog: Catalog) -> tuple[Migration, ...]:
        return tenant_migrations(catalog, Path(self.migrations_dir) if self.migrations_dir else None)


class MigrationResource(dg.ConfigurableResource):
    """The workflow of the run: every phase and way back of a shop is one call on it."""

    source: SourceDatabase
    encryption: Encryption
    tenant_server: TenantServer

    _registry: ConnectionRegistry | None = PrivateAttr(default=None)
    _provisioner: FleetProvisioner | None = PrivateAttr(default=None)
    _workflows: dict[int, Workflow] = PrivateAttr(default_factory=dict)

    def registry(self) -> ConnectionRegistry:
        if self._registry is None:
            self._registry = ConnectionRegistry(self.source.spec(), self.encryption.cipher())
        return self._registry

    def workflow(self, catalog: Catalog) -> Workflow:
        # Keyed by the catalog object (the definitions hold one): its checksum serialises the whole catalog,
        # 35 ms a time, and every step of a shop's run asks for its workflow.
        found = self._workflows.get(id(catalog))
        if found is not None and found.catalog is catalog:
            return found
        if self._provisioner is None:
            self._provisioner = FleetProvisioner(
                self.tenant_server.fleet(),
                self.registry(),
                self.tenant_server.migrations(catalog),
                naming=self.tenant_server.naming(),
                global_shop_ids=tuple(self.source.global_shop_ids),
                estimate=ShopSizeEstimator(self.source.spec(), catalog),
                shop_migrations=lambda shop: shop_migrations(catalog, shop),
            )
        workflow = Workflow(
            self.source.spec(),
            catalog,
            self._provisioner,
            self.source.lifecycle(),
            capture_writes=self.source.capture,
            archive_dir=Path(self.source.archive_dir),
        )
        workflow.setup()
        self.registry().readable_by_active_key()  # a wrong key is refused before anything is written with it
        self._workflows[id(catalog)] = workflow
        return workflow

    def schema_per_server(self) -> int:
        """Tenant migrations applied at once on one server (the servers file's `schema_changes.per_server`)."""
        fleet = self._provisioner.fleet if self._provisioner is not None else self.tenant_server.fleet()
        return fleet.schema_per_server

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._provisioner is not None:
            self._provisioner.close()
            self._provisioner = None
        if self._registry is not None:
            self._registry.close()
            self._registry = None
        self._workflows.clear()


def build_resources(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The resource set of the code location. Reads only *which* variables are set, never a value."""
    import os

    env = environ if environ is not None else os.environ

    def optional(name: str) -> Any:
        return dg.EnvVar(name) if env.get(name) else ""

    source = SourceDatabase.configure_at_launch(
        url=dg.EnvVar(settings.SOURCE_URL),
        global_shop_ids=list(settings.global_shop_ids(env)),
        capture=env.get(settings.CAPTURE, "on").strip().lower() not in ("off", "0", "false", "no"),
        archive_dir=env.get(settings.ARCHIVE_DIR) or settings.DEFAULT_ARCHIVE_DIR,
    )
    encryption = Encryption.configure_at_launch(
        key=dg.EnvVar(settings.ENCRYPTION_KEY), old_keys=optional(settings.OLD_ENCRYPTION_KEYS)
    )
    tenant_server = TenantServer.configure_at_launch(
        source=source,
        admin_url=optional(settings.ADMIN_URL),
        servers_file=env.get(settings.SERVERS, ""),
        database_pattern=env.get(settings.TENANT_DATABASE) or DEFAULT_DATABASE_PATTERN,
        role_pattern=env.get(settings.TENANT_ROLE) or DEFAULT_ROLE_PATTERN,
        owner_pattern=env.get(settings.TENANT_OWNER_ROLE) or DEFAULT_OWNER_PATTERN,
        migrations_dir=env.get(settings.TENANT_MIGRATIONS, ""),
    )
    migration = MigrationResource.configure_at_launch(source=source, encryption=encryption, tenant_server=tenant_server)
    from handyshop_migration.pipeline.background import SourceBackupResource

    backup_runner = SourceBackupResource.configure_at_launch(source=source)
    return {"source": source, "encryption": encryption, "tenant_server": tenant_server, "migration": migration,
            "backup_runner": backup_runner}
