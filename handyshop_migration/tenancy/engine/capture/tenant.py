"""The tenant database's side of capture: while a shop is live, every write its tenant takes is logged by
key (the way back from phase 4 copies them back with `apply_changes(TO_SHARED, ...)`).

Created and used by the tenant role itself: plain (invoker) functions in its own schema, triggers on its
own tables. Tables without a key log '{}' per write; the applier then copies the table back whole."""

from __future__ import annotations

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.engine.capture import _sql
from handyshop_migration.tenancy.engine.capture.guard import tenant_guard_state
from handyshop_migration.tenancy.engine.capture.shared import Lag
from handyshop_migration.tenancy.engine.catalog import Catalog

TENANT_TRIGGER = "handyshop_capture"
TENANT_TRUNCATE_TRIGGER = "handyshop_capture_truncate"


def enable_tenant_capture(tenant: psycopg.Connection, catalog: Catalog, shop_id: int) -> None:
    """Log every write the tenant takes from now on, so that a rollback can copy them back (idempotent)."""
    with tenant.transaction():
        tenant.execute(_sql.text("tenant_schema.sql").encode())
        for t in catalog.tables:
            fn = sql.Identifier("handyshop_migration", _sql.function_name(t, "capture"))
            ident = sql.Identifier(t.schema, t.name)
            tenant.execute(_sql.capture_function("tenant_capture.sql", fn, t))
            tenant.execute(
                sql.SQL(
                    "CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()"
                ).format(sql.Identifier(TENANT_TRIGGER), ident, fn)
            )
            tenant.execute(
                sql.SQL(
                    "CREATE OR REPLACE TRIGGER {} BEFORE TRUNCATE ON {} FOR EACH STATEMENT "
                    "EXECUTE FUNCTION handyshop_migration.refuse_truncate()"
                ).format(sql.Identifier(TENANT_TRUNCATE_TRIGGER), ident)
            )


def disable_tenant_capture(tenant: psycopg.Connection, catalog: Catalog) -> None:
    """Stop logging the tenant's writes and drop its log (after the way back copied them all)."""
    with tenant.transaction():
        for t in catalog.tables:
            ident = sql.Identifier(t.schema, t.name)
            for name in (TENANT_TRIGGER, TENANT_TRUNCATE_TRIGGER):
                tenant.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name), ident))
        if tenant.execute("SELECT to_regclass('handyshop_migration.changes')").fetchone() != (None,):
            tenant.execute("TRUNCATE handyshop_migration.changes")


def tenant_capture_enabled(tenant: psycopg.Connection, catalog: Catalog) -> bool:
    """Whether any tenant table still has the capture trigger (`enable_tenant_capture` ran and
    `disable_tenant_capture` did not since). Does not end a caller's transaction."""
    inside = tenant.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
    row = one_row(
        tenant,
        "SELECT EXISTS (SELECT FROM pg_catalog.pg_trigger g JOIN pg_catalog.pg_class c ON c.oid = g.tgrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE g.tgname = %s "
        "AND (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])))",
        (TENANT_TRIGGER, [t.schema for t in catalog.tables], [t.name for t in catalog.tables]),
    )
    if not inside:
        tenant.rollback()
    return bool(row[0])


def tenant_lag(tenant: psycopg.Connection) -> Lag:
    if tenant.execute("SELECT to_regclass('handyshop_migration.changes')").fetchone() == (None,):
        tenant.rollback()
        return Lag(0, 0, 0.0)
    row = one_row(
        tenant,
        "SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(captured_at)), 0) "
        "FROM handyshop_migration.changes",
    )
    tenant.rollback()
    state = tenant_guard_state(tenant)
    return Lag(state.shop_id if state else 0, int(row[0]), float(row[1]))
