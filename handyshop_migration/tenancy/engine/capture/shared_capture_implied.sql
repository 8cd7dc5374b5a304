-- The capture trigger functions of an implied table (no tenant column: a row belongs to the tenant its
-- foreign-key path leads to) in the shared database. The triggers carry no WHEN clause (there is no column
-- to name the shops in), so every write looks its owner up along the path ({owner_new} / {owner_old}: one
-- indexed lookup per hop) and admit() says whether that shop is captured (false: not captured) and holds
-- back what is fenced. A row re-parented to another shop's parent enters NEW's shop and leaves OLD's.
CREATE OR REPLACE FUNCTION {insert_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    s bigint := {owner_new};
BEGIN
    IF s IS NOT NULL AND handyshop_capture.admit(s, {table}, TG_OP) THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) VALUES (s, {table}, 'I', {new_key});
    END IF;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION {delete_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    s bigint := {owner_old};
BEGIN
    IF s IS NOT NULL AND handyshop_capture.admit(s, {table}, TG_OP) THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) VALUES (s, {table}, 'D', {old_key});
    END IF;
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION {update_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    n bigint := {owner_new};
    o bigint := {owner_old};
BEGIN
    IF n IS NOT NULL AND handyshop_capture.admit(n, {table}, TG_OP) THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) VALUES (n, {table}, 'U', {new_key});
    END IF;
    IF o IS NOT NULL AND (o IS DISTINCT FROM n OR {key_changed}) AND handyshop_capture.admit(o, {table}, TG_OP) THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key) VALUES (o, {table}, 'D', {old_key});
    END IF;
    RETURN NULL;
END
$fn$;
