"""Capture on the Handyshop schema, piece by piece: triggers that follow the captured shops, the lease
fence and its races, the tenant write guard and tenant capture run by the tenant role itself (owner of its
tables, no superuser, granted SET ON PARAMETER session_replication_role), the bounded sync under a
sustained writer, and the incremental verification of touched keys.

The tests of this module share one shared database and one tenant (shop 2) and run in file order; each
leaves capture as it found it (shop 2 captured, not fenced)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from handyshop_migration.devtools.seed import TENANT_TABLES, seed_database
from handyshop_migration.tenancy.db import replaying
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import Catalog, introspect
from handyshop_migration.tenancy.engine.copy import copy_shop, refuse_if_live
from handyshop_migration.tenancy.engine.tenant_schema import render
from handyshop_migration.tenancy.engine.verification import verify_tables
from handyshop_migration.tenancy.errors import CaptureError, CopyError, PrivilegeMissing
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    unique_namespace,
)

SHOP = 2
OTHER = 3
PASSWORD = "capture-test-password"


@dataclass
class World:
    admin: ConnectionSpec
    source: ConnectionSpec  # superuser: the migration
    app: ConnectionSpec  # an application role of the shared database: DML only, owns nothing
    tenant: ConnectionSpec  # the tenant role on its own database: owner of its tables, not a superuser
    tenant_role: str
    catalog: Catalog


def _one(spec: ConnectionSpec, query: str, params: tuple[object, ...] = ()) -> object:
    with spec.connect() as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return row[0]


@pytest.fixture(scope="module")
def world(pg_server: ConnectionSpec) -> Iterator[World]:
    source = create_database(pg_server, "t_capture_src")
    ns = unique_namespace()
    role, app_role = ns + "shop_user_2", ns + "app"
    tenant_db = ns + "shop_2_db"
    try:
        seed_database(source, shops=3, scale=0.05, seed=5)
        catalog = introspect(source, include=TENANT_TABLES)
        with pg_server.connect(autocommit=True) as conn:
            for name in (role, app_role):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(PASSWORD)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(tenant_db), sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(sql.Identifier(role)))
        with source.connect() as conn:
            conn.execute(sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {r}; "
                "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {r}"
            ).format(r=sql.Identifier(app_role)))
            conn.commit()
        tenant = pg_server.with_db(tenant_db).with_user(role, Secret(PASSWORD))
        with tenant.connect() as conn:  # the tenant role builds its own schema: it owns every object
            conn.execute(render(catalog).script().encode())  # type: ignore[call-overload]
            conn.commit()
        w = World(pg_server, source, source.with_user(app_role, Secret(PASSWORD)), tenant, role, catalog)
        with source.connect() as conn:
            assert capture.enable(conn, catalog, SHOP)
        copy_shop(source, tenant, render(catalog), SHOP)  # as the tenant role, in replica mode
        yield w
    finally:
        drop_database(pg_server, source.dbname)
        with pg_server.connect(autocommit=True) as conn:  # a parameter grant keeps a role from being dropped
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("REVOKE SET ON PARAMETER session_replication_role FROM {}").format(sql.Identifier(role)))
        drop_namespace(pg_server, ns)


def _entries(w: World, shop: int) -> list[tuple[str, str, dict]]:
    with w.source.connect() as conn:
        return [
            (str(t), str(o), k)
            for t, o, k in conn.execute(
                "SELECT table_name, op, key FROM handyshop_capture.changes WHERE shop_id = %s ORDER BY id", (shop,)
            ).fetchall()
        ]


def _sync(w: World) -> capture.SyncResult:
    return capture.apply_changes(capture.TO_TENANT, w.source, w.tenant, w.catalog, SHOP)


def _customer(spec: ConnectionSpec, shop: int) -> int:
    return int(_one(spec, "SELECT min(id) FROM customers WHERE shop_id = %s", (shop,)))  # type: ignore[call-overload]


def _capture_triggers(conn: psycopg.Connection) -> dict[str, str]:
    rows = conn.execute(
        "SELECT tgrelid::regclass::text || '.' || tgname, pg_get_triggerdef(oid) FROM pg_trigger "
        "WHERE tgname LIKE 'handyshop\\_capture%%' AND NOT tgisinternal"
    ).fetchall()
    conn.rollback()
    return {str(a): str(b) for a, b in rows}


# -- item 1: triggers that follow the captured shops ------------------------------------------------------


def test_triggers_name_the_captured_shops_and_go_with_the_last(world: World) -> None:
    w = world
    with w.source.connect() as conn:
        triggers = _capture_triggers(conn)
        assert len(triggers) == 4 * len(w.catalog.tables)
        assert "WHEN ((new.shop_id = ANY ('{2}'::bigint[])))" in triggers["customers.handyshop_capture_ins"]
        # no shop's writes are checked against a fence: the fast path logs without calling admit()
        assert triggers["customers.handyshop_capture_ins"].endswith("('-')")
        # nothing of ours runs with the owner's rights
        assert conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'handyshop_capture'::regnamespace AND prosecdef"
        ).fetchone() == (0,)
    _sync(w)
    mine, other = _customer(w.source, SHOP), _customer(w.source, OTHER)
    # the application's role (owns nothing, no definer function helps it) writes both shops
    with w.app.connect() as app:
        app.execute("UPDATE customers SET city = 'Graz' WHERE id IN (%s, %s)", (mine, other))
        app.execute("INSERT INTO customers (first_name, last_name, phone, shop_id) VALUES ('a', 'b', 'c', %s)", (OTHER,))
        app.commit()
    assert _entries(w, SHOP) == [("customers", "U", {"id": mine})]
    assert _entries(w, OTHER) == []
    # a row moving out of the captured shop leaves it; one moving in enters it
    with w.app.connect() as app:
        app.execute("UPDATE customers SET shop_id = %s WHERE id = %s", (OTHER, mine))
        app.execute("UPDATE customers SET shop_id = %s WHERE id = %s", (SHOP, other))
        app.commit()
    assert _entries(w, SHOP)[1:] == [("customers", "D", {"id": mine}), ("customers", "U", {"id": other})]
    assert _entries(w, OTHER) == []
    with w.app.connect() as app:  # and back, for the other tests
        app.execute("UPDATE customers SET shop_id = %s WHERE id = %s", (SHOP, mine))
        app.execute("UPDATE customers SET shop_id = %s WHERE id = %s", (OTHER, other))
        app.commit()
    result = _sync(w)
    assert result.lag.pending == 0 and result.upserted == 1  # "other" was never in the tenant: nothing to delete
    with w.source.connect() as src, w.tenant.connect() as dst:
        assert [v.describe() for v in verify_tables(src, dst, w.catalog, SHOP) if not v.ok] == []

    with w.source.connect() as conn:
        capture.enable(conn, w.catalog, OTHER)
        assert "'{2,3}'::bigint[]" in _capture_triggers(conn)["repairs.handyshop_capture_upd"]
        capture.disable(conn, OTHER)
        assert "'{2}'::bigint[]" in _capture_triggers(conn)["repairs.handyshop_capture_upd"]
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("TRUNCATE newsletter_subscribers")
        assert refused.value.sqlstate == capture.TRUNCATE_SQLSTATE
        conn.rollback()
        capture.disable(conn, SHOP)  # the way back from phase 3 of the last captured shop
        assert _capture_triggers(conn) == {}
        conn.execute("TRUNCATE newsletter_subscribers")  # allowed again (rolled back)
        conn.rollback()
        capture.enable(conn, w.catalog, SHOP)
    copy_shop(w.source, w.tenant, render(w.catalog), SHOP)


# -- item 5: the lease fence --------------------------------------------------------------------------------


def _in_thread(fn: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except BaseException as exc:  # handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _update_customer(spec: ConnectionSpec, cid: int, value: str, *, isolation: str = "READ COMMITTED") -> str:
    with spec.connect() as conn:
        conn.execute(sql.SQL("SET TRANSACTION ISOLATION LEVEL {}").format(sql.SQL(isolation)))
        conn.execute("UPDATE customers SET city = %s WHERE id = %s", (value, cid))
        conn.commit()
    return value


def test_fenced_writes_wait_for_the_fence_and_go_through_when_it_lifts(world: World) -> None:
    w, cid = world, _customer(world.source, SHOP)
    with w.source.connect() as conn:
        state = capture.fence(conn, SHOP, "cutover test", lease_seconds=30, max_wait_ms=20_000)
        assert state.fenced and not state.permanent and not state.expired
        assert _capture_triggers(conn)["repairs.handyshop_capture_del"].endswith("('2')")  # checks shop 2 now
        assert capture.is_fenced(conn, SHOP) and not capture.is_fenced(conn, OTHER)
    thread, out = _in_thread(lambda: _update_customer(w.app, cid, "Wartend"))
    time.sleep(0.5)
    assert thread.is_alive() and out == []  # waiting inside its UPDATE
    _update_customer(w.app, _customer(w.source, OTHER), "frei")  # another shop is not held
    with w.source.connect() as conn:
        capture.unfence(conn, SHOP)
        assert _capture_triggers(conn)["repairs.handyshop_capture_del"].endswith("('-')")
    thread.join(10)
    assert out == ["Wartend"]
    assert ("customers", "U", {"id": cid}) in _entries(w, SHOP)
    assert _sync(w).lag.pending == 0


def test_the_wait_is_bounded_and_the_refusal_says_what_to_do(world: World) -> None:
    w, cid = world, _customer(world.source, SHOP)
    with w.source.connect() as conn:
        capture.fence(conn, SHOP, "short fence", lease_seconds=30, max_wait_ms=150)
    started = time.monotonic()
    with pytest.raises(psycopg.Error) as refused:
        _update_customer(w.app, cid, "zu spät")
    assert time.monotonic() - started >= 0.15
    assert refused.value.sqlstate == capture.FENCE_SQLSTATE
    assert f"shop {SHOP}'s writes are paused" in refused.value.diag.message_primary  # type: ignore[operator]
    assert "Retry" in (refused.value.diag.message_hint or "") and "route(" in (refused.value.diag.message_hint or "")
    with w.source.connect() as conn:
        capture.renew(conn, SHOP, lease_seconds=30)
        capture.unfence(conn, SHOP)
        assert not capture.fence_state(conn, SHOP).fenced
    assert _entries(w, SHOP) == []  # the refused write left nothing


def test_the_lease_can_be_set_and_lifted_inside_the_callers_transaction(world: World) -> None:
    """The lifecycle's pattern: the fence is one effect of a transition's transaction."""
    w, cid = world, _customer(world.source, SHOP)
    with w.source.connect() as conn:
        with pytest.raises(CaptureError, match="prepare_fence"), conn.transaction():
            capture.set_fence(conn, SHOP, "lifecycle: cutting over")  # the triggers do not check the shop yet
        capture.prepare_fence(conn, SHOP)
        assert _update_customer(w.app, cid, "geprüft, frei") == "geprüft, frei"  # checked, but no lease: flows
        with conn.transaction():
            capture.set_fence(conn, SHOP, "lifecycle: cutting over", lease_seconds=30, max_wait_ms=100)
            assert _update_customer(w.app, cid, "noch frei") == "noch frei"  # not committed: nothing fenced yet
        capture.wait_for_older_transactions(conn)
        with pytest.raises(psycopg.Error) as refused:
            _update_customer(w.app, cid, "gesperrt")
        assert refused.value.sqlstate == capture.FENCE_SQLSTATE
        with conn.transaction():
            capture.clear_fence(conn, SHOP)
        assert _update_customer(w.app, cid, "wieder frei") == "wieder frei"
        assert not capture.fence_state(conn, SHOP).fenced
        capture.unfence(conn, SHOP)  # outside a transaction: the triggers stop checking the shop too
        assert _capture_triggers(conn)["customers.handyshop_capture_upd"].endswith("('-')")
    assert _sync(w).lag.pending == 0


def test_a_lease_that_runs_out_lets_writes_flow_and_cannot_be_made_permanent(world: World) -> None:
    w, cid = world, _customer(world.source, SHOP)
    with w.source.connect() as conn:
        capture.fence(conn, SHOP, "a cutover that dies", lease_seconds=0.3)
    time.sleep(0.4)  # the cutover process is gone; nobody renews
    assert _update_customer(w.app, cid, "wieder frei") == "wieder frei"
    assert ("customers", "U", {"id": cid}) in _entries(w, SHOP)
    with w.source.connect() as conn:
        state = capture.fence_state(conn, SHOP)
        assert state.expired and not state.fenced
        with pytest.raises(CaptureError, match="lease ran out"):
            capture.renew(conn, SHOP)
        with pytest.raises(CaptureError, match="lease ran out"), conn.transaction():
            capture.make_permanent(conn, SHOP)
        capture.unfence(conn, SHOP)
    _sync(w)


def test_make_permanent_commits_with_the_callers_transaction_then_refuses_as_moved(world: World) -> None:
    w, cid = world, _customer(world.source, SHOP)
    with w.source.connect() as conn:
        capture.fence(conn, SHOP, "final flip", lease_seconds=30, max_wait_ms=20_000)
        with pytest.raises(CaptureError, match="not applied to the tenant"), conn.transaction():
            with w.source.connect() as older:  # a change still in the log: the drain is not done
                older.execute("INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) "
                              "VALUES (%s, 'customers', 'U', %s)", (SHOP, psycopg.types.json.Jsonb({"id": cid})))
                older.commit()
            capture.make_permanent(conn, SHOP)
    _sync(w)
    with w.source.connect() as flip:
        flip.execute("CREATE TEMP TABLE routing_change (shop int)")
        flip.commit()
        thread = None
        with flip.transaction():
            capture.make_permanent(flip, SHOP, reason="live on the tenant")
            flip.execute("INSERT INTO routing_change VALUES (%s)", (SHOP,))  # the routing change, same transaction
            thread, out = _in_thread(lambda: _update_customer(w.app, cid, "vor dem Flip"))
            time.sleep(0.4)
            assert thread.is_alive()  # the lease still runs until the flip commits: the write waits
        thread.join(10)
    assert len(out) == 1 and isinstance(out[0], psycopg.Error) and out[0].sqlstate == capture.FENCE_SQLSTATE
    assert f"shop {SHOP} has moved to its own database" in str(out[0])
    assert "route(" in (out[0].diag.message_hint or "")
    with w.source.connect() as conn:
        state = capture.fence_state(conn, SHOP)
        assert state.permanent and state.fenced
        with pytest.raises(CaptureError, match="fenced"):
            capture.disable(conn, SHOP)
        capture.unfence(conn, SHOP)
    assert _entries(w, SHOP) == []


def test_a_write_passing_the_run_out_lease_and_the_flip_never_both_win(world: World) -> None:
    """The race of architecture.md: a write that finds the lease run out while the flip commits."""
    w, cid = world, _customer(world.source, SHOP)
    # (a) the writer passes first (the lease ran out) and is still open: the flip waits for it, then refuses
    with w.source.connect() as conn:
        capture.fence(conn, SHOP, "slow cutover", lease_seconds=0.3)
    time.sleep(0.4)
    writer = w.app.connect()
    writer.execute("UPDATE customers SET city = 'durchgerutscht' WHERE id = %s", (cid,))  # passes, not committed
    flipping, out = _in_thread(lambda: _flip(w.source))
    time.sleep(0.4)
    assert flipping.is_alive()  # make_permanent waits for the writer that passed
    writer.commit()
    writer.close()
    flipping.join(10)
    assert len(out) == 1 and isinstance(out[0], CaptureError) and "lease ran out" in str(out[0])
    assert ("customers", "U", {"id": cid}) in _entries(w, SHOP)  # the write is not lost: it is in the log
    _sync(w)
    # (b) the flip holds its lock when the lease runs out: the writer waits for it and is refused as moved
    with w.source.connect() as conn:
        capture.fence(conn, SHOP, "fast flip", lease_seconds=0.5)
    with w.source.connect() as flip:
        with flip.transaction():
            capture.make_permanent(flip, SHOP)
            time.sleep(0.6)  # the lease has run out, the flip has not committed yet
            thread, got = _in_thread(lambda: _update_customer(w.app, cid, "zu spät"))
            time.sleep(0.3)
            assert thread.is_alive()
        thread.join(10)
    assert len(got) == 1 and isinstance(got[0], psycopg.Error) and got[0].sqlstate == capture.FENCE_SQLSTATE
    assert "has moved to its own database" in str(got[0])
    # (c) REPEATABLE READ cannot see a newer flip: on a run-out lease it is told to retry
    with w.source.connect() as conn:
        capture.unfence(conn, SHOP)
        capture.fence(conn, SHOP, "rr", lease_seconds=0.2)
    time.sleep(0.3)
    with pytest.raises(psycopg.Error) as refused:
        _update_customer(w.app, cid, "rr", isolation="REPEATABLE READ")
    assert refused.value.sqlstate == capture.FENCE_SQLSTATE and "paused" in str(refused.value)
    with w.source.connect() as conn:
        capture.unfence(conn, SHOP)
    assert _sync(w).lag.pending == 0


def _flip(source: ConnectionSpec) -> None:
    with source.connect() as flip, flip.transaction():
        capture.make_permanent(flip, SHOP)


# -- items 3 and 4: the tenant side, as the tenant role -------------------------------------------------------


def test_the_tenant_guard_refuses_writes_until_live_and_during_the_way_back(world: World) -> None:
    w = world
    with w.tenant.connect() as conn:
        state = capture.install_tenant_guard(conn, w.catalog, SHOP)
        assert (state.shop_id, state.state) == (SHOP, "not live")
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("INSERT INTO customers (first_name, last_name, phone) VALUES ('x', 'y', 'z')")
        assert refused.value.sqlstate == capture.FENCE_SQLSTATE
        assert f"shop {SHOP}'s database is not live yet" in refused.value.diag.message_primary  # type: ignore[operator]
        assert "handyshop_migration.route(" in (refused.value.diag.message_hint or "")
        conn.rollback()
        with pytest.raises(psycopg.Error):
            conn.execute("TRUNCATE newsletter_subscribers")
        conn.rollback()
        with replaying(conn):  # the migration's replays pass
            conn.execute("UPDATE customers SET city = city WHERE id = (SELECT min(id) FROM customers)")
        refuse_if_live(conn, SHOP)  # not live: a copy may reload it
        capture.open_tenant_writes(conn, w.catalog, SHOP, "cutover")
        conn.execute("UPDATE customers SET city = city WHERE id = (SELECT min(id) FROM customers)")
        conn.commit()
        with pytest.raises(CopyError, match="is live"):
            refuse_if_live(conn, SHOP)
        state = capture.close_tenant_writes(conn, SHOP, "rollback of the cutover")
        assert state.state == "closed"
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("DELETE FROM customers WHERE false")
        assert "is moving back to the shared database" in str(refused.value)
        conn.rollback()
        with pytest.raises(CopyError, match="is live"):  # it still holds writes the shared side lacks
            refuse_if_live(conn, SHOP)
        assert capture.end_tenant_live(conn, SHOP, "back on shared").state == "not live"
        refuse_if_live(conn, SHOP)
        assert capture.tenant_guard_state(conn).reason == "back on shared"  # type: ignore[union-attr]
    with pytest.raises(CaptureError, match="shop 2, not to shop 3"), w.tenant.connect() as conn:
        capture.install_tenant_guard(conn, w.catalog, OTHER)


def test_tenant_capture_and_the_way_back_run_as_the_tenant_role(world: World) -> None:
    w = world
    with w.tenant.connect() as conn:
        capture.enable_tenant_capture(conn, w.catalog, SHOP)
        capture.open_tenant_writes(conn, w.catalog, SHOP, "live")
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(proowner), prosecdef FROM pg_proc "
            "WHERE pronamespace = 'handyshop_migration'::regnamespace"
        ).fetchall()
        assert owners == [(w.tenant_role, False)]  # created by the tenant role, no definer rights
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
        # ids from a block the shared database will not hand out (what the cutover's reserve_ids does)
        conn.execute("SELECT setval(pg_get_serial_sequence('customers', 'id'), 5000000)")
        # the application (the tenant role) writes: keys are logged
        new_id = conn.execute(
            "INSERT INTO customers (first_name, last_name, phone) VALUES ('Im', 'Tenant', '9') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE customers SET city = 'Wels' WHERE id = (SELECT min(id) FROM customers)")
        conn.execute("DELETE FROM newsletter_subscribers WHERE id = (SELECT min(id) FROM newsletter_subscribers)")
        conn.commit()
        ops = conn.execute("SELECT table_name, op FROM handyshop_migration.changes ORDER BY id").fetchall()
        assert ops == [("customers", "I"), ("customers", "U"), ("newsletter_subscribers", "D")]
        # an application role that owns nothing (data only) writes too: its keys are logged with its own rights
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(
            sql.Identifier(w.app.user)))
        conn.commit()
    with w.tenant.with_user(w.app.user, Secret(PASSWORD)).connect() as app:
        app.execute("UPDATE customers SET zip_code = '4020' WHERE id = %s", (new_id,))
        app.commit()
    with w.tenant.connect() as conn:
        assert capture.tenant_lag(conn).pending == 4
        conn.execute("DELETE FROM handyshop_migration.changes WHERE id = (SELECT max(id) FROM handyshop_migration.changes)")
        conn.commit()
        with replaying(conn):  # a replay is not a change of the tenant's
            conn.execute("UPDATE customers SET city = city")
        assert capture.tenant_lag(conn).pending == 3
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("TRUNCATE newsletter_subscribers")
        assert refused.value.sqlstate == capture.TRUNCATE_SQLSTATE
        conn.rollback()
        capture.close_tenant_writes(conn, SHOP, "way back")
    with w.source.connect() as conn:
        capture.fence(conn, SHOP, "live elsewhere")
        with conn.transaction():
            capture.make_permanent(conn, SHOP)
    back = capture.apply_changes(capture.TO_SHARED, w.tenant, w.source, w.catalog, SHOP)
    assert (back.changes, back.upserted, back.deleted, back.lag.pending) == (3, 2, 1, 0)
    assert _one(w.source, "SELECT shop_id FROM customers WHERE id = %s", (new_id,)) == SHOP
    with w.source.connect() as src, w.tenant.connect() as dst:
        assert [v.describe() for v in verify_tables(src, dst, w.catalog, SHOP) if not v.ok] == []
    with w.source.connect() as conn:
        capture.unfence(conn, SHOP)
    with w.tenant.connect() as conn:
        capture.end_tenant_live(conn, SHOP, "back")
        capture.disable_tenant_capture(conn, w.catalog)
    # without the grant, replaying says which one is missing
    with w.admin.connect(autocommit=True) as su:
        su.execute(sql.SQL("REVOKE SET ON PARAMETER session_replication_role FROM {}").format(sql.Identifier(w.tenant_role)))
    try:
        with w.tenant.connect() as conn, pytest.raises(PrivilegeMissing, match="GRANT SET ON PARAMETER"):
            with replaying(conn):
                pass
    finally:
        with w.admin.connect(autocommit=True) as su:
            su.execute(sql.SQL("GRANT SET ON PARAMETER session_replication_role TO {}").format(sql.Identifier(w.tenant_role)))
    assert _sync(w).lag.pending == 0


# -- item 6: the bounded sync ---------------------------------------------------------------------------------


class _Writer:
    """Keeps writing the shop's rows in the shared database (inserts and updates, autocommit)."""

    def __init__(self, spec: ConnectionSpec) -> None:
        self.spec, self.stop, self.writes = spec, threading.Event(), 0
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            with self.spec.connect(autocommit=True) as conn:
                while not self.stop.is_set():
                    conn.execute(
                        "INSERT INTO customers (first_name, last_name, phone, shop_id) VALUES ('Last', 'Test', %s, %s)",
                        (str(self.writes), SHOP),
                    )
                    conn.execute("UPDATE customers SET zip_code = %s WHERE id = (SELECT max(id) FROM customers "
                                 "WHERE shop_id = %s)", (str(self.writes), SHOP))
                    self.writes += 1
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def wait_for(self, writes: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.writes < writes:
            assert not self.errors and time.monotonic() < deadline, self.errors or f"only {self.writes} writes"
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def test_the_sync_ends_at_its_watermark_under_a_sustained_writer(world: World) -> None:
    w = world
    with _Writer(w.app) as writer:
        writer.wait_for(50)
        result = capture.apply_changes(capture.TO_TENANT, w.source, w.tenant, w.catalog, SHOP, batch_size=20)
        during = writer.writes
        writer.wait_for(during + 20)  # the writer went on after the sync's end
    assert writer.errors == []
    assert result.stopped == "watermark" and result.changes >= 100 and result.rounds >= 5
    # it consumed exactly what its watermark snapshot saw: everything left arrived after it started
    left = _one(
        w.source,
        "SELECT count(*) FILTER (WHERE pg_visible_in_snapshot(xid, %s::pg_snapshot)) FROM handyshop_capture.changes "
        "WHERE shop_id = %s",
        (result.watermark, SHOP),
    )
    assert left == 0
    with w.source.connect() as conn:
        assert capture.lag(conn, SHOP).pending > 0  # and that is the next round's
    final = _sync(w)
    assert final.lag.pending == 0 and final.stopped == "watermark"
    with w.source.connect() as src, w.tenant.connect() as dst:
        assert [v.describe() for v in verify_tables(src, dst, w.catalog, SHOP) if not v.ok] == []


def test_the_pre_fence_sync_stops_when_the_lag_is_small_enough(world: World) -> None:
    w = world
    with w.source.connect() as conn:
        conn.execute(
            "INSERT INTO customers (first_name, last_name, phone, shop_id) "
            "SELECT 'Stapel', 'Kunde', g::text, %s FROM generate_series(1, 1200) g",
            (SHOP,),
        )
        conn.commit()
    early = capture.apply_changes(capture.TO_TENANT, w.source, w.tenant, w.catalog, SHOP, until_pending_below=2000)
    assert (early.rounds, early.stopped, early.lag.pending) == (0, "pending below 2000", 1200)
    short = capture.apply_changes(
        capture.TO_TENANT, w.source, w.tenant, w.catalog, SHOP, until_pending_below=500, batch_size=200
    )
    assert (short.rounds, short.changes, short.stopped, short.lag.pending) == (4, 800, "pending below 500", 400)
    with _Writer(w.app) as writer:
        writer.wait_for(20)
        busy = capture.apply_changes(capture.TO_TENANT, w.source, w.tenant, w.catalog, SHOP, until_pending_below=100)
    assert writer.errors == [] and busy.stopped in ("pending below 100", "watermark") and busy.changes >= 300
    assert _sync(w).lag.pending == 0


# -- item 7: the incremental verification ---------------------------------------------------------------------


def test_incremental_verification_compares_the_touched_keys(world: World) -> None:
    w = world
    with w.source.connect() as conn:
        touched = capture.touched_keys(conn, SHOP)
    assert len(touched["customers"]) > 1000  # everything the syncs of this module applied
    with w.source.connect() as src, w.tenant.connect() as dst:
        assert [v.describe() for v in capture.verify_touched(src, dst, w.catalog, SHOP) if not v.ok] == []
        cid = touched["customers"][0]["id"]
        with replaying(dst):  # the tenant drifts on a touched key (something bypassed the guard)
            dst.execute("UPDATE customers SET city = 'falsch' WHERE id = %s", (cid,))
        bad = [v for v in capture.verify_touched(src, dst, w.catalog, SHOP) if not v.ok]
        assert [v.table for v in bad] == ["customers"] and bad[0].source.rows == bad[0].tenant.rows
        only = capture.verify_keys(src, dst, w.catalog, SHOP, {"customers": [{"id": cid}], "repairs": []})
        assert [(v.table, v.ok, v.source.rows) for v in only] == [("customers", False, 1), ("repairs", True, 0)]
        with replaying(dst):
            dst.execute("DELETE FROM customers WHERE id = %s", (cid,))
        gone = capture.verify_keys(src, dst, w.catalog, SHOP, {"customers": [{"id": cid}]})
        assert (gone[0].source.rows, gone[0].tenant.rows) == (1, 0)
    copy_shop(w.source, w.tenant, render(w.catalog), SHOP)
    with w.source.connect() as conn:
        assert capture.forget_touched(conn, SHOP) == sum(len(keys) for keys in touched.values())
        assert capture.touched_keys(conn, SHOP) == {}
