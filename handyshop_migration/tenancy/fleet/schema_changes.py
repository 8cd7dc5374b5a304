"""Tenant schema changes for the whole fleet: every migration file reaches every shop's tenant database.

A new `NNNN_name.sql` in the tenant migrations directory is pending work for every provisioned shop (shops
provisioned later get it from the template). `SchemaChanges.apply(shop)` applies a shop's pending migrations
under the runner's rules (`engine.migrations`: checksums of applied files verified, one transaction under
the tenant's advisory lock), **as the shop's owner role** (never the admin: the privilege boundary), after
the lifecycle and the capture contract (`contract.py`) allow it:

- shops not provisioned yet (registered, provisioning, deprovisioning) get every migration when they are;
- a shop being moved to another server takes them after the move (the move refuses a source that is behind);
- a migration that would break what the migration relies on for the shop (its capture, its way back) is
  refused for that shop with the reason; nothing of it is applied there.

`fan_out()` does it for every shop at once, `per_server` at a time on each server (an advisory-lock semaphore
in the control database, so the limit holds across runs and processes), a failure stopping only its shop.
Each shop's version is recorded in its lifecycle details (`schema_version`, and `schema_error` while it is
behind), where `status` and the stale list read it in one query; the tenant's own
`handyshop_migration.schema_migrations` stays the truth.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.migrations import (
    Migration,
    applied_migrations,
    apply_migrations,
    check,
    schema_version,
    with_shop,
)
from handyshop_migration.tenancy.errors import HandyshopError, LifecycleRefused, SchemaChangeRefused
from handyshop_migration.tenancy.fleet import contract
from handyshop_migration.tenancy.lifecycle import ShopState, State
from handyshop_migration.tenancy.secrets import one_line
from handyshop_migration.tenancy.workflow import Workflow

NOT_PROVISIONED = frozenset({State.REGISTERED, State.PROVISIONING, State.DEPROVISIONING})


@dataclass(frozen=True)
class ShopSchema:
    shop_id: int
    server: str
    version: str  # the newest migration applied in the tenant
    applied: tuple[str, ...] = ()  # applied by this call
    seconds: float = 0.0
    error: str = ""  # why the shop is still behind (refused or failed); empty when it is current
    refused: bool = False  # the lifecycle or the capture contract refused it (nothing was tried)

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass
class FanoutReport:
    newest: str
    results: list[ShopSchema] = field(default_factory=list)
    not_provisioned: list[int] = field(default_factory=list)  # they get every migration when provisioned
    seconds: float = 0.0

    @property
    def failed(self) -> list[ShopSchema]:
        return [r for r in self.results if not r.ok]

    @property
    def applied(self) -> int:
        return sum(1 for r in self.results if r.applied)

    def versions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.version] = out.get(r.version, 0) + 1
        return dict(sorted(out.items()))


class ServerSlots:
    """At most `limit` holders per server at once, across processes: session advisory locks
    (key: the server's name, slot number) in the control database."""

    def __init__(self, control: ConnectionSpec, limit: int, *, poll: float = 0.05) -> None:
        if limit < 1:
            raise ValueError(f"per-server limit must be at least 1, got {limit}")
        self.control = control
        self.limit = limit
        self.poll = poll

    @staticmethod
    def key(server: str) -> int:
        return zlib.crc32(f"handyshop-migration/schema-slots/{server}".encode()) & 0x7FFFFFFF

    @contextmanager
    def hold(self, server: str) -> Iterator[int]:
        key = self.key(server)
        with self.control.connect(autocommit=True) as conn:
            delay = self.poll
            while True:
                for slot in range(self.limit):
                    row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (key, slot)).fetchone()
                    if row and row[0]:
                        try:
                            yield slot
                        finally:
                            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (key, slot))
                        return
                time.sleep(delay)
                delay = min(delay * 2, 1.0)


