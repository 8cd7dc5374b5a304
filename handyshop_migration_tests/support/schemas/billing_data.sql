-- Deterministic data for the billing fixture. The number of tenants is the setting fixture.tenants.
-- The char(36) ids are md5-derived UUIDs of a readable key, so they are the same on every load.
-- Global rows (tenant_record_id = 0) go in first: tenant_kvs 1-2, tag_definitions 1-6.
-- Per tenant: 3 tenant_kvs, 10 accounts, 10 bundles, 15 subscriptions, 30 invoices, 60 invoice items,
-- 12 notes, 30 billing-event blobs, 20 payments, 1 tag definition, 4 tags. custom_fields stays empty.

INSERT INTO tenants (record_id, id, external_key, api_key, api_secret, api_salt, created_date, created_by)
SELECT t, md5('tenant-' || t)::uuid::text,
       CASE WHEN t <= 4 THEN (ARRAY['acme-gmbh', 'globex', 'initech', 'müller-abo'])[t] ELSE 'tenant-' || t END,
       'api-key-' || t, md5('secret-' || t), md5('salt-' || t),
       timestamp '2024-10-01' + t * interval '1 day', 'admin'
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS t;

INSERT INTO tenant_kvs (record_id, id, tenant_record_id, tenant_key, tenant_value, created_date, created_by) VALUES
    (1, md5('kv-global-catalog')::uuid::text, 0, 'CATALOG',
     '<catalog><catalogName>Standard</catalogName><currencies><currency>EUR</currency></currencies></catalog>',
     timestamp '2024-10-01', 'admin'),
    (2, md5('kv-global-config')::uuid::text, 0, 'PER_TENANT_CONFIG',
     '{"org.killbill.invoice.dryRunNotificationSchedule": "0d", "org.killbill.payment.retry.days": "8,8,8"}',
     timestamp '2024-10-01', 'admin');
INSERT INTO tenant_kvs (record_id, id, tenant_record_id, tenant_key, tenant_value, created_date, created_by)
SELECT 2 + 3 * (t - 1) + k, md5('kv-' || t || '-' || k)::uuid::text, t,
       (ARRAY['PER_TENANT_CONFIG', 'INVOICE_TRANSLATION_de_DE', 'PUSH_NOTIFICATION_CB'])[k],
       CASE k WHEN 1 THEN '{"org.killbill.invoice.maxDailyNumberOfItemsSafetyBound": "' || (10 * t) || '"}'
              WHEN 2 THEN E'invoiceTitle=Rechnung\nitemDescription=Beschreibung\ninvoiceAmountPaid=Bezahlter Betrag'
                          || E'\ninvoiceBalance=Offener Betrag – fällig'
              ELSE 'https://hooks.example/tenant/' || t END,
       timestamp '2024-10-02', 'admin'
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS t, generate_series(1, 3) AS k;

INSERT INTO tag_definitions (record_id, id, name, applicable_object_types, description, created_by, created_date,
                             updated_by, updated_date, tenant_record_id)
SELECT i, md5('tagdef-global-' || i)::uuid::text, n, o, d, 'admin', timestamp '2024-10-01', 'admin',
       timestamp '2024-10-01', 0
  FROM (VALUES (1, 'AUTO_PAY_OFF', 'ACCOUNT', 'Suspends payments until removed.'),
               (2, 'AUTO_INVOICING_OFF', 'ACCOUNT', 'Suspends invoicing until removed.'),
               (3, 'OVERDUE_ENFORCEMENT_OFF', 'ACCOUNT', 'Suspends overdue enforcement behaviour until removed.'),
               (4, 'WRITTEN_OFF', 'INVOICE', 'Indicates that an invoice is written off.'),
               (5, 'MANUAL_PAY', 'ACCOUNT', 'Indicates that Killbill doesn''t process payments for that account.'),
               (6, 'TEST', 'ACCOUNT', 'Indicates that this is a test account.')) AS g(i, n, o, d);
