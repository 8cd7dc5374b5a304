"""The verb table: every command, its help text and its arguments, in one list the parser is built from."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from handyshop_migration import settings
from handyshop_migration.cli import app, fleet, local, migration, tools
from handyshop_migration.cli.environment import EPILOG, positive_float, positive_int

Arguments = Callable[[argparse.ArgumentParser], None]


@dataclass(frozen=True)
class Verb:
    name: str
    run: Callable[[argparse.Namespace], int]
    help: str
    arguments: Arguments = lambda p: None


def _local_options(shops: int) -> Arguments:
    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--shops", type=positive_int, default=shops, help=f"shops to seed (default {shops})")
        p.add_argument("--scale", type=positive_float, default=0.1, help="rows per shop, 1.0 ≈ 2,000 (default 0.1)")
        p.add_argument("--seed", type=int, default=42, help="random seed of the generated data (default 42)")
        p.add_argument("--data-dir", default=".handyshop", help="where the embedded server and DAGSTER_HOME live")
        p.add_argument("--pg-version", type=int, choices=(16, 18), default=18, help="embedded PostgreSQL version")

    return add


def _demo(p: argparse.ArgumentParser) -> None:
    _local_options(5)(p)
    p.add_argument("--cross-shop-reference", action="store_true",
                   help="plant a repair pointing at another shop's customer (the gates must catch it)")
    p.add_argument("--through-phase", type=int, choices=(2, 3, 4, 5), default=5,
                   help="last phase (default 5); from 3 on, a simulated application writes throughout")


def _dev(p: argparse.ArgumentParser) -> None:
    _local_options(5)(p)
    p.add_argument("--port", type=int, default=3000, help="webserver port (default 3000)")


def _migrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shops", default="all", help="'all' (default) or comma-separated shop ids")
    p.add_argument("--through-phase", type=int, choices=(2, 3, 4, 5), default=2, help="last phase to run (default 2)")
    p.add_argument("--confirm-retirement", action="store_true",
                   help="phase 5 deletes the shops' rows from the shared database (archived first): required for 5")
    p.add_argument("--workers", type=positive_int, default=1,
                   help="shops migrated at once, each worker a process of its own (default 1; 2 on a 2-core machine); "
                   "the copy pool in dagster.yaml still caps concurrent copies on the shared database")


def _prepare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shops", default="all",
                   help="the shops this migration will move, for the connection budget: 'all' (default) or ids")


def _rollback(p: argparse.ArgumentParser) -> None:
    p.add_argument("--phase", type=int, choices=(1, 2, 3, 4, 5), required=True)
    p.add_argument("--shop", type=int, required=True)
    p.add_argument("--confirm", required=True, help="the shop's tenant database name, e.g. shop_5_db")


def _inspect(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source-url", default="", help=f"shared database URL (default: ${settings.SOURCE_URL})")
    p.add_argument("--output", required=True, help="catalog file to write (JSON)")
    p.add_argument("--tenant-column", default="shop_id", help="the column that names the tenant (default shop_id)")
    p.add_argument("--schema", default="public", help="schema of the tenant tables (default public)")
    p.add_argument("--tables", default="", help="exactly these tables (comma-separated); default: all with the column")
    p.add_argument("--exclude", default="users", help="tables that carry the tenant column but stay shared (default: users)")
    p.add_argument("--tenants-table", default=None,
                   help="the table with one row per tenant (default: the table the tenant column references)")
    p.add_argument("--tenants-key", default=None, help="its id column (default: the referenced or primary-key column)")
    p.add_argument("--tenants-name", default=None, help="its display-name column (default: 'name' if it has one)")
    p.add_argument("--users-table", default=None,
                   help="the application's users, for phase 0's owner checks (default: none, checks skipped)")
    p.add_argument("--path", action="append", default=[], metavar="TABLE=COLUMNS",
                   help="an implied table's first foreign-key hop where it has several (e.g. rental=customer_id); "
                   "the rest follows the parent's path. Repeatable.")
    p.add_argument("--reference", default=None, metavar="TABLES",
                   help="exactly these reference tables (comma-separated); default: found by foreign keys and views")
    p.add_argument("--not-reference", default="", metavar="TABLES",
                   help="tables inspect would declare reference that stay shared (comma-separated)")
    p.add_argument("--global-rows", action="append", default=[], metavar="TABLE=POLICY",
                   help="a tenant table's rows under the global tenant ids: stay (default) or every_tenant. Repeatable.")
    p.add_argument("--global-ids", default=None, metavar="IDS",
                   help="tenant-column values that mark global rows (comma-separated; default 0,1682)")


def _seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="target database URL (created if missing)")
    p.add_argument("--shops", type=positive_int, default=5)
    p.add_argument("--scale", type=positive_float, default=1.0)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--big-shop-rows", type=positive_int, default=None, help="give shop 1 this many repairs")
    p.add_argument("--cross-shop-reference", action="store_true")
    p.add_argument("--orphan-rows", action="store_true")


def _export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target-url", default="", help=f"database holding the app's table (default: ${settings.SOURCE_URL})")
    p.add_argument("--schema", default="public", help="schema of the app's table (default public)")
    p.add_argument("--table", default="tenant_connections", help="the app's table (default tenant_connections)")
    p.add_argument("--host", default="", help="host the app reaches the tenant server at, if not the registry's")
    p.add_argument("--port", type=int, default=None, help="port the app reaches the tenant server at")


def _add_shop(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True)
    p.add_argument("--url", default="", help=f"shared database URL (default: ${settings.SOURCE_URL}, else the dev stack)")
    p.add_argument("--scale", type=positive_float, default=1.0)
    p.add_argument("--data-dir", default=".handyshop")


def _servers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--measure", action="store_true", help="measure every tenant database's size first (pg_database_size)")


def _migrate_schemas(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shop", type=int, default=None, help="only this shop (a retry alone); default: every provisioned shop")


def _rotate_keys(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=positive_int, default=100, help="entries re-encrypted per transaction (default 100)")


def _move_shop(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shop", type=int, required=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", default="", help="the server (a name in the servers file) to move its tenant database to")
    where.add_argument("--back", action="store_true", help="back to the old copy the last move left (the way back)")
    where.add_argument("--abort", action="store_true", help="give up the move in progress (the origin takes writes again)")
    where.add_argument("--drop-old-copy", action="store_true", help="drop the old copy a finished move left (needs --confirm)")
    p.add_argument("--confirm", default="", help="with --drop-old-copy: the shop's tenant database name, e.g. shop_5_db")


VERBS: tuple[Verb, ...] = (
    Verb("demo", local.cmd_demo, "Seed a realistic shared database on an embedded server, run phases 0-5 through "
         "Dagster while a simulated application keeps writing, print the per-shop verification table; exit 1 if "
         "any gate failed or any write was lost.", _demo),
    Verb("dev", local.cmd_dev, "Embedded server + seeded database + `dagster dev` on 127.0.0.1, with the "
         "environment set, to click through the pipeline in the UI.", _dev),
    Verb("prepare", migration.cmd_prepare, "Phase 0 on the servers named by the environment: backup, catalog "
         "drift, validation. Exit 1 if a gate failed.", _prepare),
    Verb("migrate", migration.cmd_migrate, "Phases 1-2 (provision, copy, verify) and, with --through-phase, 3 "
         "(sync), 4 (cutover), 5 (retirement) for shops of the shared database named by the environment; phase 0 "
         "first if it never ran. Exit 1 if a shop did not get through.", _migrate),
    Verb("rollback", migration.cmd_rollback, "The way back from a phase for one shop: 1 deprovision, 2 empty and "
         "reload, 3 stop capture, 4 writes back to the shared database, 5 restore the archive.", _rollback),
    Verb("status", migration.cmd_status, "One line per shop: phase reached, gates passed/failed, rows, last run."),
    Verb("inspect", tools.cmd_inspect, "Write the catalog of a shared database (tables with the tenant column, "
         "columns, keys, foreign-key order) for the definitions to be built from.", _inspect),
    Verb("seed", tools.cmd_seed, "Create a realistic shared Handyshop database (refuses a database that has one).",
         _seed),
    Verb("add-shop", local.cmd_add_shop, "Add a shop to the shared database, as a sign-up would.", _add_shop),
    Verb("export-app-registry", app.cmd_export_app_registry, "Write the registry into the application's own "
         "tenant_connections table, secrets in its format under its key (HANDYSHOP_APP_ENCRYPTION_KEY), so that its "
         "own router reaches migrated shops unchanged.", _export),
    Verb("servers", fleet.cmd_servers, "The tenant servers (HANDYSHOP_SERVERS): databases, bytes, tenants and "
         "connection budget of each, the placement balance, and the shops behind the newest tenant migration.", _servers),
    Verb("migrate-schemas", fleet.cmd_migrate_schemas, "Apply pending tenant migrations to every provisioned shop (a "
         "few at a time per server; a failure stops only its shop), or to one (--shop). Exit 1 if one failed.",
         _migrate_schemas),
    Verb("rotate-keys", fleet.cmd_rotate_keys, "Re-encrypt every registry entry under TENANT_ENCRYPTION_KEY (old keys "
         "in TENANT_ENCRYPTION_OLD_KEYS), each once both its roles log in; resumable. Says what is left per old key.",
         _rotate_keys),
    Verb("move-shop", fleet.cmd_move_shop, "Move a live or retired shop's tenant database to another server while it "
         "takes writes (--to), back (--back), give a move up (--abort), or drop the old copy (--drop-old-copy).",
         _move_shop),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handyshop-migration",
        description="Move a shared multi-tenant PostgreSQL database to one database per shop, through Dagster, "
        "with verification gates and a way back.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full trace of an unforeseen failure (otherwise it goes to a log file)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for verb in VERBS:
        p = sub.add_parser(verb.name, help=verb.help, description=verb.help, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        verb.arguments(p)
        p.set_defaults(func=verb.run)
    return parser
