-- The capture trigger functions of a reference table (copied whole into every tenant) in the shared
-- database: a change reaches every captured shop whose tenant is not live yet. Never held back by a fence:
-- the shared database stays the owner of these rows, and a shop's cutover does not stop other writers.
CREATE OR REPLACE FUNCTION {insert_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
    SELECT s.shop_id, {table}, 'I', {new_key} FROM handyshop_capture.shops s
     WHERE s.fenced_until IS DISTINCT FROM 'infinity';
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION {delete_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
    SELECT s.shop_id, {table}, 'D', {old_key} FROM handyshop_capture.shops s
     WHERE s.fenced_until IS DISTINCT FROM 'infinity';
    RETURN NULL;
END
$fn$;

CREATE OR REPLACE FUNCTION {update_function}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
    SELECT s.shop_id, {table}, 'U', {new_key} FROM handyshop_capture.shops s
     WHERE s.fenced_until IS DISTINCT FROM 'infinity';
    IF {key_changed} THEN
        INSERT INTO handyshop_capture.changes (shop_id, table_name, op, key)
        SELECT s.shop_id, {table}, 'D', {old_key} FROM handyshop_capture.shops s
         WHERE s.fenced_until IS DISTINCT FROM 'infinity';
    END IF;
    RETURN NULL;
END
$fn$;
