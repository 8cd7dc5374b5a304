"""Phase 5: take a cut-over shop's rows out of the shared database — archived first, restorable, exact.

The real app's retirement TRUNCATEd every tenant table: every shop's rows and the global ones (shop 0,
1682, NULL). Here:
- `archive_shop` writes the shop's rows of every tenant table (all columns, the tenant column included) to
  files in one snapshot, with a manifest of per-table row counts, content checksums and file SHA-256s;
- `retire_shop` deletes exactly `WHERE <tenant column> = N`, children first, in one transaction, after
  checking that the rows still equal the archive and that no row of another shop (or of a table outside
  the migration) references them — a cascade must never reach another shop; every count must match the
  archive, or nothing is deleted;
- `restore_shop`, the way back, loads the archive into the shared database in one transaction and checks
  that every table's checksum equals the manifest: the rows come back byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from handyshop_migration.tenancy.db import replaying
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import Catalog, Table
from handyshop_migration.tenancy.engine.copy import SourceSnapshot, copy_out
from handyshop_migration.tenancy.engine.verification import table_checksum
from handyshop_migration.tenancy.errors import CopyError, RetirementRefused

MANIFEST = "manifest.json"



@dataclass(frozen=True)
class TableArchive:
    table: str
    file: str
    format: str
    columns: tuple[str, ...]
    rows: int
    checksum: str
    sha256: str


@dataclass(frozen=True)
class Archive:
    shop_id: int
    path: Path
    created_at: str
    catalog_checksum: str
    snapshot: str
    tables: tuple[TableArchive, ...]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @classmethod
    def load(cls, path: str | Path) -> Archive:
        path = Path(path)
        try:
            data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RetirementRefused(f"{path} holds no {MANIFEST}: not an archive written by archive_shop.") from None
        return cls(
            shop_id=data["shop_id"],
            path=path,
            created_at=data["created_at"],
            catalog_checksum=data["catalog_checksum"],
            snapshot=data["snapshot"],
            tables=tuple(TableArchive(**{**t, "columns": tuple(t["columns"])}) for t in data["tables"]),
        )


@dataclass(frozen=True)
class RetireResult:
    shop_id: int
    deleted: dict[str, int]
    seconds: float


def _columns(table: Table) -> tuple[str, ...]:
    return (table.tenant_column, *table.copy_columns)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def archive_shop(source: ConnectionSpec, catalog: Catalog, shop_id: int, directory: str | Path) -> Archive:
    """Write the shop's rows of every tenant table to `directory/shop_<id>/<UTC time>/`."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = Path(directory).absolute() / f"shop_{shop_id}" / stamp
    path.mkdir(parents=True, exist_ok=False)
    os.chmod(path, 0o700)  # the rows hold customers' personal data
    tables = []
    with SourceSnapshot(source) as snap:
        for t in catalog.tables:
            fmt = "binary" if t.binary_copy_safe else "text"
            cols = _columns(t)
            file = path / f"{len(tables):02d}_{t.name}.copy"
            query = sql.SQL("COPY (SELECT {} FROM ONLY {} WHERE {} = %s) TO STDOUT (FORMAT {})").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.Identifier(t.schema, t.name),
                sql.Identifier(t.tenant_column),
                sql.SQL(fmt),
            )
            with file.open("wb") as out:
                for data in copy_out(snap.conn, query, (shop_id,)):
                    out.write(data)
                out.flush()
                os.fsync(out.fileno())
            check = table_checksum(snap.conn, t, shop_id, cols)
            tables.append(TableArchive(t.name, file.name, fmt, cols, check.rows, check.checksum, _sha256(file)))
        token = snap.token
    archive = Archive(shop_id, path, stamp, catalog.checksum, token, tuple(tables))
    manifest = {**asdict(archive), "path": str(path), "tables": [asdict(t) for t in tables]}
    (path / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return archive


def _references_from_elsewhere(conn: psycopg.Connection, catalog: Catalog, shop_id: int) -> list[str]:
    """Rows outside the shop (another shop's, or in a table outside the migration) that reference the
    shop's rows: deleting would break them or cascade into them."""
    problems = []
    tenant_tables = {(t.schema, t.name): t for t in catalog.tables}
    fks = conn.execute(
        "SELECT c.conname, cn.nspname, cr.relname, pn.nspname, pr.relname, "
        "ARRAY(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a "
        "      ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o), "
        "ARRAY(SELECT a.attname FROM unnest(c.confkey) WITH ORDINALITY k(n, o) JOIN pg_attribute a "
        "      ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.o) "
        "FROM pg_constraint c JOIN pg_class cr ON cr.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cr.relnamespace "
        "JOIN pg_class pr ON pr.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pr.relnamespace "
        "WHERE c.contype = 'f'"
    ).fetchall()
    for name, child_schema, child, parent_schema, parent, cols, pcols in fks:
        parent_table = tenant_tables.get((parent_schema, parent))
        if parent_table is None:
            continue
        child_table = tenant_tables.get((child_schema, child))
        outside = (
            sql.SQL("c.{} IS DISTINCT FROM %s").format(sql.Identifier(child_table.tenant_column))
            if child_table is not None
            else sql.SQL("true")
        )
        query = sql.SQL(
            "SELECT count(*), (array_agg(ROW({pk})::text))[1:10] FROM ONLY {c} c JOIN ONLY {p} p ON {on} "
            "WHERE p.{ptc} = %s AND {outside}"
        ).format(
            pk=sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(col)) for col in cols),
            c=sql.Identifier(child_schema, child),
            p=sql.Identifier(parent_schema, parent),
            on=sql.SQL(" AND ").join(
                sql.SQL("c.{} = p.{}").format(sql.Identifier(a), sql.Identifier(b)) for a, b in zip(cols, pcols, strict=True)
            ),
            ptc=sql.Identifier(parent_table.tenant_column),
            outside=outside,
        )
        count, sample = conn.execute(query, (shop_id, shop_id) if child_table is not None else (shop_id,)).fetchone()  # type: ignore[misc]
        if count:
            problems.append(f"{count} {child} rows ({name}: {', '.join(sample or [])}) reference shop {shop_id}'s {parent}")
    return problems


