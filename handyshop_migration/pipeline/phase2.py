"""Phase 2, bulk copy: every tenant table of a shop is an asset (partitioned by shop) with blocking
`row_count_parity` and `checksum_parity` checks, all materialized by one step: one `multi_asset` per
catalog (`can_subset=True`) whose body is one library call, `Workflow.copy` — one snapshot of the shared
database, capture enabled before it, every table copied and verified. Correctness no longer depends on an
executor or a resource holding a snapshot across steps, and a shop costs one step instead of one per table
and per check. A failing check fails the step, so the shop as a unit: `shop_verified` then does not run,
which is what it means.

Selecting only the checks (the `verify_shop` job) re-checks the tenant against the source as copied,
copying nothing.
"""

import hashlib
import re
from collections.abc import Iterator

import dagster as dg

from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.phase1 import TENANT_DATABASE
from handyshop_migration.pipeline.resources import MigrationResource
from handyshop_migration.tenancy.engine.catalog import Catalog, Table
from handyshop_migration.tenancy.engine.verification import TableVerification
from handyshop_migration.tenancy.errors import HandyshopError
from handyshop_migration.tenancy.lifecycle import State

GROUP = "phase2_copy"
SOURCE_POOL = "handyshop_source"  # caps concurrent copies against the shared database (dagster.yaml)
PARITY_CHECKS = ("row_count_parity", "checksum_parity")
SHOP_VERIFIED = dg.AssetKey("shop_verified")
TENANT_TABLES_STEP = "tenant_tables"


def dagster_name(table: str) -> str:
    """A Dagster-safe name for a table (asset keys and op names allow only [A-Za-z0-9_])."""
    safe = re.sub(r"\W", "_", table, flags=re.ASCII)
    return safe if safe == table else f"{safe}_{hashlib.sha1(table.encode()).hexdigest()[:6]}"


def table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["tenant", dagster_name(table)])


def _spec(table: Table) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=table_key(table.name),
        group_name=GROUP,
        kinds={"postgres"},
        skippable=True,
        deps=[TENANT_DATABASE, *(table_key(p) for p in table.parents)],
        description=f"The shop's rows of `{table.name}` in its tenant database: streamed with COPY from one snapshot "
        f"of the shared database, without the `{table.tenant_column}` column.",
        metadata={
            "table": table.name,
            "columns": dg.MetadataValue.json(list(table.copy_columns)),
            "primary_key": ", ".join(table.key_columns) or "(none)",
            "copy_format": "binary" if table.binary_copy_safe else "text",
        },
    )


def _check_specs(table: Table) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            name,
            asset=table_key(table.name),
            blocking=True,
            partitions_def=shops_partitions,
            description=f"{'Row count' if name == 'row_count_parity' else 'Content checksum'} of the tenant's "
            f"`{table.name}` equals the source slice as copied.",
        )
        for name in PARITY_CHECKS
    ]


def _check_results(key: dg.AssetKey, v: TableVerification) -> Iterator[dg.AssetCheckResult]:
    yield dg.AssetCheckResult(
        check_name="row_count_parity",
        asset_key=key,
        passed=v.row_count_ok,
        metadata={"source_rows": v.source.rows, "tenant_rows": v.tenant.rows},
    )
    yield dg.AssetCheckResult(
        check_name="checksum_parity",
        asset_key=key,
        passed=v.checksum_ok,
        metadata={"source_checksum": v.source.checksum, "tenant_checksum": v.tenant.checksum, "rows": v.tenant.rows},
    )


def build_phase2(catalog: Catalog) -> list[dg.AssetsDefinition]:
    by_key = {table_key(t.name): t for t in catalog.tables}

    @dg.multi_asset(
        name=TENANT_TABLES_STEP,
        specs=[_spec(t) for t in catalog.tables],
        check_specs=[c for t in catalog.tables for c in _check_specs(t)],
        can_subset=True,
        partitions_def=shops_partitions,
        pool=SOURCE_POOL,
        description="Copy the shop's tables from one snapshot of the shared database into its tenant and verify each "
        "(count and checksum); only checks selected: verify the tenant again without copying.",
    )
    def tenant_tables(context: dg.AssetExecutionContext, migration: MigrationResource) -> Iterator[object]:
        shop = shop_id(context)
        workflow = migration.workflow(catalog)
        selected = [by_key[k] for k in context.selected_asset_keys if k in by_key]
        try:
            if not selected:  # checks only: verify what was copied, copy nothing
                report = workflow.verify(shop)
                for v in report.tables:
                    key = table_key(v.table)
                    for result in _check_results(key, v):
                        if dg.AssetCheckKey(key, result.check_name) in context.selected_asset_check_keys:
                            yield result
                return
            names = None if len(selected) == len(catalog.tables) else [t.name for t in selected]
            copied = workflow.copy(shop, tables=names)
        except HandyshopError as exc:
            raise dg.Failure(description=f"shop {shop}: {exc}") from None
        for result in copied.tables:
            c, v = result.copy, result.verification
            key = table_key(c.table)
            yield dg.MaterializeResult(
                asset_key=key,
                metadata={
                    "rows": c.rows,
                    "bytes": c.bytes,
                    "seconds": round(c.seconds, 4),
                    "rows_per_second": round(c.rows_per_second),
                    "format": c.format,
                    "snapshot": c.snapshot,
                    "source_rows": v.source.rows,
                    "source_checksum": v.source.checksum,
                    "foreign_keys_pending": dg.MetadataValue.json(list(c.foreign_keys_pending)),
                },
            )
            yield from _check_results(key, v)

    @dg.asset(
        key=SHOP_VERIFIED,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        deps=[table_key(t.name) for t in catalog.tables],
        description="The shop's lifecycle says verified: every table passed its parity checks for its latest copy and "
        "every foreign key is in place. The signal later phases wait for.",
    )
    def shop_verified(context: dg.AssetExecutionContext, migration: MigrationResource) -> dg.MaterializeResult:
        shop = shop_id(context)
        record = migration.workflow(catalog).lifecycle.get(shop)
        if record.state not in (State.VERIFIED, State.SYNCING, State.READS_ROLLOUT):
            raise dg.Failure(
                description=f"shop {shop} is not verified (it is {record.state.value})"
                + (f": {record.last_error}" if record.last_error else ""),
                metadata={"state": record.state.value, "last_error": record.last_error or ""},
            )
        return dg.MaterializeResult(metadata={"state": record.state.value, "tables": len(catalog.tables)})

    return [tenant_tables, shop_verified]
