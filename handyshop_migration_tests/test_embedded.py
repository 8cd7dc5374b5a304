"""The embedded server enforces passwords and listens on 127.0.0.1 only."""

from __future__ import annotations

import psycopg
import pytest

from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.errors import ConnectionFailed
from handyshop_migration.tenancy.secrets import Secret


def test_superuser_needs_its_password(pg_server: ConnectionSpec) -> None:
    with pg_server.connect() as conn:
        assert conn.execute("select current_setting('is_superuser')").fetchone() == ("on",)
    with pytest.raises(ConnectionFailed) as err:
        pg_server.with_user(pg_server.user, Secret("not-the-password")).connect()
    assert "password authentication failed" in str(err.value)
    assert "not-the-password" not in str(err.value)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(host=pg_server.host, port=pg_server.port, user=pg_server.user, dbname="postgres")


def test_session_settings_are_uniform(pg_server: ConnectionSpec) -> None:
    with pg_server.connect() as conn:
        assert conn.execute("show timezone").fetchone() == ("UTC",)
        assert conn.execute("show datestyle").fetchone() == ("ISO, MDY",)
