"""The store fixture: a shared database in the shape of Pagila (the PostgreSQL port of MySQL's Sakila sample
database, https://github.com/devrimgunduz/pagila), split by store.

Tenants are the rows of `store`; the tenant column is `store_id` on customer, staff, inventory and
film_request. `rental` and `payment` carry no store_id: a rental belongs to the store of its inventory item
(two more paths, through its customer and its staff, agree except for one planted row), a payment to the
store of its rental (two levels deep; `payment` is partitioned by month). The catalogue, the geography and the
addresses are reference tables. Schema in `store_schema.sql`, data in `store_data.sql`.
"""

from __future__ import annotations

import datetime
from decimal import Decimal

import psycopg

from ._fixture import AppAction, Fixture, FunctionCall, load

_INVENTORY: tuple = (("rental", ("inventory_id",), "inventory"),)
_RENTAL_CUSTOMER: tuple = (("rental", ("customer_id",), "customer"),)
_RENTAL_STAFF: tuple = (("rental", ("staff_id",), "staff"),)
_VIA_RENTAL: tuple = (("payment", ("rental_id",), "rental"),)

INFO = Fixture(
    name="store",
    modelled_on="Pagila (PostgreSQL port of Sakila), https://github.com/devrimgunduz/pagila",
    tenants_table="store",
    tenants_key="store_id",
    tenants_name=None,  # a store has no name column; its address is the nearest thing
    tenant_column="store_id",
    tenant_tables=("customer", "staff", "inventory", "film_request"),
    tenant_fk_tables=("customer", "staff", "inventory", "film_request"),
    implied_tables={
        "rental": _INVENTORY,
        "payment": _VIA_RENTAL + _INVENTORY,
    },
    other_paths={
        "rental": (_RENTAL_CUSTOMER, _RENTAL_STAFF),
        "payment": (
            (("payment", ("customer_id",), "customer"),),
            (("payment", ("staff_id",), "staff"),),
            _VIA_RENTAL + _RENTAL_CUSTOMER,
            _VIA_RENTAL + _RENTAL_STAFF,
        ),
    },
    id_columns={"rental": "rental_id", "payment": "payment_id"},
    # Rental 9001: inventory 1 and staff 1 are store 1's, customer 21 is store 2's. It has no payment.
    ambiguous_rows={"rental": (9001,)},
    # Payment 9001: rental_id, customer_id and staff_id all NULL.
    orphan_rows={"payment": (9001,)},
    reference_tables=(
        "film", "language", "actor", "film_actor", "category", "film_category", "address", "city", "country",
    ),
    shared_only=("store", "ddl_log"),
    functions={
        "last_day": FunctionCall("SELECT last_day('2025-02-10'::timestamp)", "date", datetime.date(2025, 2, 28)),
        "film_in_stock": FunctionCall("SELECT * FROM film_in_stock(9, 1)", "integer", 1, returns_set=True, tenant=1),
        "film_not_in_stock": FunctionCall(
            "SELECT * FROM film_not_in_stock(18, 1)", "integer", 10, returns_set=True, tenant=1
        ),
        "inventory_in_stock": FunctionCall("SELECT inventory_in_stock(10)", "boolean", False, tenant=1),
        "inventory_held_by_customer": FunctionCall("SELECT inventory_held_by_customer(10)", "integer", 10, tenant=1),
        "get_customer_balance": FunctionCall(
            "SELECT get_customer_balance(10, '2025-12-31'::timestamp)", "numeric", Decimal("61.96"), tenant=1
        ),
        "rewards_report": FunctionCall(
            "SELECT customer_id FROM rewards_report(1, 1.00, '2025-01-15'::timestamp)", "integer", 1,
            returns_set=True, tenant=1,
        ),
        "group_concat": FunctionCall(
            "SELECT group_concat(name ORDER BY category_id) FROM category WHERE category_id <= 3", "text",
            "Action, Animation, Children",
        ),
    },
    internal_functions=("last_updated", "_group_concat", "log_ddl_command"),
    aggregates=("group_concat",),
    triggers={
        **{
            t: ("last_updated",)
            for t in (
                "actor", "address", "category", "city", "country", "customer", "film_actor", "film_category",
                "film_request", "inventory", "language", "rental", "staff", "store",
            )
        },
        "film": ("film_fulltext_trigger", "last_updated"),
    },
    views=(
        "customer_list", "staff_list", "film_list", "actor_info", "sales_by_film_category", "sales_by_store",
        "flagship_inventory",
    ),
    materialized_views=("rental_by_category",),
    views_reading_shared_only={"sales_by_store": ("store",)},
    tenant_specific_views={"flagship_inventory": 1},
    event_triggers={"audit_ddl": "ddl_command_end"},
    domains={"year": "integer"},
    enums={"mpaa_rating": ("G", "PG", "PG-13", "R", "NC-17")},
    never_used_sequences={"film_request_request_id_seq": "film_request.request_id"},
    tenant_specific_indexes={"idx_customer_flagship_last_name": 1},
    partitioned={
        "payment": ("payment_p2025_01", "payment_p2025_02", "payment_p2025_03", "payment_p2025_04",
                    "payment_p2025_05"),
    },
    policies={"customer": ("customer_store_isolation",)},
    fk_cycles=((("store", ("manager_staff_id",), "staff"), ("staff", ("store_id",), "store")),),
    deferrable_fks=("store_manager_staff_id_fkey",),
    comments={
        "store": "The tenants: one row per rental store (Filiale).",
        "store.manager_staff_id": "The store's manager; staff.store_id points back (a cycle).",
        "customer.store_id": "Home store of the customer — the tenant column.",
        "payment": "Partitioned by payment_date, one partition per month.",
        "film.fulltext": "Maintained by film_fulltext_trigger from title and description.",
        "film_request": "Wünsche: films customers asked the store to stock.",
    },
    app_actions=(
        AppAction(
            "a clerk corrects a customer's e-mail: the last_updated trigger stamps the row",
            ("UPDATE customer SET email = 'jürgen.neu@example.org' WHERE customer_id = 1 "
             "RETURNING last_update > timestamp '2025-01-02'",),
            tenant=1, expect=(True,),
        ),
        AppAction(
            "store 2 rents out inventory item 31 (a rental row, no store_id): the item is out afterwards",
            ("INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) "
             "VALUES ('2025-05-02 10:00', 31, 21, 4) RETURNING inventory_in_stock(31)",),
            tenant=2, expect=(False,),
        ),
        AppAction(
            "store 2 takes a payment for rental 61: it lands in the May partition",
            ("INSERT INTO payment (customer_id, staff_id, rental_id, amount, payment_date) "
             "VALUES (21, 4, 61, 2.99, '2025-05-03 09:00') RETURNING tableoid::regclass::text",),
            tenant=2, expect=("payment_p2025_05",),
        ),
        AppAction(
            "store 1 asks for a customer's balance",
            ("SELECT get_customer_balance(10, '2025-12-31'::timestamp)",),
            tenant=1, expect=(Decimal("61.96"),),
        ),
        AppAction(
            "head office edits a film description: the full-text vector follows",
            ("UPDATE film SET description = 'A Epic Drama of a Hobbit' WHERE film_id = 1 "
             "RETURNING fulltext @@ to_tsquery('english', 'hobbit')",),
            tenant=None, expect=(True,),
        ),
        AppAction(
            "the nightly report refreshes the materialized view",
            ("REFRESH MATERIALIZED VIEW rental_by_category", "SELECT count(*) > 0 FROM rental_by_category"),
            tenant=None, expect=(True,),
        ),
        AppAction(
            "a customer of store 2 asks for a film: the first row ever of film_request gets id 1 (its sequence "
            "was never used)",
            ("INSERT INTO film_request (store_id, customer_id, title) VALUES (2, 22, 'ZÜRICH NIGHTS') "
             "RETURNING request_id",),
            tenant=2, expect=(1,),
        ),
    ),
    nondeterministic_columns=("ddl_log.logged_at",),
    report={
        "audit_ddl": "event trigger (database-wide, needs a superuser): fires on the migration's own DDL in the "
        "shared database; not part of any table's schema",
        "customer_store_isolation": "RLS policy comparing the tenant column with a session setting: "
        "meaningless in a database of one store",
        "idx_customer_flagship_last_name": "partial index whose predicate names store 1",
        "flagship_inventory": "view whose WHERE names store 1",
        "sales_by_store": "view that reads the tenants table `store` (shared only)",
        "store_manager_staff_id_fkey": "FK cycle store.manager_staff_id -> staff, staff.store_id -> store; "
        "deferrable, so a store and its manager load in one transaction",
        "rental_by_category": "materialized view over every store's rows: must be refreshed in each tenant",
        "rental 9001": "ambiguous: its inventory is store 1's, its customer store 2's",
        "payment 9001": "orphan: no rental, customer or staff",
    },
    notes=(
        "payment.customer_id and payment.staff_id are nullable here (NOT NULL in Pagila) so that a payment can "
        "be a true orphan; rental_id is nullable as in Sakila.",
        "address holds the addresses of every store's customers and staff but has no store_id: it is a "
        "reference table (as asked), so each tenant database gets every store's addresses.",
        "The trigger Pagila calls last_updated (on every table with last_update) keeps that name here.",
        "customer has row-level security enabled, not forced: the owner and superusers see every row.",
    ),
)


def create(conn: psycopg.Connection, tenants: int = 3) -> None:
    """Create the schema and the data of `tenants` stores (ids 1..tenants, at least 2) and commit."""
    load(conn, "store", tenants)
