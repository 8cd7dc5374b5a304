-- The tenant write guard: until a shop is live, its tenant database refuses writes from anyone but the
-- migration (whose replays run in replica mode, which skips the guard's ordinary triggers); during the
-- rollback fence it refuses again. One BEFORE ... FOR EACH STATEMENT trigger per tenant table reads the
-- one row of tenant_state. Schema handyshop_migration of the tenant database; idempotent, so it can be
-- part of the tenant template (the row is added per database: capture.install_tenant_guard).
--
-- The guard keeps misrouted writes out (an application that cached an old route); it is no security
-- boundary against the tenant role, which owns its database and could drop it.
CREATE SCHEMA IF NOT EXISTS handyshop_migration;
CREATE TABLE IF NOT EXISTS handyshop_migration.tenant_state (
    shop_id bigint PRIMARY KEY,
    accepts_writes boolean NOT NULL DEFAULT false,
    -- set when the tenant first takes the shop's writes; cleared only when the way back has copied them
    -- back: while set, the tenant holds writes the shared database may lack (never reload it then)
    live_since timestamptz,
    reason text NOT NULL DEFAULT 'not live yet',
    since timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS tenant_state_one_row ON handyshop_migration.tenant_state ((true));
GRANT USAGE ON SCHEMA handyshop_migration TO PUBLIC;
GRANT SELECT ON handyshop_migration.tenant_state TO PUBLIC;

CREATE OR REPLACE FUNCTION handyshop_migration.guard() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    st record;
BEGIN
    SELECT t.shop_id, t.accepts_writes, t.live_since, t.reason, t.since INTO st
      FROM handyshop_migration.tenant_state t;
    IF FOUND AND st.accepts_writes THEN
        RETURN NULL;
    END IF;
    IF FOUND AND st.live_since IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'HS001',
            MESSAGE = pg_catalog.format('shop %s is moving back to the shared database: its own database refuses '
                                        'this %s on %I (%s, since %s)', st.shop_id, pg_catalog.lower(TG_OP),
                                        TG_TABLE_NAME, st.reason, st.since),
            HINT = pg_catalog.format('Retry in a moment; route through handyshop_migration.route(%s, ''write''): the '
                                     'shop''s writes go to the shared database once it is back.', st.shop_id);
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'HS001',
        MESSAGE = pg_catalog.format('shop %s''s database is not live yet: this %s on %I was refused (%s)',
                                    coalesce(st.shop_id::text, '?'), pg_catalog.lower(TG_OP), TG_TABLE_NAME,
                                    coalesce(st.reason, 'no tenant_state row')),
        HINT = pg_catalog.format('Write to the shop where handyshop_migration.route(%s, ''write'') says (the shared '
                                 'database until the shop is live), and route through handyshop_migration.route() '
                                 'again when a write is refused with SQLSTATE HS001.', coalesce(st.shop_id::text, 'shop_id'));
END
$fn$;
