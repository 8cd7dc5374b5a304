"""Capture, sync and the way back on a schema unlike Handyshop's: a tenant column named `tenant_id`,
composite keys containing it, identity columns, enum arrays and composites (copied as text), and a table
without a primary key (the documented fallback: copied again for the shop)."""

from __future__ import annotations

import psycopg
import pytest

from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.application.routing import RoutingTable
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.engine import capture
from handyshop_migration.tenancy.engine.catalog import introspect
from handyshop_migration.tenancy.engine.copy import copy_shop
from handyshop_migration.tenancy.engine.cutover import cut_over_writes, roll_back_cutover
from handyshop_migration.tenancy.engine.migrations import tenant_migrations
from handyshop_migration.tenancy.engine.provisioning import Provisioner, TenantNaming
from handyshop_migration.tenancy.engine.tenant_schema import render
from handyshop_migration.tenancy.engine.verification import verify_tables
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    unique_namespace,
)
from handyshop_migration_tests.support.schemas import exotic


def test_exotic_schema_syncs_cuts_over_and_comes_back(pg_server: ConnectionSpec) -> None:
    source = create_database(pg_server, "t_exo_cap")
    ns = unique_namespace()
    try:
        with source.connect() as conn:
            exotic.create(conn)
        catalog = introspect(source, tenant_column="tenant_id")
        registry = ConnectionRegistry(source, CredentialCipher(generate_key()))
        registry.ensure_schema()
        routing = RoutingTable(source)
        routing.ensure_schema()
        prov = Provisioner(pg_server, registry, tenant_migrations(catalog), naming=TenantNaming(ns + "t_{id}_db", ns + "t_{id}"))
        shop = 2
        tenant = pg_server.with_db(prov.naming.database_name(shop))
        with source.connect() as conn:
            capture.enable(conn, catalog, shop)
        prov.provision(shop)
        copy_shop(source, tenant, render(catalog), shop)

        with source.connect() as app:
            app.execute("""INSERT INTO "Things" (tenant_id, "Name", ms, a, total) VALUES (2, 'neu', '{sad}', ROW('Gasse', '1'), 3)""")
            app.execute("""UPDATE "Things" SET ms = '{glücklich 😀}' WHERE tenant_id = 2 AND id = (SELECT min(id) FROM "Things" WHERE tenant_id = 2)""")
            app.execute("""DELETE FROM kids WHERE tenant_id = 2 AND id = (SELECT min(id) FROM kids WHERE tenant_id = 2)""")
            app.execute("""UPDATE "MixedCase" SET "Key" = 'umbenannt' WHERE tenant_id = 2 AND "Key" = 'k1'""")  # a key change
            app.execute("INSERT INTO event_log VALUES (2, now(), '{\"neu\": true}', 'ohne Schlüssel')")  # no primary key
            app.execute("INSERT INTO event_log VALUES (3, now(), '{}', 'another tenant')")
            app.commit()
        result = capture.apply_changes(capture.TO_TENANT, source, tenant, catalog, shop)
        assert result.changes >= 5 and "event_log" in result.recopied
        with source.connect() as src, tenant.connect() as dst:
            assert [v.describe() for v in verify_tables(src, dst, catalog, shop) if not v.ok] == []

        report = cut_over_writes(source, tenant, catalog, routing, shop)
        assert all(v.ok for v in report.verification)
        with registry.get(shop).spec().connect() as app:  # the application writes to its tenant now
            app.execute("""INSERT INTO "Things" ("Name", total) VALUES ('im Tenant', 9)""")
            app.execute("INSERT INTO event_log VALUES (now(), '{}', 'im Tenant ohne Schlüssel')")
            app.execute("""DELETE FROM "MixedCase" WHERE "Key" = 'k2'""")
            app.commit()
            with pytest.raises(psycopg.Error):
                app.execute("TRUNCATE kids")  # not while the way back is kept open
        back = roll_back_cutover(source, tenant, catalog, routing, shop)
        assert back.changes_drained >= 2 and all(v.ok for v in back.verification)
        with source.connect() as src:
            assert src.execute("""SELECT count(*) FROM "Things" WHERE tenant_id = 2 AND "Name" = 'im Tenant'""").fetchone() == (1,)
            assert src.execute("SELECT count(*) FROM event_log WHERE tenant_id = 2 AND msg = 'im Tenant ohne Schlüssel'").fetchone() == (1,)
            assert src.execute("SELECT count(*) FROM event_log WHERE tenant_id = 3").fetchone() == (8,)  # untouched
        registry.close()
        prov.close()
    finally:
        drop_namespace(pg_server, ns)
        drop_database(pg_server, source.dbname)


def test_capture_waits_for_older_writers_but_not_for_other_shops_snapshots(pg_server: ConnectionSpec) -> None:
    import threading

    from handyshop_migration.tenancy.engine.copy import SourceSnapshot

    source = create_database(pg_server, "t_exo_wait")
    try:
        with source.connect() as conn:
            exotic.create(conn)
        catalog = introspect(source, tenant_column="tenant_id")
        with source.connect() as conn:
            capture.install(conn, catalog)

        def enable_in_background(shop: int) -> threading.Thread:
            def run() -> None:
                with source.connect() as conn:
                    capture.enable(conn, catalog, shop)

            thread = threading.Thread(target=run)
            thread.start()
            return thread

        # another shop's copy holds a read-only snapshot for minutes: enabling capture does not wait for it
        with SourceSnapshot(source):
            quick = enable_in_background(1)
            quick.join(timeout=10)
            assert not quick.is_alive()
        # a transaction that began earlier and may still write is waited for, until it ends
        with source.connect() as writer:
            writer.execute("""UPDATE "MixedCase" SET "Value" = 'vorher' WHERE tenant_id = 3 AND "Key" = 'k1'""")
            waiting = enable_in_background(3)
            waiting.join(timeout=1.0)
            assert waiting.is_alive()
            writer.commit()
        waiting.join(timeout=10)
        assert not waiting.is_alive()
        with source.connect() as conn:
            assert capture.is_captured(conn, 1) and capture.is_captured(conn, 3)
    finally:
        drop_database(pg_server, source.dbname)
