"""TenantRouter against real tenant roles and databases: routing, LRU cap on pools, failures."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry, TenantCredentials
from handyshop_migration.tenancy.application.router import TenantRouter
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConnectionFailed, RegistryError
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.support.databases import rows, run_concurrently, unique_namespace

Tenant = Callable[[int], TenantCredentials]


@pytest.fixture
def registry(fresh_db: ConnectionSpec) -> Iterator[ConnectionRegistry]:
    with ConnectionRegistry(fresh_db, CredentialCipher(generate_key())) as reg:
        reg.ensure_schema()
        yield reg


@pytest.fixture
def tenant(pg_server: ConnectionSpec, registry: ConnectionRegistry) -> Iterator[Tenant]:
    """Creates a real login role and a database it owns for a shop, registers it; drops both afterwards."""
    prefix = unique_namespace()
    made: list[TenantCredentials] = []

    def make(shop_id: int) -> TenantCredentials:
        role, database = f"{prefix}shop_user_{shop_id}", f"{prefix}shop_{shop_id}_db"
        password = f"pw@{shop_id}#{prefix}%^&*!$"
        with pg_server.connect(autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
            )
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
        creds = TenantCredentials(
            shop_id=shop_id,
            server="primary",
            host=pg_server.host,
            port=pg_server.port,
            database=database,
            role=role,
            password=Secret(password),
            owner_role=role,
            owner_password=Secret(password),
        )
        made.append(creds)
        registry.register(creds)
        return creds

    yield make
    with pg_server.connect(autocommit=True) as conn:
        for creds in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(creds.database)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(creds.role)))


def backends_of(pg_server: ConnectionSpec, role: str) -> int:
    return int(rows(pg_server, "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,))[0][0])


def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_connection_runs_as_the_tenant_role_on_its_database(registry: ConnectionRegistry, tenant: Tenant) -> None:
    shop = tenant(5)
    with TenantRouter(registry) as router:
        with router.connection(5) as conn:
            assert conn.execute("select current_user, current_database()").fetchone() == (shop.role, shop.database)
            assert conn.execute("show timezone").fetchone() == ("UTC",)
            assert conn.execute("show datestyle").fetchone() == ("ISO, MDY",)
            conn.execute("create table t (x int)")
            conn.execute("insert into t values (1)")
        # Committed on leaving the block; an error rolls back instead.
        with pytest.raises(ZeroDivisionError):
            with router.connection(5) as conn:
                conn.execute("insert into t values (2)")
                raise ZeroDivisionError
        with router.connection(5) as conn:
            assert conn.execute("select array_agg(x) from t").fetchone() == ([1],)
        assert router.pool_count == 1 and router.open_shops == [5]
    assert router.pool_count == 0


def test_unregistered_shop(registry: ConnectionRegistry) -> None:
    with TenantRouter(registry) as router:
        with pytest.raises(RegistryError, match="no registry entry for shop 42"):
            with router.connection(42):
                pass
        assert router.pool_count == 0


def test_max_pools_closes_the_least_recently_used(
    registry: ConnectionRegistry, tenant: Tenant, pg_server: ConnectionSpec
) -> None:
    a, b, c = tenant(1), tenant(2), tenant(3)
    with TenantRouter(registry, max_pools=2) as router:
        for shop_id in (1, 2, 1):  # shop 1 used last, so shop 2 is least recently used
            with router.connection(shop_id) as conn:
                conn.execute("select 1")
        assert router.open_shops == [2, 1]
        assert backends_of(pg_server, b.role) == 1  # the pool keeps its idle connection
        with router.connection(3) as conn:
            assert conn.execute("select current_user").fetchone() == (c.role,)
        assert router.pool_count == 2
        assert router.open_shops == [1, 3]
        # Closing shop 2's pool closed its connection too.
        assert wait_until(lambda: backends_of(pg_server, b.role) == 0)
        assert backends_of(pg_server, a.role) == 1
        # A closed pool reopens on demand, evicting the next least recently used (shop 1).
        with router.connection(2) as conn:
            assert conn.execute("select current_user").fetchone() == (b.role,)
        assert router.open_shops == [3, 2]
        router.close_all()
        assert router.pool_count == 0 and router.open_shops == []
        for role in (a.role, b.role, c.role):
            assert wait_until(lambda role=role: backends_of(pg_server, role) == 0)


def test_close_one_shop_picks_up_a_new_password(
    registry: ConnectionRegistry, tenant: Tenant, pg_server: ConnectionSpec
) -> None:
    shop = tenant(7)
    with TenantRouter(registry) as router:
        with router.connection(7) as conn:
            conn.execute("select 1")
        new_password = "rotated-" + generate_key()[:12]
        with pg_server.connect(autocommit=True) as admin:
            admin.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(shop.role), sql.Literal(new_password))
            )
        registry.register(
            TenantCredentials(
                shop.shop_id, shop.server, shop.host, shop.port, shop.database, shop.role, Secret(new_password), shop.role, Secret(new_password)
            )
        )
        router.close(7)
        assert router.pool_count == 0
        router.close(7)  # closing a shop without a pool is fine
        with router.connection(7) as conn:
            assert conn.execute("select current_user").fetchone() == (shop.role,)


@pytest.mark.timing
def test_wrong_password_fails_fast_without_leaking_it(registry: ConnectionRegistry, tenant: Tenant) -> None:
    shop = tenant(9)
    wrong = "Wr0ng-pa$$word-" + generate_key()[:8]
    registry.register(
        TenantCredentials(shop.shop_id, shop.server, shop.host, shop.port, shop.database, shop.role, Secret(wrong), shop.role, Secret(wrong))
    )
    with TenantRouter(registry, connect_timeout=5.0) as router:
        started = time.monotonic()
        with pytest.raises(ConnectionFailed) as err:
            with router.connection(9):
                pass
        assert time.monotonic() - started < 3.0  # the server's refusal, not a pool timeout
        message = str(err.value)
        assert "shop 9" in message and shop.database in message and shop.role in message
        assert "password authentication failed" in message
        assert wrong not in message and shop.password.reveal() not in message
        assert router.pool_count == 0  # no pool left behind retrying in the background


def test_dropped_database_is_reported_and_its_pool_closed(
    registry: ConnectionRegistry, tenant: Tenant, pg_server: ConnectionSpec
) -> None:
    shop = tenant(11)
    with TenantRouter(registry, connect_timeout=1.0) as router:
        with router.connection(11) as conn:
            conn.execute("select 1")
        with pg_server.connect(autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(shop.database)))
        with pytest.raises(ConnectionFailed) as err:
            with router.connection(11):
                pass
        message = str(err.value)
        assert "shop 11" in message and shop.database in message and "does not exist" in message
        assert shop.password.reveal() not in message
        assert router.pool_count == 0


def test_concurrent_use_with_eviction(registry: ConnectionRegistry, tenant: Tenant) -> None:
    shops = {s.shop_id: s for s in (tenant(21), tenant(22), tenant(23))}
    with TenantRouter(registry, max_pools=2, max_size=2) as router:

        def work(offset: int) -> None:
            for i in range(12):
                shop_id = 21 + (i + offset) % 3
                with router.connection(shop_id) as conn:
                    assert conn.execute("select current_user").fetchone() == (shops[shop_id].role,)
                assert router.pool_count <= 2

        run_concurrently(work, 6)
        assert router.pool_count <= 2


def test_bad_settings(registry: ConnectionRegistry) -> None:
    for kwargs in ({"max_size": 0}, {"max_idle": 0}, {"connect_timeout": 0}, {"max_pools": 0}):
        with pytest.raises(ValueError):
            TenantRouter(registry, **kwargs)  # type: ignore[arg-type]


__all__ = ["psycopg"]
