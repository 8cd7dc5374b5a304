"""A real Node.js client (support/node/, the `pg` package) against real PostgreSQL: it opens the registry's password
tokens only for their own shop, and its writer puts every write where `route()` says — across a move of a shop to
its tenant database and back, each move refusing writes with HS001 for a while — with none lost and none doubled.

The routing is the real one: `handyshop_migration.route()` in the shared database, the lifecycle's cutover and
rollback, the shared-side fence and the tenant's refusal during the rollback.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql

from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import (
    credential_context,
)
from handyshop_migration.tenancy.application.routing import grant_route
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.plugins.worlds import World
from handyshop_migration_tests.support.databases import rows
from handyshop_migration_tests.support.node import WRITER, WriterResult, node_binary, node_writer, run_module
from handyshop_migration_tests.support.tenants import AWKWARD, create_login_role

OPEN_TOKENS = """
import { readFileSync } from "node:fs";
import { decryptToken } from "./crypto.mjs";
const { cases } = JSON.parse(readFileSync(0, "utf8"));
const results = cases.map(({ token, keys, shop }) => {
  try { return { ok: decryptToken(token, keys, shop) }; } catch (e) { return { error: e.message }; }
});
console.log(JSON.stringify(results));
"""

def test_node_opens_registry_tokens_only_for_their_shop_and_key() -> None:
    key, old, other = generate_key(), generate_key(), generate_key()
    password = f"Zq7{AWKWARD}ünï"
    current = CredentialCipher(key, [old])
    token = current.encrypt(password, context=credential_context(5))
    old_token = CredentialCipher(old).encrypt(password, context=credential_context(5))
    results = run_module(OPEN_TOKENS, {"cases": [
        {"token": token, "keys": key, "shop": 5},
        {"token": old_token, "keys": [key, old], "shop": 5},  # during a rotation: the key id picks the old key
        {"token": token, "keys": key, "shop": 6},  # copied onto another shop's row
        {"token": token, "keys": other, "shop": 5},  # another key
        {"token": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"), "keys": key, "shop": 5},
        {"token": "v1.not-a-token", "keys": key, "shop": 5},
    ]})
    assert results[0] == {"ok": password} and results[1] == {"ok": password}
    assert "failed authentication" in results[2]["error"] and "shop 6" in results[2]["error"]
    assert f"key id {current.key_id}" in results[3]["error"], results[3]
    assert "failed authentication" in results[4]["error"]
    assert "not a registry token" in results[5]["error"]
    for result in results[2:]:
        assert password not in result["error"] and key not in result["error"] and token not in result["error"]


@dataclass
class AppWorld:
    world: World
    app_url: Secret  # the application's role on the shared database: customers and route() only
    key: Secret


@pytest.fixture
def app_world(make_world: Callable[..., World]) -> Iterator[AppWorld]:
    world = make_world(shops=3, scale=0.03, seed=21, prefix="t_node_src")
    app_role, app_password = f"{world.namespace}app", f"app{AWKWARD}pw"
    create_login_role(world.admin, app_role, app_password)
    with world.source.connect() as conn:
        for grant in ("GRANT SELECT, INSERT ON customers TO {}", "GRANT USAGE ON SEQUENCE customers_id_seq TO {}"):
            conn.execute(sql.SQL(grant).format(sql.Identifier(app_role)))
        conn.commit()
        grant_route(conn, app_role)
    try:
        yield AppWorld(world, world.source.with_user(app_role, Secret(app_password)).url(), world.key)
    finally:
        with world.source.connect() as conn:  # the app role's grants, so that it can be dropped with the namespace
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(app_role)))
            conn.commit()


def landed(world: World, prefix: str) -> set[tuple[str, int, str, int]]:
    """(database, id, marker, shop) of every row a writer's markers are in, where each shop lives now (its tenant
    once live, else the shared database: after a rollback the tenant keeps a stale copy nobody reads)."""
    pattern = prefix.replace("_", "\\_") + "%"
    homes = {s: world.lifecycle.get(s).writes for s in world.shop_ids}
    found = {
        (world.source.dbname, id_, marker, shop)
        for id_, marker, shop in rows(world.source, "SELECT id, last_name, shop_id FROM customers WHERE last_name LIKE %s", (pattern,))
        if homes.get(shop) == "shared"
    }
    for shop in (s for s, home in homes.items() if home == "tenant"):
        creds = world.registry.get(shop)
        found |= {
            (creds.database, id_, marker, shop)
            for id_, marker in rows(world.tenant(shop), "SELECT id, last_name FROM customers WHERE last_name LIKE %s", (pattern,))
        }
    return found


def writer_backends(world: World) -> list[str]:
    """The databases the writer holds connections to, one entry per connection."""
    return sorted(
        db for (db,) in rows(world.admin, "SELECT datname FROM pg_stat_activity WHERE application_name = 'handyshop-node-writer'")
    )


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_writer_follows_route_across_a_real_cutover_and_rollback(app_world: AppWorld, tmp_path: Path) -> None:
    world = app_world.world
    stays, moving, live = world.shop_ids
    for shop in world.shop_ids:
        world.migrate(shop)
        world.workflow.sync(shop)
    world.workflow.cut_over(live)

    def writes_of(shop: int, target: str, after: int = 0):  # noqa: ANN202 - a predicate factory
        return lambda rec: sum(1 for w in rec.writes[after:] if w["shop"] == shop and w["target"] == target) >= 5

    with node_writer(control_url=app_world.app_url, key=app_world.key, shops=world.shop_ids, workdir=tmp_path) as writer:
        writer.wait_for("5 writes of the moving shop to the shared database", writes_of(moving, "shared"))
        world.workflow.cut_over(moving)  # fence, drain, verify, flip: the writer's next writes go to the tenant
        writer.wait_for("5 writes of the moving shop to its tenant", writes_of(moving, "tenant"))
        world.workflow.roll_back_cutover(moving)  # the tenant refuses, its writes go back, routing follows
        after = len(writer.records().writes)
        writer.wait_for("5 writes of the moving shop back on the shared database", writes_of(moving, "shared", after))
        # its connection to the moving shop's tenant is closed: one to the shared database, one to the live tenant
        expected = sorted([world.source.dbname, world.registry.get(live).database])
        assert wait_until(lambda: writer_backends(world) == expected), writer_backends(world)
        result: WriterResult = writer.stop()

    record = result.record
    assert result.returncode == 0 and record.errors == [] and record.gave_up == [], result.stderr
    markers = [w["marker"] for w in record.writes]
    assert len(markers) == len(set(markers)), "a marker was recorded twice"
    # every recorded write is exactly one row where routing said (after the rollback copied the tenant's writes back,
    # the moving shop's rows are all in the shared database), and every row of the writer was recorded
    def home(w: dict[str, object]) -> str:
        shop = int(w["shop"])  # type: ignore[call-overload]
        return world.registry.get(shop).database if shop == live else world.source.dbname

    recorded = {(home(w), w["id"], w["marker"], w["shop"]) for w in record.writes}
    assert landed(world, writer.marker_prefix) == recorded
    assert {w["target"] for w in record.writes if w["shop"] == stays} == {"shared"}
    assert {w["target"] for w in record.writes if w["shop"] == live} == {"tenant"}
    sequence = [target for target, _ in itertools.groupby(w["target"] for w in record.writes if w["shop"] == moving)]
    assert sequence == ["shared", "tenant", "shared"]
    # refused writes (the fence of each move) were retried with the same marker and landed once, on the other side
    by_marker = {w["marker"]: w for w in record.writes}
    for refusal in record.refused:
        assert refusal["shop"] == moving
        write = by_marker[refusal["marker"]]
        assert write["target"] != refusal["target"] and write["attempts"] > refusal["attempt"]


def test_writer_counts_other_errors_and_fails(app_world: AppWorld, tmp_path: Path) -> None:
    world = app_world.world
    shop = world.shop_ids[0]
    world.migrate(shop)
    world.workflow.sync(shop)
    world.workflow.cut_over(shop)
    # the tenant's customers table is gone: route() still says tenant, so every write of that shop fails
    with world.tenant(shop).connect() as conn:
        conn.execute("DROP TABLE customers CASCADE")
        conn.commit()
    with node_writer(
        control_url=app_world.app_url, key=app_world.key, shops=[shop], workdir=tmp_path, max_writes=1, duration_ms=3000
    ) as writer:
        writer.wait_for("3 errors", lambda rec: len(rec.errors) >= 3)
        result = writer.stop()
    assert result.returncode == 1 and result.record.writes == []
    assert result.summary["errors"] == len(result.record.errors) >= 3
    assert {e["sqlstate"] for e in result.record.errors} == {"42P01"}
    assert "relation \"customers\" does not exist" in result.stderr and "[SQLSTATE 42P01]" in result.stderr
    assert app_world.app_url.reveal() not in result.stderr and world.registry.get(shop).password.reveal() not in result.stderr


def test_writer_refuses_missing_settings_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [node_binary(), str(WRITER)], env={"PATH": "/usr/bin:/bin", "SHOPS": "1", "OUT": str(tmp_path / "o")},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "writer: CONTROL_URL is not set; set it to postgresql://ROLE:PASSWORD@HOST:PORT/SHARED_DB"
    ]
