"""The Handyshop shared schema: 3 master tables and the 19 tenant tables, their keys, foreign keys and DDL."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.names import DEFAULT_GLOBAL_SHOP_IDS

# Parents before children: copying or deleting in this order (reversed for deletes) keeps every FK valid.
TENANT_TABLES: tuple[str, ...] = (
    "customers",
    "loaner_devices",
    "repairs",
    "repair_status_history",
    "spare_parts",
    "cost_estimates",
    "email_templates",
    "orders",
    "device_types",
    "user_brands",
    "user_models",
    "qr_codes",
    "signatures",
    "email_log",
    "newsletter_subscribers",
    "kiosk_devices",
    "kiosk_online_status",
    "employees",
    "support_access_tokens",
)
MASTER_TABLES: tuple[str, ...] = ("packages", "shops", "users")
GLOBAL_SHOP_IDS: tuple[int, ...] = DEFAULT_GLOBAL_SHOP_IDS

CATALOG_SHOP_ID = 1682  # "superadmin shop": the global device catalog (§5.1)
GLOBAL_TEMPLATE_SHOP_ID = 0  # global system templates

# What the real app needs of the global rows in every shop's own database (the shipped catalog's global_rows;
# tables not named keep theirs in the shared database). Rows with shop_id NULL (legacy rows, system logs) stay.
GLOBAL_ROWS_POLICY: dict[str, tuple[str, str]] = {
    "device_types": ("every_tenant", "the global device catalog (shop 1682): every shop's device pickers list it, "
                     "and the shop's own brands may hang under a global device type"),
    "user_brands": ("every_tenant", "global brands (shop 1682) of the device catalog; the shop's user_models rows "
                    "may reference them (reference §5.5)"),
    "user_models": ("every_tenant", "global models (shop 1682) of the device catalog, listed next to the shop's own"),
    "email_templates": ("every_tenant", "the global system templates (shop 0): the app finds them by name across "
                        "shops and email_log rows reference them"),
}
ORPHAN_SHOP_ID = 999  # rows left behind by a shop that no longer exists
MAX_SHOPS = 500  # keeps shop ids clear of 999 and 1682


@dataclass
class SeedReport:
    """What seed_database planted, for tests and verification to compare against the database."""

    shop_ids: list[int]  # ids of rows in `shops`
    table_rows: dict[str, int]  # total rows per table (master and tenant tables)
    shop_rows: dict[int, dict[str, int]]  # shop_id value (real, 0, 1682, orphan) -> tenant table -> rows
    null_shop_rows: dict[str, list[int]]  # tenant table -> ids of rows whose shop_id IS NULL
    global_rows: dict[int, dict[str, list[int]]]  # 0 / 1682 -> table -> row ids
    orphan_shop_rows: dict[int, dict[str, list[int]]]  # shop id without shops row, not global -> table -> ids
    cross_shop_references: list[CrossShopReference]  # empty unless cross_shop_reference=True
    shops_without_owner: list[int]
    users_without_shop: list[int]  # shop_id NULL and not superadmin
    superadmin_ids: list[int]


@dataclass(frozen=True)
class CrossShopReference:
    table: str
    row_id: int
    column: str
    parent_table: str
    parent_id: int
    row_shop: int
    parent_shop: int


@dataclass(frozen=True)
class ForeignKey:
    table: str
    column: str
    parent_table: str
    on_delete: str | None = None  # None, "CASCADE" or "SET NULL"

    @property
    def name(self) -> str:
        # Drizzle's naming scheme, as in the real database.
        return f"{self.table}_{self.column}_{self.parent_table}_id_fk"


# Every FK of the shared database. Those between tenant tables survive into a tenant database; those to
# users/packages/shops (master tables) cannot (§3.2).
FOREIGN_KEYS: tuple[ForeignKey, ...] = (
    ForeignKey("users", "package_id", "packages"),
    ForeignKey("users", "shop_id", "shops"),
    ForeignKey("customers", "user_id", "users"),
    ForeignKey("loaner_devices", "user_id", "users"),
    ForeignKey("repairs", "customer_id", "customers"),
    ForeignKey("repairs", "loaner_device_id", "loaner_devices"),
    ForeignKey("repairs", "user_id", "users"),
    ForeignKey("repair_status_history", "repair_id", "repairs"),
    ForeignKey("repair_status_history", "user_id", "users"),
    ForeignKey("spare_parts", "repair_id", "repairs", "CASCADE"),
    ForeignKey("spare_parts", "user_id", "users"),
    ForeignKey("cost_estimates", "customer_id", "customers"),
    ForeignKey("cost_estimates", "user_id", "users"),
    ForeignKey("orders", "customer_id", "customers", "SET NULL"),
    ForeignKey("orders", "user_id", "users"),
    ForeignKey("device_types", "user_id", "users"),
    ForeignKey("user_brands", "device_type_id", "device_types"),
    ForeignKey("user_brands", "user_id", "users"),
    ForeignKey("user_models", "brand_id", "user_brands"),
    ForeignKey("user_models", "user_id", "users"),
    ForeignKey("qr_codes", "user_id", "users"),
    ForeignKey("signatures", "repair_id", "repairs"),
    ForeignKey("email_log", "repairId", "repairs"),
    ForeignKey("email_log", "emailTemplateId", "email_templates"),
    ForeignKey("email_log", "userId", "users"),
    ForeignKey("newsletter_subscribers", "recipient_id", "users"),
    ForeignKey("kiosk_devices", "user_id", "users"),
    ForeignKey("kiosk_online_status", "kiosk_device_id", "kiosk_devices"),
    ForeignKey("employees", "user_id", "users"),
)

_ON_DELETE = {None: sql.SQL(""), "CASCADE": sql.SQL(" ON DELETE CASCADE"), "SET NULL": sql.SQL(" ON DELETE SET NULL")}

# Globally unique columns of the shared database (§3.3): (constraint name, table, column).
_UNIQUES: tuple[tuple[str, str, str], ...] = (
    ("packages_name_unique", "packages", "name"),
    ("repairs_order_code_unique", "repairs", "order_code"),
    ("cost_estimates_reference_number_unique", "cost_estimates", "reference_number"),
    ("qr_codes_temp_id_unique", "qr_codes", "temp_id"),
    ("support_access_tokens_token_hash_unique", "support_access_tokens", "token_hash"),
)

# Tables, columns and primary keys only: the load runs before the constraints and indexes of
# _CONSTRAINTS_DDL are built (one pass per index instead of one check per row). All timestamps are
# `timestamp` (without time zone), as everywhere in the real app.
_TABLES_DDL = """
CREATE TABLE packages (
    id serial PRIMARY KEY,
    name text NOT NULL,
    description text,
    price_monthly double precision NOT NULL,
    created_at timestamp NOT NULL DEFAULT now()
);
COMMENT ON TABLE packages IS 'Master table: the real packages table (subscription plans).';

