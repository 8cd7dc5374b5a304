-- The billing fixture: a subscription-billing system in the shape of Kill Bill's PostgreSQL DDL. Every tenant
-- table has record_id serial (the surrogate key) and tenant_record_id bigint (the tenant: tenants.record_id,
-- never declared as a foreign key); rows with tenant_record_id = 0 are global, shared by every tenant.
-- Kill Bill's DDL is written for MySQL and made to run on PostgreSQL by compatibility domains and functions;
-- this fixture keeps that. Kill Bill declares no foreign keys at all; the few here (on the char(36) ids) are
-- ours, so that a child without the tenant column (invoice_item_notes) reaches its tenant by FK.
-- Written for these tests in Kill Bill's shape.

-- MySQL compatibility, as Kill Bill's PostgreSQL bridge has it.
CREATE DOMAIN datetime AS timestamp without time zone;
CREATE DOMAIN mediumtext AS text;
CREATE DOMAIN longtext AS text;
CREATE DOMAIN mediumblob AS bytea;
CREATE DOMAIN longblob AS bytea;

-- MySQL's LAST_INSERT_ID(): the value nextval() last returned in this session, NULL before the first one.
CREATE FUNCTION last_insert_id() RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    result bigint;
BEGIN
    SELECT lastval() INTO result;
    RETURN result;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END
$$;

-- MySQL's SCHEMA(): the current database (here: schema).
CREATE FUNCTION schema() RETURNS varchar LANGUAGE sql STABLE AS $$ SELECT current_schema()::varchar $$;

-- Stamps updated_date unless the statement set it (the DAOs usually do).
CREATE FUNCTION set_updated_date() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_date IS NOT DISTINCT FROM OLD.updated_date THEN
        NEW.updated_date := now()::timestamp;
    END IF;
    RETURN NEW;
END
$$;

CREATE TABLE tenants (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    external_key varchar(128),
    api_key varchar(128),
    api_secret varchar(128),
    api_salt varchar(128),
    created_date datetime NOT NULL,
    created_by varchar(50) NOT NULL,
    updated_date datetime,
    updated_by varchar(50)
);
CREATE UNIQUE INDEX tenants_id ON tenants (id);
CREATE UNIQUE INDEX tenants_api_key ON tenants (api_key);

-- Per-tenant configuration (catalog, translations, callbacks); the rows of tenant 0 are the defaults.
CREATE TABLE tenant_kvs (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0,
    tenant_key varchar(255) NOT NULL,
    tenant_value mediumtext NOT NULL,
    is_active boolean DEFAULT true,
    created_date datetime NOT NULL,
    created_by varchar(50) NOT NULL,
    updated_date datetime,
    updated_by varchar(50)
);
CREATE INDEX tenant_kvs_trid_key ON tenant_kvs (tenant_record_id, tenant_key);

