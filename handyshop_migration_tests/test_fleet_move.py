"""A live shop's tenant database moved from one server to the other while the application keeps writing:
nothing lost (every row as the application left it, checksums equal on both servers), the routing function
and the registry follow, the way back works the same way, and the phase-4 rollback still finds every write
the shop's tenant took on either server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import psycopg
import pytest

from handyshop_migration.devtools.simulation import SimulatedApp
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConnectionFailed, LifecycleRefused, MoveRefused
from handyshop_migration.tenancy.fleet.move import TenantMover
from handyshop_migration.tenancy.lifecycle import State
from handyshop_migration_tests.plugins.fleet import FleetWorld
from handyshop_migration_tests.support.application import routed_app, wait_for_writes, writing


@contextmanager
def _app(fw: FleetWorld, seed: int) -> Iterator[SimulatedApp]:
    with routed_app(fw.source, fw.world.cipher, fw.shop_ids, seed=seed, ttl=0.3) as app:
        yield app


def _wait(app: SimulatedApp, more: int, timeout: float = 120.0) -> None:
    wait_for_writes(app, sum(app.writes.values()) + more, timeout)


def _home(fw: FleetWorld) -> Callable[[int], tuple[ConnectionSpec, bool]]:
    def home(shop: int) -> tuple[ConnectionSpec, bool]:
        if fw.lifecycle.get(shop).writes == "tenant":
            return fw.workflow.tenant(shop), False
        return fw.source, True

    return home


def test_a_live_tenant_moves_to_the_other_server_under_writes_and_back(make_fleet_world: Callable[..., FleetWorld]) -> None:
    fw = make_fleet_world(shops=3, scale=0.05, seed=31, pins={})
    for shop in fw.shop_ids:
        fw.fleet.pins[shop] = "a"  # type: ignore[index]
        fw.live(shop)
    shop, other = fw.shop_ids[0], fw.shop_ids[1]
    mover = TenantMover(fw.workflow)
    version = fw.lifecycle.get(shop).version
    with _app(fw, seed=6) as app:
        with writing(app):
            _wait(app, 150)  # writes into the live tenants on a
            report = mover.move(shop, "b")
            assert report.changes_applied > 0 and report.rows_copied > 0
            assert [v.describe() for v in report.verification if not v.ok] == []
            assert len(report.verification) == len(fw.catalog.tables)
            record = fw.lifecycle.get(shop)
            assert (record.state, record.writes, record.version) == (State.LIVE, "tenant", version + 1)
            assert fw.server_of(shop) == "b" and fw.provisioner.placement.tenant_server(shop) == "b"
            _wait(app, 150)  # the shop's writes land on b now
            assert app.resolver.resolve(shop, "write").spec.port == fw.admins["b"].port
        # the shop's rows are on b as the app left them; the other shops never moved
        found = app.verify(_home(fw))
        assert {s: r.missing for s, r in found.items() if r.missing} == {}
        assert found[shop].rows > 0 and fw.server_of(other) == "a"
        # the old copy on a is fenced and closed to the application, kept as the way back
        with pytest.raises(psycopg.Error) as err, fw.admin_on(shop, "a").connect() as old:
            old.execute("UPDATE customers SET phone = 'stale' WHERE id = (SELECT min(id) FROM customers)")
        assert err.value.sqlstate == "HS001"
        with pytest.raises(ConnectionFailed, match="permission denied for database"):
            _app_login_on(fw, shop, "a")
        with writing(app):
            _wait(app, 100)
            # the way back: only b's writes since the flip go back to a, then the same cut over
            back = mover.move_back(shop)
            assert back.back and back.rows_copied == 0 and back.changes_applied > 0
            assert [v.table for v in back.verification if not v.ok] == []
            assert fw.server_of(shop) == "a"
            _wait(app, 150)
        assert app.errors == []
        found = app.verify(_home(fw))
        assert {s: r.missing for s, r in found.items() if r.missing} == {}
        # the phase-4 way back after two moves copies back every write the tenant took on a and on b
        rolled = fw.workflow.roll_back_cutover(shop)
        assert rolled.changes_drained > 0 and [v.table for v in rolled.verification if not v.ok] == []
        found = app.verify(_home(fw))
        assert found[shop].missing == [] and found[shop].rows > 0
    # the old copy on b is dropped only with its name typed, and frees b's room
    with pytest.raises(MoveRefused, match=f"confirm with the database name, {fw.database(shop)}"):
        mover.drop_old_copy(shop, confirm="yes")
    mover.drop_old_copy(shop, confirm=fw.database(shop))
    assert shop not in fw.databases_on("b")
    assert [d.server for d in fw.provisioner.placement.databases(shop)] == ["a"]
    history = [h.transition for h in fw.lifecycle.history(shop)]
    assert history[-6:] == ["start_move", "finish_move", "start_move", "finish_move", "start_rollback", "finish_rollback"]


def _app_login_on(fw: FleetWorld, shop: int, server: str) -> None:
    """The application role logs in to the shop's database on `server` (whatever the registry says)."""
    admin = fw.admins[server]
    replace(fw.registry.get(shop).spec(), host=admin.host, port=admin.port).connect().close()


def test_a_move_is_refused_from_the_wrong_state_and_a_failed_gate_leaves_the_shop(
    make_fleet_world: Callable[..., FleetWorld],
) -> None:
    fw = make_fleet_world(shops=2, scale=0.05, seed=32, pins={})
    shop, early = fw.shop_ids
    fw.fleet.pins[shop] = "a"  # type: ignore[index]
    fw.fleet.pins[early] = "a"  # type: ignore[index]
    fw.live(shop)
    fw.migrate(early)
    mover = TenantMover(fw.workflow)
    with pytest.raises(LifecycleRefused, match=f"shop {early} is verified: it cannot start move"):
        mover.move(early, "b")
    with pytest.raises(MoveRefused, match="is on a already"):
        mover.move(shop, "a")
    # someone changed the target behind the move's back: verification refuses, the shop stays on a, writable
    original = mover._copy

    def tampered(source, dest, origin, shop_id):  # type: ignore[no-untyped-def]
        rows = original(source, dest, origin, shop_id)
        with fw.admin_on(shop_id, "b").connect() as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute("DELETE FROM newsletter_subscribers WHERE id = (SELECT min(id) FROM newsletter_subscribers)")
            conn.commit()
        return rows

    mover._copy = tampered  # type: ignore[method-assign]
    with pytest.raises(MoveRefused, match=f"shop {shop}: b does not equal a after the drain: newsletter_subscribers"):
        mover.move(shop, "b")
    record = fw.lifecycle.get(shop)
    assert (record.state, fw.server_of(shop)) == (State.LIVE, "a")
    assert record.details["move"]["step"] == "aborted"
    with fw.workflow.tenant(shop).connect() as conn:  # the origin takes writes again
        conn.execute("SELECT 1")
    with fw.registry.get(shop).spec().connect() as conn:
        conn.execute("UPDATE customers SET phone = phone WHERE id = (SELECT min(id) FROM customers)")
        conn.commit()
    # a rerun copies afresh and goes through
    mover._copy = original  # type: ignore[method-assign]
    report = mover.move(shop, "b")
    assert fw.server_of(shop) == "b" and report.state == "live"
