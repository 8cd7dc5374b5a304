"""Running many shops on Postgres storage, as `migrate` and `status` do it: worker processes, a run killed while it
holds a copy slot, `status` read without Dagster, and the overview the sensor records."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml

from handyshop_migration import settings
from handyshop_migration.devtools.local import ensure_storage, packaged_dagster_yaml, storage_url
from handyshop_migration.devtools.seed import seed_database
from handyshop_migration.pipeline import overview
from handyshop_migration.pipeline.phase2 import SOURCE_POOL
from handyshop_migration.pipeline.resources import SourceDatabase
from handyshop_migration.pipeline.runner import OWNER_TAG, owner_alive, owner_tag
from handyshop_migration.pipeline.status import postgres_storage_url, shop_status, shop_status_from_storage
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.lifecycle import Lifecycle, State
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    migration_env,
    unique_namespace,
)

COMMAND = [sys.executable, "-m", "handyshop_migration.cli"]
SHOPS = 4


@dataclass
class PgStack:
    admin: ConnectionSpec
    source: ConnectionSpec
    storage: ConnectionSpec
    home: Path
    env: dict[str, str]
    migrated: subprocess.CompletedProcess[str] | None = None

    def run(self, args: list[str], timeout: float = 300, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(COMMAND + args, env=self.process_env(env), capture_output=True, text=True,
                              timeout=timeout, cwd="/")

    def process_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HANDYSHOP_", "TENANT_", "DAGSTER_"))}
        return {**base, **self.env, **(extra or {})}

    def storage_rows(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self.storage.connect() as conn:
            return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def pg_stack(pg_server: ConnectionSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgStack]:
    root = tmp_path_factory.mktemp("throughput")
    source = create_database(pg_server, "t_tp_src")
    seed_database(source, shops=SHOPS, scale=0.03, seed=11)
    suffix = unique_namespace().strip("_")[-8:]
    storage = ensure_storage(pg_server, "pw-" + suffix * 4, database=f"t_tp_dagster_{suffix}",
                             role=f"t_tp_storage_{suffix}")
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(packaged_dagster_yaml(), encoding="utf-8")
    ns = unique_namespace()
    env = {**migration_env(source, root / "backups", ns), "DAGSTER_HOME": str(home),
           "DAGSTER_PG_URL": storage_url(storage), settings.ARCHIVE_DIR: str(root / "archives")}
    try:
        stack = PgStack(pg_server, source, storage, home, env)
        # Shops 1-3 migrated once for the module, by two workers (what the first test looks at; the others
        # use them as a migration in progress); shop 4 is the kill test's.
        stack.migrated = stack.run(["migrate", "--shops", "1,2,3", "--workers", "2"])
        yield stack
    finally:
        drop_namespace(pg_server, ns)
        drop_database(pg_server, source.dbname)
        drop_database(pg_server, storage.dbname)
        with pg_server.connect(autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{storage.user}"')
        shutil.rmtree(root, ignore_errors=True)


def _states(stack: PgStack) -> dict[int, State]:
    return {r.shop_id: r.state for r in Lifecycle(stack.source).all()}


def test_migrate_with_two_workers_verifies_every_shop_with_its_checks_stored_per_partition(pg_stack: PgStack) -> None:
    result = pg_stack.migrated
    assert result is not None and result.returncode == 0, result.stdout + result.stderr
    assert "3 shops through phase 2 in 2 worker processes" in result.stdout
    assert "3 of 3 shops are through phase 2." in result.stdout
    assert {s: st for s, st in _states(pg_stack).items() if s in (1, 2, 3)} == {s: State.VERIFIED for s in (1, 2, 3)}
    # one run per shop, each run's 19 x 2 parity checks and tenant_access stored under its partition, all passed
    checks = pg_stack.storage_rows(
        "SELECT partition, count(*) FILTER (WHERE execution_status = 'SUCCEEDED'), count(*) "
        "FROM asset_check_executions WHERE partition IN ('1', '2', '3') GROUP BY partition ORDER BY partition")
    assert checks == [(str(s), 39, 39) for s in (1, 2, 3)]
    runs = pg_stack.storage_rows("SELECT partition, status FROM runs WHERE pipeline_name = 'migrate_shop' "
                                 "AND partition IN ('1', '2', '3') ORDER BY 1")
    assert runs == [(str(s), "SUCCESS") for s in (1, 2, 3)]
    # the workers' runs name the process that executed them (how a dead owner is recognised later)
    owners = pg_stack.storage_rows(
        "SELECT DISTINCT t.value FROM run_tags t JOIN runs r ON r.run_id = t.run_id WHERE t.key = %s "
        "AND r.partition IN ('1', '2', '3')", (OWNER_TAG,))
    assert len(owners) == 2 and all(owner_alive(str(o)) is False for (o,) in owners)


def test_a_run_killed_while_it_holds_a_copy_slot_does_not_block_the_next_one(pg_stack: PgStack) -> None:
    shop = 4
    # One copy slot only: a slot left to a dead run would make the next run's copy wait for ever.
    with _instance(pg_stack) as instance:
        instance.event_log_storage.set_concurrency_slots(SOURCE_POOL, 1)
    # The copy step claims the slot, then waits on a lock the test holds on a table of the shared database.
    with pg_stack.source.connect() as blocker:
        blocker.execute("LOCK TABLE public.customers IN ACCESS EXCLUSIVE MODE")
        proc = subprocess.Popen(COMMAND + ["migrate", "--shops", str(shop)], env=pg_stack.process_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/", start_new_session=True)
        try:
            held = _wait(lambda: pg_stack.storage_rows(
                "SELECT run_id FROM concurrency_slots WHERE concurrency_key = %s AND run_id IS NOT NULL",
                (SOURCE_POOL,)), 120, "the copy step to hold the pool's slot")
            assert _states(pg_stack)[shop] in (State.PROVISIONED, State.COPYING)  # its copy step is under way
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        blocker.rollback()
    killed_run = str(held[0][0])
    assert pg_stack.storage_rows("SELECT status FROM runs WHERE run_id = %s", (killed_run,)) == [("STARTED",)]

    started = time.monotonic()
    again = pg_stack.run(["migrate", "--shops", str(shop)], timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert time.monotonic() - started < 170
    assert _states(pg_stack)[shop] == State.VERIFIED
    # the dead run is failed, saying why, and holds no slot; the new run succeeded and freed its own
    assert pg_stack.storage_rows("SELECT status FROM runs WHERE run_id = %s", (killed_run,)) == [("FAILURE",)]
    messages = pg_stack.storage_rows(
        "SELECT event FROM event_logs WHERE run_id = %s AND dagster_event_type = 'PIPELINE_FAILURE'", (killed_run,))
    assert messages and "is gone; marked failed and its concurrency slots freed" in str(messages[0][0])
    assert pg_stack.storage_rows("SELECT count(*) FROM concurrency_slots WHERE run_id IS NOT NULL") == [(0,)]
    runs = pg_stack.storage_rows("SELECT status FROM runs WHERE partition = %s ORDER BY id", (str(shop),))
    assert runs == [("FAILURE",), ("SUCCESS",)]


def test_status_reads_the_storage_directly_and_says_what_the_dagster_api_says(pg_stack: PgStack) -> None:
    url = postgres_storage_url(pg_stack.home, pg_stack.env)
    assert url is not None and url.startswith("postgresql://")
    lifecycle = Lifecycle(pg_stack.source)
    with _instance(pg_stack) as instance:
        instance.add_dynamic_partitions("shops", ["999"])  # a partition without a run or a lifecycle record
        through_dagster = shop_status(instance, lifecycle)
    direct = shop_status_from_storage(url, lifecycle)
    assert direct == through_dagster
    assert {r.shop for r in direct} >= {"1", "2", "3", "999"}
    assert next(r for r in direct if r.shop == "1").last_run.startswith("success migrate_shop ")
    out = pg_stack.run(["status"])
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()[2:]}
    assert set(lines) == {r.shop for r in direct} and "2 verified" in lines["1"] and "success migrate_shop" in lines["1"]
    # no Postgres storage named: through the Dagster API, the same answer
    other = pg_stack.home.parent / "home-sqlite"
    other.mkdir(exist_ok=True)
    config = yaml.safe_load(packaged_dagster_yaml())
    config.pop("storage")
    (other / "dagster.yaml").write_text(yaml.safe_dump(config))
    assert postgres_storage_url(other, pg_stack.env) is None


def test_the_overview_counts_shops_per_state_and_lists_the_failed_ones(pg_stack: PgStack) -> None:
    lifecycle = Lifecycle(pg_stack.source)
    lifecycle.record_error(3, "RuntimeError: the disk is full")
    sensor = overview.build_overview_sensor(30)
    source = SourceDatabase(url=pg_stack.env[settings.SOURCE_URL])
    with _instance(pg_stack) as instance:
        first = sensor(dg.build_sensor_context(instance=instance, resources={"source": source}), source=source)
        assert isinstance(first, dg.SensorResult) and len(first.asset_events) == 1
        md = {k: v.value for k, v in first.asset_events[0].metadata.items()}
        records = lifecycle.all()
        verified = sum(1 for r in records if r.state == State.VERIFIED)
        failed = sum(1 for r in records if r.last_error or r.state == State.COPIED)
        assert md["shops"] == len(records) >= 3 and md["failed"] == failed >= 1 and md["stale"] == 0
        assert md["state/verified"] == verified >= 3
        text = str(md["overview"])
        assert f"| verified | 2 | {verified} |" in text and f"| **all** | | **{len(records)}** |" in text
        assert "| 3 | verified | RuntimeError: the disk is full |" in text
        # nothing changed: the next tick records nothing
        again = sensor(dg.build_sensor_context(instance=instance, cursor=first.cursor, resources={"source": source}),
                       source=source)
        assert isinstance(again, dg.SensorResult) and not again.asset_events


def test_an_owner_tag_names_one_process() -> None:
    assert owner_alive(owner_tag()) is True
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    tag = owner_tag(child.pid)
    child.wait()
    assert owner_alive(tag) is False
    assert owner_alive("another-host:1:1") is None


def _instance(stack: PgStack) -> dg.DagsterInstance:
    saved = {k: os.environ.get(k) for k in ("DAGSTER_HOME", "DAGSTER_PG_URL")}
    os.environ.update({"DAGSTER_HOME": str(stack.home), "DAGSTER_PG_URL": stack.env["DAGSTER_PG_URL"]})
    try:
        return dg.DagsterInstance.get()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _wait(probe, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_new_shops_sensor_takes_a_batch_per_tick_and_the_next_tick_the_rest(
    pg_stack: PgStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from handyshop_migration.definitions import build_definitions
    from handyshop_migration.devtools.seed import add_shop
    from handyshop_migration.pipeline import sensors

    monkeypatch.setattr(sensors, "MAX_NEW_SHOPS_PER_TICK", 2)  # the batch size, small enough for a test
    for k, v in pg_stack.env.items():
        monkeypatch.setenv(k, v)
    defs = build_definitions(environ=dict(os.environ))
    sensor = defs.resolve_sensor_def("new_shops_sensor")
    added = [add_shop(pg_stack.source, name=f"Batch {i}", seed=20 + i, scale=0.03) for i in range(3)]
    with _instance(pg_stack) as instance:
        if not instance.fetch_materializations(dg.AssetKey("source_validation"), limit=1).records:
            pg_stack.run(["prepare"])  # the sensor waits for phase 0

        def tick(cursor: str | None) -> dg.SensorExecutionData:
            with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs,
                                         resources=defs.resources, instance_ref=instance.get_ref()) as ctx:
                data = sensor.evaluate_tick(ctx)
            for req in data.dynamic_partitions_requests or []:  # what the daemon applies
                instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
            return data

        unknown = sorted(int(s) for s in _all_shop_ids(pg_stack) if str(s) not in
                         set(instance.get_dynamic_partitions("shops")))
        assert set(added) <= set(unknown)
        requested: list[int] = []
        cursor = None
        for _ in range(len(unknown) // 2 + 2):
            data = tick(cursor)
            batch = [int(r.partition_key) for r in data.run_requests]
            assert len(batch) <= 2 and batch == sorted(batch)
            requested += batch
            cursor = data.cursor
            if not batch:
                break
        assert requested == unknown  # every new shop exactly once, lowest ids first


def _all_shop_ids(stack: PgStack) -> list[int]:
    with stack.source.connect() as conn:
        return [int(i) for (i,) in conn.execute("SELECT id FROM shops WHERE id NOT IN (0, 1682)").fetchall()]
