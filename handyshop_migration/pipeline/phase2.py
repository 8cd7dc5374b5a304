"""Phase 2, bulk copy: one asset per tenant table, generated from the catalog, each gated by blocking
`row_count_parity` and `checksum_parity` checks, and a per-shop `shop_verified` that materializes only
when every gate of the shop's latest copy passed.

All tables of a shop come from one snapshot: the SourceDatabase resource holds it for the run, and the
jobs use the in-process executor so that every step of the run shares it. A table re-copied alone (a
later run, another snapshot) leaves its foreign keys to the other tables pending until the shop is copied
again as a whole; `shop_verified` refuses meanwhile.
"""


import hashlib
import re
from collections.abc import Iterator

import dagster as dg

from handyshop_migration.pipeline.gates import parity_gates
from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.phase1 import TENANT_DATABASE
from handyshop_migration.pipeline.resources import Registry, SourceDatabase, TenantServer
from handyshop_migration.tenancy.engine.catalog import Catalog, Table
from handyshop_migration.tenancy.engine.copy import (
    copy_table,
    pending_foreign_keys,
    refresh_materialized_views,
)
from handyshop_migration.tenancy.engine.tenant_schema import TenantSchema
from handyshop_migration.tenancy.engine.verification import check_copied_table, record_source_checksum
from handyshop_migration.tenancy.errors import CopyError

GROUP = "phase2_copy"
SOURCE_POOL = "handyshop_source"  # caps concurrent copies against the shared database (dagster.yaml)
PARITY_CHECKS = ("row_count_parity", "checksum_parity")
SHOP_VERIFIED = dg.AssetKey("shop_verified")


def dagster_name(table: str) -> str:
    """A Dagster-safe name for a table (asset keys and op names allow only [A-Za-z0-9_])."""
    safe = re.sub(r"\W", "_", table, flags=re.ASCII)
    return safe if safe == table else f"{safe}_{hashlib.sha1(table.encode()).hexdigest()[:6]}"


def table_key(table: str) -> dg.AssetKey:
    return dg.AssetKey(["tenant", dagster_name(table)])


def _table_asset(catalog: Catalog, schema: TenantSchema, table: Table) -> dg.AssetsDefinition:
    key = table_key(table.name)
    keys = table.key_columns

    @dg.asset(
        key=key,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        pool=SOURCE_POOL,
        deps=[TENANT_DATABASE, *(table_key(p) for p in table.parents)],
        description=f"The shop's rows of `{table.name}` in its tenant database: streamed with COPY from the shared "
        f"database's snapshot, without the `{table.tenant_column}` column.",
        metadata={
            "table": table.name,
            "columns": dg.MetadataValue.json(list(table.copy_columns)),
            "primary_key": ", ".join(keys) or "(none)",
            "copy_format": "binary" if table.binary_copy_safe else "text",
        },
    )
    def copy(context: dg.AssetExecutionContext, source: SourceDatabase, tenant_server: TenantServer) -> dg.MaterializeResult:
        shop = shop_id(context)
        snapshot = source.snapshot(shop, catalog)
        tenant = tenant_server.connect(shop)
        result = copy_table(snapshot, tenant, schema, table.name, shop)
        source_side = record_source_checksum(snapshot.conn, tenant, catalog, table.name, shop)
        return dg.MaterializeResult(
            metadata={
                "rows": result.rows,
                "bytes": result.bytes,
                "seconds": round(result.seconds, 4),
                "rows_per_second": round(result.rows_per_second),
                "format": result.format,
                "snapshot": result.snapshot,
                "source_rows": source_side.rows,
                "source_checksum": source_side.checksum,
                "foreign_keys_pending": dg.MetadataValue.json(list(result.foreign_keys_pending)),
            }
        )

    return copy


def _parity_check(catalog: Catalog, table: Table) -> dg.AssetChecksDefinition:
    key = table_key(table.name)

    @dg.multi_asset_check(
        name=f"{dagster_name(table.name)}_parity",
        specs=[
            dg.AssetCheckSpec(
                name,
                asset=key,
                blocking=True,
                partitions_def=shops_partitions,
                description=f"{'Row count' if name == 'row_count_parity' else 'Content checksum'} of the tenant's "
                f"`{table.name}` equals the source slice as copied.",
            )
            for name in PARITY_CHECKS
        ],
    )
    def parity(context: dg.AssetCheckExecutionContext, tenant_server: TenantServer) -> Iterator[dg.AssetCheckResult]:
        shop = shop_id(context)
        try:
            v = check_copied_table(tenant_server.connect(shop), catalog, table.name, shop)
        except CopyError as exc:
            for name in PARITY_CHECKS:
                yield dg.AssetCheckResult(check_name=name, asset_key=key, passed=False, metadata={"error": str(exc)})
            return
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

    return parity


def build_phase2(catalog: Catalog, schema: TenantSchema) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    assets = [_table_asset(catalog, schema, t) for t in catalog.tables]
    checks = [_parity_check(catalog, t) for t in catalog.tables]
    check_keys = [dg.AssetCheckKey(table_key(t.name), name) for t in catalog.tables for name in PARITY_CHECKS]

    @dg.asset(
        key=SHOP_VERIFIED,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        deps=[a.key for a in assets],
        description="Every table of the shop passed its parity checks for its latest copy, and every foreign key "
        "is in place: the signal later phases wait for.",
    )
    def shop_verified(
        context: dg.AssetExecutionContext, tenant_server: TenantServer, registry: Registry
    ) -> dg.MaterializeResult:
        shop = shop_id(context)
        gates = parity_gates(context.instance, check_keys, context.partition_key)
        failed = [f"{g.asset}:{g.check}" for g in gates if g.passed is False]
        missing = [f"{g.asset}:{g.check}" for g in gates if g.passed is None]
        pending = pending_foreign_keys(tenant_server.connect(shop), schema)
        if failed or missing or pending:
            raise dg.Failure(
                description=f"shop {shop} is not verified: "
                + "; ".join(
                    part
                    for part in (
                        f"failed checks {', '.join(failed)}" if failed else "",
                        f"checks not run on the latest copy {', '.join(missing)}" if missing else "",
                        f"foreign keys pending {', '.join(pending)} (tables copied from different snapshots: "
                        "materialize all of the shop's tables in one run)" if pending else "",
                    )
                    if part
                ),
                metadata={"failed": failed, "not_run": missing, "foreign_keys_pending": pending},
            )
        rows = sum(int(g.metadata.get("tenant_rows", 0)) for g in gates if g.check == "row_count_parity")
        # every table holds the shop's rows of one snapshot: fill the materialized views from them
        refreshed = refresh_materialized_views(tenant_server.connect(shop), schema, shop)
        registry.get().set_status(shop, "verified")
        return dg.MaterializeResult(
            metadata={"tables": len(catalog.tables), "rows": rows, "checks_passed": len(gates),
                      "materialized_views_refreshed": len(refreshed)}
        )

    return [*assets, shop_verified], checks
