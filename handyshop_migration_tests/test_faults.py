"""The fault suite: `handyshop-migration` killed with SIGKILL (to its process group) at a chosen point of every
phase, and a server stopped with `pg_ctl stop -m immediate` mid-copy; then the same command again. After
each: the tenant equals the shop's slice of the shared database, every write the application saw accepted
is there, routing and fences agree (never fenced where it is routed), and nothing is left behind (passfile,
partial dump, half-written archive, pool slot).

Each point is chosen by the statement the step runs, as pg_stat_activity shows it, after the test holds a
lock that makes the step wait there (see `support/faults.py`). The shops are brought to the state a fault is
tried from by the library (`support.faults.workflow`, built from the same environment the command reads);
the faults and the reruns go through the command. The tests share one seeded shared database (one shop
each) and one Dagster home, except where the home itself is under test.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psycopg
import pytest
from psycopg import sql

from handyshop_migration import settings
from handyshop_migration.devtools.embedded import EmbeddedPostgres
from handyshop_migration.devtools.seed import seed_database
from handyshop_migration.devtools.simulation import SimulatedApp
from handyshop_migration.pipeline.phase2 import SOURCE_POOL
from handyshop_migration.tenancy.application.encryption import CredentialCipher
from handyshop_migration.tenancy.application.routing import RouteResolver
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.lifecycle import State
from handyshop_migration.tenancy.workflow import Workflow
from handyshop_migration_tests.support.databases import (
    create_database,
    migration_env,
    unique_namespace,
)
from handyshop_migration_tests.support.faults import (
    Hold,
    Running,
    Site,
    fetch,
    holding,
    kill_at,
    leftovers,
    no_traceback,
    own,
    seeded_site,
    tenant_equals_source,
    wait_for_statement,
    wait_gone,
    wait_until,
    where,
    workflow,
)

BIG_SHOP = 1  # the seed's big shop: its repairs take a second to copy
BIG_ROWS = 80_000

@pytest.fixture(scope="module")
def site(pg_server: ConnectionSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("faults")
    with seeded_site(pg_server, root, "t_faults", shops=7, scale=0.03, seed=21, big_shop_rows=BIG_ROWS) as site:
        yield site


def bring(flow: Workflow, shop: int, to: State) -> None:
    """Take a shop to `to` (verified, syncing or live) through the library: the state a fault is tried from."""
    flow.provision(shop)
    assert flow.copy(shop).verified
    if to in (State.SYNCING, State.LIVE):
        flow.sync(shop)
    if to == State.LIVE:
        assert flow.cut_over(shop).state == "live"


@contextmanager
def app_writing(site: Site, shops: list[int], seed: int) -> Iterator[SimulatedApp]:
    """The simulated application writing to `shops` the whole time (through route(), retrying the fence)."""
    resolver = RouteResolver(own(site.source), CredentialCipher(site.env[settings.ENCRYPTION_KEY]), own(site.source), ttl=0.2)
    app = SimulatedApp(own(site.source), resolver, shops, seed=seed)
    thread, stop = app.start(pause=0.01)
    try:
        yield app
    finally:
        stop.set()
        thread.join()
        app.close()
        resolver.close()


def wait_for_writes(app: SimulatedApp, more: int, timeout: float = 120.0) -> None:
    target = sum(app.writes.values()) + more
    deadline = time.monotonic() + timeout
    while sum(app.writes.values()) < target:
        assert not app.errors, app.errors[:3]
        assert time.monotonic() < deadline, f"the application made only {sum(app.writes.values())} writes"
        time.sleep(0.02)


def all_writes_present(app: SimulatedApp, flow: Workflow, shop: int) -> None:
    """Every write the application saw committed is where the shop lives now, as the app left it."""
    def home(s: int) -> tuple[ConnectionSpec, bool]:
        tenant = flow.lifecycle.get(s).writes == "tenant"
        return (own(flow.tenant(s)), False) if tenant else (own(flow.source), True)

    assert app.errors == [], app.errors[:3]
    found = app.verify(home)[shop]
    assert found.missing == [] and found.rows > 0, found


def consistent(flow: Workflow, shop: int, state: State) -> None:
    at = where(flow, shop)
    assert at.state == state.value, at
    assert at.problems() == [], at


def rerun_finishes(site: Site, shop: int, state: State, *args: str) -> None:
    """The same command again: it finishes (exit 0), the shop is in `state` with routing and fences agreeing,
    its tenant equals its slice of the shared database, and no file is left behind."""
    again = site.run(*args)
    assert again.returncode == 0, again.output
    with workflow(site) as flow:
        consistent(flow, shop, state)
        assert tenant_equals_source(flow, shop) == []
    assert leftovers(site) == []


def confirm(site: Site, shop: int) -> list[str]:
    return ["--shop", str(shop), "--confirm", site.database(shop)]


def test_killed_while_provisioning_resumes_with_the_database_it_half_made(site: Site) -> None:
    """Killed between CREATE DATABASE and the marker comment on it: the rerun must recognise the database as
    its own (owned by the shop's marked role, named by its registry entry), not refuse it as foreign."""
    shop = 2
    db = site.database(shop)
    with workflow(site) as flow:
        flow.provisioner.ensure_template()  # built beforehand: its own CREATE DATABASE is not the point
    with holding(site.admin, "LOCK TABLE pg_catalog.pg_database IN EXCLUSIVE MODE") as lock:
        running = site.start("migrate", "--shops", str(shop))
        killed, backend = kill_at(site, running, lock, like=f'CREATE DATABASE "{db}"%')
    assert "CREATE DATABASE" in backend.query
    # what the kill left: the database exists (its statement went on and committed), without our marker
    assert fetch(site.admin, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db,)) == [(None,)]
    with workflow(site) as flow:
        assert flow.lifecycle.get(shop).state == State.PROVISIONING
    rerun_finishes(site, shop, State.VERIFIED, "migrate", "--shops", str(shop))
    with workflow(site) as flow:
        assert flow.provisioner.audit(shop) == []
    marked = fetch(site.admin, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (db,))
    assert marked == [(f"handyshop-migration: tenant database of shop {shop}",)]


