"""Which server each tenant database goes to, and what every server holds: the placement policy and its record.

**The record.** `handyshop_migration.tenant_databases` in the control database has one row per tenant database
we hold anywhere: the shop, the server, what it is there (`tenant`: the one the registry points to;
`move_target`: being filled by a move; `old_copy`: what a finished move left behind as its way back), whether a
pin put it there, its estimated size at placement and its measured size (`measure()`). A server's usage is
its rows: databases, bytes (measured, else estimated), tenants applications route to.

**The policy** (`choose`), evaluated under an advisory lock in one control transaction (so that runs
provisioning shops at once cannot both take a server's last slot):

1. a shop pinned in the servers file goes to its server, or is refused with why (full, over its connection
   budget) — never silently elsewhere;
2. otherwise the server least filled by bytes among those that accept new tenants and have room: below
   `max_databases`, below `max_bytes` with the shop's estimate added, and within its connection budget with
   one more tenant (`budget.py`). "Least filled" is the fraction of `max_bytes` when every candidate has one,
   else absolute bytes; ties go to fewer databases, then to the name;
3. no server has room: refused, one line naming each server and why.

A shop that has a tenant database already (a rerun, or a registry entry from before the fleet existed) keeps
its server. The estimate of a shop is its rows in the shared database times each table's average row width
(planner statistics, no scan) plus an empty tenant's size.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.errors import PlacementRefused
from handyshop_migration.tenancy.fleet.budget import LiveServers, ServerBudget, budget
from handyshop_migration.tenancy.fleet.config import FleetConfig, ServerConfig, format_bytes
from handyshop_migration.tenancy.names import CONTROL_SCHEMA, control

TABLE = "tenant_databases"
KINDS = ("tenant", "move_target", "old_copy")
EMPTY_TENANT_BYTES = 8 * 1024**2  # an empty tenant database from the template (≈ 7.5 MB on PostgreSQL 16-18)
_LOCK = "handyshop_migration.placement"

_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    shop_id bigint NOT NULL,
    server text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('tenant', 'move_target', 'old_copy')),
    pinned boolean NOT NULL DEFAULT false,
    estimated_bytes bigint NOT NULL DEFAULT 0,
    measured_bytes bigint,
    measured_at timestamptz,
    placed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, server)
);
CREATE UNIQUE INDEX IF NOT EXISTS tenant_databases_one_tenant ON {table} (shop_id) WHERE kind = 'tenant';
"""


@dataclass(frozen=True)
class TenantDatabase:
    shop_id: int
    server: str
    kind: str
    pinned: bool
    estimated_bytes: int
    measured_bytes: int | None

    @property
    def bytes(self) -> int:
        return self.measured_bytes if self.measured_bytes is not None else self.estimated_bytes


@dataclass(frozen=True)
class ServerUsage:
    server: str
    databases: int = 0
    bytes: int = 0
    tenants: int = 0  # databases applications route to (or will, once a move flips): the connection plan's count

    def plus(self, estimate: int, *, routed: bool = True) -> ServerUsage:
        return ServerUsage(self.server, self.databases + 1, self.bytes + estimate, self.tenants + int(routed))


def _table() -> sql.Identifier:
    return control(TABLE)


