"""Phase 0's gate for every shop, read from Dagster's own records.

Blocking checks stop what follows them in the same run. Phase 0 runs once, each shop in runs of its own:
a shop is provisioned only after a backup succeeded, a validation that does not name it and a plan of the
tenant servers that fits (`fleet_plan`), against an undrifted catalog. Later gates are the shop's lifecycle (the library refuses from a wrong state).
"""


from typing import Any

import dagster as dg

from handyshop_migration.tenancy.engine.catalog import Catalog

VALIDATION = dg.AssetKey("source_validation")
CATALOG = dg.AssetKey("source_catalog")
BACKUP = dg.AssetKey("source_backup")
FLEET_PLAN = dg.AssetKey("fleet_plan")  # pipeline/fleet.py
ROLLED_BACK = "rolled_back"  # metadata key of the observation a rollback records on each asset it undoes


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def _metadata(record: dg.EventLogRecord) -> dict[str, Any]:
    mat = record.asset_materialization
    return {k: v.value for k, v in (mat.metadata if mat else {}).items()}


def phase0_refusal(instance: dg.DagsterInstance, catalog: Catalog, shop_id: int) -> str | None:
    """Why shop `shop_id` may not enter phase 1 yet, or None."""
    validation = _latest(instance, VALIDATION)
    if validation is None:
        return "phase 0 has not run: materialize source_validation (job prepare_source) before provisioning shops."
    backup = _latest(instance, BACKUP)
    if backup is None or (backup.run_id != validation.run_id and backup.storage_id < validation.storage_id):
        return (
            "the latest phase 0 has no verified backup of the shared database (source_backup failed or did not run "
            "with it): fix its cause (see the prepare_source run) and run phase 0 again (handyshop-migration prepare)."
        )
    md = _metadata(validation)
    if md.get("blocks_all_shops"):
        return "the latest source_validation has errors that block every shop; see its checks, fix, and run it again."
    if shop_id in (md.get("blocked_shops") or []):
        return (
            f"the latest source_validation names shop {shop_id} in an error finding (cross-shop references or orphan "
            "rows); see its checks for the ids, fix the rows, and run source_validation again."
        )
    plan = _latest(instance, FLEET_PLAN)
    if plan is None or plan.storage_id < validation.storage_id and plan.run_id != validation.run_id:
        return (
            "the latest phase 0 has no plan of the tenant servers (fleet_plan failed or did not run with it): see the "
            "prepare_source run, fix its cause (a servers file, an unreachable server) and run phase 0 again."
        )
    if not _metadata(plan).get("ok", False):
        return (
            "the latest fleet_plan is refused (a server over its connection budget, or shops without a server with "
            "room): see its fleet_capacity and fleet_connection_budget checks, change the servers file, and run phase "
            "0 again."
        )
    cat = _latest(instance, CATALOG)
    if cat is None:
        return "phase 0 has not run: materialize source_catalog (job prepare_source) before provisioning shops."
    live = _metadata(cat).get("checksum")
    if live != catalog.checksum:
        return (
            "the source catalog has drifted from the catalog these definitions were built from "
            f"(live {str(live)[:12]}…, expected {catalog.checksum[:12]}…); see the catalog_drift check."
        )
    return None
