"""Dagster's Postgres storage with pooled connections, for every process that uses the instance.

dagster-postgres opens a new connection (a login, a fresh backend loading its catalog caches) for every storage
call unless the process calls `optimize_for_webserver`, which only dagster-webserver does. A run the daemon
launches is a fresh process built from the instance's ref, so it paid ~1,300 logins per shop
(benchmarks/README.md: 45 % of a run's time). Named in dagster.yaml (`storage: custom:`), this class is what
the instance ref carries to the daemon, the code server's run processes and `migrate`, so every one of them
keeps one connection per storage open (plus overflow for threads) and reuses it.

The connections are what dagster-webserver itself uses: AUTOCOMMIT, pool_size 1, recycled after an hour;
`statement_timeout` stays the server's (0 = none: a long event-log query of a big backfill must not fail).

It also remembers the storage schema's facts once they are true: dagster-postgres asks the server whether a
table or a column exists (catalog queries through SQLAlchemy's reflection) on nearly every event it writes
and every run query: 235 of a shop's run's 1,055 storage statements, and the run queue's every look. Tables
and columns are only ever added (by `dagster instance migrate`), so a fact that held once holds for the
life of the process; a missing one is asked again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dagster import Field, IntSource
from dagster._core.storage.base_storage import DagsterStorage
from dagster._core.storage.config import pg_config
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

DEFAULT_MAX_OVERFLOW = 10  # threads of one process (daemon: sensors, dequeue workers, monitoring) beyond the one
DEFAULT_POOL_RECYCLE = 3600


class _SchemaFacts:
    """Schema checks answered once they are true (see the module's docstring)."""

    _facts: dict[object, bool]

    def _remember(self, key: object, ask: Callable[[], bool]) -> bool:
        facts = self.__dict__.setdefault("_facts", {})
        if facts.get(key):
            return True
        answer = bool(ask())
        if answer:
            facts[key] = True
        return answer


class SchemaCachingRunStorage(_SchemaFacts, PostgresRunStorage):
    def has_run_stats_index_cols(self) -> bool:
        return self._remember("run_stats_index_cols", super().has_run_stats_index_cols)

    def has_bulk_actions_selector_cols(self) -> bool:
        return self._remember("bulk_actions_selector_cols", super().has_bulk_actions_selector_cols)

    def has_backfill_id_column(self) -> bool:
        return self._remember("backfill_id_column", super().has_backfill_id_column)

    def has_bulk_action_job_name_column(self) -> bool:
        return self._remember("bulk_action_job_name_column", super().has_bulk_action_job_name_column)

    def has_backfill_tags_table(self) -> bool:
        return self._remember("backfill_tags_table", super().has_backfill_tags_table)


class SchemaCachingEventLogStorage(_SchemaFacts, PostgresEventLogStorage):
    def has_table(self, table_name: str) -> bool:
        return self._remember(("table", table_name), lambda: super(SchemaCachingEventLogStorage, self).has_table(
            table_name))

    def has_asset_key_col(self, column_name: str) -> bool:
        return self._remember(("asset_key_col", column_name),
                              lambda: super(SchemaCachingEventLogStorage, self).has_asset_key_col(column_name))


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
        # DagsterPostgresStorage.__init__, with the schema-caching run and event-log storages
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = SchemaCachingRunStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._event_log_storage = SchemaCachingEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        self._schedule_storage = PostgresScheduleStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )
        DagsterStorage.__init__(self)
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
