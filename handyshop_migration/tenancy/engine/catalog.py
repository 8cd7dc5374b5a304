"""The source catalog as a value: which tables go to tenant databases and how, everything needed to rebuild
them per tenant, and what is reported instead of carried.

The catalog is read from the live source (`introspection.introspect`, `handyshop-migration inspect`) and is a
reviewable JSON file: the Dagster definitions are built from it, phase 0 compares it with the live source
(drift), and its diff in review shows what changed — a table joining or leaving the tenants, an object
rewritten or left out. Format 2 (this one) records, beyond format 1:

- `tenants`: the table that lists the tenants, its key column and an optional display-name column
  (Handyshop: `shops(id, name)`), and `users`: the users table phase 0's owner checks need (or none);
  `phase0_checks`: which validation checks run and which tables each needs;
- per table a `role` — `tenant` (carries the tenant column), `implied` (belongs to a tenant through the
  foreign-key `path` to a tenant table), `reference` (copied whole into every tenant), `shared` (stays in
  the shared database) — and a `global_rows` policy for rows under global tenant ids or NULL (`shared`:
  they stay in the shared database; `every_tenant`: copied into every tenant). This version builds `tenant`
  tables with `global_rows = shared`; the other values are part of the format so that the next version
  adds behaviour, not fields. Shared tables are listed in `shared_tables` with the reason;
- `objects`: functions, procedures, aggregates, views, materialized views, triggers, event triggers,
  row-level security policies and comments of the source, each with the server's own definition text;
  `extensions` with schema and version;
- `findings`: what the tenant schema changes or leaves out, object by object with the reason (the rules are
  in `tenant_schema`; inspect stores their outcome here so that the file says it and phase 0 reports it);
- `membership`: table -> role (and path), a summary written for review; ignored when read.

A Catalog has a structural checksum (everything but provenance and the derived summaries) used to detect
drift.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from handyshop_migration.tenancy.errors import CatalogError

CATALOG_FORMAT = 2
FIRST_USER_OID = 16384  # FirstNormalObjectId: OIDs below are built in, equal on every server

# Table roles. Only TENANT is built by this version; the others are recorded so the format stays stable.
TENANT, IMPLIED, REFERENCE, SHARED = "tenant", "implied", "reference", "shared"
ROLES = (TENANT, IMPLIED, REFERENCE, SHARED)
# What happens to a table's rows under global tenant ids (0, 1682, ...) or a NULL tenant column.
GLOBAL_ROWS_SHARED, GLOBAL_ROWS_EVERY_TENANT = "shared", "every_tenant"
GLOBAL_ROWS = (GLOBAL_ROWS_SHARED, GLOBAL_ROWS_EVERY_TENANT)


@dataclass(frozen=True)
class SequenceOptions:
    start: int
    increment: int
    minvalue: int
    maxvalue: int
    cache: int
    cycle: bool


@dataclass(frozen=True)
class Identity:
    always: bool
    options: SequenceOptions


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type() text, e.g. "timestamp without time zone", "text[]", "public.mood"
    nullable: bool
    default: str | None = None
    collation: str | None = None  # only when it differs from the type's default
    identity: Identity | None = None
    generated: str | None = None  # expression of a generated column
    generated_kind: str | None = None  # "stored" or "virtual" (PostgreSQL 18)
    binary_copy_safe: bool = True  # False when COPY BINARY would embed server-specific type OIDs
    # True when the type's hash function gives the same value in every database (built-in types with a
    # hash operator class, arrays of them): the checksum may then hash the row itself, not its text.
    hashable: bool = True
    comment: str | None = None


@dataclass(frozen=True)
class Constraint:
    name: str
    kind: str  # "primary key", "unique", "check", "exclusion"
    columns: tuple[str, ...]
    definition: str  # pg_get_constraintdef()


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]
    definition: str
    on_update: str = "NO ACTION"
    on_delete: str = "NO ACTION"
    match_full: bool = False
    deferrable: bool = False
    initially_deferred: bool = False


@dataclass(frozen=True)
class Index:
    name: str
    definition: str  # pg_get_indexdef()
    unique: bool
    method: str
    key_columns: tuple[str | None, ...]  # None for an expression
    key_definitions: tuple[str, ...]  # per key column: name plus opclass/collation/order as the server prints it
    include_columns: tuple[str, ...]
    predicate: str | None
    uses_tenant_column: bool


@dataclass(frozen=True)
class SequenceInfo:
    schema: str
    name: str
    column: str
    data_type: str
    options: SequenceOptions
    owned: bool


@dataclass(frozen=True)
class Hop:
    """One foreign-key step of an implied table's path: `table.columns` -> `ref_table.ref_columns`."""

    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: Constraint | None
    constraints: tuple[Constraint, ...]  # unique, check, exclusion (not the primary key)
    foreign_keys: tuple[ForeignKey, ...]  # to other tenant tables (kept in tenant databases)
    external_foreign_keys: tuple[ForeignKey, ...]  # to master tables (dropped; the columns stay)
    indexes: tuple[Index, ...]  # indexes not backing a constraint
    sequences: tuple[SequenceInfo, ...]  # serial / nextval() defaults
    tenant_column: str
    tenant_column_nullable: bool = True
    role: str = TENANT
    path: tuple[Hop, ...] = ()  # role "implied": the foreign-key path to a tenant table
    global_rows: str = GLOBAL_ROWS_SHARED
    comment: str | None = None
    row_security: bool = False  # ENABLE ROW LEVEL SECURITY
    force_row_security: bool = False

    @property
    def qualified(self) -> tuple[str, str]:
        return (self.schema, self.name)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    @property
    def tenant_columns(self) -> tuple[Column, ...]:
        """The columns a tenant database has: all but the tenant column."""
        return tuple(c for c in self.columns if c.name != self.tenant_column)

    @property
    def copy_columns(self) -> tuple[str, ...]:
        """Columns written by the copy: generated columns are computed by the tenant database itself."""
        return tuple(c.name for c in self.tenant_columns if c.generated is None)

    @property
    def binary_copy_safe(self) -> bool:
        return all(self.column(c).binary_copy_safe for c in self.copy_columns)

    @property
    def hashable(self) -> bool:
        return all(self.column(c).hashable for c in self.copy_columns)

    @property
    def key_columns(self) -> tuple[str, ...]:
        """Primary key as a tenant database has it (without the tenant column); empty if none."""
        if self.primary_key is None:
            return ()
        return tuple(c for c in self.primary_key.columns if c != self.tenant_column)

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(sorted({fk.ref_table for fk in self.foreign_keys if fk.ref_table != self.name}))


