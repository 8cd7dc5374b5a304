"""The shop lifecycle: every transition from every state it allows, every refusal from a state it does not,
and a transition interrupted midway leaves every record as it was."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConfigurationError, LifecycleRefused
from handyshop_migration.tenancy.lifecycle import TRANSITIONS, Lifecycle, State
from handyshop_migration.tenancy.names import control

# The target a transition takes when it depends on the call (where a step returns to).
CHOSEN = {"verified": State.VERIFIED, "stop_capture": State.VERIFIED, "close_reads": State.SYNCING,
          "abort_cutover": State.SYNCING, "finish_move": State.LIVE, "abort_move": State.RETIRED}
ROUTES = {State.READS_ROLLOUT: ("rollout", "shared"), State.CUTTING_OVER: ("shared", "shared"), State.LIVE: ("tenant", "tenant"),
          State.ROLLING_BACK: ("tenant", "tenant"), State.RETIRING: ("tenant", "tenant"), State.RETIRED: ("tenant", "tenant"),
          State.RESTORING: ("tenant", "tenant"), State.MOVING: ("tenant", "tenant")}


@pytest.fixture
def lifecycle(fresh_db: ConnectionSpec) -> Lifecycle:
    lc = Lifecycle(fresh_db)
    lc.ensure_schema()
    lc.ensure_schema()  # idempotent
    return lc


def _put(lc: Lifecycle, shop: int, state: State) -> None:
    """Test-only: put a shop into a state directly (with routes that fit it)."""
    reads, writes = ROUTES.get(state, ("shared", "shared"))
    with lc.control.connect() as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (shop_id, state, reads, writes, captured) VALUES (%s, %s, %s, %s, true) "
                "ON CONFLICT (shop_id) DO UPDATE SET state = excluded.state, reads = excluded.reads, writes = excluded.writes"
            ).format(control("shop_lifecycle")),
            (shop, state.value, reads, writes),
        )
        conn.commit()


def _snapshot(lc: Lifecycle, shop: int) -> tuple[object, ...]:
    with lc.control.connect() as conn:
        row = conn.execute(sql.SQL("SELECT * FROM {} WHERE shop_id = %s").format(control("shop_lifecycle")), (shop,)).fetchone()
        history = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE shop_id = %s").format(control("shop_history")), (shop,)).fetchone()
    return (row, history)


@pytest.mark.parametrize("name", sorted(n for n in TRANSITIONS if n != "register"))
def test_each_transition_goes_from_its_states_and_refuses_all_others(lifecycle: Lifecycle, name: str) -> None:
    transition = TRANSITIONS[name]
    reads = "rollout" if name == "open_reads" else None
    for number, state in enumerate(State, start=1):
        shop = 1000 + number
        _put(lifecycle, shop, state)
        before = _snapshot(lifecycle, shop)
        if state in transition.sources:
            after = lifecycle.apply(shop, name, reason=f"test {name}", target=CHOSEN.get(name), reads=reads)
            expected = transition.target or CHOSEN[name]
            assert after.state == expected, (name, state)
            if transition.reads:
                assert after.reads == transition.reads
            if transition.writes:
                assert after.writes == transition.writes
            history = lifecycle.history(shop)
            if name == "synced" and state == expected:
                assert history == []  # a sync of a syncing shop is not a transition: no history row per sync
            else:
                entry = history[-1]
                assert (entry.transition, entry.from_state, entry.to_state) == (name, state.value, expected.value)
        else:
            with pytest.raises(LifecycleRefused, match=rf"shop {shop} is {state.value}: it cannot"):
                lifecycle.apply(shop, name, reason=f"test {name}", target=CHOSEN.get(name), reads=reads)
            with pytest.raises(LifecycleRefused):
                lifecycle.check(shop, name)
            assert _snapshot(lifecycle, shop) == before


def test_register_is_idempotent_and_starts_every_shop_on_the_shared_database(lifecycle: Lifecycle) -> None:
    assert lifecycle.register([3, 1, 2]) == [1, 2, 3]
    assert lifecycle.register([2, 4]) == [4]
    records = lifecycle.all()
    assert [(r.shop_id, r.state, r.reads, r.writes) for r in records] == [
        (s, State.REGISTERED, "shared", "shared") for s in (1, 2, 3, 4)
    ]
    assert [e.transition for e in lifecycle.history(2)] == ["register"]
    assert [r.shop_id for r in lifecycle.all([2, 4, 9])] == [2, 4]


def test_an_unknown_shop_or_transition_is_refused_in_one_line(lifecycle: Lifecycle) -> None:
    with pytest.raises(LifecycleRefused, match="shop 77 is not registered for migration.*register it first"):
        lifecycle.apply(77, "start_provisioning", reason="x")
    with pytest.raises(LifecycleRefused, match="shop 77 is not registered"):
        lifecycle.get(77)
    assert lifecycle.find(77) is None
    lifecycle.register([77])
    with pytest.raises(ConfigurationError, match="unknown lifecycle transition 'fly'"):
        lifecycle.apply(77, "fly", reason="x")
    with pytest.raises(ConfigurationError, match="needs a reason"):
        lifecycle.apply(77, "start_provisioning", reason=" ")


def test_routing_changes_bump_the_version_and_the_read_percentage_moves_rollout_shops(lifecycle: Lifecycle) -> None:
    _put(lifecycle, 5, State.SYNCING)
    _put(lifecycle, 6, State.SYNCING)
    v0 = lifecycle.get(5).version
    opened = lifecycle.apply(5, "open_reads", reads="rollout", reason="reads by percentage")
    assert (opened.reads, opened.version) == ("rollout", v0 + 1)
    same = lifecycle.apply(5, "open_reads", reads="rollout", reason="again")
    assert same.version == v0 + 1  # no routing change, no new version
    lifecycle.set_read_percent(40, "test")
    assert lifecycle.read_percent() == 40
    assert lifecycle.get(5).version == v0 + 2 and lifecycle.get(6).version == v0  # only rollout shops re-ask
    with pytest.raises(ConfigurationError, match="0..100"):
        lifecycle.set_read_percent(101, "too much")


def test_an_interrupted_transition_leaves_every_record_as_it_was(lifecycle: Lifecycle) -> None:
    _put(lifecycle, 8, State.SYNCING)
    before = _snapshot(lifecycle, 8)

    def fence_then_fail(conn: psycopg.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS effect_probe (shop bigint)")
        conn.execute("INSERT INTO effect_probe VALUES (8)")
        raise RuntimeError("the process died midway")

    with pytest.raises(RuntimeError, match="died midway"):
        lifecycle.apply(8, "start_cutover", reason="cut over", effects=[fence_then_fail])
    assert _snapshot(lifecycle, 8) == before
    with lifecycle.control.connect() as conn:
        assert conn.execute("SELECT to_regclass('effect_probe')").fetchone() == (None,)  # the effect went with it
    # and a failure after the effect, in the record's own write, takes the effect back too
    with lifecycle.control.connect() as conn:
        conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT no_live CHECK (state <> 'cutting_over')").format(control("shop_lifecycle")))
        conn.commit()
    with pytest.raises(psycopg.errors.CheckViolation):
        lifecycle.apply(8, "start_cutover", reason="cut over", effects=[lambda c: c.execute("CREATE TABLE effect_probe2 ()")])
    assert _snapshot(lifecycle, 8) == before
    with lifecycle.control.connect() as conn:
        assert conn.execute("SELECT to_regclass('effect_probe2')").fetchone() == (None,)


def test_the_whole_path_and_every_way_back_in_order(lifecycle: Lifecycle) -> None:
    lifecycle.register([9])
    path = [
        ("start_provisioning", None), ("finish_provisioning", None), ("start_copy", None), ("finish_copy", None),
        ("verified", State.VERIFIED), ("synced", None), ("open_reads", None), ("start_cutover", None),
        ("finish_cutover", None), ("start_rollback", None), ("finish_rollback", None), ("start_cutover", None),
        ("finish_cutover", None), ("start_retirement", None), ("finish_retirement", None), ("start_restore", None),
        ("finish_restore", None),
    ]
    for name, target in path:
        lifecycle.apply(9, name, reason=name, target=target, reads="rollout" if name == "open_reads" else None)
    final = lifecycle.get(9)
    assert (final.state, final.reads, final.writes) == (State.LIVE, "tenant", "tenant")
    states = [e.to_state for e in lifecycle.history(9)]
    assert states[0] == "registered" and states[-1] == "live" and len(states) == len(path) + 1
    assert [e.transition for e in lifecycle.history(9)][1:] == [n for n, _ in path]
