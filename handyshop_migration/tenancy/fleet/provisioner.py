"""Provisioning across the fleet: the placement decides the server, that server's `Provisioner` does the rest.

`FleetProvisioner` has the interface the workflow uses of a `Provisioner` (provision, audit, require_clean,
verify_access, deprovision, naming, registry), so every phase and way back follows the shop to its server:
the registry entry names it (`TenantCredentials.server`, with that server's host and port), and what
connects to a tenant connects where the entry says. Before each provisioning the placement checks the chosen
server's caps and connection budget (`placement.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from handyshop_migration.tenancy.application.registry import ConnectionRegistry, TenantCredentials
from handyshop_migration.tenancy.engine.migrations import Migration, with_shop
from handyshop_migration.tenancy.engine.provisioning import (
    AccessReport,
    DeprovisionResult,
    Provisioner,
    ProvisionResult,
    TenantNaming,
)
from handyshop_migration.tenancy.errors import ProvisioningError
from handyshop_migration.tenancy.fleet.budget import LiveServers
from handyshop_migration.tenancy.fleet.config import FleetConfig
from handyshop_migration.tenancy.fleet.placement import EMPTY_TENANT_BYTES, Placement
from handyshop_migration.tenancy.names import DEFAULT_GLOBAL_SHOP_IDS


def like_pattern(database_pattern: str) -> str:
    """A LIKE pattern matching every tenant database name of a naming pattern (`shop_{id}_db` → `shop\\_%\\_db`)."""
    head, _, tail = database_pattern.partition("{id}")

    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")

    return escape(head) + "%" + escape(tail)


@dataclass
class FleetProvisioner:
    fleet: FleetConfig
    registry: ConnectionRegistry
    migrations: Sequence[Migration]
    naming: TenantNaming = field(default_factory=TenantNaming)
    global_shop_ids: tuple[int, ...] = DEFAULT_GLOBAL_SHOP_IDS
    # bytes a shop's tenant database will take (ShopSizeEstimator over the shared database); default: an empty one
    estimate: Callable[[int], int] = lambda shop: EMPTY_TENANT_BYTES
    # a shop's own migrations (objects of that tenant only), applied after the template's on whichever server
    shop_migrations: Callable[[int], Sequence[Migration]] | None = None
    _provisioners: dict[str, Provisioner] = field(default_factory=dict, init=False, repr=False)
    live: LiveServers = field(init=False, repr=False)
    placement: Placement = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.live = LiveServers(self.fleet, like_pattern(self.naming.database))
        self.placement = Placement(self.registry.control, self.fleet, self.live)

    def ensure_schema(self) -> None:
        self.placement.ensure_schema()

    # -- servers ---------------------------------------------------------------------------------------

    def provisioner_for(self, server: str) -> Provisioner:
        found = self._provisioners.get(server)
        if found is None:
            config = self.fleet.server(server)
            found = self._provisioners[server] = Provisioner(
                config.admin,
                self.registry,
                self.migrations,
                naming=self.naming,
                server_name=config.name,
                tenant_host=config.tenant_host,
                tenant_port=config.tenant_port,
                global_shop_ids=self.global_shop_ids,
                shop_migrations=self.shop_migrations,
            )
            self.live.borrowed[server] = found  # the budget reads through the provisioner's admin connection
        return found

    def server_of(self, shop_id: int) -> str:
        """Where the shop's tenant database is: its registry entry, else its placement (provisioning begun)."""
        creds = self.registry.find(shop_id)
        if creds is not None:
            return creds.server
        placed = self.placement.tenant_server(shop_id)
        if placed is None:
            raise ProvisioningError(f"shop {shop_id} has no tenant database on any server; provision it first.")
        return placed

    def close(self) -> None:
        for p in self._provisioners.values():
            p.close()
        self._provisioners.clear()
        self.live.borrowed.clear()
        self.live.close()

    def __enter__(self) -> FleetProvisioner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the Provisioner interface the workflow uses ------------------------------------------------------

    def _check_shop_id(self, shop_id: int) -> None:
        self.provisioner_for(self.fleet.servers[0].name)._check_shop_id(shop_id)

    def place(self, shop_id: int) -> str:
        """The server of the shop's tenant database: where it is, else chosen by the policy and recorded
        (PlacementRefused, with why, when no server can take it; nothing is created then)."""
        self._check_shop_id(shop_id)
        existing = self.registry.find(shop_id)
        if existing is not None:
            self.fleet.server(existing.server)  # a server the file no longer names is refused in one line
            return self.placement.place(shop_id, EMPTY_TENANT_BYTES, registered_on=existing.server)
        placed = self.placement.tenant_server(shop_id)
        if placed is not None:
            return placed
        return self.placement.place(shop_id, self.estimate(shop_id) if self._sizes_matter() else EMPTY_TENANT_BYTES)

    def _sizes_matter(self) -> bool:
        """Whether a shop's size can change where it goes: several servers, or a cap in bytes. The estimate
        reads the shared tables (their sizes, a plan per table), so it would wait behind anyone's lock on
        them; one server without a byte cap (the fleet without a servers file) has nothing to decide."""
        return len(self.fleet.servers) > 1 or any(s.max_bytes is not None for s in self.fleet.servers)

    def migrations_of(self, shop_id: int) -> tuple[Migration, ...]:
        """Every migration the shop's tenant database should have: the fleet's, with its own objects after 0001."""
        return with_shop(self.migrations, self.shop_migrations(shop_id) if self.shop_migrations else ())

    def refuse_foreign(self, shop_id: int) -> None:
        """Refuse (one line) if the shop's database or roles exist on the server it is placed on and are not
        ours. The room a placement made for it then goes back: nothing of ours exists for it there yet."""
        server = self.server_of(shop_id)
        try:
            self.provisioner_for(server).refuse_foreign(shop_id)
        except ProvisioningError:
            if self.registry.find(shop_id) is None:
                self.placement.forget(shop_id, server)
            raise

    def provision(self, shop_id: int) -> ProvisionResult:
        """Place the shop (or find where it is) and provision it there."""
        return self.provisioner_for(self.place(shop_id)).provision(shop_id)

    def provision_copy(self, shop_id: int, server: str, creds: TenantCredentials) -> ProvisionResult:
        """A second tenant database for the shop on `server`, with its registered passwords (a move's target)."""
        return self.provisioner_for(server).provision(shop_id, adopt=creds)

    def audit(self, shop_id: int) -> list[str]:
        return self.provisioner_for(self.server_of(shop_id)).audit(shop_id)

    def require_clean(self, shop_id: int) -> None:
        self.provisioner_for(self.server_of(shop_id)).require_clean(shop_id)

    def verify_access(self, shop_id: int) -> AccessReport:
        return self.provisioner_for(self.server_of(shop_id)).verify_access(shop_id)

    def deprovision(self, shop_id: int) -> DeprovisionResult:
        """The way back from phase 1 on the shop's server; the placement forgets it (room on that server again)."""
        self._check_shop_id(shop_id)
        try:
            server = self.server_of(shop_id)
        except ProvisioningError:
            server = self.fleet.servers[0].name  # nothing placed: the first server says there is nothing to drop
        result = self.provisioner_for(server).deprovision(shop_id)
        self.placement.forget(shop_id, server)
        return result

    def drop_copy(self, shop_id: int, server: str) -> DeprovisionResult:
        """Drop the shop's database and roles on `server`, which must not be the one its registry entry names."""
        creds = self.registry.find(shop_id)
        if creds is not None and creds.server == server:
            raise ProvisioningError(
                f"shop {shop_id}'s registry entry names server {server}: that is its tenant database, not a copy; "
                "nothing was dropped."
            )
        result = self.provisioner_for(server).deprovision(shop_id, forget=False)
        self.placement.forget(shop_id, server)
        return result


__all__ = ["FleetProvisioner", "like_pattern"]
