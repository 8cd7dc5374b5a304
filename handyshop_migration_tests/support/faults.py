"""Faults from outside, as on an operator's worst day: `handyshop-migration` started as a process group of
its own and killed with SIGKILL at a chosen point, then run again.

A point is chosen by the statement the step runs, as `pg_stat_activity` shows it. Most steps are too quick
to catch by looking, so the test first holds a lock the step's statement needs (a row the sync must
update, the shop's lifecycle row the cutover's flip must lock, `pg_database` for `CREATE DATABASE`, an
open older transaction the fence waits out): the step then waits exactly there, visibly, and the kill
lands at a known place. Nothing of the tool is changed or mocked; the locks are what any other session of
a busy server could hold.

A killed client's backend goes on until it next talks to the client: a statement it waits in finishes
once the lock is released (and an autocommit statement commits — as in real life), then the backend
notices the client is gone. `Killed.settle()` waits for that before the test looks at what was left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import psycopg
from psycopg import sql

from handyshop_migration import settings
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.workflow import Workflow

COMMAND = [sys.executable, "-m", "handyshop_migration.cli"]
TEST_APPLICATION = "handyshop-fault-test"  # our own sessions, told apart from the command's in pg_stat_activity

# The Dagster instance of a site: the run storage in DAGSTER_HOME (sqlite), the copy pool as deployed.
DAGSTER_YAML = """\
concurrency:
  pools:
    default_limit: 2
telemetry:
  enabled: false
nux:
  enabled: false
"""


def own(spec: ConnectionSpec) -> ConnectionSpec:
    """`spec` under the tests' application name (never mistaken for a session of the command)."""
    return replace(spec, application_name=TEST_APPLICATION)


def clean_environment() -> dict[str, str]:
    """This process's environment without anything that configures a migration."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("HANDYSHOP_", "TENANT_", "DAGSTER_", "PG"))}


@dataclass
class Finished:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"$ handyshop-migration {' '.join(self.args)} (exit {self.returncode})\n{self.stdout}\n{self.stderr}"


@dataclass
class Running:
    """A command running in a process group of its own (so SIGKILL reaches pg_dump and every child too)."""

    args: tuple[str, ...]
    proc: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> Finished:
        """SIGKILL to the whole process group, as `kill -9 -PGID` would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)
        return self.finished()

    def wait(self, timeout: float = 600) -> Finished:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.describe()} did not finish in {timeout:.0f}s:\n{self.finished().output}") from None
        return self.finished()

    def finished(self) -> Finished:
        return Finished(
            self.args, self.proc.returncode if self.proc.returncode is not None else -1,
            self.out.read_text(errors="replace"), self.err.read_text(errors="replace"),
        )

    def describe(self) -> str:
        return f"handyshop-migration {' '.join(self.args)}"


@dataclass
class Site:
    """One migration as an operator runs it: the servers, the environment, the Dagster home."""

    admin: ConnectionSpec  # superuser on the maintenance database
    source: ConnectionSpec
    env: dict[str, str]
    home: Path  # DAGSTER_HOME
    tmp: Path  # the command's TMPDIR: a passfile written to disk would show here
    logs: Path

    @classmethod
    def create(cls, admin: ConnectionSpec, source: ConnectionSpec, env: dict[str, str], root: Path) -> Site:
        home, tmp, logs = root / "dagster_home", root / "tmp", root / "logs"
        for d in (home, tmp, logs):
            d.mkdir(parents=True, exist_ok=True)
        (home / "dagster.yaml").write_text(DAGSTER_YAML)
        env = {**env, "DAGSTER_HOME": str(home), "TMPDIR": str(tmp)}
        return cls(admin, source, env, home, tmp, logs)

    def with_home(self, root: Path) -> Site:
        """The same servers and names with a Dagster home, TMPDIR and backup directory of its own."""
        env = {k: v for k, v in self.env.items() if k not in ("DAGSTER_HOME", "TMPDIR")}
        return Site.create(self.admin, self.source, {**env, settings.BACKUP_DIR: str(root / "backups")}, root)

    @property
    def backups(self) -> Path:
        return Path(self.env[settings.BACKUP_DIR])

    @property
    def archives(self) -> Path:
        return Path(self.env[settings.ARCHIVE_DIR])

    def database(self, shop: int) -> str:
        return self.env[settings.TENANT_DATABASE].format(id=shop)

    def start(self, *args: str, env: dict[str, str] | None = None) -> Running:
        n = len(list(self.logs.iterdir()))
        out, err = self.logs / f"{n:03d}.out", self.logs / f"{n:03d}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                COMMAND + list(args), env={**clean_environment(), **self.env, **(env or {})}, stdout=o, stderr=e,
                cwd="/", start_new_session=True,
            )
        return Running(tuple(args), proc, out, err)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> Finished:
        return self.start(*args, env=env).wait(timeout)


# -- choosing the point --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    pid: int
    database: str
    query: str
    wait_event_type: str | None


