"""Every failure of the command is one line naming the problem (and the fix), with a non-zero exit and no
traceback; an unforeseen one leaves its trace in a log file the line names, or shows it with --debug."""

from __future__ import annotations

import re
from pathlib import Path

from handyshop_migration import settings
from handyshop_migration.tenancy.application.encryption import generate_key
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration_tests.support.schemas import exotic
from handyshop_migration_tests.test_cli import run


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_missing_tenants_table_is_one_line(fresh_db: ConnectionSpec, tmp_path: Path) -> None:
    with fresh_db.connect() as conn:
        exotic.create(conn)
    result = run(["inspect", "--source-url", fresh_db.url().reveal(), "--output", str(tmp_path / "c.json"),
                  "--tenant-column", "tenant_id", "--tenants-table", "mandanten"])
    assert result.returncode != 0
    line = _one_line(result.stderr)
    assert "tenants table public.mandanten does not exist" in line and "--tenants-table" in line
    assert not (tmp_path / "c.json").exists()
    # and without any way to find it: no FK on the column, no table named after it
    with fresh_db.connect() as conn:
        conn.execute("CREATE TABLE orphans (org_ref int, x text)")
    result = run(["inspect", "--source-url", fresh_db.url().reveal(), "--output", str(tmp_path / "c.json"),
                  "--tenant-column", "org_ref"])
    assert result.returncode != 0 and "which table lists the tenants?" in _one_line(result.stderr)


def test_an_unreachable_server_is_one_line_without_the_password(tmp_path: Path) -> None:
    result = run(["inspect", "--source-url", "postgresql://app:geheim-123@127.0.0.1:1/shared",
                  "--output", str(tmp_path / "c.json")])
    assert result.returncode != 0
    line = _one_line(result.stderr)
    assert "cannot connect to" in line and "geheim-123" not in line


def test_a_malformed_catalog_file_is_one_line(fresh_db: ConnectionSpec, tmp_path: Path) -> None:
    bad = tmp_path / "catalog.json"
    env = {settings.SOURCE_URL: fresh_db.url().reveal(), settings.ENCRYPTION_KEY: generate_key(),
           settings.CATALOG: str(bad), "DAGSTER_HOME": str(tmp_path)}
    for text, expected in (("{not json", "not a valid catalog"), ('{"format": 1}', "catalog format 1 is not supported"),
                           ('{"format": 2, "tables": [], "tenant_column": 5}', "not a valid catalog")):
        bad.write_text(text)
        result = run(["prepare"], env)
        assert result.returncode != 0
        line = _one_line(result.stderr)
        assert expected in line and str(bad) in line, line


def test_an_unforeseen_failure_is_one_line_and_its_trace_goes_to_a_log_file(
    fresh_db: ConnectionSpec, tmp_path: Path
) -> None:
    with fresh_db.connect() as conn:
        exotic.create(conn)
    args = ["inspect", "--source-url", fresh_db.url().reveal(), "--output", str(tmp_path / "no" / "such" / "c.json"),
            "--tenant-column", "tenant_id"]
    result = run(args, {"HANDYSHOP_LOG_DIR": str(tmp_path / "logs")})
    assert result.returncode != 0
    line = _one_line(result.stderr)
    assert "FileNotFoundError" in line
    match = re.search(r"full trace in (\S+) ", line)
    assert match, line
    trace = Path(match.group(1)).read_text()
    assert "Traceback" in trace and fresh_db.password.reveal() not in trace  # type: ignore[union-attr]
    debug = run(["--debug", *args])
    assert debug.returncode != 0 and "Traceback" in debug.stderr
