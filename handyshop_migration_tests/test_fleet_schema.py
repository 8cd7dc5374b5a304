"""Tenant schema changes across the fleet: a new migration file reaches every shop on both servers (as each
shop's owner role), one failing shop stops only itself and shows stale until it is retried alone, shops
provisioned later get every migration, and a migration that would break a shop's capture is refused with why."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from handyshop_migration.tenancy.engine.migrations import applied_migrations
from handyshop_migration.tenancy.errors import SchemaChangeRefused
from handyshop_migration.tenancy.fleet.contract import changes
from handyshop_migration.tenancy.fleet.schema_changes import SchemaChanges
from handyshop_migration_tests.plugins.fleet import FleetWorld

LOYALTY = "ALTER TABLE customers ADD COLUMN loyalty_points integer NOT NULL DEFAULT 0;\n"


def _versions(fw: FleetWorld, shops: list[int]) -> dict[int, str]:
    """Each shop's newest applied migration, read in its tenant database."""
    out = {}
    for shop in shops:
        with fw.workflow.tenant(shop).connect() as conn:
            out[shop] = max(applied_migrations(conn))
    return out


def test_a_new_migration_reaches_every_shop_and_a_failing_one_stays_stale_until_retried(
    make_fleet_world: Callable[..., FleetWorld], tmp_path: Path
) -> None:
    fw = make_fleet_world(shops=5, scale=0.05, seed=41)
    *provisioned, later = fw.shop_ids
    live, broken = provisioned[0], provisioned[1]
    fw.live(live)  # a live, captured shop takes an additive change too
    for shop in provisioned[1:]:
        fw.workflow.provision(shop)
    fw.workflow.register([later])  # known, not provisioned: it takes every migration when it is
    assert {fw.server_of(s) for s in provisioned} == {"a", "b"}
    (tmp_path / "0002_loyalty.sql").write_text(LOYALTY)
    fw.with_migrations(tmp_path)
    # one shop cannot take it: someone added the column there by hand (as its owner)
    with fw.workflow.tenant(broken).connect() as conn:
        conn.execute("ALTER TABLE customers ADD COLUMN loyalty_points integer")
        conn.commit()
    changes_ = SchemaChanges(fw.workflow, per_server=2)
    report = changes_.fan_out()
    assert report.newest == "0002_loyalty" and report.not_provisioned == [later]
    assert [r.shop_id for r in report.failed] == [broken]
    assert "loyalty_points" in report.failed[0].error and "already exists" in report.failed[0].error
    others = [s for s in provisioned if s != broken]
    assert _versions(fw, others) == dict.fromkeys(others, "0002_loyalty")
    assert _versions(fw, [broken]) == {broken: "0001_tenant_schema"}
    stale = changes_.stale()
    assert [r.shop_id for r in stale] == [broken]
    assert "already exists" in stale[0].details["schema_error"]
    with fw.workflow.tenant(live).connect() as conn:  # applied as the owner role: the column belongs to it
        owner = conn.execute(
            "SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.relname = 'customers'"
        ).fetchone()
        assert owner == (fw.registry.get(live).owner_role,)
        assert conn.execute("SELECT count(*) FROM customers WHERE loyalty_points = 0").fetchone()[0] > 0  # type: ignore[index]
    # the live shop still syncs and verifies after the change: the catalog's columns are all there
    assert fw.workflow.roll_back_cutover(live).verification
    # fixed, and retried alone
    with fw.workflow.tenant(broken).connect() as conn:
        conn.execute("ALTER TABLE customers DROP COLUMN loyalty_points")
        conn.commit()
    again = changes_.run_one(broken)
    assert again.ok and again.applied == ("0002_loyalty",)
    assert changes_.stale() == []
    # a shop provisioned later gets every migration (from the template built for them)
    result = fw.workflow.provision(later)
    assert result is not None and result.schema_version == "0002_loyalty"
    assert _versions(fw, [later]) == {later: "0002_loyalty"}
    assert fw.lifecycle.get(later).details["schema_version"] == "0002_loyalty"
    # and a rerun of the fan-out finds nothing to do
    assert SchemaChanges(fw.workflow).fan_out().applied == 0


def test_a_migration_that_would_break_capture_is_refused_with_why(
    make_fleet_world: Callable[..., FleetWorld], tmp_path: Path
) -> None:
    fw = make_fleet_world(shops=2, scale=0.05, seed=42)
    live, copied = fw.shop_ids
    fw.live(live)
    fw.migrate(copied)
    (tmp_path / "0002_drop_phone.sql").write_text("-- phones move to contacts\nALTER TABLE customers DROP COLUMN phone;\n")
    fw.with_migrations(tmp_path)
    changes_ = SchemaChanges(fw.workflow)
    with pytest.raises(SchemaChangeRefused, match=(
        rf"migration 0002_drop_phone drops column phone on catalog table customers, which would break that: shop "
        rf"{live} is live: its tenant logs the keys of its writes for the way back.*Nothing was applied to this shop"
    )):
        changes_.apply(live)
    with pytest.raises(SchemaChangeRefused, match=rf"shop {copied} is verified: its copy and the sync of its captured"):
        changes_.apply(copied)
    report = changes_.fan_out()
    assert {r.shop_id for r in report.failed} == {live, copied} and all(r.refused for r in report.failed)
    for shop in (live, copied):
        with fw.workflow.tenant(shop).connect() as conn:
            assert conn.execute(
                "SELECT count(*) FROM information_schema.columns WHERE table_name = 'customers' AND column_name = 'phone'"
            ).fetchone() == (1,)
    assert {r.shop_id for r in changes_.stale()} == {live, copied}


def test_the_contract_reads_statements_not_text() -> None:
    found = changes(
        """
        -- DROP COLUMN in a comment is nothing
        COMMENT ON TABLE customers IS 'we DROP COLUMN phone; later';
        CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ ALTER TABLE customers DROP COLUMN phone $$;
        ALTER TABLE ONLY public.customers ADD COLUMN note text, ALTER COLUMN zip_code SET DATA TYPE bigint;
        ALTER TABLE "repairs" RENAME COLUMN status TO state;
        ALTER TABLE IF EXISTS devices DROP CONSTRAINT devices_pkey, DROP serial;
        ALTER TABLE customers ADD COLUMN vip boolean NOT NULL;
        ALTER TABLE customers ADD COLUMN tier int NOT NULL DEFAULT 1;
        DROP TABLE IF EXISTS scratch, public.newsletter_subscribers CASCADE;
        TRUNCATE ONLY invoices;
        ALTER TABLE customers RENAME TO clients;
        DO $body$ BEGIN EXECUTE 'DROP TABLE customers'; END $body$;
        """
    )
    assert [(c.table[1], c.what) for c in found] == [
        ("customers", "changes the type of column zip_code"),
        ("repairs", "renames column status"),
        ("devices", "drops column serial"),
        ("customers", "adds column vip NOT NULL without a default"),
        ("scratch", "drops the table"),
        ("newsletter_subscribers", "drops the table"),
        ("invoices", "truncates the table"),
        ("customers", "renames the table to clients"),
        ("*", "runs a DO block, which cannot be checked"),
    ]
