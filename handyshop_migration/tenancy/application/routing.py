"""Phase 4: where each shop's reads and writes go, and the function an application asks.

The routing table lives in the control database. Per shop: `reads` (shared, rollout, tenant), `writes`
(shared, tenant) and a lifecycle `state`; every change is recorded in `routing_history` with its time and
reason. Reads are moved gradually across shops: a shop in `rollout` reads from its tenant when its
deterministic bucket, `(shop_id × 2654435761) mod 2^32 mod 100` (the real app's rule), is below the global
percentage — so raising the percentage moves shops over one by one and never flips a shop back and forth.

`RouteResolver.resolve(shop_id, "read"|"write")` is what an application (or a proxy) calls for a DSN. It
caches routes for a short TTL; when a write hits the fence (SQLSTATE HS001) the caller invalidates the
shop and asks again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
from psycopg.rows import class_row

from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConfigurationError, RoutingRefused

READS = ("shared", "rollout", "tenant")
WRITES = ("shared", "tenant")
STATES = ("shared", "reads_rollout", "cutting_over", "live", "rolling_back", "retired")

_DDL = """
CREATE SCHEMA IF NOT EXISTS handyshop_migration;
CREATE TABLE IF NOT EXISTS handyshop_migration.routing (
    shop_id bigint PRIMARY KEY,
    reads text NOT NULL DEFAULT 'shared' CHECK (reads IN ('shared', 'rollout', 'tenant')),
    writes text NOT NULL DEFAULT 'shared' CHECK (writes IN ('shared', 'tenant')),
    state text NOT NULL DEFAULT 'shared'
        CHECK (state IN ('shared', 'reads_rollout', 'cutting_over', 'live', 'rolling_back', 'retired')),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (writes = 'shared' OR reads = 'tenant')  -- whoever writes to the tenant reads from it (read-your-writes)
);
CREATE TABLE IF NOT EXISTS handyshop_migration.routing_history (
    id bigserial PRIMARY KEY,
    shop_id bigint NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    state text NOT NULL,
    reads text NOT NULL,
    writes text NOT NULL,
    reason text NOT NULL
);
CREATE INDEX IF NOT EXISTS routing_history_shop_idx ON handyshop_migration.routing_history (shop_id, id);
CREATE TABLE IF NOT EXISTS handyshop_migration.routing_settings (
    key text PRIMARY KEY,
    value text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS handyshop_migration.id_reservations (
    shop_id bigint NOT NULL,
    sequence text NOT NULL,
    first_id bigint NOT NULL,
    last_id bigint NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, sequence, first_id)
);
"""

Intent = Literal["read", "write"]


def read_bucket(shop_id: int) -> int:
    return (shop_id * 2654435761) % 2**32 % 100


@dataclass(frozen=True)
class RouteState:
    shop_id: int
    reads: str
    writes: str
    state: str
    updated_at: datetime | None = None

    def target(self, intent: Intent, read_percent: int) -> str:
        if intent == "write":
            return self.writes
        if self.reads == "rollout":
            return "tenant" if read_bucket(self.shop_id) < read_percent else "shared"
        return self.reads


@dataclass(frozen=True)
class HistoryEntry:
    shop_id: int
    at: datetime
    state: str
    reads: str
    writes: str
    reason: str


class RoutingTable:
    def __init__(self, control: ConnectionSpec) -> None:
        self.control = control

    def ensure_schema(self) -> None:
        with self.control.connect() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('handyshop_migration.routing'))")
            conn.execute(_DDL.encode())

    def get(self, shop_id: int, conn: psycopg.Connection | None = None) -> RouteState:
        def read(c: psycopg.Connection) -> RouteState:
            row = c.cursor(row_factory=class_row(RouteState)).execute(
                "SELECT shop_id, reads, writes, state, updated_at FROM handyshop_migration.routing WHERE shop_id = %s",
                (shop_id,),
            ).fetchone()
            return row or RouteState(shop_id, "shared", "shared", "shared")

        if conn is not None:
            return read(conn)
        with self.control.connect() as c:
            return read(c)

    def set(
        self,
        shop_id: int,
        *,
        reason: str,
        state: str,
        reads: str | None = None,
        writes: str | None = None,
        expect: tuple[str, ...] | None = None,
    ) -> RouteState:
        """Change a shop's route and record why, atomically. `expect` lists the states it may come from."""
        if state not in STATES:
            raise ConfigurationError(f"routing state {state!r} is not one of {', '.join(STATES)}.")
        if not reason.strip():
            raise ConfigurationError("every routing change needs a reason.")
        with self.control.connect() as conn, conn.transaction():
            current = conn.cursor(row_factory=class_row(RouteState)).execute(
                "SELECT shop_id, reads, writes, state, updated_at FROM handyshop_migration.routing "
                "WHERE shop_id = %s FOR UPDATE",
                (shop_id,),
            ).fetchone() or RouteState(shop_id, "shared", "shared", "shared")
            if expect is not None and current.state not in expect:
                raise RoutingRefused(
                    f"shop {shop_id} is in routing state {current.state!r}; this step needs "
                    f"{' or '.join(repr(e) for e in expect)}."
                )
            new = RouteState(shop_id, reads or current.reads, writes or current.writes, state)
            if new.reads not in READS or new.writes not in WRITES:
                raise ConfigurationError(f"reads must be one of {READS}, writes one of {WRITES}.")
            conn.execute(
                "INSERT INTO handyshop_migration.routing (shop_id, reads, writes, state) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (shop_id) DO UPDATE SET reads = excluded.reads, writes = excluded.writes, "
                "state = excluded.state, updated_at = now()",
                (shop_id, new.reads, new.writes, new.state),
            )
            conn.execute(
                "INSERT INTO handyshop_migration.routing_history (shop_id, state, reads, writes, reason) "
                "VALUES (%s, %s, %s, %s, %s)",
                (shop_id, new.state, new.reads, new.writes, reason),
            )
        return self.get(shop_id)

    def history(self, shop_id: int) -> list[HistoryEntry]:
        with self.control.connect() as conn:
            return conn.cursor(row_factory=class_row(HistoryEntry)).execute(
                "SELECT shop_id, at, state, reads, writes, reason FROM handyshop_migration.routing_history "
                "WHERE shop_id = %s ORDER BY id",
                (shop_id,),
            ).fetchall()

    def read_percent(self, conn: psycopg.Connection | None = None) -> int:
        def read(c: psycopg.Connection) -> int:
            row = c.execute(
                "SELECT value FROM handyshop_migration.routing_settings WHERE key = 'read_rollout_percent'"
            ).fetchone()
            return int(row[0]) if row else 0

        if conn is not None:
            return read(conn)
        with self.control.connect() as c:
            return read(c)

    def set_read_percent(self, percent: int, reason: str) -> None:
        if not 0 <= percent <= 100:
            raise ConfigurationError(f"read rollout percentage must be 0..100, got {percent}.")
        with self.control.connect() as conn, conn.transaction():
            conn.execute(
                "INSERT INTO handyshop_migration.routing_settings (key, value) VALUES ('read_rollout_percent', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
                (str(percent),),
            )
            conn.execute(
                "INSERT INTO handyshop_migration.routing_history (shop_id, state, reads, writes, reason) "
                "VALUES (0, 'shared', 'rollout', 'shared', %s)",
                (f"read rollout set to {percent}%: {reason}",),
            )

    def all(self) -> list[RouteState]:
        with self.control.connect() as conn:
            return conn.cursor(row_factory=class_row(RouteState)).execute(
                "SELECT shop_id, reads, writes, state, updated_at FROM handyshop_migration.routing ORDER BY shop_id"
            ).fetchall()



