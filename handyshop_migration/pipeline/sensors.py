"""`new_shops_sensor`: shops that sign up while the migration runs become partitions and get a run.

"New" means: in the shared database's `shops`, not yet a partition. The cursor is the highest shop id
seen, so a tick is one index range scan (plus a small window below it for late commits). The run key
`shop-<id>` makes the daemon refuse to launch a shop twice. Until phase 0 has validated the source, the
sensor waits: a run would only be refused by phase 1's gate.
"""


import dagster as dg

from handyshop_migration.pipeline.gates import VALIDATION
from handyshop_migration.pipeline.partitions import SHOPS, shops_partitions
from handyshop_migration.pipeline.resources import SourceDatabase
from handyshop_migration.tenancy.shops import list_shops


def build_new_shops_sensor(job: dg.JobDefinition | object) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_shops_sensor",
        job=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a partition for every shop not yet known and launches its phases 1-2 (one run per shop).",
    )
    def new_shops_sensor(context: dg.SensorEvaluationContext, source: SourceDatabase) -> dg.SensorResult | dg.SkipReason:
        if not context.instance.fetch_materializations(VALIDATION, limit=1).records:
            return dg.SkipReason("waiting for phase 0: materialize source_validation (job prepare_source) first")
        cursor = int(context.cursor) if context.cursor else None
        with source.connect() as conn:
            shops = list_shops(conn, after=cursor, exclude=source.global_shop_ids)
        known = set(context.instance.get_dynamic_partitions(SHOPS))
        new = [str(s.id) for s in shops if str(s.id) not in known]
        next_cursor = str(max([s.id for s in shops] + [cursor or 0]))
        if not new:
            return dg.SensorResult(cursor=next_cursor, skip_reason=dg.SkipReason("no new shops"))
        context.log.info(f"new shops: {', '.join(new)}")
        return dg.SensorResult(
            run_requests=[dg.RunRequest(partition_key=k, run_key=f"shop-{k}", tags={"handyshop/shop": k}) for k in new],
            dynamic_partitions_requests=[shops_partitions.build_add_request(new)],
            cursor=next_cursor,
        )

    return new_shops_sensor
