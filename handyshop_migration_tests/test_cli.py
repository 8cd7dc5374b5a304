"""The `handyshop-migration` command as an operator runs it: a subprocess, its output and exit code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from handyshop_migration import settings
from handyshop_migration.devtools.seed import seed_database
from handyshop_migration.tenancy.application.encryption import generate_key
from handyshop_migration.tenancy.application.export import AppSecretCipher
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    migration_env,
    unique_namespace,
)

COMMAND = [sys.executable, "-m", "handyshop_migration.cli"]


def run(args: list[str], env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HANDYSHOP_", "TENANT_", "DAGSTER_"))}
    return subprocess.run(
        COMMAND + args, env={**base, **(env or {})}, capture_output=True, text=True, timeout=timeout, cwd="/"
    )


def test_demo_runs_every_phase_and_prints_the_verification_table(tmp_path: Path) -> None:
    result = run(["demo", "--shops", "5", "--scale", "0.05", "--data-dir", str(tmp_path / "demo")])
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(
        r"^shop\s+name\s+tables\s+rows\s+gates passed\s+gates failed\s+verified\s+state\s+writes during migration"
        r"\s+found where it lives\s+global rows received$", out, re.M,
    )
    total = re.search(r"^all\s+95\s+\d+\s+195\s+0\s+5/5\s+(\d+)\s+(\d+)/(\d+)\s+(\d+)$", out, re.M)
    assert total, out
    made, found, rows, received = map(int, total.groups())
    assert made >= 200 and found == rows > 0  # every row the application wrote is in a tenant, as it left it
    # each shop's own database holds the global device catalog (shop 1682) and the system templates (shop 0)
    assert received == 5 * (5 + 12 + 40 + 5)
    assert len(re.findall(r"email_templates 5, device_types 5, user_brands 12, user_models 40$", out, re.M)) == 5, out
    assert len(re.findall(r"^\d\s.*\s19\s+\d+\s+39\s+0\s+yes\s+retired\s", out, re.M)) == 5
    assert "errors: none" in out and "all gates passed." in out
    assert "Traceback" not in result.stderr


def test_demo_with_a_cross_shop_reference_fails_and_names_the_rows(tmp_path: Path) -> None:
    result = run(["demo", "--shops", "3", "--scale", "0.05", "--cross-shop-reference", "--through-phase", "2",
                  "--data-dir", str(tmp_path / "demo")])
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"repairs\.id=\d+ \(shop 2\) -> customers\.id=\d+ \(shop 1\)", result.stdout), result.stdout
    # the unaffected shop goes all the way; the two named shops stay on the shared database
    assert re.search(r"^3\s.*\s19\s+\d+\s+39\s+0\s+yes\s+verified\s+email_templates 5,", result.stdout, re.M), \
        result.stdout
    assert re.search(r"^1\s.*\s0\s+0\s+0\s+1\s+NO\s+registered\s+-$", result.stdout, re.M), result.stdout
    assert "some gates FAILED" in result.stdout


def test_missing_environment_is_one_clear_line() -> None:
    result = run(["migrate"])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert settings.SOURCE_URL in lines[0] and settings.ENCRYPTION_KEY in lines[0] and "openssl rand -hex 32" in lines[0]


def test_unreachable_server_is_one_clear_line_without_the_password(tmp_path: Path) -> None:
    env = {
        settings.SOURCE_URL: "postgresql://operator:s3cret-pw@127.0.0.1:1/handyshop",
        settings.ENCRYPTION_KEY: generate_key(),
        "DAGSTER_HOME": str(tmp_path),
    }
    result = run(["migrate"], env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "cannot connect to operator@127.0.0.1:1/handyshop" in result.stderr
    assert "s3cret-pw" not in result.stderr + result.stdout
    bad_key = run(["prepare"], {**env, settings.ENCRYPTION_KEY: "abc"})
    assert bad_key.returncode == 2 and "64 hex" in bad_key.stderr and "Traceback" not in bad_key.stderr


def test_every_command_explains_itself() -> None:
    for command in ("demo", "dev", "prepare", "migrate", "rollback", "status", "inspect", "seed", "add-shop", "export-app-registry"):
        result = run([command, "--help"])
        assert result.returncode == 0 and "usage: handyshop-migration" in result.stdout
        assert settings.SOURCE_URL in result.stdout  # the environment is documented on every command


def test_migrate_and_status_on_the_production_path(pg_server: ConnectionSpec, tmp_path: Path) -> None:
    source = create_database(pg_server, "t_cli_src")
    ns = unique_namespace()
    env = {**migration_env(source, tmp_path / "backups", ns), "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    try:
        seed_database(source, shops=3, scale=0.03)
        migrated = run(["migrate", "--shops", "1,3"], env)
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        assert "phase 0 passed" in migrated.stdout
        status = run(["status"], env)
        assert status.returncode == 0, status.stderr
        lines = {line.split()[0]: line for line in status.stdout.splitlines()[2:]}
        assert set(lines) == {"1", "3"}
        assert re.search(
            r"^1\s+2 verified\s+verified\s+reads shared, writes shared\s+default\s+0001_tenant_schema\s+\d+\s+"
            r"success migrate_shop",
            lines["1"],
        ), status.stdout
        # a rerun over shops that are done does nothing and says so: exit 0
        again = run(["migrate", "--shops", "1,3"], env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "2 of 2 shops are through phase 2 (2 were already)." in again.stdout
        assert "phase 0" not in again.stdout  # it passed last time: not run again
        unknown = run(["migrate", "--shops", "1,77"], env)
        assert unknown.returncode == 2 and "77" in unknown.stderr
        empty = run(["migrate", "--shops=,"], env)
        assert empty.returncode == 2 and "names no shop" in empty.stderr and len(empty.stderr.strip().splitlines()) == 1
        # the registry in the real app's own table and format, under the app's key
        no_key = run(["export-app-registry"], env)
        assert no_key.returncode == 2 and settings.APP_ENCRYPTION_KEY in no_key.stderr
        app_key = generate_key()
        exported = run(["export-app-registry"], {**env, settings.APP_ENCRYPTION_KEY: app_key})
        assert exported.returncode == 0 and "2 inserted" in exported.stdout, exported.stdout + exported.stderr
        assert app_key not in exported.stdout + exported.stderr
        with source.connect() as conn:
            stored = conn.execute("SELECT shop_id, username, encrypted_password, is_active FROM tenant_connections ORDER BY 1").fetchall()
        cipher = AppSecretCipher(Secret(app_key))
        assert [(s, u, a) for s, u, _, a in stored] == [(1, ns + "shop_user_1", True), (3, ns + "shop_user_3", True)]
        for shop, role, token, _ in stored:
            ConnectionSpec(source.host, source.port, role, Secret(cipher.decrypt(token)), ns + f"shop_{shop}_db").connect().close()
        # cut over: status shows the seconds the shop's writes waited, and the fleet's p50/p95
        cut = run(["migrate", "--shops", "1", "--through-phase", "4"], env)
        assert cut.returncode == 0, cut.stdout + cut.stderr
        status = run(["status"], env)
        live = next(line for line in status.stdout.splitlines() if line.split()[:1] == ["1"])
        assert re.search(r"4 live\s+live\s+reads tenant, writes tenant\s+default\s+0001_tenant_schema\s+\d+\s+\d+\.\d\ds\s", live), status.stdout
        assert re.search(r"^fence windows over 1 cutover: p50 (\d+\.\d\d)s, p95 \1s", status.stdout, re.M), status.stdout
    finally:
        drop_database(pg_server, source.dbname)
        drop_namespace(pg_server, ns)
