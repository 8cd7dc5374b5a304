"""Dagster's Postgres storage with pooled connections, for every process that uses the instance.

dagster-postgres opens a new connection (a login, a fresh backend loading its catalog caches) for every storage
call unless the process calls `optimize_for_webserver`, which only dagster-webserver does. A run the daemon
launches is a fresh process built from the instance's ref, so it paid ~1,300 logins per shop
(benchmarks/README.md: 45 % of a run's time). Named in dagster.yaml (`storage: custom:`), this class is what
the instance ref carries to the daemon, the code server's run processes and `migrate`, so every one of them
keeps one connection per storage open (plus overflow for threads) and reuses it.

The connections are what dagster-webserver itself uses: AUTOCOMMIT, pool_size 1, recycled after an hour;
`statement_timeout` stays the server's (0 = none: a long event-log query of a big backfill must not fail).
"""

from __future__ import annotations

from typing import Any

from dagster import Field, IntSource
from dagster._core.storage.config import pg_config
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

DEFAULT_MAX_OVERFLOW = 10  # threads of one process (daemon: sensors, dequeue workers, monitoring) beyond the one
DEFAULT_POOL_RECYCLE = 3600


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose run, event-log and schedule storages hold pooled engines from the start."""

    def __init__(
        self,
        postgres_url: str,
        should_autocreate_tables: bool = True,
        inst_data: ConfigurableClassData | None = None,
        token_provider: Any = None,
        max_overflow: int = DEFAULT_MAX_OVERFLOW,
        pool_recycle: int = DEFAULT_POOL_RECYCLE,
    ) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data, token_provider=token_provider)
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            storage.optimize_for_webserver(statement_timeout=0, pool_recycle=pool_recycle, max_overflow=max_overflow)

    @classmethod
    def config_type(cls) -> Any:
        return {
            **pg_config(),
            "max_overflow": Field(IntSource, is_required=False, default_value=DEFAULT_MAX_OVERFLOW),
            "pool_recycle": Field(IntSource, is_required=False, default_value=DEFAULT_POOL_RECYCLE),
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: Any) -> PooledPostgresStorage:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
            max_overflow=config_value.get("max_overflow", DEFAULT_MAX_OVERFLOW),
            pool_recycle=config_value.get("pool_recycle", DEFAULT_POOL_RECYCLE),
        )
