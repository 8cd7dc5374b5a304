"""Dagster as operators touch it: the code server, webserver and daemon of docker-compose.yml (their own
commands, the Postgres-backed dagster.yaml) on 127.0.0.1, the new-shops sensor run by the real daemon,
partitions launched over GraphQL as the UI launches them, what lands in Dagster's Postgres storage, and a
real browser (Debian's Chromium, driven by Playwright) materializing one shop's table from the UI.

Screenshots go to test-artifacts/ui/ (git-ignored); docs/ui-check-partition.png in the README is one of them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from handyshop_migration.definitions import build_definitions
from handyshop_migration.devtools.seed import TENANT_TABLES, add_shop
from handyshop_migration.pipeline import phase1, phase2
from handyshop_migration.pipeline.phase2 import PARITY_CHECKS
from handyshop_migration.pipeline.runner import register_shops, run_job
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration_tests.setup_machine import CHROMIUM, SETUP_COMMAND
from handyshop_migration_tests.support.dagster_services import (
    ARTIFACTS,
    Deployment,
    Services,
    drop_deployment,
    environment,
    graphql,
    loaded_location,
    prepare_deployment,
    run_errors,
    running_services,
    storage_rows,
    wait_for,
    wait_run,
)

pytestmark = pytest.mark.slow

# As the machine's notes prescribe for Debian's Chromium as root in a sandbox without network: no
# background connections (they would be refused, many at a time), no first-run UI.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
SHOTS = ARTIFACTS / "ui"
TABLE = "customers"  # the tenant table the browser materializes
RUN_TIMEOUT = 150  # seconds; a shop's whole run takes ~10 s here, more while three run at once

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

LAUNCH_BACKFILL = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
  }
}
"""