def retire_shop(
    source: ConnectionSpec, catalog: Catalog, archive: Archive, *, confirm: bool, state: str
) -> RetireResult:
    """Delete exactly the archived rows of the shop from the shared database, in one transaction.

    `state` is the shop's routing state: only a shop that is live on its tenant may be retired."""
    shop = archive.shop_id
    if not confirm:
        raise RetirementRefused(
            f"retiring shop {shop} deletes its {archive.rows} rows from the shared database: it needs an explicit "
            "confirmation."
        )
    if state != "live":
        raise RetirementRefused(
            f"shop {shop} is in routing state {state!r}: only a shop whose reads and writes go to its tenant "
            "('live', after the cutover) can be retired."
        )
    if archive.catalog_checksum != catalog.checksum:
        raise RetirementRefused(f"the archive of shop {shop} was written for another catalog; archive the shop again.")
    started = time.perf_counter()
    deleted: dict[str, int] = {}
    with source.connect() as conn, replaying(conn):
        by_name = {a.table: a for a in archive.tables}
        for t in catalog.tables:
            # the rows must still be exactly what was archived (the fence keeps the app away; this proves it)
            conn.execute(sql.SQL("LOCK TABLE ONLY {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(t.schema, t.name)))
            now = table_checksum(conn, t, shop, by_name[t.name].columns)
            if (now.rows, now.checksum) != (by_name[t.name].rows, by_name[t.name].checksum):
                raise RetirementRefused(
                    f"shop {shop}'s {t.name} changed since it was archived ({by_name[t.name].rows} rows archived, "
                    f"{now.rows} now): archive it again; nothing was deleted."
                )
        refs = _references_from_elsewhere(conn, catalog, shop)
        if refs:
            raise RetirementRefused(
                "nothing was deleted: " + "; ".join(refs) + ". Re-point or move those rows first."
            )
        for t in reversed(catalog.tables):
            count = conn.execute(
                sql.SQL("DELETE FROM ONLY {} WHERE {} = %s").format(
                    sql.Identifier(t.schema, t.name), sql.Identifier(t.tenant_column)
                ),
                (shop,),
            ).rowcount
            if count != by_name[t.name].rows:
                raise RetirementRefused(
                    f"deleting shop {shop}'s {t.name} removed {count} rows, the archive holds {by_name[t.name].rows}; "
                    "nothing was deleted."
                )
            deleted[t.name] = count
    return RetireResult(shop, deleted, time.perf_counter() - started)


def restore_shop(source: ConnectionSpec, catalog: Catalog, archive: Archive) -> dict[str, int]:
    """The way back from phase 5: load the archive into the shared database, checked byte for byte."""
    shop = archive.shop_id
    for a in archive.tables:
        if _sha256(archive.path / a.file) != a.sha256:
            raise RetirementRefused(f"archive file {a.file} of shop {shop} does not match its manifest: it was changed.")
    restored: dict[str, int] = {}
    with source.connect() as conn, replaying(conn):
        by_name = {a.table: a for a in archive.tables}
        for t in catalog.tables:
            a = by_name[t.name]
            ident = sql.Identifier(t.schema, t.name)
            present = conn.execute(
                sql.SQL("SELECT count(*) FROM ONLY {} WHERE {} = %s").format(ident, sql.Identifier(t.tenant_column)),
                (shop,),
            ).fetchone()
            if present and present[0]:
                raise RetirementRefused(
                    f"the shared database already holds {present[0]} {t.name} rows of shop {shop}: restoring would "
                    "duplicate them; nothing was restored."
                )
            target = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT {})").format(
                ident, sql.SQL(", ").join(map(sql.Identifier, a.columns)), sql.SQL(a.format)
            )
            with (archive.path / a.file).open("rb") as f, conn.cursor().copy(target) as copy:
                for block in iter(lambda: f.read(1 << 18), b""):
                    copy.write(block)
            check = table_checksum(conn, t, shop, a.columns)
            if (check.rows, check.checksum) != (a.rows, a.checksum):
                raise CopyError(
                    f"restoring shop {shop}'s {t.name} gave {check} instead of the archived {a.rows} rows, checksum "
                    f"{a.checksum}; nothing was restored."
                )
            restored[t.name] = check.rows
    return restored
