"""Phase 4's engine: the pieces a cutover and its way back are made of (the order is the workflow's,
`tenancy.workflow.Workflow.cut_over` and `roll_back_cutover`):

- `reserve_ids`: a block of ids in every shared sequence of the tenant tables for the tenant, so rows it
  creates while live can be copied back later without colliding with rows the shared database hands out to
  other shops meanwhile;
- `verify_both_sides`: every table, shared slice vs tenant, count and checksum — the gate of both directions;
- `CutoverReport`: what a cutover or rollback did, step by step, and how long writes waited.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog, Table
from handyshop_migration.tenancy.engine.copy import SourceSnapshot
from handyshop_migration.tenancy.engine.verification import TableVerification, verify_tables
from handyshop_migration.tenancy.errors import CutoverRefused

DEFAULT_ID_BLOCK = 1_000_000



@dataclass
class CutoverReport:
    shop_id: int
    steps: list[tuple[float, str]] = field(default_factory=list)
    changes_drained: int = 0
    fenced_seconds: float = 0.0
    verification: list[TableVerification] = field(default_factory=list)
    reservations: dict[str, tuple[int, int]] = field(default_factory=dict)
    state: str = ""

    def step(self, text: str) -> None:
        self.steps.append((time.time(), text))


def _sequences(conn: psycopg.Connection, table: Table) -> list[tuple[str, str]]:
    """(column, sequence regclass text) of every sequence-backed column of a table in this database."""
    qualified = sql.Identifier(table.schema, table.name).as_string(None)
    out = []
    columns = [(s.column, None if s.owned else sql.Identifier(s.schema, s.name).as_string(None)) for s in table.sequences]
    columns += [(c.name, None) for c in table.tenant_columns if c.identity is not None]
    for column, explicit in columns:
        if explicit:
            out.append((column, explicit))
            continue
        row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (qualified, column)).fetchone()
        if row and row[0]:
            out.append((column, str(row[0])))
    return out


def reserve_ids(
    source: psycopg.Connection, tenant: psycopg.Connection, catalog: Catalog, shop_id: int, block: int
) -> dict[str, tuple[int, int]]:
    """Take `block` ids from each shared sequence for the shop's tenant (see the module doc)."""
    reserved: dict[str, tuple[int, int]] = {}
    for table in catalog.tables:
        tenant_seqs = dict(_sequences(tenant, table))
        for column, seq in _sequences(source, table):
            if column not in tenant_seqs:
                continue
            with source.transaction():
                info = one_row(source,
                    "SELECT n.nspname, c.relname, s.seqincrement, s.seqmax FROM pg_sequence s "
                    "JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE s.seqrelid = %s::regclass",
                    (seq,),
                )
                ident = sql.Identifier(info[0], info[1])
                increment, maximum = int(info[2]), int(info[3])
                if increment != 1:
                    continue  # unusual sequences keep their own scheme; the copy-back guard still protects
                # A first nextval() makes the sequence "called" (on a fresh one nextval ignores the increment);
                # ALTER SEQUENCE then holds its lock to commit: concurrent nextval() waits and lands past the block.
                source.execute("SELECT nextval(%s::regclass)", (seq,))
                source.execute(sql.SQL("ALTER SEQUENCE {} INCREMENT BY {}").format(ident, sql.Literal(block)))
                last = int(source.execute("SELECT nextval(%s::regclass)", (seq,)).fetchone()[0])  # type: ignore[index]
                source.execute(sql.SQL("ALTER SEQUENCE {} INCREMENT BY 1").format(ident))
                if last > maximum:
                    raise CutoverRefused(f"sequence {seq} has no room for a block of {block} ids; use a smaller block.")
                first = last - block + 1
                source.execute(
                    "INSERT INTO handyshop_migration.id_reservations (shop_id, sequence, first_id, last_id) "
                    "VALUES (%s, %s, %s, %s)",
                    (shop_id, seq, first, last),
                )
            with tenant.transaction():
                tenant.execute(
                    sql.SQL("SELECT setval(%s::regclass, greatest(%s, (SELECT coalesce(max({}), 0) FROM {})))").format(
                        sql.Identifier(column), sql.Identifier(table.schema, table.name)
                    ),
                    (tenant_seqs[column], first - 1),
                )
            reserved[f"{table.name}.{column}"] = (first, last)
    return reserved


def verify_both_sides(
    report: CutoverReport, source: ConnectionSpec, tenant: ConnectionSpec, catalog: Catalog, shop_id: int, refusal: str
) -> None:
    """The gate of both directions: every table equal on both sides, or CutoverRefused (`refusal` says
    where the writes stay)."""
    with SourceSnapshot(source) as snap, tenant.connect() as tconn:
        report.verification = verify_tables(snap.conn, tconn, catalog, shop_id)
    bad = [v.describe() for v in report.verification if not v.ok]
    if bad:
        raise CutoverRefused(f"shop {shop_id}: verification failed for {', '.join(bad)}; {refusal}")
    report.step(f"verified {len(report.verification)} tables: counts and checksums equal")
