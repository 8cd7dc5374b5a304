"""The source catalog as a value: which tables go to tenant databases and how, everything needed to rebuild
them per tenant, and what is reported instead of carried.

The catalog is read from the live source (`introspection.introspect`, `handyshop-migration inspect`) and is a
reviewable JSON file: the Dagster definitions are built from it, phase 0 compares it with the live source
(drift), and its diff in review shows what changed — a table joining or leaving the tenants, an object
rewritten or left out. Format 2 (this one) records, beyond format 1:

- `tenants`: the table that lists the tenants, its key column and an optional display-name column
  (Handyshop: `shops(id, name)`), and `users`: the users table phase 0's owner checks need (or none);
  `phase0_checks`: which validation checks run and which tables each needs;
- per table a `role` — `tenant` (carries the tenant column), `implied` (no tenant column: belongs to the
  tenant its foreign-key `path` leads to, through tenant tables or other implied tables; the other paths
  from the table are kept in `alternative_paths`, so phase 0 can name rows whose paths disagree), `reference`
  (neither the column nor a path: copied whole into every tenant, the shared database stays its owner) —
  and per tenant table a `global_rows` policy for rows under the catalog's `global_tenant_ids` (Handyshop:
  0 and 1682): `stay` (they stay in the shared database only) or `every_tenant` (copied into every tenant,
  next to its own rows). Rows with a NULL tenant column always stay. Tables that stay in the shared
  database are listed in `shared_tables` with the reason;
- per table its partitioning (`partition_key`, `partitions`): a partitioned table is created partitioned in
  every tenant, with the same partitions;
- `objects`: functions, procedures, aggregates, views, materialized views, triggers, event triggers,
  row-level security policies and comments of the source, each with the server's own definition text;
  `extensions` with schema and version;
- `findings`: what the tenant schema changes or leaves out, object by object with the reason (the rules are
  in `tenant_schema`; inspect stores their outcome here so that the file says it and phase 0 reports it);
- `membership`: table -> role (and path, global rows), a summary written for review; ignored when read.
  `membership_diff(old, new)` lists what changed in it, one line per table.

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
from handyshop_migration.tenancy.names import DEFAULT_GLOBAL_SHOP_IDS

CATALOG_FORMAT = 2
FIRST_USER_OID = 16384  # FirstNormalObjectId: OIDs below are built in, equal on every server

# Table roles: the roles of the tables that reach tenant databases (`tables`), and of those that stay.
TENANT, IMPLIED, REFERENCE, SHARED = "tenant", "implied", "reference", "shared"
ROLES = (TENANT, IMPLIED, REFERENCE)
# What happens to a tenant table's rows under the catalog's global tenant ids (0, 1682, ...).
GLOBAL_ROWS_STAY, GLOBAL_ROWS_EVERY_TENANT = "stay", "every_tenant"
GLOBAL_ROWS = (GLOBAL_ROWS_STAY, GLOBAL_ROWS_EVERY_TENANT)
GLOBAL_ROWS_SHARED = GLOBAL_ROWS_STAY  # the earlier name of "stay"
_GLOBAL_ROWS_ALIASES = {"shared": GLOBAL_ROWS_STAY}  # catalogs written before "stay" was named so


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
class Partition:
    """One partition of a partitioned table: its name and bound (`FOR VALUES ...`, as the server prints it)."""

    name: str
    bound: str


def describe_path(path: tuple[Hop, ...]) -> str:
    """`rental.inventory_id -> inventory` style, for humans and the membership summary."""
    return ", ".join(f"{h.table}.{'+'.join(h.columns)} -> {h.ref_table}" for h in path)


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
    tenant_column: str  # "" for implied and reference tables: they have none
    tenant_column_nullable: bool = True
    role: str = TENANT
    path: tuple[Hop, ...] = ()  # role "implied": the foreign-key path to a tenant table
    alternative_paths: tuple[tuple[Hop, ...], ...] = ()  # role "implied": the other FK paths to tenant tables
    global_rows: str = GLOBAL_ROWS_STAY
    global_rows_reason: str | None = None  # why (the operator's words, for review)
    partition_key: str | None = None  # pg_get_partkeydef() of a partitioned table
    partitions: tuple[Partition, ...] = ()
    comment: str | None = None
    row_security: bool = False  # ENABLE ROW LEVEL SECURITY
    force_row_security: bool = False

    @property
    def qualified(self) -> tuple[str, str]:
        return (self.schema, self.name)

    @property
    def partitioned(self) -> bool:
        return self.partition_key is not None

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
    global_tenant_ids: tuple[int, ...] = DEFAULT_GLOBAL_SHOP_IDS  # tenant-column values marking global rows

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

    def of_role(self, *roles: str) -> tuple[Table, ...]:
        return tuple(t for t in self.tables if t.role in roles)

    @property
    def tenant_tables(self) -> tuple[Table, ...]:
        return self.of_role(TENANT)

    @property
    def owned_tables(self) -> tuple[Table, ...]:
        """Tables whose rows belong to one shop each (tenant and implied): what retirement archives and deletes."""
        return self.of_role(TENANT, IMPLIED)

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
            if t.role == TENANT:
                why = f" — {t.global_rows_reason}" if t.global_rows_reason else ""
                out[t.name] = f"tenant (global rows: {t.global_rows}{why})"
            elif t.role == IMPLIED:
                out[t.name] = f"implied via {describe_path(t.path)}"
            else:
                out[t.name] = "reference (copied whole into every tenant)"
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
        data["tables"] = [
            {**t, "global_rows": _GLOBAL_ROWS_ALIASES.get(t.get("global_rows"), t.get("global_rows"))}
            if isinstance(t, dict) and "global_rows" in t else t
            for t in data.get("tables", [])
        ]
        for s in data.get("shared_tables", []):
            if isinstance(s, dict):
                s.pop("global_rows", None)  # written by format 2's first version, always "shared"
        catalog = _value(cls, data, "catalog")
        catalog.check_membership()
        return catalog

    def check_membership(self) -> None:
        """Every table's role, path and policy make sense together; else one line naming the table and the fix."""
        roles = {t.name: t.role for t in self.tables}
        for t in self.tables:
            if t.role not in ROLES or t.global_rows not in GLOBAL_ROWS:
                raise CatalogError(
                    f"table {t.name}: role {t.role!r} / global_rows {t.global_rows!r} unknown "
                    f"(roles: {', '.join(ROLES)}; global_rows: {', '.join(GLOBAL_ROWS)})."
                )
            if t.role == TENANT and not t.tenant_column:
                raise CatalogError(f"tenant table {t.name} names no tenant column; make it implied or reference.")
            if t.role != TENANT and (t.tenant_column or t.global_rows != GLOBAL_ROWS_STAY):
                raise CatalogError(
                    f"{t.role} table {t.name} has no tenant column: its tenant_column must be \"\" and its "
                    "global_rows \"stay\" (global rows are a tenant table's policy)."
                )
            if t.role == IMPLIED:
                if not t.path:
                    raise CatalogError(f"implied table {t.name} has no path; give it the foreign-key path to a tenant table.")
                for i, hop in enumerate(t.path):
                    if hop.table != (t.name if i == 0 else t.path[i - 1].ref_table):
                        raise CatalogError(f"implied table {t.name}: hop {i + 1} of its path does not start where "
                                           "the previous one ends; each hop goes from a table to the one it references.")
                    if roles.get(hop.ref_table) not in (TENANT, IMPLIED):
                        raise CatalogError(f"implied table {t.name}: its path goes through {hop.ref_table}, which is "
                                           "not a tenant or implied table of the catalog.")
                if roles[t.path[-1].ref_table] != TENANT:
                    raise CatalogError(f"implied table {t.name}: its path ends at {t.path[-1].ref_table}, not at a "
                                       "tenant table (the table carrying the tenant column).")

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


def membership_diff(old: Catalog, new: Catalog) -> list[str]:
    """What changed in membership from `old` to `new`, one line per table: a table joining or leaving the
    tenants, a role, a path or a global-rows policy changing. Empty when membership is the same."""
    before, after = old.membership, new.membership
    lines = []
    for name in sorted(set(before) | set(after)):
        a, b = before.get(name), after.get(name)
        if a == b:
            continue
        if a is None:
            lines.append(f"+ {name}: {b}")
        elif b is None:
            lines.append(f"- {name}: {a}")
        else:
            lines.append(f"~ {name}: {a} -> {b}")
    if old.global_tenant_ids != new.global_tenant_ids:
        lines.append(f"~ global tenant ids: {list(old.global_tenant_ids)} -> {list(new.global_tenant_ids)}")
    return lines


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
    "Partition",
    "SchemaObject",
    "SequenceInfo",
    "SequenceOptions",
    "SharedTable",
    "Table",
    "TenantsTable",
    "UserType",
    "UsersTable",
    "describe_path",
    "introspect",
    "load_catalog",
    "membership_diff",
]
