-- The capture trigger functions of one tenant table in the shared database: one per event, generated per
-- table, so each reads the tenant and key columns directly (no row is turned into jsonb) and runs as few
-- PL/pgSQL expressions as possible (each is prepared again in every transaction). The triggers calling
-- them carry the captured shops in their WHEN clause, evaluated by the executor without a function call:
-- a write of a shop that is not captured never gets here. A write of a captured shop costs one INSERT of
-- its key. TG_ARGV lists the shops whose writes are checked against the fence (fence() adds a shop before
-- it sets the lease): only their writes go through admit(), the slow path that waits, refuses or passes.
CREATE OR REPLACE FUNCTION {insert_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.{tenant_column}::text = ANY (TG_ARGV) AND NOT handyshop_capture.admit(NEW.{tenant_column}, {table}, TG_OP) THEN
        RETURN NULL;
    END IF;
    INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) VALUES (NEW.{tenant_column}, {table}, 'I', {new_key});
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION {delete_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF OLD.{tenant_column}::text = ANY (TG_ARGV) AND NOT handyshop_capture.admit(OLD.{tenant_column}, {table}, TG_OP) THEN
        RETURN NULL;
    END IF;
    INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) VALUES (OLD.{tenant_column}, {table}, 'D', {old_key});
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION {update_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF OLD.{tenant_column} IS NOT DISTINCT FROM NEW.{tenant_column} AND NOT ({key_changed}) THEN
        -- the common case: a row of a captured shop changed in place (the WHEN clause says it is captured)
        IF NEW.{tenant_column}::text = ANY (TG_ARGV) AND NOT handyshop_capture.admit(NEW.{tenant_column}, {table}, TG_OP) THEN
            RETURN NULL;
        END IF;
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) VALUES (NEW.{tenant_column}, {table}, 'U', {new_key});
        RETURN NULL;
    END IF;
    -- the row moved between shops, or its key changed: it enters NEW's shop and leaves OLD's; admit() says
    -- whether each is captured (false: not captured) and holds back what is fenced
    IF NEW.{tenant_column} IS NOT NULL AND handyshop_capture.admit(NEW.{tenant_column}, {table}, TG_OP) THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) VALUES (NEW.{tenant_column}, {table}, 'U', {new_key});
    END IF;
    IF OLD.{tenant_column} IS NOT NULL AND handyshop_capture.admit(OLD.{tenant_column}, {table}, TG_OP) THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) VALUES (OLD.{tenant_column}, {table}, 'D', {old_key});
    END IF;
    RETURN NULL;
END
$fn$;
