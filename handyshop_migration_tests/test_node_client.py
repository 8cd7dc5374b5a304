"""A real Node.js client (support/node/, the `pg` package) against real PostgreSQL: it opens the registry's password
tokens only for their own shop, and its writer puts every write where `route()` says — across a move of a shop to
its tenant database and back, each move refusing writes with HS001 for a while — with none lost and none doubled.

route() is the stub of support/route_stub.py until the lead's real function lands; the fences here are stand-ins
(a trigger raising HS001) for the real shared-side fence and the tenant's write guard.
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
    ConnectionRegistry,
    TenantCredentials,
    credential_context,
)
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.support.databases import drop_namespace, rows, unique_namespace
from handyshop_migration_tests.support.node import WRITER, WriterResult, node_binary, node_writer, run_module
from handyshop_migration_tests.support.route_stub import install_route_stub, set_route
from handyshop_migration_tests.support.tenants import (
    AWKWARD,
    SHARED_CUSTOMERS,
    create_login_role,
    create_tenant,
)

SHARED_ONLY, TENANT_ONLY, MOVING = 11, 12, 13

OPEN_TOKENS = """
import { readFileSync } from "node:fs";
import { decryptToken } from "./crypto.mjs";
const { cases } = JSON.parse(readFileSync(0, "utf8"));
const results = cases.map(({ token, keys, shop }) => {
  try { return { ok: decryptToken(token, keys, shop) }; } catch (e) { return { error: e.message }; }
});
console.log(JSON.stringify(results));
"""

SHARED_FENCE = """
CREATE TABLE stub_fence (shop_id integer PRIMARY KEY);
CREATE FUNCTION stub_fence_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM stub_fence WHERE shop_id = NEW.shop_id) THEN
        RAISE EXCEPTION 'shop % has moved to its own database', NEW.shop_id
            USING ERRCODE = 'HS001', HINT = 'ask route() again';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER customers_stub_fence BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION stub_fence_refuse();
"""
TENANT_GUARD = """
CREATE TABLE stub_guard (refuse boolean NOT NULL);
INSERT INTO stub_guard VALUES (false);
CREATE FUNCTION stub_guard_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT refuse FROM stub_guard) THEN
        RAISE EXCEPTION 'this shop''s writes go elsewhere now' USING ERRCODE = 'HS001', HINT = 'ask route() again';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER customers_stub_guard BEFORE INSERT ON customers FOR EACH STATEMENT EXECUTE FUNCTION stub_guard_refuse();
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
class World:
    shared: ConnectionSpec  # superuser on the shared database (plays the migration)
    app_url: Secret  # the application's role on the shared database
    key: Secret
    tenants: dict[int, TenantCredentials]


@pytest.fixture
def world(pg_server: ConnectionSpec, fresh_db: ConnectionSpec) -> Iterator[World]:
    namespace = unique_namespace()
    app_role, app_password = f"{namespace}app", f"app{AWKWARD}pw"
    key = generate_key()
    registry = ConnectionRegistry(fresh_db, CredentialCipher(key))
    try:
        registry.ensure_schema()
        create_login_role(pg_server, app_role, app_password)
        with fresh_db.connect() as conn:
            conn.execute(SHARED_CUSTOMERS)
            conn.execute(SHARED_FENCE.encode())
            for grant in (
                "GRANT SELECT, INSERT ON customers TO {}",
                "GRANT USAGE ON SEQUENCE customers_id_seq TO {}",
                "GRANT SELECT ON stub_fence TO {}",
            ):
                conn.execute(sql.SQL(grant).format(sql.Identifier(app_role)))
        install_route_stub(fresh_db, app_role=app_role)
        tenants = {}
        for shop in (TENANT_ONLY, MOVING):
            creds = tenants[shop] = create_tenant(pg_server, namespace, shop, f"t{shop}{AWKWARD}pw")
            registry.register(creds)
            with creds.spec().connect() as conn:
                conn.execute(TENANT_GUARD.encode())
        set_route(fresh_db, TENANT_ONLY, "tenant")
        app = fresh_db.with_user(app_role, Secret(app_password))
        yield World(fresh_db, app.url(), Secret(key), tenants)
    finally:
        registry.close()
        with fresh_db.connect() as conn:  # the app role's grants, so that it can be dropped
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(app_role)))
        drop_namespace(pg_server, namespace)


def fence_shared(world: World, shop: int, on: bool) -> None:
    query = "INSERT INTO stub_fence VALUES (%s)" if on else "DELETE FROM stub_fence WHERE shop_id = %s"
    with world.shared.connect() as conn:
        conn.execute(query, (shop,))


def guard_tenant(world: World, shop: int, refuse: bool) -> None:
    with world.tenants[shop].spec().connect() as conn:  # as the tenant role, as the migration would
        conn.execute("UPDATE stub_guard SET refuse = %s", (refuse,))


def landed(world: World, prefix: str) -> set[tuple[str, int, str, int]]:
    """(database, id, marker, shop) of every row a writer's markers are in, across every database."""
    pattern = prefix.replace("_", "\\_") + "%"
    found = {
        (world.shared.dbname, id_, marker, shop)
        for id_, marker, shop in rows(world.shared, "SELECT id, last_name, shop_id FROM customers WHERE last_name LIKE %s", (pattern,))
    }
    for shop, creds in world.tenants.items():
        found |= {
            (creds.database, id_, marker, shop)
            for id_, marker in rows(creds.spec(), "SELECT id, last_name FROM customers WHERE last_name LIKE %s", (pattern,))
        }
    return found