CREATE TABLE shops (
    id serial PRIMARY KEY,
    name text NOT NULL,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);
COMMENT ON TABLE shops IS 'Master table: the real shops table; users.shop_id and every tenant shop_id point here.';

CREATE TABLE users (
    id serial PRIMARY KEY,
    username text,
    password text NOT NULL,
    email text NOT NULL,
    is_active boolean NOT NULL DEFAULT false,
    is_superadmin boolean NOT NULL DEFAULT false,
    is_multi_shop_admin boolean NOT NULL DEFAULT false,
    role text NOT NULL DEFAULT 'owner',
    parent_user_id integer,
    permissions jsonb,
    first_name text,
    last_name text,
    package_id integer,
    shop_id integer,
    backup_codes text[],
    newsletter_subscribed boolean NOT NULL DEFAULT true,
    created_at timestamp NOT NULL DEFAULT now(),
    deleted_at timestamp
);
COMMENT ON TABLE users IS 'Master table: the real users table (username nullable and not unique, email not unique).';

CREATE TABLE customers (
    id serial PRIMARY KEY,
    first_name text NOT NULL,
    last_name text NOT NULL,
    phone text NOT NULL,
    email text,
    address text,
    zip_code text,
    city text,
    created_at timestamp NOT NULL DEFAULT now(),
    user_id integer,
    shop_id integer DEFAULT 1,
    created_by text
);
COMMENT ON TABLE customers IS 'Modelled on the real customers table.';

