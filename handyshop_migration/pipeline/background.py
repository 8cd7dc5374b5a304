"""Phase 0's backup started when the run starts, so the catalog and the validation run while pg_dump does.

Phase 0's three assets do not depend on each other, but the in-process executor runs one step at a time:
backup, then catalog, then validation, each waiting for the last. The backup is mostly pg_dump's own work (a
process of its own, the server streaming every table to it), the validation mostly the server's (scans of the
tenant tables), so on a big source they overlap well on two cores. `SourceBackupResource` starts
`backup_source` in a thread when the run initialises its resources (only runs whose steps include
`source_backup` require it); `source_backup` runs last (lowest step priority) and waits for it, so its
materialization still says exactly what was backed up, and a failed backup still fails that step, and only it.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from handyshop_migration import settings
from handyshop_migration.pipeline.resources import SourceDatabase
from handyshop_migration.tenancy.engine.backup import Backup, backup_source

LAST = {"dagster/priority": "-10"}  # op tags of a step that runs after its independent siblings


class SourceBackupResource(dg.ConfigurableResource):
    """A verified pg_dump of the shared database, started in the background when the run starts."""

    source: SourceDatabase

    # No `from __future__ import annotations` in this module: Dagster finds the nested resource by its type.
    _pool: Any = PrivateAttr(default=None)  # ThreadPoolExecutor
    _backup: Any = PrivateAttr(default=None)  # Future[Backup]

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        directory = Path(os.environ.get(settings.BACKUP_DIR, settings.DEFAULT_BACKUP_DIR)).absolute()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="handyshop-backup")
        self._backup = self._pool.submit(backup_source, self.source.spec(), directory)

    def result(self) -> Backup:
        """The backup, once it is done (raises what it raised)."""
        if self._backup is None:  # used outside a run's resource initialisation: do it now
            directory = Path(os.environ.get(settings.BACKUP_DIR, settings.DEFAULT_BACKUP_DIR)).absolute()
            return backup_source(self.source.spec(), directory)
        return self._backup.result()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # a run never ends with pg_dump still writing
            self._pool = None
        self._backup = None
