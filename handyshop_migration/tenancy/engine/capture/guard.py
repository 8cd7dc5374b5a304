"""The tenant write guard: a tenant database refuses writes (HS001, with a hint to route again) until its
shop is live, and again while the way back fences it; the migration's replays (replica mode) pass.

State, in the tenant's one-row `handyshop_migration.tenant_state`:
- not live (`accepts_writes` false, `live_since` NULL): provisioned, being copied and synced;
- live (`accepts_writes`, `live_since` set): the shop's writes go here;
- closed (`accepts_writes` false, `live_since` still set): the rollback fence — the tenant holds writes the
  shared database has not got back yet, so it must never be reloaded (`copy.refuse_if_live` reads this).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.engine.capture import _sql
from handyshop_migration.tenancy.engine.capture.shared import wait_for_older_transactions
from handyshop_migration.tenancy.engine.catalog import Catalog, Table
from handyshop_migration.tenancy.errors import CaptureError, UnexpectedResult

GUARD_TRIGGER = "handyshop_guard"


@dataclass(frozen=True)
class TenantGuardState:
    shop_id: int
    accepts_writes: bool
    live_since: datetime | None
    reason: str
    since: datetime

    @property
    def state(self) -> str:
        if self.accepts_writes:
            return "live"
        return "closed" if self.live_since is not None else "not live"


def _guard_trigger(table: Table) -> sql.Composed:
    return sql.SQL(
        "CREATE OR REPLACE TRIGGER {} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {} FOR EACH STATEMENT "
        "EXECUTE FUNCTION handyshop_migration.guard()"
    ).format(sql.Identifier(GUARD_TRIGGER), sql.Identifier(table.schema, table.name))


def tenant_guard_sql(catalog: Catalog) -> str:
    """The guard's DDL (state table, function, one trigger per tenant table), idempotent: for the tenant
    template, or for `install_tenant_guard`. The state row is per database (`install_tenant_guard`);
    without it the guard refuses every write."""
    parts = [_sql.text("guard.sql")] + [_guard_trigger(t).as_string(None) + ";" for t in catalog.tables]
    return "\n".join(parts)


def claim_tenant_guard(tenant: psycopg.Connection, shop_id: int) -> TenantGuardState:
    """The guard's state row for the shop, in a database whose schema already holds the guard (the tenant
    template does: it is part of the tenant schema's first migration). Idempotent; refuses another shop's."""
    with tenant.transaction():
        _claim(tenant, shop_id)
    return _state(tenant)


def _claim(tenant: psycopg.Connection, shop_id: int) -> None:
    held = tenant.execute("SELECT shop_id FROM handyshop_migration.tenant_state").fetchone()
    if held is not None and int(held[0]) != shop_id:
        raise CaptureError(f"this tenant database belongs to shop {held[0]}, not to shop {shop_id}.")
    tenant.execute("INSERT INTO handyshop_migration.tenant_state (shop_id) VALUES (%s) ON CONFLICT DO NOTHING", (shop_id,))


def install_tenant_guard(tenant: psycopg.Connection, catalog: Catalog, shop_id: int) -> TenantGuardState:
    """Put the guard in place in a tenant database (idempotent; an existing state is kept). Works as the
    tenant role (owner of its tables and of the schema) or as the admin before the tenant owns them."""
    with tenant.transaction():
        tenant.execute(tenant_guard_sql(catalog).encode())
        _claim(tenant, shop_id)
    return _state(tenant)


def tenant_guard_state(tenant: psycopg.Connection) -> TenantGuardState | None:
    """The guard's state, or None where no guard is installed (does not end a caller's transaction)."""
    inside = tenant.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    row = None
    if tenant.execute("SELECT to_regclass('handyshop_migration.tenant_state')").fetchone() != (None,):
        row = tenant.execute(
            "SELECT shop_id, accepts_writes, live_since, reason, since FROM handyshop_migration.tenant_state"
        ).fetchone()
    if not inside:
        tenant.rollback()
    return None if row is None else TenantGuardState(int(row[0]), bool(row[1]), row[2], str(row[3]), row[4])


def _state(tenant: psycopg.Connection) -> TenantGuardState:
    state = tenant_guard_state(tenant)
    if state is None:
        raise UnexpectedResult("the tenant's write guard has no state row right after it was written.")
    return state


def _set(tenant: psycopg.Connection, shop_id: int, reason: str, assignments: str) -> TenantGuardState:
    with tenant.transaction():
        updated = tenant.execute(
            sql.SQL("UPDATE handyshop_migration.tenant_state SET {}, reason = %s, since = now() WHERE shop_id = %s").format(
                sql.SQL(assignments)
            ),
            (reason, shop_id),
        ).rowcount
    if not updated:
        raise CaptureError(
            f"shop {shop_id}'s tenant database has no write guard for it; install it (install_tenant_guard) first."
        )
    return _state(tenant)


def open_tenant_writes(tenant: psycopg.Connection, catalog: Catalog, shop_id: int, reason: str) -> TenantGuardState:
    """The tenant takes the shop's writes from now on (the cutover's flip): live. Installs the guard if
    it is missing."""
    install_tenant_guard(tenant, catalog, shop_id)
    return _set(tenant, shop_id, reason, "accepts_writes = true, live_since = coalesce(live_since, now())")


def close_tenant_writes(tenant: psycopg.Connection, shop_id: int, reason: str) -> TenantGuardState:
    """The rollback fence: the tenant refuses the shop's writes again (it still holds them: `live_since`
    stays). Returns after every older transaction ended, so no write of the tenant is missed by a copy-back
    that starts now."""
    state = _set(tenant, shop_id, reason, "accepts_writes = false")
    wait_for_older_transactions(tenant)
    return state


def end_tenant_live(tenant: psycopg.Connection, shop_id: int, reason: str) -> TenantGuardState:
    """The way back is complete (every write copied back): not live; the tenant may be reloaded again."""
    return _set(tenant, shop_id, reason, "accepts_writes = false, live_since = NULL")