class SchemaChanges:
    """Tenant migrations across the fleet, through the workflow (its registry, lifecycle and tenant logins)."""

    def __init__(self, workflow: Workflow, *, per_server: int = 4) -> None:
        self.workflow = workflow
        self.migrations: Sequence[Migration] = workflow.provisioner.migrations
        self.slots = ServerSlots(workflow.source, per_server)
        self.per_server = per_server
        self._noted: dict[int, dict[str, object]] = {}
        self._lock = threading.Lock()

    def migrations_of(self, shop_id: int) -> tuple[Migration, ...]:
        """The shop's migrations: the fleet's, with its own objects (a catalog's per-tenant index or view) after
        0001, as provisioning applied them; without those its recorded `0001_tenant_schema_shop` is unknown."""
        provisioner = self.workflow.provisioner
        own = provisioner.shop_migrations(shop_id) if provisioner.shop_migrations else ()
        return with_shop(self.migrations, own)

    @property
    def newest(self) -> str:
        return self.migrations[-1].name if self.migrations else ""

    def _refusal(self, record: ShopState) -> str | None:
        if record.state in NOT_PROVISIONED:
            return (
                f"shop {record.shop_id} is {record.state.value}: it gets every tenant migration when it is provisioned"
            )
        if record.state == State.MOVING:
            return (
                f"shop {record.shop_id} is moving to another server: its migrations run once the move is done "
                "(run the schema changes again then)"
            )
        return None

    def apply(self, shop_id: int, record: ShopState | None = None) -> ShopSchema:
        """Apply the shop's pending migrations; raises (SchemaChangeRefused, MigrationError, …) when it cannot."""
        record = record or self.workflow.lifecycle.get(shop_id)
        why = self._refusal(record)
        if why:
            raise LifecycleRefused(why + ".")
        creds = self.workflow.registry.get(shop_id)
        tenant = self.workflow.tenant(shop_id)
        started = time.perf_counter()
        migrations = self.migrations_of(shop_id)
        with tenant.connect() as conn:
            recorded = applied_migrations(conn)
            pending = check(recorded, migrations, creds.database)
            conn.rollback()
            if not pending:
                return ShopSchema(shop_id, creds.server, schema_version(list(recorded)), (), time.perf_counter() - started)
            refused = contract.refusal(shop_id, record.state, pending, self.workflow.catalog)
            if refused:
                raise SchemaChangeRefused(refused)
            with self.slots.hold(creds.server):
                report = apply_migrations(conn, migrations)
        return ShopSchema(shop_id, creds.server, report.version, report.applied, time.perf_counter() - started)

    def run_one(self, shop_id: int, record: ShopState | None = None, *, batch: bool = False) -> ShopSchema:
        """`apply`, with the outcome recorded in the shop's details (what status and the stale list read); with
        `batch` the record waits for the next 50 (`flush()` writes the rest)."""
        try:
            result = self.apply(shop_id, record)
        except (HandyshopError, psycopg.Error) as exc:
            refused = isinstance(exc, LifecycleRefused | SchemaChangeRefused)
            server = ""
            try:
                server = self.workflow.registry.get(shop_id).server
            except HandyshopError:
                pass
            version = str((record.details if record else {}).get("schema_version", ""))
            result = ShopSchema(shop_id, server, version, error=one_line(exc), refused=refused)
        self._note(result)
        if not batch:
            self.flush()
        return result

    def _note(self, result: ShopSchema) -> None:
        details: dict[str, object] = {"schema_error": result.error or None}
        if result.ok:
            details["schema_version"] = result.version
            if result.applied:
                details["schema_changed_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        with self._lock:
            self._noted[result.shop_id] = details
            if len(self._noted) < 50:
                return
            batch, self._noted = self._noted, {}
        self.workflow.lifecycle.note(batch)

    def flush(self) -> None:
        with self._lock:
            batch, self._noted = self._noted, {}
        if batch:
            self.workflow.lifecycle.note(batch)

    def fan_out(self, shop_ids: Sequence[int] | None = None, *, workers: int | None = None) -> FanoutReport:
        """Every provisioned shop (or those of `shop_ids`) to the newest migration; failures stop only their shop."""
        started = time.perf_counter()
        report = FanoutReport(self.newest)
        records = self.workflow.lifecycle.all(list(shop_ids) if shop_ids is not None else None)
        todo = []
        for record in records:
            if record.state in NOT_PROVISIONED:
                report.not_provisioned.append(record.shop_id)
            else:
                todo.append(record)
        # Interleaved by server, so that every server's slots are busy from the start.
        by_server: dict[str, list[ShopState]] = {}
        for record in todo:
            by_server.setdefault(str(record.details.get("server", "")), []).append(record)
        todo = [r for rank in range(max(map(len, by_server.values()), default=0))
                for group in by_server.values() if rank < len(group) for r in [group[rank]]]
        size = workers or max(1, min(len(todo), self.per_server * max(1, len(by_server))))
        try:
            with ThreadPoolExecutor(max_workers=size, thread_name_prefix="schema") as pool:
                report.results = list(pool.map(lambda r: self.run_one(r.shop_id, r, batch=True), todo))
        finally:
            self.flush()
        report.seconds = time.perf_counter() - started
        return report

    def stale(self, records: Sequence[ShopState] | None = None) -> list[ShopState]:
        """Provisioned shops whose recorded version is behind the newest migration (one query)."""
        records = records if records is not None else self.workflow.lifecycle.all()
        return [
            r for r in records
            if r.state not in NOT_PROVISIONED and str(r.details.get("schema_version", "")) != self.newest
        ]


__all__ = ["FanoutReport", "SchemaChanges", "ServerSlots", "ShopSchema"]
