"""Phase 4, cutover: reads to the tenant (gradually, by a percentage across shops), then writes — fence,
drain, verify, flip — each state change recorded with time and reason in the shop's lifecycle history."""

from typing import Literal

import dagster as dg
from pydantic import Field

from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.phase3 import TENANT_SYNC
from handyshop_migration.pipeline.resources import MigrationResource
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.errors import HandyshopError
from handyshop_migration.tenancy.workflow import DEFAULT_ID_BLOCK

GROUP = "phase4_cutover"
TENANT_CUTOVER = dg.AssetKey("tenant_cutover")


class CutoverConfig(dg.Config):
    step: Literal["reads", "all_reads", "writes"] = Field(
        default="writes",
        description="'reads': the shop reads from its tenant when its bucket is under the rollout percentage; "
        "'all_reads': all its reads; 'writes': the write cutover (reads follow).",
    )
    read_rollout_percent: int | None = Field(
        default=None, ge=0, le=100, description="Set the global read rollout percentage (0-100) first."
    )
    id_block: int = Field(
        default=DEFAULT_ID_BLOCK, ge=1000, description="Ids reserved per sequence for rows the tenant creates."
    )


def build_phase4(catalog: Catalog) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=TENANT_CUTOVER,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        deps=[TENANT_SYNC],
        description="Moves the shop's reads, then its writes, to its tenant: fence the shared rows, drain the change "
        "log, verify every table, reserve ids, flip. Refuses past any failed gate; resumes an interrupted cutover.",
    )
    def tenant_cutover(
        context: dg.AssetExecutionContext, config: CutoverConfig, migration: MigrationResource
    ) -> dg.MaterializeResult:
        shop = shop_id(context)
        workflow = migration.workflow(catalog)
        workflow.id_block = config.id_block
        try:
            if config.read_rollout_percent is not None:
                workflow.set_read_percent(config.read_rollout_percent, f"tenant_cutover run {context.run.run_id}")
            if config.step != "writes":
                record = workflow.open_reads(shop, full=config.step == "all_reads", reason=f"run {context.run.run_id}")
                return dg.MaterializeResult(
                    metadata={"state": record.state.value, "reads": record.reads, "writes": record.writes,
                              "read_rollout_percent": workflow.lifecycle.read_percent()}
                )
            report = workflow.cut_over(shop, reason=f"write cutover (run {context.run.run_id})")
        except HandyshopError as exc:
            raise dg.Failure(description=f"shop {shop} not cut over: {exc}") from None
        record = workflow.lifecycle.get(shop)
        return dg.MaterializeResult(
            metadata={
                "state": record.state.value,
                "reads": record.reads,
                "writes": record.writes,
                "writes_paused_seconds": round(report.fenced_seconds, 3),
                "changes_drained": report.changes_drained,
                "tables_verified": sum(1 for v in report.verification if v.ok),
                "verification": dg.MetadataValue.md(
                    "| table | rows | checksum |\n|---|---|---|\n"
                    + "\n".join(f"| {v.table} | {v.tenant.rows} | {v.tenant.checksum} |" for v in report.verification)
                ),
                "id_reservations": dg.MetadataValue.json({k: list(v) for k, v in report.reservations.items()}),
                "steps": dg.MetadataValue.md("\n".join(f"1. {text}" for _, text in report.steps)),
            }
        )

    return [tenant_cutover]
