"""Gates between phases, read from Dagster's own records.

Blocking checks stop what follows them in the same run. Across runs (phase 0 runs once, each shop in a
run of its own), the later phase reads the latest materialization or check result instead: a shop is
provisioned only after a validation that does not name it, against an undrifted catalog; a shop is
verified only when every parity check of its latest copy passed.
"""


from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.event_api import (
    PartitionKeyFilter,  # partitioned check records: preview API, version pinned
)

from handyshop_migration.tenancy.engine.catalog import Catalog

VALIDATION = dg.AssetKey("source_validation")
CATALOG = dg.AssetKey("source_catalog")
BACKUP = dg.AssetKey("source_backup")
ROLLED_BACK = "rolled_back"  # metadata key of the observation a rollback records on each asset it undoes


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition else None), limit=1
    ).records
    return records[0] if records else None


def _metadata(record: dg.EventLogRecord) -> dict[str, Any]:
    mat = record.asset_materialization
    return {k: v.value for k, v in (mat.metadata if mat else {}).items()}


def is_current(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> bool:
    """Materialized for `partition`, and not undone by a later rollback."""
    mat = _latest(instance, key, partition)
    if mat is None:
        return False
    observations = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition], after_storage_id=mat.storage_id), limit=10
    ).records
    return not any(
        o.asset_observation is not None and ROLLED_BACK in o.asset_observation.metadata for o in observations
    )


def current_partitions(instance: dg.DagsterInstance, key: dg.AssetKey) -> set[str]:
    """Partitions of `key` materialized and not rolled back since."""
    return {p for p in instance.get_materialized_partitions(key) if is_current(instance, key, p)}


def phase0_refusal(instance: dg.DagsterInstance, catalog: Catalog, shop_id: int) -> str | None:
    """Why shop `shop_id` may not enter phase 1 yet, or None."""
    validation = _latest(instance, VALIDATION)
    if validation is None:
        return "phase 0 has not run: materialize source_validation (job prepare_source) before provisioning shops."
    md = _metadata(validation)
    if md.get("blocks_all_shops"):
        return "the latest source_validation has errors that block every shop; see its checks, fix, and run it again."
    if shop_id in (md.get("blocked_shops") or []):
        return (
            f"the latest source_validation names shop {shop_id} in an error finding (cross-shop references or orphan "
            "rows); see its checks for the ids, fix the rows, and run source_validation again."
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


@dataclass(frozen=True)
class GateState:
    check: str
    asset: str
    passed: bool | None  # None: never evaluated for this copy
    metadata: dict[str, Any]


def parity_gates(instance: dg.DagsterInstance, check_keys: Sequence[dg.AssetCheckKey], shop: str) -> list[GateState]:
    """The latest result of every check for one shop; a result older than the asset's latest
    materialization does not count (it judged a copy that has since been replaced)."""
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        list(check_keys), partition_filter=PartitionKeyFilter(key=shop)
    )
    materialized: dict[dg.AssetKey, float] = {}
    states = []
    for key in check_keys:
        if key.asset_key not in materialized:
            rec = _latest(instance, key.asset_key, shop)
            materialized[key.asset_key] = rec.timestamp if rec else float("inf")
        record = latest.get(key)
        evaluation = record.event.asset_check_evaluation if record and record.event else None
        fresh = record is not None and record.event is not None and record.event.timestamp >= materialized[key.asset_key]
        states.append(
            GateState(
                check=key.name,
                asset="/".join(key.asset_key.path),
                passed=(evaluation.passed if evaluation is not None and fresh else None),
                metadata={k: v.value for k, v in (evaluation.metadata.items() if evaluation else [])},
            )
        )
    return states