INSERT INTO tag_definitions (record_id, id, name, applicable_object_types, description, created_by, created_date,
                             updated_by, updated_date, tenant_record_id)
SELECT 6 + t, md5('tagdef-' || t)::uuid::text, 'Großkunde', 'ACCOUNT', 'Key account (Großkunde) of tenant ' || t,
       'admin', timestamp '2024-10-05', 'admin', timestamp '2024-10-05', t
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS t;

INSERT INTO accounts (record_id, id, external_key, email, name, first_name_length, currency, billing_cycle_day_local,
                      payment_method_id, reference_time, time_zone, locale, address1, city, country, postal_code,
                      phone, notes, created_date, created_by, updated_date, updated_by, tenant_record_id)
SELECT 10 * (t - 1) + i, md5('account-' || t || '-' || i)::uuid::text, 'acct-' || t || '-' || i,
       'kunde' || i || '@tenant' || t || '.example',
       (ARRAY['Jörg Straßer', 'Chloé Lefèvre', 'Zoë Ødegaard', 'Ana Conceição', 'Łukasz Wójcik', 'Mary Smith',
              'Søren Kierkegaard', 'Ines Müller', 'José Núñez', 'Hana Tanaka'])[i],
       length(split_part((ARRAY['Jörg Straßer', 'Chloé Lefèvre', 'Zoë Ødegaard', 'Ana Conceição', 'Łukasz Wójcik',
                                'Mary Smith', 'Søren Kierkegaard', 'Ines Müller', 'José Núñez', 'Hana Tanaka'])[i],
                         ' ', 1)),
       (ARRAY['EUR', 'EUR', 'CHF', 'USD'])[1 + i % 4], 1 + (i * 3) % 28,
       md5('pm-' || t || '-' || i)::uuid::text,
       timestamp '2024-12-01' + i * interval '1 day', 'Europe/Berlin', 'de_DE',
       'Königstraße ' || i, (ARRAY['Köln', 'Genève', 'München', 'Zürich', 'Łódź'])[1 + i % 5],
       (ARRAY['DE', 'CH', 'DE', 'CH', 'PL'])[1 + i % 5], lpad((50667 + i)::text, 5, '0'), '+49 221 ' || (1000 + i),
       CASE WHEN i = 1 THEN 'Rechnung bitte per Post – nicht per E-Mail.' END,
       timestamp '2024-12-01' + i * interval '1 day', 'admin', timestamp '2024-12-01' + i * interval '1 day',
       'admin', t
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS t, generate_series(1, 10) AS i;

INSERT INTO bundles (record_id, id, external_key, account_id, last_sys_update_date, original_created_date,
                     created_by, created_date, updated_by, updated_date, account_record_id, tenant_record_id)
SELECT a.record_id, md5('bundle-' || a.record_id)::uuid::text, 'bundle-' || a.external_key, a.id,
       a.created_date, a.created_date, 'admin', a.created_date, 'admin', a.created_date, a.record_id,
       a.tenant_record_id
  FROM accounts a;

-- A BASE subscription per bundle, an ADD_ON on every other one.
INSERT INTO subscriptions (record_id, id, bundle_id, category, start_date, bundle_start_date, charged_through_date,
                           created_by, created_date, updated_by, updated_date, account_record_id, tenant_record_id)
SELECT row_number() OVER (ORDER BY b.record_id, s.category), md5('sub-' || b.record_id || '-' || s.category)::uuid::text,
       b.id, s.category, b.created_date, b.created_date, date '2025-04-01', 'admin', b.created_date, 'admin',
       b.created_date, b.account_record_id, b.tenant_record_id
  FROM bundles b
  JOIN (VALUES ('ADD_ON'), ('BASE')) AS s(category) ON s.category = 'BASE' OR b.record_id % 2 = 0;

-- Three monthly invoices per account, two items each (a recurring item, a usage or fixed item).
INSERT INTO invoices (record_id, id, account_id, invoice_date, target_date, currency, status, migrated,
                      created_by, created_date, account_record_id, tenant_record_id)
