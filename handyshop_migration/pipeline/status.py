"""Where a migration of hundreds of shops stands: the shops' lifecycle (one query), and the last run of each
(one query over Dagster's run storage)."""

from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from handyshop_migration.pipeline.partitions import SHOPS
from handyshop_migration.tenancy.lifecycle import Lifecycle, ShopState, State

PHASE_LABELS = {0: "0 registered", 1: "1 provisioned", 2: "2 copied", 3: "3 syncing", 4: "4 cut over", 5: "5 retired"}


@dataclass(frozen=True)
class ShopStatus:
    shop: str
    phase: str
    state: str
    route: str
    server: str  # the tenant server its database is on (tenancy.fleet), from the lifecycle's details
    schema: str  # its tenant schema version (newest migration applied)
    rows: str
    last_error: str
    last_run: str


def _label(record: ShopState | None) -> str:
    if record is None:
        return "0 registered"
    if record.state in (State.COPYING, State.COPIED):
        return "2 copying" if record.state == State.COPYING else "2 copied, not verified"
    if record.state == State.VERIFIED:
        return "2 verified"
    if record.state in (State.READS_ROLLOUT, State.CUTTING_OVER, State.ROLLING_BACK, State.MOVING):
        return f"4 {record.state.value.replace('_', ' ')}"
    if record.state == State.LIVE:
        return "4 live"
    return PHASE_LABELS[record.phase] if record.state != State.PROVISIONING else "1 provisioning"


def _server(record: ShopState | None) -> str:
    if record is None:
        return ""
    move = record.details.get("move") or {}
    if record.state == State.MOVING:
        return f"{move.get('from')} → {move.get('to')}"
    return str(record.details.get("server") or move.get("to") or "")


def _last_runs(instance: dg.DagsterInstance, shops: list[str]) -> dict[str, str]:
    """The newest run of each shop, from one query (runs are tagged with their partition)."""
    out: dict[str, str] = {}
    if not shops:
        return out
    for record in instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": shops})):
        shop = record.dagster_run.tags.get("dagster/partition")
        if shop is None or shop in out:
            continue  # newest first: the first one seen is the last run
        when = record.end_time or record.start_time
        stamp = datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%d %H:%M") if when else ""
        out[shop] = f"{record.dagster_run.status.value.lower()} {record.dagster_run.job_name} {stamp}".strip()
    return out


def shop_status(instance: dg.DagsterInstance, lifecycle: Lifecycle | None) -> list[ShopStatus]:
    shops = instance.get_dynamic_partitions(SHOPS)
    records = {r.shop_id: r for r in lifecycle.all()} if lifecycle is not None else {}
    for shop_id in records:
        if str(shop_id) not in shops:
            shops.append(str(shop_id))  # migrated by the library outside Dagster
    runs = _last_runs(instance, shops)
    rows = []
    for shop in sorted(set(shops), key=lambda s: (len(s), s)):
        record = records.get(int(shop))
        rows.append(
            ShopStatus(
                shop=shop,
                phase=_label(record),
                state=record.state.value if record else "unknown",
                route=f"reads {record.reads}, writes {record.writes}" if record else "shared",
                server=_server(record),
                schema=str(record.details.get("schema_version", "")) if record else "",
                rows=str(record.details.get("rows", "")) if record else "",
                last_error=(record.last_error or "")[:120] if record else "",
                last_run=runs.get(shop, ""),
            )
        )
    return rows