CREATE TABLE loaner_devices (
    id serial PRIMARY KEY,
    device_type text NOT NULL,
    brand text NOT NULL,
    model text NOT NULL,
    imei text,
    condition text NOT NULL,
    status text NOT NULL DEFAULT 'verfügbar',
    notes text,
    user_id integer NOT NULL,
    shop_id integer NOT NULL DEFAULT 1,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);
COMMENT ON TABLE loaner_devices IS 'Modelled on the real loaner_devices table.';

CREATE TABLE repairs (
    id serial PRIMARY KEY,
    order_code text,
    customer_id integer,
    device_type text NOT NULL,
    brand text NOT NULL,
    model text NOT NULL,
    issue text NOT NULL,
    serial_number text,
    estimated_cost text,
    deposit_amount text,
    notes text,
    status text NOT NULL DEFAULT 'eingegangen',
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    status_updated_at timestamp,
    user_id integer,
    shop_id integer DEFAULT 1,
    created_by text,
    review_request_sent boolean DEFAULT false,
    creation_month text,
    dropoff_signature text,
    pickup_signature text,
    dropoff_signed_at timestamp,
    pickup_signed_at timestamp,
    technician_note text,
    device_code text,
    device_code_type text,
    loaner_device_id integer
);
COMMENT ON TABLE repairs IS 'Modelled on the real repairs table (money as text, base64 signatures).';

CREATE TABLE repair_status_history (
    id serial PRIMARY KEY,
    repair_id integer NOT NULL,
    old_status text,
    new_status text NOT NULL,
    changed_at timestamp NOT NULL DEFAULT now(),
    changed_by text,
    notes text,
    user_id integer,
    shop_id integer DEFAULT 1
);
COMMENT ON TABLE repair_status_history IS 'Modelled on the real repair_status_history table (unified schema only).';

CREATE TABLE spare_parts (
    id serial PRIMARY KEY,
    repair_id integer NOT NULL,
    part_name text NOT NULL,
    supplier text,
    cost double precision,
    status text NOT NULL DEFAULT 'bestellen',
    order_date timestamp,
    delivery_date timestamp,
    notes text,
    archived boolean NOT NULL DEFAULT false,
    user_id integer NOT NULL,
    shop_id integer NOT NULL DEFAULT 1,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);
COMMENT ON TABLE spare_parts IS 'Modelled on the real spare_parts table.';

CREATE TABLE cost_estimates (
    id serial PRIMARY KEY,
    reference_number text,
    customer_id integer NOT NULL,
    device_type text NOT NULL,
    brand text NOT NULL,
    model text NOT NULL,
    issue text NOT NULL,
    serial_number text,
    title text,
    description text,
    notes text,
    status text NOT NULL DEFAULT 'offen',
    converted_to_repair boolean DEFAULT false,
    valid_until timestamp,
    subtotal text,
    tax_rate text,
    tax_amount text,
    total text,
    items jsonb DEFAULT '[]',
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    user_id integer,
    shop_id integer DEFAULT 1
);
COMMENT ON TABLE cost_estimates IS 'Modelled on the real cost_estimates table (items may be double-encoded jsonb strings).';

