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

One module per verb group (`local`, `migration`, `tools`) over the verb table in `parser`. Errors are one
line naming the problem and the fix; secrets are never printed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from handyshop_migration.tenancy.errors import HandyshopError


def main(argv: Sequence[str] | None = None) -> int:
    from handyshop_migration.cli.parser import build_parser

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except HandyshopError as exc:
        print(f"handyshop-migration {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130