def pool_slots(home: Path) -> tuple[list[object], list[str]]:
    """(claimed slots of the copy pool, runs still STARTED) in a Dagster home."""
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        info = instance.event_log_storage.get_concurrency_info(SOURCE_POOL)
        started = [r.run_id for r in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))]
        return list(info.claimed_slots), started
    finally:
        instance.dispose()


def test_killed_mid_copy_resumes_and_frees_its_pool_slot(site: Site, tmp_path: Path) -> None:
    own_home = site.with_home(tmp_path / "copy")  # the pool slots under test are this home's alone
    shop = BIG_SHOP
    db = site.database(shop)
    running = own_home.start("migrate", "--shops", str(shop))
    backend = wait_for_statement(site.admin, running, like="COPY %repairs% FROM STDIN%", database=db)
    killed = running.kill()
    wait_gone(site.admin, [backend.pid])
    assert "phase 0 passed" in killed.stdout, killed.output
    with workflow(site) as flow:
        assert flow.lifecycle.get(shop).state == State.COPYING
    rerun_finishes(own_home, shop, State.VERIFIED, "migrate", "--shops", str(shop))
    with workflow(site) as flow:
        assert fetch(flow.tenant(shop), "SELECT count(*) FROM repairs") == [(BIG_ROWS,)]
    claimed, started = pool_slots(own_home.home)
    assert claimed == [] and started == []  # the dead run's slot freed and its run failed, by the rerun itself


def test_killed_during_sync_with_the_application_writing(site: Site) -> None:
    shop = 3
    with workflow(site) as flow:
        bring(flow, shop, State.VERIFIED)
        with app_writing(site, [shop], seed=3) as app:
            wait_for_writes(app, 60)
            # a captured change whose tenant row the test holds: the sync waits on it, visibly
            [(row,)] = fetch(site.source, "SELECT min(id) FROM customers WHERE shop_id = %s", (shop,))
            with own(site.source).connect() as conn:
                conn.execute("UPDATE customers SET city = 'Faultstadt' WHERE id = %s", (row,))
                conn.commit()
            tenant_db = site.admin.with_db(site.database(shop))
            with holding(tenant_db, "SELECT 1 FROM customers WHERE id = %s FOR UPDATE", params=(row,)) as lock:
                running = site.start("migrate", "--shops", str(shop), "--through-phase", "3")
                kill_at(site, running, lock, like="%customers%", database=site.database(shop))
            assert flow.lifecycle.get(shop).state == State.VERIFIED  # the sync never finished
            again = site.run("migrate", "--shops", str(shop), "--through-phase", "3")
            assert again.returncode == 0, again.output
            wait_for_writes(app, 40)
        flow.sync(shop)  # the writes made after the rerun's sync
        consistent(flow, shop, State.SYNCING)
        assert tenant_equals_source(flow, shop) == []
        all_writes_present(app, flow, shop)
        assert fetch(flow.tenant(shop), "SELECT city FROM customers WHERE id = %s", (row,)) == [("Faultstadt",)]
    assert leftovers(site) == []