CREATE TABLE email_templates (
    id serial PRIMARY KEY,
    name text NOT NULL,
    subject text NOT NULL,
    body text NOT NULL,
    variables text[],
    user_id integer,
    shop_id integer DEFAULT 1,
    type text,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);
COMMENT ON TABLE email_templates IS 'Modelled on the real email_templates table (user_id has no FK; shop 0 = global).';

CREATE TABLE orders (
    id serial PRIMARY KEY,
    article_name text NOT NULL,
    quantity integer NOT NULL DEFAULT 1,
    unit_price text NOT NULL,
    total_price text NOT NULL,
    down_payment text,
    notes text,
    customer_id integer,
    type text NOT NULL DEFAULT 'kundenbestellung',
    status text NOT NULL DEFAULT 'bestellen',
    archived boolean NOT NULL DEFAULT false,
    email_sent boolean NOT NULL DEFAULT false,
    user_id integer,
    shop_id integer DEFAULT 1,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);
COMMENT ON TABLE orders IS 'No such table in the real unified DB: modelled on accessories (the Bestellungen UI).';

CREATE TABLE device_types (
    id serial PRIMARY KEY,
    name text NOT NULL,
    user_id integer NOT NULL,
    shop_id integer DEFAULT 1,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);
COMMENT ON TABLE device_types IS 'No such table in the real app: modelled on user_device_types (shop 1682 = global catalog).';

CREATE TABLE user_brands (
    id serial PRIMARY KEY,
    name text NOT NULL,
    device_type_id integer NOT NULL,
    user_id integer NOT NULL,
    shop_id integer DEFAULT 1,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);
COMMENT ON TABLE user_brands IS 'Modelled on the real user_brands table.';

CREATE TABLE user_models (
    id serial PRIMARY KEY,
    name text NOT NULL,
    brand_id integer,
    user_id integer NOT NULL,
    shop_id integer DEFAULT 1,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now()
);
COMMENT ON TABLE user_models IS 'Modelled on the real user_models table (model_series_id left out: user_model_series is not migrated).';

CREATE TABLE qr_codes (
    id serial PRIMARY KEY,
    temp_id text NOT NULL,
    repair_data jsonb NOT NULL,
    customer_signature text,
    signed_at timestamp,
    created_at timestamp NOT NULL DEFAULT now(),
    expires_at timestamp NOT NULL,
    user_id integer NOT NULL,
    shop_id integer NOT NULL,
    status text NOT NULL DEFAULT 'pending'
);
COMMENT ON TABLE qr_codes IS 'No such table in the real app: modelled on temp_signatures (QR signature links, temp_id globally unique).';

CREATE TABLE signatures (
    id serial PRIMARY KEY,
    repair_id integer,
    signature_type text NOT NULL,
    signature_data text NOT NULL,
    signed_at timestamp,
    created_at timestamp NOT NULL DEFAULT now(),
    shop_id integer DEFAULT 1
);
COMMENT ON TABLE signatures IS 'No such table in the real app: modelled on tenant temp_signatures and repairs.dropoff/pickup_signature.';

CREATE TABLE email_log (
    id serial PRIMARY KEY,
    "repairId" integer NOT NULL,
    "emailTemplateId" integer,
    subject text NOT NULL,
    recipient text NOT NULL,
    "sentAt" timestamp NOT NULL DEFAULT now(),
    status text NOT NULL,
    "userId" integer,
    shop_id integer DEFAULT 1
);
COMMENT ON TABLE email_log IS 'No such table in the real app: modelled on email_history, with its camelCase quoted columns.';

CREATE TABLE newsletter_subscribers (
    id serial PRIMARY KEY,
    recipient_id integer NOT NULL,
    recipient_email text NOT NULL,
    status text NOT NULL DEFAULT 'pending',
    is_test boolean NOT NULL DEFAULT false,
    sent_at timestamp,
    created_at timestamp NOT NULL DEFAULT now(),
    shop_id integer DEFAULT 1
);
COMMENT ON TABLE newsletter_subscribers IS 'No such table in the real app: modelled on newsletter_sends and users.newsletter_subscribed.';

