"""Running the deployment of docker-compose.yml without Docker, for test_deploy.py and test_ui.py.

These machines have no Docker engine, so the tests run each Dagster service's *own* command from
docker-compose.yml (code server, webserver, daemon) as a process on 127.0.0.1, with exactly the environment
variables compose gives that service (values pointing at the test's PostgreSQL), the same dagster.yaml
and the same workspace file. Only the listen address and port are replaced (0.0.0.0 and fixed ports in
the containers; loopback and free ports here).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from psycopg import sql

from handyshop_migration import settings
from handyshop_migration.devtools.local import ensure_storage, storage_url
from handyshop_migration.devtools.seed import seed_database
from handyshop_migration.tenancy.application.encryption import generate_key
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    unique_namespace,
)

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DAGSTER_YAML = REPO / "dagster.yaml"
ARTIFACTS = REPO / "test-artifacts"
DAGSTER_SERVICES = ("user-code", "dagster-webserver", "dagster-daemon")
CODE_SERVER, WEBSERVER, DAEMON = DAGSTER_SERVICES
# Where the image keeps its instance (Dockerfile ENV DAGSTER_HOME); compose mounts dagster.yaml there.
CONTAINER_DAGSTER_HOME = "/opt/dagster/dagster_home"
# What a process needs from this machine besides the compose environment (a container has its own PATH,
# HOME and locale); everything else of the test's environment is withheld from the services.
LOCAL_ONLY = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")

T = TypeVar("T")


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.5,
             diagnose: Callable[[], str] | None = None) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` (and `diagnose()`) on timeout."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        try:
            value = probe()
        except Exception as exc:  # a service still starting answers with errors: keep polling
            value, last_error = None, f"{type(exc).__name__}: {exc}"
        if value:
            return value
        time.sleep(interval)
    detail = diagnose() if diagnose else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}. {last_error}\n{detail}")


# -- the deployment's data: shared database, Dagster storage, DAGSTER_HOME ---------------------------------


@dataclass
class Deployment:
    """What docker-compose's PostgreSQL services hold, made on the test session's server: a seeded shared
    database, Dagster's storage database with its own login role, and a DAGSTER_HOME with dagster.yaml."""

    admin: ConnectionSpec
    source: ConnectionSpec
    storage: ConnectionSpec
    namespace: str
    home: Path
    shop_ids: list[int]
    encryption_key: str = field(repr=False)
    sensor_interval: int = 2

    @property
    def values(self) -> dict[str, str]:
        """Local values of the variables docker-compose.yml gives the services (they hold secrets)."""
        return {
            "DAGSTER_HOME": str(self.home),
            "DAGSTER_PG_URL": storage_url(self.storage),
            settings.SOURCE_URL: self.source.url().reveal(),
            settings.ADMIN_URL: "",
            settings.ENCRYPTION_KEY: self.encryption_key,
            settings.OLD_ENCRYPTION_KEYS: "",
            settings.SENSOR_INTERVAL: str(self.sensor_interval),
            settings.CAPTURE: "on",
            settings.BACKUP_DIR: str(self.home.parent / "backups"),
            settings.ARCHIVE_DIR: str(self.home.parent / "archives"),
        }

    @property
    def test_overrides(self) -> dict[str, str]:
        """Not in docker-compose.yml: this test's tenant names, unique on the shared session server."""
        return {
            settings.TENANT_DATABASE: self.namespace + "shop_{id}_db",
            settings.TENANT_ROLE: self.namespace + "shop_user_{id}",
        }

    @property
    def environment(self) -> dict[str, str]:
        """Everything a run needs, for in-process work in the test (phase 0)."""
        return {**self.values, **self.test_overrides}

    @property
    def secrets(self) -> list[str]:
        assert self.source.password is not None and self.storage.password is not None
        return [self.encryption_key, self.source.password.reveal(), self.storage.password.reveal()]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[secret]")
        return text


def prepare_deployment(admin: ConnectionSpec, root: Path, *, shops: int = 3, scale: float = 0.03,
                       seed: int = 7, sensor_interval: int = 2) -> Deployment:
    suffix = uuid.uuid4().hex[:8]
    source = create_database(admin, "t_deploy_src")
    report = seed_database(source, shops=shops, scale=scale, seed=seed)
    # Dagster's storage as LocalStack (and docker-compose's dagster-storage service) has it: its own
    # database and login role, with names unique to this test on the shared session server.
    storage = ensure_storage(admin, secrets.token_urlsafe(32), database=f"t_dagster_{suffix}",
                             role=f"t_dagster_storage_{suffix}")
    home = root / "dagster_home"
    home.mkdir(parents=True)
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    (root / "backups").mkdir()
    (root / "archives").mkdir()
    return Deployment(admin, source, storage, unique_namespace(), home, list(report.shop_ids), generate_key(),
                      sensor_interval)


