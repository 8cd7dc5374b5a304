"""Jobs: phase 0 for the source, phases 1-2 per shop, and the way back from phase 1.

Every job uses the in-process executor: one process per run keeps a shop's snapshot shared by all its
steps (see phase2.py), and saves the seconds a subprocess per step would cost.
"""


import dagster as dg
from pydantic import Field

from handyshop_migration.pipeline import phase0, phase1, phase2
from handyshop_migration.pipeline.gates import ROLLED_BACK
from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.resources import Router, TenantServer
from handyshop_migration.tenancy.catalog import Catalog

prepare_source = dg.define_asset_job(
    "prepare_source",
    selection=dg.AssetSelection.groups(phase0.GROUP),
    executor_def=dg.in_process_executor,
    description="Phase 0: backup, live catalog and drift check, validation findings as checks.",
)

migrate_shop = dg.define_asset_job(
    "migrate_shop",
    selection=dg.AssetSelection.groups(phase1.GROUP, phase2.GROUP),
    executor_def=dg.in_process_executor,
    tags={"handyshop/phases": "1-2"},
    description="Phases 1-2 for one shop: provision, copy every table from one snapshot, verify.",
)


def build_verify_shop(checks: list[dg.AssetChecksDefinition]) -> object:
    return dg.define_asset_job(
        "verify_shop",
        selection=dg.AssetSelection.checks(*checks) | dg.AssetSelection.assets(phase2.SHOP_VERIFIED),
        executor_def=dg.in_process_executor,
        description="Re-run every check of one shop against its tenant database (nothing is copied), then "
        "shop_verified: e.g. before cutover, or after someone touched a tenant database.",
    )


class RollbackConfig(dg.Config):
    confirm: str = Field(
        default="",
        description="Type the shop's tenant database name (e.g. shop_5_db) to confirm that it is dropped.",
    )


def build_rollback_shop(catalog: Catalog, wiped: list[dg.AssetKey]) -> dg.JobDefinition:
    @dg.op(description="Drop the shop's tenant database and role and its registry entry; the shared database is untouched.")
    def deprovision_shop(
        context: dg.OpExecutionContext, config: RollbackConfig, tenant_server: TenantServer, router: Router
    ) -> None:
        shop = shop_id(context)
        database = tenant_server.naming().database_name(shop)
        if config.confirm != database:
            raise dg.Failure(
                description=f"rollback of shop {shop} drops database {database} and role "
                f"{tenant_server.naming().role_name(shop)}; to confirm, launch it with run config "
                f"ops: {{deprovision_shop: {{config: {{confirm: {database}}}}}}}"
            )
        router.get().close(shop)
        result = tenant_server.provisioner(catalog).deprovision(shop)
        # The shop's phase 1-2 materializations no longer describe anything that exists: say so on each
        # asset (SQL event storage cannot wipe a partition); gates and status read it (gates.is_current).
        for key in wiped:
            context.log_event(
                dg.AssetObservation(
                    asset_key=key, partition=context.partition_key, metadata={ROLLED_BACK: True, "phase": 1}
                )
            )
        context.log.info(
            f"shop {shop}: database dropped={result.dropped_database}, role dropped={result.dropped_role}, "
            f"registry entry removed={result.removed_registry_entry}"
        )

    @dg.job(
        name="rollback_shop",
        partitions_def=shops_partitions,
        executor_def=dg.in_process_executor,
        description="The way back from phase 1 (and 2): deprovision one shop. Needs an explicit confirmation.",
    )
    def rollback_shop() -> None:
        deprovision_shop()

    return rollback_shop
