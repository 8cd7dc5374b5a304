"""The suite's fixtures live in plugin modules (psycopg's layout): `plugins/postgres.py` for the servers
and scratch databases. Helpers are plain modules of `support/`."""

pytest_plugins = ["handyshop_migration_tests.plugins.postgres"]