def drop_deployment(dep: Deployment) -> None:
    drop_namespace(dep.admin, dep.namespace)
    drop_database(dep.admin, dep.source.dbname)
    drop_database(dep.admin, dep.storage.dbname)
    with dep.admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(dep.storage.user)))


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `values` set, restored afterwards (DagsterInstance.get() and EnvVar read it)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- a compose service as a local process ------------------------------------------------------------------


def local_command(service: Mapping[str, Any], port: int | None = None) -> list[str]:
    """The service's compose command, listening on 127.0.0.1:`port` instead of 0.0.0.0:<fixed port>.

    The executable comes from this virtualenv (the image installs the same package the same way); every
    other argument is the compose file's, including the workspace path relative to the working directory
    (the image's /opt/dagster/app is the repository here)."""
    command = [str(a) for a in service["command"]]
    out = list(command)
    for i, arg in enumerate(command[:-1]):
        if arg in ("-h", "--host"):
            assert command[i + 1] == "0.0.0.0", f"{command}: containers listen on 0.0.0.0"
            out[i + 1] = "127.0.0.1"
        elif arg in ("-p", "--port") and port is not None:
            out[i + 1] = str(port)
    local = Path(sys.executable).parent / out[0]
    if local.exists():
        out[0] = str(local)
    return out


def service_env(service: Mapping[str, Any], values: Mapping[str, str], extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment compose gives `service`, each variable with its local value (a variable without
    one fails: it would be missing in the test, so the test would not prove the compose file)."""
    wanted = service.get("environment") or {}
    missing = [k for k in wanted if k not in values]
    assert not missing, f"docker-compose.yml sets {missing} but the test gives no local value for them"
    base = {k: v for k, v in os.environ.items() if k in LOCAL_ONLY}
    return {**base, **{k: values[k] for k in wanted}, **extra}


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the whole process group (the code server's child server and its runs included),
        SIGKILL if it is still there after a grace period."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            except ProcessLookupError:
                return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # stragglers in the group, if any
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=15)


def start(name: str, command: Sequence[str], env: Mapping[str, str], log_dir: Path) -> Process:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("wb") as out:
        # A session of its own, so teardown can end the service's whole process group and nothing else.
        popen = subprocess.Popen(list(command), env=dict(env), cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
    return Process(name, popen, log)


# -- GraphQL ------------------------------------------------------------------------------------------------


def graphql(url: str, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise AssertionError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


LOCATION_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message }
          ... on RepositoryLocation {
            repositories {
              name
              jobs { name }
              sensors { name sensorState { status } }
              assetNodes { assetKey { path } }
            }
          }
        }
      }
    }
  }
}
"""

DAEMON_QUERY = """
query {
  instance {
    daemonHealth {
      allDaemonStatuses { daemonType required healthy lastHeartbeatTime }
    }
  }
}
"""

RUN_QUERY = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { runId status tags { key value } }
  }
}
"""


RUN_ERRORS_QUERY = """
query($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey error { message } }
        ... on RunFailureEvent { message }
        ... on EngineEvent { message error { message } }
        ... on AssetCheckEvaluationEvent { evaluation { checkName success } }
      }
    }
  }
}
"""


def run_errors(url: str, run_id: str) -> str:
    """What went wrong in a run, from its event log (for assertion messages; redact before showing)."""
    events = graphql(url, RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"].get("events", [])
    lines = []
    for e in events:
        if e["__typename"] == "ExecutionStepFailureEvent":
            lines.append(f"step {e['stepKey']} failed: {(e.get('error') or {}).get('message', '').strip()}")
        elif e["__typename"] == "RunFailureEvent":
            lines.append(f"run failed: {e.get('message')}")
        elif e["__typename"] == "EngineEvent" and e.get("error"):
            lines.append(f"engine: {e.get('message')}: {e['error'].get('message', '').strip()}")
        elif e["__typename"] == "AssetCheckEvaluationEvent" and not e["evaluation"]["success"]:
            lines.append(f"check {e['evaluation']['checkName']} failed")
    return "\n".join(lines)


def loaded_location(url: str) -> dict[str, Any] | None:
    """The handyshop_migration location once the webserver has loaded it from the code server."""
    entries = graphql(url, LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    for entry in entries:
        if entry["name"] == "handyshop_migration" and entry["loadStatus"] == "LOADED":
            location = entry["locationOrLoadError"]
            if location["__typename"] != "RepositoryLocation":
                raise AssertionError(f"code location failed to load: {location.get('message')}")
            return location
    return None


def healthy_daemons(url: str) -> dict[str, bool] | None:
    """Required daemons and whether each has a recent heartbeat; None until every one is healthy."""
    statuses = graphql(url, DAEMON_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
    required = {s["daemonType"]: bool(s["healthy"]) for s in statuses if s["required"]}
    return required if required and all(required.values()) else None


def run_status(url: str, run_id: str) -> str:
    result = graphql(url, RUN_QUERY, {"runId": run_id})["runOrError"]
    return str(result.get("status", result["__typename"]))


def wait_run(url: str, run_id: str, timeout: float = 120, diagnose: Callable[[], str] | None = None) -> str:
    """Wait for a run to finish; returns its final status."""
    finished = ("SUCCESS", "FAILURE", "CANCELED")
    return wait_for(f"run {run_id} to finish", lambda: (s := run_status(url, run_id)) in finished and s,
                    timeout, interval=1, diagnose=diagnose)


# -- the three Dagster services ------------------------------------------------------------------------------


@dataclass
class Services:
    deployment: Deployment
    processes: dict[str, Process]
    code_port: int
    web_port: int
    commands: dict[str, list[str]]
    envs: dict[str, dict[str, str]] = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def logs(self) -> str:
        """The last lines of every service's output, secrets redacted (for assertion messages)."""
        parts = [f"--- {p.name} (exit {p.popen.poll()}) ---\n{p.tail()}" for p in self.processes.values()]
        return self.deployment.redact("\n".join(parts))

    def alive(self) -> None:
        dead = [p.name for p in self.processes.values() if p.popen.poll() is not None]
        assert not dead, f"services exited: {dead}\n{self.logs()}"

    def stop(self) -> None:
        # The webserver and the daemon first: they hold connections to the code server.
        for name in (DAEMON, WEBSERVER, CODE_SERVER):
            if name in self.processes:
                self.processes[name].stop()


