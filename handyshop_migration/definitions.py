"""The code location: `handyshop_migration.definitions:defs`.

Built from a catalog file (HANDYSHOP_CATALOG, else the packaged Handyshop catalog), so loading it needs no
database connection; resources resolve their environment variables only when a run starts.
"""


import os
import warnings

import dagster as dg

from handyshop_migration import settings
from handyshop_migration.pipeline import fleet, jobs, overview, phase0, phase1, phase2, phase3, phase4, phase5
from handyshop_migration.pipeline.resources import build_resources
from handyshop_migration.pipeline.sensors import build_new_shops_sensor, build_sync_sensor
from handyshop_migration.tenancy.engine.catalog import Catalog, load_catalog

# Partitioned asset checks are a preview feature in Dagster 1.13 (pinned exactly in pyproject.toml);
# the warning would be printed on every load.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def build_definitions(catalog: Catalog | None = None, environ: dict[str, str] | None = None) -> dg.Definitions:
    env = environ if environ is not None else dict(os.environ)
    catalog = catalog or load_catalog(env.get(settings.CATALOG) or None)
    p0 = phase0.build_phase0(catalog)
    p1_assets, p1_checks = phase1.build_phase1(catalog)
    p2 = phase2.build_phase2(catalog)
    later = [*phase3.build_phase3(catalog), *phase4.build_phase4(catalog), *phase5.build_phase5(catalog)]
    fleet_assets = fleet.build_fleet(catalog, env)
    fleet_jobs = fleet.build_fleet_jobs(catalog)
    phase12_keys = [k for a in (*p1_assets, *p2) for k in a.keys]
    interval = settings.sensor_interval_seconds(env)
    return dg.Definitions(
        assets=[*p0, *p1_assets, *p2, *later, *fleet_assets, overview.overview_spec],
        asset_checks=p1_checks,
        jobs=[
            jobs.prepare_source,
            jobs.migrate_shop,
            jobs.build_verify_shop(catalog),
            jobs.sync_shop,
            jobs.cutover_shop,
            jobs.retire_shop,
            *jobs.build_way_back_jobs(catalog, phase12_keys),
            *fleet_jobs,
        ],
        sensors=[
            build_new_shops_sensor(jobs.migrate_shop, interval, catalog),
            build_sync_sensor(jobs.sync_shop, interval),
            fleet.build_schema_sensor(fleet_jobs[2], catalog, env, interval),
            overview.build_overview_sensor(interval),
        ],
        resources=build_resources(env),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
