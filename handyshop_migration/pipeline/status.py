"""Where a migration of a thousand shops stands, in three reads: the shops' lifecycle (one query), the shop
partitions and the newest run of each (one query each over Dagster's run storage).

`handyshop-migration status` for 1,000 shops must answer in well under two seconds. Importing Dagster alone
takes 1.2-1.7 s on a 2-core machine, so on Postgres storage (what dagster.yaml names) the two storage reads
are made without Dagster: `storage_reads` reads the `dynamic_partitions` and `runs` tables of dagster-postgres
directly (read-only, one query each; the schema of dagster-postgres 0.29, pinned in pyproject.toml; a test
compares it with what the Dagster API says). Any other storage goes through the Dagster API (`shop_status`).
This module imports Dagster only there, lazily.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from handyshop_migration.tenancy.lifecycle import Lifecycle, ShopState, State

SHOPS = "shops"  # the partitions definition's name (pipeline.partitions.SHOPS, without importing Dagster)
PARTITION_TAG = "dagster/partition"
PHASE_LABELS = {0: "0 registered", 1: "1 provisioned", 2: "2 copied", 3: "3 syncing", 4: "4 cut over", 5: "5 retired"}
STORAGE_CLASSES = {("handyshop_migration.pipeline.storage", "PooledPostgresStorage"),
                   ("dagster_postgres", "DagsterPostgresStorage")}


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
    fence_windows: tuple[float, ...] = ()  # seconds the shop's writes waited at each of its cutovers

    @property
    def fence(self) -> str:
        return f"{self.fence_windows[-1]:.2f}s" if self.fence_windows else ""


def fence_summary(rows: Iterable[ShopStatus]) -> str | None:
    """p50/p95 of every cutover's fence window (how long a shop's writes waited), over all shops: what the
    application felt at the switch, the figure an operator watches while cutting over a fleet."""
    windows = sorted(w for r in rows for w in r.fence_windows)
    if not windows:
        return None

    def pct(p: int) -> float:  # nearest rank
        return windows[max(0, math.ceil(len(windows) * p / 100) - 1)]

    return (
        f"fence windows over {len(windows)} cutover{'s' if len(windows) != 1 else ''}: p50 {pct(50):.2f}s, p95 {pct(95):.2f}s, max {windows[-1]:.2f}s "
        "(how long each shop's writes waited at its cutover)"
    )


@dataclass(frozen=True)
class LastRun:
    status: str  # Dagster's run status name, e.g. SUCCESS
    job: str
    when: float | None  # end time, else start time (epoch seconds)

    def text(self) -> str:
        stamp = datetime.fromtimestamp(self.when, UTC).strftime("%Y-%m-%d %H:%M") if self.when else ""
        return f"{self.status.lower()} {self.job} {stamp}".strip()


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


def rows_for(shops: Iterable[str], records: Mapping[int, ShopState], runs: Mapping[str, LastRun]) -> list[ShopStatus]:
    """One row per shop (partitions and shops the lifecycle knows), in shop id order."""
    everyone = set(shops) | {str(s) for s in records}
    out = []
    for shop in sorted(everyone, key=lambda s: (len(s), s)):
        record = records.get(int(shop)) if shop.isdigit() else None
        run = runs.get(shop)
        out.append(
            ShopStatus(
                shop=shop,
                phase=_label(record),
                state=record.state.value if record else "unknown",
                route=f"reads {record.reads}, writes {record.writes}" if record else "shared",
                server=_server(record),
                schema=str(record.details.get("schema_version", "")) if record else "",
                rows=str(record.details.get("rows", "")) if record else "",
                last_error=(record.last_error or "")[:120] if record else "",
                last_run=run.text() if run else "",
                fence_windows=tuple(float(w) for w in record.details.get("fence_windows", ())) if record else (),
            )
        )
    return out


# -- through the Dagster API (any storage) --------------------------------------------------------------------


def _last_runs(instance: Any, shops: list[str]) -> dict[str, LastRun]:
    """The newest run of each shop, from one query (runs are tagged with their partition)."""
    import dagster as dg

    out: dict[str, LastRun] = {}
    if not shops:
        return out
    for record in instance.get_run_records(dg.RunsFilter(tags={PARTITION_TAG: shops})):
        shop = record.dagster_run.tags.get(PARTITION_TAG)
        if shop is None or shop in out:
            continue  # newest first: the first one seen is the last run
        out[shop] = LastRun(record.dagster_run.status.value, record.dagster_run.job_name,
                            record.end_time or record.start_time)
    return out


def shop_status(instance: Any, lifecycle: Lifecycle | None) -> list[ShopStatus]:
    records = {r.shop_id: r for r in lifecycle.all()} if lifecycle is not None else {}
    shops = sorted(set(instance.get_dynamic_partitions(SHOPS)) | {str(s) for s in records})
    return rows_for(shops, records, _last_runs(instance, shops))


# -- Postgres storage, read directly ------------------------------------------------------------------------


def postgres_storage_url(dagster_home: str | Path, environ: Mapping[str, str] | None = None) -> str | None:
    """The storage URL (a secret) when DAGSTER_HOME's dagster.yaml keeps runs in PostgreSQL through a
    `postgres_url` (dagster-postgres's own class or ours); None for anything else (then use the Dagster API)."""
    import yaml

    env = environ if environ is not None else os.environ
    path = Path(dagster_home) / "dagster.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    storage = config.get("storage") or {}
    if "postgres" in storage:
        pg = storage["postgres"] or {}
    elif "custom" in storage and (storage["custom"].get("module"), storage["custom"].get("class")) in STORAGE_CLASSES:
        pg = storage["custom"].get("config") or {}
    else:
        return None
    url = pg.get("postgres_url")
    if isinstance(url, dict) and set(url) == {"env"}:
        url = env.get(url["env"])
    if not isinstance(url, str) or not url:
        return None
    for driver in ("postgresql+psycopg2://", "postgresql+psycopg://", "postgres://"):
        if url.startswith(driver):
            url = "postgresql://" + url[len(driver):]
    return url if url.startswith("postgresql://") else None


def storage_reads(storage_url: str, shops: Iterable[str]) -> tuple[list[str], dict[str, LastRun]]:
    """The shop partitions, and the newest run of each shop (or partition), in one query each."""
    import psycopg

    from handyshop_migration.tenancy.dsn import ConnectionSpec
    from handyshop_migration.tenancy.secrets import Secret

    spec = ConnectionSpec.from_url(Secret(storage_url), name="DAGSTER_PG_URL")
    with spec.connect() as conn:
        try:
            partitions = [p for (p,) in conn.execute(
                "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s ORDER BY id", (SHOPS,)
            )]
            wanted = sorted(set(partitions) | set(shops))
            rows = conn.execute(
                "SELECT DISTINCT ON (partition) partition, status, pipeline_name, coalesce(end_time, start_time) "
                "FROM runs WHERE partition = ANY(%s) ORDER BY partition, id DESC",
                (wanted,),
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # a storage no Dagster process has used yet
            return [], {}
    return partitions, {p: LastRun(str(st), str(job), float(t) if t is not None else None) for p, st, job, t in rows}


def shop_status_from_storage(storage_url: str, lifecycle: Lifecycle | None) -> list[ShopStatus]:
    records = {r.shop_id: r for r in lifecycle.all()} if lifecycle is not None else {}
    partitions, runs = storage_reads(storage_url, (str(s) for s in records))
    return rows_for(partitions, records, runs)