@contextmanager
def cutover_at_the_fence(site: Site, flow: Workflow, shop: int) -> Iterator[tuple[Running, Hold]]:
    """`migrate --through-phase 4` stopped inside the cutover, right after the fence committed: the test holds
    an older transaction that has written, which the cutover waits out. Yields the command and that hold."""
    with holding(site.source, "SELECT pg_current_xact_id()") as older:
        running = site.start("migrate", "--shops", str(shop), "--through-phase", "4")

        def fenced() -> bool:
            at = where(flow, shop)
            return at.state == "cutting_over" and at.shared_fenced

        wait_until(running, "the fence", fenced)
        yield running, older


def test_cutover_killed_between_fence_and_flip_and_then_before_the_tenant_opens_resumes_forward(site: Site) -> None:
    """Killed inside the fence (cutting_over, writes held in the shared database), then — the rerun — right
    after the flip committed and before the tenant was opened (live, routed to the tenant, which still refuses
    the shop's writes: nothing takes them): each time the same command again finishes the cutover."""
    shop = 4
    migrate = ("migrate", "--shops", str(shop), "--through-phase", "4")
    with workflow(site) as flow:
        bring(flow, shop, State.SYNCING)
        with app_writing(site, [shop], seed=4) as app:
            wait_for_writes(app, 60)
            with cutover_at_the_fence(site, flow, shop) as (running, older):
                running.kill()
                older.release()
            at = where(flow, shop)
            assert (at.state, at.writes, at.shared_fenced, at.tenant_open) == ("cutting_over", "shared", True, False)
            # the rerun: opening the tenant (its guard's state row) waits on the test's lock, after the flip
            tenant_db = site.admin.with_db(site.database(shop))
            with holding(tenant_db, "SELECT 1 FROM handyshop_migration.tenant_state FOR UPDATE") as tenant_lock:
                running = site.start(*migrate)
                kill_at(site, running, tenant_lock, like="UPDATE handyshop_migration.tenant_state%", database=site.database(shop))
            at = where(flow, shop)
            assert (at.state, at.writes, at.shared_fenced, at.tenant_open) == ("live", "tenant", True, False), at
            assert at.problems() == ["routed to its tenant, which refuses its writes"]  # what the kill left
            assert flow.lifecycle.get(shop).tenant_closed
            again = site.run(*migrate)
            assert again.returncode == 0, again.output
            assert "(1 were already)" not in again.stdout, again.output  # it was not done: the tenant was closed
            wait_for_writes(app, 60)  # into the tenant now
        assert not flow.lifecycle.get(shop).tenant_closed
        consistent(flow, shop, State.LIVE)
        all_writes_present(app, flow, shop)  # (the cutover's own gate proved the tenant equal to its slice at the flip)
    # a rerun over a shop that is cut over is done, not an error (and does not advise a rollback)
    rerun = site.run("migrate", "--shops", str(shop), "--through-phase", "4")
    assert rerun.returncode == 0, rerun.output
    assert "1 of 1 shops are through phase 4 (1 were already)." in rerun.stdout
    assert "roll back" not in rerun.stdout.lower()
    assert leftovers(site) == []