SELECT 3 * (a.record_id - 1) + m, md5('invoice-' || a.record_id || '-' || m)::uuid::text, a.id,
       (date '2025-01-01' + (m - 1) * interval '1 month')::date,
       (date '2025-01-01' + (m - 1) * interval '1 month')::date, a.currency,
       CASE WHEN m = 3 AND a.record_id % 5 = 0 THEN 'DRAFT' ELSE 'COMMITTED' END, false, 'admin',
       timestamp '2025-01-01 03:00' + (m - 1) * interval '1 month', a.record_id, a.tenant_record_id
  FROM accounts a, generate_series(1, 3) AS m;

INSERT INTO invoice_items (record_id, id, type, invoice_id, account_id, bundle_id, subscription_id, description,
                           product_name, plan_name, phase_name, start_date, end_date, amount, rate, currency,
                           quantity, item_details, created_by, created_date, account_record_id, tenant_record_id)
SELECT 2 * (i.record_id - 1) + k, md5('item-' || i.record_id || '-' || k)::uuid::text,
       CASE k WHEN 1 THEN 'RECURRING' ELSE (ARRAY['USAGE', 'FIXED'])[1 + i.record_id % 2] END,
       i.id, i.account_id, b.id, s.id,
       CASE k WHEN 1 THEN 'Grundgebühr Standard (monatlich)' ELSE 'Zusatzleistung' END,
       'Standard', 'standard-monthly', 'standard-monthly-evergreen', i.invoice_date,
       (i.invoice_date + interval '1 month')::date,
       CASE k WHEN 1 THEN 29.95 ELSE 4.5 * (1 + i.record_id % 3) END,
       CASE k WHEN 1 THEN 29.95 ELSE 4.5 END, i.currency,
       CASE k WHEN 1 THEN 1 ELSE 1 + i.record_id % 3 END,
       CASE k WHEN 2 THEN '{"tierDetails": [{"tier": 1, "tierUnit": "API-Aufrufe", "quantity": '
                          || (1 + i.record_id % 3) || '}]}' END,
       'admin', i.created_date, i.account_record_id, i.tenant_record_id
  FROM invoices i
  JOIN bundles b ON b.account_id = i.account_id
  JOIN subscriptions s ON s.bundle_id = b.id AND s.category = 'BASE',
       generate_series(1, 2) AS k;

-- Every fifth item has a note.
INSERT INTO invoice_item_notes (record_id, id, invoice_item_id, body, created_by, created_date)
SELECT row_number() OVER (ORDER BY ii.record_id), md5('note-' || ii.record_id)::uuid::text, ii.id,
       'Kulanzhinweis zu Position ' || ii.record_id || ': Betrag geprüft ✓', 'support',
       ii.created_date + interval '2 days'
  FROM invoice_items ii WHERE ii.record_id % 5 = 0;

INSERT INTO invoice_billing_events (record_id, id, invoice_id, billing_events, created_by, created_date,
                                    account_record_id, tenant_record_id)
SELECT i.record_id, md5('events-' || i.record_id)::uuid::text, i.id,
       convert_to('{"events": [{"type": "CREATE", "plan": "standard-monthly", "invoice": "' || i.id || '"}]}',
                  'UTF8'),
       'admin', i.created_date, i.account_record_id, i.tenant_record_id
  FROM invoices i;

-- The first two invoices of each account are paid.
INSERT INTO payments (record_id, id, account_id, payment_method_id, external_key, state_name,
                      last_success_state_name, created_by, created_date, updated_by, updated_date,
                      account_record_id, tenant_record_id)
SELECT row_number() OVER (ORDER BY i.record_id), md5('payment-' || i.record_id)::uuid::text, i.account_id,
       a.payment_method_id, 'pay-' || i.id, 'PURCHASE_SUCCESS', 'PURCHASE_SUCCESS', 'admin',
       i.created_date + interval '1 hour', 'admin', i.created_date + interval '1 hour', i.account_record_id,
       i.tenant_record_id
  FROM invoices i JOIN accounts a ON a.id = i.account_id
 WHERE i.invoice_date < date '2025-03-01';

