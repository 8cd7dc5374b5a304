"""ConnectionRegistry against a real control database: encryption at rest, cache bound and TTL, rotation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg import sql

from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry, TenantCredentials
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import DecryptionError, RegistryError
from handyshop_migration.tenancy.secrets import Secret
from handyshop_migration_tests.support.databases import rows, run_concurrently

PASSWORD = "Zq7@#%^&*!$-very-distinctive-password"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def creds(shop_id: int, *, password: str = PASSWORD, host: str = "127.0.0.1") -> TenantCredentials:
    return TenantCredentials(
        shop_id=shop_id,
        server="primary",
        host=host,
        port=5432,
        database=f"shop_{shop_id}_db",
        role=f"shop_user_{shop_id}",
        password=Secret(password),
        owner_role=f"shop_owner_{shop_id}",
        owner_password=Secret(password + "-owner"),
    )


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
def registry(fresh_db: ConnectionSpec, key: str) -> Iterator[ConnectionRegistry]:
    with ConnectionRegistry(fresh_db, CredentialCipher(key)) as reg:
        reg.ensure_schema()
        yield reg


def execute(spec: ConnectionSpec, query: str) -> None:
    """Change the control table behind the registry's back."""
    with spec.connect() as conn:
        conn.execute(query)


def table_text(control: ConnectionSpec, schema: str = "handyshop_migration") -> str:
    """Every column of every row, as text."""
    query = sql.SQL("SELECT to_jsonb(t)::text FROM {} t").format(sql.Identifier(schema, "tenant_connections"))
    return "\n".join(r[0] for r in rows(control, query))


def test_ensure_schema_creates_the_table_and_is_idempotent_under_concurrency(fresh_db: ConnectionSpec) -> None:
    cipher = CredentialCipher(generate_key())
    registries = [ConnectionRegistry(fresh_db, cipher) for _ in range(4)]
    run_concurrently(lambda n: registries[n].ensure_schema(), len(registries))
    registries[0].ensure_schema()  # and once more, serially
    for reg in registries:
        reg.close()
    columns = rows(
        fresh_db,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'handyshop_migration' AND table_name = 'tenant_connections' ORDER BY ordinal_position",
    )
    assert [(c, t) for c, t, _ in columns] == [
        ("shop_id", "bigint"),
        ("server", "text"),
        ("host", "text"),
        ("port", "integer"),
        ("database", "text"),
        ("role", "text"),
        ("password_encrypted", "text"),
        ("owner_role", "text"),
        ("owner_password_encrypted", "text"),
        ("key_id", "text"),
        ("created_at", "timestamp with time zone"),
        ("updated_at", "timestamp with time zone"),
    ]
    assert {n for _, _, n in columns} == {"NO"}


def test_missing_table_says_how_to_create_it(fresh_db: ConnectionSpec) -> None:
    with ConnectionRegistry(fresh_db, CredentialCipher(generate_key())) as reg:
        with pytest.raises(RegistryError, match=r"ensure_schema\(\)"):
            reg.get(1)


def test_roundtrip_persists_no_plaintext_and_second_instance_reads_it(
    registry: ConnectionRegistry, fresh_db: ConnectionSpec, key: str
) -> None:
    registry.register(creds(5))
    got = registry.get(5)
    assert got == creds(5) and got.password.reveal() == PASSWORD

    stored = table_text(fresh_db)
    assert "shop_user_5" in stored and registry.cipher.key_id in stored
    assert PASSWORD not in stored
    for fragment in ("very-distinctive", "Zq7@", "%^&*!$"):
        assert fragment not in stored

    with ConnectionRegistry(fresh_db, CredentialCipher(key)) as other:
        assert other.cache_len == 0
        again = other.get(5)
    assert again.password.reveal() == PASSWORD and again.role == "shop_user_5"
    spec = again.spec()
    assert (spec.user, spec.dbname, spec.host, spec.port) == ("shop_user_5", "shop_5_db", "127.0.0.1", 5432)
    assert spec.password == Secret(PASSWORD)


