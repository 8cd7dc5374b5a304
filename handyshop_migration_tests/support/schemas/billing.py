"""The billing fixture: a shared database in the shape of Kill Bill's PostgreSQL DDL
(https://github.com/killbill/killbill, the `ddl.sql` of each module plus `util/.../ddl-postgresql.sql`).

Tenants are the rows of `tenants` (key `record_id`, display name `external_key`); the tenant column is
`tenant_record_id`, which is never a declared foreign key. Rows with tenant_record_id = 0 are global: the
default configuration in tenant_kvs and the control tags in tag_definitions, which every tenant's tags
reference. Kill Bill's MySQL-compatibility domains (datetime, mediumtext, longtext, mediumblob, longblob) type
the columns, and its compatibility functions (last_insert_id(), schema()) are what the DAOs call.
`invoice_item_notes` has no tenant column and belongs to a tenant through invoice_items. Schema in
`billing_schema.sql`, data in `billing_data.sql`.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg

from ._fixture import AppAction, Fixture, FunctionCall, load

INFO = Fixture(
    name="billing",
    modelled_on="Kill Bill DDL (MySQL DDL with the PostgreSQL compatibility bridge), https://github.com/killbill/killbill",
    tenants_table="tenants",
    tenants_key="record_id",
    tenants_name="external_key",
    tenant_column="tenant_record_id",
    tenant_tables=(
        "tenant_kvs", "accounts", "bundles", "subscriptions", "invoices", "invoice_items", "invoice_billing_events",
        "payments", "tag_definitions", "tags", "custom_fields",
    ),
    tenant_fk_tables=(),  # tenant_record_id is a plain bigint everywhere, as in Kill Bill
    implied_tables={"invoice_item_notes": (("invoice_item_notes", ("invoice_item_id",), "invoice_items"),)},
    id_columns={"invoice_item_notes": "record_id"},
    shared_only=("tenants", "users", "sessions", "bus_events"),
    global_ids=(0,),
    global_id_column="record_id",
    global_rows={"tenant_kvs": (1, 2), "tag_definitions": (1, 2, 3, 4, 5, 6)},
    functions={
        "last_insert_id": FunctionCall("SELECT last_insert_id()", "bigint"),
        "schema": FunctionCall("SELECT schema()", "character varying", "public"),
    },
    internal_functions=("set_updated_date",),
    triggers={
        "accounts": ("accounts_updated_date",),
        "subscriptions": ("subscriptions_updated_date",),
        "payments": ("payments_updated_date",),
    },
    views=("invoice_totals",),
    domains={
        "datetime": "timestamp without time zone",
        "mediumtext": "text",
        "longtext": "text",
        "mediumblob": "bytea",
        "longblob": "bytea",
    },
    never_used_sequences={
        "custom_fields_record_id_seq": "custom_fields.record_id",
        "custom_field_sort_seq": "custom_fields.sort_order",
    },
    unowned_sequences=("custom_field_sort_seq",),
    tenant_specific_indexes={"accounts_email_tenant_2": 2},
    comments={
        "tenants": "The tenants; tenant_record_id everywhere else is tenants.record_id (no FK).",
        "accounts.tenant_record_id": "The tenant; 0 would mean a global row.",
        "tag_definitions": "Rows of tenant 0 are the control tags every tenant uses.",
        "tenant_kvs.tenant_value": "Catalog XML, translations (Übersetzungen), callbacks.",
    },
    app_actions=(
        AppAction(
            "the account DAO inserts an account for tenant 1 and reads its record id with last_insert_id()",
            ("INSERT INTO accounts (id, external_key, email, name, currency, reference_time, created_date, "
             "created_by, tenant_record_id) VALUES (md5('account-new')::uuid::text, 'acct-1-new', "
             "'neu@tenant1.example', 'Renée Größ', 'EUR', '2025-03-01', '2025-03-01', 'admin', 1)",
             "SELECT last_insert_id() = (SELECT max(record_id) FROM accounts)"),
            tenant=1, expect=(True,),
        ),
        AppAction(
            "tenant 1 changes an account's e-mail: updated_date is stamped",
            ("UPDATE accounts SET email = 'jörg@tenant1.example' WHERE record_id = 1 "
             "RETURNING updated_date > timestamp '2025-06-01'",),
            tenant=1, expect=(True,),
        ),
        AppAction(
            "support adds a note (no tenant column) to tenant 2's first invoice item",
            ("INSERT INTO invoice_item_notes (id, invoice_item_id, body, created_by, created_date) "
             "SELECT md5('note-new')::uuid::text, id, 'Gutschrift für März veranlasst', 'support', '2025-03-05' "
             "FROM invoice_items WHERE tenant_record_id = 2 ORDER BY record_id LIMIT 1 "
             "RETURNING (SELECT ii.tenant_record_id FROM invoice_items ii "
             "WHERE ii.id = invoice_item_notes.invoice_item_id)",),
            tenant=2, expect=(2,),
        ),
        AppAction(
            "tenant 2 puts AUTO_PAY_OFF (a global tag definition) on one of its accounts",
            ("INSERT INTO tags (id, tag_definition_id, object_id, object_type, created_by, created_date, "
             "updated_by, updated_date, account_record_id, tenant_record_id) "
             "SELECT md5('tag-new')::uuid::text, td.id, a.id, 'ACCOUNT', 'admin', '2025-03-05', 'admin', "
             "'2025-03-05', a.record_id, a.tenant_record_id FROM accounts a, tag_definitions td "
             "WHERE a.record_id = 12 AND td.name = 'AUTO_PAY_OFF' AND td.tenant_record_id = 0 "
             "RETURNING tenant_record_id",),
            tenant=2, expect=(2,),
        ),
        AppAction(
            "tenant 1 reads its configuration together with the global defaults",
            ("SELECT count(*) FROM tenant_kvs WHERE tenant_record_id IN (0, 1) AND tenant_key = 'PER_TENANT_CONFIG'",),
            tenant=1, expect=(2,),
        ),
        AppAction(
            "tenant 1 creates the first custom field ever: record_id and sort_order both start at 1",
            ("INSERT INTO custom_fields (id, object_id, object_type, field_name, field_value, created_by, "
             "created_date, account_record_id, tenant_record_id) VALUES (md5('cf-1')::uuid::text, "
             "md5('account-1-1')::uuid::text, 'ACCOUNT', 'Kostenstelle', '4711-Süd', 'admin', '2025-03-01', 1, 1) "
             "RETURNING record_id, sort_order",),
            tenant=1, expect=(1, 1),
        ),
        AppAction(
            "the invoice page reads an invoice's total",
            ("SELECT items, amount FROM invoice_totals WHERE invoice_id = md5('invoice-1-1')::uuid::text",),
            tenant=1, expect=(2, Decimal("38.950000000")),
        ),
    ),
    report={
        "tenants": "tenant_record_id is not a foreign key anywhere: tenant tables are found by the column name",
        "accounts_email_tenant_2": "partial index whose predicate names tenant 2",
        "tags_tag_definition_id_fkey": "tenant rows reference global rows (tag_definitions of tenant 0): every "
        "tenant database needs the global rows",
        "bus_events": "shared queue whose search_key2 is a tenant record id under another name",
        "payments_key": "unique index on payments.external_key across all tenants (not per tenant)",
        "custom_field_sort_seq": "sequence no column owns, used only by custom_fields.sort_order's default",
    },
    notes=(
        "Kill Bill declares no foreign keys; the three here (invoice_items -> invoices, invoice_item_notes -> "
        "invoice_items, tags -> tag_definitions, all on the char(36) ids) are ours.",
        "tag_definitions.name is varchar(50) here so that OVERDUE_ENFORCEMENT_OFF fits.",
        "Global rows have tenant_record_id = 0; there is no tenants row 0.",
    ),
)


def create(conn: psycopg.Connection, tenants: int = 3) -> None:
    """Create the schema and the data of `tenants` tenants (record ids 1..tenants, at least 2) and commit."""
    load(conn, "billing", tenants)