def test_cutover_killed_before_the_flip_is_aborted_by_rollback_and_can_go_again(site: Site) -> None:
    """Killed inside the fence after the last verification, as routing flips (the lifecycle's finish_cutover
    waits on the shop's row; the tenant already captures its own writes for a way back): `rollback --phase 4`
    aborts the cutover — the tenant's capture is gone, the fence is lifted, the route stays shared — and the
    shop can be cut over again."""
    shop = 5
    with workflow(site) as flow:
        bring(flow, shop, State.SYNCING)
        with app_writing(site, [shop], seed=5) as app:
            wait_for_writes(app, 60)
            with cutover_at_the_fence(site, flow, shop) as (running, older):
                with holding(
                    site.source, "SELECT 1 FROM handyshop_migration.shop_lifecycle WHERE shop_id = %s FOR UPDATE",
                    params=(shop,),
                ) as row_lock:
                    older.release()
                    kill_at(site, running, row_lock, like="%shop_lifecycle%FOR UPDATE%", database=site.source.dbname)
            at = where(flow, shop)
            assert (at.state, at.writes, at.shared_fenced, at.tenant_open, at.tenant_capture) == (
                "cutting_over", "shared", True, False, True
            ), at
            interrupted = site.run("migrate", "--shops", str(shop), "--through-phase", "3")
            assert interrupted.returncode == 1 and "its cutover was interrupted" in interrupted.stdout, interrupted.output
            aborted = site.run("rollback", "--phase", "4", *confirm(site, shop))
            assert aborted.returncode == 0, aborted.output
            no_traceback(aborted)
            consistent(flow, shop, State.SYNCING)
            at = where(flow, shop)
            assert (at.writes, at.shared_fenced, at.tenant_live, at.tenant_capture) == ("shared", False, False, False), at
            wait_for_writes(app, 40)  # the shared database takes its writes again
            again = flow.cut_over(shop)  # and it can go again: its gate compares every table at the flip
            assert again.state == "live" and [v.table for v in again.verification if not v.ok] == []
            wait_for_writes(app, 40)
        consistent(flow, shop, State.LIVE)
        all_writes_present(app, flow, shop)
    assert leftovers(site) == []


def test_rollback_killed_mid_copy_back_and_after_its_flip_resumes(site: Site) -> None:
    """Killed while copying the tenant's writes back (rolling_back), then — the rerun — right after routing
    flipped back and before the tenant's side was ended (its guard still says live, refusing writes, and its
    capture is still there): each time the same command again finishes the rollback."""
    shop = 6
    rollback = ("rollback", "--phase", "4", *confirm(site, shop))
    with workflow(site) as flow:
        bring(flow, shop, State.LIVE)
        with app_writing(site, [shop], seed=6) as app:
            wait_for_writes(app, 60)  # into the live tenant
            [(row,)] = fetch(flow.tenant(shop), "SELECT min(id) FROM customers")
            with own(flow.registry.get(shop).spec()).connect() as conn:  # the application, in its tenant
                conn.execute("UPDATE customers SET city = 'Rueckweg' WHERE id = %s", (row,))
                conn.commit()
            copy_back = ("SELECT 1 FROM customers WHERE id = %s FOR UPDATE", (row,))  # the copy-back waits on it
            with holding(site.source, copy_back[0], params=copy_back[1]) as lock:
                running = site.start(*rollback)
                kill_at(site, running, lock, like="%customers%", database=site.source.dbname)
            assert flow.lifecycle.get(shop).state == State.ROLLING_BACK
            tenant_db = site.admin.with_db(site.database(shop))
            with holding(site.source, copy_back[0], params=copy_back[1]) as lock:
                running = site.start(*rollback)
                wait_for_statement(site.admin, running, like="%customers%", database=site.source.dbname, waiting=True)
                # past closing the tenant: now hold its guard's state row, which ending its side must update
                with holding(tenant_db, "SELECT 1 FROM handyshop_migration.tenant_state FOR UPDATE") as tenant_lock:
                    lock.release()
                    kill_at(site, running, tenant_lock, like="UPDATE handyshop_migration.tenant_state%", database=site.database(shop))
            at = where(flow, shop)
            assert (at.state, at.writes, at.shared_fenced, at.tenant_live, at.tenant_open, at.tenant_capture) == (
                "syncing", "shared", False, True, False, True
            ), at  # what the kill left
            again = site.run(*rollback)
            assert again.returncode == 0, again.output
            wait_for_writes(app, 40)  # on the shared database again
        consistent(flow, shop, State.SYNCING)
        at = where(flow, shop)
        assert (at.writes, at.shared_fenced, at.tenant_live, at.tenant_open, at.tenant_capture) == (
            "shared", False, False, False, False
        ), at
        all_writes_present(app, flow, shop)
        assert fetch(site.source, "SELECT city FROM customers WHERE id = %s", (row,)) == [("Rueckweg",)]
        flow.sync(shop)
        assert tenant_equals_source(flow, shop) == []
    assert leftovers(site) == []


