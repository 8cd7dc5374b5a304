"""`migration_overview`: where a migration of a thousand shops stands, on one page of the UI.

An asset of its own (not partitioned, not materialized by a run): `migration_overview_sensor` records it on
each tick where something changed, as a materialization whose metadata holds the shops per state (a markdown
table, and one number per state, which the UI plots over time) and the shops that need someone: failed ones
(verification failed, or a step stopped with an error) and stale ones (a step in progress that has not moved
for `STALE_AFTER`). A tick is one query on the lifecycle; an unchanged overview records nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from handyshop_migration.pipeline.resources import SourceDatabase
from handyshop_migration.tenancy.lifecycle import PHASE, ShopState, State

OVERVIEW = dg.AssetKey("migration_overview")
GROUP = "overview"
STALE_AFTER = timedelta(minutes=15)  # a step in progress this long without a transition is worth a look
LISTED = 50  # failed or stale shops listed by id (the counts are complete)

overview_spec = dg.AssetSpec(
    key=OVERVIEW,
    group_name=GROUP,
    description="Shops per lifecycle state, and the failed and stale ones; recorded by migration_overview_sensor "
    "whenever it changes (see its materializations' metadata).",
)


def _failed(record: ShopState) -> bool:
    return record.state == State.COPIED or bool(record.last_error)


def _stale(record: ShopState, now: datetime) -> bool:
    return record.in_progress and record.updated_at is not None and now - record.updated_at > STALE_AFTER


def overview(records: Sequence[ShopState], now: datetime | None = None) -> dict[str, object]:
    """The overview's content (plain values; `metadata` turns them into Dagster metadata)."""
    now = now or datetime.now(UTC)
    per_state = Counter(r.state for r in records)
    failed = [r for r in records if _failed(r)]
    stale = [r for r in records if _stale(r, now)]
    return {
        "shops": len(records),
        "per_state": {s.value: per_state.get(s, 0) for s in sorted(State, key=lambda s: (PHASE[s], s.value))
                      if per_state.get(s)},
        "failed": [(r.shop_id, r.state.value, (r.last_error or "")[:160]) for r in failed],
        "stale": [(r.shop_id, r.state.value, r.updated_at.isoformat(timespec="seconds") if r.updated_at else "")
                  for r in stale],
    }


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(content: dict[str, object]) -> str:
    per_state: dict[str, int] = content["per_state"]  # type: ignore[assignment]
    failed: list[tuple[int, str, str]] = content["failed"]  # type: ignore[assignment]
    stale: list[tuple[int, str, str]] = content["stale"]  # type: ignore[assignment]
    lines = ["| state | phase | shops |", "|---|---|---|"]
    lines += [f"| {s} | {PHASE[State(s)]} | {n} |" for s, n in per_state.items()]
    lines.append(f"| **all** | | **{content['shops']}** |")
    lines += ["", f"**Failed: {len(failed)}**" + (" (first " + str(LISTED) + ")" if len(failed) > LISTED else "")]
    if failed:
        lines += ["", "| shop | state | last error |", "|---|---|---|"]
        lines += [f"| {s} | {st} | {_cell(e)} |" for s, st, e in failed[:LISTED]]
    lines += ["", f"**Stale (in progress, unchanged for {int(STALE_AFTER.total_seconds() // 60)} min): {len(stale)}**"]
    if stale:
        lines += ["", "| shop | state | since |", "|---|---|---|"]
        lines += [f"| {s} | {st} | {t} |" for s, st, t in stale[:LISTED]]
    return "\n".join(lines)


def metadata(content: dict[str, object]) -> dict[str, dg.RawMetadataValue]:
    per_state: dict[str, int] = content["per_state"]  # type: ignore[assignment]
    out: dict[str, dg.RawMetadataValue] = {
        "overview": dg.MetadataValue.md(markdown(content)),
        "shops": int(content["shops"]),  # type: ignore[call-overload]
        "failed": len(content["failed"]),  # type: ignore[arg-type]
        "stale": len(content["stale"]),  # type: ignore[arg-type]
    }
    out.update({f"state/{s}": n for s, n in per_state.items()})
    return out


def fingerprint(content: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def build_overview_sensor(minimum_interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="migration_overview_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records migration_overview (shops per state, failed and stale shops) when it changed; one "
        "lifecycle query per tick.",
    )
    def migration_overview_sensor(context: dg.SensorEvaluationContext, source: SourceDatabase) -> dg.SensorResult:
        content = overview(source.lifecycle().all())
        mark = fingerprint(content)
        if mark == context.cursor:
            return dg.SensorResult(skip_reason=dg.SkipReason("overview unchanged"), cursor=mark)
        return dg.SensorResult(
            asset_events=[dg.AssetMaterialization(asset_key=OVERVIEW, metadata=metadata(content))], cursor=mark
        )

    return migration_overview_sensor
