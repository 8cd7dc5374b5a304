"""The connection budget of each tenant server: what the tenants placed there will cost once applications route
to them, against what the server can give.

Per server: `needed = open now (outside our tenant databases) + reserve + app_instances × pool_size × pools`,
where `pools` is the tenants there, capped by the router's `max_pools_per_server` (the router closes the least
recently used pool of a server beyond that; `TenantRouter(max_pools_per_server=…)`). `usable` is the configured
`max_connections` of the server, never more than what the server has: `max_connections` minus
`superuser_reserved_connections` and `reserved_connections` (tenant pools log in as ordinary roles).

Checked by phase 0 for the whole plan (every shop placed by the policy: `plan.py`) and by the placement before
each provisioning, for the server it would take the tenant.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.dsn import PINNED_SEARCH_PATH
from handyshop_migration.tenancy.fleet.config import FleetConfig, ServerConfig


@dataclass(frozen=True)
class ServerLimits:
    usable: int  # max_connections minus the reserved slots
    open_elsewhere: int  # client connections now, not to our tenant databases


class LiveServers:
    """One admin connection per server, opened on first use (the provisioner's own when it has one)."""

    def __init__(self, fleet: FleetConfig, tenant_database_like: str = "", *, cache: bool = False) -> None:
        self.fleet = fleet
        self.cache = cache  # a plan reads each server's numbers once; a placement reads them fresh every time
        self._limits: dict[str, ServerLimits] = {}
        # LIKE pattern of our tenant databases' names (their connections are the plan's, not "elsewhere")
        self.tenant_like = tenant_database_like
        self._conns: dict[str, psycopg.Connection] = {}
        self.borrowed: dict[str, object] = {}  # server -> object with `_admin()` (a Provisioner)

    def connection(self, server: str) -> psycopg.Connection:
        lender = self.borrowed.get(server)
        if lender is not None:
            return lender._admin()  # type: ignore[attr-defined]
        conn = self._conns.get(server)
        if conn is None or conn.closed or conn.broken:
            conn = self._conns[server] = self.fleet.server(server).admin.connect(
                autocommit=True, settings=PINNED_SEARCH_PATH
            )
        return conn

    def limits(self, server: str) -> ServerLimits:
        if self.cache and server in self._limits:
            return self._limits[server]
        row = one_row(
            self.connection(server),
            """
            SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
                   - coalesce(current_setting('reserved_connections', true)::int, 0),
                   (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'
                       AND pid <> pg_backend_pid() AND (%s = '' OR datname IS NULL OR datname NOT LIKE %s))::int
            """,
            (self.tenant_like, self.tenant_like),
        )
        self._limits[server] = ServerLimits(int(row[0]), int(row[1]))
        return self._limits[server]

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()


@dataclass(frozen=True)
class ServerBudget:
    server: str
    usable: int
    open_elsewhere: int
    reserve: int
    tenants: int
    tenant_connections: int
    configured: int | None  # the servers file's max_connections, if any
    server_usable: int  # what the server itself allows

    @property
    def needed(self) -> int:
        return self.open_elsewhere + self.reserve + self.tenant_connections

    @property
    def ok(self) -> bool:
        return self.needed <= self.usable

    def describe(self) -> str:
        limit = (
            f"max_connections {self.configured} configured"
            if self.configured is not None and self.configured <= self.server_usable
            else f"{self.server_usable} usable on the server"
        )
        return (
            f"{self.needed} connections needed ({self.open_elsewhere} open elsewhere + {self.reserve} reserve + "
            f"{self.tenant_connections} for {self.tenants} tenants) of {self.usable} ({limit})"
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "server": self.server, "needed": self.needed, "usable": self.usable, "tenants": self.tenants,
            "tenant_connections": self.tenant_connections, "open_elsewhere": self.open_elsewhere,
            "reserve": self.reserve, "ok": self.ok,
        }


def budget(fleet: FleetConfig, server: ServerConfig, tenants: int, live: LiveServers) -> ServerBudget:
    """The server's budget with `tenants` tenants routed to it."""
    limits = live.limits(server.name)
    usable = limits.usable if server.max_connections is None else min(server.max_connections, limits.usable)
    return ServerBudget(
        server=server.name,
        usable=usable,
        open_elsewhere=limits.open_elsewhere,
        reserve=fleet.connections.reserve,
        tenants=tenants,
        tenant_connections=fleet.connections.tenant_connections(tenants),
        configured=server.max_connections,
        server_usable=limits.usable,
    )


__all__ = ["LiveServers", "ServerBudget", "ServerLimits", "budget"]
