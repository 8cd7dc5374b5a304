-- The shared side of change capture: schema handyshop_capture of the shared (control) database.
-- Applied by capture.install() as the role that owns the tenant tables; idempotent.
--
-- No function here is SECURITY DEFINER: the capture triggers run with the rights of whoever writes, so
-- nothing the application can reach runs with the migration owner's rights. The price is the grants
-- below, to PUBLIC, and why they are harmless: the change log holds *keys*, which the sync only uses to
-- re-read the current rows (a forged entry makes it re-read a row: idempotent, nothing written that is not
-- already in the shared database); the shops table says which shops are being migrated and fenced, which
-- any writer learns anyway from the errors the fence raises. Nobody but the owner may read, change or
-- delete log entries.
CREATE SCHEMA IF NOT EXISTS handyshop_capture;

CREATE TABLE IF NOT EXISTS handyshop_capture.shops (
    shop_id bigint PRIMARY KEY,
    capture_since timestamptz NOT NULL DEFAULT now(),
    fenced_at timestamptz,
    fence_reason text
);
-- The fence is a lease: NULL = writes flow; a time = the shop's writes wait (at most max_wait_ms, then
-- HS001 "retry") until then, and flow again after it (the cutover died); 'infinity' = the shop is live
-- elsewhere: HS001 "moved" at once.
ALTER TABLE handyshop_capture.shops ADD COLUMN IF NOT EXISTS fenced_until timestamptz;
ALTER TABLE handyshop_capture.shops ADD COLUMN IF NOT EXISTS max_wait_ms integer NOT NULL DEFAULT 2000;
-- The shop's writes are checked against the fence (listed in the capture triggers' arguments); set by
-- fence() before the lease, so a running lease implies triggers that check it.
ALTER TABLE handyshop_capture.shops ADD COLUMN IF NOT EXISTS checked boolean NOT NULL DEFAULT false;
UPDATE handyshop_capture.shops SET fenced_until = 'infinity', checked = true
 WHERE fenced_at IS NOT NULL AND fenced_until IS NULL;

-- One row per changed key of a captured shop. No primary key: one index serves the sync (a shop's
-- entries), the consumption (DELETE by shop and ids) and the lag; every index is paid on each write.
CREATE TABLE IF NOT EXISTS handyshop_capture.changes (
    id bigserial NOT NULL,
    xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    shop_id bigint NOT NULL,
    table_name text NOT NULL,
    op "char" NOT NULL,
    key jsonb NOT NULL,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS changes_shop_id_idx ON handyshop_capture.changes (shop_id, id);

CREATE TABLE IF NOT EXISTS handyshop_capture.sync_state (
    shop_id bigint PRIMARY KEY,
    synced_at timestamptz NOT NULL DEFAULT now(),
    last_change_id bigint NOT NULL DEFAULT 0,
    changes_applied bigint NOT NULL DEFAULT 0,
    snapshot text
);

-- The tables that carry capture triggers, with what the triggers are generated from: enable() and
-- disable() rewrite the triggers from here, without a catalog at hand.
CREATE TABLE IF NOT EXISTS handyshop_capture.tables (
    table_schema text NOT NULL,
    table_name text NOT NULL,
    tenant_column text NOT NULL,
    key_columns text[] NOT NULL,
    function_name text NOT NULL,
    PRIMARY KEY (table_schema, table_name)
);

-- Keys applied to a tenant since its last full verification: what an incremental verification compares.
CREATE TABLE IF NOT EXISTS handyshop_capture.touched (
    shop_id bigint NOT NULL,
    table_name text NOT NULL,
    key jsonb NOT NULL,
    touched_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop_id, table_name, key)
);

REVOKE ALL ON SCHEMA handyshop_capture FROM PUBLIC;
GRANT USAGE ON SCHEMA handyshop_capture TO PUBLIC;
GRANT SELECT ON handyshop_capture.shops TO PUBLIC;
GRANT INSERT ON handyshop_capture.changes TO PUBLIC;
GRANT USAGE ON SEQUENCE handyshop_capture.changes_id_seq TO PUBLIC;

-- The rows triggers of the first version (SECURITY DEFINER, whole rows as jsonb): gone with their functions.
DROP FUNCTION IF EXISTS handyshop_capture.on_change() CASCADE;
DROP FUNCTION IF EXISTS handyshop_capture.on_truncate() CASCADE;

