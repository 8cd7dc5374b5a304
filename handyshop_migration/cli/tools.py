"""Verbs that work on a shared database directly: `inspect` (its catalog) and `seed` (a realistic one)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from handyshop_migration import settings
from handyshop_migration.cli.environment import say
from handyshop_migration.tenancy.errors import ConfigurationError


def cmd_inspect(args: argparse.Namespace) -> int:
    from handyshop_migration.tenancy.dsn import ConnectionSpec
    from handyshop_migration.tenancy.engine.catalog import introspect
    from handyshop_migration.tenancy.engine.tenant_schema import render

    url = args.source_url or os.environ.get(settings.SOURCE_URL, "")
    if not url:
        raise ConfigurationError(f"give --source-url or set {settings.SOURCE_URL}.")
    spec = ConnectionSpec.from_url(url, name="--source-url")
    include = [t for t in args.tables.split(",") if t] if args.tables else None
    exclude = [t for t in args.exclude.split(",") if t]
    catalog = introspect(spec, tenant_column=args.tenant_column, schema=args.schema, include=include, exclude=exclude)
    out = Path(args.output)
    catalog.save(out)
    say(f"wrote {out}: {len(catalog.tables)} tenant tables (tenant column {catalog.tenant_column!r}), "
        f"checksum {catalog.checksum[:12]}…")
    say("  tables, parents first: " + ", ".join(catalog.table_names))
    for note in render(catalog).notes:
        say(f"  note: {note}")
    say(f"use it: {settings.CATALOG}={out} (the definitions then build one asset per table)")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    from handyshop_migration.devtools.seed import ensure_database, seed_database
    from handyshop_migration.tenancy.dsn import ConnectionSpec

    spec = ConnectionSpec.from_url(args.url, name="--url")
    ensure_database(spec.with_db("postgres"), spec.dbname)
    report = seed_database(
        spec,
        shops=args.shops,
        scale=args.scale,
        seed=args.seed,
        big_shop_rows=args.big_shop_rows,
        cross_shop_reference=args.cross_shop_reference,
        orphan_rows=args.orphan_rows,
    )
    say(f"seeded {spec.describe()}: {len(report.shop_ids)} shops, {sum(report.table_rows.values())} rows")
    return 0

