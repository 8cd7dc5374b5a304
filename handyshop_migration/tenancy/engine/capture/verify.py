"""Incremental verification for the fence window: compare only the rows whose keys changed since the
last full verification, count and checksum of just those keys on both sides.

Why it is enough: the copy's verification proved the tenant equal to the source slice as of the copy's
snapshot; capture started before that snapshot, so every row that changed since has a logged key; the
sync records every key it applies (`handyshop_capture.touched`, in the transaction that consumes the
log entries); and nothing else writes the tenant (its write guard refuses everyone but the migration's
replays until it is live). A row whose key was never touched is therefore still equal on both sides;
the touched keys are what can differ. Inside the fence, after the drain, comparing those is the cutover's
gate. Tables without a key record '{}' and are compared whole.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.engine.capture.apply import key_text
from handyshop_migration.tenancy.engine.catalog import Catalog, Table
from handyshop_migration.tenancy.engine.verification import (
    TableChecksum,
    TableVerification,
    row_hash,
    table_checksum,
)


def _keys_checksum(conn: psycopg.Connection, table: Table, keys: list[dict[str, Any]], shop_id: int | None) -> TableChecksum:
    on = sql.SQL(" AND ").join(
        sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in table.key_columns
    )
    query = sql.SQL(
        "SELECT count(*), coalesce(sum({h}), 0)::text FROM ONLY {t} t "
        "JOIN (SELECT DISTINCT {kc} FROM jsonb_populate_recordset(NULL::{t}, %s::jsonb)) k ON {on}"
    ).format(
        h=row_hash(table, alias="t"),
        t=sql.Identifier(table.schema, table.name),
        kc=sql.SQL(", ").join(map(sql.Identifier, table.key_columns)),
        on=on,
    )
    params: tuple[object, ...] = (json.dumps(keys, ensure_ascii=False),)
    if shop_id is not None:
        query = sql.SQL("{} WHERE t.{} = %s").format(query, sql.Identifier(table.tenant_column))
        params += (shop_id,)
    row = one_row(conn, query, params)
    return TableChecksum(int(row[0]), str(row[1]))


def verify_keys(
    source: psycopg.Connection,
    tenant: psycopg.Connection,
    catalog: Catalog,
    shop_id: int,
    keys: Mapping[str, Iterable[dict[str, Any]]],
) -> list[TableVerification]:
    """For each table named in `keys`: count and checksum of the rows with those keys in the shop's slice
    of `source` and in `tenant` (a key present on one side only shows as a count difference). A table
    without a key is compared whole. `source` may be a snapshot connection."""
    results = []
    for name in catalog.table_names:
        if name not in keys:
            continue
        table = catalog.table(name)
        wanted = list({key_text(k, table): k for k in keys[name]}.values())
        if not table.key_columns:
            src, dst = table_checksum(source, table, shop_id), table_checksum(tenant, table)
        else:
            src, dst = _keys_checksum(source, table, wanted, shop_id), _keys_checksum(tenant, table, wanted, None)
        results.append(TableVerification(name, shop_id, src, dst))
    return results


def touched_keys(source: psycopg.Connection, shop_id: int) -> dict[str, list[dict[str, Any]]]:
    """The keys the sync applied to the shop's tenant since they were last forgotten (`forget_touched`)."""
    rows = source.execute(
        "SELECT table_name, key FROM handyshop_capture.touched WHERE shop_id = %s ORDER BY table_name", (shop_id,)
    ).fetchall()
    source.rollback()
    out: dict[str, list[dict[str, Any]]] = {}
    for name, key in rows:
        out.setdefault(str(name), []).append(key)
    return out


def verify_touched(
    source: psycopg.Connection, tenant: psycopg.Connection, catalog: Catalog, shop_id: int
) -> list[TableVerification]:
    """`verify_keys` over every key touched since the last full verification (see the module doc)."""
    return verify_keys(source, tenant, catalog, shop_id, touched_keys(source, shop_id))


def forget_touched(source: psycopg.Connection, shop_id: int) -> int:
    """After a full verification that passed with the tenant in step (inside a fence, or right after a
    copy): start counting touched keys afresh. Returns how many were forgotten."""
    with source.transaction():
        return source.execute("DELETE FROM handyshop_capture.touched WHERE shop_id = %s", (shop_id,)).rowcount


def _all_but_checksum(conn: psycopg.Connection, table: Table, keys: list[dict[str, Any]], shop_id: int | None) -> TableChecksum:
    """Count and checksum of the slice without the rows of `keys` (an anti-join on the key)."""
    on = sql.SQL(" AND ").join(sql.SQL("t.{c} = k.{c}").format(c=sql.Identifier(c)) for c in table.key_columns)
    query = sql.SQL(
        "SELECT count(*), coalesce(sum({h}), 0)::text FROM ONLY {t} t WHERE NOT EXISTS "
        "(SELECT 1 FROM jsonb_populate_recordset(NULL::{t}, %s::jsonb) k WHERE {on})"
    ).format(h=row_hash(table, alias="t"), t=sql.Identifier(table.schema, table.name), on=on)
    params: tuple[object, ...] = (json.dumps(keys, ensure_ascii=False),)
    if shop_id is not None:
        query = sql.SQL("{} AND t.{} = %s").format(query, sql.Identifier(table.tenant_column))
        params += (shop_id,)
    row = one_row(conn, query, params)
    return TableChecksum(int(row[0]), str(row[1]))


def verify_outside_pending(
    snapshot: psycopg.Connection, tenant: psycopg.Connection, catalog: Catalog, shop_id: int
) -> tuple[list[TableVerification], int]:
    """The full verification of a shop that keeps writing (before its cutover's fence), consistent without
    stopping it: in one snapshot of the shared database (`snapshot`, a REPEATABLE READ connection), every row
    of the slice except those whose keys are still pending in the change log, against the tenant's rows
    except the same keys. Sound while no sync runs (the caller is the one applier): a key not pending then
    has every change committed before the snapshot applied, and none after it. Tables without a key that
    have pending changes are left to the fence's comparison (which compares them whole). Returns the
    results and how many pending keys were left out."""
    pending: dict[str, list[dict[str, Any]]] = {}
    for name, key in snapshot.execute(
        "SELECT table_name, key FROM handyshop_capture.changes WHERE shop_id = %s", (shop_id,)
    ).fetchall():
        pending.setdefault(str(name), []).append(key)
    results = []
    for table in catalog.tables:
        keys = pending.get(table.name, [])
        if not table.key_columns:
            if keys:
                continue
            src, dst = table_checksum(snapshot, table, shop_id), table_checksum(tenant, table)
        else:
            src, dst = _all_but_checksum(snapshot, table, keys, shop_id), _all_but_checksum(tenant, table, keys, None)
        results.append(TableVerification(table.name, shop_id, src, dst))
    tenant.rollback()
    return results, sum(len(k) for k in pending.values())