@contextmanager
def running_services(dep: Deployment, log_dir: Path, compose: Mapping[str, Any] | None = None) -> Iterator[Services]:
    """The code server, webserver and daemon of docker-compose.yml, started in compose's order (the
    code server healthy first), each ready before this yields; always stopped afterwards."""
    compose = compose or load_compose()
    services = compose["services"]
    code_port, web_port = free_port(), free_port()
    values = {**dep.values, "DAGSTER_CODE_SERVER_HOST": "127.0.0.1", "DAGSTER_CODE_SERVER_PORT": str(code_port)}
    commands = {
        CODE_SERVER: local_command(services[CODE_SERVER], code_port),
        WEBSERVER: local_command(services[WEBSERVER], web_port),
        DAEMON: local_command(services[DAEMON]),
    }
    envs = {name: service_env(services[name], values, dep.test_overrides if name == CODE_SERVER else {})
            for name in DAGSTER_SERVICES}
    running = Services(dep, {}, code_port, web_port, commands, envs)
    try:
        running.processes[CODE_SERVER] = start(CODE_SERVER, commands[CODE_SERVER], envs[CODE_SERVER], log_dir)
        wait_for("the code server's gRPC health check", lambda: healthcheck(running, CODE_SERVER) == 0 or
                 running.alive(), 90, interval=0.5, diagnose=running.logs)
        for name in (WEBSERVER, DAEMON):
            running.processes[name] = start(name, commands[name], envs[name], log_dir)
        wait_for("the webserver to load the code location", lambda: running.alive() or loaded_location(running.url),
                 120, diagnose=running.logs)
        wait_for("every required daemon to report a healthy heartbeat",
                 lambda: running.alive() or healthy_daemons(running.url), 120, diagnose=running.logs)
        yield running
    finally:
        running.stop()


def healthcheck(running: Services, name: str, timeout: float = 60) -> int:
    """Run the compose healthcheck of service `name` against the local process; returns its exit code."""
    test = [str(a) for a in load_compose()["services"][name]["healthcheck"]["test"]]
    assert test[0] == "CMD", test
    command = test[1:]
    port = {CODE_SERVER: running.code_port, WEBSERVER: running.web_port}.get(name)
    # The container's fixed port, as written in the check, is this process's free port.
    fixed = {CODE_SERVER: "4000", WEBSERVER: "3000"}.get(name)
    if port is not None and fixed is not None:
        command = [a if a != fixed else str(port) for a in command]
        command = [a.replace(f"127.0.0.1:{fixed}", f"127.0.0.1:{port}") for a in command]
    local = Path(sys.executable).parent / command[0]
    if local.exists():
        command[0] = str(local)
    result = subprocess.run(command, env=running.envs[name], cwd=REPO, capture_output=True, timeout=timeout)
    return result.returncode


def storage_rows(dep: Deployment, query: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Rows from Dagster's own storage database (what the UI reads)."""
    with dep.storage.connect() as conn:
        return conn.execute(query, tuple(params)).fetchall()  # type: ignore[arg-type]


__all__ = [
    "ARTIFACTS", "COMPOSE_FILE", "CODE_SERVER", "CONTAINER_DAGSTER_HOME", "DAEMON", "DAGSTER_SERVICES",
    "DAGSTER_YAML", "Deployment", "REPO", "Services", "WEBSERVER", "drop_deployment", "environment", "free_port",
    "graphql", "healthcheck", "load_compose", "loaded_location", "local_command", "prepare_deployment",
    "running_services", "service_env", "storage_rows", "wait_for", "wait_run",
]