CREATE TABLE kiosk_devices (
    id serial PRIMARY KEY,
    user_id integer,
    name text NOT NULL,
    pin text DEFAULT '1234',
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamp NOT NULL DEFAULT now(),
    updated_at timestamp NOT NULL DEFAULT now(),
    shop_id integer DEFAULT 1
);
COMMENT ON TABLE kiosk_devices IS 'No such table in the real app: modelled on users with role kiosk (PIN default 1234).';

CREATE TABLE kiosk_online_status (
    id serial PRIMARY KEY,
    kiosk_device_id integer NOT NULL,
    is_online boolean NOT NULL DEFAULT false,
    last_seen_at timestamp,
    shop_id integer DEFAULT 1
);
COMMENT ON TABLE kiosk_online_status IS 'No such table in the real app: kiosk online state is in memory there (isKioskOnline is always false).';

CREATE TABLE employees (
    id serial PRIMARY KEY,
    user_id integer,
    first_name text,
    last_name text,
    email text,
    permissions jsonb,
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamp NOT NULL DEFAULT now(),
    shop_id integer DEFAULT 1
);
COMMENT ON TABLE employees IS 'No such table in the real app: modelled on users with role employee (parent_user_id = owner).';

CREATE TABLE support_access_tokens (
    id serial PRIMARY KEY,
    superadmin_id integer,
    reason text NOT NULL,
    access_type text NOT NULL,
    affected_entities text,
    started_at timestamp NOT NULL DEFAULT now(),
    ended_at timestamp,
    is_active boolean NOT NULL DEFAULT true,
    token_hash text NOT NULL,
    shop_id integer NOT NULL
);
COMMENT ON TABLE support_access_tokens IS 'No such table in the real app: modelled on the live support_access_logs plus password_reset_tokens token storage.';
"""

# Column order of every table as loaded by COPY (must match _TABLES_DDL).
_COLUMNS: dict[str, tuple[str, ...]] = {
    "packages": ("id", "name", "description", "price_monthly", "created_at"),
    "shops": ("id", "name", "created_at", "updated_at"),
    "users": (
        "id", "username", "password", "email", "is_active", "is_superadmin", "is_multi_shop_admin", "role",
        "parent_user_id", "permissions", "first_name", "last_name", "package_id", "shop_id", "backup_codes",
        "newsletter_subscribed", "created_at", "deleted_at",
    ),
    "customers": (
        "id", "first_name", "last_name", "phone", "email", "address", "zip_code", "city", "created_at", "user_id",
        "shop_id", "created_by",
    ),
    "loaner_devices": (
        "id", "device_type", "brand", "model", "imei", "condition", "status", "notes", "user_id", "shop_id",
        "created_at", "updated_at",
    ),
    "repairs": (
        "id", "order_code", "customer_id", "device_type", "brand", "model", "issue", "serial_number",
        "estimated_cost", "deposit_amount", "notes", "status", "created_at", "updated_at", "status_updated_at",
        "user_id", "shop_id", "created_by", "review_request_sent", "creation_month", "dropoff_signature",
        "pickup_signature", "dropoff_signed_at", "pickup_signed_at", "technician_note", "device_code",
        "device_code_type", "loaner_device_id",
    ),
    "repair_status_history": (
        "id", "repair_id", "old_status", "new_status", "changed_at", "changed_by", "notes", "user_id", "shop_id",
    ),
    "spare_parts": (
        "id", "repair_id", "part_name", "supplier", "cost", "status", "order_date", "delivery_date", "notes",
        "archived", "user_id", "shop_id", "created_at", "updated_at",
    ),
    "cost_estimates": (
        "id", "reference_number", "customer_id", "device_type", "brand", "model", "issue", "serial_number", "title",
        "description", "notes", "status", "converted_to_repair", "valid_until", "subtotal", "tax_rate",
        "tax_amount", "total", "items", "created_at", "updated_at", "user_id", "shop_id",
    ),
    "email_templates": (
        "id", "name", "subject", "body", "variables", "user_id", "shop_id", "type", "created_at", "updated_at",
    ),
    "orders": (
        "id", "article_name", "quantity", "unit_price", "total_price", "down_payment", "notes", "customer_id",
        "type", "status", "archived", "email_sent", "user_id", "shop_id", "created_at", "updated_at",
    ),
    "device_types": ("id", "name", "user_id", "shop_id", "created_at", "updated_at"),
    "user_brands": ("id", "name", "device_type_id", "user_id", "shop_id", "created_at", "updated_at"),
    "user_models": ("id", "name", "brand_id", "user_id", "shop_id", "created_at", "updated_at"),
    "qr_codes": (
        "id", "temp_id", "repair_data", "customer_signature", "signed_at", "created_at", "expires_at", "user_id",
        "shop_id", "status",
    ),
    "signatures": ("id", "repair_id", "signature_type", "signature_data", "signed_at", "created_at", "shop_id"),
    "email_log": (
        "id", "repairId", "emailTemplateId", "subject", "recipient", "sentAt", "status", "userId", "shop_id",
    ),
    "newsletter_subscribers": (
        "id", "recipient_id", "recipient_email", "status", "is_test", "sent_at", "created_at", "shop_id",
    ),
    "kiosk_devices": ("id", "user_id", "name", "pin", "is_active", "created_at", "updated_at", "shop_id"),
    "kiosk_online_status": ("id", "kiosk_device_id", "is_online", "last_seen_at", "shop_id"),
    "employees": (
        "id", "user_id", "first_name", "last_name", "email", "permissions", "is_active", "created_at", "shop_id",
    ),
    "support_access_tokens": (
        "id", "superadmin_id", "reason", "access_type", "affected_entities", "started_at", "ended_at", "is_active",
        "token_hash", "shop_id",
    ),
}


def _constraint_statements() -> list[sql.Composed]:
    """Unique constraints, FKs, an index on every FK column, and the owner rule on users (§2.2)."""
    stmts: list[sql.Composed] = []
    for name, table, column in _UNIQUES:
        stmts.append(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} UNIQUE ({})").format(
                sql.Identifier(table), sql.Identifier(name), sql.Identifier(column)
            )
        )
    for fk in FOREIGN_KEYS:
        stmts.append(
            sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {} (id){}").format(
                sql.Identifier(fk.table),
                sql.Identifier(fk.name),
                sql.Identifier(fk.column),
                sql.Identifier(fk.parent_table),
                _ON_DELETE[fk.on_delete],
            )
        )
        # Without these, deleting a shop's parent rows scans every child table once per parent.
        stmts.append(
            sql.SQL("CREATE INDEX {} ON {} ({})").format(
                sql.Identifier(f"idx_{fk.table}_{fk.column}".lower()),
                sql.Identifier(fk.table),
                sql.Identifier(fk.column),
            )
        )
    stmts.append(
        sql.SQL(
            "CREATE UNIQUE INDEX users_shop_id_unique_for_owners ON users (shop_id) "
            "WHERE role = 'owner' AND shop_id IS NOT NULL"
        ).format()
    )
    return stmts


def create_schema(conn: psycopg.Connection) -> None:
    """Create the shared database's tables, keys and indexes (DDL only, in the caller's transaction)."""
    _create_tables(conn)
    _create_constraints(conn)


def _create_tables(conn: psycopg.Connection) -> None:
    conn.execute(_TABLES_DDL)


def _create_constraints(conn: psycopg.Connection) -> None:
    for stmt in _constraint_statements():
        conn.execute(stmt)


