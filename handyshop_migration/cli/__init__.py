"""`handyshop-migration`: the command line.

  demo      embedded server, realistic shared database, every phase through Dagster, verification table
  dev       the same stack under `dagster dev` on 127.0.0.1:3000, to click through the pipeline
  prepare   phase 0 on the servers named by the environment (backup, catalog drift, validation)
  migrate   phases 1-2 (and 3-5 with --through-phase) on the servers named by the environment (production path)
  rollback  the way back from a phase for one shop
  status    one line per shop: phase reached, gates, rows, last run
  inspect   write the catalog of any shared database with a tenant column
  seed      create a realistic shared Handyshop database (for staging, tests, benchmarks)
  add-shop  a shop signing up (to watch the sensor pick it up)

One module per verb group (`local`, `migration`, `tools`) over the verb table in `parser`.

No traceback reaches an operator: every failure is one line on stderr naming the problem (and, for our own
errors, the fix), with a non-zero exit. A failure we did not foresee is still one line (its class and
message; a database error with the server's message), and its full trace goes to a log file whose path the
line names — or to the terminal with `--debug`. Passwords are masked in both (`secrets.redact`).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from handyshop_migration.tenancy.errors import HandyshopError

LOG_DIR_VARIABLE = "HANDYSHOP_LOG_DIR"  # where unforeseen failures leave their trace (default: temp dir)


def _describe(exc: BaseException) -> str:
    """One line: what failed. psycopg errors give the server's message (and its hint)."""
    import psycopg

    from handyshop_migration.tenancy.secrets import one_line

    if isinstance(exc, psycopg.Error) and getattr(exc, "diag", None) is not None and exc.diag.message_primary:
        text = exc.diag.message_primary
        if exc.diag.message_hint:
            text += f" (hint: {exc.diag.message_hint})"
        return one_line(f"{type(exc).__name__}: {text}")
    return one_line(f"{type(exc).__name__}: {exc}") if str(exc) else type(exc).__name__


def _write_trace(exc: BaseException) -> Path | None:
    from handyshop_migration.tenancy.secrets import redact

    directory = Path(os.environ.get(LOG_DIR_VARIABLE) or Path(tempfile.gettempdir()) / "handyshop-migration")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        text = "".join(traceback.format_exception(exc))
        path.write_text(redact(text), encoding="utf-8")
        path.chmod(0o600)  # a trace may show data
        return path
    except OSError:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    from handyshop_migration.cli.parser import build_parser

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HandyshopError as exc:
        from handyshop_migration.tenancy.secrets import one_line

        print(f"handyshop-migration {args.command}: error: {one_line(exc)}", file=sys.stderr)
        if debug:
            traceback.print_exception(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # every other failure: one line, the trace in a file or with --debug
        line = f"handyshop-migration {args.command}: error: {_describe(exc)}"
        if debug:
            from handyshop_migration.tenancy.secrets import redact

            print(redact("".join(traceback.format_exception(exc))), file=sys.stderr, end="")
            print(line, file=sys.stderr)
            return 1
        path = _write_trace(exc)
        where = f"full trace in {path}" if path else "run again with --debug for the full trace"
        print(f"{line}; {where} (or run with --debug).", file=sys.stderr)
        return 1
