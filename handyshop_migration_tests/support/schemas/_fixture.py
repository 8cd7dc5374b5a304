"""What a shared multi-tenant test database holds, stated so that a test can assert it.

Each fixture module (`store`, `saas`, `billing`) exposes `create(conn, tenants=3)` and `INFO`, a `Fixture`.
Every claim of an `INFO` is checked against the catalog of a loaded fixture by `check_fixtures.py`
(PostgreSQL 16 and 18); the row-level claims (`ambiguous_rows`, `orphan_rows`, `global_rows`) hold for the
default `tenants=3` and for any `tenants >= 2`.

Names are unqualified: every object lives in the schema `public`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent

# One foreign-key step: (child table, its FK column(s), parent table). A path is a tuple of hops that starts at
# a table without the tenant column and ends at a tenant table (one that carries the tenant column).
Hop = tuple[str, tuple[str, ...], str]
FkPath = tuple[Hop, ...]


@dataclass(frozen=True)
class FunctionCall:
    """A call an application makes, the type of its first result column (`format_type` spelling) and the
    first value it returns (None: not checked). `tenant` is the tenant whose rows that value comes from (the
    call gives the same value in that tenant's own database); None when it reads no tenant's rows."""

    sql: str
    result_type: str
    expected: Any = None
    returns_set: bool = False
    tenant: int | None = None


@dataclass(frozen=True)
class AppAction:
    """A representative application write or read. The statements run in order, in one transaction that
    the caller may roll back; `expect` is the first row of the last statement (None: only that it runs).
    `tenant` is the tenant the action belongs to, so that it can run against that tenant's own database.
    The expectations hold on a freshly loaded database; a rolled-back insert still consumes sequence values."""

    name: str
    statements: tuple[str, ...]
    tenant: int | None
    expect: tuple[Any, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class Fixture:
    name: str
    modelled_on: str

    # -- tenancy ---------------------------------------------------------------------------------------
    tenants_table: str
    tenants_key: str
    tenants_name: str | None
    tenant_column: str
    # The tenant tables whose tenant column alone is a declared FK to tenants_table(tenants_key); the others
    # reach it through a composite FK, or not at all.
    tenant_fk_tables: tuple[str, ...]
    # FKs between tenant tables that include the tenant column on both sides (so no row can point into another
    # tenant): table -> hops. An FK between tenant tables without the tenant column can cross tenants.
    composite_tenant_fks: Mapping[str, tuple[Hop, ...]] = field(default_factory=dict)
    # Tables carrying the tenant column whose rows belong to tenants.
    tenant_tables: tuple[str, ...]
    # Tables without the tenant column that reach a tenant table by FK: the path the application means
    # (the owner of a row is the tenant of the row at the path's end) ...
    implied_tables: Mapping[str, FkPath] = field(default_factory=dict)
    # ... and the other FK paths from the same table to a tenant table (rows are ambiguous when their paths
    # disagree, orphans when no path reaches a tenant).
    other_paths: Mapping[str, tuple[FkPath, ...]] = field(default_factory=dict)
    # The column the ids of ambiguous_rows / orphan_rows are values of, per implied table.
    id_columns: Mapping[str, str] = field(default_factory=dict)
    ambiguous_rows: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    orphan_rows: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    # Tables with neither the tenant column nor a path, that tenant tables reference by FK (directly or
    # through each other) or that the application joins; every tenant database needs them.
    reference_tables: tuple[str, ...] = ()
    # Reference tables no FK connects to the rest: the application only joins them (named in views/queries).
    joined_reference_tables: tuple[str, ...] = ()
    # Tables that stay in the shared database only.
    shared_only: tuple[str, ...] = ()
    # Tenant-column values that mark global rows every tenant needs, and where those rows are
    # (table -> ids in `global_id_column`).
    global_ids: tuple[int, ...] = ()
    global_id_column: str | None = None
    global_rows: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    # -- objects ---------------------------------------------------------------------------------------
    functions: Mapping[str, FunctionCall] = field(default_factory=dict)
    # Functions that are not called by the application directly (trigger functions, aggregate support).
    internal_functions: tuple[str, ...] = ()
    aggregates: tuple[str, ...] = ()
    triggers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # table -> trigger names
    views: tuple[str, ...] = ()
    materialized_views: tuple[str, ...] = ()
    # view -> the shared_only tables it reads (it cannot work in a tenant database as it is).
    views_reading_shared_only: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # view -> the tenant id its WHERE clause names.
    tenant_specific_views: Mapping[str, int] = field(default_factory=dict)
    event_triggers: Mapping[str, str] = field(default_factory=dict)  # name -> event
    domains: Mapping[str, str] = field(default_factory=dict)  # name -> base type (format_type spelling)
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # name -> labels, in order
    # sequence -> "table.column" whose default draws from it; nobody inserted, so is_called = false.
    never_used_sequences: Mapping[str, str] = field(default_factory=dict)
    # Sequences no column owns (ALTER SEQUENCE ... OWNED BY was never run); used only through a default.
    unowned_sequences: tuple[str, ...] = ()
    tenant_specific_indexes: Mapping[str, int] = field(default_factory=dict)  # index -> tenant id
    partitioned: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # parent -> partitions
    policies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # table -> RLS policy names
    generated_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # table -> STORED columns
    identity_columns: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # table -> columns
    # FK cycles, each a closed tuple of hops; `deferrable_fks` names the constraints that make them loadable.
    fk_cycles: tuple[tuple[Hop, ...], ...] = ()
    deferrable_fks: tuple[str, ...] = ()
    # "table" or "table.column" -> comment text.
    comments: Mapping[str, str] = field(default_factory=dict)
    app_actions: tuple[AppAction, ...] = ()
    # "table.column"s whose values differ between two loads (now() at load time); every other value is the
    # same on every load with the same tenant count.
    nondeterministic_columns: tuple[str, ...] = ()
    # What a migration should name in its report rather than (or as well as) carry silently:
    # object name (or "table id" for a planted row) -> why.
    report: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Read-only mappings: INFO is shared by every test of a session.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                object.__setattr__(self, f.name, MappingProxyType(value))

    def tenant_ids(self, tenants: int = 3) -> tuple[int, ...]:
        """The tenants `create(conn, tenants)` makes: ids 1..tenants in every fixture."""
        return tuple(range(1, tenants + 1))

    def paths(self, table: str) -> tuple[FkPath, ...]:
        """Every FK path of an implied table, the application's first."""
        return (self.implied_tables[table], *self.other_paths.get(table, ()))

    @property
    def all_tables(self) -> tuple[str, ...]:
        """Every ordinary or partitioned table (not the partitions), each in exactly one class."""
        return (*self.tenant_tables, *self.implied_tables, *self.reference_tables, *self.shared_only)


def load(conn: psycopg.Connection, name: str, tenants: int) -> None:
    """Run `<name>_schema.sql` then `<name>_data.sql` (which reads the tenant count from the setting
    `fixture.tenants`) and commit."""
    if tenants < 2:
        raise ValueError(f"the {name} fixture needs at least 2 tenants (it plants cross-tenant rows)")
    conn.execute("SELECT set_config('fixture.tenants', %s, false)", (str(tenants),))
    conn.execute((HERE / f"{name}_schema.sql").read_text(encoding="utf-8"))
    conn.execute((HERE / f"{name}_data.sql").read_text(encoding="utf-8"))
    conn.commit()
