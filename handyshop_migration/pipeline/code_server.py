"""`handyshop-migration code-server`: Dagster's code server (`dagster api grpc`), with run processes forked from a
warm process instead of started cold.

A run the daemon launches is a process the code server starts. Dagster 1.13 starts it with multiprocessing's
`spawn`: a fresh interpreter that imports Dagster and this package and builds the definitions before the run's
first step, 1.6 CPU-seconds on this machine, for a run whose own work is about one. With one run per shop, a
2-core machine could not launch 50 shops a minute that way. Here the code server uses `forkserver` with
Dagster and `handyshop_migration.definitions` preloaded: the forkserver imports them once (lazily, at the
first run), and every run process is a fork of it, ready in milliseconds. Everything else is Dagster's: the
same gRPC API, the same run worker (`start_run_in_subprocess`), the same crash handling (a run whose process
dies is failed by the server's cleanup thread).

The forkserver inherits this server's environment when it starts (the secrets stay in the code location's
process tree, as with spawn) and holds no connection: definitions load without a database.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from typing import Any

# The last one freezes what the first two loaded (pipeline/warm.py).
PRELOAD = ("dagster", "handyshop_migration.definitions", "handyshop_migration.pipeline.warm")


def forking_server_class() -> type:
    from dagster._grpc import server as grpc_server

    class ForkingDagsterApiServer(grpc_server.DagsterApiServer):
        """DagsterApiServer whose StartRun forks run processes from a preloaded forkserver."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(list(PRELOAD))
            self._mp_ctx = ctx

    return ForkingDagsterApiServer


def main(argv: Sequence[str]) -> int:
    """`dagster api grpc ARGS` with the forking server class (the command imports the class when it runs)."""
    from dagster._cli import main as dagster_main
    from dagster._grpc import server as grpc_server

    grpc_server.DagsterApiServer = forking_server_class()  # type: ignore[misc]
    sys.argv = ["dagster", "api", "grpc", *argv]
    try:
        dagster_main()
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