@dataclass(frozen=True)
class Route:
    shop_id: int
    intent: str
    target: str  # "shared" or "tenant"
    spec: ConnectionSpec  # where to connect (holds a password: do not log it; its repr does not show it)

    def conninfo(self) -> str:
        return self.spec.conninfo()


class RouteResolver:
    """What an application calls for a shop's DSN. Thread-safe; routes cached for `ttl` seconds."""

    def __init__(
        self, routing: RoutingTable, registry: ConnectionRegistry, shared: ConnectionSpec, *, ttl: float = 2.0
    ) -> None:
        self.routing = routing
        self.registry = registry
        self.shared = shared
        self.ttl = ttl
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[float, RouteState, int]] = {}

    def invalidate(self, shop_id: int | None = None) -> None:
        with self._lock:
            if shop_id is None:
                self._cache.clear()
            else:
                self._cache.pop(shop_id, None)

    def _state(self, shop_id: int) -> tuple[RouteState, int]:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(shop_id)
            if hit is not None and now - hit[0] < self.ttl:
                return hit[1], hit[2]
        with self.routing.control.connect() as conn:
            state, percent = self.routing.get(shop_id, conn), self.routing.read_percent(conn)
        with self._lock:
            self._cache[shop_id] = (now, state, percent)
        return state, percent

    def resolve(self, shop_id: int, intent: Intent) -> Route:
        state, percent = self._state(shop_id)
        target = state.target(intent, percent)
        if target == "tenant":
            return Route(shop_id, intent, target, self.registry.get(shop_id).spec())
        return Route(shop_id, intent, "shared", self.shared)