def wait_for_statement(
    admin: ConnectionSpec,
    running: Running,
    *,
    like: str,
    database: str | None = None,
    waiting: bool = False,
    timeout: float = 180.0,
) -> Backend:
    """The command's backend running a statement `ILIKE like` (in `database`; waiting on a lock if
    `waiting`), as soon as pg_stat_activity shows it. Fails if the command ends first."""
    query = (
        "SELECT pid, datname, query, wait_event_type FROM pg_stat_activity WHERE state = 'active' "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
        "AND application_name IS DISTINCT FROM %(mine)s AND query ILIKE %(like)s "
        "AND (%(db)s::text IS NULL OR datname = %(db)s) AND (NOT %(waiting)s OR wait_event_type = 'Lock') LIMIT 1"
    )
    found: list[Backend] = []
    with own(admin).connect(autocommit=True) as conn:

        def seen() -> bool:
            row = conn.execute(query, {"mine": TEST_APPLICATION, "like": like, "db": database, "waiting": waiting}).fetchone()
            if row is not None:
                found.append(Backend(int(row[0]), str(row[1]), str(row[2]), row[3]))
            return row is not None

        wait_until(running, f"it ran {like!r}", seen, timeout=timeout, interval=0.005)
    return found[0]


def wait_gone(admin: ConnectionSpec, pids: list[int], timeout: float = 60.0) -> None:
    """Until none of `pids` is a backend any more (a killed client's backend ends once it notices)."""
    deadline = time.monotonic() + timeout
    with own(admin).connect(autocommit=True) as conn:
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)).fetchone() != (0,):
            if time.monotonic() > deadline:
                raise AssertionError(f"backends {pids} of the killed command are still there after {timeout:.0f}s")
            time.sleep(0.02)


def open_transactions(admin: ConnectionSpec) -> list[int]:
    """Backends, not the tests' own, inside a transaction (the killed command's; an application writing in
    autocommit is never one)."""
    with own(admin).connect(autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
            "AND application_name IS DISTINCT FROM %s AND state LIKE 'idle in transaction%%'",
            (TEST_APPLICATION,),
        ).fetchall()
    return [int(r[0]) for r in rows]


class Hold:
    """A lock held by a session of the test until `release()`: where the command's step will wait."""

    def __init__(self, spec: ConnectionSpec, statements: list[sql.Composable | str], params: list[tuple[object, ...]]) -> None:
        self.conn = own(spec).connect()
        for statement, values in zip(statements, params, strict=True):
            self.conn.execute(statement, values or None)  # type: ignore[arg-type]
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.conn.rollback()
            self.conn.close()
            self.released = True


@contextmanager
def holding(spec: ConnectionSpec, *statements: sql.Composable | str, params: tuple[object, ...] = ()) -> Iterator[Hold]:
    """Run `statements` in one open transaction of a session of the test, kept open until the block ends
    (or `release()`); `params` go to the first statement."""
    hold = Hold(spec, list(statements), [params] + [()] * (len(statements) - 1))
    try:
        yield hold
    finally:
        hold.release()


def kill_at(
    site: Site, running: Running, hold: Hold, *, like: str, database: str | None = None, waiting: bool = True
) -> tuple[Finished, Backend]:
    """Wait until the command's statement `like` waits on `hold`, SIGKILL the command, release the lock, and
    wait until the killed command's backends are gone. Returns the killed command's output and the backend."""
    backend = wait_for_statement(site.admin, running, like=like, database=database, waiting=waiting)
    killed = running.kill()
    assert killed.returncode == -signal.SIGKILL, killed.output
    hold.release()
    wait_gone(site.admin, [backend.pid, *open_transactions(site.admin)])
    return killed, backend


def no_traceback(result: Finished) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.output


