-- The capture trigger function of one tenant table in the shared database (generated per table, so it
-- reads the tenant and key columns directly: no row is turned into jsonb). The triggers calling it carry
-- the captured shops in their WHEN clause, evaluated by the executor without a function call: a write
-- of a shop that is not captured costs nothing more. A write of a captured shop costs one INSERT of its
-- key. TG_ARGV lists the shops whose writes are checked against the fence (fence() adds a shop before it
-- sets the lease): only their writes go through admit(), the slow path that waits, refuses or passes.
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND OLD.{tenant_column} IS NOT DISTINCT FROM NEW.{tenant_column}) THEN
        -- the WHEN clause says NEW's shop is captured
        IF NEW.{tenant_column}::text <> ALL (TG_ARGV) OR handyshop_capture.admit(NEW.{tenant_column}, {table}, TG_OP) THEN
            INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
            VALUES (NEW.{tenant_column}, {table}, CASE TG_OP WHEN 'INSERT' THEN 'I' ELSE 'U' END, {new_key});
        END IF;
        IF TG_OP = 'INSERT' OR NOT ({key_changed}) THEN
            RETURN NULL;
        END IF;
        -- the key changed: the old key is gone from the shop
        IF OLD.{tenant_column}::text <> ALL (TG_ARGV) OR handyshop_capture.admit(OLD.{tenant_column}, {table}, TG_OP) THEN
            INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
            VALUES (OLD.{tenant_column}, {table}, 'D', {old_key});
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' THEN
        -- the WHEN clause says OLD's shop is captured
        IF OLD.{tenant_column}::text <> ALL (TG_ARGV) OR handyshop_capture.admit(OLD.{tenant_column}, {table}, TG_OP) THEN
            INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
            VALUES (OLD.{tenant_column}, {table}, 'D', {old_key});
        END IF;
        RETURN NULL;
    END IF;
    -- the row moved between shops; one of them at least is captured: admit() tells which (false: not captured)
    IF NEW.{tenant_column} IS NOT NULL AND handyshop_capture.admit(NEW.{tenant_column}, {table}, TG_OP) THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
        VALUES (NEW.{tenant_column}, {table}, 'U', {new_key});
    END IF;
    IF OLD.{tenant_column} IS NOT NULL AND handyshop_capture.admit(OLD.{tenant_column}, {table}, TG_OP) THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
        VALUES (OLD.{tenant_column}, {table}, 'D', {old_key});
    END IF;
    RETURN NULL;
END
$fn$;
