"""Phase 3, change capture: keep a copied shop's tenant in step with the writes it keeps taking in the
shared database, until its cutover. Capture itself starts in phase 2, before the copy's snapshot."""

import dagster as dg

from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.phase2 import SHOP_VERIFIED
from handyshop_migration.pipeline.resources import SourceDatabase, TenantServer
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import Catalog

GROUP = "phase3_sync"
TENANT_SYNC = dg.AssetKey("tenant_sync")


def build_phase3(catalog: Catalog) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=TENANT_SYNC,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        deps=[SHOP_VERIFIED],
        description="Applies the shop's captured writes (inserts, updates, deletes, rows moving between shops) "
        "to its tenant, idempotently; metadata: changes applied, watermark, lag.",
    )
    def tenant_sync(context: dg.AssetExecutionContext, source: SourceDatabase, tenant_server: TenantServer) -> dg.MaterializeResult:
        shop = shop_id(context)
        route = source.routing().get(shop)
        if route.writes == "tenant":
            raise dg.Failure(
                description=f"shop {shop} is live on its tenant (state {route.state}): the shared database takes none "
                "of its writes, there is nothing to sync."
            )
        with source.connect() as conn:
            if not capture.is_captured(conn, shop):
                raise dg.Failure(
                    description=f"shop {shop}'s writes are not captured (its copy ran with HANDYSHOP_CAPTURE=off, or "
                    "phase 3 was rolled back): copy the shop again (migrate_shop) with capture on."
                )
        result = capture.apply_changes(capture.TO_TENANT, source.spec(), tenant_server.tenant_admin(shop), catalog, shop)
        return dg.MaterializeResult(
            metadata={
                "changes_applied": result.changes,
                "rows_upserted": result.upserted,
                "rows_deleted": result.deleted,
                "tables_recopied": dg.MetadataValue.json(sorted(set(result.recopied))),
                "rounds": result.rounds,
                "seconds": round(result.seconds, 3),
                "watermark_snapshot": result.snapshot,
                "lag_changes": result.lag.pending,
                "lag_seconds": round(result.lag.oldest_seconds, 3),
            }
        )

    return [tenant_sync]
