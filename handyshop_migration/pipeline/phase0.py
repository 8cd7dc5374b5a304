"""Phase 0, preparation: a verified backup of the shared database, its live catalog (checked against the
catalog these definitions were built from), and the validation findings as asset checks.

These assets are not partitioned. Later phases read their latest materializations as gates: a shop
named by an error finding, or a drifted catalog, is not provisioned (see `gates.py`).
"""


from collections.abc import Iterator

import dagster as dg

from handyshop_migration import settings
from handyshop_migration.pipeline.background import LAST, SourceBackupResource
from handyshop_migration.pipeline.resources import SourceDatabase
from handyshop_migration.pipeline.runner import init_source_pool
from handyshop_migration.tenancy.engine.catalog import Catalog
from handyshop_migration.tenancy.engine.introspection import introspect_like
from handyshop_migration.tenancy.engine.validation import validate_source

GROUP = "phase0_preparation"

# One check per kind of finding; the severity of the worst finding decides the result.
VALIDATION_CHECKS = {
    "shops_without_owner": "Shops whose owner user is missing: they migrate, but their app login is broken.",
    "users_without_shop": "Users without shop_id (superadmins excepted).",
    "null_shop_rows": "Tenant rows with shop_id NULL: no tenant receives them; they stay in the shared database.",
    "global_rows": "Rows under known global shop ids (0, 1682): global data, left in the shared database.",
    "orphan_shop_rows": "Rows under a shop id that has no shops row and is not global: nobody would receive them.",
    "cross_shop_references": "Rows whose foreign-key parent belongs to another shop: the copy would break them.",
    "missing_tables": "Tables the catalog expects but the source lacks.",
    "missing_columns": "Columns the catalog expects but the source lacks.",
    "extra_columns": "Source columns the catalog does not know: the copy would leave them behind.",
    "connection_budget": "max_connections against current use plus the tenant pools of the shops being migrated.",
    "schema_objects": "Objects of the source the tenant schema rewrites or leaves out (views over shared tables, "
    "functions naming the tenant column, event triggers, policies on the tenant column, ...).",
}


class ValidationConfig(dg.Config):
    """The connection budget's plan: the shops being migrated (default: every listed shop) and the
    connections each tenant pool holds in steady state."""

    shops: list[int] | None = None
    pool_size: int = 2

_SEVERITY = {"error": dg.AssetCheckSeverity.ERROR, "warning": dg.AssetCheckSeverity.WARN}


