"""`new_shops_sensor`: shops that sign up while the migration runs become partitions and get a run.

"New" means: in the shared database's tenants table (the catalog's), not yet a partition. The cursor is the highest shop id
seen, so a tick is one index range scan (plus a small window below it for late commits). The run key
`shop-<id>` makes the daemon refuse to launch a shop twice. Until phase 0 has validated the source, the
sensor waits: a run would only be refused by phase 1's gate.

At most `MAX_NEW_SHOPS_PER_TICK` shops per tick, and no more than keep `MAX_QUEUED` runs of the job waiting
(the lowest ids first; the cursor stops after the last one taken, so the next ticks take the next ones):
creating a run writes its planned events, so a first tick over a thousand shops would hold the sensor for
minutes, and the daemon's run queue reads every queued run each second it looks, so a thousand queued runs
would cost it more than the runs it launches. 60 waiting runs are more than a minute of work at 50 shops a
minute: the queue never runs dry between two ticks of 30 s.
"""


import time

import dagster as dg

from handyshop_migration import settings
from handyshop_migration.pipeline.gates import VALIDATION
from handyshop_migration.pipeline.partitions import SHOPS, shops_partitions
from handyshop_migration.pipeline.resources import SourceDatabase
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import Catalog, load_catalog
from handyshop_migration.tenancy.engine.shops import list_shops
from handyshop_migration.tenancy.lifecycle import State

MAX_NEW_SHOPS_PER_TICK = 100
MAX_QUEUED = 60

def build_new_shops_sensor(
    job: dg.JobDefinition | object,
    minimum_interval_seconds: int = settings.DEFAULT_SENSOR_INTERVAL,
    catalog: Catalog | None = None,
) -> dg.SensorDefinition:
    tenants = (catalog or load_catalog()).require_tenants()

    @dg.sensor(
        name="new_shops_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a partition for every shop not yet known and launches its phases 1-2 (one run per shop).",
    )
    def new_shops_sensor(context: dg.SensorEvaluationContext, source: SourceDatabase) -> dg.SensorResult | dg.SkipReason:
        if not context.instance.fetch_materializations(VALIDATION, limit=1).records:
            return dg.SkipReason("waiting for phase 0: materialize source_validation (job prepare_source) first")
        cursor = int(context.cursor) if context.cursor else None
        with source.connect() as conn:
            shops = list_shops(conn, tenants, after=cursor, exclude=source.global_shop_ids)
        known = set(context.instance.get_dynamic_partitions(SHOPS))
        ordered = sorted(shops, key=lambda s: s.id)
        queued = context.instance.get_runs_count(
            dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED], job_name=getattr(job, "name", None))
        )
        room = max(0, min(MAX_NEW_SHOPS_PER_TICK, MAX_QUEUED - queued))
        waiting = [s for s in ordered if str(s.id) not in known]
        new_shops = waiting[:room]
        new = [str(s.id) for s in new_shops]
        if len(new_shops) < len(waiting):  # more wait: continue after the last one taken
            next_cursor = str(max(new_shops[-1].id, cursor or 0)) if new_shops else (context.cursor or "")
        else:
            next_cursor = str(max([s.id for s in shops] + [cursor or 0]))
        if not new:
            reason = f"{len(waiting)} new shops wait: {queued} runs queued already" if waiting else "no new shops"
            return dg.SensorResult(cursor=next_cursor or None, skip_reason=dg.SkipReason(reason))
        context.log.info(f"new shops: {', '.join(new)}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=k, run_key=f"shop-{k}", tags={"handyshop/shop": k}) for k in new],
            dynamic_partitions_requests=[shops_partitions.build_add_request(new)],
            cursor=next_cursor,
        )

    return new_shops_sensor


def build_sync_sensor(job: dg.JobDefinition | object, minimum_interval_seconds: int) -> dg.SensorDefinition:
    """Keeps captured shops in step until their cutover: a sync run for each verified shop with pending
    changes. Two queries per tick (the change log's counts per shop, and the shops' lifecycle states)."""

    @dg.sensor(
        name="shop_sync_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches tenant_sync for every verified, not yet cut over shop with pending captured changes.",
    )
    def shop_sync_sensor(context: dg.SensorEvaluationContext, source: SourceDatabase) -> dg.SensorResult | dg.SkipReason:
        with source.connect() as conn:
            pending = {shop: lag for shop, lag in capture.lags(conn).items() if lag.pending}
        if not pending:
            return dg.SkipReason("no captured shop has pending changes")
        syncable = {State.VERIFIED, State.SYNCING}
        ready = [r.shop_id for r in source.lifecycle().all(sorted(pending)) if r.state in syncable and r.captured]
        if not ready:
            return dg.SkipReason("no verified shop has pending changes")
        tick = int(time.time()) // max(minimum_interval_seconds, 1)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    partition_key=str(s),
                    run_key=f"sync-{s}-{tick}",
                    tags={"handyshop/shop": str(s), "handyshop/pending_changes": str(pending[s].pending)},
                )
                for s in ready
            ]
        )

    return shop_sync_sensor