@dataclass(frozen=True)
class SharedTable:
    """A table of the source that stays in the shared database, and why (for the membership diff)."""

    schema: str
    name: str
    reason: str  # "tenants table", "excluded", "no tenant column", "users table"
    role: str = SHARED
    global_rows: str = GLOBAL_ROWS_SHARED


@dataclass(frozen=True)
class UserType:
    schema: str
    name: str
    kind: str  # "enum", "domain", "composite"
    labels: tuple[str, ...] = ()
    base_type: str | None = None
    default: str | None = None
    not_null: bool = False
    checks: tuple[tuple[str, str], ...] = ()  # (name, definition)
    attributes: tuple[tuple[str, str], ...] = ()  # (name, type) of a composite
    depends_on: tuple[str, ...] = ()  # "schema.name" of other user types it uses
    comment: str | None = None


@dataclass(frozen=True)
class Extension:
    name: str
    schema: str
    version: str


@dataclass(frozen=True)
class TenantsTable:
    """The table listing the tenants: `SELECT key, name FROM schema.table` gives every tenant."""

    schema: str
    table: str
    key: str
    name: str | None = None  # display-name column, if the table has one


@dataclass(frozen=True)
class UsersTable:
    """The application's users, for phase 0's owner checks (users without a tenant, tenants without an
    owner). Columns are None when the table lacks them; the checks that need them are then not run."""

    schema: str
    table: str
    tenant_column: str
    role_column: str | None = "role"
    owner_role: str = "owner"
    superadmin_column: str | None = None
    deleted_column: str | None = None