class Placement:
    """The placement record and policy of one fleet (see the module doc). `live` reads each server's connection
    numbers (its admin connections); without it, budgets are planned from the configured numbers only."""

    def __init__(self, control_db: ConnectionSpec, fleet: FleetConfig, live: LiveServers) -> None:
        self.control = control_db
        self.fleet = fleet
        self.live = live

    def ensure_schema(self) -> None:
        with self.control.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
            conn.execute(sql.SQL(_DDL).format(schema=sql.Identifier(CONTROL_SCHEMA), table=_table()))

    # -- reading -------------------------------------------------------------------------------------

    def databases(self, shop_id: int | None = None, conn: psycopg.Connection | None = None) -> list[TenantDatabase]:
        where = sql.SQL("WHERE shop_id = %s" if shop_id is not None else "")
        query = sql.SQL(
            "SELECT shop_id, server, kind, pinned, estimated_bytes, measured_bytes FROM {} {} ORDER BY shop_id, server"
        ).format(_table(), where)

        def read(c: psycopg.Connection) -> list[TenantDatabase]:
            try:
                return c.cursor(row_factory=class_row(TenantDatabase)).execute(
                    query, (shop_id,) if shop_id is not None else None
                ).fetchall()
            except psycopg.errors.UndefinedTable:  # nothing placed yet in this control database
                c.rollback()
                return []

        if conn is not None:
            return read(conn)
        with self.control.connect() as c:
            return read(c)

    def tenant_server(self, shop_id: int) -> str | None:
        """The server of the shop's tenant database (the one its registry entry names), if placed."""
        return next((d.server for d in self.databases(shop_id) if d.kind == "tenant"), None)

    def usage(self, conn: psycopg.Connection | None = None) -> dict[str, ServerUsage]:
        """Every configured server's usage (servers holding nothing included), plus servers only the record names."""
        out = {name: ServerUsage(name) for name in self.fleet.names}
        for d in self.databases(conn=conn):
            u = out.get(d.server, ServerUsage(d.server))
            out[d.server] = ServerUsage(
                d.server, u.databases + 1, u.bytes + d.bytes, u.tenants + int(d.kind in ("tenant", "move_target"))
            )
        return out

    def budgets(self, usage: Mapping[str, ServerUsage] | None = None) -> list[ServerBudget]:
        """Each server's connection budget for the tenants it holds now."""
        usage = usage if usage is not None else self.usage()
        return [budget(self.fleet, s, usage.get(s.name, ServerUsage(s.name)).tenants, self.live) for s in self.fleet.servers]

    # -- the policy ----------------------------------------------------------------------------------

    def no_room(self, server: ServerConfig, estimate: int, usage: ServerUsage) -> str:
        """Why `server` cannot take one more tenant of `estimate` bytes (empty: it can)."""
        reasons = []
        if server.max_databases is not None and usage.databases + 1 > server.max_databases:
            reasons.append(f"full: it holds {usage.databases} of {server.max_databases} databases")
        if server.max_bytes is not None and usage.bytes + estimate > server.max_bytes:
            reasons.append(
                f"full: {format_bytes(usage.bytes)} held + {format_bytes(estimate)} for the shop > "
                f"max_bytes {format_bytes(server.max_bytes)}"
            )
        after = budget(self.fleet, server, usage.tenants + 1, self.live)
        if not after.ok:
            reasons.append(f"over its connection budget with one more tenant: {after.describe()}")
        return "; ".join(reasons)

    def choose(self, shop_id: int, estimate: int, usage: Mapping[str, ServerUsage]) -> tuple[str, bool]:
        """(server, pinned) for a new tenant database of the shop; PlacementRefused when none can take it."""
        def used(name: str) -> ServerUsage:
            return usage.get(name, ServerUsage(name))

        pinned = self.fleet.pins.get(shop_id)
        if pinned is not None:
            server = self.fleet.server(pinned)
            why = self.no_room(server, estimate, used(pinned))
            if why:
                raise PlacementRefused(
                    f"shop {shop_id} is pinned to server {pinned}, which cannot take it: {why}. Raise {pinned}'s caps "
                    f"in {self.fleet.source}, unpin the shop, or move tenants off {pinned} (handyshop-migration move-shop)."
                )
            return pinned, True
        candidates: list[ServerConfig] = []
        refusals: list[str] = []
        for server in self.fleet.servers:
            if not server.accept_new:
                refusals.append(f"{server.name}: takes no new tenants (accept_new: false)")
                continue
            why = self.no_room(server, estimate, used(server.name))
            if why:
                refusals.append(f"{server.name}: {why}")
            else:
                candidates.append(server)
        if not candidates:
            raise PlacementRefused(
                f"no tenant server can take shop {shop_id} (about {format_bytes(estimate)}): {'; '.join(refusals)}. "
                f"Add a server to {self.fleet.source}, raise a cap, or move tenants off a full server."
            )
        by_fraction = all(s.max_bytes for s in candidates)

        def fill(s: ServerConfig) -> tuple[float, int, str]:
            u = used(s.name)
            level = (u.bytes + estimate) / s.max_bytes if by_fraction and s.max_bytes else float(u.bytes)
            return level, u.databases, s.name

        return min(candidates, key=fill).name, False

    # -- writing ---------------------------------------------------------------------------------------

    def place(self, shop_id: int, estimate: int, *, registered_on: str | None = None) -> str:
        """The server of the shop's tenant database: the one it has, else chosen now and recorded."""
        with self.control.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
            have = [d for d in self.databases(shop_id, conn) if d.kind == "tenant"]
            if have:
                return have[0].server
            if registered_on is not None:  # provisioned before the fleet's record existed: keep it where it is
                server, pinned = registered_on, False
            else:
                server, pinned = self.choose(shop_id, estimate, self.usage(conn))
            self._insert(conn, shop_id, server, "tenant", estimate, pinned)
            return server

    def reserve_target(self, shop_id: int, server: str, estimate: int) -> None:
        """Room on `server` for the shop's move there (refused when it has none): counted from now on."""
        with self.control.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_LOCK,))
            mine = {d.server: d for d in self.databases(shop_id, conn)}
            if server in mine:
                if mine[server].kind == "tenant":
                    raise PlacementRefused(f"shop {shop_id}'s tenant database is on {server} already.")
                conn.execute(
                    sql.SQL("UPDATE {} SET kind = 'move_target' WHERE shop_id = %s AND server = %s").format(_table()),
                    (shop_id, server),
                )
                return
            why = self.no_room(self.fleet.server(server), estimate, self.usage(conn).get(server, ServerUsage(server)))
            if why:
                raise PlacementRefused(f"server {server} cannot take shop {shop_id}: {why}.")
            self._insert(conn, shop_id, server, "move_target", estimate, False)

    def flip(self, conn: psycopg.Connection, shop_id: int, to_server: str) -> None:
        """Inside the caller's transaction: `to_server` holds the shop's tenant now, the other one its old copy."""
        # Two statements: a unique index is checked row by row, so one UPDATE could meet two 'tenant' rows.
        conn.execute(
            sql.SQL("UPDATE {} SET kind = 'old_copy' WHERE shop_id = %s AND kind = 'tenant' AND server <> %s").format(
                _table()
            ),
            (shop_id, to_server),
        )
        conn.execute(
            sql.SQL("UPDATE {} SET kind = 'tenant' WHERE shop_id = %s AND server = %s").format(_table()),
            (shop_id, to_server),
        )

    def forget(self, shop_id: int, server: str | None = None) -> None:
        """The shop's database on `server` (or all of them) is gone."""
        where = sql.SQL("shop_id = %s" + (" AND server = %s" if server else ""))
        with self.control.connect() as conn, conn.transaction():
            try:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE {}").format(_table(), where),
                    (shop_id, server) if server else (shop_id,),
                )
            except psycopg.errors.UndefinedTable:
                pass  # never placed anything: nothing to forget

    def set_estimate(self, shop_id: int, server: str, estimate: int) -> None:
        with self.control.connect() as conn, conn.transaction():
            conn.execute(
                sql.SQL("UPDATE {} SET estimated_bytes = %s WHERE shop_id = %s AND server = %s").format(_table()),
                (estimate, shop_id, server),
            )

    def measure(self, database_name: Callable[[int], str]) -> dict[str, int]:
        """Measure every placed database on its server (pg_database_size, one query per server) and record it.
        Returns the bytes measured per server."""
        by_server: dict[str, list[TenantDatabase]] = {}
        for d in self.databases():
            by_server.setdefault(d.server, []).append(d)
        totals: dict[str, int] = {}
        with self.control.connect() as conn:
            for server, dbs in by_server.items():
                names = {database_name(d.shop_id): d.shop_id for d in dbs}
                try:
                    rows = self.live.connection(server).execute(
                        "SELECT datname, pg_database_size(oid) FROM pg_database WHERE datname = ANY(%s)", (list(names),)
                    ).fetchall()
                except psycopg.errors.InsufficientPrivilege:
                    continue  # pg_database_size needs CONNECT (or pg_read_all_stats): the estimates stand
                sizes = {names[n]: int(b) for n, b in rows}
                totals[server] = sum(sizes.values())
                with conn.transaction():
                    conn.execute(
                        sql.SQL(
                            "UPDATE {} t SET measured_bytes = m.bytes, measured_at = now() FROM "
                            "(SELECT unnest(%s::bigint[]) AS shop_id, unnest(%s::bigint[]) AS bytes) m "
                            "WHERE t.shop_id = m.shop_id AND t.server = %s"
                        ).format(_table()),
                        (list(sizes), list(sizes.values()), server),
                    )
        return totals

    @staticmethod
    def _insert(conn: psycopg.Connection, shop_id: int, server: str, kind: str, estimate: int, pinned: bool) -> None:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (shop_id, server, kind, pinned, estimated_bytes) VALUES (%s, %s, %s, %s, %s)"
            ).format(_table()),
            (shop_id, server, kind, pinned, estimate),
        )