def fetch(spec: ConnectionSpec, query: str | sql.Composable, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with own(spec).connect() as conn:
        try:
            return conn.execute(query, params or None).fetchall()  # type: ignore[arg-type]
        except psycopg.errors.UndefinedTable:
            return []


@contextmanager
def workflow(site: Site) -> Iterator[Workflow]:
    """The workflow as the command builds it from the site's environment: for a test to bring a shop to the
    state a fault is tried from without a command run per step (the command goes by the lifecycle only)."""
    from handyshop_migration.tenancy.application.encryption import CredentialCipher
    from handyshop_migration.tenancy.application.registry import ConnectionRegistry
    from handyshop_migration.tenancy.engine.catalog import load_catalog
    from handyshop_migration.tenancy.engine.migrations import tenant_migrations
    from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming
    from handyshop_migration.tenancy.lifecycle import Lifecycle

    catalog = load_catalog(None)
    registry = ConnectionRegistry(site.source, CredentialCipher(site.env[settings.ENCRYPTION_KEY]))
    naming = TenantNaming(
        database=site.env[settings.TENANT_DATABASE], role=site.env[settings.TENANT_ROLE],
        owner=site.env[settings.TENANT_OWNER_ROLE],
    )
    provisioner = Provisioner(site.source.with_db("postgres"), registry, tenant_migrations(catalog), naming=naming)
    flow = Workflow(site.source, catalog, provisioner, Lifecycle(site.source), archive_dir=site.archives)
    try:
        flow.setup()
        yield flow
    finally:
        provisioner.close()
        registry.close()


# -- what a shop was left in -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Where:
    """Where a shop's writes go, and who refuses them: what must agree after any fault."""

    state: str
    reads: str
    writes: str
    shared_fenced: bool  # the shared database refuses (or holds) the shop's writes
    tenant_live: bool  # the tenant's guard records being (or having been) live: `live_since` set
    tenant_open: bool  # the tenant's guard takes the shop's writes (`accepts_writes`)
    tenant_capture: bool  # the tenant logs its writes for a way back (its capture triggers are there)

    def problems(self) -> list[str]:
        """Contradictions: a shop fenced where it is routed, or a tenant that thinks it is live while the
        shop is routed to the shared database (a reload would be refused)."""
        bad = []
        if self.writes == "shared" and self.shared_fenced and self.state != "cutting_over":
            bad.append("routed to the shared database, which refuses its writes")
        if self.writes == "tenant" and not self.tenant_open and self.state != "rolling_back":
            bad.append("routed to its tenant, which refuses its writes")
        if self.writes == "tenant" and not self.shared_fenced:
            bad.append("routed to its tenant, yet the shared database still takes its writes")
        if self.writes == "shared" and (self.tenant_live or self.tenant_open):
            bad.append("routed to the shared database, yet its tenant says it is live")
        return bad


def where(flow: Workflow, shop: int) -> Where:
    from handyshop_migration.tenancy.engine import capture

    record = flow.lifecycle.get(shop)
    with own(flow.source).connect() as conn:
        shared_fenced = capture.is_fenced(conn, shop)
    live = open_ = captured = False
    if flow.registry.find(shop) is not None:
        with own(flow.tenant(shop)).connect() as tconn:
            guard = capture.tenant_guard_state(tconn)
            captured = capture.tenant_capture_enabled(tconn, flow.catalog)
        if guard is not None:
            live, open_ = guard.live_since is not None, guard.accepts_writes
    return Where(record.state.value, record.reads, record.writes, shared_fenced, live, open_, captured)


def tenant_equals_source(flow: Workflow, shop: int) -> list[str]:
    """Tables whose tenant copy differs from the shop's slice of the shared database (none: equal)."""
    from handyshop_migration.tenancy.engine.copy import SourceSnapshot
    from handyshop_migration.tenancy.engine.verification import verify_tables

    with SourceSnapshot(own(flow.source)) as snap, own(flow.tenant(shop)).connect() as tconn:
        return [v.describe() for v in verify_tables(snap.conn, tconn, flow.catalog, shop) if not v.ok]


def leftovers(site: Site) -> list[str]:
    """Files a killed command may leave that a later run must have removed: passfiles in its TMPDIR, partial
    dumps, archives without a manifest."""
    found = [str(p) for p in site.tmp.iterdir() if p.name.startswith("handyshop-pgpass")]
    if site.backups.is_dir():
        found += [str(p) for p in site.backups.glob(".*.partial")]
    if site.archives.is_dir():
        found += [str(p) for p in site.archives.glob("shop_*/*") if not (p / "manifest.json").is_file()]
    return found


def wait_until(
    running: Running, what: str, check: Callable[[], bool], *, timeout: float = 180.0, interval: float = 0.02
) -> None:
    """Until `check()` is true while `running` goes on; fails (and kills it) if it ends first or takes too long."""
    deadline = time.monotonic() + timeout
    while not check():
        if not running.alive():
            raise AssertionError(f"{running.describe()} ended before {what}:\n{running.finished().output}")
        if time.monotonic() > deadline:
            running.kill()
            raise AssertionError(f"{running.describe()}: {what} did not happen within {timeout:.0f}s")
        time.sleep(interval)


@contextmanager
def seeded_site(admin: ConnectionSpec, root: Path, prefix: str, **seed_args: object) -> Iterator[Site]:
    """A seeded shared database on `admin`'s server, a migration's environment with tenant names of its own,
    and phase 0 done through the command; dropped afterwards with every tenant database and role."""
    from handyshop_migration.devtools.seed import seed_database
    from handyshop_migration_tests.support.databases import (
        create_database,
        drop_database,
        drop_namespace,
        migration_env,
        unique_namespace,
    )

    source = create_database(admin, prefix)
    ns = unique_namespace()
    try:
        seed_database(source, **seed_args)  # type: ignore[arg-type]
        env = {**migration_env(source, root / "backups", ns), settings.ARCHIVE_DIR: str(root / "archives")}
        site = Site.create(admin, source, env, root / "site")
        prepared = site.run("prepare")
        assert prepared.returncode == 0, prepared.output
        yield site
    finally:
        drop_namespace(admin, ns)
        drop_database(admin, source.dbname)
