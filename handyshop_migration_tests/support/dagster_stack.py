"""A Dagster test stack: a seeded shared database, the environment a run reads, a real instance, the
definitions, and phase 0 already done — torn down with every tenant it created."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
import pytest

from handyshop_migration import settings
from handyshop_migration.definitions import build_definitions
from handyshop_migration.devtools.seed import SeedReport, seed_database
from handyshop_migration.pipeline.runner import ShopOutcome, advance, run_job
from handyshop_migration.tenancy.application.encryption import CredentialCipher
from handyshop_migration.tenancy.application.registry import ConnectionRegistry
from handyshop_migration.tenancy.dsn import ConnectionSpec, pinned_search_path
from handyshop_migration.tenancy.lifecycle import Lifecycle
from handyshop_migration_tests.support.databases import (
    create_database,
    drop_database,
    drop_namespace,
    migration_env,
    unique_namespace,
)


@dataclass
class Stack:
    admin: ConnectionSpec
    source: ConnectionSpec
    report: SeedReport
    env: dict[str, str]
    instance: dg.DagsterInstance
    defs: dg.Definitions

    def database(self, shop: int) -> str:
        return self.env[settings.TENANT_DATABASE].format(id=shop)

    def tenant(self, shop: int) -> ConnectionSpec:
        """The migration's way into a shop's tenant database (its owner role, search path pinned)."""
        with self.registry() as registry:
            return registry.get(shop).owner_spec().with_settings(pinned_search_path("public"))

    def app(self, shop: int) -> ConnectionSpec:
        """The application's way into a shop's tenant database."""
        with self.registry() as registry:
            return registry.get(shop).spec()

    def registry(self) -> ConnectionRegistry:
        return ConnectionRegistry(self.source, CredentialCipher(self.env[settings.ENCRYPTION_KEY]))

    def lifecycle(self) -> Lifecycle:
        return Lifecycle(self.source)

    def migrate(self, shop: int, through: int = 2, **kwargs: object) -> ShopOutcome:
        """Take a shop to phase `through` from wherever it is (what `migrate` does), asserting it got there."""
        outcome = advance(self.defs, self.instance, self.lifecycle(), shop, through, **kwargs)  # type: ignore[arg-type]
        assert outcome.done, outcome.notes
        return outcome


@contextmanager
def dagster_stack(
    pg_server: ConnectionSpec, tmp: pytest.TempPathFactory, prefix: str, *, shops: int, scale: float, seed: int
) -> Iterator[Stack]:
    source = create_database(pg_server, prefix)
    report = seed_database(source, shops=shops, scale=scale, seed=seed)
    ns = unique_namespace()
    env = {**migration_env(source, tmp.mktemp("backups"), ns), settings.ARCHIVE_DIR: str(tmp.mktemp("archives"))}
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in env.items():
                mp.setenv(k, v)
            with dg.instance_for_test(temp_dir=str(tmp.mktemp("dagster"))) as instance:
                defs = build_definitions(environ=dict(os.environ))
                phase0 = run_job(defs, instance, "prepare_source")
                assert phase0.success, phase0.failures
                yield Stack(pg_server, source, report, env, instance, defs)
    finally:
        drop_namespace(pg_server, ns)
        drop_database(pg_server, source.dbname)
