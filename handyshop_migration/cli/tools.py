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
    from handyshop_migration.tenancy.engine.introspection import introspect

    url = args.source_url or os.environ.get(settings.SOURCE_URL, "")
    if not url:
        raise ConfigurationError(f"give --source-url or set {settings.SOURCE_URL}.")
    spec = ConnectionSpec.from_url(url, name="--source-url")
    include = [t for t in args.tables.split(",") if t] if args.tables else None
    exclude = [t for t in args.exclude.split(",") if t]
    catalog = introspect(
        spec,
        tenant_column=args.tenant_column,
        schema=args.schema,
        include=include,
        exclude=exclude,
        tenants_table=args.tenants_table,
        tenants_key=args.tenants_key,
        tenants_name=args.tenants_name,
        users_table=args.users_table,
    )
    out = Path(args.output)
    catalog.save(out)
    tenants = catalog.require_tenants()
    say(f"wrote {out}: {len(catalog.tables)} tenant tables (tenant column {catalog.tenant_column!r}), "
        f"checksum {catalog.checksum[:12]}…")
    say(f"  tenants: {tenants.schema}.{tenants.table} (key {tenants.key}"
        + (f", name {tenants.name})" if tenants.name else ", no name column)")
        + (f"; users: {catalog.users.table}" if catalog.users else "; no users table: owner checks skipped"))
    say("  tables, parents first: " + ", ".join(catalog.table_names))
    say("  stays shared: " + (", ".join(f"{s.name} ({s.reason})" for s in catalog.shared_tables) or "-"))
    kinds: dict[str, int] = {}
    for o in catalog.objects:
        kinds[o.kind] = kinds.get(o.kind, 0) + 1
    say("  objects: " + (", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in sorted(kinds.items())) or "none")
        + (f"; extensions: {', '.join(e.name for e in catalog.extensions)}" if catalog.extensions else ""))
    for note in catalog.notes:
        say(f"  note: {note}")
    for f in catalog.findings:
        say(f"  {f.action}: {f.object} — {f.reason}")
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

