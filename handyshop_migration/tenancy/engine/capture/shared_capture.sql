-- The capture trigger function of one tenant table in the shared database (generated per table, so it
-- reads the tenant and key columns directly: no row is turned into jsonb). The triggers calling it carry
-- the captured shops in their WHEN clause, evaluated by the executor without a function call: a write
-- of a shop that is not captured costs nothing more. A write of a captured shop costs one INSERT that
-- also checks the fence; admit() is the slow path (fenced, or a row moving between shops).
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
        SELECT NEW.{tenant_column}, {table}, CASE TG_OP WHEN 'INSERT' THEN 'I' ELSE 'U' END, {new_key}
          FROM handyshop_capture.shops s
         WHERE s.shop_id = NEW.{tenant_column} AND s.fenced_until IS NULL;
        IF NOT FOUND AND handyshop_capture.admit(NEW.{tenant_column}, {table}, TG_OP) THEN
            INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
            VALUES (NEW.{tenant_column}, {table}, CASE TG_OP WHEN 'INSERT' THEN 'I' ELSE 'U' END, {new_key});
        END IF;
    END IF;
    IF TG_OP = 'INSERT' THEN
        RETURN NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        -- the row left its shop, or its key changed: the old key is gone from the old shop
        IF OLD.{tenant_column} IS NOT DISTINCT FROM NEW.{tenant_column} AND NOT ({key_changed}) THEN
            RETURN NULL;
        END IF;
    END IF;
    IF OLD.{tenant_column} IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
    SELECT OLD.{tenant_column}, {table}, 'D', {old_key}
      FROM handyshop_capture.shops s
     WHERE s.shop_id = OLD.{tenant_column} AND s.fenced_until IS NULL;
    IF NOT FOUND AND handyshop_capture.admit(OLD.{tenant_column}, {table}, TG_OP) THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
        VALUES (OLD.{tenant_column}, {table}, 'D', {old_key});
    END IF;
    RETURN NULL;
END
$fn$;