-- Tags: AUTO_PAY_OFF (a global definition) on accounts 4 and 8 of each tenant, TEST on account 10,
-- the tenant's own Großkunde on account 1.
INSERT INTO tags (record_id, id, tag_definition_id, object_id, object_type, created_by, created_date, updated_by,
                  updated_date, account_record_id, tenant_record_id)
SELECT row_number() OVER (ORDER BY a.record_id, td.record_id), md5('tag-' || a.record_id || '-' || td.record_id)::uuid::text,
       td.id, a.id, 'ACCOUNT', 'admin', timestamp '2025-01-15', 'admin', timestamp '2025-01-15', a.record_id,
       a.tenant_record_id
  FROM accounts a
  JOIN tag_definitions td
    ON (td.name = 'AUTO_PAY_OFF' AND (a.record_id - 1) % 10 + 1 IN (4, 8))
    OR (td.name = 'TEST' AND (a.record_id - 1) % 10 + 1 = 10)
    OR (td.tenant_record_id = a.tenant_record_id AND (a.record_id - 1) % 10 + 1 = 1);

INSERT INTO users (record_id, username, password, password_salt, created_date, created_by) VALUES
    (1, 'admin', md5('password'), md5('salt-admin'), timestamp '2024-10-01', 'setup'),
    (2, 'finanzen', md5('geheim'), md5('salt-finanzen'), timestamp '2024-10-01', 'admin'),
    (3, 'support', md5('hilfe'), md5('salt-support'), timestamp '2024-10-01', 'admin');
INSERT INTO sessions (record_id, start_timestamp, last_access_time, timeout, host, session_data) VALUES
    (1, timestamp '2025-03-01 09:00', timestamp '2025-03-01 09:30', 3600000, '127.0.0.1',
     decode('aced0005737200', 'hex'));
INSERT INTO bus_events (record_id, class_name, event_json, user_token, created_date, creating_owner,
                        processing_owner, processing_state, search_key1, search_key2)
SELECT a.record_id, 'org.killbill.billing.account.api.user.DefaultAccountCreationEvent',
       '{"accountId": "' || a.id || '"}', md5('token-' || a.record_id)::uuid::text, a.created_date, 'node-1',
       'node-1', 'PROCESSED', a.record_id, a.tenant_record_id
  FROM accounts a WHERE (a.record_id - 1) % 10 = 0;

SELECT setval('tenants_record_id_seq', (SELECT max(record_id) FROM tenants));
SELECT setval('tenant_kvs_record_id_seq', (SELECT max(record_id) FROM tenant_kvs));
SELECT setval('accounts_record_id_seq', (SELECT max(record_id) FROM accounts));
SELECT setval('bundles_record_id_seq', (SELECT max(record_id) FROM bundles));
SELECT setval('subscriptions_record_id_seq', (SELECT max(record_id) FROM subscriptions));
SELECT setval('invoices_record_id_seq', (SELECT max(record_id) FROM invoices));
SELECT setval('invoice_items_record_id_seq', (SELECT max(record_id) FROM invoice_items));
SELECT setval('invoice_item_notes_record_id_seq', (SELECT max(record_id) FROM invoice_item_notes));
SELECT setval('invoice_billing_events_record_id_seq', (SELECT max(record_id) FROM invoice_billing_events));
SELECT setval('payments_record_id_seq', (SELECT max(record_id) FROM payments));
SELECT setval('tag_definitions_record_id_seq', (SELECT max(record_id) FROM tag_definitions));
SELECT setval('tags_record_id_seq', (SELECT max(record_id) FROM tags));
SELECT setval('users_record_id_seq', (SELECT max(record_id) FROM users));
SELECT setval('sessions_record_id_seq', (SELECT max(record_id) FROM sessions));
SELECT setval('bus_events_record_id_seq', (SELECT max(record_id) FROM bus_events));
