"""Tenant databases across two servers: the placement policy (least filled by bytes, caps, pins), a full server
refused in one line, the connection budget per server before each provisioning, the router's caps per server,
and the servers file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from handyshop_migration.tenancy.application.router import TenantRouter
from handyshop_migration.tenancy.errors import ConfigurationError, PlacementRefused
from handyshop_migration.tenancy.fleet.config import ConnectionPlan, load_fleet, parse_size
from handyshop_migration.tenancy.lifecycle import State
from handyshop_migration_tests.plugins.fleet import FleetWorld


def test_shops_go_to_the_least_filled_server_and_a_pin_holds(make_fleet_world: Callable[..., FleetWorld]) -> None:
    fw = make_fleet_world(shops=6, scale=0.05, seed=21, pins={})
    pinned = fw.shop_ids[-1]
    fw.fleet.pins[pinned] = "a"  # type: ignore[index]
    estimates = {s: fw.provisioner.estimate(s) for s in fw.shop_ids}
    assert len(set(estimates.values())) > 1  # the shops differ in size: the policy has something to weigh
    for shop in fw.shop_ids:
        fw.workflow.provision(shop)
    where = {s: fw.server_of(s) for s in fw.shop_ids}
    assert where[pinned] == "a"
    assert set(where.values()) == {"a", "b"}
    # the policy replayed: each unpinned shop went where the fewest bytes were when it was placed
    held = {"a": 0, "b": 0}
    for shop in fw.shop_ids:
        if shop != pinned:
            assert where[shop] == min(held, key=lambda s: (held[s], s)), (shop, held)
        held[where[shop]] += estimates[shop]
    # each database exists on its server only, the registry points there, and the tenant answers there
    assert fw.databases_on("a") == {s for s, srv in where.items() if srv == "a"}
    assert fw.databases_on("b") == {s for s, srv in where.items() if srv == "b"}
    for shop in fw.shop_ids:
        creds = fw.registry.get(shop)
        server = fw.fleet.server(where[shop]).admin
        assert (creds.host, creds.port) == (server.host, server.port)
        assert fw.provisioner.verify_access(shop).ok
        record = fw.lifecycle.get(shop)
        assert record.details["server"] == where[shop] and record.details["schema_version"] == "0001_tenant_schema"
    usage = fw.provisioner.placement.usage()
    assert {s: u.databases for s, u in usage.items()} == {s: list(where.values()).count(s) for s in ("a", "b")}
    # everything downstream follows the registry: a shop on b is copied and verified there
    on_b = next(s for s, srv in where.items() if srv == "b")
    report = fw.workflow.copy(on_b)
    assert report.verified and report.rows > 0
    with fw.admin_on(on_b, "b").connect() as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone()[0] > 0  # type: ignore[index]
    # and the way back from phase 1 frees its room
    fw.workflow.deprovision(on_b)
    assert on_b not in fw.databases_on("b") and fw.provisioner.placement.tenant_server(on_b) is None


def test_a_full_server_is_refused_with_why_and_nothing_is_created(make_fleet_world: Callable[..., FleetWorld]) -> None:
    fw = make_fleet_world(shops=4, scale=0.05, seed=22, servers={"a": {"max_databases": 1}, "b": {"max_databases": 1}})
    first, second, third, fourth = fw.shop_ids
    fw.workflow.provision(first)
    fw.workflow.provision(second)
    assert {fw.server_of(first), fw.server_of(second)} == {"a", "b"}
    with pytest.raises(PlacementRefused, match=rf"no tenant server can take shop {third} .*a: full: it holds 1 of 1 "
                       r"databases; b: full: it holds 1 of 1 databases\. Add a server"):
        fw.workflow.provision(third)
    assert fw.lifecycle.get(third).state == State.REGISTERED  # refused before anything started
    assert third not in fw.databases_on("a") | fw.databases_on("b") and fw.registry.find(third) is None
    # a pin to a full server is refused, never placed elsewhere
    pinned = make_fleet_world(shops=2, scale=0.05, seed=23, servers={"b": {"max_bytes": "1MB"}}, pins={})
    shop = pinned.shop_ids[0]
    pinned.fleet.pins[shop] = "b"  # type: ignore[index]
    with pytest.raises(PlacementRefused, match=rf"shop {shop} is pinned to server b, which cannot take it: full: 0 B "
                       r"held \+ .* > max_bytes 1\.0 MB\. Raise b's caps"):
        pinned.workflow.provision(shop)
    assert pinned.registry.find(shop) is None and shop not in pinned.databases_on("b")
    del fourth


def test_the_connection_budget_is_checked_per_server_before_each_provisioning(
    make_fleet_world: Callable[..., FleetWorld],
) -> None:
    fw = make_fleet_world(
        shops=4, scale=0.05, seed=24, servers={"b": {"max_connections": 25}},
        connections=ConnectionPlan(pool_size=10, app_instances=1, reserve=0),
    )
    budgets = {b.server: b for b in fw.provisioner.placement.budgets()}
    assert budgets["b"].usable == 25 and budgets["a"].usable > 100  # a: the server's own max_connections
    for shop in fw.shop_ids:
        fw.workflow.provision(shop)
    where = [fw.server_of(s) for s in fw.shop_ids]
    # b takes tenants while 10 more connections fit into its 25; then only a does
    assert 1 <= where.count("b") <= 2 and where.count("a") >= 2
    on_b = where.count("b")
    refused = fw.provisioner.placement.no_room(fw.fleet.server("b"), 0, fw.provisioner.placement.usage()["b"])
    assert "over its connection budget with one more tenant: " in refused
    assert f" + 0 reserve + {(on_b + 1) * 10} for {on_b + 1} tenants) of 25 (max_connections 25 configured)" in refused


def test_the_router_caps_its_pools_per_server(make_fleet_world: Callable[..., FleetWorld]) -> None:
    fw = make_fleet_world(shops=4, scale=0.05, seed=25, pins={})
    shops = fw.shop_ids
    for i, shop in enumerate(shops):
        fw.fleet.pins[shop] = "a" if i < 3 else "b"  # type: ignore[index]
        fw.workflow.provision(shop)
    a1, a2, a3, b1 = shops
    with TenantRouter(fw.registry, max_pools=10, max_pools_per_server=2, max_size=1) as router:
        for shop in (b1, a1, a2, a3):
            with router.connection(shop) as conn:
                conn.execute("SELECT 1")
        # a3 took the room of a1 (the least recently used pool on a); b's pool stayed
        assert router.open_shops == [b1, a2, a3]
        assert router.pools_per_server() == {"a": 2, "b": 1}


def test_the_servers_file_and_its_mistakes_in_one_line(tmp_path: Path) -> None:
    env = {"PG_A": "postgresql://admin:secret-a@10.0.0.1:5432/postgres", "PG_B": "postgresql://admin:s@10.0.0.2/postgres"}
    good = tmp_path / "servers.yaml"
    good.write_text(
        "servers:\n"
        "  - {name: pg-a, admin_url_env: PG_A, max_databases: 2000, max_bytes: 2TB, max_connections: 450}\n"
        "  - {name: pg-b, admin_url_env: PG_B, tenant_host: pg-b.internal, accept_new: false}\n"
        "placement: {pins: {17: pg-b}}\n"
        "connections: {pool_size: 5, app_instances: 2, max_pools_per_server: 100}\n"
        "schema_changes: {per_server: 3}\n"
    )
    fleet = load_fleet(good, env)
    a, b = fleet.servers
    assert (a.max_databases, a.max_bytes, a.max_connections, a.admin.host) == (2000, 2 * 1024**4, 450, "10.0.0.1")
    assert (b.tenant_host, b.accept_new, b.admin.port) == ("pg-b.internal", False, 5432)
    assert fleet.pins == {17: "pg-b"} and fleet.schema_per_server == 3
    assert fleet.connections.tenant_connections(500) == 2 * 5 * 100
    assert "secret-a" not in repr(fleet)
    assert parse_size("500MB", "x") == 500 * 1024**2 and parse_size("1.5 GiB", "x") == int(1.5 * 1024**3)
    bad = {
        "servers: []\n": "`servers:` must be a non-empty list",
        "servers:\n  - {name: a}\n": "server a: admin_url_env is missing",
        "servers:\n  - {name: a, admin_url_env: NOPE}\n": "server a: NOPE is not set",
        "servers:\n  - {name: a, admin_url_env: PG_A, max_bytes: lots}\n": "max_bytes: 'lots' is not a size",
        "servers:\n  - {name: a, admin_url_env: PG_A, color: red}\n": "unknown key color",
        "servers:\n  - {name: a, admin_url_env: PG_A}\nplacement: {pins: {3: z}}\n": "pinned to server 'z', which is not",
        "servers:\n  - {name: a, admin_url_env: PG_A}\n  - {name: a, admin_url_env: PG_B}\n": "a appear twice",
        "servers: [\n": "is not valid YAML",
    }
    for text, message in bad.items():
        file = tmp_path / "bad.yaml"
        file.write_text(text)
        with pytest.raises(ConfigurationError, match=message) as err:
            load_fleet(file, env)
        assert "\n" not in str(err.value) and "secret" not in str(err.value)
    with pytest.raises(ConfigurationError, match="no such file"):
        load_fleet(tmp_path / "missing.yaml", env)
