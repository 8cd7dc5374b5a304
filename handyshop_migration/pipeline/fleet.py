"""The fleet in Dagster (no SQL: one library call each, `tenancy.fleet`):

- `fleet_plan` (phase 0): every shop placed on paper by the policy, each server's connection budget; blocking
  checks `fleet_capacity` and `fleet_connection_budget` (phase 1 provisions nothing while they fail);
- `tenant_schema` (partitioned by shop): the shop's pending tenant migrations applied (the single-shop path:
  a retry of one shop alone, or a shop from the UI); its metadata holds the shop's schema version;
- `fleet_schema`: the fan-out — every provisioned shop to the newest migration, a few at a time per server,
  a failure stopping only its shop. Each shop's result is recorded as a materialization of its
  `tenant_schema` partition; its own metadata lists the versions and the **stale shops** (behind the newest,
  with why), and its check `shops_current` warns while there are any. Its code version is the newest
  migration, so a new file in the migrations directory shows it as changed in the UI;
  `schema_changes_sensor` (off by default) launches it when the migrations change;
- `registry_keys`: the key rotation (every entry under TENANT_ENCRYPTION_KEY, logins verified, resumable);
  its check `no_old_keys` passes once nothing is left under an old key id;
- jobs `move_shop` (config: `to`, or `back: true`; `abort: true` gives a move in progress up) and
  `drop_moved_copy` (config: `confirm: shop_N_db`), partitioned by shop.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from handyshop_migration import settings
from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.resources import MigrationResource, SourceDatabase, TenantServer
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.migrations import fingerprint, tenant_migrations
from handyshop_migration.tenancy.engine.shops import list_shops
from handyshop_migration.tenancy.errors import HandyshopError
from handyshop_migration.tenancy.fleet.budget import LiveServers
from handyshop_migration.tenancy.fleet.keys import rotate_registry
from handyshop_migration.tenancy.fleet.move import TenantMover
from handyshop_migration.tenancy.fleet.placement import Placement, ShopSizeEstimator
from handyshop_migration.tenancy.fleet.plan import plan_fleet
from handyshop_migration.tenancy.fleet.provisioner import like_pattern
from handyshop_migration.tenancy.fleet.schema_changes import SchemaChanges, ShopSchema

GROUP = "fleet"
PHASE0_GROUP = "phase0_preparation"
FLEET_PLAN = dg.AssetKey("fleet_plan")
TENANT_SCHEMA = dg.AssetKey("tenant_schema")
FLEET_SCHEMA = dg.AssetKey("fleet_schema")
REGISTRY_KEYS = dg.AssetKey("registry_keys")
PLAN_CHECKS = ("fleet_capacity", "fleet_connection_budget")


def newest_migrations(catalog: Catalog, environ: dict[str, str]) -> tuple[str, str]:
    """(newest migration name, fingerprint) of the migrations these definitions are built with."""
    directory = environ.get(settings.TENANT_MIGRATIONS, "")
    try:
        migrations = tenant_migrations(catalog, Path(directory) if directory else None)
    except HandyshopError:
        return "", ""  # a broken directory is reported where the migrations are used
    return migrations[-1].name, fingerprint(migrations)


def _schema_metadata(result: ShopSchema) -> dict[str, Any]:
    return {
        "schema_version": result.version,
        "applied": dg.MetadataValue.json(list(result.applied)),
        "server": result.server,
        "seconds": round(result.seconds, 3),
    }


def build_fleet(catalog: Catalog, environ: dict[str, str]) -> list[dg.AssetsDefinition]:
    newest, fp = newest_migrations(catalog, environ)

    @dg.asset(
        key=FLEET_PLAN,
        group_name=PHASE0_GROUP,
        kinds={"postgres"},
        description="Every shop of the shared database placed on paper by the placement policy (least filled by "
        "bytes within each server's caps, pins), and each tenant server's connection budget with the tenants it "
        "would hold. Read-only.",
        check_specs=[
            dg.AssetCheckSpec("fleet_capacity", asset=FLEET_PLAN, blocking=True,
                              description="Every shop has a server with room (databases, bytes, its pin)."),
            dg.AssetCheckSpec("fleet_connection_budget", asset=FLEET_PLAN, blocking=True,
                              description="No server's planned connections exceed what it can give."),
        ],
    )
    def fleet_plan(context: dg.AssetExecutionContext, source: SourceDatabase, tenant_server: TenantServer) -> Iterator[object]:
        fleet = tenant_server.fleet()
        live = LiveServers(fleet, like_pattern(tenant_server.naming().database), cache=True)
        try:
            with source.connect() as conn:
                shops = [s.id for s in list_shops(conn, catalog.require_tenants(), exclude=source.global_shop_ids)]
            estimates = ShopSizeEstimator(source.spec(), catalog).all_shops(shops)
            plan = plan_fleet(Placement(source.spec(), fleet, live), shops, estimates)
        except HandyshopError as exc:
            raise dg.Failure(description=f"the fleet could not be planned: {exc}") from None
        finally:
            live.close()
        for why in list(plan.unplaced.values())[:20]:
            context.log.error(why)
        balance = plan.balance()
        yield dg.MaterializeResult(
            metadata={
                "servers": dg.MetadataValue.md(plan.table()),
                "shops_planned": len(plan.placed),
                "unplaced_shops": dg.MetadataValue.json(sorted(plan.unplaced)),
                "over_budget": dg.MetadataValue.json([b.server for b in plan.over_budget]),
                "budgets": dg.MetadataValue.json([b.as_dict() for b in plan.budgets]),
                "balance_max_over_min_bytes": round(balance, 3) if balance else 0.0,
                "ok": plan.ok,
            }
        )
        capacity = plan.unplaced_by_capacity
        yield dg.AssetCheckResult(
            check_name="fleet_capacity", passed=not capacity,
            metadata={"shops_without_room": len(capacity), **({"first": next(iter(capacity.values()))} if capacity else {})},
        )
        budget_problems = [b.describe() for b in plan.over_budget] + list(plan.unplaced_by_budget.values())
        yield dg.AssetCheckResult(
            check_name="fleet_connection_budget", passed=plan.budget_ok,
            metadata={
                "problems": len(budget_problems),
                **({"first": f"server {plan.over_budget[0].server}: {budget_problems[0]}" if plan.over_budget
                    else budget_problems[0]} if budget_problems else {}),
            },
        )

    @dg.asset(
        key=TENANT_SCHEMA,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        code_version=newest or None,
        description="The shop's tenant migrations: pending ones applied as its owner role (checksums of applied "
        "files verified, one transaction under the tenant's advisory lock), unless its lifecycle or the capture "
        "contract refuses them. Metadata: its schema version.",
    )
    def tenant_schema(context: dg.AssetExecutionContext, migration: MigrationResource) -> dg.MaterializeResult:
        shop = shop_id(context)
        workflow = migration.workflow(catalog)
        result = SchemaChanges(workflow, per_server=migration.schema_per_server()).run_one(shop)
        if not result.ok:
            raise dg.Failure(description=f"shop {shop}: {result.error}", metadata={"schema_version": result.version})
        return dg.MaterializeResult(metadata=_schema_metadata(result))

    @dg.asset(
        key=FLEET_SCHEMA,
        group_name=GROUP,
        kinds={"postgres"},
        code_version=fp[:16] or None,
        description="Every provisioned shop to the newest tenant migration (a few at a time per server, a failure "
        "stopping only its shop); each shop's result is its tenant_schema partition. Metadata: the versions and the "
        "stale shops.",
        check_specs=[dg.AssetCheckSpec("shops_current", asset=FLEET_SCHEMA, blocking=False,
                                       description="No provisioned shop is behind the newest tenant migration.")],
    )
    def fleet_schema(context: dg.AssetExecutionContext, migration: MigrationResource) -> Iterator[object]:
        workflow = migration.workflow(catalog)
        changes = SchemaChanges(workflow, per_server=migration.schema_per_server())
        report = changes.fan_out()
        known = set(context.instance.get_dynamic_partitions(shops_partitions.name))
        missing = sorted({str(r.shop_id) for r in report.results} - known)
        if missing:
            context.instance.add_dynamic_partitions(shops_partitions.name, missing)
        for r in report.results:
            if r.ok:
                context.log_event(
                    dg.AssetMaterialization(asset_key=TENANT_SCHEMA, partition=str(r.shop_id), metadata=_schema_metadata(r))
                )
            else:
                context.log.error(f"shop {r.shop_id}: {r.error}")
        stale = changes.stale()
        yield dg.MaterializeResult(
            metadata={
                "newest": report.newest,
                "fingerprint": fp,
                "shops": len(report.results),
                "applied_now": report.applied,
                "versions": dg.MetadataValue.json(report.versions()),
                "stale_shops": dg.MetadataValue.json([r.shop_id for r in stale]),
                "stale": dg.MetadataValue.md(_stale_table(stale)),
                "failed": dg.MetadataValue.json({str(r.shop_id): r.error for r in report.failed}),
                "not_provisioned": len(report.not_provisioned),
                "seconds": round(report.seconds, 2),
            }
        )
        yield dg.AssetCheckResult(
            check_name="shops_current", passed=not stale, severity=dg.AssetCheckSeverity.WARN,
            metadata={"stale": len(stale), **({"first": f"shop {stale[0].shop_id}: "
                      f"{stale[0].details.get('schema_error') or stale[0].details.get('schema_version')}"} if stale else {})},
        )

    @dg.asset(
        key=REGISTRY_KEYS,
        group_name=GROUP,
        kinds={"postgres"},
        description="Key rotation: every registry entry re-encrypted under TENANT_ENCRYPTION_KEY (old keys from "
        "TENANT_ENCRYPTION_OLD_KEYS), each only once it decrypts and both its roles log in; batches commit on their "
        "own, so a rerun resumes. Metadata: entries left under each old key id.",
        check_specs=[dg.AssetCheckSpec("no_old_keys", asset=REGISTRY_KEYS, blocking=False,
                                       description="No entry is under an old key id: the old key can be removed.")],
    )
    def registry_keys(context: dg.AssetExecutionContext, config: RotationConfig, migration: MigrationResource) -> Iterator[object]:
        registry = migration.registry()
        registry.ensure_schema()
        report = rotate_registry(registry, batch=config.batch)
        for shop, why in sorted(report.left.items())[:50]:
            context.log.warning(f"shop {shop} stays under its old key: {why}")
        yield dg.MaterializeResult(
            metadata={
                "active_key_id": report.active_key_id,
                "rotated": report.rotated,
                "batches": report.batches,
                "remaining": dg.MetadataValue.json(report.remaining),
                "left": dg.MetadataValue.json({str(s): w for s, w in report.left.items()}),
                "seconds": round(report.seconds, 2),
            }
        )
        yield dg.AssetCheckResult(
            check_name="no_old_keys", passed=report.done, severity=dg.AssetCheckSeverity.WARN,
            metadata={"remaining": dg.MetadataValue.json(report.remaining), "summary": report.summary()},
        )

    return [fleet_plan, tenant_schema, fleet_schema, registry_keys]


class RotationConfig(dg.Config):
    batch: int = Field(default=100, ge=1, description="Entries re-encrypted per transaction.")


class MoveConfig(dg.Config):
    to: str = Field(default="", description="The server to move the shop's tenant database to.")
    back: bool = Field(default=False, description="Move it back to the old copy its last move left (the way back).")
    abort: bool = Field(default=False, description="Give up the move in progress (the origin takes writes again).")


class DropCopyConfig(dg.Config):
    confirm: str = Field(default="", description="Type the shop's tenant database name (e.g. shop_5_db) to confirm.")


def _stale_table(stale: list[Any]) -> str:
    rows = ["| shop | server | version | why |", "|---|---|---|---|"]
    for r in stale[:200]:
        why = str(r.details.get("schema_error") or "not run yet").replace("|", "/")
        rows.append(f"| {r.shop_id} | {r.details.get('server', '')} | {r.details.get('schema_version', '')} | {why[:160]} |")
    return "\n".join(rows)


def build_fleet_jobs(catalog: Catalog) -> list[Any]:
    @dg.op(name="move_shop_op", description="Move (or move back, or abort the move of) the shop's tenant database.")
    def move_op(context: dg.OpExecutionContext, config: MoveConfig, migration: MigrationResource) -> None:
        shop = shop_id(context)
        mover = TenantMover(migration.workflow(catalog))
        try:
            if config.abort:
                record = mover.abort(shop, reason=f"move aborted (run {context.run.run_id})")
                context.log.info(f"shop {shop}: move aborted, {record.state.value} where it was")
                return
            if config.back:
                report = mover.move_back(shop, reason=f"the way back of the move (run {context.run.run_id})")
            elif config.to:
                report = mover.move(shop, config.to, reason=f"move to {config.to} (run {context.run.run_id})")
            else:
                raise dg.Failure(description="say where to: config `to: SERVER`, or `back: true`, or `abort: true`.")
        except HandyshopError as exc:
            raise dg.Failure(description=f"shop {shop} not moved: {exc}") from None
        for _, text in report.steps:
            context.log.info(text)
        context.log_event(
            dg.AssetObservation(
                asset_key=TENANT_SCHEMA, partition=context.partition_key,
                metadata={"server": report.target, "moved_from": report.origin,
                          "writes_paused_seconds": round(report.fenced_seconds, 3),
                          "tables_verified": sum(1 for v in report.verification if v.ok)},
            )
        )

    @dg.op(name="drop_moved_copy_op", description="Drop the copy a finished move left on the old server.")
    def drop_op(context: dg.OpExecutionContext, config: DropCopyConfig, migration: MigrationResource) -> None:
        shop = shop_id(context)
        try:
            done = TenantMover(migration.workflow(catalog)).drop_old_copy(shop, confirm=config.confirm)
        except HandyshopError as exc:
            raise dg.Failure(description=f"shop {shop}: {exc}") from None
        context.log.info(f"shop {shop}: {done}")

    @dg.job(name="move_shop", partitions_def=shops_partitions, executor_def=dg.in_process_executor,
            description="Move a live or retired shop's tenant database to another server under writes (copy, capture, "
            "fence, drain, verify, flip), or back (config back: true).")
    def move_shop() -> None:
        move_op()

    @dg.job(name="drop_moved_copy", partitions_def=shops_partitions, executor_def=dg.in_process_executor,
            description="Drop the old copy a finished move left (its way back); needs the database name as confirmation.")
    def drop_moved_copy() -> None:
        drop_op()

    schema_fanout = dg.define_asset_job(
        "schema_fanout", selection=dg.AssetSelection.assets(FLEET_SCHEMA), executor_def=dg.in_process_executor,
        description="Every provisioned shop to the newest tenant migration (fleet_schema).",
    )
    migrate_tenant_schema = dg.define_asset_job(
        "migrate_tenant_schema", selection=dg.AssetSelection.assets(TENANT_SCHEMA), executor_def=dg.in_process_executor,
        description="One shop's pending tenant migrations (a retry alone; partitioned like tenant_schema).",
    )
    rotate_keys = dg.define_asset_job(
        "rotate_registry_keys", selection=dg.AssetSelection.assets(REGISTRY_KEYS), executor_def=dg.in_process_executor,
        description="Re-encrypt the registry under TENANT_ENCRYPTION_KEY (registry_keys).",
    )
    return [move_shop, drop_moved_copy, schema_fanout, migrate_tenant_schema, rotate_keys]


def build_schema_sensor(job: Any, catalog: Catalog, environ: dict[str, str], interval: int) -> dg.SensorDefinition:
    """Launches the fan-out once per set of tenant migrations (run key: their fingerprint). Off by default: a new
    migration reaching every live shop is the operator's decision to switch on."""
    _, fp = newest_migrations(catalog, environ)

    @dg.sensor(name="schema_changes_sensor", job=job, minimum_interval_seconds=interval,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description="Launches schema_fanout when the tenant migrations differ from the last fan-out's.")
    def schema_changes_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        if not fp:
            return dg.SkipReason("the tenant migrations directory cannot be read; see the code location's errors")
        latest = context.instance.fetch_materializations(FLEET_SCHEMA, limit=1).records
        done = latest[0].asset_materialization.metadata.get("fingerprint") if latest and latest[0].asset_materialization else None
        if done is not None and done.value == fp:
            return dg.SkipReason("every shop has been taken to these migrations already")
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"schema-{fp[:16]}", tags={"handyshop/migrations": fp[:16]})])

    return schema_changes_sensor


__all__ = ["FLEET_PLAN", "FLEET_SCHEMA", "PLAN_CHECKS", "REGISTRY_KEYS", "TENANT_SCHEMA", "build_fleet",
           "build_fleet_jobs", "build_schema_sensor"]
