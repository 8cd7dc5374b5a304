"""The deployment files, proven without a Docker engine: docker-compose.yml parsed (services, ports,
healthchecks, environment, volumes, one image and one dagster.yaml), the Dockerfile and the env files
checked, and each Dagster service's own compose command run against a real PostgreSQL."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from handyshop_migration import settings
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.pgtools import pg_bin_dir
from handyshop_migration_tests.setup_machine import CHROMIUM, SETUP_COMMAND
from handyshop_migration_tests.support.dagster_services import (
    CODE_SERVER,
    CONTAINER_DAGSTER_HOME,
    DAEMON,
    DAGSTER_SERVICES,
    DAGSTER_YAML,
    REPO,
    WEBSERVER,
    Deployment,
    drop_deployment,
    healthcheck,
    load_compose,
    loaded_location,
    prepare_deployment,
    running_services,
    storage_rows,
)

POSTGRES_SERVICES = ("handyshop-db", "dagster-storage")
SETUP_SCRIPT = REPO / "handyshop_migration_tests" / "setup_machine.py"
WORKSPACE = "deploy/workspace.docker.yaml"
MOUNTED_DAGSTER_YAML = f"./dagster.yaml:{CONTAINER_DAGSTER_HOME}/dagster.yaml:ro"
SECRET_VARIABLES = ("HANDYSHOP_DB_PASSWORD", "DAGSTER_STORAGE_PASSWORD", settings.ENCRYPTION_KEY)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


def _env_example() -> dict[str, str]:
    values = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_compose_has_the_five_services_with_healthchecks_and_startup_order(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*POSTGRES_SERVICES, *DAGSTER_SERVICES}
    for name in POSTGRES_SERVICES:
        svc = services[name]
        assert svc["image"].startswith("postgres:16"), name
        test = svc["healthcheck"]["test"]
        assert test[:2] == ["CMD", "pg_isready"] and "-d" in test, name
        assert any(v.endswith(":/var/lib/postgresql/data") for v in svc["volumes"]), f"{name} keeps its data in a volume"
        assert "ports" not in svc, f"{name} is reachable only from the other containers"
    # The bundled source database is optional (a profile), so the stack can point at production instead;
    # nothing waits for it (the code location loads without a database).
    assert services["handyshop-db"]["profiles"] == ["bundled-db"]
    assert "profiles" not in services["dagster-storage"]
    for name in DAGSTER_SERVICES:
        svc = services[name]
        assert svc["depends_on"]["dagster-storage"] == {"condition": "service_healthy"}, name
        assert "handyshop-db" not in svc.get("depends_on", {}), name
        assert svc["healthcheck"]["test"][0] == "CMD", name
        assert svc["restart"] == "unless-stopped", name
    for name in (WEBSERVER, DAEMON):
        assert services[name]["depends_on"][CODE_SERVER] == {"condition": "service_healthy"}, name
    # The UI (no login of its own) is published on loopback by default; nothing else is published.
    assert services[WEBSERVER]["ports"] == ["${DAGSTER_WEBSERVER_BIND:-127.0.0.1:3000}:3000"]
    assert _env_example()["DAGSTER_WEBSERVER_BIND"].startswith("127.0.0.1:")
    assert [n for n, s in services.items() if "ports" in s] == [WEBSERVER]
    assert services[CODE_SERVER]["expose"] == ["4000"]
    assert set(compose["volumes"]) == {"handyshop-db-data", "dagster-storage-data", "backups", "archives", "compute-logs"}
    # what runs write (they execute in the code server's container) lands in volumes, not in the image
    code_env = services[CODE_SERVER]["environment"]
    assert f"backups:{code_env[settings.BACKUP_DIR]}" in services[CODE_SERVER]["volumes"]
    assert f"archives:{code_env[settings.ARCHIVE_DIR]}" in services[CODE_SERVER]["volumes"]


def test_every_dagster_service_runs_the_one_image_with_the_one_dagster_yaml(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {services[n]["image"] for n in DAGSTER_SERVICES} == {"handyshop-migration:latest"}
    assert all(services[n]["build"] == {"context": "."} for n in DAGSTER_SERVICES)
    for name in DAGSTER_SERVICES:
        svc = services[name]
        assert MOUNTED_DAGSTER_YAML in svc["volumes"], name
        # runs' stdout/stderr, written in user-code, shown by the webserver
        assert f"compute-logs:{CONTAINER_DAGSTER_HOME}/storage" in svc["volumes"], name
        assert svc["environment"]["DAGSTER_HOME"] == CONTAINER_DAGSTER_HOME, name
        assert svc["working_dir"] == "/opt/dagster/app", name
        url = svc["environment"]["DAGSTER_PG_URL"]
        # the psycopg2 trap (see dagster.yaml): a bare postgresql:// breaks event writes under SQLAlchemy 2.1
        assert url.startswith("postgresql+psycopg2://dagster_storage:${DAGSTER_STORAGE_PASSWORD"), name
        assert url.endswith("@dagster-storage:5432/dagster"), name
    # The webserver and the daemon load the code server through the same workspace file.
    for name in (WEBSERVER, DAEMON):
        command = services[name]["command"]
        assert command[command.index("-w") + 1] == WORKSPACE, name
        env = services[name]["environment"]
        assert (env["DAGSTER_CODE_SERVER_HOST"], env["DAGSTER_CODE_SERVER_PORT"]) == (CODE_SERVER, "4000")
    workspace = yaml.safe_load((REPO / WORKSPACE).read_text())["load_from"][0]["grpc_server"]
    assert workspace == {"host": {"env": "DAGSTER_CODE_SERVER_HOST"}, "port": {"env": "DAGSTER_CODE_SERVER_PORT"},
                         "location_name": "handyshop_migration"}
    code = services[CODE_SERVER]["command"]
    # Dagster's code server with forked run processes (pipeline/code_server.py passes the rest to `dagster api grpc`)
    assert code[:3] == ["python", "-m", "handyshop_migration.pipeline.code_server"]
    assert code[code.index("-m", 3) + 1] == "handyshop_migration.definitions"
    assert code[code.index("-p") + 1] == "4000" and code[code.index("--location-name") + 1] == "handyshop_migration"


def test_dagster_yaml_is_the_packaged_copy_and_keeps_storage_on_postgres() -> None:
    packaged = REPO / "handyshop_migration" / "deploy" / "dagster.yaml"
    assert DAGSTER_YAML.read_bytes() == packaged.read_bytes(), (
        "dagster.yaml and handyshop_migration/deploy/dagster.yaml must stay identical (dev/demo use the packaged one)"
    )
    config = yaml.safe_load(DAGSTER_YAML.read_text())
    # dagster-postgres's storage with pooled connections in every process (pipeline/storage.py), on the same URL
    assert config["storage"] == {"custom": {"module": "handyshop_migration.pipeline.storage",
                                            "class": "PooledPostgresStorage",
                                            "config": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    runs = config["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] >= 1
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in runs[
        "tag_concurrency_limits"
    ]
    assert config["concurrency"]["pools"]["default_limit"] >= 1
    # no newsletter dialog over the operators' UI (the browser test would be blocked by it, too)
    assert config["nux"] == {"enabled": False} and config["telemetry"] == {"enabled": False}


def test_secrets_come_only_from_the_uncommitted_env_file(compose: dict[str, Any]) -> None:
    text = (REPO / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = _env_example()
    # every variable compose reads is documented in .env.example (and nothing there is unused)
    assert referenced <= set(example), sorted(referenced - set(example))
    assert set(example) - referenced == {"COMPOSE_PROFILES"}
    assert example["COMPOSE_PROFILES"] == "bundled-db"
    for name in SECRET_VARIABLES:
        # required (compose refuses to start without them), and no real value in the example
        assert re.search(r"\$\{" + name + r":\?", text), name
        assert example[name] in ("",) or example[name].startswith("change-me"), name
    # the bundled database's URL in the example uses the example's password, as the comment says
    assert f":{example['HANDYSHOP_DB_PASSWORD']}@handyshop-db:5432/handyshop" in example[settings.SOURCE_URL]
    # the tenant key and the source's credentials reach only the code server, where sensors and runs execute
    services = compose["services"]
    for name in (WEBSERVER, DAEMON):
        assert not {settings.ENCRYPTION_KEY, settings.SOURCE_URL} & set(services[name]["environment"]), name
    assert {settings.ENCRYPTION_KEY, settings.SOURCE_URL, settings.ADMIN_URL} <= set(services[CODE_SERVER]["environment"])
    # `.env` is never committed nor sent to a Docker build
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO).returncode
    assert ignored == 0, ".env must be git-ignored"
    assert subprocess.run(["git", "check-ignore", "-q", ".env.example"], cwd=REPO).returncode == 1
    dockerignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ".env" in dockerignore and ".git" in dockerignore and ".venv" in dockerignore


def test_dockerfile_installs_the_package_and_the_instance_where_compose_expects_them() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert f"DAGSTER_HOME={CONTAINER_DAGSTER_HOME}" in text
    assert re.search(r"^WORKDIR /opt/dagster/app$", text, re.M)
    assert f"COPY dagster.yaml {CONTAINER_DAGSTER_HOME}/dagster.yaml" in text
    assert f"COPY {WORKSPACE} {WORKSPACE}" in text
    assert re.search(r"^USER dagster$", text, re.M), "the services must not run as root"
    for match in re.finditer(r"^COPY (\S+)", text, re.M):
        assert (REPO / match.group(1)).exists(), f"Dockerfile copies {match.group(1)}, which is not in the repository"


def test_ci_runs_the_readmes_test_command_which_sets_the_machine_up_before_pytest() -> None:
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert lines[-1] == commands[1], "the last line of .ci/run is the README's second command, verbatim"
    assert lines == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', commands[1]], "a tiny wrapper, nothing else"
    assert commands[1].split(" && ") == [
        "python3 -m venv .venv", ".venv/bin/pip install -e '.[test]'", SETUP_COMMAND, ".venv/bin/python -m pytest"
    ]


def test_setup_machine_would_install_chromium_and_node_where_they_are_missing(tmp_path: Path) -> None:
    bare = tmp_path / "bin"  # a PATH holding a Python and nothing else: no node, no npm
    bare.mkdir()
    (bare / "python3").symlink_to(sys.executable)
    done = subprocess.run(
        [sys.executable, str(SETUP_SCRIPT), "--dry-run", "--chromium", str(tmp_path / "no-chromium")],
        env={"PATH": str(bare)}, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "setup: would install Debian's chromium nodejs npm" in done.stdout.splitlines()


def test_setup_machine_says_in_one_line_what_to_do_where_it_cannot_install(tmp_path: Path) -> None:
    bare = tmp_path / "bin"  # no apt-get on this PATH
    bare.mkdir()
    done = subprocess.run(
        [sys.executable, str(SETUP_SCRIPT), "--chromium", str(tmp_path / "no-chromium")],
        env={"PATH": str(bare)}, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"setup: missing chromium, nodejs, npm, and no apt-get here to install them: install them by hand, then run "
        f"{SETUP_COMMAND} again"
    ]


def test_setup_machine_installs_nothing_on_a_machine_that_has_everything() -> None:
    # After the README's command ran setup_machine, a clean environment finds everything and runs no installer.
    env = {"PATH": "/usr/bin:/bin"}
    plan = subprocess.run([sys.executable, str(SETUP_SCRIPT), "--dry-run"], env=env, capture_output=True, text=True, timeout=60)
    assert plan.stdout.splitlines() == ["setup: nothing to install"], plan.stdout + plan.stderr
    done = subprocess.run([sys.executable, str(SETUP_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "installing" not in done.stdout, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == f"setup: chromium: {CHROMIUM}"


# -- the services' own commands against a real PostgreSQL ------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(pg_server: ConnectionSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    dep = prepare_deployment(pg_server, tmp_path_factory.mktemp("deploy"), shops=1)
    try:
        yield dep
    finally:
        drop_deployment(dep)


@pytest.mark.slow
def test_each_dagster_service_command_runs_against_postgres(
    deployment: Deployment, compose: dict[str, Any], tmp_path: Path
) -> None:
    # The PostgreSQL services' healthchecks, with this server's address (pg_isready of the same major line).
    for name in POSTGRES_SERVICES:
        test = compose["services"][name]["healthcheck"]["test"][1:]
        local = [str(pg_bin_dir(18) / "pg_isready"), "-h", deployment.admin.host, "-p", str(deployment.admin.port),
                 *test[test.index("-U"):]]
        assert subprocess.run(local, capture_output=True).returncode == 0, name

    with running_services(deployment, tmp_path / "logs", compose) as services:
        # the commands are compose's, only the address changed
        for name, command in services.commands.items():
            expected = [str(a) for a in compose["services"][name]["command"]]
            assert Path(command[0]).name == expected[0] and len(command) == len(expected), name
            differing = [(e, c) for e, c in zip(expected[1:], command[1:], strict=True) if e != c]
            assert all(e in ("0.0.0.0", "4000", "3000") for e, _ in differing), differing
        # every compose healthcheck passes against its process
        for name in DAGSTER_SERVICES:
            assert healthcheck(services, name) == 0, f"{name} healthcheck failed\n{services.logs()}"
        # the webserver shows the code server's definitions, the sensor on by default
        location = loaded_location(services.url)
        assert location is not None
        repo = location["repositories"][0]
        assert {"prepare_source", "migrate_shop", "verify_shop", "rollback_shop"} <= {j["name"] for j in repo["jobs"]}
        assert {"tenant/customers", "shop_verified", "source_validation"} <= {
            "/".join(a["assetKey"]["path"]) for a in repo["assetNodes"]
        }
        sensors = {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}
        assert sensors["new_shops_sensor"] == "RUNNING", sensors  # on by default: the daemon evaluates it
        # Dagster's storage is the Postgres database (schema made by dagster-postgres, daemon heartbeats in it)
        tables = {r[0] for r in storage_rows(deployment, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"runs", "event_logs", "asset_check_executions", "daemon_heartbeats", "instigators"} <= tables
        beats = {r[0] for r in storage_rows(deployment, "SELECT daemon_type FROM daemon_heartbeats")}
        assert {"SENSOR", "QUEUED_RUN_COORDINATOR", "BACKFILL"} <= beats
        services.alive()
        logs = services.logs()
    for secret in deployment.secrets:
        assert secret not in "".join(p.log.read_text(errors="replace") for p in services.processes.values())
    assert "Traceback" not in logs, logs