@dataclass(frozen=True)
class SchemaObject:
    """A database object besides tables and types, as the server defines it.

    `definition` is the server's own text (`pg_get_functiondef`, `pg_get_viewdef`, `pg_get_triggerdef`,
    ...); the tenant schema decides from `reads` and `tenant_references` whether it is carried as it is,
    rewritten, created in one tenant only, or reported.
    """

    kind: str  # function, procedure, aggregate, view, materialized view, trigger, event trigger, policy, index
    schema: str
    name: str  # functions: name(identity arguments); triggers/policies: name; matview indexes: index name
    definition: str  # CREATE statement (views: the SELECT only)
    table: str | None = None  # trigger/policy: its table; matview index: its materialized view
    reads: tuple[str, ...] = ()  # relations ("schema.name") it depends on, per pg_depend
    calls: tuple[str, ...] = ()  # other objects (kind:schema.name) it depends on
    tenant_references: tuple[str, ...] = ()  # tables whose tenant column it names (pg_depend or body text)
    options: tuple[str, ...] = ()  # views: reloptions; triggers: "enabled=A|R|D"; event triggers: event
    comment: str | None = None
    owner_extension: str | None = None  # set when an extension owns it (then it is the extension's)

    @property
    def key(self) -> str:
        """Unique within a catalog: triggers, policies and indexes are named per table."""
        if self.table and self.kind in ("trigger", "policy", "index"):
            return f"{self.kind}:{self.schema}.{self.table}.{self.name}"
        return f"{self.kind}:{self.schema}.{self.name}"

    @property
    def label(self) -> str:
        where = f" on {self.table}" if self.table and self.kind in ("trigger", "policy", "index") else ""
        return f"{self.kind} {self.name}{where}"


@dataclass(frozen=True)
class CatalogFinding:
    """What the tenant schema does differently from the source for one object, and why."""

    object: str  # "view flagship_inventory", "index things_tenant_1 on Things"
    action: str  # "left out", "rewritten", "only in tenant N", "carried, names the tenant column"
    reason: str

    def line(self) -> str:
        return f"{self.object}: {self.action} — {self.reason}"


