"""Phase 5, retirement: archive the shop's rows of every tenant table out of the shared database, then
delete exactly those — never another shop's, never global rows — only when live after cutover, with a
backup of the shared database on record, and with an explicit confirmation."""

import dagster as dg
from pydantic import Field

from handyshop_migration.pipeline.gates import BACKUP
from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.phase4 import TENANT_CUTOVER
from handyshop_migration.pipeline.resources import MigrationResource
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.errors import HandyshopError

GROUP = "phase5_retirement"
LEGACY_RETIREMENT = dg.AssetKey("legacy_retirement")


def confirmation(shop: int) -> str:
    return f"retire shop {shop}"


class RetirementConfig(dg.Config):
    confirm: str = Field(default="", description="Type 'retire shop <id>' to delete the shop's rows from the shared database.")


def build_phase5(catalog: Catalog) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=LEGACY_RETIREMENT,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        deps=[TENANT_CUTOVER],
        description="Archives the shop's rows (restorable, per-table counts and checksums) and deletes exactly those "
        "from the shared database in one transaction.",
    )
    def legacy_retirement(
        context: dg.AssetExecutionContext, config: RetirementConfig, migration: MigrationResource
    ) -> dg.MaterializeResult:
        shop = shop_id(context)
        if config.confirm != confirmation(shop):
            raise dg.Failure(
                description=f"retiring shop {shop} deletes its rows from the shared database; to confirm, launch it with "
                f"run config ops: {{legacy_retirement: {{config: {{confirm: '{confirmation(shop)}'}}}}}}"
            )
        if not context.instance.fetch_materializations(BACKUP, limit=1).records:
            raise dg.Failure(description="no backup of the shared database exists (source_backup): run prepare_source first.")
        try:
            report = migration.workflow(catalog).retire(shop, confirm=True)
        except HandyshopError as exc:
            raise dg.Failure(description=f"shop {shop} not retired: {exc}") from None
        return dg.MaterializeResult(
            metadata={
                "archive": dg.MetadataValue.path(str(report.archive.path)),
                "rows_deleted": sum(report.deleted.values()),
                "resumed": report.resumed,
                "tables": dg.MetadataValue.json(
                    {t.table: {"rows": t.rows, "checksum": t.checksum} for t in report.archive.tables}
                ),
                "seconds": round(report.seconds, 3),
            }
        )

    return [legacy_retirement]
