"""Phase 1, provisioning: one database and one role per shop (partitioned by shop)."""


import dagster as dg

from handyshop_migration.pipeline.gates import phase0_refusal
from handyshop_migration.pipeline.partitions import shop_id, shops_partitions
from handyshop_migration.pipeline.resources import TenantServer
from handyshop_migration.tenancy.engine.catalog import Catalog

GROUP = "phase1_provisioning"
TENANT_DATABASE = dg.AssetKey("tenant_database")


def build_phase1(catalog: Catalog) -> tuple[list[dg.AssetsDefinition], list[dg.AssetChecksDefinition]]:
    @dg.asset(
        key=TENANT_DATABASE,
        partitions_def=shops_partitions,
        group_name=GROUP,
        kinds={"postgres"},
        deps=["source_validation", "source_catalog"],
        description="The shop's database and role, the tenant schema in place, credentials in the registry. "
        "Idempotent: a rerun resumes, never drops.",
    )
    def tenant_database(context: dg.AssetExecutionContext, tenant_server: TenantServer) -> dg.MaterializeResult:
        shop = shop_id(context)
        refusal = phase0_refusal(context.instance, catalog, shop)
        if refusal:
            raise dg.Failure(description=f"shop {shop} not provisioned: {refusal}")
        result = tenant_server.provisioner(catalog).provision(shop)
        return dg.MaterializeResult(
            metadata={
                "database": result.database,
                "role": result.role,
                "schema_version": result.schema_version,
                "created_database": result.created_database,
                "created_role": result.created_role,
                "new_password": result.new_password,
                "seconds": round(result.seconds, 3),
            }
        )

    @dg.asset_check(
        asset=tenant_database,
        name="tenant_access",
        blocking=True,
        partitions_def=shops_partitions,
        description="The tenant role logs in with its registered password, has no dangerous attributes, "
        "and nobody else (not PUBLIC, not other tenants) may connect to its database.",
    )
    def tenant_access(context: dg.AssetCheckExecutionContext, tenant_server: TenantServer) -> dg.AssetCheckResult:
        report = tenant_server.provisioner(catalog).verify_access(shop_id(context))
        return dg.AssetCheckResult(
            passed=report.ok,
            metadata={
                "login_ok": report.login_ok,
                "login_error": report.login_error,
                "role_attributes_ok": report.role_attributes_ok,
                "public_can_connect": report.public_can_connect,
                "others_with_connect": dg.MetadataValue.json(list(report.others_with_connect)),
                "schema_version": report.schema_version,
            },
        )

    return [tenant_database], [tenant_access]
