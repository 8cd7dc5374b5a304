"""Phase 1, provisioning: one database and two roles per shop (partitioned by shop)."""

import dagster as dg

from handyshop_migration.pipeline.gates import phase0_refusal
from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.resources import MigrationResource
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.errors import HandyshopError

GROUP = "phase1_provisioning"
TENANT_DATABASE = dg.AssetKey("tenant_database")


def build_phase1(catalog: Catalog) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    @dg.asset(
        key=TENANT_DATABASE,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        deps=["source_validation", "source_catalog", "source_backup"],
        description="The shop's database and roles (the application's, and the owner the migration writes as), "
        "the tenant schema in place, credentials in the registry. Idempotent: a rerun resumes, never drops, and "
        "never takes over a database or role it did not create.",
    )
    def tenant_database(context: dg.AssetExecutionContext, migration: MigrationResource) -> dg.MaterializeResult:
        shop = shop_id(context)
        refusal = phase0_refusal(context.instance, catalog, shop)
        if refusal:
            raise dg.Failure(description=f"shop {shop} not provisioned: {refusal}")
        workflow = migration.workflow(catalog)
        try:
            result = workflow.provision(shop)
        except HandyshopError as exc:
            raise dg.Failure(description=f"shop {shop} not provisioned: {exc}") from None
        state = workflow.lifecycle.get(shop)
        if result is None:
            return dg.MaterializeResult(metadata={"state": state.state.value, "provisioned": "earlier"})
        return dg.MaterializeResult(
            metadata={
                "database": result.database,
                "role": result.role,
                "owner_role": result.owner,
                "schema_version": result.schema_version,
                "created_database": result.created_database,
                "created_role": result.created_role,
                "new_password": result.new_password,
                "seconds": round(result.seconds, 3),
                "state": state.state.value,
            }
        )

    @dg.asset_check(
        asset=tenant_database,
        name="tenant_access",
        blocking=True,
        partitions_def=shops_partitions,
        description="Both tenant roles log in with their registered passwords, hold nothing they must not (superuser, "
        "createdb, createrole, membership, anything outside their database), and nobody else (not PUBLIC, not "
        "other tenants) may connect to the shop's database.",
    )
    def tenant_access(context: dg.AssetCheckExecutionContext, migration: MigrationResource) -> dg.AssetCheckResult:
        report = migration.workflow(catalog).provisioner.verify_access(shop_id(context))
        return dg.AssetCheckResult(
            passed=report.ok,
            metadata={
                "login_ok": report.login_ok,
                "login_error": report.login_error,
                "role_attributes_ok": report.role_attributes_ok,
                "public_can_connect": report.public_can_connect,
                "others_with_connect": dg.MetadataValue.json(list(report.others_with_connect)),
                "problems": dg.MetadataValue.json(list(report.problems)),
                "tenant_roles_may_connect_to": dg.MetadataValue.json(list(report.connect_elsewhere)),
                "schema_version": report.schema_version,
            },
        )

    return [tenant_database], [tenant_access]