def _slices(source: ConnectionSpec, shops: list[int]) -> dict[tuple[str, int], tuple[int, int]]:
    from handyshop_migration.devtools.seed import TENANT_TABLES

    out = {}
    for table in TENANT_TABLES:
        for shop in shops:
            [(n, digest)] = fetch(
                source,
                sql.SQL("SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0) FROM {} t WHERE shop_id = %s").format(
                    sql.Identifier(table)
                ),
                (shop,),
            )
            out[(table, shop)] = (int(n), int(digest))  # type: ignore[call-overload]
    return out


def test_retirement_and_its_restore_killed_midway_resume(site: Site) -> None:
    shop = 7
    others = [2, 3]
    with workflow(site) as flow:
        bring(flow, shop, State.LIVE)
        before = _slices(site.source, [shop, *others])
        # retirement: its DELETE of the shop's customers waits on a row the test holds
        with holding(site.source, "SELECT 1 FROM customers WHERE shop_id = %s LIMIT 1 FOR UPDATE", params=(shop,)) as lock:
            running = site.start("migrate", "--shops", str(shop), "--through-phase", "5", "--confirm-retirement")
            kill_at(site, running, lock, like="DELETE FROM%customers%", database=site.source.dbname)
        assert flow.lifecycle.get(shop).state == State.RETIRING
        assert _slices(site.source, [shop]) == {k: v for k, v in before.items() if k[1] == shop}  # nothing deleted
        retired = site.run("migrate", "--shops", str(shop), "--through-phase", "5", "--confirm-retirement")
        assert retired.returncode == 0, retired.output
        consistent(flow, shop, State.RETIRED)
        assert all(n == 0 for n, _ in _slices(site.source, [shop]).values())
        assert _slices(site.source, others) == {k: v for k, v in before.items() if k[1] in others}
        assert len(list((site.archives / f"shop_{shop}").iterdir())) == 1  # one archive, complete
        # the way back: its COPY into a late table waits on the test's SHARE lock
        last = flow.catalog.tables[-1]
        with holding(site.source, sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.Identifier(last.schema, last.name))) as lock:
            running = site.start("rollback", "--phase", "5", *confirm(site, shop))
            kill_at(site, running, lock, like=f"COPY %{last.name}% FROM STDIN%", database=site.source.dbname)
        assert flow.lifecycle.get(shop).state == State.RESTORING
        restored = site.run("rollback", "--phase", "5", *confirm(site, shop))
        assert restored.returncode == 0, restored.output
        consistent(flow, shop, State.LIVE)
        assert _slices(site.source, [shop, *others]) == before  # byte for byte, nothing doubled
    assert leftovers(site) == []


