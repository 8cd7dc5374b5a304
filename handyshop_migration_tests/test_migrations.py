"""The tenant migration runner records name and checksum, refuses changed applied files, serialises
concurrent runners, and applies all pending migrations in one transaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.catalog import introspect
from handyshop_migration.tenancy.engine.migrations import (
    INITIAL,
    applied_migrations,
    apply_migrations,
    tenant_migrations,
)
from handyshop_migration.tenancy.errors import MigrationError
from handyshop_migration_tests.support.databases import run_concurrently
from handyshop_migration_tests.support.schemas import exotic


@pytest.fixture
def catalog(fresh_db: ConnectionSpec):  # type: ignore[no-untyped-def]
    with fresh_db.connect() as conn:
        exotic.create(conn)
    return introspect(fresh_db, tenant_column="tenant_id")


def _target(pg_server: ConnectionSpec, request: pytest.FixtureRequest) -> ConnectionSpec:
    from handyshop_migration_tests.support.databases import create_database, drop_database

    spec = create_database(pg_server, "t_mig")
    request.addfinalizer(lambda: drop_database(pg_server, spec.dbname))
    return spec


def test_apply_record_and_rerun(catalog, pg_server: ConnectionSpec, tmp_path: Path, request) -> None:  # type: ignore[no-untyped-def]
    target = _target(pg_server, request)
    (tmp_path / "0002_add_note.sql").write_text("ALTER TABLE kids ADD COLUMN remark text;")
    migrations = tenant_migrations(catalog, tmp_path)
    with target.connect() as conn:
        report = apply_migrations(conn, migrations)
        assert report.applied == (INITIAL, "0002_add_note") and report.version == "0002_add_note"
        recorded = applied_migrations(conn)
        assert recorded == {m.name: m.checksum for m in migrations}
        assert conn.execute("SELECT count(*) FROM kids WHERE remark IS NULL").fetchone() == (0,)
        conn.commit()
        again = apply_migrations(conn, migrations)
        assert again.applied == () and again.already == (INITIAL, "0002_add_note")


def test_changed_or_missing_applied_migration_is_refused(catalog, pg_server, tmp_path: Path, request) -> None:  # type: ignore[no-untyped-def]
    target = _target(pg_server, request)
    (tmp_path / "0002_add_note.sql").write_text("ALTER TABLE kids ADD COLUMN remark text;")
    with target.connect() as conn:
        apply_migrations(conn, tenant_migrations(catalog, tmp_path))
        (tmp_path / "0002_add_note.sql").write_text("ALTER TABLE kids ADD COLUMN remark varchar(10);")
        with pytest.raises(MigrationError, match="0002_add_note was applied with checksum .* must never be edited"):
            apply_migrations(conn, tenant_migrations(catalog, tmp_path))
        with pytest.raises(MigrationError, match="has migration 0002_add_note applied, but it is not among"):
            apply_migrations(conn, tenant_migrations(catalog))
        # schema drift: the catalog the tenant was built from is not the one given now
        drifted = tenant_migrations(catalog)[0].sql.replace("\"note\" text", "\"note\" varchar(5)")
        from handyshop_migration.tenancy.engine.migrations import Migration

        with pytest.raises(MigrationError, match="source catalog changed .*schema drift"):
            apply_migrations(conn, [Migration(INITIAL, drifted)])


def test_failed_migration_applies_nothing(catalog, pg_server, tmp_path: Path, request) -> None:  # type: ignore[no-untyped-def]
    target = _target(pg_server, request)
    (tmp_path / "0002_ok.sql").write_text("CREATE TABLE extra (id int);")
    (tmp_path / "0003_broken.sql").write_text("ALTER TABLE no_such_table ADD COLUMN x int;")
    with target.connect() as conn:
        with pytest.raises(MigrationError, match="0003_broken failed: .*no_such_table.* nothing of this run was applied"):
            apply_migrations(conn, tenant_migrations(catalog, tmp_path))
        assert applied_migrations(conn) == {}
        assert conn.execute("SELECT to_regclass('extra')").fetchone() == (None,)


def test_concurrent_runners_apply_once(catalog, pg_server, request) -> None:  # type: ignore[no-untyped-def]
    target = _target(pg_server, request)
    migrations = tenant_migrations(catalog)
    reports = []

    def run(_: int) -> None:
        with target.connect() as conn:
            reports.append(apply_migrations(conn, migrations))

    run_concurrently(run, 3)
    assert sorted(len(r.applied) for r in reports) == [0, 0, 1]
