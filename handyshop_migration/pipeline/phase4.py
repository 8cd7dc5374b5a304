"""Phase 4, cutover: reads to the tenant (gradually, by a percentage across shops), then writes — fence,
drain, verify, flip — each state change recorded with time and reason in the routing history."""

from typing import Literal

import dagster as dg
from pydantic import Field

from handyshop_migration.pipeline.gates import is_current, parity_gates
from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.phase2 import PARITY_CHECKS, SHOP_VERIFIED, table_key
from handyshop_migration.pipeline.phase3 import TENANT_SYNC
from handyshop_migration.pipeline.resources import Registry, SourceDatabase, TenantServer
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.cutover import DEFAULT_ID_BLOCK, cut_over_writes, open_reads
from handyshop_migration.tenancy.errors import CutoverRefused, RoutingRefused

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


def require_verified(context: dg.AssetExecutionContext, catalog: Catalog, shop: str) -> None:
    """Refuse unless the shop's copy is verified and every parity gate of its latest copy passed."""
    if not is_current(context.instance, SHOP_VERIFIED, shop):
        raise dg.Failure(description=f"shop {shop} is not verified (shop_verified): run migrate_shop or verify_shop first.")
    keys = [dg.AssetCheckKey(table_key(t.name), c) for t in catalog.tables for c in PARITY_CHECKS]
    failed = [f"{g.asset}:{g.check}" for g in parity_gates(context.instance, keys, shop) if g.passed is not True]
    if failed:
        raise dg.Failure(description=f"shop {shop}: gates not passed for its latest copy: {', '.join(failed)}.")


def build_phase4(catalog: Catalog) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=TENANT_CUTOVER,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        deps=[TENANT_SYNC],
        description="Moves the shop's reads, then its writes, to its tenant: fence the shared rows, drain the change "
        "log, verify every table, reserve ids, flip. Refuses past any failed gate.",
    )
    def tenant_cutover(
        context: dg.AssetExecutionContext,
        config: CutoverConfig,
        source: SourceDatabase,
        tenant_server: TenantServer,
        registry: Registry,
    ) -> dg.MaterializeResult:
        shop = shop_id(context)
        require_verified(context, catalog, context.partition_key)
        routing = source.routing()
        if config.read_rollout_percent is not None:
            routing.set_read_percent(config.read_rollout_percent, f"tenant_cutover run {context.run.run_id}")
        try:
            if config.step != "writes":
                route = open_reads(routing, shop, full=config.step == "all_reads", reason=f"run {context.run.run_id}")
                return dg.MaterializeResult(
                    metadata={"state": route.state, "reads": route.reads, "writes": route.writes,
                              "read_rollout_percent": routing.read_percent()}
                )
            report = cut_over_writes(
                source.spec(), tenant_server.tenant_admin(shop), catalog, routing, shop,
                id_block=config.id_block, reason=f"write cutover (run {context.run.run_id})",
            )
        except (CutoverRefused, RoutingRefused) as exc:
            raise dg.Failure(description=str(exc)) from None
        registry.get().set_status(shop, "live")
        assert report.route is not None
        return dg.MaterializeResult(
            metadata={
                "state": report.route.state,
                "reads": report.route.reads,
                "writes": report.route.writes,
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
