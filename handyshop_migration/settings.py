"""Environment variables the tool reads, in one place (the CLI, the Dagster resources and the docs use these)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from handyshop_migration.tenancy.errors import ConfigurationError
from handyshop_migration.tenancy.names import DEFAULT_GLOBAL_SHOP_IDS

SOURCE_URL = "HANDYSHOP_SOURCE_URL"  # the shared database (superuser or owner of its tables)
ADMIN_URL = "HANDYSHOP_ADMIN_URL"  # CREATEDB + CREATEROLE on the tenant server; default: the source server
CATALOG = "HANDYSHOP_CATALOG"  # catalog file the definitions are built from; default: the packaged Handyshop one
TENANT_MIGRATIONS = "HANDYSHOP_TENANT_MIGRATIONS"  # directory of 0002_*.sql tenant migrations (optional)
BACKUP_DIR = "HANDYSHOP_BACKUP_DIR"  # where phase 0 writes the pg_dump of the shared database
TENANT_DATABASE = "HANDYSHOP_TENANT_DATABASE"  # name pattern, default shop_{id}_db
TENANT_ROLE = "HANDYSHOP_TENANT_ROLE"  # the application's role, name pattern, default shop_user_{id}
TENANT_OWNER_ROLE = "HANDYSHOP_TENANT_OWNER_ROLE"  # the migration's per-tenant owner role, default shop_owner_{id}
GLOBAL_SHOP_IDS = "HANDYSHOP_GLOBAL_SHOP_IDS"  # shop ids that mark global rows, default "0,1682"
SENSOR_INTERVAL = "HANDYSHOP_SENSOR_INTERVAL_SECONDS"  # new_shops_sensor's minimum interval, default 30
CAPTURE = "HANDYSHOP_CAPTURE"  # "off" copies without capturing writes (no phase 3); default on
ARCHIVE_DIR = "HANDYSHOP_ARCHIVE_DIR"  # where phase 5 archives a shop's rows before deleting them
SERVERS = "HANDYSHOP_SERVERS"  # the tenant servers (YAML/JSON file: names, admin URL variables, capacities); optional
ENCRYPTION_KEY = "TENANT_ENCRYPTION_KEY"
APP_ENCRYPTION_KEY = "HANDYSHOP_APP_ENCRYPTION_KEY"  # the real app's own key, for export-app-registry
OLD_ENCRYPTION_KEYS = "TENANT_ENCRYPTION_OLD_KEYS"

DEFAULT_BACKUP_DIR = "backups"
DEFAULT_ARCHIVE_DIR = "archives"
DEFAULT_SENSOR_INTERVAL = 30


def global_shop_ids(environ: Mapping[str, str] | None = None) -> tuple[int, ...]:
    raw = (environ if environ is not None else os.environ).get(GLOBAL_SHOP_IDS, "")
    if not raw.strip():
        return DEFAULT_GLOBAL_SHOP_IDS
    try:
        return tuple(int(x) for x in raw.replace(" ", "").split(",") if x)
    except ValueError:
        raise ConfigurationError(
            f"{GLOBAL_SHOP_IDS}={raw!r} is not a comma-separated list of shop ids; e.g. {GLOBAL_SHOP_IDS}=0,1682."
        ) from None


def sensor_interval_seconds(environ: Mapping[str, str] | None = None) -> int:
    """How often new_shops_sensor may look for new shops. Read when the definitions load (tests shorten it;
    the daemon evaluates sensors at most every 5 s whatever this says)."""
    raw = (environ if environ is not None else os.environ).get(SENSOR_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_SENSOR_INTERVAL
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigurationError(f"{SENSOR_INTERVAL}={raw!r} is not a whole number of seconds >= 1; e.g. {SENSOR_INTERVAL}=30.")
    return value


@dataclass(frozen=True)
class Required:
    name: str
    purpose: str


REQUIRED_FOR_MIGRATION = (
    Required(SOURCE_URL, "the shared database, e.g. postgresql://USER:PASSWORD@HOST:5432/handyshop"),
    Required(ENCRYPTION_KEY, "the key that encrypts tenant credentials; make one with `openssl rand -hex 32`"),
)


def missing(required: tuple[Required, ...], environ: Mapping[str, str] | None = None) -> list[Required]:
    env = environ if environ is not None else os.environ
    return [r for r in required if not env.get(r.name, "").strip()]
