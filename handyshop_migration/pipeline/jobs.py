"""Jobs: phase 0 for the source, the per-shop phases, and the way back from every phase.

Every job uses the in-process executor: one process per run keeps a shop's snapshot shared by all its
steps (see phase2.py), and saves the seconds a subprocess per step would cost.

The ways back are op jobs partitioned by shop; each needs the shop's tenant database name typed into its
run config as confirmation, and records on the assets it undoes that they were rolled back (gates.py).
"""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from handyshop_migration.pipeline import phase0, phase1, phase2, phase3, phase4, phase5
from handyshop_migration.pipeline.gates import ROLLED_BACK
from handyshop_migration.pipeline.partitions import shop_id
from handyshop_migration.pipeline.resources import Registry, Router, SourceDatabase, TenantServer
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.copy import SourceSnapshot, copy_shop, empty_tenant
from handyshop_migration.tenancy.engine.cutover import roll_back_cutover
from handyshop_migration.tenancy.engine.retirement import Archive, restore_shop
from handyshop_migration.tenancy.engine.tenant_schema import render
from handyshop_migration.tenancy.engine.verification import verify_copied_table
from handyshop_migration.tenancy.errors import CutoverRefused, HandyshopError


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


def build_verify_shop(checks: list[dg.AssetChecksDefinition]) -> object:
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
class Resources:
    source: SourceDatabase
    tenant_server: TenantServer
    router: Router
    registry: Registry


@dataclass(frozen=True)
class WayBack:
    name: str
    phase: int
    description: str
    undoes: tuple[dg.AssetKey, ...]  # assets whose latest materialization no longer holds
    action: Callable[[dg.OpExecutionContext, int, Resources], str]  # does it; returns what was done


def _way_back_job(way: WayBack) -> dg.JobDefinition:
    @dg.op(name=f"{way.name}_op", description=way.description)
    def undo(
        context: dg.OpExecutionContext,
        config: WayBackConfig,
        source: SourceDatabase,
        tenant_server: TenantServer,
        router: Router,
        registry: Registry,
    ) -> None:
        shop = shop_id(context)
        database = tenant_server.naming().database_name(shop)
        if config.confirm != database:
            raise dg.Failure(
                description=f"{way.name} (the way back from phase {way.phase}) for shop {shop}: {way.description} "
                f"To confirm, launch it with run config ops: {{{way.name}_op: {{config: {{confirm: {database}}}}}}}"
            )
        try:
            done = way.action(context, shop, Resources(source, tenant_server, router, registry))
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
    schema = render(catalog)

    def not_live(r: Resources, shop: int) -> None:
        state = r.source.routing().get(shop)
        if state.writes == "tenant" or state.state in ("cutting_over", "rolling_back", "retired"):
            raise CutoverRefused(
                f"shop {shop} is in routing state {state.state!r} (writes to {state.writes}); roll back the cutover first."
            )

    def deprovision(context: dg.OpExecutionContext, shop: int, r: Resources) -> str:
        not_live(r, shop)
        with r.source.connect() as conn:
            dropped = capture.disable(conn, shop)
        r.source.routing().set(shop, state="shared", reads="shared", writes="shared", reason=f"phase 1 rolled back ({context.run.run_id})")
        r.router.get().close(shop)
        result = r.tenant_server.provisioner(catalog).deprovision(shop)
        return (
            f"database dropped={result.dropped_database}, role dropped={result.dropped_role}, registry entry "
            f"removed={result.removed_registry_entry}, {dropped} captured changes dropped"
        )

    def reload(context: dg.OpExecutionContext, shop: int, r: Resources) -> str:
        not_live(r, shop)
        tenant = r.tenant_server.tenant_admin(shop)
        removed = empty_tenant(tenant, schema, shop)
        copies = copy_shop(r.source.spec(), tenant, schema, shop)
        with SourceSnapshot(r.source.spec()) as snap, tenant.connect() as tconn:
            bad = [v.describe() for v in (verify_copied_table(snap.conn, tconn, catalog, c.table, shop) for c in copies) if not v.ok]
        if bad:
            raise CutoverRefused("reloaded, but " + "; ".join(bad))
        return (
            f"emptied ({removed} rows) and reloaded {sum(c.rows for c in copies)} rows in {len(copies)} tables, all "
            "equal to the source; run verify_shop (or migrate_shop) to refresh the Dagster gates"
        )

    def stop_capture(context: dg.OpExecutionContext, shop: int, r: Resources) -> str:
        not_live(r, shop)
        with r.source.connect() as conn:
            dropped = capture.disable(conn, shop)
        return f"capture stopped, {dropped} pending changes dropped (the tenant is now frozen at its last sync)"

    def back_to_shared(context: dg.OpExecutionContext, shop: int, r: Resources) -> str:
        report = roll_back_cutover(
            r.source.spec(), r.tenant_server.tenant_admin(shop), catalog, r.source.routing(), shop,
            reason=f"rollback of the cutover (run {context.run.run_id})",
        )
        r.registry.get().set_status(shop, "verified")
        return (
            f"copied back {report.changes_drained} changes the tenant took; {len(report.verification)} tables verified; "
            f"reads and writes go to the shared database (writes paused {report.fenced_seconds:.2f}s)"
        )

    def restore(context: dg.OpExecutionContext, shop: int, r: Resources) -> str:
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=phase5.LEGACY_RETIREMENT, asset_partitions=[context.partition_key]), limit=1
        ).records
        mat = records[0].asset_materialization if records else None
        if mat is None or "archive" not in mat.metadata:
            raise CutoverRefused(f"shop {shop} has no retirement archive recorded; nothing to restore.")
        archive = Archive.load(str(mat.metadata["archive"].value))
        restored = restore_shop(r.source.spec(), catalog, archive)
        r.source.routing().set(shop, state="live", reason=f"retirement rolled back: archive {archive.path} restored", expect=("retired",))
        r.registry.get().set_status(shop, "live")
        return f"restored {sum(restored.values())} rows from {archive.path}, checksums equal the archive's"

    ways = [
        WayBack("rollback_shop", 1, "Drop the shop's tenant database and role, its registry entry and its captured "
                "changes; the shared database is untouched.", tuple(phase12_keys), deprovision),
        WayBack("rollback_copy", 2, "Empty the shop's tenant tables and reload them from a fresh snapshot.",
                (phase2.SHOP_VERIFIED,), reload),
        WayBack("rollback_capture", 3, "Stop capturing the shop's writes and drop its change log.",
                (phase3.TENANT_SYNC,), stop_capture),
        WayBack("rollback_cutover", 4, "Copy back every write the tenant took, then route reads and writes to the "
                "shared database again.", (phase4.TENANT_CUTOVER,), back_to_shared),
        WayBack("restore_retired_shop", 5, "Restore the shop's archived rows into the shared database, byte for byte.",
                (phase5.LEGACY_RETIREMENT,), restore),
    ]
    return [_way_back_job(w) for w in ways]
