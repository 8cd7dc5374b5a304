"""Key rotation of the registry: every entry (both credentials) re-encrypted under the new key in batches, each
only once both its roles log in; an interruption resumes; an entry whose login fails stays under its old key
and is reported; at the end nothing is under the old key id and every tenant logs in with the new key alone."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import sql

from handyshop_migration.tenancy.application.encryption import CredentialCipher, generate_key
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.application.routing import RouteResolver
from handyshop_migration.tenancy.fleet.keys import check_logins, rotate_registry
from handyshop_migration_tests.plugins.fleet import FleetWorld


def test_rotation_is_resumable_verifies_logins_and_leaves_nothing_under_the_old_key(
    make_fleet_world: Callable[..., FleetWorld],
) -> None:
    fw = make_fleet_world(shops=5, scale=0.05, seed=51)
    for shop in fw.shop_ids:
        fw.workflow.provision(shop)
    fw.live(fw.shop_ids[0])  # a live shop: route() hands its token to applications
    assert {fw.server_of(s) for s in fw.shop_ids} == {"a", "b"}
    old_id = fw.world.cipher.key_id
    new_key = generate_key()
    rotating = ConnectionRegistry(fw.source, CredentialCipher(new_key, [fw.world.key]))
    # interrupted after one batch: two entries under the new key, the rest still readable under the old one
    first = rotate_registry(rotating, batch=2, max_batches=1)
    assert (first.rotated, first.remaining) == (2, {old_id: 3}) and not first.done
    # an entry whose owner cannot log in stays under its old key, with why
    stuck = fw.shop_ids[3]
    owner = fw.registry.get(stuck).owner_role
    admin = fw.admins[fw.server_of(stuck)]
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(owner)))
    second = rotate_registry(rotating, batch=2)
    assert second.rotated == 2 and list(second.left) == [stuck]
    assert f"the owner role {owner} does not log in" in second.left[stuck]
    assert second.remaining == {old_id: 1} and "1 under key id" in second.summary()
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(owner)))
    third = rotate_registry(rotating, batch=2)
    assert (third.rotated, third.remaining, third.done) == (1, {}, True)
    rotating.close()
    # the old key can go: the new key alone reads every entry, and both roles of every tenant log in
    alone = CredentialCipher(new_key)
    with ConnectionRegistry(fw.source, alone) as registry:
        assert registry.key_ids() == {alone.key_id: 5}
        registry.readable_by_active_key()
        for shop in fw.shop_ids:
            assert check_logins(registry.get(shop)) is None
        live_role = registry.get(fw.shop_ids[0]).role
    # and an application following route() decrypts the live shop's token with it
    resolver = RouteResolver(fw.source, alone, fw.source)
    try:
        route = resolver.resolve(fw.shop_ids[0], "write")
        assert route.target == "tenant"
        with route.spec.connect() as conn:
            assert conn.execute("SELECT current_user").fetchone() == (live_role,)
    finally:
        resolver.close()
