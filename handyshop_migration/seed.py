"""A realistic shared ("unified") Handyshop database: the source the migration splits per shop.

The schema follows the real application (junomarx/Clientking-test, see
/work/shared/reference/handyshop-app.md): 3 master tables and the 19 tenant tables of the migration
script, where the script's names that the real app lacks are modelled on the closest real table (§6).
The data carries the quirks a real migration meets: global rows under shop 0 and 1682, NULL shop ids,
optional orphan shop ids and one optional cross-shop reference, camelCase columns, text[] values,
double-encoded jsonb, German-comma money in text, base64 signatures, umlauts and emoji, quoted shop
names, ids that interleave across shops, a shop without owner and users without shop.

Everything is loaded with COPY (pre-formatted text) in one transaction, keys and indexes are added after
the load, and rows are generated lazily, so a 1,000,000-repair shop needs neither much time nor memory.
The output depends only on the arguments: every random choice comes from `random.Random` seeded with
the `seed` argument (one derived stream per table and shop), and timestamps from a fixed base date.
"""

from __future__ import annotations

import base64
import heapq
import itertools
import json
import random
import struct
import uuid
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConfigurationError

__all__ = [
    "CrossShopReference",
    "ForeignKey",
    "FOREIGN_KEYS",
    "GLOBAL_SHOP_IDS",
    "MASTER_TABLES",
    "SeedReport",
    "TENANT_TABLES",
    "add_shop",
    "create_schema",
    "ensure_database",
    "seed_database",
]

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
GLOBAL_SHOP_IDS: tuple[int, ...] = (0, 1682)

CATALOG_SHOP_ID = 1682  # "superadmin shop": the global device catalog (§5.1)
GLOBAL_TEMPLATE_SHOP_ID = 0  # global system templates
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


# --------------------------------------------------------------------------------------------------
# Text formatting for COPY (text format). Pools are escaped once; per-row code only concatenates.
# --------------------------------------------------------------------------------------------------

N = "\\N"  # COPY's NULL
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})

EPOCH = datetime(2020, 1, 1)
BASE = datetime(2025, 6, 1)  # "today" of the generated data: fixed, so output never depends on the clock


def _secs(d: datetime) -> int:
    return int((d - EPOCH).total_seconds())


END = _secs(BASE)
_DAYS: list[str] = [(date(2020, 1, 1) + timedelta(days=d)).isoformat() for d in range(366 * 30)]
HOUR = 3600
DAY = 86400


def _e(value: str) -> str:
    return value.translate(_ESCAPES)


def _ts(t: int) -> str:
    d, s = divmod(t, DAY)
    h, s = divmod(s, HOUR)
    m, s = divmod(s, 60)
    return f"{_DAYS[d]} {h:02d}:{m:02d}:{s:02d}"


def _json(value: object) -> str:
    return _e(json.dumps(value, ensure_ascii=False))


def _text_array(values: Iterable[str]) -> str:
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return _e("{" + ",".join(quoted) + "}")


def _euro(cents: int) -> str:
    """German money text as the app stores it, e.g. '149,90'."""
    return f"{cents // 100},{cents % 100:02d}"


def _b(flag: bool) -> str:
    return "t" if flag else "f"


def _opt(value: int | None) -> str:
    return N if value is None else str(value)