def _pg_dump_process(backups: Path) -> int:
    """The pid of the pg_dump writing into `backups` (its command line names the file)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"pg_dump") and any(str(backups).encode() in a for a in argv):
            return int(proc.name)
    raise AssertionError(f"no pg_dump writing into {backups} is running")


def test_killed_during_pg_dump_leaves_no_passfile_and_the_next_run_removes_its_partial_dump(site: Site, tmp_path: Path) -> None:
    own_home = site.with_home(tmp_path / "dump")
    with own(site.source).connect() as conn:
        # in a schema of its own: pg_dump waits on it, the catalog (of the application's schema) does not change
        conn.execute("CREATE SCHEMA fault_probe; CREATE TABLE fault_probe.fault_probe (v text); "
                     "INSERT INTO fault_probe.fault_probe VALUES ('dumped')")
        conn.commit()
    try:
        with holding(site.source, "LOCK TABLE fault_probe.fault_probe IN ACCESS EXCLUSIVE MODE") as lock:
            running = own_home.start("prepare")
            wait_for_statement(site.admin, running, like="LOCK TABLE%fault_probe%", database=site.source.dbname, waiting=True)
            pid = _pg_dump_process(own_home.backups)
            environ = dict(
                item.split(b"=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in item
            )
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            password = site.source.password.reveal().encode() if site.source.password else b""
            # pg_dump sees none of our variables and no password; its passfile is an in-memory descriptor
            assert not [k for k in environ if k.startswith((b"HANDYSHOP_", b"TENANT_", b"DAGSTER_"))], sorted(environ)
            assert password and password not in cmdline and not any(password in v for v in environ.values())
            assert re.fullmatch(rb"/dev/fd/\d+", environ[b"PGPASSFILE"]), environ[b"PGPASSFILE"]
            assert leftovers(own_home) == [str(p) for p in own_home.backups.glob(".*.partial")]  # no passfile on disk
            partial = list(own_home.backups.glob(".*.partial"))
            assert len(partial) == 1
            running.kill()
            lock.release()
        assert partial[0].exists()  # what the kill left: a half-written dump, and no passfile
        assert leftovers(own_home) == [str(partial[0])]
        again = own_home.run("prepare")
        assert again.returncode == 0, again.output
        assert leftovers(own_home) == []
        assert len(list(own_home.backups.glob("*.dump"))) >= 1
    finally:
        with own(site.source).connect() as conn:
            conn.execute("DROP SCHEMA IF EXISTS fault_probe CASCADE")
            conn.commit()


class Writer:
    """An application inserting rows for a shop into the shared database, whatever happens to the server:
    it keeps only what the server acknowledged (a commit whose answer was lost may or may not be there)."""

    def __init__(self, source: ConnectionSpec, shop: int) -> None:
        self.source, self.shop = own(source), shop
        self.acknowledged: list[str] = []
        self.failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        conn: psycopg.Connection | None = None
        while not self.stop.is_set():
            marker = f"w-{uuid.uuid4().hex[:12]}"
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = self.source.connect(autocommit=True, connect_timeout=2)
                conn.execute(
                    "INSERT INTO customers (first_name, last_name, phone, shop_id) VALUES ('Fault', 'Writer', %s, %s)",
                    (marker, self.shop),
                )
                self.acknowledged.append(marker)
            except Exception:  # the server is down: try again shortly, as an application would
                self.failures += 1
                conn = None
                time.sleep(0.1)
            time.sleep(0.01)
        if conn is not None:
            conn.close()

    def __enter__(self) -> Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def test_server_stopped_mid_copy_then_rerun(tmp_path: Path) -> None:
    """The server is stopped with `pg_ctl stop -m immediate` while the big table is copied (an application
    writing to the same shop): the run fails with one line naming the lost server, no traceback; once the
    server is back, the same command finishes, and every acknowledged write is in the shared database and
    (synced) in the tenant."""
    server = EmbeddedPostgres(tmp_path / "pg", durable=True)  # an immediate stop must not lose acknowledged commits
    server.start()
    try:
        admin = server.spec()
        source = create_database(admin, "t_lost")
        seed_database(source, shops=2, scale=0.03, seed=5, big_shop_rows=BIG_ROWS)
        env = {**migration_env(source, tmp_path / "backups", unique_namespace()), settings.ARCHIVE_DIR: str(tmp_path / "archives")}
        lost = Site.create(admin, source, env, tmp_path / "site")
        db = lost.database(BIG_SHOP)
        with Writer(source, BIG_SHOP) as writer:
            running = lost.start("migrate", "--shops", str(BIG_SHOP), "--through-phase", "3")
            wait_for_statement(admin, running, like="COPY %repairs% FROM STDIN%", database=db)
            server._exec("pg_ctl", "-w", "-m", "immediate", "-D", str(server.data_dir), "stop")  # as its system user
            failed = running.wait(timeout=300)
            assert failed.returncode != 0, failed.output
            no_traceback(failed)
            # one line: what failed (the server's own words) and why the command stops
            [line] = failed.stderr.strip().splitlines()
            assert re.search(r"server closed the connection|terminating connection|connection (is )?lost", line), line
            assert re.search(r"cannot connect to .*t_lost", line), line
            server.start()  # same data directory and port
            time.sleep(1.0)  # the application writes again
        assert writer.failures > 0 and len(writer.acknowledged) > 20
        again = lost.run("migrate", "--shops", str(BIG_SHOP), "--through-phase", "3")
        assert again.returncode == 0, again.output
        with workflow(lost) as flow:
            consistent(flow, BIG_SHOP, State.SYNCING)
            assert tenant_equals_source(flow, BIG_SHOP) == []
            phones = {str(p) for (p,) in fetch(flow.tenant(BIG_SHOP), "SELECT phone FROM customers")}
        assert set(writer.acknowledged) <= phones
        assert leftovers(lost) == []
    finally:
        server.stop()
