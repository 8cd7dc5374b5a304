"""Connections to tenant databases: one lazily created pool per shop, with a global cap and LRU eviction.

Unlike the app's TenantRouter (reference §4.2) the number of pools is capped (the least recently used
pool is closed to make room), a failed pool is closed instead of leaked, and failures name the shop,
database and role but never the password. With tenants on several servers the caps hold per server too
(`max_pools_per_server`): a server's least recently used pool makes room for another on the same server,
so what one process can hold on a server is `max_pools_per_server × max_size` whatever the others hold —
the figure the fleet's connection plan checks each server against (`tenancy.fleet.budget`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from handyshop_migration.tenancy.application.registry import ConnectionRegistry, TenantCredentials
from handyshop_migration.tenancy.dsn import SESSION_SETTINGS
from handyshop_migration.tenancy.errors import ConnectionFailed
from handyshop_migration.tenancy.secrets import one_line

# The same -c options ConnectionSpec.connect sends, so pooled sessions render values identically.
SESSION_OPTIONS = " ".join(f"-c {k}={v.replace(' ', '')}" for k, v in SESSION_SETTINGS.items())

_POOL_CLOSE_TIMEOUT = 5.0


@dataclass
class _Slot:
    pool: ConnectionPool
    creds: TenantCredentials
    busy: int = 0  # connections handed out and not yet returned; busy pools are evicted last


def _where(creds: TenantCredentials) -> str:
    return f"shop {creds.shop_id} (database {creds.database}, role {creds.role} on {creds.host}:{creds.port})"


class TenantRouter:
    """Hands out connections to tenant databases, as the tenant's role, from per-shop pools."""

    def __init__(
        self,
        registry: ConnectionRegistry,
        *,
        max_size: int = 20,
        max_idle: float = 30.0,
        connect_timeout: float = 10.0,
        max_pools: int = 50,
        max_pools_per_server: int | None = None,
    ) -> None:
        # Explicit checks: the app's `x || default` made 0 impossible to set; here bad values fail loudly.
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        if not max_idle > 0:
            raise ValueError(f"max_idle must be greater than 0 seconds, got {max_idle}")
        if not connect_timeout > 0:
            raise ValueError(f"connect_timeout must be greater than 0 seconds, got {connect_timeout}")
        if max_pools < 1:
            raise ValueError(f"max_pools must be at least 1, got {max_pools}")
        if max_pools_per_server is not None and max_pools_per_server < 1:
            raise ValueError(f"max_pools_per_server must be at least 1, got {max_pools_per_server}")
        self.registry = registry
        self.max_size = max_size
        self.max_idle = float(max_idle)
        self.connect_timeout = float(connect_timeout)
        self.max_pools = max_pools
        self.max_pools_per_server = max_pools_per_server
        self._slots: OrderedDict[int, _Slot] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()
        self._creating: dict[int, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"TenantRouter(pools={self.pool_count}/{self.max_pools}, max_size={self.max_size})"

    @property
    def pool_count(self) -> int:
        with self._lock:
            return len(self._slots)

    @property
    def open_shops(self) -> list[int]:
        """Shops with an open pool, least recently used first."""
        with self._lock:
            return list(self._slots)

    def pools_per_server(self) -> dict[str, int]:
        """Open pools by the server their tenant database is on (the registry entry's `server`)."""
        with self._lock:
            counts: dict[str, int] = {}
            for slot in self._slots.values():
                counts[slot.creds.server] = counts.get(slot.creds.server, 0) + 1
            return counts

    # -- pools ------------------------------------------------------------------------------------

    def _libpq_timeout(self) -> int:
        return max(2, math.ceil(self.connect_timeout))  # libpq takes whole seconds and treats 1 as 2

    def _probe(self, creds: TenantCredentials) -> None:
        """Open and close one connection, so bad credentials fail now with the server's reason.

        Without it the pool would retry in the background and the caller would only see a bare
        PoolTimeout after connect_timeout seconds.
        """
        try:
            creds.spec().connect(connect_timeout=self._libpq_timeout()).close()
        except ConnectionFailed as exc:
            raise ConnectionFailed(f"cannot connect to {_where(creds)}: {one_line(exc)}") from None

    def _open_pool(self, shop_id: int) -> _Slot:
        creds = self.registry.get(shop_id)
        try:
            self._probe(creds)
        except ConnectionFailed:
            self.registry.invalidate(shop_id)  # the entry may be stale: re-read it on the next attempt
            raise
        pool: ConnectionPool = ConnectionPool(
            conninfo=creds.spec().conninfo(options=SESSION_OPTIONS, connect_timeout=self._libpq_timeout()),
            min_size=0,  # idle tenants hold no connections; psycopg_pool >= 3.1 grows from 0 on demand
            max_size=self.max_size,
            max_idle=self.max_idle,
            timeout=self.connect_timeout,
            check=ConnectionPool.check_connection,  # drop connections the server closed (restart, DB dropped)
            open=True,
            name=f"shop-{shop_id}",
            # Each worker is a thread per pool; the pool grows one connection at a time anyway, and
            # with up to max_pools pools the default 3 would mean hundreds of idle threads.
            num_workers=1,
        )
        return _Slot(pool, creds)

    def _acquire_slot(self, shop_id: int) -> _Slot:
        """The shop's pool slot, created if needed, marked busy and most recently used."""
        with self._lock:
            slot = self._slots.get(shop_id)
            if slot is not None:
                self._slots.move_to_end(shop_id)
                slot.busy += 1
                return slot
            creating = self._creating.setdefault(shop_id, threading.Lock())
        # Per-shop lock: one slow or unreachable tenant does not hold up the others.
        with creating:
            with self._lock:
                slot = self._slots.get(shop_id)
                if slot is not None:  # another thread created it while we waited
                    self._slots.move_to_end(shop_id)
                    slot.busy += 1
                    return slot
            try:
                new = self._open_pool(shop_id)
            finally:
                with self._lock:
                    self._creating.pop(shop_id, None)
            evicted: list[_Slot] = []
            with self._lock:
                slot = self._slots.get(shop_id)
                if slot is None:
                    evicted = self._make_room(new.creds.server)
                    slot = self._slots[shop_id] = new
                else:  # lost a race with a second creator: keep theirs
                    evicted = [new]
                self._slots.move_to_end(shop_id)
                slot.busy += 1
        for old in evicted:
            self._close_slot(old)
        return slot

    def _make_room(self, server: str) -> list[_Slot]:
        """With the lock held: remove slots until one more fits on `server` and in all, idle ones first, least
        recently used first."""
        evicted: list[_Slot] = []

        def evict(among: list[int]) -> None:
            victim = next((s for s in among if self._slots[s].busy == 0), None)
            if victim is None:
                # All busy: close the least recently used anyway; its checked-out connections finish
                # their work and are closed when returned.
                victim = among[0]
            evicted.append(self._slots.pop(victim))

        if self.max_pools_per_server is not None:
            while True:
                same = [s for s, slot in self._slots.items() if slot.creds.server == server]
                if len(same) < self.max_pools_per_server:
                    break
                evict(same)
        while len(self._slots) >= self.max_pools:
            evict(list(self._slots))
        return evicted

    @staticmethod
    def _close_slot(slot: _Slot) -> None:
        slot.pool.close(timeout=_POOL_CLOSE_TIMEOUT)

    def _discard(self, shop_id: int, slot: _Slot) -> None:
        """Close `slot`, and forget it unless another thread has already replaced it."""
        with self._lock:
            if self._slots.get(shop_id) is slot:
                del self._slots[shop_id]
        self._close_slot(slot)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.busy -= 1

    def _diagnose(self, slot: _Slot, shop_id: int) -> ConnectionFailed:
        """Why a pool gave no connection in time: the server refuses us, or every connection is in use."""
        try:
            self._probe(slot.creds)
        except ConnectionFailed as exc:
            # Credentials or database changed under us: drop the pool so the next call starts afresh.
            self._discard(shop_id, slot)
            self.registry.invalidate(shop_id)
            return exc
        return ConnectionFailed(
            f"no free connection to {_where(slot.creds)} within {self.connect_timeout:g} s: all "
            f"{self.max_size} pooled connections are in use. Return connections sooner or raise max_size."
        )

    # -- public -----------------------------------------------------------------------------------

    @contextmanager
    def connection(self, shop_id: int) -> Iterator[psycopg.Connection]:
        """A pooled connection to the shop's database as its role; commits on success, rolls back on error."""
        deadline: float | None = None
        while True:
            slot = self._acquire_slot(shop_id)
            if deadline is None:  # counted from here: a new pool's probe had its own connect timeout
                deadline = time.monotonic() + self.connect_timeout
            try:
                conn = slot.pool.getconn(timeout=max(deadline - time.monotonic(), 0.001))
                break
            except PoolClosed:
                # Evicted between lookup and checkout because every pool was busy: take a fresh one.
                self._release(slot)
                if time.monotonic() >= deadline:
                    raise ConnectionFailed(
                        f"no connection to shop {shop_id} within {self.connect_timeout:g} s: its pool kept "
                        f"being evicted because more than max_pools={self.max_pools} tenants are in use at "
                        "once; raise max_pools."
                    ) from None
            except PoolTimeout:
                self._release(slot)
                raise self._diagnose(slot, shop_id) from None
            except BaseException:
                self._release(slot)
                raise
        try:
            # The connection's own context manager commits or rolls back; with a pool it does not close.
            with conn:
                yield conn
        finally:
            slot.pool.putconn(conn)
            self._release(slot)

    def close(self, shop_id: int) -> None:
        """Close the shop's pool (after deprovisioning or a password change); the next call reopens it."""
        with self._lock:
            slot = self._slots.pop(shop_id, None)
        if slot is not None:
            self._close_slot(slot)

    def close_all(self) -> None:
        """Close every pool. The router stays usable: pools are reopened on demand."""
        with self._lock:
            slots = list(self._slots.values())
            self._slots.clear()
        for slot in slots:
            self._close_slot(slot)

    def __enter__(self) -> TenantRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_all()


__all__ = ["SESSION_OPTIONS", "TenantRouter"]