BACKFILL = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status runs(limit: 5) { runId status } }
  }
}
"""

RUNS_FOR_PARTITION = """
query($partition: String!) {
  runsOrError(filter: {tags: [{key: "dagster/partition", value: $partition}]}) {
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""


@dataclass
class Launched:
    """What the module started at once, so that the waits overlap (the backfill daemon looks every 30 s)."""

    sensor_shop: int
    graphql_shop: int
    graphql_run: str
    backfill_shop: int
    backfill_id: str


@dataclass
class Stack:
    deployment: Deployment
    services: Services
    launched: Launched

    @property
    def url(self) -> str:
        return self.services.url

    def wait_success(self, run_id: str) -> None:
        status = wait_run(self.url, run_id, RUN_TIMEOUT, diagnose=self.services.logs)
        if status != "SUCCESS":
            errors = self.deployment.redact(run_errors(self.url, run_id))
            raise AssertionError(f"run {run_id} ended {status}:\n{errors}\n{self.services.logs()}")


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def _migration_assets(url: str) -> list[list[str]]:
    """The assets of phases 1-2 (what migrate_shop selects), as "Materialize all" in their groups selects them."""
    query = "query { assetNodes { assetKey { path } groupName isPartitioned } }"
    nodes = graphql(url, query)["assetNodes"]
    keys = [n["assetKey"]["path"] for n in nodes if n["groupName"] in (phase1.GROUP, phase2.GROUP)]
    assert keys and all(n["isPartitioned"] for n in nodes if n["assetKey"]["path"] in keys)
    return keys


def _launch(stack_dep: Deployment, services: Services) -> Launched:
    a, b = stack_dep.shop_ids[:2]
    # A shop signs up: only the daemon's sensor can notice it.
    new_shop = add_shop(stack_dep.source, name="Neu & Schnell 📱", seed=3, scale=0.03)
    repository = loaded_location(services.url)["repositories"][0]["name"]  # type: ignore[index]
    # A partitioned run of the job, as the UI's launchpad (and "Launch 1 run") launches it.
    launched = graphql(services.url, LAUNCH_RUN, {"params": {
        "selector": {"repositoryLocationName": "handyshop_migration", "repositoryName": repository,
                     "jobName": "migrate_shop"},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": str(a)}]},
        "runConfigData": {},
    }})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    # An asset backfill of one shop, as the UI's partition dialog launches several.
    backfill = graphql(services.url, LAUNCH_BACKFILL, {"params": {
        "partitionNames": [str(b)],
        "assetSelection": [{"path": p} for p in _migration_assets(services.url)],
        "fromFailure": False,
    }})["launchPartitionBackfill"]
    assert backfill["__typename"] == "LaunchBackfillSuccess", backfill
    return Launched(new_shop, a, launched["run"]["runId"], b, backfill["backfillId"])


@pytest.fixture(scope="module")
def stack(pg_server: ConnectionSpec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = time.monotonic()
    root = tmp_path_factory.mktemp("ui")
    dep = prepare_deployment(pg_server, root, shops=3, scale=0.03)
    try:
        # Phase 0 in this process, on the same Postgres-backed instance: the sensor waits for it.
        with environment(dep.environment):
            instance = dg.DagsterInstance.get()
            try:
                phase0 = run_job(build_definitions(environ=dict(os.environ)), instance, "prepare_source")
                assert phase0.success, phase0.failures
                # The existing shops are partitions (as `handyshop-migration dev` registers them); only a
                # shop that signs up later is the sensor's.
                register_shops(instance, dep.shop_ids)
            finally:
                instance.dispose()
        with running_services(dep, root / "logs") as services:
            print(f"\n[test_ui] stack ready in {time.monotonic() - started:.1f}s")
            yield Stack(dep, services, _launch(dep, services))
    finally:
        drop_deployment(dep)


def _sensor_run(stack: Stack) -> dict[str, Any] | None:
    runs = graphql(stack.url, RUNS_FOR_PARTITION, {"partition": str(stack.launched.sensor_shop)})
    found = [r for r in runs["runsOrError"]["results"] if _tags(r).get("dagster/sensor_name") == "new_shops_sensor"]
    return found[0] if found else None


def test_a_shop_that_signs_up_is_added_and_migrated_by_the_daemons_sensor(stack: Stack) -> None:
    shop = str(stack.launched.sensor_shop)
    run = wait_for("new_shops_sensor to launch a run for the new shop", lambda: _sensor_run(stack), 90,
                   interval=1, diagnose=stack.services.logs)
    tags = _tags(run)
    assert tags["dagster/run_key"] == f"shop-{shop}" and tags["handyshop/shop"] == shop
    stack.wait_success(run["runId"])
    partitions = storage_rows(stack.deployment, "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'shops'")
    assert shop in {p for (p,) in partitions}
    # exactly one run for the shop, whatever the number of ticks since (the run key)
    assert len(graphql(stack.url, RUNS_FOR_PARTITION, {"partition": shop})["runsOrError"]["results"]) == 1


def test_partitions_launched_over_graphql_succeed(stack: Stack) -> None:
    stack.wait_success(stack.launched.graphql_run)

    def backfill_run() -> str | None:
        result = graphql(stack.url, BACKFILL, {"id": stack.launched.backfill_id})["partitionBackfillOrError"]
        assert result["__typename"] == "PartitionBackfill", result
        return result["runs"][0]["runId"] if result["runs"] else None

    run_id = wait_for("the backfill daemon to launch the backfill's run", backfill_run, 90, interval=1,
                      diagnose=stack.services.logs)
    stack.wait_success(run_id)
    run = graphql(stack.url, RUNS_FOR_PARTITION, {"partition": str(stack.launched.backfill_shop)})
    assert [_tags(r).get("dagster/backfill") for r in run["runsOrError"]["results"]] == [stack.launched.backfill_id]


def _storage_asset_key(key: list[str]) -> str:
    return json.dumps(key)  # how dagster-postgres stores an asset key (AssetKey.to_string())


def _finished_runs(dep: Deployment, shop: int) -> list[tuple[str, str]] | None:
    """The runs of one shop partition, from the `runs` table, once there are some and all have ended."""
    runs = storage_rows(dep, "SELECT r.run_id, r.status FROM runs r JOIN run_tags t ON t.run_id = r.run_id "
                             "WHERE t.key = 'dagster/partition' AND t.value = %s", [str(shop)])
    return runs if runs and all(st in ("SUCCESS", "FAILURE", "CANCELED") for _, st in runs) else None


def test_runs_materializations_and_partition_checks_are_in_postgres_storage(stack: Stack) -> None:
    dep = stack.deployment
    shops = [stack.launched.sensor_shop, stack.launched.graphql_shop, stack.launched.backfill_shop]
    # everything migrate_shop materializes (phases 1-2), and the parity gates of every table
    expected = {_storage_asset_key(k) for k in _migration_assets(stack.url)}
    assert {_storage_asset_key(["tenant", t]) for t in TENANT_TABLES} | {_storage_asset_key(["shop_verified"])} <= expected
    parity = {(_storage_asset_key(["tenant", t]), c) for t in TENANT_TABLES for c in PARITY_CHECKS}
    for shop in shops:
        runs = wait_for(f"shop {shop}'s run to finish", lambda s=shop: _finished_runs(dep, s), RUN_TIMEOUT, interval=1)
        assert [st for _, st in runs] == ["SUCCESS"], (shop, runs)  # one run per shop, and it succeeded
        run_ids = [r for r, _ in runs]
        materialized = {k for (k,) in storage_rows(
            dep, "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                 "AND partition = %s AND run_id = %s", [str(shop), run_ids[0]])}
        assert materialized == expected, (shop, expected ^ materialized)
        checks = storage_rows(dep, "SELECT asset_key, check_name, execution_status FROM asset_check_executions "
                                   "WHERE partition = %s AND run_id = %s", [str(shop), run_ids[0]])
        # every gate recorded for this shop's partition and passed: both parity checks of every table,
        # tenant_access of its database
        assert {s for _, _, s in checks} == {"SUCCEEDED"}, checks
        gates = {(k, c) for k, c, _ in checks}
        assert len(gates) == len(checks), checks
        assert parity | {(_storage_asset_key(["tenant_database"]), "tenant_access")} <= gates, (shop, gates)
    # the phase 0 run of this test is in the same storage (one instance for in-process and launched runs)
    assert storage_rows(dep, "SELECT count(*) FROM runs WHERE pipeline_name = 'prepare_source' AND status = 'SUCCESS'") == [(1,)]


def test_the_overview_sensor_records_shops_per_state_for_the_ui(stack: Stack) -> None:
    """migration_overview, recorded by its sensor on the daemon: the shops per state and the failed ones."""
    key = _storage_asset_key(["migration_overview"])
    stack.wait_success(stack.launched.graphql_run)  # one shop verified at least

    def latest() -> str | None:
        rows = storage_rows(stack.deployment, "SELECT event FROM event_logs WHERE asset_key = %s AND "
                                              "dagster_event_type = 'ASSET_MATERIALIZATION' ORDER BY id DESC LIMIT 1", [key])
        text = str(rows[0][0]) if rows else ""
        return text if "| verified | 2 |" in text else None

    text = wait_for("migration_overview_sensor to record a verified shop", latest, 90, interval=1,
                    diagnose=stack.services.logs)
    assert "**all**" in text and "**Failed:" in text and "**Stale" in text, text[:2000]
    nodes = graphql(stack.url, "query { assetNodes { assetKey { path } groupName } }")["assetNodes"]
    assert {"assetKey": {"path": ["migration_overview"]}, "groupName": "overview"} in nodes


# -- a real browser ---------------------------------------------------------------------------------------------


def _chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} not found: the browser test drives Debian's Chromium (Playwright's own browser download "
            f"cannot work here). Install it with: {SETUP_COMMAND}",
            pytrace=False,
        )
    return CHROMIUM


def _shot(page: Any, name: str) -> Path:
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def _step(page: Any, name: str, action: Callable[[], None]) -> None:
    """One UI step; on failure a screenshot of what the browser showed, then the error."""
    try:
        action()
    except Exception:
        _shot(page, f"failed-{name}")
        raise


def test_browser_materializes_one_shop_partition_and_sees_its_checks_pass(stack: Stack, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = _chromium()
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    shop = str(stack.launched.graphql_shop)
    stack.wait_success(stack.launched.graphql_run)  # the shop has its tenant database and every table
    url = stack.url
    expect.set_options(timeout=30_000)

    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(chromium), args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1440, "height": 900},
        )
        try:
            page = context.new_page()

            # 1. The asset graph around the tenant table.
            page.goto(f"{url}/assets/tenant/{TABLE}?view=lineage")
            _step(page, "asset-graph", lambda: expect(page.get_by_text("tenant_database").first).to_be_visible())
            page.wait_for_timeout(1000)  # the graph animates into place
            _shot(page, "01-asset-graph")

            # 2. Materialize, for one shop partition chosen in the UI's own dialog.
            page.get_by_role("button", name="Materialize…").click()
            dialog = page.get_by_role("dialog")
            _step(page, "dialog", lambda: expect(dialog.get_by_text(f"Launch runs to materialize tenant / {TABLE}")).to_be_visible())
            dialog.get_by_text("Select a partition or create one").click()
            page.get_by_placeholder("Filter partitions").fill(shop)
            page.get_by_role("menuitem").filter(has=page.locator(f'[data-tooltip="{shop}"]')).click()
            dialog.get_by_text(f"Launch runs to materialize tenant / {TABLE}").click()  # closes the picker
            launch = dialog.get_by_role("button", name="Launch 1 run")
            _step(page, "partition", lambda: expect(launch).to_be_enabled())
            expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
            _shot(page, "02-partition-selected")
            launch.click()

            # 3. Follow the toast to the run and wait for it to succeed.
            toast = page.get_by_text("Launched run")
            _step(page, "launched", lambda: expect(toast).to_be_visible())
            page.get_by_role("link", name="View", exact=True).click()
            page.wait_for_url(re.compile(r".*/runs/[0-9a-f-]{36}$"))
            run_id = page.url.rsplit("/", 1)[1]
            _step(page, "run", lambda: expect(page.get_by_text("Success", exact=True).first).to_be_visible(
                timeout=RUN_TIMEOUT * 1000))
            expect(page.get_by_text(f"partition: {shop}")).to_be_visible()
            _shot(page, "03-run-succeeded")

            # 4. The asset's partitions: this shop materialized.
            page.goto(f"{url}/assets/tenant/{TABLE}")
            page.get_by_role("tab", name="Partitions").click()
            page.get_by_placeholder("Filter by name").fill(shop)
            page.get_by_title(shop, exact=True).last.click()
            _step(page, "partition-view", lambda: expect(page.get_by_role("link", name=run_id[:8])).to_be_visible())
            _shot(page, "04-partition-materialized")

            # 5. The checks tab: both parity gates passed for this partition, in this run.
            page.get_by_role("tab", name="Checks").click()
            for check in PARITY_CHECKS:
                page.get_by_text(check, exact=True).first.click()
                page.locator("button[role=tab]", has_text="Partitions").click()
                page.get_by_placeholder("Filter by partition").fill(shop)
                page.get_by_title(shop, exact=True).last.click()
                _step(page, f"check-{check}", lambda: expect(page.get_by_role("link", name=run_id[:8])).to_be_visible())
                expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
                _shot(page, f"05-check-{check}")
        finally:
            context.close()

    # What the browser showed is what the storage holds: this run, this partition, both gates passed.
    status = storage_rows(stack.deployment, "SELECT status FROM runs WHERE run_id = %s", [run_id])
    assert status == [("SUCCESS",)]
    checks = storage_rows(stack.deployment, "SELECT check_name, execution_status, partition FROM asset_check_executions "
                                            "WHERE run_id = %s ORDER BY check_name", [run_id])
    assert checks == sorted((c, "SUCCEEDED", shop) for c in PARITY_CHECKS)
    assert sorted(p.name for p in SHOTS.glob("0*.png")) == [
        "01-asset-graph.png", "02-partition-selected.png", "03-run-succeeded.png", "04-partition-materialized.png",
        *(f"05-check-{c}.png" for c in sorted(PARITY_CHECKS)),
    ]