def writer_backends(world: World) -> list[str]:
    """The databases the writer holds connections to, one entry per connection."""
    return sorted(
        db for (db,) in rows(world.shared, "SELECT datname FROM pg_stat_activity WHERE application_name = 'handyshop-node-writer'")
    )


def wait_until(condition: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_writer_follows_route_across_a_move_and_back_without_losing_or_doubling(world: World, tmp_path: Path) -> None:
    def writes_of(shop: int, target: str, after: int = 0):  # noqa: ANN202 - a predicate factory
        return lambda rec: sum(1 for w in rec.writes[after:] if w["shop"] == shop and w["target"] == target) >= 5

    def refusals_of(shop: int, target: str):  # noqa: ANN202
        return lambda rec: sum(1 for r in rec.refused if r["shop"] == shop and r["target"] == target) >= 3

    with node_writer(
        control_url=world.app_url, key=world.key, shops=[SHARED_ONLY, TENANT_ONLY, MOVING], workdir=tmp_path
    ) as writer:
        writer.wait_for("5 writes of the moving shop to the shared database", writes_of(MOVING, "shared"))
        # the move: fence the shared side (writes refused), route to the tenant, lift the fence
        fence_shared(world, MOVING, True)
        writer.wait_for("3 refusals by the shared fence", refusals_of(MOVING, "shared"))
        set_route(world.shared, MOVING, "tenant")
        fence_shared(world, MOVING, False)
        writer.wait_for("5 writes of the moving shop to its tenant", writes_of(MOVING, "tenant"))
        # and back: the tenant refuses (its write guard), route to the shared database, lift the guard
        guard_tenant(world, MOVING, True)
        writer.wait_for("3 refusals by the tenant's guard", refusals_of(MOVING, "tenant"))
        set_route(world.shared, MOVING, "shared")
        guard_tenant(world, MOVING, False)
        after = len(writer.records().writes)
        writer.wait_for("5 writes of the moving shop back on the shared database", writes_of(MOVING, "shared", after))
        # its connection to the moving shop's tenant is closed: one to the shared database, one to the other tenant
        expected = sorted([world.shared.dbname, world.tenants[TENANT_ONLY].database])
        assert wait_until(lambda: writer_backends(world) == expected), writer_backends(world)
        result: WriterResult = writer.stop()

    record = result.record
    assert result.returncode == 0 and record.errors == [] and record.gave_up == [], result.stderr
    assert result.summary["writes"] == len(record.writes) and result.summary["refusals"] == len(record.refused)
    markers = [w["marker"] for w in record.writes]
    assert len(markers) == len(set(markers)), "a marker was recorded twice"
    # every recorded write is exactly one row where routing said, and every row of the writer was recorded
    database = {SHARED_ONLY: world.shared.dbname, **{s: c.database for s, c in world.tenants.items()}}
    recorded = {(w["dbname"], w["id"], w["marker"], w["shop"]) for w in record.writes}
    assert landed(world, writer.marker_prefix) == recorded
    assert all(w["dbname"] == (world.shared.dbname if w["target"] == "shared" else database[w["shop"]]) for w in record.writes)
    assert {w["target"] for w in record.writes if w["shop"] == SHARED_ONLY} == {"shared"}
    assert {w["target"] for w in record.writes if w["shop"] == TENANT_ONLY} == {"tenant"}
    moving = [target for target, _ in itertools.groupby(w["target"] for w in record.writes if w["shop"] == MOVING)]
    assert moving == ["shared", "tenant", "shared"]
    # each refused write was retried with the same marker and then landed once, on the other side
    by_marker = {w["marker"]: w for w in record.writes}
    for refusal in record.refused:
        assert refusal["shop"] == MOVING
        write = by_marker[refusal["marker"]]
        assert write["target"] != refusal["target"] and write["attempts"] > refusal["attempt"]


def test_writer_counts_other_errors_and_fails(world: World, tmp_path: Path) -> None:
    # the tenant's customers table is gone: route() still says tenant, so every write of that shop fails
    with world.tenants[TENANT_ONLY].spec().connect() as conn:
        conn.execute("DROP TABLE customers")
    with node_writer(
        control_url=world.app_url, key=world.key, shops=[TENANT_ONLY], workdir=tmp_path, max_writes=1, duration_ms=3000
    ) as writer:
        writer.wait_for("3 errors", lambda rec: len(rec.errors) >= 3)
        result = writer.stop()
    assert result.returncode == 1 and result.record.writes == []
    assert result.summary["errors"] == len(result.record.errors) >= 3
    assert {e["sqlstate"] for e in result.record.errors} == {"42P01"}
    assert "relation \"customers\" does not exist" in result.stderr and "[SQLSTATE 42P01]" in result.stderr
    assert world.app_url.reveal() not in result.stderr and world.tenants[TENANT_ONLY].password.reveal() not in result.stderr


def test_writer_refuses_missing_settings_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [node_binary(), str(WRITER)], env={"PATH": "/usr/bin:/bin", "SHOPS": "1", "OUT": str(tmp_path / "o")},
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "writer: CONTROL_URL is not set; set it to postgresql://ROLE:PASSWORD@HOST:PORT/SHARED_DB"
    ]
