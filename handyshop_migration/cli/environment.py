"""What every verb needs: output, the environment checked before any run, the Dagster instance."""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from handyshop_migration import settings
from handyshop_migration.tenancy.errors import ConfigurationError

EPILOG = f"""environment (migrate, prepare, status):
  {settings.SOURCE_URL}      the shared database, postgresql://USER:PASSWORD@HOST:PORT/DBNAME
  {settings.ENCRYPTION_KEY}     64 hex characters (openssl rand -hex 32); encrypts tenant passwords
  {settings.ADMIN_URL}       CREATEDB+CREATEROLE on the tenant server (default: the source server)
  {settings.CATALOG}         catalog file (default: the packaged Handyshop catalog)
  {settings.BACKUP_DIR}      where phase 0 writes its pg_dump (default: ./backups)
  DAGSTER_HOME               the Dagster instance (dagster.yaml) that records the runs
"""


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def say(text: str = "") -> None:
    print(text, flush=True)


def require(names: tuple[settings.Required, ...]) -> None:
    missing = settings.missing(names)
    if missing:
        raise ConfigurationError(
            "; ".join(f"{m.name} is not set ({m.purpose})" for m in missing) + ". See `handyshop-migration --help`."
        )


def preflight() -> Any:
    """Check the environment before any run: variables set, key well-formed, shared database reachable.
    Returns the source ConnectionSpec."""
    from handyshop_migration.tenancy.application.encryption import CredentialCipher
    from handyshop_migration.tenancy.application.registry import ConnectionRegistry
    from handyshop_migration.tenancy.dsn import ConnectionSpec

    require(settings.REQUIRED_FOR_MIGRATION)
    cipher = CredentialCipher.from_env()
    source = ConnectionSpec.from_url(os.environ[settings.SOURCE_URL], name=settings.SOURCE_URL)
    source.connect().close()
    if os.environ.get(settings.ADMIN_URL):
        ConnectionSpec.from_url(os.environ[settings.ADMIN_URL], name=settings.ADMIN_URL).connect().close()
    with ConnectionRegistry(source, cipher) as registry:
        registry.ensure_schema()
        registry.readable_by_active_key()  # another key than the registry's is refused before anything is written
    return source


def dagster_instance() -> Any:
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME", "")
    if not home:
        raise ConfigurationError(
            "DAGSTER_HOME is not set: point it at a directory holding dagster.yaml (see the repository's "
            "dagster.yaml), so that the runs are recorded where the webserver shows them."
        )
    if not Path(home).is_dir():
        raise ConfigurationError(f"DAGSTER_HOME={home} is not a directory; create it and put dagster.yaml in it.")
    from handyshop_migration.pipeline.runner import prepare_instance

    return prepare_instance(dg.DagsterInstance.get())


def quiet_dagster() -> None:
    import logging

    import dagster as dg

    # psycopg warns on stderr when it cleans up after a connection that is already lost ("error ignored
    # terminating <Copy>"): the failure itself is reported, in one line; this would be a second, raw one.
    logging.getLogger("psycopg").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=dg.PreviewWarning)
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="dagster")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value