def _png(rng: random.Random, width: int = 48, height: int = 16) -> bytes:
    """A real (tiny, 1-bit) PNG of a scribbled signature, as a signature pad produces."""
    rows = [bytearray(b"\xff" * (width // 8)) for _ in range(height)]
    y = rng.randrange(height)
    for x in range(width):
        y = max(0, min(height - 1, y + rng.choice((-2, -1, 0, 1, 2))))
        rows[y][x // 8] &= ~(0x80 >> (x % 8)) & 0xFF
    raw = b"".join(b"\x00" + bytes(r) for r in rows)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _signature(rng: random.Random) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(rng)).decode("ascii")


def _hex(rng: random.Random, chars: int) -> str:
    return f"{rng.getrandbits(chars * 4):0{chars}x}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _letters(n: int) -> str:
    """Order-code prefix of a shop: distinct shop numbers give distinct prefixes, so codes stay unique."""
    alphabet = "ABCDEFGHJKLMNPRSTUVWXYZ"
    n += len(alphabet) * 8  # at least two letters, and shop 1 does not start at "AA"
    out = ""
    while n:
        n, r = divmod(n, len(alphabet))
        out = alphabet[r] + out
    return out


# --------------------------------------------------------------------------------------------------
# Value pools (German/Austrian phone-repair shops; umlauts, emoji and COPY-special characters on purpose)
# --------------------------------------------------------------------------------------------------

_SHOP_NAMES = (
    'Handy-Doktor "Express"',
    "O'Brien's Phone Repair",
    "Smartphone-Klinik Müller & Söhne",
    "Handyshop Österreich GmbH",
    "Display-Profi Graz",
    "Reparaturstüberl Größing",
    "iRepair Salzburg",
    "Phone Care Innsbruck",
    "Café & Handy 📱 Villach",
    "Handy-Ärzte Mödling",
    "Zur schnellen Reparatur – Linz",
    "TechFix Wien-Ottakring",
)
_FIRST = (
    "Jürgen", "Max", "Anna", "Sophie", "Lukas", "Özlem", "Mehmet", "Zoë", "Björn", "Käthe", "Lena", "Jonas",
    "Marie", "Ahmet", "Ana", "Dragan", "Željko", "Fatma", "Élodie", "Paul", "Sarah", "Thomas", "Katarina",
    "Stefan", "Günther", "Jörg", "Hannah", "Florian",
)
_LAST = (
    "Müller", "Schröder", "Weiß", "Gruber", "Huber", "Yılmaz", "Kovačević", "Öztürk", "Bauer", "Wagner",
    "Pichler", "Steiner", "Mayer", "Hofer", "Fuchs", "Nováková", "Lindström", "Brandstätter", "Kößler",
    "O'Connor", "Moser", "Leitner",
)
_EMOJI = ("😊", "📱", "🌸", "🔧", "⭐", "🙈", "😭", "👍")
_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "é": "e",
                       "É": "E", "ë": "e", "ı": "i", "č": "c", "Ž": "Z", "ž": "z", "á": "a", "'": ""})
_MAIL_DOMAINS = ("gmx.at", "gmail.com", "aon.at", "chello.at", "hotmail.com", "a1.net", "web.de")
_CITIES = (
    ("1010", "Wien"), ("1160", "Wien"), ("1210", "Wien"), ("8010", "Graz"), ("4020", "Linz"), ("5020", "Salzburg"),
    ("6020", "Innsbruck"), ("9020", "Klagenfurt"), ("9500", "Villach"), ("4600", "Wels"), ("3100", "St. Pölten"),
    ("6850", "Dornbirn"), ("2700", "Wiener Neustadt"), ("2340", "Mödling"), ("8700", "Leoben"),
)
_STREETS = (
    "Hauptstraße", "Mariahilfer Straße", "Bahnhofstraße", "Schönbrunner Straße", "Grazer Gasse", "Dorfplatz",
    "Kärntner Ring", "Südtiroler Platz", "Lerchenfelder Gürtel", "Wiener Straße",
)
_DEVICES = (
    ("Smartphone", "Apple", ("iPhone 11", "iPhone 12", "iPhone 13", "iPhone 14 Pro", "iPhone 15", "iPhone SE (2022)")),
    ("Smartphone", "Samsung", ("Galaxy S21", "Galaxy S23", "Galaxy A52", "Galaxy A54 5G", "Galaxy Z Flip5")),
    ("Smartphone", "Xiaomi", ("Redmi Note 12", "Mi 11 Lite", "Poco F5")),
    ("Smartphone", "Google", ("Pixel 7", "Pixel 8 Pro")),
    ("Smartphone", "Huawei", ("P30 Pro", "P40 lite")),
    ("Tablet", "Apple", ("iPad Air (5. Gen.)", "iPad 9")),
    ("Tablet", "Samsung", ("Galaxy Tab S8", "Galaxy Tab A8")),
    ("Laptop", "Lenovo", ("ThinkPad T14", "IdeaPad 5")),
    ("Laptop", "Apple", ('MacBook Air 13" M1', "MacBook Pro 14")),
    ("Smartwatch", "Apple", ("Watch Series 7", "Watch SE")),
    ("Spielekonsole", "Nintendo", ("Switch", "Switch OLED")),
    ("Spielekonsole", "Sony", ("PlayStation 5",)),
)
_DEVICE_LIST: tuple[tuple[str, str, str], ...] = tuple((t, b, m) for t, b, ms in _DEVICES for m in ms)
_ISSUES = (
    "Display gebrochen", "Akku schwach", "Ladebuchse defekt", "Wasserschaden", "Kamera unscharf",
    "Lautsprecher knackt", "Backcover gesprungen", "Face ID funktioniert nicht", "Bootloop nach Update",
    "Mikrofon ohne Funktion", "Touchscreen reagiert nicht", "Gerät überhitzt",
)
_DEVICE_COMBOS: tuple[str, ...] = tuple(
    "\t".join(_e(v) for v in (t, b, m, i)) for (t, b, m) in _DEVICE_LIST for i in _ISSUES
)
_NOTES: tuple[str, ...] = tuple(
    _e(n)
    for n in (
        "Kunde wartet 😊", "Schutzfolie bitte entfernen\nHülle liegt bei", "Rückruf erwünscht 📞",
        "Gerät fällt öfter runter 🙈", "Code siehe Zettel", "Express!\tHeute noch", "Backslash \\ im Text",
        "Sehr dringend – Geschäftshandy", "Daten sichern!", "Hat Garantie bis 03/2025",
    )
)
_TECH_NOTES: tuple[str, ...] = tuple(
    _e(n)
    for n in ("Display getauscht, Test ok ✅", "Akku 78 % Kapazität", "Platine korrodiert", "Kleber erneuert")
)
_REPAIR_STATUSES = (
    ("abgeholt",) * 10
    + ("fertig",) * 3
    + ("in_reparatur", "in_reparatur", "eingegangen", "eingegangen")
    + ("ersatzteile_bestellen", "warten_auf_ersatzteile", "ersatzteil_eingetroffen", "ausser_haus")
)
_STATUS_FLOW = ("eingegangen", "in_reparatur", "ersatzteile_bestellen", "warten_auf_ersatzteile",
                "ersatzteil_eingetroffen", "fertig", "abgeholt")
_PRICES: tuple[str, ...] = tuple(_euro(e * 100 + c) for e in (29, 39, 49, 69, 89, 99, 129, 149, 189, 249, 299)
                                 for c in (0, 90, 50)) + ("0,00", "80", "149,90")
_PARTS = (
    "Display iPhone 13 (OLED)", "Akku Galaxy S21", "Ladebuchse USB-C", "Backcover Glas", "Kameramodul hinten",
    "Lautsprecher unten", "Face-ID-Flexkabel", "Displaykleber", "Touchscreen-Digitizer", "SIM-Schlitten",
)
_SUPPLIERS = ("Foneday", "iParts4u", "Mobile Sentrix", "Reparaturteile Müller", "AliExpress", "Lokal")
_ARTICLES = (
    ("Panzerglas iPhone 13", 1490), ("Ladekabel USB-C 2 m", 1290), ("Hülle Galaxy S23 – schwarz", 1990),
    ("Netzteil 20 W", 2490), ("Powerbank 10.000 mAh", 2990), ('Schutzfolie iPad 10,9"', 1990),
    ("Kopfhörer-Adapter Lightning", 990), ("Autohalterung Magsafe", 2490),
)
_CONDITIONS = ("sehr gut", "gut", "Kratzer am Display", "Gebrauchsspuren", "neuwertig")
_LOANER_STATUS = ("verfügbar",) * 6 + ("verliehen",) * 3 + ("defekt", "wartung")
_TEMPLATES = (
    ("Reparatur abholbereit", "Ihr Gerät ist fertig – Auftrag {{auftragsnummer}}",
     "Hallo {{kundenname}},\n\nIhr {{geraet}} ist fertig und kann abgeholt werden.\n\nLiebe Grüße\n{{geschaeftsname}}",
     ("kundenname", "auftragsnummer", "geraet", "geschaeftsname")),
    ("Ersatzteil eingetroffen", "Ersatzteil für {{geraet}} ist da",
     "Hallo {{kundenname}},\n\ndas Ersatzteil ist eingetroffen. Wir melden uns! 🔧",
     ("kundenname", "geraet")),
    ("Zubehör eingetroffen", "Ihre Bestellung ist abholbereit",
     "Grüß Gott {{kundenname}},\n\nIhr Zubehör \"{{artikel}}\" liegt zur Abholung bereit.",
     ("kundenname", "artikel")),
    ("Kostenvoranschlag", "Kostenvoranschlag {{kv_nummer}}",
     "Sehr geehrte/r {{kundenname}},\n\nanbei der Kostenvoranschlag über {{betrag}} €.",
     ("kundenname", "kv_nummer", "betrag")),
    ("Bewertung anfragen", "Wie zufrieden waren Sie? ⭐",
     "Hallo {{kundenname}},\n\nwir freuen uns über Ihre Bewertung: {{bewertungslink}}",
     ("kundenname", "bewertungslink")),
    ("Auftragsbestätigung", "Auftrag {{auftragsnummer}} angenommen",
     "Hallo {{kundenname}},\n\nwir haben Ihr Gerät erhalten. Status: {{status}}.",
     ("kundenname", "auftragsnummer", "status")),
)
_DEVICE_TYPE_NAMES = ("Smartphone", "Tablet", "Laptop", "Smartwatch", "Spielekonsole", "Kopfhörer", "E-Reader")
_BRAND_NAMES = ("Apple", "Samsung", "Xiaomi", "Google", "Huawei", "OnePlus", "Sony", "Nintendo", "Lenovo", "Oppo",
                "Motorola", "Nokia", "Fairphone", "Honor")
_MODEL_NAMES = tuple(m for _, _, ms in _DEVICES for m in ms) + ("Mate 20", "Nord 2", "Xperia 10 IV", "Fairphone 4")
_KIOSK_NAMES = ("Kiosk Theke", "Tablet Eingang", "Kiosk Schaufenster")
_SUPPORT_REASONS = (
    "Kunde meldet fehlende Reparaturen", "Hilfe beim E-Mail-Versand (SMTP)", "Datenkorrektur nach Import",
    "Drucklayout Etiketten prüfen",
)
_ENTITIES = ("repairs", "customers", "repairs,customers", "email_templates", "cost_estimates,repairs")
_PERMISSIONS = (
    {"canViewRepairs": True, "canEditRepairs": True, "canViewCustomers": True, "canDeleteRepairs": False},
    {"canViewRepairs": True, "canEditRepairs": False, "canViewCustomers": True, "canViewStatistics": False},
)

# Rows per shop at scale 1.0 (≈ 2,000 in all); employees and kiosk_online_status follow the users/devices.
BASE_COUNTS: dict[str, int] = {
    "customers": 300,
    "loaner_devices": 15,
    "repairs": 500,
    "repair_status_history": 500,
    "spare_parts": 120,
    "cost_estimates": 60,
    "email_templates": 10,
    "orders": 80,
    "device_types": 6,
    "user_brands": 20,
    "user_models": 80,
    "qr_codes": 40,
    "signatures": 100,
    "email_log": 150,
    "newsletter_subscribers": 8,
    "kiosk_devices": 2,
    "kiosk_online_status": 2,
    "employees": 3,
    "support_access_tokens": 4,
}


# --------------------------------------------------------------------------------------------------
# Generation state
# --------------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """One value of shop_id (a shop, NULL, a global id or an orphan id) and what its rows may reference."""

    gi: int
    shop: int | None
    seed_key: str
    start: int
    end: int
    counts: dict[str, int]
    user_ids: list[int] = field(default_factory=list)  # candidates for user_id columns; empty -> NULL
    user_emails: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # display names for created_by/changed_by
    owner_id: int | None = None
    employees: list[tuple[int, str, str, str]] = field(default_factory=list)  # (user id, first, last, email)
    kiosk_user_id: int | None = None
    superadmin_id: int | None = None
    cross_customer_group: int | None = None  # plant: repair #0 takes its customer from this group

    @property
    def shop_s(self) -> str:
        return _opt(self.shop)

    def rng(self, table: str) -> random.Random:
        # One stream per (table, group): a table's rows do not change when another table's counts do.
        return random.Random(f"{self.seed_key}/{table}")


@dataclass
class _State:
    groups: list[_Group]
    signatures: list[str]
    ids: dict[str, list[array]] = field(default_factory=dict)  # table -> per group: ids in generation order
    ts: dict[str, list[array]] = field(default_factory=dict)  # table -> per group: created_at (seconds)

    def new_table(self, table: str, keep_ts: bool = False) -> None:
        self.ids[table] = [array("q") for _ in self.groups]
        if keep_ts:
            self.ts[table] = [array("q") for _ in self.groups]


_Row = tuple[int, int, str]  # (created_at seconds, group index, the row's text after the id column)
_RowGenerator = Callable[[_State, _Group, int], Iterator[_Row]]


def _times(rng: random.Random, start: int, end: int, n: int) -> Iterator[int]:
    """n increasing timestamps spread over [start, end], generated lazily (a 1 M-row shop stays flat)."""
    step = max(end - start, 1) / max(n, 1)
    t = float(start)
    rnd = rng.random
    for _ in range(n):
        t += step * 2 * rnd()
        yield min(int(t), end)


def _pick(rng: random.Random, values: list[int] | array) -> int:
    return values[int(rng.random() * len(values))]


def _user(rng: random.Random, g: _Group) -> str:
    return str(_pick(rng, g.user_ids)) if g.user_ids else N


# --------------------------------------------------------------------------------------------------
# Row generators, one per tenant table. Each yields rows of one group in created_at order, and refers
# only to parents of its own group (except the planted cross-shop reference).
# --------------------------------------------------------------------------------------------------


def _gen_customers(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("customers")
    rnd = rng.random
    people = [(_e(f), _e(last), f"{f}.{last}".translate(_FOLD).lower()) for f in _FIRST for last in _LAST]
    places = [(z, _e(c)) for z, c in _CITIES]
    streets = [_e(s) for s in _STREETS]
    gi, shop = g.gi, g.shop_s
    for t in _times(rng, g.start, g.end, n):
        first, last, mail = people[int(rnd() * len(people))]
        if rnd() < 0.05:
            first = f"{first} {_EMOJI[int(rnd() * len(_EMOJI))]}"
        phone = f"+43 6{60 + int(rnd() * 40)} {1000000 + int(rnd() * 8999999)}"
        email = N if rnd() < 0.3 else f"{mail}{int(rnd() * 100)}@{_MAIL_DOMAINS[int(rnd() * len(_MAIL_DOMAINS))]}"
        if rnd() < 0.4:
            address = zip_code = city = N
        else:
            zip_code, city = places[int(rnd() * len(places))]
            address = f"{streets[int(rnd() * len(streets))]} {1 + int(rnd() * 120)}"
        by = "KIOSK-MODUS" if rnd() < 0.1 or not g.names else g.names[int(rnd() * len(g.names))]
        yield t, gi, f"{first}\t{last}\t{phone}\t{email}\t{address}\t{zip_code}\t{city}\t{_ts(t)}\t{_user(rng, g)}\t{shop}\t{by}"


def _gen_loaner_devices(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("loaner_devices")
    for t in _times(rng, g.start, g.end, n):
        dtype, brand, model = (_e(v) for v in rng.choice(_DEVICE_LIST))
        imei = f"35{rng.getrandbits(48) % 10**13:013d}" if rng.random() < 0.8 else N
        notes = rng.choice(_NOTES) if rng.random() < 0.3 else N
        updated = min(t + rng.randrange(30 * DAY), g.end)
        yield t, g.gi, (
            f"{dtype}\t{brand}\t{model}\t{imei}\t{_e(rng.choice(_CONDITIONS))}\t{rng.choice(_LOANER_STATUS)}\t"
            f"{notes}\t{_user(rng, g)}\t{g.shop_s}\t{_ts(t)}\t{_ts(updated)}"
        )


def _gen_repairs(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("repairs")
    rnd = rng.random
    gi, shop = g.gi, g.shop_s
    customers = st.ids["customers"][gi]
    loaners = st.ids["loaner_devices"][gi]
    ts_out = st.ts["repairs"][gi]
    sigs = st.signatures
    prefix = _letters(g.shop) if g.shop is not None else ""
    users = [str(u) for u in g.user_ids] or [N]
    names = [_e(x) for x in g.names] + ["KIOSK-MODUS"]
    codes = [_hex(rng, 32) for _ in range(32)]
    combos, notes, tech, statuses, prices = _DEVICE_COMBOS, _NOTES, _TECH_NOTES, _REPAIR_STATUSES, _PRICES
    for k, t in enumerate(_times(rng, g.start, g.end, n)):
        ts_out.append(t)
        if k == 0 and g.cross_customer_group is not None:
            customer = str(st.ids["customers"][g.cross_customer_group][0])
        elif customers and rnd() < 0.97:
            # Customers are spread over the same period: keep to those probably created before the repair.
            customer = str(customers[int(rnd() * min(len(customers), 1 + len(customers) * (k + 1) // n))])
        else:
            customer = N
        # The real app's fallback code is RA-<epoch ms>; shops use their letters and a counter.
        code = f"{prefix}{1000 + k}" if prefix else f"RA-{(t + 1577836800) * 1000 + k}"
        status = statuses[int(rnd() * len(statuses))]
        created = _ts(t)
        changed = _ts(min(t + int(rnd() * 10 * DAY), g.end))
        serial = f"{int(rnd() * 10**15):015d}" if rnd() < 0.5 else N
        deposit = "20,00" if rnd() < 0.2 else N
        note = notes[int(rnd() * len(notes))] if rnd() < 0.25 else N
        if rnd() < 0.4:
            dsig, dsat = sigs[int(rnd() * len(sigs))], created
        else:
            dsig = dsat = N
        if status == "abgeholt" and rnd() < 0.5:
            psig, psat = sigs[int(rnd() * len(sigs))], changed
        else:
            psig = psat = N
        r = rnd()
        if r < 0.2:
            dcode, dtype = "enc:v1:" + codes[int(rnd() * 32)], "text"
        elif r < 0.3:
            dcode, dtype = codes[int(rnd() * 32)] + codes[int(rnd() * 32)], "pattern"
        else:
            dcode = dtype = N
        loaner = str(loaners[int(rnd() * len(loaners))]) if loaners and rnd() < 0.03 else N
        by = "GELÖSCHTER MITARBEITER" if rnd() < 0.01 else names[int(rnd() * len(names))]
        day = _DAYS[t // DAY]
        yield t, gi, (
            f"{code}\t{customer}\t{combos[int(rnd() * len(combos))]}\t{serial}\t{prices[int(rnd() * len(prices))]}\t"
            f"{deposit}\t{note}\t{status}\t{created}\t{changed}\t{changed}\t{users[int(rnd() * len(users))]}\t"
            f"{shop}\t{by}\t{_b(rnd() < 0.3)}\t{day[0:4]}{day[5:7]}\t{dsig}\t{psig}\t{dsat}\t{psat}\t"
            f"{tech[int(rnd() * len(tech))] if rnd() < 0.2 else N}\t{dcode}\t{dtype}\t{loaner}"
        )


def _child_times(rng: random.Random, st: _State, g: _Group, n: int, max_delay: int) -> list[tuple[int, int]]:
    """n (time, repair ordinal) pairs for rows that follow a repair of the group, sorted by time."""
    repairs = st.ts["repairs"][g.gi]
    out = []
    for _ in range(n):
        k = int(rng.random() * len(repairs))
        out.append((min(repairs[k] + int(rng.random() * max_delay), g.end), k))
    out.sort()
    return out


def _gen_repair_status_history(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("repair_status_history")
    repairs, repair_ts = st.ids["repairs"][g.gi], st.ts["repairs"][g.gi]
    rows: list[tuple[int, str]] = []
    while len(rows) < n:
        # One repair's path through the statuses, a few hours to days apart.
        k = int(rng.random() * len(repairs))
        t, old = repair_ts[k], N
        for new in _STATUS_FLOW[: 1 + rng.randrange(len(_STATUS_FLOW))]:
            if len(rows) >= n:
                break
            if new in ("ersatzteile_bestellen", "warten_auf_ersatzteile", "ersatzteil_eingetroffen") and rng.random() < 0.6:
                continue
            who = _e(rng.choice(g.names)) if g.names else "SYSTEM"
            note = rng.choice(_NOTES) if rng.random() < 0.1 else N
            rows.append((t, f"{repairs[k]}\t{old}\t{new}\t{_ts(t)}\t{who}\t{note}\t{_user(rng, g)}\t{g.shop_s}"))
            old, t = new, min(t + rng.randrange(HOUR, 3 * DAY), g.end)
    rows.sort(key=lambda r: r[0])
    for t, tail in rows:
        yield t, g.gi, tail


def _gen_spare_parts(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("spare_parts")
    repairs = st.ids["repairs"][g.gi]
    for t, k in _child_times(rng, st, g, n, 2 * DAY):
        status = rng.choice(("bestellen", "bestellt", "eingetroffen", "erledigt"))
        ordered = _ts(t + HOUR) if status != "bestellen" else N
        delivered = _ts(min(t + 3 * DAY, g.end)) if status in ("eingetroffen", "erledigt") else N
        cost = rng.randrange(500, 25000) / 100
        note = rng.choice(_NOTES) if rng.random() < 0.15 else N
        yield t, g.gi, (
            f"{repairs[k]}\t{_e(rng.choice(_PARTS))}\t{_e(rng.choice(_SUPPLIERS))}\t{cost!r}\t{status}\t{ordered}\t"
            f"{delivered}\t{note}\t{_b(status == 'erledigt' and rng.random() < 0.5)}\t{_user(rng, g)}\t{g.shop_s}\t"
            f"{_ts(t)}\t{_ts(min(t + 4 * DAY, g.end))}"
        )


def _gen_cost_estimates(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("cost_estimates")
    customers = st.ids["customers"][g.gi]
    per_month: dict[str, int] = {}
    for k, t in enumerate(_times(rng, g.start, g.end, n)):
        day = _DAYS[t // DAY]
        yymm = day[2:4] + day[5:7]
        per_month[yymm] = per_month.get(yymm, 0) + 1
        # KV-YYMM-NNN is counted per shop; the shop suffix keeps it unique across shops (§3.3).
        ref = f"KV-{yymm}-{per_month[yymm]:03d}-S{g.shop}"
        dtype, brand, model = rng.choice(_DEVICE_LIST)
        issue = rng.choice(_ISSUES)
        items: list[dict[str, object]] = []
        subtotal = 0
        for _ in range(1 + rng.randrange(3)):
            price = rng.randrange(1500, 30000, 10)
            qty = 1 if rng.random() < 0.8 else 2
            subtotal += price * qty
            items.append({"description": f"{issue} – {model}", "quantity": qty,
                          "unitPrice": _euro(price), "totalPrice": _euro(price * qty)})
        tax = subtotal * 20 // 100  # tax is hard-coded to 20 % in the app
        # Legacy rows hold the array double-encoded: a jsonb *string* containing the escaped array (§5.11).
        items_json = json.dumps(items, ensure_ascii=False)
        items_value = json.dumps(items_json, ensure_ascii=False) if k == 0 or rng.random() < 0.1 else items_json
        status = rng.choice(("offen", "offen", "angenommen", "abgelehnt"))
        yield t, g.gi, "\t".join((
            ref, str(_pick(rng, customers)), _e(dtype), _e(brand), _e(model), _e(issue),
            f"{rng.getrandbits(40) % 10**12:012d}" if rng.random() < 0.4 else N,
            _e(f"Kostenvoranschlag {model}"),
            _e(f"{issue}: Reparatur inkl. Ersatzteil und Arbeitszeit") if rng.random() < 0.7 else N,
            rng.choice(_NOTES) if rng.random() < 0.2 else N,
            status, _b(status == "angenommen" and rng.random() < 0.7), _ts(t + 14 * DAY),
            _euro(subtotal), "20", _euro(tax), _euro(subtotal + tax), _e(items_value), _ts(t),
            _ts(min(t + DAY, g.end)), _user(rng, g), g.shop_s,
        ))


def _gen_email_templates(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("email_templates")
    is_global = g.shop is None or g.shop == GLOBAL_TEMPLATE_SHOP_ID
    owner = g.superadmin_id if is_global else g.owner_id
    for k, t in enumerate(_times(rng, g.start, g.end, n)):
        name, subject, body, variables = _TEMPLATES[k % len(_TEMPLATES)]
        if k >= len(_TEMPLATES):
            name = f"{name} ({k // len(_TEMPLATES) + 1})"
        kind = "app" if is_global or rng.random() < 0.2 else "customer"
        yield t, g.gi, (
            f"{_e(name)}\t{_e(subject)}\t{_e(body)}\t{_text_array(variables)}\t{_opt(owner)}\t{g.shop_s}\t"
            f"{kind}\t{_ts(t)}\t{_ts(min(t + rng.randrange(DAY, 90 * DAY), g.end))}"
        )


def _gen_orders(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("orders")
    customers = st.ids["customers"][g.gi]
    for t in _times(rng, g.start, g.end, n):
        article, price = rng.choice(_ARTICLES)
        qty = 1 + int(rng.random() < 0.2)
        stock = rng.random() < 0.25
        status = rng.choice(("bestellen", "bestellt", "eingetroffen", "erledigt"))
        yield t, g.gi, "\t".join((
            _e(article), str(qty), _euro(price), _euro(price * qty), "10,00" if rng.random() < 0.3 else N,
            rng.choice(_NOTES) if rng.random() < 0.1 else N,
            N if stock else str(_pick(rng, customers)), "lager" if stock else "kundenbestellung", status,
            _b(status == "erledigt"), _b(status in ("eingetroffen", "erledigt")), _user(rng, g), g.shop_s,
            _ts(t), _ts(min(t + 5 * DAY, g.end)),
        ))


def _gen_device_types(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("device_types")
    for k, t in enumerate(_times(rng, g.start, g.start + 30 * DAY, n)):
        name = _DEVICE_TYPE_NAMES[k % len(_DEVICE_TYPE_NAMES)]
        if k >= len(_DEVICE_TYPE_NAMES):
            name = f"{name} {k // len(_DEVICE_TYPE_NAMES) + 1}"
        yield t, g.gi, f"{_e(name)}\t{_user(rng, g)}\t{g.shop_s}\t{_ts(t)}\t{_ts(t)}"


def _gen_user_brands(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("user_brands")
    types = st.ids["device_types"][g.gi]
    for k, t in enumerate(_times(rng, g.start + 30 * DAY, g.start + 60 * DAY, n)):
        name = _BRAND_NAMES[k % len(_BRAND_NAMES)]
        yield t, g.gi, f"{_e(name)}\t{_pick(rng, types)}\t{_user(rng, g)}\t{g.shop_s}\t{_ts(t)}\t{_ts(t)}"


def _gen_user_models(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("user_models")
    brands = st.ids["user_brands"][g.gi]
    for t in _times(rng, g.start + 60 * DAY, g.end, n):
        brand = N if rng.random() < 0.05 else str(_pick(rng, brands))  # brand_id is nullable in the app
        yield t, g.gi, f"{_e(rng.choice(_MODEL_NAMES))}\t{brand}\t{_user(rng, g)}\t{g.shop_s}\t{_ts(t)}\t{_ts(t)}"


def _gen_qr_codes(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("qr_codes")
    repairs = st.ids["repairs"][g.gi]
    for t, k in _child_times(rng, st, g, n, HOUR):
        status = rng.choice(("pending", "signed", "completed", "completed", "expired"))
        signed = status in ("signed", "completed")
        dtype, brand, model = rng.choice(_DEVICE_LIST)
        data = {"repairId": repairs[k], "customerName": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
                "deviceType": dtype, "brand": brand, "model": model, "issue": rng.choice(_ISSUES)}
        yield t, g.gi, "\t".join((
            _uuid(rng), _json(data), rng.choice(st.signatures) if signed else N,
            _ts(t + 300) if signed else N, _ts(t), _ts(t + DAY), _user(rng, g), g.shop_s, status,
        ))


def _gen_signatures(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("signatures")
    repairs = st.ids["repairs"][g.gi]
    for t, k in _child_times(rng, st, g, n, 5 * DAY):
        kind = "customer_dropoff" if rng.random() < 0.6 else "customer_pickup"
        yield t, g.gi, f"{repairs[k]}\t{kind}\t{rng.choice(st.signatures)}\t{_ts(t)}\t{_ts(t)}\t{g.shop_s}"


def _gen_email_log(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("email_log")
    repairs, templates = st.ids["repairs"][g.gi], st.ids["email_templates"][g.gi]
    for t, k in _child_times(rng, st, g, n, 7 * DAY):
        tk = int(rng.random() * len(templates)) if templates else -1
        template = str(templates[tk]) if tk >= 0 and rng.random() < 0.9 else N
        subject = _TEMPLATES[tk % len(_TEMPLATES)][1].replace("{{auftragsnummer}}", f"#{repairs[k]}")
        mail = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}".translate(_FOLD).lower() + "@" + rng.choice(_MAIL_DOMAINS)
        status = "success" if rng.random() < 0.92 else "failed"
        yield t, g.gi, f"{repairs[k]}\t{template}\t{_e(subject)}\t{_e(mail)}\t{_ts(t)}\t{status}\t{_user(rng, g)}\t{g.shop_s}"


def _gen_newsletter_subscribers(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("newsletter_subscribers")
    for t in _times(rng, g.start, g.end, n):
        k = int(rng.random() * len(g.user_ids))
        status = rng.choice(("sent", "sent", "sent", "pending", "failed"))
        yield t, g.gi, (
            f"{g.user_ids[k]}\t{_e(g.user_emails[k])}\t{status}\t{_b(rng.random() < 0.1)}\t"
            f"{_ts(t + 60) if status == 'sent' else N}\t{_ts(t)}\t{g.shop_s}"
        )


def _gen_kiosk_devices(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("kiosk_devices")
    for k, t in enumerate(_times(rng, g.start, g.end, n)):
        pin = "1234" if rng.random() < 0.7 else f"{rng.randrange(10000):04d}"  # the app's default PIN
        name = _KIOSK_NAMES[k % len(_KIOSK_NAMES)]
        yield t, g.gi, (
            f"{_opt(g.kiosk_user_id)}\t{_e(name)}\t{pin}\t{_b(rng.random() < 0.9)}\t{_ts(t)}\t"
            f"{_ts(min(t + 10 * DAY, g.end))}\t{g.shop_s}"
        )


def _gen_kiosk_online_status(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("kiosk_online_status")
    devices = st.ids["kiosk_devices"][g.gi]
    for k in range(n):
        t = g.end - rng.randrange(30 * DAY)
        yield t, g.gi, f"{devices[k % len(devices)]}\t{_b(rng.random() < 0.2)}\t{_ts(t)}\t{g.shop_s}"


def _gen_employees(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("employees")
    starts = sorted(g.start + rng.randrange(max(g.end - g.start, 1)) for _ in range(n))
    for k, t in enumerate(starts):
        uid, first, last, mail = g.employees[k % len(g.employees)]
        yield t, g.gi, (
            f"{uid}\t{_e(first)}\t{_e(last)}\t{_e(mail)}\t{_json(rng.choice(_PERMISSIONS))}\t"
            f"{_b(rng.random() < 0.9)}\t{_ts(t)}\t{g.shop_s}"
        )


def _gen_support_access_tokens(st: _State, g: _Group, n: int) -> Iterator[_Row]:
    rng = g.rng("support_access_tokens")
    for t in _times(rng, g.start, g.end, n):
        active = t > g.end - DAY
        yield t, g.gi, "\t".join((
            _opt(g.superadmin_id), _e(rng.choice(_SUPPORT_REASONS)), rng.choice(("read", "full")),
            _e(rng.choice(_ENTITIES)), _ts(t), N if active else _ts(t + rng.randrange(600, 4 * HOUR)),
            _b(active), _hex(rng, 64), g.shop_s,
        ))


_GENERATORS: dict[str, _RowGenerator] = {
    "customers": _gen_customers,
    "loaner_devices": _gen_loaner_devices,
    "repairs": _gen_repairs,
    "repair_status_history": _gen_repair_status_history,
    "spare_parts": _gen_spare_parts,
    "cost_estimates": _gen_cost_estimates,
    "email_templates": _gen_email_templates,
    "orders": _gen_orders,
    "device_types": _gen_device_types,
    "user_brands": _gen_user_brands,
    "user_models": _gen_user_models,
    "qr_codes": _gen_qr_codes,
    "signatures": _gen_signatures,
    "email_log": _gen_email_log,
    "newsletter_subscribers": _gen_newsletter_subscribers,
    "kiosk_devices": _gen_kiosk_devices,
    "kiosk_online_status": _gen_kiosk_online_status,
    "employees": _gen_employees,
    "support_access_tokens": _gen_support_access_tokens,
}
assert tuple(_GENERATORS) == TENANT_TABLES and set(_COLUMNS) == set(TENANT_TABLES) | set(MASTER_TABLES)


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------

_CHUNK_ROWS = 4096  # rows per COPY write: ≈ 1 MB chunks keep memory flat and the socket busy


def _copy(conn: psycopg.Connection, table: str, lines: Iterable[str], *, freeze: bool) -> None:
    """COPY pre-formatted text lines (each ending in a newline) into `table`."""
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in _COLUMNS[table])
    )
    if freeze:
        # The table was created in this transaction: frozen rows spare every later reader the hint-bit writes.
        stmt = sql.Composed([stmt, sql.SQL(" WITH (FREEZE)")])
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= _CHUNK_ROWS:
                copy.write("".join(batch))
                batch.clear()
        if batch:
            copy.write("".join(batch))


def _load_tenant_table(
    conn: psycopg.Connection, st: _State, table: str, next_id: Iterator[int], *, freeze: bool
) -> None:
    """Generate every group's rows, merge them by created_at and give them ids in that order.

    Like in the real app, the rows of different shops interleave in id order and ids grow with time.
    """
    st.new_table(table, keep_ts=table == "repairs")
    per_group = st.ids[table]
    streams = [
        _GENERATORS[table](st, g, g.counts.get(table, 0)) for g in st.groups if g.counts.get(table, 0) > 0
    ]

    def lines() -> Iterator[str]:
        for _t, gi, tail in heapq.merge(*streams):
            row_id = next(next_id)
            per_group[gi].append(row_id)
            yield f"{row_id}\t{tail}\n"

    _copy(conn, table, lines(), freeze=freeze)


def _set_sequences(conn: psycopg.Connection, tables: Iterable[str]) -> None:
    """Move every serial sequence past its table's highest id (rows were loaded with explicit ids)."""
    for table in tables:
        qualified = sql.Identifier("public", table).as_string(conn)
        conn.execute(
            sql.SQL("SELECT setval(pg_get_serial_sequence(%s, 'id'), coalesce(max(id), 0) + 1, false) FROM {}").format(
                sql.Identifier(table)
            ),
            (qualified,),
        )


@dataclass
class _User:
    created: int
    username: str | None
    email: str
    role: str
    shop: int | None
    first: str | None
    last: str | None
    superadmin: bool = False
    permissions: dict[str, bool] | None = None
    backup_codes: list[str] | None = None
    package: int | None = None
    group: int | None = None  # index of the shop group the user belongs to
    owner_of: int | None = None  # group index (set for owners, to fill parent_user_id)
    id: int = 0


def _password(rng: random.Random) -> str:
    # The app stores scrypt output as "<hex hash>.<hex salt>".
    return f"{_hex(rng, 128)}.{_hex(rng, 32)}"


def _user_line(rng: random.Random, u: _User, parent: int | None) -> str:
    return "\t".join((
        str(u.id), _e(u.username) if u.username else N, _password(rng), _e(u.email), _b(True),
        _b(u.superadmin), _b(False), u.role, _opt(parent),
        _json(u.permissions) if u.permissions else N, _e(u.first) if u.first else N, _e(u.last) if u.last else N,
        _opt(u.package), _opt(u.shop), _text_array(u.backup_codes) if u.backup_codes else N,
        _b(rng.random() < 0.7), _ts(u.created), N,
    )) + "\n"


def _make_shop_users(
    rng: random.Random, g: _Group, shop_name: str, created: int, *, with_owner: bool, employees: int, package: int
) -> list[_User]:
    """Owner (optional), employees and one kiosk user of one shop, in creation order."""
    slug = "".join(ch for ch in shop_name.translate(_FOLD).lower() if ch.isalnum())[:12] or "shop"
    domain = f"{slug}.at"
    users: list[_User] = []
    owner_mail = f"office@{domain}"
    if with_owner:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        codes = [_hex(rng, 8) for _ in range(10)] if rng.random() < 0.5 else None  # 2FA backup codes
        users.append(_User(created, f"{slug[:8]}{rng.randrange(10, 99)}", owner_mail, "owner", g.shop, first, last,
                           backup_codes=codes, package=package, group=g.gi, owner_of=g.gi))
    for k in range(employees):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        mail = f"{first}.{last}".translate(_FOLD).lower() + f"@{domain}"
        users.append(_User(created + (k + 1) * 7 * DAY + rng.randrange(DAY), None, mail, "employee", g.shop, first,
                           last, permissions=rng.choice(_PERMISSIONS), group=g.gi))
    # Kiosk users have no username and share the shop's address: emails are not unique in the app.
    users.append(_User(created + 2 * DAY, None, owner_mail, "kiosk", g.shop, "Kiosk", None, group=g.gi))
    return users


def _assign_users(users: list[_User], groups: list[_Group], first_id: Iterator[int]) -> None:
    """Give ids in creation order and tell each shop group which users its rows may reference."""
    users.sort(key=lambda u: u.created)
    for u in users:
        u.id = next(first_id)
    for u in users:
        if u.group is None:
            continue
        g = groups[u.group]
        if u.role == "owner":
            g.owner_id = u.id
        if u.role in ("owner", "employee"):
            g.user_ids.append(u.id)
            g.user_emails.append(u.email)
            g.names.append(u.username if u.role == "owner" and u.username else u.first or "Mitarbeiter")
        if u.role == "employee":
            g.employees.append((u.id, u.first or "", u.last or "", u.email))
        if u.role == "kiosk":
            g.kiosk_user_id = u.id


def _users_lines(rng: random.Random, users: list[_User], groups: list[_Group]) -> Iterator[str]:
    for u in users:
        parent = groups[u.group].owner_id if u.group is not None and u.role != "owner" else None
        yield _user_line(rng, u, parent)


def _counts(scale: float, factor: float) -> dict[str, int]:
    return {t: max(1, round(c * scale * factor)) for t, c in BASE_COUNTS.items()}


def _analyze(conn: psycopg.Connection, tables: Iterable[str]) -> None:
    conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in tables)))


def _signature_pool(seed_key: str) -> list[str]:
    rng = random.Random(f"{seed_key}/signatures-pool")
    return [_signature(rng) for _ in range(16)]


def seed_database(
    spec: ConnectionSpec,
    *,
    shops: int = 5,
    scale: float = 1.0,
    seed: int = 42,
    big_shop_rows: int | None = None,
    cross_shop_reference: bool = False,
    orphan_rows: bool = False,
) -> SeedReport:
    """Create the shared schema in `spec`'s (empty) database and fill it; return what was planted.

    Refuses a database that already has a `shops` table: it never drops or overwrites data.
    """
    if not 1 <= shops <= MAX_SHOPS:
        raise ConfigurationError(f"shops must be between 1 and {MAX_SHOPS}, got {shops}.")
    if not scale > 0:
        raise ConfigurationError(f"scale must be greater than 0, got {scale}.")
    if big_shop_rows is not None and big_shop_rows < 0:
        raise ConfigurationError(f"big_shop_rows must be 0 or more, got {big_shop_rows}.")
    if cross_shop_reference and shops < 2:
        raise ConfigurationError("cross_shop_reference needs at least 2 shops (a repair of one, a customer of another).")

    refusal = (
        f"database {spec.dbname!r} already contains a 'shops' table; seed_database never drops or overwrites "
        "data. Seed into a new database (e.g. ensure_database(admin, 'handyshop_shared_2')), or drop this one "
        "yourself if it is disposable."
    )
    rng = random.Random(seed)
    with spec.connect() as conn:
        if conn.execute("SELECT to_regclass('public.shops')").fetchone() != (None,):
            raise ConfigurationError(refusal)
        try:
            conn.execute("SET LOCAL maintenance_work_mem = '256MB'")  # index builds after the load
            _create_tables(conn)
        except psycopg.errors.DuplicateTable as exc:
            # A concurrent seed got there first, or the database holds other tables of the same names.
            raise ConfigurationError(
                f"database {spec.dbname!r} already contains a table of the shared schema "
                f"({exc.diag.message_primary}); seed_database never drops or overwrites data. "
                "Seed into a new database."
            ) from None
        report = _seed(conn, rng, f"{seed}", shops, scale, big_shop_rows, cross_shop_reference, orphan_rows)
        _create_constraints(conn)
        _set_sequences(conn, MASTER_TABLES + TENANT_TABLES)
        conn.commit()
        _analyze(conn, MASTER_TABLES + TENANT_TABLES)
        conn.commit()
    return report


def _seed(
    conn: psycopg.Connection,
    rng: random.Random,
    seed_key: str,
    n_shops: int,
    scale: float,
    big_shop_rows: int | None,
    cross_shop_reference: bool,
    orphan_rows: bool,
) -> SeedReport:
    packages = [
        (1, "Basic", "Grundfunktionen für Einzelkämpfer", 0.0),
        (2, "Professional", "Mitarbeiter, Kostenvoranschläge, E-Mail-Versand", 19.9),
        (3, "Enterprise", "Mehrere Filialen, Kiosk-Modus, Support-Zugang", 29.9),
    ]
    pkg_created = _secs(datetime(2022, 11, 1))
    _copy(conn, "packages",
          (f"{i}\t{_e(name)}\t{_e(desc)}\t{price!r}\t{_ts(pkg_created)}\n" for i, name, desc, price in packages),
          freeze=True)

    # Shops sign up over two years and a bit; shop 1 is the oldest (and the big one, if asked).
    first_signup, last_signup = _secs(datetime(2023, 1, 10)), _secs(datetime(2025, 3, 1))
    slot = (last_signup - first_signup) // n_shops
    shop_ids = list(range(1, n_shops + 1))
    shop_created = [first_signup + i * slot + rng.randrange(max(slot // 2, 1)) for i in range(n_shops)]
    names = [
        _SHOP_NAMES[i] if i < len(_SHOP_NAMES) else f"{_SHOP_NAMES[i % len(_SHOP_NAMES)]} {i // len(_SHOP_NAMES) + 1}"
        for i in range(n_shops)
    ]
    without_owner = [shop_ids[2]] if n_shops >= 3 else []

    groups: list[_Group] = []
    for i, sid in enumerate(shop_ids):
        counts = _counts(scale, rng.uniform(0.7, 1.4))
        groups.append(_Group(len(groups), sid, f"{seed_key}/shop/{sid}", shop_created[i], END, counts))
    if big_shop_rows is not None:
        big = groups[0].counts
        big["repairs"] = big_shop_rows
        big["customers"] = max(big["customers"], big_shop_rows // 4)

    def special(shop: int | None, start: datetime, end: datetime, counts: dict[str, int]) -> _Group:
        g = _Group(len(groups), shop, f"{seed_key}/special/{shop}", _secs(start), _secs(end), counts)
        groups.append(g)
        return g

    # Global rows (§5.1): the device catalog under 1682, system templates under 0, legacy rows under NULL.
    catalog = special(CATALOG_SHOP_ID, datetime(2022, 12, 1), datetime(2023, 1, 5),
                      {"device_types": 5, "user_brands": 12, "user_models": 40})
    templates = special(GLOBAL_TEMPLATE_SHOP_ID, datetime(2022, 12, 1), datetime(2023, 2, 1), {"email_templates": 5})
    null_group = special(None, datetime(2023, 1, 1), datetime(2024, 6, 1),
                         {"customers": 2, "repairs": 1, "repair_status_history": 2, "email_templates": 1})
    orphan = (
        special(ORPHAN_SHOP_ID, datetime(2023, 5, 1), datetime(2024, 2, 1),
                {"customers": 3, "repairs": 2, "repair_status_history": 3})
        if orphan_rows else None
    )
    if cross_shop_reference:
        groups[1].cross_customer_group = groups[0].gi

    # Users: a superadmin (shop NULL), per shop an owner (one shop lacks it), employees and a kiosk user,
    # and one employee left without a shop.
    user_rng = random.Random(f"{seed_key}/users")
    users: list[_User] = [
        _User(_secs(datetime(2022, 11, 15)), "superadmin", "support@handyshop-verwaltung.at", "owner", None,
              "Super", "Admin", superadmin=True)
    ]
    for i, g in enumerate(groups[:n_shops]):
        users += _make_shop_users(
            user_rng, g, names[i], g.start, with_owner=g.shop not in without_owner,
            employees=2 + int(user_rng.random() < 0.5), package=1 + i % 3,
        )
    if n_shops >= 2:
        users.append(_User(_secs(datetime(2024, 2, 20)), None, "ex.mitarbeiter@gmx.at", "employee", None,
                           "Kerstin", "Fröhlich", permissions=_PERMISSIONS[1]))
    _assign_users(users, groups, itertools.count(1))
    superadmin = users[[u.superadmin for u in users].index(True)].id
    for g in groups:
        g.superadmin_id = superadmin
        if g.gi < n_shops:
            g.counts["employees"] = len(g.employees)
            g.counts["kiosk_online_status"] = g.counts["kiosk_devices"]
    catalog.user_ids = [superadmin]  # the real catalog rows belong to the superadmin (user 10 there)

    _copy(conn, "shops",
          (f"{sid}\t{_e(names[i])}\t{_ts(shop_created[i])}\t{_ts(shop_created[i] + 30 * DAY)}\n"
           for i, sid in enumerate(shop_ids)), freeze=True)
    _copy(conn, "users", _users_lines(user_rng, users, groups), freeze=True)

    st = _State(groups, _signature_pool(seed_key))
    for table in TENANT_TABLES:
        _load_tenant_table(conn, st, table, itertools.count(1), freeze=True)

    def ids_of(g: _Group) -> dict[str, list[int]]:
        return {t: list(st.ids[t][g.gi]) for t in TENANT_TABLES if len(st.ids[t][g.gi])}

    crosses: list[CrossShopReference] = []
    if cross_shop_reference:
        a, b = groups[1], groups[0]
        crosses.append(CrossShopReference(
            "repairs", st.ids["repairs"][a.gi][0], "customer_id", "customers", st.ids["customers"][b.gi][0],
            a.shop, b.shop,  # type: ignore[arg-type]
        ))
    table_rows = {t: len(packages) if t == "packages" else n_shops if t == "shops" else len(users)
                  for t in MASTER_TABLES}
    table_rows.update({t: sum(len(a) for a in st.ids[t]) for t in TENANT_TABLES})
    return SeedReport(
        shop_ids=shop_ids,
        table_rows=table_rows,
        shop_rows={g.shop: {t: len(st.ids[t][g.gi]) for t in TENANT_TABLES} for g in groups if g.shop is not None},
        null_shop_rows=ids_of(null_group),
        global_rows={catalog.shop: ids_of(catalog), templates.shop: ids_of(templates)},  # type: ignore[dict-item]
        orphan_shop_rows={orphan.shop: ids_of(orphan)} if orphan is not None else {},  # type: ignore[dict-item]
        cross_shop_references=crosses,
        shops_without_owner=without_owner,
        users_without_shop=[u.id for u in users if u.shop is None and not u.superadmin],
        superadmin_ids=[u.id for u in users if u.superadmin],
    )


def ensure_database(admin: ConnectionSpec, dbname: str) -> ConnectionSpec:
    """Create database `dbname` on `admin`'s server unless it exists; return a spec for it."""
    with admin.connect(autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            except psycopg.errors.DuplicateDatabase:
                pass  # created concurrently: just as good
    return admin.with_db(dbname)


def add_shop(spec: ConnectionSpec, *, name: str, seed: int = 0, scale: float = 1.0) -> int:
    """A shop signing up after the seed: shops row, owner, employee and kiosk user, and a few rows in
    every tenant table (ids from the live sequences, as the app would get them). Returns the shop id."""
    if not scale > 0:
        raise ConfigurationError(f"scale must be greater than 0, got {scale}.")
    with spec.connect() as conn:
        if conn.execute("SELECT to_regclass('public.shops')").fetchone() == (None,):
            raise ConfigurationError(
                f"database {spec.dbname!r} has no 'shops' table; run seed_database on it before add_shop."
            )
        shop_id = _reserve_ids(conn, "shops", 1)[0]
        while shop_id in (*GLOBAL_SHOP_IDS, ORPHAN_SHOP_ID):
            # Those numbers already mean "global" or "orphan" in the data; a real shop must not get them.
            shop_id = _reserve_ids(conn, "shops", 1)[0]
        latest = conn.execute("SELECT max(created_at) FROM shops").fetchone()
        base = max(latest[0] if latest and latest[0] else BASE, BASE)
        start = _secs(base) + DAY
        end = start + 30 * DAY
        package = conn.execute("SELECT min(id) FROM packages").fetchone()
        superadmin = conn.execute("SELECT min(id) FROM users WHERE is_superadmin").fetchone()
        rng = random.Random(f"{seed}/add/{shop_id}")
        counts = {t: max(1, round(c * scale * 0.02)) for t, c in BASE_COUNTS.items()}
        g = _Group(0, shop_id, f"{seed}/add/{shop_id}", start, end, counts)
        g.superadmin_id = superadmin[0] if superadmin else None
        users = _make_shop_users(rng, g, name, start, with_owner=True, employees=1,
                                 package=package[0] if package else None)  # type: ignore[arg-type]
        _assign_users(users, [g], iter(_reserve_ids(conn, "users", len(users))))
        counts["employees"] = len(g.employees)
        counts["kiosk_online_status"] = counts["kiosk_devices"]

        _copy(conn, "shops", [f"{shop_id}\t{_e(name)}\t{_ts(start)}\t{_ts(start)}\n"], freeze=False)
        _copy(conn, "users", _users_lines(rng, users, [g]), freeze=False)
        st = _State([g], _signature_pool(f"{seed}/add/{shop_id}"))
        for table in TENANT_TABLES:
            ids = _reserve_ids(conn, table, counts[table])
            _load_tenant_table(conn, st, table, iter(ids), freeze=False)
        conn.commit()
    return shop_id


def _reserve_ids(conn: psycopg.Connection, table: str, n: int) -> list[int]:
    """Take n ids from the table's sequence, so rows loaded by COPY with explicit ids never collide."""
    qualified = sql.Identifier("public", table).as_string(conn)
    cur = conn.execute(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)", (qualified, n)
    )
    return [int(r[0]) for r in cur.fetchall()]
