-- The capture trigger function of one tenant table in a tenant database (generated per table: reads the
-- key columns directly, no row turned into jsonb). No shop column, no fence: the write guard refuses
-- writes before they get here while the tenant is not live.
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO handyshop_migration.changes (table_name, op, key) VALUES ({table}, 'D', {old_key});
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF {key_changed} THEN
            INSERT INTO handyshop_migration.changes (table_name, op, key) VALUES ({table}, 'D', {old_key});
        END IF;
    END IF;
    INSERT INTO handyshop_migration.changes (table_name, op, key)
    VALUES ({table}, CASE TG_OP WHEN 'INSERT' THEN 'I' ELSE 'U' END, {new_key});
    RETURN NULL;
END
$fn$;
