-- The store fixture: a DVD-rental chain in the shape of Pagila (the PostgreSQL port of MySQL's Sakila).
-- Tenants are the stores; store_id is the tenant column of customer, staff, inventory and film_request.
-- rental and payment carry no store_id: they belong to a store through inventory (and customer, staff).
-- Written for these tests; the table and column names follow Pagila's so that the shape is recognisable.

-- MySQL-compatibility types, as Pagila has them.
CREATE TYPE mpaa_rating AS ENUM ('G', 'PG', 'PG-13', 'R', 'NC-17');
CREATE DOMAIN year AS integer CONSTRAINT year_check CHECK (VALUE >= 1901 AND VALUE <= 2155);

CREATE FUNCTION last_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.last_update := CURRENT_TIMESTAMP;
    RETURN NEW;
END
$$;

-- group_concat(text): MySQL's aggregate, rebuilt from a state function.
CREATE FUNCTION _group_concat(text, text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN $2 IS NULL THEN $1 WHEN $1 IS NULL THEN $2 ELSE $1 || ', ' || $2 END
$$;
CREATE AGGREGATE group_concat(text) (SFUNC = _group_concat, STYPE = text);

-- MySQL's LAST_DAY(): the last day of the month of a timestamp.
CREATE FUNCTION last_day(timestamp) RETURNS date LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (date_trunc('month', $1) + interval '1 month' - interval '1 day')::date
$$;

-- Reference data: geography, languages, the film catalogue. No store_id, no path to a store.
CREATE TABLE country (
    country_id serial PRIMARY KEY,
    country varchar(50) NOT NULL,
    last_update timestamp NOT NULL DEFAULT now()
);
CREATE TABLE city (
    city_id serial PRIMARY KEY,
    city varchar(50) NOT NULL,
    country_id integer NOT NULL REFERENCES country ON UPDATE CASCADE ON DELETE RESTRICT,
    last_update timestamp NOT NULL DEFAULT now()
);
CREATE INDEX idx_fk_country_id ON city (country_id);
CREATE TABLE address (
    address_id serial PRIMARY KEY,
    address varchar(50) NOT NULL,
    address2 varchar(50),
    district varchar(20) NOT NULL,
    city_id integer NOT NULL REFERENCES city ON UPDATE CASCADE ON DELETE RESTRICT,
    postal_code varchar(10),
    phone varchar(20) NOT NULL,
    last_update timestamp NOT NULL DEFAULT now()
);
CREATE INDEX idx_fk_city_id ON address (city_id);
CREATE TABLE language (
    language_id serial PRIMARY KEY,
    name char(20) NOT NULL,
    last_update timestamp NOT NULL DEFAULT now()
);
CREATE TABLE film (
    film_id serial PRIMARY KEY,
    title varchar(255) NOT NULL,
    description text,
    release_year year,
    language_id integer NOT NULL REFERENCES language ON UPDATE CASCADE ON DELETE RESTRICT,
    original_language_id integer REFERENCES language ON UPDATE CASCADE ON DELETE RESTRICT,
    rental_duration smallint NOT NULL DEFAULT 3,
    rental_rate numeric(4,2) NOT NULL DEFAULT 4.99,
    length smallint,
    replacement_cost numeric(5,2) NOT NULL DEFAULT 19.99,
    rating mpaa_rating DEFAULT 'G',
    last_update timestamp NOT NULL DEFAULT now(),
    special_features text[],
    fulltext tsvector NOT NULL
);
CREATE INDEX film_fulltext_idx ON film USING gist (fulltext);
CREATE INDEX idx_title ON film (title);
CREATE INDEX idx_fk_language_id ON film (language_id);
CREATE TABLE actor (
    actor_id serial PRIMARY KEY,
    first_name varchar(45) NOT NULL,
    last_name varchar(45) NOT NULL,
    last_update timestamp NOT NULL DEFAULT now()
);
CREATE INDEX idx_actor_last_name ON actor (last_name);
CREATE TABLE film_actor (
    actor_id integer NOT NULL REFERENCES actor ON UPDATE CASCADE ON DELETE RESTRICT,
    film_id integer NOT NULL REFERENCES film ON UPDATE CASCADE ON DELETE RESTRICT,
    last_update timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (actor_id, film_id)
);
CREATE INDEX idx_fk_film_id ON film_actor (film_id);
CREATE TABLE category (
    category_id serial PRIMARY KEY,
    name varchar(25) NOT NULL,
    last_update timestamp NOT NULL DEFAULT now()
);
CREATE TABLE film_category (
    film_id integer NOT NULL REFERENCES film ON UPDATE CASCADE ON DELETE RESTRICT,
    category_id integer NOT NULL REFERENCES category ON UPDATE CASCADE ON DELETE RESTRICT,
    last_update timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (film_id, category_id)
);

-- The tenants and the tables that carry the tenant column. store and staff reference each other (a cycle):
-- the manager FK is deferrable so that a store and its manager go in within one transaction.
CREATE TABLE store (
    store_id serial PRIMARY KEY,
    manager_staff_id integer NOT NULL,
    address_id integer NOT NULL REFERENCES address ON UPDATE CASCADE ON DELETE RESTRICT,
    last_update timestamp NOT NULL DEFAULT now()
);
CREATE TABLE staff (
    staff_id serial PRIMARY KEY,
    first_name varchar(45) NOT NULL,
    last_name varchar(45) NOT NULL,
    address_id integer NOT NULL REFERENCES address ON UPDATE CASCADE ON DELETE RESTRICT,
    email varchar(50),
    store_id integer NOT NULL REFERENCES store ON UPDATE CASCADE ON DELETE RESTRICT,
    active boolean NOT NULL DEFAULT true,
    username varchar(16) NOT NULL,
    password varchar(40),
    last_update timestamp NOT NULL DEFAULT now(),
    picture bytea
);
ALTER TABLE store ADD CONSTRAINT store_manager_staff_id_fkey FOREIGN KEY (manager_staff_id)
    REFERENCES staff (staff_id) ON UPDATE CASCADE ON DELETE RESTRICT DEFERRABLE INITIALLY DEFERRED;
CREATE UNIQUE INDEX idx_unq_manager_staff_id ON store (manager_staff_id);

CREATE TABLE customer (
    customer_id serial PRIMARY KEY,
    store_id integer NOT NULL REFERENCES store ON UPDATE CASCADE ON DELETE RESTRICT,
    first_name varchar(45) NOT NULL,
    last_name varchar(45) NOT NULL,
    email varchar(50),
    address_id integer NOT NULL REFERENCES address ON UPDATE CASCADE ON DELETE RESTRICT,
    activebool boolean NOT NULL DEFAULT true,
    create_date date NOT NULL DEFAULT CURRENT_DATE,
    last_update timestamp DEFAULT now(),
    active integer
);
CREATE INDEX idx_fk_store_id ON customer (store_id);
CREATE INDEX idx_fk_address_id ON customer (address_id);
CREATE INDEX idx_last_name ON customer (last_name);
-- Head office looks up the flagship store's customers by name: an index whose predicate names one tenant.
CREATE INDEX idx_customer_flagship_last_name ON customer (last_name) WHERE store_id = 1;

CREATE TABLE inventory (
    inventory_id serial PRIMARY KEY,
    film_id integer NOT NULL REFERENCES film ON UPDATE CASCADE ON DELETE RESTRICT,
    store_id integer NOT NULL REFERENCES store ON UPDATE CASCADE ON DELETE RESTRICT,
    last_update timestamp NOT NULL DEFAULT now()
);
CREATE INDEX idx_store_id_film_id ON inventory (store_id, film_id);

-- Customers' wishes for films the store does not stock. Nobody has used it yet: its sequence is untouched.
CREATE TABLE film_request (
    request_id serial PRIMARY KEY,
    store_id integer NOT NULL REFERENCES store ON UPDATE CASCADE ON DELETE RESTRICT,
    customer_id integer REFERENCES customer ON UPDATE CASCADE ON DELETE SET NULL,
    title varchar(255) NOT NULL,
    requested_at timestamp NOT NULL DEFAULT now(),
    last_update timestamp NOT NULL DEFAULT now()
);

-- Rows that belong to a store only through foreign keys.
CREATE TABLE rental (
    rental_id serial PRIMARY KEY,
    rental_date timestamp NOT NULL,
    inventory_id integer NOT NULL REFERENCES inventory ON UPDATE CASCADE ON DELETE RESTRICT,
    customer_id integer NOT NULL REFERENCES customer ON UPDATE CASCADE ON DELETE RESTRICT,
    return_date timestamp,
    staff_id integer NOT NULL REFERENCES staff ON UPDATE CASCADE ON DELETE RESTRICT,
    last_update timestamp NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX idx_unq_rental_rental_date_inventory_id_customer_id ON rental (rental_date, inventory_id, customer_id);
CREATE INDEX idx_fk_inventory_id ON rental (inventory_id);

-- Partitioned by month, as in current Pagila. rental_id is nullable as in Sakila (ON DELETE SET NULL), and
-- here customer_id and staff_id too: a payment can arrive that no store can be told from.
CREATE TABLE payment (
    payment_id serial NOT NULL,
    customer_id integer REFERENCES customer ON UPDATE CASCADE ON DELETE RESTRICT,
    staff_id integer REFERENCES staff ON UPDATE CASCADE ON DELETE RESTRICT,
    rental_id integer REFERENCES rental ON UPDATE CASCADE ON DELETE SET NULL,
    amount numeric(5,2) NOT NULL,
    payment_date timestamp NOT NULL,
    PRIMARY KEY (payment_date, payment_id)
) PARTITION BY RANGE (payment_date);
CREATE TABLE payment_p2025_01 PARTITION OF payment FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');
CREATE TABLE payment_p2025_02 PARTITION OF payment FOR VALUES FROM ('2025-02-01') TO ('2025-03-01');
CREATE TABLE payment_p2025_03 PARTITION OF payment FOR VALUES FROM ('2025-03-01') TO ('2025-04-01');
CREATE TABLE payment_p2025_04 PARTITION OF payment FOR VALUES FROM ('2025-04-01') TO ('2025-05-01');
CREATE TABLE payment_p2025_05 PARTITION OF payment FOR VALUES FROM ('2025-05-01') TO ('2025-06-01');
CREATE INDEX idx_fk_payment_customer_id ON payment (customer_id);
CREATE INDEX idx_fk_payment_staff_id ON payment (staff_id);
CREATE INDEX idx_fk_payment_rental_id ON payment (rental_id);

-- Triggers: last_update on every table that has the column, the full-text vector of film.
CREATE TRIGGER last_updated BEFORE UPDATE ON actor FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON address FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON category FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON city FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON country FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON customer FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON film FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON film_actor FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON film_category FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON film_request FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON inventory FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON language FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON rental FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON staff FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER last_updated BEFORE UPDATE ON store FOR EACH ROW EXECUTE FUNCTION last_updated();
CREATE TRIGGER film_fulltext_trigger BEFORE INSERT OR UPDATE ON film
    FOR EACH ROW EXECUTE FUNCTION tsvector_update_trigger(fulltext, 'pg_catalog.english', title, description);

-- Row-level security on one tenant table: a store's clerks see their own store's customers. (The owner and
-- superusers bypass it; it is not FORCEd.)
ALTER TABLE customer ENABLE ROW LEVEL SECURITY;
CREATE POLICY customer_store_isolation ON customer
    USING (store_id = NULLIF(current_setting('app.current_store_id', true), '')::integer);

-- Helper functions the application calls.
CREATE FUNCTION inventory_in_stock(p_inventory_id integer) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_rentals integer;
    v_out integer;
BEGIN
    -- An item is in stock if it was never rented or every rental of it has come back.
    SELECT count(*) INTO v_rentals FROM rental WHERE inventory_id = p_inventory_id;
    IF v_rentals = 0 THEN
        RETURN true;
    END IF;
    SELECT count(rental_id) INTO v_out
      FROM inventory LEFT JOIN rental USING (inventory_id)
     WHERE inventory.inventory_id = p_inventory_id AND rental.return_date IS NULL;
    RETURN v_out = 0;
END
$$;

CREATE FUNCTION inventory_held_by_customer(p_inventory_id integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_customer_id integer;
BEGIN
    SELECT customer_id INTO v_customer_id FROM rental
     WHERE return_date IS NULL AND inventory_id = p_inventory_id
     ORDER BY rental_date DESC LIMIT 1;
    RETURN v_customer_id;
END
$$;

CREATE FUNCTION film_in_stock(p_film_id integer, p_store_id integer, OUT p_film_count integer)
RETURNS SETOF integer LANGUAGE sql AS $$
    SELECT inventory_id FROM inventory
     WHERE film_id = $1 AND store_id = $2 AND inventory_in_stock(inventory_id)
     ORDER BY inventory_id
$$;

CREATE FUNCTION film_not_in_stock(p_film_id integer, p_store_id integer, OUT p_film_count integer)
RETURNS SETOF integer LANGUAGE sql AS $$
    SELECT inventory_id FROM inventory
     WHERE film_id = $1 AND store_id = $2 AND NOT inventory_in_stock(inventory_id)
     ORDER BY inventory_id
$$;

-- The balance: rental fees, one unit per day overdue, the replacement cost when more than twice the rental
-- duration overdue, minus the payments made until the date.
CREATE FUNCTION get_customer_balance(p_customer_id integer, p_effective_date timestamp) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
    v_rentfees numeric(7,2);
    v_overfees integer;
    v_replacement numeric(7,2);
    v_payments numeric(7,2);
BEGIN
    SELECT coalesce(sum(f.rental_rate), 0) INTO v_rentfees
      FROM film f JOIN inventory i USING (film_id) JOIN rental r USING (inventory_id)
     WHERE r.rental_date <= p_effective_date AND r.customer_id = p_customer_id;

    SELECT coalesce(sum(greatest(0, extract(day FROM (r.return_date - r.rental_date)) - f.rental_duration)), 0)
      INTO v_overfees
      FROM film f JOIN inventory i USING (film_id) JOIN rental r USING (inventory_id)
     WHERE r.rental_date <= p_effective_date AND r.customer_id = p_customer_id;

    SELECT coalesce(sum(f.replacement_cost), 0) INTO v_replacement
      FROM film f JOIN inventory i USING (film_id) JOIN rental r USING (inventory_id)
     WHERE r.rental_date <= p_effective_date AND r.customer_id = p_customer_id
       AND coalesce(r.return_date, p_effective_date) - r.rental_date > f.rental_duration * 2 * interval '1 day';

    SELECT coalesce(sum(p.amount), 0) INTO v_payments
      FROM payment p
     WHERE p.payment_date <= p_effective_date AND p.customer_id = p_customer_id;

    RETURN v_rentfees + v_overfees + v_replacement - v_payments;
END
$$;

-- Customers with more than min_monthly_purchases payments worth more than min_dollar_amount_purchased in the
-- month of p_month. SECURITY DEFINER, and its result type is the row type of a tenant table.
CREATE FUNCTION rewards_report(min_monthly_purchases integer, min_dollar_amount_purchased numeric,
                               p_month timestamp)
RETURNS SETOF customer LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_catalog AS $$
BEGIN
    IF min_monthly_purchases = 0 THEN
        RAISE EXCEPTION 'Minimum monthly purchases parameter must be > 0';
    END IF;
    RETURN QUERY
        SELECT c.* FROM customer c
         WHERE c.customer_id IN (
               SELECT p.customer_id FROM payment p
                WHERE p.payment_date >= date_trunc('month', p_month)
                  AND p.payment_date < last_day(p_month) + 1
                GROUP BY p.customer_id
               HAVING sum(p.amount) > min_dollar_amount_purchased AND count(*) > min_monthly_purchases)
         ORDER BY c.customer_id;
END
$$;

-- Views.
CREATE VIEW customer_list AS
SELECT cu.customer_id AS id, cu.first_name || ' ' || cu.last_name AS name, a.address,
       a.postal_code AS "zip code", a.phone, city.city, country.country,
       CASE WHEN cu.activebool THEN 'active' ELSE '' END AS notes, cu.store_id AS sid
  FROM customer cu
  JOIN address a ON cu.address_id = a.address_id
  JOIN city ON a.city_id = city.city_id
  JOIN country ON city.country_id = country.country_id;

CREATE VIEW staff_list AS
SELECT s.staff_id AS id, s.first_name || ' ' || s.last_name AS name, a.address, a.postal_code AS "zip code",
       a.phone, city.city, country.country, s.store_id AS sid
  FROM staff s
  JOIN address a ON s.address_id = a.address_id
  JOIN city ON a.city_id = city.city_id
  JOIN country ON city.country_id = country.country_id;

CREATE VIEW film_list AS
SELECT film.film_id AS fid, film.title, film.description, category.name AS category, film.rental_rate AS price,
       film.length, film.rating, group_concat(actor.first_name || ' ' || actor.last_name) AS actors
  FROM category
  LEFT JOIN film_category ON category.category_id = film_category.category_id
  LEFT JOIN film ON film_category.film_id = film.film_id
  JOIN film_actor ON film.film_id = film_actor.film_id
  JOIN actor ON film_actor.actor_id = actor.actor_id
 GROUP BY film.film_id, film.title, film.description, category.name, film.rental_rate, film.length, film.rating;

CREATE VIEW actor_info AS
SELECT a.actor_id, a.first_name, a.last_name,
       group_concat(DISTINCT c.name::text) AS categories
  FROM actor a
  LEFT JOIN film_actor fa ON a.actor_id = fa.actor_id
  LEFT JOIN film_category fc ON fa.film_id = fc.film_id
  LEFT JOIN category c ON fc.category_id = c.category_id
 GROUP BY a.actor_id, a.first_name, a.last_name;

CREATE VIEW sales_by_film_category AS
SELECT c.name AS category, sum(p.amount) AS total_sales
  FROM payment p
  JOIN rental r ON p.rental_id = r.rental_id
  JOIN inventory i ON r.inventory_id = i.inventory_id
  JOIN film f ON i.film_id = f.film_id
  JOIN film_category fc ON f.film_id = fc.film_id
  JOIN category c ON fc.category_id = c.category_id
 GROUP BY c.name
 ORDER BY sum(p.amount) DESC;

-- Reads the tenants table itself (address and manager of each store).
CREATE VIEW sales_by_store AS
SELECT c.city || ',' || cy.country AS store, m.first_name || ' ' || m.last_name AS manager,
       sum(p.amount) AS total_sales
  FROM payment p
  JOIN rental r ON p.rental_id = r.rental_id
  JOIN inventory i ON r.inventory_id = i.inventory_id
  JOIN store s ON i.store_id = s.store_id
  JOIN address a ON s.address_id = a.address_id
  JOIN city c ON a.city_id = c.city_id
  JOIN country cy ON c.country_id = cy.country_id
  JOIN staff m ON s.manager_staff_id = m.staff_id
 GROUP BY cy.country, c.city, s.store_id, m.first_name, m.last_name
 ORDER BY cy.country, c.city;

-- A view that filters on the tenant column: what the flagship store has on its shelves.
CREATE VIEW flagship_inventory AS
SELECT i.inventory_id, f.title, f.rating, inventory_in_stock(i.inventory_id) AS in_stock
  FROM inventory i JOIN film f USING (film_id)
 WHERE i.store_id = 1;

CREATE MATERIALIZED VIEW rental_by_category AS
SELECT c.name AS category, sum(p.amount) AS total_sales
  FROM payment p
  JOIN rental r ON p.rental_id = r.rental_id
  JOIN inventory i ON r.inventory_id = i.inventory_id
  JOIN film f ON i.film_id = f.film_id
  JOIN film_category fc ON f.film_id = fc.film_id
  JOIN category c ON fc.category_id = c.category_id
 GROUP BY c.name
WITH NO DATA;
CREATE UNIQUE INDEX rental_category ON rental_by_category (category);

-- DDL audit: an event trigger (database-wide, superuser-made) logging every DDL command into ddl_log.
CREATE TABLE ddl_log (
    log_id serial PRIMARY KEY,
    logged_at timestamp NOT NULL DEFAULT now(),
    command_tag text NOT NULL,
    object_type text,
    object_identity text,
    username text NOT NULL DEFAULT current_user
);
CREATE FUNCTION log_ddl_command() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_catalog AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
        INSERT INTO ddl_log (command_tag, object_type, object_identity)
        VALUES (r.command_tag, r.object_type, r.object_identity);
    END LOOP;
END
$$;
CREATE EVENT TRIGGER audit_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl_command();

-- Documentation, added after the audit began (so ddl_log has its first rows).
COMMENT ON TABLE store IS 'The tenants: one row per rental store (Filiale).';
COMMENT ON COLUMN store.manager_staff_id IS 'The store''s manager; staff.store_id points back (a cycle).';
COMMENT ON COLUMN customer.store_id IS 'Home store of the customer — the tenant column.';
COMMENT ON TABLE payment IS 'Partitioned by payment_date, one partition per month.';
COMMENT ON COLUMN film.fulltext IS 'Maintained by film_fulltext_trigger from title and description.';
COMMENT ON TABLE film_request IS 'Wünsche: films customers asked the store to stock.';