CREATE TABLE accounts (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    external_key varchar(255) NOT NULL,
    email varchar(128),
    name varchar(100),
    first_name_length integer,
    currency char(3),
    billing_cycle_day_local integer,
    parent_account_id char(36),
    is_payment_delegated_to_parent boolean DEFAULT false,
    payment_method_id char(36),
    reference_time datetime NOT NULL,
    time_zone varchar(50),
    locale varchar(5),
    address1 varchar(100),
    city varchar(50),
    country varchar(50),
    postal_code varchar(16),
    phone varchar(25),
    notes varchar(4096),
    migrated boolean DEFAULT false,
    created_date datetime NOT NULL,
    created_by varchar(50) NOT NULL,
    updated_date datetime,
    updated_by varchar(50),
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX accounts_id ON accounts (id);
CREATE UNIQUE INDEX accounts_external_key ON accounts (external_key, tenant_record_id);
CREATE INDEX accounts_tenant_record_id ON accounts (tenant_record_id);
-- A "lucky search" index for the one big tenant's e-mail look-ups: its predicate names tenant 2.
CREATE INDEX accounts_email_tenant_2 ON accounts (email) WHERE tenant_record_id = 2;

CREATE TABLE bundles (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    external_key varchar(255) NOT NULL,
    account_id char(36) NOT NULL,
    last_sys_update_date datetime,
    original_created_date datetime NOT NULL,
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL,
    updated_by varchar(50) NOT NULL,
    updated_date datetime NOT NULL,
    account_record_id bigint NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX bundles_id ON bundles (id);
CREATE INDEX bundles_account ON bundles (account_id);
CREATE INDEX bundles_tenant_account_record_id ON bundles (tenant_record_id, account_record_id);

CREATE TABLE subscriptions (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    bundle_id char(36) NOT NULL,
    category varchar(32) NOT NULL,
    start_date datetime NOT NULL,
    bundle_start_date datetime NOT NULL,
    active_version integer DEFAULT 1,
    charged_through_date datetime,
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL,
    updated_by varchar(50) NOT NULL,
    updated_date datetime NOT NULL,
    account_record_id bigint NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX subscriptions_id ON subscriptions (id);
CREATE INDEX subscriptions_bundle_id ON subscriptions (bundle_id);
CREATE INDEX subscriptions_tenant_account_record_id ON subscriptions (tenant_record_id, account_record_id);

CREATE TABLE invoices (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    account_id char(36) NOT NULL,
    invoice_date date NOT NULL,
    target_date date,
    currency char(3) NOT NULL,
    status varchar(15) NOT NULL DEFAULT 'COMMITTED',
    migrated boolean NOT NULL,
    parent_invoice boolean NOT NULL DEFAULT false,
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL,
    account_record_id bigint NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX invoices_id ON invoices (id);
CREATE INDEX invoices_account ON invoices (account_id);
CREATE INDEX invoices_tenant_account_record_id ON invoices (tenant_record_id, account_record_id);

CREATE TABLE invoice_items (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    type varchar(24) NOT NULL,
    invoice_id char(36) NOT NULL,
    account_id char(36) NOT NULL,
    bundle_id char(36),
    subscription_id char(36),
    description varchar(255),
    product_name varchar(255),
    plan_name varchar(255),
    phase_name varchar(255),
    start_date date,
    end_date date,
    amount numeric(15,9) NOT NULL,
    rate numeric(15,9),
    currency char(3) NOT NULL,
    linked_item_id char(36),
    quantity numeric(15,9),
    item_details longtext,
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL,
    account_record_id bigint NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX invoice_items_id ON invoice_items (id);
CREATE INDEX invoice_items_invoice_id ON invoice_items (invoice_id);
CREATE INDEX invoice_items_tenant_account_record_id ON invoice_items (tenant_record_id, account_record_id);
ALTER TABLE invoice_items ADD CONSTRAINT invoice_items_invoice_id_fkey
    FOREIGN KEY (invoice_id) REFERENCES invoices (id) ON DELETE CASCADE;

-- Notes on an invoice item: no tenant_record_id, no account_record_id; it belongs to its item's tenant.
CREATE TABLE invoice_item_notes (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL UNIQUE,
    invoice_item_id char(36) NOT NULL REFERENCES invoice_items (id) ON DELETE CASCADE,
    body longtext NOT NULL,
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL
);
CREATE INDEX invoice_item_notes_item ON invoice_item_notes (invoice_item_id);

CREATE TABLE invoice_billing_events (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    invoice_id char(36) NOT NULL,
    billing_events longblob NOT NULL,
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL,
    account_record_id bigint NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX invoice_billing_events_invoice_id ON invoice_billing_events (invoice_id);

CREATE TABLE payments (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    account_id char(36) NOT NULL,
    payment_method_id char(36) NOT NULL,
    external_key varchar(255) NOT NULL,
    state_name varchar(64),
    last_success_state_name varchar(64),
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL,
    updated_by varchar(50) NOT NULL,
    updated_date datetime NOT NULL,
    account_record_id bigint NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX payments_id ON payments (id);
-- Unique across every tenant, as in Kill Bill.
CREATE UNIQUE INDEX payments_key ON payments (external_key);
CREATE INDEX payments_tenant_account_record_id ON payments (tenant_record_id, account_record_id);

-- Tag definitions: the control tags (AUTO_PAY_OFF, ...) are global rows of tenant 0; tenants add their own.
CREATE TABLE tag_definitions (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL UNIQUE,
    name varchar(50) NOT NULL,
    applicable_object_types varchar(500),
    description varchar(200) NOT NULL,
    is_active boolean DEFAULT true,
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL,
    updated_by varchar(50) NOT NULL,
    updated_date datetime NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE INDEX tag_definitions_tenant_record_id ON tag_definitions (tenant_record_id);

CREATE TABLE tags (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    tag_definition_id char(36) NOT NULL REFERENCES tag_definitions (id),
    object_id char(36) NOT NULL,
    object_type varchar(30) NOT NULL,
    is_active boolean DEFAULT true,
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL,
    updated_by varchar(50) NOT NULL,
    updated_date datetime NOT NULL,
    account_record_id bigint NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX tags_id ON tags (id);
CREATE INDEX tags_by_object ON tags (object_id);
CREATE INDEX tags_tenant_account_record_id ON tags (tenant_record_id, account_record_id);

-- Custom fields: nobody has created one yet. sort_order draws from a sequence that no column owns.
CREATE SEQUENCE custom_field_sort_seq;
CREATE TABLE custom_fields (
    record_id serial PRIMARY KEY,
    id char(36) NOT NULL,
    object_id char(36) NOT NULL,
    object_type varchar(30) NOT NULL,
    is_active boolean DEFAULT true,
    field_name varchar(64) NOT NULL,
    field_value varchar(255),
    sort_order bigint NOT NULL DEFAULT nextval('custom_field_sort_seq'),
    created_by varchar(50) NOT NULL,
    created_date datetime NOT NULL,
    updated_by varchar(50),
    updated_date datetime,
    account_record_id bigint NOT NULL,
    tenant_record_id bigint NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX custom_fields_id ON custom_fields (id);
CREATE INDEX custom_fields_tenant_account_record_id ON custom_fields (tenant_record_id, account_record_id);

-- Shared by the whole deployment: the RBAC users, the web sessions, the event bus (whose search_key2 is the
-- tenant record id under another name).
CREATE TABLE users (
    record_id serial PRIMARY KEY,
    username varchar(128),
    password varchar(128),
    password_salt varchar(128),
    is_active boolean DEFAULT true,
    created_date datetime NOT NULL,
    created_by varchar(50) NOT NULL,
    updated_date datetime,
    updated_by varchar(50)
);
CREATE UNIQUE INDEX users_username ON users (username);
CREATE TABLE sessions (
    record_id serial PRIMARY KEY,
    start_timestamp datetime NOT NULL,
    last_access_time datetime,
    timeout integer,
    host varchar(100),
    session_data mediumblob
);
CREATE TABLE bus_events (
    record_id serial PRIMARY KEY,
    class_name varchar(128) NOT NULL,
    event_json longtext NOT NULL,
    user_token char(36),
    created_date datetime NOT NULL,
    creating_owner varchar(50) NOT NULL,
    processing_owner varchar(50),
    processing_available_date datetime,
    processing_state varchar(14) DEFAULT 'AVAILABLE',
    error_count integer DEFAULT 0,
    search_key1 bigint,
    search_key2 bigint NOT NULL DEFAULT 0
);
CREATE INDEX bus_events_tenant_account_record_id ON bus_events (search_key2, search_key1);

CREATE TRIGGER accounts_updated_date BEFORE UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION set_updated_date();
CREATE TRIGGER subscriptions_updated_date BEFORE UPDATE ON subscriptions
    FOR EACH ROW EXECUTE FUNCTION set_updated_date();
CREATE TRIGGER payments_updated_date BEFORE UPDATE ON payments FOR EACH ROW EXECUTE FUNCTION set_updated_date();

CREATE VIEW invoice_totals AS
SELECT i.tenant_record_id, i.account_record_id, i.id AS invoice_id, i.invoice_date, i.currency, i.status,
       count(ii.record_id) AS items, coalesce(sum(ii.amount), 0) AS amount
  FROM invoices i
  LEFT JOIN invoice_items ii ON ii.invoice_id = i.id
 GROUP BY i.tenant_record_id, i.account_record_id, i.id, i.invoice_date, i.currency, i.status;

COMMENT ON TABLE tenants IS 'The tenants; tenant_record_id everywhere else is tenants.record_id (no FK).';
COMMENT ON COLUMN accounts.tenant_record_id IS 'The tenant; 0 would mean a global row.';
COMMENT ON TABLE tag_definitions IS 'Rows of tenant 0 are the control tags every tenant uses.';
COMMENT ON COLUMN tenant_kvs.tenant_value IS 'Catalog XML, translations (Übersetzungen), callbacks.';
