-- Deterministic data for the store fixture. The number of stores is the setting fixture.tenants (>= 2).
-- Ids are explicit (as in Pagila's dump) and every used sequence is set past them at the end.
-- Per store: 2 staff, 20 customers, 30 inventory items, 60 rentals (3 still out), 57 payments.
-- Planted: rental 9001 (inventory and staff of store 1, customer of store 2) and payment 9001 (no rental,
-- no customer, no staff).

INSERT INTO country (country_id, country, last_update)
SELECT i, c, timestamp '2025-01-01'
  FROM unnest(ARRAY['Deutschland', 'Österreich', 'Schweiz', 'France', 'España', 'Brasil', 'Japan',
                    'United States']) WITH ORDINALITY AS t(c, i);

INSERT INTO city (city_id, city, country_id, last_update)
SELECT i, c, (i + 1) / 2, timestamp '2025-01-01'
  FROM unnest(ARRAY['München', 'Köln', 'Wien', 'Graz', 'Zürich', 'Genève', 'Lyon', 'Besançon', 'Málaga',
                    'A Coruña', 'São Paulo', 'Florianópolis', 'Tōkyō', 'Ōsaka', 'Lethbridge', 'Woodridge'])
       WITH ORDINALITY AS t(c, i);

-- Addresses: 1..n the stores', n+1..3n the staff's, 3n+1..23n the customers'.
INSERT INTO address (address_id, address, address2, district, city_id, postal_code, phone, last_update)
SELECT i,
       (ARRAY['Hauptstraße', 'Rue de la Paix', 'Rua das Flores', 'Calle Mayor', 'Main Street'])[1 + i % 5]
           || ' ' || i,
       CASE WHEN i % 4 = 0 THEN 'Hinterhaus' END,
       (ARRAY['Bayern', 'Wien', 'Zürich', 'Rhône', 'Andalucía', 'São Paulo', 'Kantō', 'Alberta'])[1 + i % 8],
       1 + i % 16, lpad((10000 + i * 37)::text, 5, '0'), '+49 89 ' || (100000 + i), timestamp '2025-01-01'
  FROM generate_series(1, 23 * current_setting('fixture.tenants')::integer) AS i;

INSERT INTO language (language_id, name, last_update)
SELECT i, l, timestamp '2025-01-01'
  FROM unnest(ARRAY['English', 'Italian', 'Japanese', 'Mandarin', 'French', 'German']) WITH ORDINALITY AS t(l, i);

INSERT INTO category (category_id, name, last_update)
SELECT i, c, timestamp '2025-01-01'
  FROM unnest(ARRAY['Action', 'Animation', 'Children', 'Classics', 'Comedy', 'Documentary', 'Drama', 'Family',
                    'Foreign', 'Games', 'Horror', 'Music', 'New', 'Sci-Fi', 'Sports', 'Travel'])
       WITH ORDINALITY AS t(c, i);

INSERT INTO actor (actor_id, first_name, last_name, last_update)
SELECT i,
       (ARRAY['PENELOPE', 'NICK', 'ED', 'JENNIFER', 'JOHNNY', 'BETTE', 'GRACE', 'MATTHEW', 'JOE', 'CHRISTIAN'])
           [1 + (i - 1) % 10],
       (ARRAY['GUINESS', 'WAHLBERG', 'CHASE', 'DAVIS', 'LOLLOBRIGIDA', 'NICHOLSON', 'MOSTEL', 'JOHANSSON',
              'SWANK', 'GABLE', 'BÖHM', 'NIÑO'])[1 + (i * 7) % 12],
       timestamp '2025-01-01'
  FROM generate_series(1, 20) AS i;

-- 40 films; the fulltext column is filled by film_fulltext_trigger.
INSERT INTO film (film_id, title, description, release_year, language_id, original_language_id, rental_duration,
                  rental_rate, length, replacement_cost, rating, last_update, special_features)
SELECT i,
       (ARRAY['ACADEMY', 'ACE', 'ADAPTATION', 'AFFAIR', 'AFRICAN', 'AGENT', 'AIRPLANE', 'ALABAMA'])[1 + (i - 1) / 5]
           || ' ' || (ARRAY['DINOSAUR', 'GOLDFINGER', 'HOLES', 'PREJUDICE', 'EGG'])[1 + (i - 1) % 5],
       'A ' || (ARRAY['Epic', 'Astounding', 'Fanciful', 'Boring', 'Touching'])[1 + i % 5] || ' '
           || (ARRAY['Drama', 'Documentary', 'Saga', 'Reflection', 'Story'])[1 + (i * 3) % 5] || ' of a '
           || (ARRAY['Feminist', 'Dentist', 'Mad Scientist', 'Waitress', 'Astronaut'])[1 + (i * 2) % 5]
           || ' who must ' || (ARRAY['Battle', 'Chase', 'Find', 'Outrace', 'Meet'])[1 + (i * 7) % 5]
           || ' a ' || (ARRAY['Teacher', 'Lumberjack', 'Shark', 'Crocodile', 'Moose'])[1 + (i * 11) % 5]
           || ' in ' || (ARRAY['The Canadian Rockies', 'A Jet Boat', 'Ancient China', 'The Gulf of Mexico',
                               'A Manhattan Penthouse'])[1 + (i * 13) % 5],
       2000 + i % 12,
       1,
       CASE WHEN i % 7 = 0 THEN 6 END,
       3 + i % 5,
       (ARRAY[0.99, 2.99, 4.99])[1 + i % 3],
       60 + (i * 17) % 120,
       9.99 + i % 20,
       (ARRAY['G', 'PG', 'PG-13', 'R', 'NC-17']::mpaa_rating[])[1 + i % 5],
       timestamp '2025-01-01',
       CASE i % 4 WHEN 0 THEN ARRAY['Trailers'] WHEN 1 THEN ARRAY['Trailers', 'Deleted Scenes']
                  WHEN 2 THEN ARRAY['Commentaries', 'Behind the Scenes'] ELSE ARRAY['Deleted Scenes'] END
  FROM generate_series(1, 40) AS i;

INSERT INTO film_actor (actor_id, film_id, last_update)
SELECT 1 + (f * 3 + j * 7) % 20, f, timestamp '2025-01-01'
  FROM generate_series(1, 40) AS f, generate_series(0, 2) AS j;

INSERT INTO film_category (film_id, category_id, last_update)
SELECT f, 1 + f % 16, timestamp '2025-01-01' FROM generate_series(1, 40) AS f;

-- Stores and their staff in one transaction: store.manager_staff_id is checked at commit (deferred).
INSERT INTO store (store_id, manager_staff_id, address_id, last_update)
SELECT s, 2 * s - 1, s, timestamp '2025-01-01' FROM generate_series(1, current_setting('fixture.tenants')::integer) AS s;

INSERT INTO staff (staff_id, first_name, last_name, address_id, email, store_id, active, username, password,
                   last_update, picture)
SELECT 2 * (s - 1) + k,
       (ARRAY['Mike', 'Jon', 'Renée', 'Jörg', 'Ana', 'Kenji'])[1 + (2 * s + k) % 6],
       (ARRAY['Hillyer', 'Stephens', 'Weiß', 'Gonçalves', 'Tanaka'])[1 + (s + k) % 5],
       current_setting('fixture.tenants')::integer + 2 * (s - 1) + k,
       'staff' || (2 * (s - 1) + k) || '@sakilastaff.com',
       s, true, 'staff' || (2 * (s - 1) + k),
       md5('password' || (2 * (s - 1) + k))::varchar(40),
       timestamp '2025-01-01',
       CASE WHEN k = 1 THEN decode('89504e470d0a1a0a', 'hex') END
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS s, generate_series(1, 2) AS k;

INSERT INTO customer (customer_id, store_id, first_name, last_name, email, address_id, activebool, create_date,
                      last_update, active)
SELECT 20 * (s - 1) + i, s,
       (ARRAY['Jürgen', 'Zoë', 'José', 'Åsa', 'Mary', 'Patricia', 'Linda', 'Élodie', 'Søren', 'Barbara',
              'Œdipe', 'Ingrid'])[1 + (s * 5 + i) % 12],
       (ARRAY['Müller', 'Núñez', 'Smith', 'Johnson', 'Østergaard', 'Brown', 'Çelik', 'Dubois', 'Weiß'])
           [1 + (s * 3 + i * 2) % 9],
       'customer' || (20 * (s - 1) + i) || '@sakilacustomer.org',
       3 * current_setting('fixture.tenants')::integer + 20 * (s - 1) + i,
       i % 10 <> 0, date '2024-02-14', timestamp '2025-01-01', CASE WHEN i % 10 <> 0 THEN 1 ELSE 0 END
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS s, generate_series(1, 20) AS i;

INSERT INTO inventory (inventory_id, film_id, store_id, last_update)
SELECT 30 * (s - 1) + i, 1 + (s * 7 + i) % 40, s, timestamp '2025-01-01'
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS s, generate_series(1, 30) AS i;

-- Rentals: inventory, customer and staff always of the same store. Rentals 10, 20, 30 of each store are out.
INSERT INTO rental (rental_id, rental_date, inventory_id, customer_id, return_date, staff_id, last_update)
SELECT 60 * (s - 1) + i,
       timestamp '2025-01-01 10:00' + i * interval '1 day' + s * interval '1 hour',
       30 * (s - 1) + 1 + (i - 1) % 30,
       20 * (s - 1) + 1 + (i - 1) % 20,
       CASE WHEN i IN (10, 20, 30) THEN NULL
            ELSE timestamp '2025-01-01 10:00' + (i + 1 + i % 7) * interval '1 day' + s * interval '1 hour' END,
       2 * (s - 1) + 1 + i % 2,
       timestamp '2025-01-01'
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS s, generate_series(1, 60) AS i;

-- One payment per returned rental, by the rental's customer, to the rental's staff, on its return date.
INSERT INTO payment (payment_id, customer_id, staff_id, rental_id, amount, payment_date)
SELECT r.rental_id, r.customer_id, r.staff_id, r.rental_id, f.rental_rate, r.return_date
  FROM rental r JOIN inventory i USING (inventory_id) JOIN film f USING (film_id)
 WHERE r.return_date IS NOT NULL;

-- Planted: a rental whose inventory (and staff) belong to store 1 but whose customer belongs to store 2.
INSERT INTO rental (rental_id, rental_date, inventory_id, customer_id, return_date, staff_id, last_update)
VALUES (9001, timestamp '2025-02-14 12:00', 1, 21, timestamp '2025-02-15 12:00', 1, timestamp '2025-01-01');
-- Planted: a payment nobody can place: no rental, no customer, no staff (a cash-box surplus booked as it was).
INSERT INTO payment (payment_id, customer_id, staff_id, rental_id, amount, payment_date)
VALUES (9001, NULL, NULL, NULL, 4.99, timestamp '2025-03-03 10:00');

SELECT setval('country_country_id_seq', (SELECT max(country_id) FROM country));
SELECT setval('city_city_id_seq', (SELECT max(city_id) FROM city));
SELECT setval('address_address_id_seq', (SELECT max(address_id) FROM address));
SELECT setval('language_language_id_seq', (SELECT max(language_id) FROM language));
SELECT setval('category_category_id_seq', (SELECT max(category_id) FROM category));
SELECT setval('actor_actor_id_seq', (SELECT max(actor_id) FROM actor));
SELECT setval('film_film_id_seq', (SELECT max(film_id) FROM film));
SELECT setval('store_store_id_seq', (SELECT max(store_id) FROM store));
SELECT setval('staff_staff_id_seq', (SELECT max(staff_id) FROM staff));
SELECT setval('customer_customer_id_seq', (SELECT max(customer_id) FROM customer));
SELECT setval('inventory_inventory_id_seq', (SELECT max(inventory_id) FROM inventory));
SELECT setval('rental_rental_id_seq', (SELECT max(rental_id) FROM rental));
SELECT setval('payment_payment_id_seq', (SELECT max(payment_id) FROM payment));

REFRESH MATERIALIZED VIEW rental_by_category;
