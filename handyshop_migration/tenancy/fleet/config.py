"""The tenant servers of a fleet, read from one file (`HANDYSHOP_SERVERS`), secrets from the environment.

```yaml
servers:
  - name: pg-a                              # what the registry records for each shop placed there
    admin_url_env: HANDYSHOP_PG_A_ADMIN_URL  # variable holding postgresql://ADMIN:PASSWORD@HOST:PORT/postgres
    tenant_host: pg-a.internal               # optional: where applications reach its tenants (default: the admin URL's)
    tenant_port: 5432
    max_databases: 2000                      # optional caps; none: unlimited
    max_bytes: 2TB
    max_connections: 450                     # optional: what the plan may use (default: the server's own, minus reserved)
    accept_new: true                         # false: drains — takes no new tenants, moves off it still work
  - name: pg-b
    admin_url_env: HANDYSHOP_PG_B_ADMIN_URL
placement:
  pins: {17: pg-b}                           # shop 17 always goes to pg-b (refused if pg-b is full)
connections:                                 # the connection plan every server is checked against
  pool_size: 2                               # connections per tenant pool of the application (its router's max_size)
  app_instances: 1                           # application processes, each with its own router
  max_pools_per_server: null                 # the router's cap of open tenant pools per server (null: one per tenant)
  reserve: 10                                # per server, for the migration's own sessions and operators
schema_changes:
  per_server: 4                              # tenant migrations applied at once on one server
```

Why the URLs are not in the file: the file is configuration an operator reviews and versions; a password in it
would travel wherever it does. The file names the variable, the variable holds the secret (as
`HANDYSHOP_SOURCE_URL` does). Without `HANDYSHOP_SERVERS` the fleet is the one server of `HANDYSHOP_ADMIN_URL`
(or the source's), named `default`, without caps: what the project did before.

Every mistake in the file is one `ConfigurationError` line naming the file, the entry and the fix.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConfigurationError
from handyshop_migration.tenancy.secrets import Secret

DEFAULT_SERVER = "default"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


@dataclass(frozen=True)
class ServerConfig:
    name: str
    admin: ConnectionSpec  # CREATEDB + CREATEROLE (or superuser) on that server, database `postgres`
    tenant_host: str | None = None
    tenant_port: int | None = None
    max_databases: int | None = None
    max_bytes: int | None = None
    max_connections: int | None = None  # None: the server's max_connections minus its reserved slots
    accept_new: bool = True

    def __post_init__(self) -> None:
        if self.max_bytes is not None and not isinstance(self.max_bytes, int):
            object.__setattr__(self, "max_bytes", parse_size(self.max_bytes, f"server {self.name}: max_bytes"))

    def describe_caps(self) -> str:
        caps = [
            f"{self.max_databases} databases" if self.max_databases is not None else "",
            f"{format_bytes(self.max_bytes)}" if self.max_bytes is not None else "",
            f"{self.max_connections} connections" if self.max_connections is not None else "",
        ]
        return ", ".join(c for c in caps if c) or "no caps"


@dataclass(frozen=True)
class ConnectionPlan:
    """What each tenant costs a server in connections, once applications route to it."""

    pool_size: int = 2
    app_instances: int = 1
    max_pools_per_server: int | None = None
    reserve: int = 10

    def tenant_connections(self, tenants: int) -> int:
        pools = tenants if self.max_pools_per_server is None else min(tenants, self.max_pools_per_server)
        return self.app_instances * self.pool_size * pools


@dataclass(frozen=True)
class FleetConfig:
    servers: tuple[ServerConfig, ...]
    pins: Mapping[int, str] = field(default_factory=dict)
    connections: ConnectionPlan = ConnectionPlan()
    schema_per_server: int = 4
    source: str = "(built in)"  # where it was read from, for messages

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigurationError(f"{self.source}: no servers; name at least one under `servers:`.")
        names = [s.name for s in self.servers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigurationError(f"{self.source}: server names must be unique; {', '.join(dupes)} appear twice.")
        for shop, server in self.pins.items():
            if server not in names:
                raise ConfigurationError(
                    f"{self.source}: shop {shop} is pinned to server {server!r}, which is not among the servers "
                    f"({', '.join(names)}); fix the pin or add the server."
                )

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.servers]

    def server(self, name: str) -> ServerConfig:
        for s in self.servers:
            if s.name == name:
                return s
        raise ConfigurationError(
            f"server {name!r} is not one of the tenant servers ({', '.join(self.names)}) of {self.source}; a shop "
            "registered there needs it: add it back (its name, admin_url_env) before working on such shops."
        )


def single_server(admin: ConnectionSpec, *, name: str = DEFAULT_SERVER, **options: Any) -> FleetConfig:
    """The fleet of one server (no file): the project's behaviour before several servers."""
    return FleetConfig((ServerConfig(name, admin),), **options)


def parse_size(value: object, where: str) -> int:
    """Bytes from 12345, "500MB", "1.5 TB", "2TiB" (binary units: a disk's GB as df -h shows them)."""
    if isinstance(value, bool):
        raise ConfigurationError(f"{where}: {value!r} is not a size; write e.g. 500GB or 2TB.")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigurationError(f"{where}: a size must be positive, got {value}.")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ConfigurationError(f"{where}: {value!r} is not a size; write e.g. 500GB or 2TB.")
    unit = (match.group(2) or "").upper().replace("I", "").rstrip("B") or ""
    number = float(match.group(1)) * _UNITS[unit]
    if number <= 0:
        raise ConfigurationError(f"{where}: a size must be positive, got {value!r}.")
    return int(number)


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # unreachable; keeps type checkers content