def build_phase0(catalog: Catalog) -> list[dg.AssetsDefinition]:
    # The dump starts with the run and overlaps the catalog and validation steps; this step runs last and
    # waits for it (pipeline/background.py).
    @dg.asset(group_name=GROUP, kinds={"postgres"}, op_tags=LAST,
              description="pg_dump of the shared database, verified with pg_restore --list.")
    def source_backup(context: dg.AssetExecutionContext, backup_runner: SourceBackupResource) -> dg.MaterializeResult:
        backup = backup_runner.result()
        context.log.info(f"backup {backup.path} ({backup.bytes} bytes) verified: {backup.restore_list_entries} entries")
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(str(backup.path)),
                "bytes": backup.bytes,
                "seconds": round(backup.seconds, 3),
                "pg_dump_version": backup.pg_dump_version,
                "restore_list_entries": backup.restore_list_entries,
                "tables_in_archive": len(backup.tables),
            }
        )

    @dg.asset(
        group_name=GROUP,
        kinds={"postgres"},
        description="The live catalog of the shared database's tenant tables.",
        check_specs=[
            dg.AssetCheckSpec(
                "catalog_drift",
                asset="source_catalog",
                blocking=True,
                description="The live catalog equals the catalog these definitions were built from.",
            )
        ],
    )
    def source_catalog(context: dg.AssetExecutionContext, source: SourceDatabase) -> Iterator[object]:
        live = introspect_like(source.spec(), catalog)
        changed = _catalog_diff(catalog, live)
        yield dg.MaterializeResult(
            metadata={
                "checksum": live.checksum,
                "expected_checksum": catalog.checksum,
                "tables": len(live.tables),
                "tenant_column": live.tenant_column,
            }
        )
        yield dg.AssetCheckResult(
            check_name="catalog_drift",
            passed=not changed,
            metadata={
                "live_checksum": live.checksum,
                "expected_checksum": catalog.checksum,
                "changed_tables": dg.MetadataValue.json(changed),
                "fix": "re-run `handyshop-migration inspect --source-url URL --output FILE` and point "
                f"{settings.CATALOG} at it, or add a tenant migration for the change",
            },
        )

    @dg.asset(
        group_name=GROUP,
        kinds={"postgres"},
        description="Phase 0 validation of the shared database: every finding with the offending ids.",
        check_specs=[
            dg.AssetCheckSpec(name, asset="source_validation", blocking=True, description=text)
            for name, text in VALIDATION_CHECKS.items()
        ],
    )
    def source_validation(
        context: dg.AssetExecutionContext, config: ValidationConfig, source: SourceDatabase
    ) -> Iterator[object]:
        report = validate_source(
            source.spec(), catalog, global_shop_ids=tuple(source.global_shop_ids),
            migrating=config.shops, pool_size=config.pool_size,
        )
        # The copy pool's limit row, created before any shop's run can race to create it (Dagster 1.13).
        init_source_pool(context.instance)
        blocked = sorted(report.blocked_shops())
        shop_scoped = {"cross_shop_references", "orphan_shop_rows"}
        blocks_all = any(f.check not in shop_scoped for f in report.errors)
        for f in report.findings:
            (context.log.error if f.severity == "error" else context.log.info)(f"[{f.severity}] {f.message}")
        yield dg.MaterializeResult(
            metadata={
                "errors": len(report.errors),
                "warnings": len(report.warnings),
                "blocked_shops": dg.MetadataValue.json(blocked),
                "blocks_all_shops": blocks_all,
                "findings": dg.MetadataValue.md(_findings_table(report.findings)),
                "shops": len(report.shop_row_counts),
            }
        )
        for name in VALIDATION_CHECKS:
            found = report.by_check(name)
            worst = next((s for s in ("error", "warning") if any(f.severity == s for f in found)), None)
            yield dg.AssetCheckResult(
                check_name=name,
                passed=worst is None,
                severity=_SEVERITY.get(worst or "error", dg.AssetCheckSeverity.ERROR),
                metadata={
                    "findings": len(found),
                    "details": dg.MetadataValue.json([f.to_dict() for f in found][:50]),
                    **({"first": found[0].message} if found else {}),
                },
            )

    return [source_backup, source_catalog, source_validation]


def _catalog_diff(expected: Catalog, live: Catalog) -> list[str]:
    """Names of tables that differ (added, removed or changed), for a check an operator can act on."""
    exp = {t.name: t for t in expected.tables}
    got = {t.name: t for t in live.tables}
    changed = [f"{n}: missing in the source" for n in sorted(set(exp) - set(got))]
    changed += [f"{n}: new in the source" for n in sorted(set(got) - set(exp))]
    changed += [f"{n}: definition changed" for n in sorted(set(exp) & set(got)) if exp[n] != got[n]]
    exp_objects = {o.key: o for o in expected.objects}
    got_objects = {o.key: o for o in live.objects}
    changed += [f"{k}: missing in the source" for k in sorted(set(exp_objects) - set(got_objects))]
    changed += [f"{k}: new in the source" for k in sorted(set(got_objects) - set(exp_objects))]
    changed += [f"{k}: definition changed" for k in sorted(set(exp_objects) & set(got_objects))
                if exp_objects[k] != got_objects[k]]
    if expected.membership != live.membership:
        changed += [f"membership of {t}: {expected.membership.get(t, 'absent')} -> {live.membership.get(t, 'absent')}"
                    for t in sorted(set(expected.membership) | set(live.membership))
                    if expected.membership.get(t) != live.membership.get(t)]
    if not changed and expected.checksum != live.checksum:
        changed.append("user-defined types, extensions or the tenants/users tables changed")
    return changed


def _findings_table(findings: object) -> str:
    rows = ["| severity | check | table | message |", "|---|---|---|---|"]
    for f in findings:  # type: ignore[attr-defined]
        rows.append(f"| {f.severity} | {f.check} | {f.table or ''} | {f.message.replace('|', '/')} |")
    return "\n".join(rows)
