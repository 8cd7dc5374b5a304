"""Jobs: phase 0 for the source, the per-shop phases, and the way back from every phase.

Every job uses the in-process executor: a shop's steps are few (a step per phase), and a subprocess per
step would cost seconds each.

The ways back are op jobs partitioned by shop; each needs the shop's tenant database name typed into its
run config as confirmation, calls one workflow method (which refuses from a wrong state), and records on
the assets it undoes that they were rolled back (for the UI; the lifecycle is what later steps go by).
"""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from handyshop_migration.pipeline import phase0, phase1, phase2, phase3, phase4, phase5
from handyshop_migration.pipeline.gates import ROLLED_BACK
from handyshop_migration.pipeline.partitions import shop_id
from handyshop_migration.pipeline.resources import MigrationResource
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.errors import HandyshopError
from handyshop_migration.tenancy.workflow import Workflow


def _group_job(name: str, groups: tuple[str, ...], description: str) -> object:
    return dg.define_asset_job(
        name, selection=dg.AssetSelection.groups(*groups), executor_def=dg.in_process_executor, description=description
    )


prepare_source = _group_job(
    "prepare_source", (phase0.GROUP,), "Phase 0: backup, live catalog and drift check, validation findings as checks."
)
migrate_shop = _group_job(
    "migrate_shop",
    (phase1.GROUP, phase2.GROUP),
    "Phases 1-2 for one shop: provision, capture, copy every table from one snapshot, verify.",
)
sync_shop = _group_job("sync_shop", (phase3.GROUP,), "Phase 3 for one shop: apply its captured writes to its tenant.")
cutover_shop = _group_job(
    "cutover_shop",
    (phase4.GROUP,),
    "Phase 4 for one shop: reads, then writes, to its tenant (config: step, read_rollout_percent).",
)
retire_shop = _group_job(
    "retire_shop",
    (phase5.GROUP,),
    "Phase 5 for one shop: archive and delete its rows from the shared database (needs confirmation).",
)


def build_verify_shop(catalog: Catalog) -> object:
    checks = [dg.AssetCheckKey(phase2.table_key(t.name), c) for t in catalog.tables for c in phase2.PARITY_CHECKS]
    return dg.define_asset_job(
        "verify_shop",
        selection=dg.AssetSelection.checks(*checks) | dg.AssetSelection.assets(phase2.SHOP_VERIFIED),
        executor_def=dg.in_process_executor,
        description="Re-run every check of one shop against its tenant database (nothing is copied), then "
        "shop_verified: e.g. before cutover, or after someone touched a tenant database.",
    )


class WayBackConfig(dg.Config):
    confirm: str = Field(default="", description="Type the shop's tenant database name (e.g. shop_5_db) to confirm.")


@dataclass(frozen=True)
class WayBack:
    name: str
    phase: int
    description: str
    undoes: tuple[dg.AssetKey, ...]  # assets whose latest materialization no longer holds
    action: Callable[[Workflow, int, str], str]  # does it (workflow, shop, run id); returns what was done


def _way_back_job(catalog: Catalog, way: WayBack) -> dg.JobDefinition:
    @dg.op(name=f"{way.name}_op", description=way.description)
    def undo(context: dg.OpExecutionContext, config: WayBackConfig, migration: MigrationResource) -> None:
        shop = shop_id(context)
        workflow = migration.workflow(catalog)
        database = workflow.provisioner.naming.database_name(shop)
        if config.confirm != database:
            raise dg.Failure(
                description=f"{way.name} (the way back from phase {way.phase}) for shop {shop}: {way.description} "
                f"To confirm, launch it with run config ops: {{{way.name}_op: {{config: {{confirm: {database}}}}}}}"
            )
        try:
            done = way.action(workflow, shop, context.run.run_id)
        except HandyshopError as exc:
            raise dg.Failure(description=f"{way.name} for shop {shop} refused: {exc}") from None
        for key in way.undoes:
            context.log_event(
                dg.AssetObservation(
                    asset_key=key, partition=context.partition_key, metadata={ROLLED_BACK: True, "phase": way.phase}
                )
            )
        context.log.info(f"shop {shop}: {done}")

    @dg.job(
        name=way.name,
        partitions_def=phase1.shops_partitions,
        executor_def=dg.in_process_executor,
        description=f"The way back from phase {way.phase}: {way.description} Needs an explicit confirmation.",
    )
    def job() -> None:
        undo()

    return job


def build_way_back_jobs(catalog: Catalog, phase12_keys: list[dg.AssetKey]) -> list[dg.JobDefinition]:
    def reload(w: Workflow, shop: int, run: str) -> str:
        report = w.copy(shop)
        if not report.verified:
            raise HandyshopError("reloaded, but " + "; ".join(report.problems))
        return f"reloaded {report.rows} rows in {len(report.tables)} tables from a fresh snapshot, all equal to the source"

    def stop_capture(w: Workflow, shop: int, run: str) -> str:
        return f"capture stopped, {w.stop_capture(shop)} pending changes dropped (the tenant is frozen at its last sync)"

    def back_to_shared(w: Workflow, shop: int, run: str) -> str:
        report = w.roll_back_cutover(shop, reason=f"rollback of the cutover (run {run})")
        return "; ".join(text for _, text in report.steps)

    def restore(w: Workflow, shop: int, run: str) -> str:
        restored = w.restore(shop)
        return f"restored {sum(restored.values())} rows, checksums equal the archive's"

    ways = [
        WayBack("rollback_shop", 1, "Drop the shop's tenant database and roles, its registry entry and its captured "
                "changes; the shared database is untouched.", tuple(phase12_keys), lambda w, s, r: w.deprovision(s)),
        WayBack("rollback_copy", 2, "Empty the shop's tenant tables and reload them from a fresh snapshot.",
                (phase2.SHOP_VERIFIED,), reload),
        WayBack("rollback_capture", 3, "Stop capturing the shop's writes and drop its change log.",
                (phase3.TENANT_SYNC,), stop_capture),
        WayBack("rollback_cutover", 4, "Copy back every write the tenant took, then route reads and writes to the "
                "shared database again.", (phase4.TENANT_CUTOVER,), back_to_shared),
        WayBack("restore_retired_shop", 5, "Restore the shop's archived rows into the shared database, byte for byte.",
                (phase5.LEGACY_RETIREMENT,), restore),
    ]
    return [_way_back_job(catalog, w) for w in ways]
