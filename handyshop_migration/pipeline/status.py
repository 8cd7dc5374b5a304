"""Where a migration of hundreds of shops stands, read from Dagster's records and the registry."""

import os
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg
from dagster._core.event_api import PartitionKeyFilter

from handyshop_migration import settings
from handyshop_migration.pipeline.gates import current_partitions
from handyshop_migration.pipeline.partitions import SHOPS
from handyshop_migration.pipeline.phase1 import TENANT_DATABASE
from handyshop_migration.pipeline.phase2 import SHOP_VERIFIED
from handyshop_migration.pipeline.phase3 import TENANT_SYNC
from handyshop_migration.pipeline.phase4 import TENANT_CUTOVER
from handyshop_migration.pipeline.phase5 import LEGACY_RETIREMENT

# (label, asset) in phase order: a shop's phase is the last of these materialized (and not rolled back).
PHASES: list[tuple[str, dg.AssetKey]] = [
    ("1 provisioned", TENANT_DATABASE),
    ("2 verified", SHOP_VERIFIED),
    ("3 syncing", TENANT_SYNC),
    ("4 cut over", TENANT_CUTOVER),
    ("5 retired", LEGACY_RETIREMENT),
]


@dataclass(frozen=True)
class ShopStatus:
    shop: str
    phase: str
    gates_passed: int
    gates_failed: int
    rows: str
    registry: str
    route: str
    last_run: str


def _control_state() -> tuple[dict[int, str], dict[int, str]]:
    """Registry status and routing state per shop, when the environment names the control database."""
    if settings.missing(settings.REQUIRED_FOR_MIGRATION):
        return {}, {}
    from handyshop_migration.tenancy.application.encryption import CredentialCipher
    from handyshop_migration.tenancy.application.registry import ConnectionRegistry
    from handyshop_migration.tenancy.application.routing import RoutingTable
    from handyshop_migration.tenancy.dsn import ConnectionSpec

    source = ConnectionSpec.from_url(os.environ[settings.SOURCE_URL], name=settings.SOURCE_URL)
    with ConnectionRegistry(source, CredentialCipher.from_env()) as registry:
        statuses = {c.shop_id: c.status for c in registry.list()}
    routing = RoutingTable(source)
    routing.ensure_schema()
    routes = {r.shop_id: f"{r.state} (reads {r.reads}, writes {r.writes})" for r in routing.all()}
    return statuses, routes


def shop_status(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[ShopStatus]:
    shops = instance.get_dynamic_partitions(SHOPS)
    graph = defs.resolve_asset_graph()
    check_keys = [k for k in graph.asset_check_keys if graph.get(k.asset_key).partitions_def is not None]
    materialized = {key: current_partitions(instance, key) for _, key in PHASES}
    registry, routes = _control_state()
    rows = []
    for shop in sorted(shops, key=lambda s: (len(s), s)):
        phase = "0 registered"
        for label, key in PHASES:
            if shop in materialized[key]:
                phase = label
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            check_keys, partition_filter=PartitionKeyFilter(key=shop)
        )
        evaluations = [r.event.asset_check_evaluation for r in latest.values() if r.event]
        passed = sum(1 for e in evaluations if e is not None and e.passed)
        failed = sum(1 for e in evaluations if e is not None and not e.passed)
        total = ""
        if shop in materialized[SHOP_VERIFIED]:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=SHOP_VERIFIED, asset_partitions=[shop]), limit=1
            ).records
            mat = records[0].asset_materialization if records else None
            if mat is not None and "rows" in mat.metadata:
                total = str(mat.metadata["rows"].value)
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": shop}), limit=1)
        last = ""
        if runs:
            record = instance.get_run_record_by_id(runs[0].run_id)
            when = record.end_time or record.start_time if record else None
            stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M") if when else ""
            last = f"{runs[0].status.value.lower()} {stamp}".strip()
        rows.append(
            ShopStatus(shop, phase, passed, failed, total, registry.get(int(shop), ""), routes.get(int(shop), "shared"), last)
        )
    return rows