def test_upsert_list_and_remove(registry: ConnectionRegistry) -> None:
    for shop_id in (3, 1, 2):
        registry.register(creds(shop_id))
    registry.register(creds(2, password="changed", host="db2.internal"))
    assert registry.get(2).password.reveal() == "changed" and registry.get(2).host == "db2.internal"
    assert registry.get(2).owner_password.reveal() == "changed-owner"
    assert [c.shop_id for c in registry.list()] == [1, 2, 3]
    owner = registry.get(3).owner_spec()
    assert (owner.user, owner.dbname, owner.password) == ("shop_owner_3", "shop_3_db", Secret(PASSWORD + "-owner"))

    assert registry.remove(1) is True
    assert registry.remove(1) is False
    assert registry.find(1) is None
    with pytest.raises(RegistryError) as err:
        registry.get(1)
    assert str(err.value) == "no registry entry for shop 1; provision it first (handyshop-migration migrate --shops 1)"


def test_repr_never_shows_the_password(registry: ConnectionRegistry) -> None:
    registry.register(creds(7))
    got = registry.get(7)
    for text in (repr(got), str(got), repr(registry), str(registry), repr(got.spec()), repr(got.owner_spec()), f"{got}"):
        assert PASSWORD not in text
    assert "shop_user_7" in repr(got)
    with pytest.raises(TypeError, match="Secret"):
        TenantCredentials(1, "primary", "h", 5432, "d", "r", PASSWORD, "o", Secret("x"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Secret"):
        TenantCredentials(1, "primary", "h", 5432, "d", "r", Secret("x"), "o", PASSWORD)  # type: ignore[arg-type]


def test_cache_is_bounded_lru(fresh_db: ConnectionSpec) -> None:
    with ConnectionRegistry(fresh_db, CredentialCipher(generate_key()), cache_size=100) as reg:
        reg.ensure_schema()
        for shop_id in range(1, 251):
            reg.register(creds(shop_id))
            assert reg.cache_len <= 100
        assert reg.cache_len == 100
        for shop_id in range(1, 251):
            assert reg.get(shop_id).shop_id == shop_id
            assert reg.cache_len <= 100
        # Least recently used goes first: touch 151, add one more, and 152 (not 151) is evicted.
        reg.get(151)
        reg.register(creds(251))
        reg.invalidate(251)
        reg.get(251)
        assert reg.cache_len == 100
        execute(fresh_db, "UPDATE handyshop_migration.tenant_connections SET host = 'moved' WHERE shop_id IN (151, 152)")
        assert reg.get(151).host == "127.0.0.1"  # still cached
        assert reg.get(152).host == "moved"  # evicted, so re-read


def test_cache_ttl_rereads_from_the_database(fresh_db: ConnectionSpec) -> None:
    clock = FakeClock()
    with ConnectionRegistry(fresh_db, CredentialCipher(generate_key()), cache_ttl=60.0, clock=clock) as reg:
        reg.ensure_schema()
        reg.register(creds(1))
        execute(fresh_db, "UPDATE handyshop_migration.tenant_connections SET host = 'elsewhere', port = 6432")
        clock.now += 59.0
        assert reg.get(1).host == "127.0.0.1"  # served from the cache
        assert reg.cache_len == 1
        clock.now += 1.0
        assert reg.cache_len == 0  # expired entries are dropped, not just skipped
        got = reg.get(1)
        assert (got.host, got.port) == ("elsewhere", 6432)
        # Hits do not extend the TTL: a hot entry is still re-read once it is ttl old.
        execute(fresh_db, "UPDATE handyshop_migration.tenant_connections SET host = 'third'")
        for _ in range(5):
            clock.now += 11.0
            assert reg.get(1).host == "elsewhere"
        clock.now += 5.0
        assert reg.get(1).host == "third"
        reg.invalidate()
        assert reg.cache_len == 0


def test_cache_holds_no_decrypted_password(registry: ConnectionRegistry) -> None:
    registry.register(creds(4))
    registry.get(4)
    assert registry.cache_len == 1
    cached = "".join(repr(vars(e)) + repr(e.row.__dict__) for e in registry._cache.values())
    assert PASSWORD not in cached


def test_bad_cache_settings() -> None:
    spec = ConnectionSpec("localhost", 5432, "u", None, "d")
    cipher = CredentialCipher(generate_key())
    with pytest.raises(ValueError, match="cache_size must be an integer of at least 1"):
        ConnectionRegistry(spec, cipher, cache_size=0)
    with pytest.raises(ValueError, match="cache_ttl must be a number of seconds greater than 0"):
        ConnectionRegistry(spec, cipher, cache_ttl=0)


def test_wrong_key_and_moved_ciphertext(registry: ConnectionRegistry, fresh_db: ConnectionSpec) -> None:
    registry.register(creds(1))
    registry.register(creds(2, password="other"))
    # A token copied onto another row fails instead of handing out shop 1's password for shop 2.
    execute(
        fresh_db,
        "UPDATE handyshop_migration.tenant_connections SET password_encrypted = "
        "(SELECT password_encrypted FROM handyshop_migration.tenant_connections WHERE shop_id = 1) WHERE shop_id = 2",
    )
    registry.invalidate()
    with pytest.raises(DecryptionError, match="shop 2.*another row"):
        registry.get(2)
    assert registry.cache_len == 0  # a bad entry is not cached

    # nor does the application role's token, moved into the owner's column of its own row
    execute(
        fresh_db,
        "UPDATE handyshop_migration.tenant_connections SET owner_password_encrypted = password_encrypted WHERE shop_id = 1",
    )
    registry.invalidate()
    with pytest.raises(DecryptionError, match="shop 1.*another row"):
        registry.get(1)

    with ConnectionRegistry(fresh_db, CredentialCipher(generate_key())) as wrong:
        with pytest.raises(DecryptionError) as err:
            wrong.get(1)
        # a key that cannot read what is registered is refused before anything is written with it
        with pytest.raises(DecryptionError, match=r"holds entries this TENANT_ENCRYPTION_KEY cannot read \(2 under key id"):
            wrong.readable_by_active_key()
    assert "shop 1" in str(err.value) and "not configured" in str(err.value)
    assert PASSWORD not in str(err.value)
    registry.readable_by_active_key()  # the right key passes


def test_rotate_keys(fresh_db: ConnectionSpec) -> None:
    old_key, new_key = generate_key(), generate_key()
    with ConnectionRegistry(fresh_db, CredentialCipher(old_key)) as old:
        old.ensure_schema()
        for shop_id in (1, 2, 3):
            old.register(creds(shop_id, password=f"pw-{shop_id}"))
    with ConnectionRegistry(fresh_db, CredentialCipher(new_key, [old_key])) as reg:
        assert reg.get(1).password.reveal() == "pw-1"  # old entries readable with the old key configured
        reg.register(creds(4, password="pw-4"))  # already under the new key
        assert reg.key_ids() == {CredentialCipher(old_key).key_id: 3, reg.cipher.key_id: 1}
        reg.readable_by_active_key()  # the old key is configured: fine
        assert reg.rotate_keys() == 3
        assert reg.rotate_keys() == 0
        key_ids = {r[0] for r in rows(fresh_db, "SELECT DISTINCT key_id FROM handyshop_migration.tenant_connections")}
        assert key_ids == {reg.cipher.key_id}
    with ConnectionRegistry(fresh_db, CredentialCipher(new_key)) as only_new:
        assert [c.password.reveal() for c in only_new.list()] == ["pw-1", "pw-2", "pw-3", "pw-4"]
        assert [c.owner_password.reveal() for c in only_new.list()] == ["pw-1-owner", "pw-2-owner", "pw-3-owner", "pw-4-owner"]


def test_custom_schema_name_is_quoted(fresh_db: ConnectionSpec) -> None:
    schema = 'Odd "schema"; drop'
    with ConnectionRegistry(fresh_db, CredentialCipher(generate_key()), schema=schema) as reg:
        reg.ensure_schema()
        reg.register(creds(1))
        assert reg.get(1).shop_id == 1
    assert PASSWORD not in table_text(fresh_db, schema)


def test_survives_a_dropped_control_connection(registry: ConnectionRegistry, fresh_db: ConnectionSpec) -> None:
    registry.register(creds(1))
    rows(
        fresh_db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()",
    )
    registry.invalidate()
    assert registry.get(1).shop_id == 1


def test_concurrent_use(fresh_db: ConnectionSpec) -> None:
    with ConnectionRegistry(fresh_db, CredentialCipher(generate_key()), cache_size=5) as reg:
        reg.ensure_schema()
        for shop_id in range(20):
            reg.register(creds(shop_id))

        def work(offset: int) -> None:
            for i in range(40):
                shop_id = (i * 7 + offset) % 20
                assert reg.get(shop_id).shop_id == shop_id
                assert reg.cache_len <= 5
                if i % 10 == 0:
                    reg.register(creds(shop_id, host=f"host{offset}"))

        run_concurrently(work, 6)
