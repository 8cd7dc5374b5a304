"""Phase 0: a verified backup of the shared database before anything changes, and its restore.

The migration script pipes a plain `pg_dump $DATABASE_URL` into a file: the password sits on the command
line (visible in `ps`), a failed dump leaves a truncated file behind that looks like a backup, and nothing
checks that the file can be read back. Here:

- `pg_dump --format=custom` (compressed, restorable table by table) from a client whose major version is
  at least the server's (pg_dump refuses newer servers), found by `find_pg_dump`;
- the password reaches the client only through an in-memory passfile handed over by descriptor (see
  `pgtools.client_env`: nothing on disk, even after a SIGKILL); host, port, user and database go on the
  command line, errors are redacted; the client gets an allowlisted environment, never our secrets;
- the dump is written under a temporary name, created 0600 before pg_dump opens it (it holds plaintext
  SMTP passwords and 2FA secrets), and renamed only once the matching `pg_restore --list` reads it back
  and it holds the data of every table of the source. The temporary name carries the host and pid of the
  run writing it, so the next run removes what a killed one left (`clean_partial_dumps`).
"""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from handyshop_migration.tenancy.db import one_row
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine.pgtools import (
    ClientEnv,
    client_env,
    conninfo_without_password,
    find_clients,
    find_pg_dump,
    major_version,
    pick_client,
    pid_alive,
    run_client,
)
from handyshop_migration.tenancy.errors import BackupError, ConnectionFailed

__all__ = ["Backup", "backup_source", "clean_partial_dumps", "find_pg_dump", "restore_backup"]

PARTIAL_SUFFIX = ".partial"

@dataclass(frozen=True)
class Backup:
    path: Path
    bytes: int
    seconds: float
    server_version: int  # server_version_num of the source, e.g. 180001
    pg_dump_version: str  # `pg_dump --version` of the client used
    restore_list_entries: int  # entries `pg_restore --list` reads from the file
    tables: tuple[str, ...]  # tables with a TABLE DATA entry, sorted


def _server_version(spec: ConnectionSpec) -> int:
    try:
        with spec.connect() as conn:
            return int(one_row(conn, "SELECT current_setting('server_version_num')::int")[0])
    except ConnectionFailed as exc:
        raise BackupError(f"cannot read the server version of {spec.describe()}: {exc}") from None


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


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def _partial_name(final: Path) -> Path:
    """`.<final name>.<host>.<pid>.partial` beside the final file: whose it is, for `clean_partial_dumps`."""
    return final.with_name(f".{final.name}.{_host()}.{os.getpid()}{PARTIAL_SUFFIX}")


_PARTIAL = re.compile(r"^\.(.+\.dump)(?:\.([A-Za-z0-9_-]+)\.(\d+))?\.partial$")


def clean_partial_dumps(directory: Path) -> list[Path]:
    """Remove the half-written dumps of runs that were killed: partial files of this host whose process no
    longer runs, and those of earlier versions (no host and pid in the name). A partial file of a run still
    going, or of another host sharing the directory, is left alone. Returns what was removed."""
    removed: list[Path] = []
    for path in Path(directory).glob(f".*{PARTIAL_SUFFIX}"):
        match = _PARTIAL.match(path.name)
        if match is None:
            continue  # not a partial dump of ours
        host, pid = match.group(2), match.group(3)
        if host is not None and (host != _host() or pid_alive(int(pid))):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _list_archive(
    pg_restore: Path, path: Path, spec: ConnectionSpec, env: ClientEnv
) -> tuple[int, set[tuple[str, str]]]:
    """(entries, (schema, table) of every TABLE DATA entry) as `pg_restore --list` reads the archive."""
    listing = run_client([str(pg_restore), "--list", str(path)], env, spec, f"pg_restore --list of {path.name}").stdout
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
    clean_partial_dumps(directory)
    server_version = _server_version(source)
    client = pick_client(major_version(server_version), extra_dirs, f"the source {source.describe()} (server_version_num "
                   f"{server_version})")
    expected = _expected_tables(source)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    stem = f"{_safe(label)}_{_safe(source.dbname)}_{stamp}"
    final = directory / f"{stem}.dump"
    n = 1
    while final.exists():  # two backups in the same second: never overwrite one
        final = directory / f"{stem}_{n}.dump"
        n += 1
    partial = _partial_name(final)
    # Created 0600 before pg_dump opens it: the dump holds plaintext secrets of every shop.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))

    started = time.monotonic()
    try:
        with client_env(source) as env:
            run_client(
                [str(client.pg_dump), "--format=custom", "--no-password", f"--file={partial}",
                 f"--dbname={conninfo_without_password(source)}"],
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


def _dumped_by(path: Path, spec: ConnectionSpec, env: ClientEnv, extra_dirs: Sequence[Path]) -> int:
    """Major version of the pg_dump that wrote an archive, read with the newest pg_restore at hand."""
    clients, _ = find_clients(extra_dirs)
    if not clients:
        return 0  # pick_client reports what is missing
    newest = max(clients, key=lambda c: c.major)
    header = run_client([str(newest.pg_restore), "--list", str(path)], env, spec, f"pg_restore --list of {path.name}")
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
    server_major = major_version(_server_version(target))
    with client_env(target) as env:
        need = max(server_major, _dumped_by(backup_path, target, env, extra_dirs))
        client = pick_client(need, extra_dirs, f"restoring {backup_path.name} into {target.describe()}")
        args = [str(client.pg_restore), "--no-owner", "--no-password", "--exit-on-error", "--single-transaction",
                f"--dbname={conninfo_without_password(target)}"]
        if clean:
            args += ["--clean", "--if-exists"]
        run_client([*args, str(backup_path)], env, target, f"pg_restore of {backup_path.name} into {target.describe()}")