def _int(entry: Mapping[str, Any], key: str, where: str, *, minimum: int = 1, default: Any = None) -> Any:
    value = entry.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(f"{where}: {key} must be a whole number >= {minimum}, got {value!r}.")
    return value


def _known(entry: Mapping[str, Any], keys: set[str], where: str) -> None:
    unknown = sorted(set(entry) - keys)
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (known: {', '.join(sorted(keys))})."
        )


_SERVER_KEYS = {"name", "admin_url_env", "tenant_host", "tenant_port", "max_databases", "max_bytes", "max_connections",
                "accept_new"}


def _server(entry: Any, position: int, source: str, env: Mapping[str, str]) -> ServerConfig:
    where = f"{source}: servers[{position}]"
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where} is not a mapping; each server is `- name: ..., admin_url_env: ...`.")
    _known(entry, _SERVER_KEYS, where)
    name = str(entry.get("name") or "")
    if not _NAME.match(name):
        raise ConfigurationError(f"{where}: name {name!r} must be 1-63 letters, digits, '.', '_' or '-'.")
    where = f"{source}: server {name}"
    variable = str(entry.get("admin_url_env") or "")
    if not variable:
        raise ConfigurationError(
            f"{where}: admin_url_env is missing; name the environment variable that holds its admin URL "
            "(the URL itself never goes into the file)."
        )
    url = env.get(variable, "")
    if not url.strip():
        raise ConfigurationError(
            f"{where}: {variable} is not set; set it to postgresql://ADMIN:PASSWORD@HOST:PORT/postgres (a role with "
            "CREATEDB and CREATEROLE on that server)."
        )
    admin = ConnectionSpec.from_url(Secret(url), name=variable)
    accept = entry.get("accept_new", True)
    if not isinstance(accept, bool):
        raise ConfigurationError(f"{where}: accept_new must be true or false, got {accept!r}.")
    host = entry.get("tenant_host")
    return ServerConfig(
        name=name,
        admin=admin,
        tenant_host=str(host) if host else None,
        tenant_port=_int(entry, "tenant_port", where),
        max_databases=_int(entry, "max_databases", where),
        max_bytes=parse_size(entry["max_bytes"], f"{where}: max_bytes") if entry.get("max_bytes") is not None else None,
        max_connections=_int(entry, "max_connections", where),
        accept_new=accept,
    )


def parse_fleet(document: Any, source: str, environ: Mapping[str, str] | None = None) -> FleetConfig:
    env = os.environ if environ is None else environ
    if not isinstance(document, Mapping):
        raise ConfigurationError(f"{source} is not a mapping with `servers:`; see `handyshop-migration servers --help`.")
    _known(document, {"servers", "placement", "connections", "schema_changes"}, source)
    entries = document.get("servers")
    if not isinstance(entries, list) or not entries:
        raise ConfigurationError(f"{source}: `servers:` must be a non-empty list of servers.")
    servers = tuple(_server(e, i, source, env) for i, e in enumerate(entries))
    placement = document.get("placement") or {}
    if not isinstance(placement, Mapping):
        raise ConfigurationError(f"{source}: `placement:` must be a mapping (pins: {{SHOP: SERVER}}).")
    _known(placement, {"pins"}, f"{source}: placement")
    pins_raw = placement.get("pins") or {}
    if not isinstance(pins_raw, Mapping):
        raise ConfigurationError(f"{source}: placement.pins must map shop ids to server names, e.g. {{17: pg-b}}.")
    pins: dict[int, str] = {}
    for shop, server in pins_raw.items():
        try:
            pins[int(shop)] = str(server)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{source}: placement.pins key {shop!r} is not a shop id.") from None
    conns = document.get("connections") or {}
    if not isinstance(conns, Mapping):
        raise ConfigurationError(f"{source}: `connections:` must be a mapping.")
    where = f"{source}: connections"
    _known(conns, {"pool_size", "app_instances", "max_pools_per_server", "reserve"}, where)
    plan = ConnectionPlan(
        pool_size=_int(conns, "pool_size", where, default=2),
        app_instances=_int(conns, "app_instances", where, default=1),
        max_pools_per_server=_int(conns, "max_pools_per_server", where),
        reserve=_int(conns, "reserve", where, minimum=0, default=10),
    )
    changes = document.get("schema_changes") or {}
    if not isinstance(changes, Mapping):
        raise ConfigurationError(f"{source}: `schema_changes:` must be a mapping (per_server: N).")
    _known(changes, {"per_server"}, f"{source}: schema_changes")
    per_server = _int(changes, "per_server", f"{source}: schema_changes", default=4)
    return FleetConfig(servers, pins, plan, per_server, source)


def load_fleet(path: str | Path, environ: Mapping[str, str] | None = None) -> FleetConfig:
    """The fleet described by a YAML (or JSON) file; admin URLs from the variables it names."""
    file = Path(path)
    if not file.is_file():
        raise ConfigurationError(f"HANDYSHOP_SERVERS={file}: no such file; point it at the servers file (YAML).")
    text = file.read_text(encoding="utf-8")
    try:
        document = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigurationError(f"{file} is not valid {'JSON' if file.suffix == '.json' else 'YAML'}: {first}.") from None
    return parse_fleet(document, str(file), environ)


__all__ = [
    "DEFAULT_SERVER",
    "ConnectionPlan",
    "FleetConfig",
    "ServerConfig",
    "format_bytes",
    "load_fleet",
    "parse_fleet",
    "parse_size",
    "single_server",
]
