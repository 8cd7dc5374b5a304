-- The tenant side of change capture, for the way back from phase 4: every write the tenant takes while
-- it is live is logged by key, so that a rollback can copy it back. Schema handyshop_migration of the
-- tenant database; created by the tenant role itself (it owns its tables), or by the admin before the
-- tenant role owns the database. Idempotent. Nothing here is SECURITY DEFINER: the triggers run with the
-- writer's rights, which in a tenant database are the tenant role's own.
CREATE SCHEMA IF NOT EXISTS handyshop_migration;
CREATE TABLE IF NOT EXISTS handyshop_migration.changes (
    id bigserial PRIMARY KEY,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    table_name text NOT NULL,
    op "char" NOT NULL,
    key jsonb NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Only the tenant's own roles (its owner, its application role) and the admin can connect to a tenant
-- database, so PUBLIC is the tenant here: whoever of them writes can log the key (the triggers run with
-- the writer's rights); reading, changing or deleting entries stays with the owner.
GRANT USAGE ON SCHEMA handyshop_migration TO PUBLIC;
GRANT INSERT ON handyshop_migration.changes TO PUBLIC;
GRANT USAGE ON SEQUENCE handyshop_migration.changes_id_seq TO PUBLIC;

-- The first version's tenant lifecycle (live / fenced): replaced by the write guard's tenant_state.
DROP FUNCTION IF EXISTS handyshop_migration.on_change() CASCADE;
DROP FUNCTION IF EXISTS handyshop_migration.on_truncate() CASCADE;

CREATE OR REPLACE FUNCTION handyshop_migration.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'HS002',
        MESSAGE = pg_catalog.format('TRUNCATE of %I is refused while the way back to the shared database is kept '
                                    'open: its rows could not be copied back', TG_TABLE_NAME),
        HINT = 'Delete the rows with DELETE.';
END
$fn$;