-- The slow path of a write of a shop whose writes are checked (being fenced, or fenced), or of a row
-- moving between shops. Returns true if the write is to be logged (captured, not
-- fenced, or its lease ran out), false if the shop is not captured; raises HS001 when the shop is fenced
-- past the bounded wait, or moved for good.
--
-- The race of a write against the end of a lease (see capture.fence): a writer that finds the lease run
-- out takes the shop's fence lock shared and reads the fence again in a new snapshot. make_permanent(),
-- renew() and unfence() take that lock exclusively first, so either they committed before (the writer
-- sees their fence and is refused) or they wait for the writer's commit (and then find the lease run out,
-- or its change in the log, and refuse themselves).
CREATE OR REPLACE FUNCTION handyshop_capture.admit(p_shop bigint, p_table text, p_op text) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    f record;
    started timestamptz := clock_timestamp();
    nap double precision := 0.002;
    moved boolean := false;
BEGIN
    LOOP
        SELECT s.fenced_until, s.fenced_at, s.fence_reason, s.max_wait_ms INTO f
          FROM handyshop_capture.shops s WHERE s.shop_id = p_shop;
        IF NOT FOUND THEN
            RETURN false;
        ELSIF f.fenced_until IS NULL THEN
            RETURN true;
        ELSIF f.fenced_until = 'infinity' THEN
            moved := true;
            EXIT;
        ELSIF f.fenced_until <= clock_timestamp() THEN
            -- The lease ran out (the cutover died, or is slow): writes flow again, unless a flip or a renewal
            -- is committing right now. Under REPEATABLE READ a new statement would not see it: retry instead.
            EXIT WHEN current_setting('transaction_isolation') <> 'read committed';
            PERFORM pg_catalog.pg_advisory_xact_lock_shared(1752393317, pg_catalog.hashint8(p_shop));
            SELECT s.fenced_until, s.fenced_at, s.fence_reason, s.max_wait_ms INTO f
              FROM handyshop_capture.shops s WHERE s.shop_id = p_shop;
            IF NOT FOUND THEN
                RETURN false;
            ELSIF f.fenced_until IS NULL OR f.fenced_until <= clock_timestamp() THEN
                RETURN true;  -- the shared lock is held to our commit: no flip can slip in before it
            END IF;
            moved := f.fenced_until = 'infinity';
            EXIT;  -- fenced again meanwhile; we hold the lock: fail, so that the fence is not held up by us
        END IF;
        EXIT WHEN clock_timestamp() - started >= pg_catalog.make_interval(secs => f.max_wait_ms / 1000.0);
        PERFORM pg_catalog.pg_sleep(nap);
        nap := least(nap * 2, 0.025);
    END LOOP;
    IF moved THEN
        RAISE EXCEPTION USING
            ERRCODE = 'HS001',
            MESSAGE = pg_catalog.format('shop %s has moved to its own database: this %s on %I was refused in the '
                                        'shared database', p_shop, pg_catalog.lower(p_op), p_table),
            DETAIL = pg_catalog.format('The shop''s writes go to its tenant database since %s (%s).',
                                       f.fenced_at, f.fence_reason),
            HINT = pg_catalog.format('Ask handyshop_migration.route(%s, ''write'') where the shop''s writes go now, '
                                     'and retry the transaction there.', p_shop);
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'HS001',
        MESSAGE = pg_catalog.format('shop %s''s writes are paused while it moves to its own database: this %s on %I '
                                    'waited %s ms and was refused', p_shop, pg_catalog.lower(p_op), p_table,
                                    pg_catalog.round(extract(epoch FROM clock_timestamp() - started) * 1000)),
        DETAIL = pg_catalog.format('Fenced since %s (%s), until %s at the latest.', f.fenced_at, f.fence_reason,
                                   f.fenced_until),
        HINT = pg_catalog.format('Retry the transaction in a moment; ask handyshop_migration.route(%s, ''write'') '
                                 'first: once the shop is live its writes go to its own database.', p_shop);
END
$fn$;

-- TRUNCATE removes rows without row triggers: refused while any shop is captured (the trigger exists
-- only then). Replica-mode sessions (the migration's own replays) skip it.
CREATE OR REPLACE FUNCTION handyshop_capture.refuse_truncate() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING
        ERRCODE = 'HS002',
        MESSAGE = pg_catalog.format('TRUNCATE of %I is refused while shops are being migrated: their changes could '
                                    'not be captured', TG_TABLE_NAME),
        HINT = 'Delete the rows with DELETE, or finish or roll back the migrations first.';
END
$fn$;
