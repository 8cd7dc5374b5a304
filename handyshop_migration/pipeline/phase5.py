"""Phase 5, retirement: archive the shop's rows of every tenant table out of the shared database, then
delete exactly those — never another shop's, never global rows — only after cutover and every gate, and
only with an explicit confirmation."""

import dagster as dg
from pydantic import Field

from handyshop_migration.pipeline.gates import BACKUP, is_current
from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.phase4 import TENANT_CUTOVER, require_verified
from handyshop_migration.pipeline.resources import Registry, SourceDatabase
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.retirement import archive_shop, retire_shop
from handyshop_migration.tenancy.errors import RetirementRefused

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
        context: dg.AssetExecutionContext, config: RetirementConfig, source: SourceDatabase, registry: Registry
    ) -> dg.MaterializeResult:
        shop = shop_id(context)
        if config.confirm != confirmation(shop):
            raise dg.Failure(
                description=f"retiring shop {shop} deletes its rows from the shared database; to confirm, launch it with "
                f"run config ops: {{legacy_retirement: {{config: {{confirm: '{confirmation(shop)}'}}}}}}"
            )
        require_verified(context, catalog, context.partition_key)
        if not is_current(context.instance, TENANT_CUTOVER, context.partition_key):
            raise dg.Failure(description=f"shop {shop} has no current cutover (tenant_cutover): cut it over first.")
        if not context.instance.fetch_materializations(BACKUP, limit=1).records:
            raise dg.Failure(description="no backup of the shared database exists (source_backup): run prepare_source first.")
        routing = source.routing()
        state = routing.get(shop).state
        try:
            archive = archive_shop(source.spec(), catalog, shop, source.archive_dir)
            result = retire_shop(source.spec(), catalog, archive, confirm=True, state=state)
        except RetirementRefused as exc:
            raise dg.Failure(description=str(exc)) from None
        routing.set(
            shop, state="retired", reason=f"retired: {archive.rows} rows archived to {archive.path} and deleted "
            f"(run {context.run.run_id})", expect=("live",),
        )
        registry.get().set_status(shop, "retired")
        return dg.MaterializeResult(
            metadata={
                "archive": dg.MetadataValue.path(str(archive.path)),
                "rows_deleted": sum(result.deleted.values()),
                "tables": dg.MetadataValue.json(
                    {t.table: {"rows": t.rows, "checksum": t.checksum} for t in archive.tables}
                ),
                "seconds": round(result.seconds, 3),
            }
        )

    return [legacy_retirement]