class ShopSizeEstimator:
    """About how many bytes a shop's tenant database will take: its rows in each tenant table of the shared
    database (the planner's estimate for `WHERE shop_id = N`, no scan) times the table's average row width
    (relation size over its tuples, indexes included), plus an empty tenant."""

    def __init__(self, source: ConnectionSpec, catalog: Catalog) -> None:
        self.source = source
        self.catalog = catalog
        self._widths: dict[str, float] | None = None

    def _row_widths(self, conn: psycopg.Connection) -> dict[str, float]:
        if self._widths is None:
            widths = {}
            for t in self.catalog.tables:
                ident = sql.Identifier(t.schema, t.name)
                size, tuples = one_row(
                    conn,
                    "SELECT pg_total_relation_size(c.oid), c.reltuples FROM pg_class c WHERE c.oid = %s::regclass",
                    (ident.as_string(None),),
                )
                # Never analyzed (-1) or empty: no width to go by (a count would scan a production table); the
                # measured size corrects the record later (`measure`).
                widths[t.name] = float(size) / float(tuples) if float(tuples) > 0 else 0.0
            self._widths = widths
        return self._widths

    def __call__(self, shop_id: int) -> int:
        total = float(EMPTY_TENANT_BYTES)
        with self.source.connect() as conn:
            widths = self._row_widths(conn)
            for t in self.catalog.tables:
                if not widths[t.name] or not t.tenant_column:
                    continue  # implied and reference tables are not estimated by a shop's column: `measure` corrects
                plan = one_row(
                    conn,
                    sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM ONLY {} WHERE {} = %s").format(
                        sql.Identifier(t.schema, t.name), sql.Identifier(t.tenant_column)
                    ),
                    (shop_id,),
                )
                total += int(plan[0][0]["Plan"]["Plan Rows"]) * widths[t.name]
        return int(total)

    def all_shops(self, shop_ids: list[int]) -> dict[int, int]:
        """The estimate of every shop at once (phase 0's plan): one GROUP BY per table."""
        totals = dict.fromkeys(shop_ids, float(EMPTY_TENANT_BYTES))
        with self.source.connect() as conn:
            widths = self._row_widths(conn)
            for t in self.catalog.tables:
                if not t.tenant_column:
                    continue  # implied and reference tables: not estimated by a shop's column (`measure` corrects)
                tc = sql.Identifier(t.tenant_column)
                rows = conn.execute(
                    sql.SQL("SELECT {}, count(*) FROM ONLY {} WHERE {} = ANY(%s) GROUP BY 1").format(
                        tc, sql.Identifier(t.schema, t.name), tc
                    ),
                    (shop_ids,),
                ).fetchall()
                for shop, count in rows:
                    totals[int(shop)] += int(count) * widths[t.name]
        return {s: int(b) for s, b in totals.items()}


__all__ = ["EMPTY_TENANT_BYTES", "KINDS", "Placement", "ServerUsage", "ShopSizeEstimator", "TenantDatabase"]
