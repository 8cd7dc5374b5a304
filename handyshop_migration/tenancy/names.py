"""Names and constants of the tool, in one place: schemas it owns, name patterns, marker ids, SQLSTATEs.

Everything the tool creates in a database lives under one of two schemas, so that an operator can see at
a glance what is ours (and `DROP SCHEMA ... CASCADE` removes all of it):
- `CONTROL_SCHEMA` in the control database (registry, lifecycle, routing) and in every tenant database
  (schema migrations, copy state, the tenant-side change log);
- `CAPTURE_SCHEMA` in the shared database (captured shops, their change log, the fence).
"""

from __future__ import annotations

from psycopg import sql

CONTROL_SCHEMA = "handyshop_migration"
CAPTURE_SCHEMA = "handyshop_capture"

# The real app's names for a shop's database and role (`{id}` is the shop id).
DEFAULT_DATABASE_PATTERN = "shop_{id}_db"
DEFAULT_ROLE_PATTERN = "shop_user_{id}"  # the application's role: data only
DEFAULT_OWNER_PATTERN = "shop_owner_{id}"  # the migration's per-tenant owner of every object in the database
# Template databases (one per tenant schema version) and the NOLOGIN role owning their objects until each
# new tenant database hands them to its owner role. "v2": templates whose objects the admin owned are not reused.
TEMPLATE_PATTERN = "handyshop_tenant_template_v2_{fingerprint}"
TEMPLATE_OWNER = "handyshop_tenant_template_owner"

# Shop ids that mark global rows in the Handyshop app, not tenants: 0 = global print/e-mail templates,
# 1682 = the "superadmin shop" holding the device catalog (NULL is global too, and never a shop id).
DEFAULT_GLOBAL_SHOP_IDS: tuple[int, ...] = (0, 1682)

APPLICATION_NAME = "handyshop-migration"
# Read-only snapshot sessions: capture's wait for older writers leaves them out (they never write).
SNAPSHOT_APPLICATION = "handyshop-migration:snapshot"

# Our own SQLSTATEs (class "HS"), raised by the triggers we install.
FENCE_SQLSTATE = "HS001"  # a write reached a database that does not own the shop's writes now
TRUNCATE_SQLSTATE = "HS002"  # TRUNCATE of a captured table


def control(name: str) -> sql.Identifier:
    """`handyshop_migration.<name>` as an SQL identifier."""
    return sql.Identifier(CONTROL_SCHEMA, name)


def capture(name: str) -> sql.Identifier:
    """`handyshop_capture.<name>` as an SQL identifier."""
    return sql.Identifier(CAPTURE_SCHEMA, name)