@dataclass(frozen=True)
class Catalog:
    tenant_column: str
    tables: tuple[Table, ...]  # tables that go to tenant databases, parents before children
    types: tuple[UserType, ...] = ()
    extensions: tuple[Extension, ...] = ()
    master_tables: tuple[str, ...] = ()  # non-tenant tables that tenant rows reference
    notes: tuple[str, ...] = ()  # provenance remarks (FK cycles, ...)
    source: str = ""  # "dbname" of the source, for humans; no host, no credentials
    server_version: int = 0
    format: int = CATALOG_FORMAT
    tenants: TenantsTable | None = None
    users: UsersTable | None = None
    phase0_checks: dict[str, tuple[str, ...]] = field(default_factory=dict)  # check -> tables it needs
    shared_tables: tuple[SharedTable, ...] = ()
    objects: tuple[SchemaObject, ...] = ()
    findings: tuple[CatalogFinding, ...] = ()

    # -- lookups ------------------------------------------------------------------------------------

    def table(self, name: str) -> Table:
        for t in self.tables:
            if t.name == name:
                return t
        raise CatalogError(
            f"table {name!r} is not in the catalog (tenant tables: {', '.join(self.table_names)}); "
            "re-run `handyshop-migration inspect` if the source changed."
        )

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables)

    def children_of(self, name: str) -> tuple[str, ...]:
        return tuple(t.name for t in self.tables if name in t.parents)

    def objects_of(self, *kinds: str) -> tuple[SchemaObject, ...]:
        return tuple(o for o in self.objects if o.kind in kinds)

    @property
    def schema(self) -> str:
        """The schema of the tenant tables (one schema per catalog)."""
        return self.tables[0].schema if self.tables else (self.tenants.schema if self.tenants else "public")

    def require_tenants(self) -> TenantsTable:
        if self.tenants is None:
            raise CatalogError(
                "the catalog names no tenants table; write it again with `handyshop-migration inspect "
                "--tenants-table TABLE --tenants-key COLUMN`."
            )
        return self.tenants

    @property
    def membership(self) -> dict[str, str]:
        """table -> its role (with the path of an implied table): the summary a reviewer diffs."""
        out = {}
        for t in self.tables:
            path = " via " + ", ".join(f"{h.table}.{'+'.join(h.columns)} -> {h.ref_table}" for h in t.path)
            out[t.name] = t.role + (path if t.path else "") + (f" (global rows: {t.global_rows})")
        for s in self.shared_tables:
            out[s.name] = f"{s.role} ({s.reason})"
        return dict(sorted(out.items()))

    # -- serialisation ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["membership"] = self.membership
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, ensure_ascii=False) + "\n"

    def structure(self) -> dict[str, Any]:
        """What defines the tenant schema: everything except provenance and derived summaries."""
        data = asdict(self)
        for key in ("source", "server_version", "notes", "findings"):
            data.pop(key)
        return data

    @property
    def checksum(self) -> str:
        canonical = json.dumps(self.structure(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Catalog:
        if not isinstance(data, dict) or data.get("format") != CATALOG_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise CatalogError(
                f"catalog format {found!r} is not supported (expected {CATALOG_FORMAT}); "
                "write a new one with `handyshop-migration inspect --source-url URL --output FILE`."
            )
        data = {k: v for k, v in data.items() if k != "membership"}
        catalog = _value(cls, data, "catalog")
        for t in catalog.tables:
            if t.role not in ROLES or t.global_rows not in GLOBAL_ROWS:
                raise CatalogError(
                    f"table {t.name}: role {t.role!r} / global_rows {t.global_rows!r} unknown "
                    f"(roles: {', '.join(ROLES)}; global_rows: {', '.join(GLOBAL_ROWS)})."
                )
            if t.role != TENANT:
                raise CatalogError(
                    f"table {t.name} has role {t.role!r}; this version migrates tenant tables only "
                    "(implied and reference tables come with the next one): set its role to shared or remove it."
                )
        return catalog

    @classmethod
    def from_json(cls, text: str) -> Catalog:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CatalogError(
                f"catalog file {path} does not exist; write one with "
                "`handyshop-migration inspect --source-url URL --output FILE`."
            ) from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
            raise CatalogError(f"catalog file {path} cannot be read ({exc.__class__.__name__}); "
                               "point HANDYSHOP_CATALOG at a catalog file.") from None
        try:
            return cls.from_json(text)
        except CatalogError as exc:
            raise CatalogError(f"catalog file {path}: {exc}") from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CatalogError(
                f"catalog file {path} is not a valid catalog ({type(exc).__name__}: {exc}); "
                "write it again with `handyshop-migration inspect`."
            ) from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")


def _value(hint: Any, data: Any, where: str) -> Any:
    """Build a value of type `hint` (dataclass, tuple, optional, dict, scalar) from its JSON form."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value(options[0], data, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(data, list):
            raise TypeError(f"{where}: expected a list, got {type(data).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], x, f"{where}[{i}]") for i, x in enumerate(data))
        return tuple(_value(a, x, where) for a, x in zip(args, data, strict=True))
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if not isinstance(data, dict):
            raise TypeError(f"{where}: expected an object")
        return {str(k): _value(value_type, v, f"{where}.{k}") for k, v in data.items()}
    if isinstance(hint, type) and is_dataclass(hint):
        if not isinstance(data, dict):
            raise TypeError(f"{where}: expected an object for {hint.__name__}")
        hints = typing.get_type_hints(hint)
        known = {f.name for f in fields(hint)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KeyError(f"{where}: unknown fields {', '.join(unknown)}")
        return hint(**{k: _value(hints[k], v, f"{where}.{k}") for k, v in data.items()})
    if hint is int and (not isinstance(data, int) or isinstance(data, bool)):
        raise TypeError(f"{where}: expected an integer")
    if hint is str and not isinstance(data, str):
        raise TypeError(f"{where}: expected a string")
    if hint is bool and not isinstance(data, bool):
        raise TypeError(f"{where}: expected true or false")
    return data


# -- the catalog shipped with the package ---------------------------------------------------------------

PACKAGED_CATALOG = Path(__file__).resolve().parents[2] / "catalogs" / "handyshop.json"


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The catalog named by `path`, else the Handyshop catalog shipped with the package."""
    return Catalog.load(path or PACKAGED_CATALOG)


def introspect(*args: Any, **kwargs: Any) -> Catalog:
    """`introspection.introspect` (the reading of a live source lives there; kept here for callers)."""
    from handyshop_migration.tenancy.engine.introspection import introspect as read

    return read(*args, **kwargs)


__all__ = [
    "CATALOG_FORMAT",
    "Catalog",
    "CatalogFinding",
    "Column",
    "Constraint",
    "Extension",
    "ForeignKey",
    "Hop",
    "Identity",
    "Index",
    "PACKAGED_CATALOG",
    "SchemaObject",
    "SequenceInfo",
    "SequenceOptions",
    "SharedTable",
    "Table",
    "TenantsTable",
    "UserType",
    "UsersTable",
    "introspect",
    "load_catalog",
]
