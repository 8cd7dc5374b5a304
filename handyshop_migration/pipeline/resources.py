"""Resources: thin wrappers that hand the tenancy library's objects to assets.

Each is registered with `configure_at_launch(...)` (see `definitions.py`), which gives one shared instance
per run even where one resource uses another. Secrets arrive through `EnvVar`, so they are resolved in
the run worker and never appear in run config, metadata or the UI. Connections live for one run: opened
lazily, closed in `teardown_after_execution`.
"""


from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
from pydantic import PrivateAttr

from handyshop_migration import settings
from handyshop_migration.tenancy.application.encryption import CredentialCipher
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.application.router import TenantRouter
from handyshop_migration.tenancy.application.routing import RoutingTable
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.copy import SourceSnapshot
from handyshop_migration.tenancy.engine.migrations import Migration, shop_migrations, tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming
from handyshop_migration.tenancy.names import DEFAULT_DATABASE_PATTERN, DEFAULT_ROLE_PATTERN
from handyshop_migration.tenancy.secrets import Secret


class SourceDatabase(dg.ConfigurableResource):
    """The shared database. Holds one consistent snapshot per shop for the length of a run, so that a
    shop's tables — separate assets, separate steps — are all copied from the same data."""

    url: str
    global_shop_ids: list[int] = list(settings.DEFAULT_GLOBAL_SHOP_IDS)
    # Capture a shop's writes from before its copy's snapshot (phase 3 needs it; costs a trigger per write).
    capture: bool = True
    archive_dir: str = settings.DEFAULT_ARCHIVE_DIR

    _snapshots: dict[int, SourceSnapshot] = PrivateAttr(default_factory=dict)
    _routing: RoutingTable | None = PrivateAttr(default=None)

    def spec(self) -> ConnectionSpec:
        return ConnectionSpec.from_url(Secret(self.url), name=settings.SOURCE_URL)

    def connect(self) -> psycopg.Connection:
        return self.spec().connect()

    def snapshot(self, shop_id: int, catalog: Catalog) -> SourceSnapshot:
        """The run's snapshot of a shop; capture starts first, so every write is in it or in the log."""
        if shop_id not in self._snapshots:
            if self.capture:
                with self.connect() as conn:
                    capture.enable(conn, catalog, shop_id)
            self._snapshots[shop_id] = SourceSnapshot(self.spec())
        return self._snapshots[shop_id]

    def routing(self) -> RoutingTable:
        if self._routing is None:
            self._routing = RoutingTable(self.spec())
            self._routing.ensure_schema()
        return self._routing

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for snap in self._snapshots.values():
            snap.close()
        self._snapshots.clear()


class Encryption(dg.ConfigurableResource):
    """AES-256-GCM for tenant credentials (TENANT_ENCRYPTION_KEY, and old keys during a rotation)."""

    key: str
    old_keys: str = ""

    def cipher(self) -> CredentialCipher:
        old = [k for k in self.old_keys.replace(" ", "").split(",") if k]
        return CredentialCipher(Secret(self.key), [Secret(k) for k in old])


class Registry(dg.ConfigurableResource):
    """The credential registry, kept in the control database (the shared database)."""

    source: SourceDatabase
    encryption: Encryption
    cache_size: int = 100
    cache_ttl_seconds: float = 3600.0

    _registry: ConnectionRegistry | None = PrivateAttr(default=None)

    def get(self) -> ConnectionRegistry:
        if self._registry is None:
            self._registry = ConnectionRegistry(
                self.source.spec(),
                self.encryption.cipher(),
                cache_size=self.cache_size,
                cache_ttl=self.cache_ttl_seconds,
            )
            self._registry.ensure_schema()
        return self._registry

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None


class Router(dg.ConfigurableResource):
    """Connections to tenant databases as the tenant roles, from one pool per tenant."""

    registry: Registry
    max_size: int = 20
    max_idle_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    max_pools: int = 50

    _router: TenantRouter | None = PrivateAttr(default=None)

    def get(self) -> TenantRouter:
        if self._router is None:
            self._router = TenantRouter(
                self.registry.get(),
                max_size=self.max_size,
                max_idle=self.max_idle_seconds,
                connect_timeout=self.connect_timeout_seconds,
                max_pools=self.max_pools,
            )
        return self._router

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._router is not None:
            self._router.close_all()
            self._router = None


class TenantServer(dg.ConfigurableResource):
    """The server the tenant databases live on, reached with an admin role (CREATEDB, CREATEROLE).

    Without `admin_url`, the source's server and credentials are used (maintenance database `postgres`).
    """

    source: SourceDatabase
    registry: Registry
    admin_url: str = ""
    database_pattern: str = DEFAULT_DATABASE_PATTERN
    role_pattern: str = DEFAULT_ROLE_PATTERN
    migrations_dir: str = ""

    _provisioner: Provisioner | None = PrivateAttr(default=None)
    _conns: dict[int, psycopg.Connection] = PrivateAttr(default_factory=dict)

    def admin(self) -> ConnectionSpec:
        if self.admin_url:
            return ConnectionSpec.from_url(Secret(self.admin_url), name=settings.ADMIN_URL)
        return self.source.spec().with_db("postgres")

    def naming(self) -> TenantNaming:
        return TenantNaming(database=self.database_pattern, role=self.role_pattern)

    def migrations(self, catalog: Catalog) -> tuple[Migration, ...]:
        return tenant_migrations(catalog, Path(self.migrations_dir) if self.migrations_dir else None)

    def provisioner(self, catalog: Catalog) -> Provisioner:
        if self._provisioner is None:
            self._provisioner = Provisioner(
                self.admin(),
                self.registry.get(),
                self.migrations(catalog),
                naming=self.naming(),
                global_shop_ids=tuple(self.source.global_shop_ids),
                shop_migrations=lambda shop: shop_migrations(catalog, shop),
            )
        return self._provisioner

    def tenant_admin(self, shop_id: int) -> ConnectionSpec:
        """Admin credentials on the shop's database (loads need the table owner)."""
        return self.admin().with_db(self.naming().database_name(shop_id))

    def connect(self, shop_id: int) -> psycopg.Connection:
        """One admin connection per tenant database per run."""
        conn = self._conns.get(shop_id)
        if conn is None or conn.closed:
            conn = self._conns[shop_id] = self.tenant_admin(shop_id).connect()
        return conn

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()
        if self._provisioner is not None:
            self._provisioner.close()
            self._provisioner = None


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
    registry = Registry.configure_at_launch(source=source, encryption=encryption)
    tenant_server = TenantServer.configure_at_launch(
        source=source,
        registry=registry,
        admin_url=optional(settings.ADMIN_URL),
        database_pattern=env.get(settings.TENANT_DATABASE) or DEFAULT_DATABASE_PATTERN,
        role_pattern=env.get(settings.TENANT_ROLE) or DEFAULT_ROLE_PATTERN,
        migrations_dir=env.get(settings.TENANT_MIGRATIONS, ""),
    )
    router = Router.configure_at_launch(registry=registry)
    return {
        "source": source,
        "encryption": encryption,
        "registry": registry,
        "router": router,
        "tenant_server": tenant_server,
    }
