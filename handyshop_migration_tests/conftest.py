"""The suite's fixtures live in plugin modules (psycopg's layout): `plugins/postgres.py` for the servers and
scratch databases, `plugins/worlds.py` for a migration world (shared database, registry, provisioner,
lifecycle, workflow), `plugins/fleet.py` for a world whose tenants live on two servers. Helpers are plain
modules of `support/`."""

pytest_plugins = [
    "handyshop_migration_tests.plugins.postgres",
    "handyshop_migration_tests.plugins.worlds",
    "handyshop_migration_tests.plugins.fleet",
]
