"""The code location: `handyshop_migration.definitions:defs`.

Built from a catalog file (HANDYSHOP_CATALOG, else the packaged Handyshop catalog), so loading it needs no
database connection; resources resolve their environment variables only when a run starts.
"""


import os
import warnings

import dagster as dg

from handyshop_migration import settings
from handyshop_migration.pipeline import jobs, phase0, phase1, phase2
from handyshop_migration.pipeline.resources import build_resources
from handyshop_migration.pipeline.sensors import build_new_shops_sensor
from handyshop_migration.tenancy.catalog import Catalog, load_catalog
from handyshop_migration.tenancy.tenant_schema import render

# Partitioned asset checks are a preview feature in Dagster 1.13 (pinned exactly in pyproject.toml);
# the warning would be printed on every load.
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def build_definitions(catalog: Catalog | None = None, environ: dict[str, str] | None = None) -> dg.Definitions:
    env = environ if environ is not None else dict(os.environ)
    catalog = catalog or load_catalog(env.get(settings.CATALOG) or None)
    schema = render(catalog)
    p0 = phase0.build_phase0(catalog)
    p1_assets, p1_checks = phase1.build_phase1(catalog)
    p2_assets, p2_checks = phase2.build_phase2(catalog, schema)
    rollback = jobs.build_rollback_shop(catalog, [a.key for a in (*p1_assets, *p2_assets)])
    return dg.Definitions(
        assets=[*p0, *p1_assets, *p2_assets],
        asset_checks=[*p1_checks, *p2_checks],
        jobs=[jobs.prepare_source, jobs.migrate_shop, jobs.build_verify_shop([*p1_checks, *p2_checks]), rollback],
        sensors=[build_new_shops_sensor(jobs.migrate_shop)],
        resources=build_resources(env),
        executor=dg.in_process_executor,
    )


defs = build_definitions()
