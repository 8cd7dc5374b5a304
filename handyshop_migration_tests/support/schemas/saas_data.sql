-- Deterministic data for the saas fixture. The number of companies is the setting fixture.tenants.
-- Ids are global (bigserial, as in the tutorial) and explicit; the sequences are set past them at the end.
-- Per company: 4 campaigns, 12 ads, 120 impressions (10 per ad), 1 to 5 clicks per ad. api_keys stays empty.

INSERT INTO companies (id, name, image_url, settings, created_at, updated_at)
SELECT c,
       CASE WHEN c <= 6
            THEN (ARRAY['Müller & Söhne GmbH', 'Café Crème SARL', 'Ørsted Reklame ApS', 'Łódź Media sp. z o.o.',
                        'Ñandú Ads S.L.', 'Kōbō Design K.K.'])[c]
            ELSE 'Company ' || c END,
       'https://logos.example/' || c || '.png',
       jsonb_build_object('timezone', (ARRAY['Europe/Berlin', 'Europe/Paris', 'Europe/Copenhagen', 'Europe/Warsaw',
                                             'Europe/Madrid', 'Asia/Tokyo'])[1 + (c - 1) % 6],
                          'currency', (ARRAY['EUR', 'EUR', 'DKK', 'PLN', 'EUR', 'JPY'])[1 + (c - 1) % 6],
                          'weekly_report', c % 2 = 1),
       timestamp '2024-11-01' + c * interval '1 day',
       timestamp '2024-12-01'
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS c;

INSERT INTO ad_formats (id, name, width, height) VALUES
    (1, 'Leaderboard', 728, 90), (2, 'Medium Rectangle', 300, 250), (3, 'Wide Skyscraper', 160, 600),
    (4, 'Billboard', 970, 250), (5, 'Mobile Banner', 320, 50);

INSERT INTO geo_ips (addrs, latlon, country_code, city) VALUES
    ('10.1.0.0/16', point(48.14, 11.58), 'DE', 'München'),
    ('10.2.0.0/16', point(47.37, 8.54), 'CH', 'Zürich'),
    ('10.3.0.0/16', point(48.86, 2.35), 'FR', 'Paris'),
    ('10.4.0.0/16', point(55.68, 12.57), 'DK', 'København'),
    ('10.5.0.0/16', point(51.76, 19.46), 'PL', 'Łódź'),
    ('10.6.0.0/16', point(35.68, 139.69), 'JP', 'Tōkyō'),
    ('10.7.0.0/16', point(-23.55, -46.63), 'BR', 'São Paulo'),
    ('10.7.128.0/17', point(-22.91, -43.17), 'BR', 'Rio de Janeiro'),
    ('2001:db8:1::/48', point(52.52, 13.40), 'DE', 'Berlin'),
    ('2001:db8:2::/48', point(40.42, -3.70), 'ES', 'Madrid');

INSERT INTO campaigns (id, company_id, name, cost_model, state, monthly_budget, blocked_site_urls, created_at,
                       updated_at)
SELECT 4 * (c - 1) + k, c,
       (ARRAY['Frühjahrsputz', 'Black Friday', 'Sommer-Sale', 'Brand awareness'])[k] || ' ' || (2024 + k % 2),
       (ARRAY['cost_per_click', 'cost_per_impression']::cost_model[])[1 + k % 2],
       (ARRAY['running', 'running', 'paused', 'archived']::campaign_state[])[k],
       CASE WHEN k <> 4 THEN 1000 * (c + k) END,
       CASE k WHEN 1 THEN ARRAY['https://spam.example', 'https://clickfarm.example']
              WHEN 2 THEN ARRAY[]::text[] END,
       timestamp '2024-12-01' + (c + k) * interval '1 day',
       timestamp '2025-01-01'
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS c, generate_series(1, 4) AS k;

INSERT INTO ads (id, company_id, campaign_id, ad_format_id, name, image_url, target_url, created_at, updated_at)
SELECT 12 * (c - 1) + 3 * (k - 1) + j, c, 4 * (c - 1) + k, 1 + (c + k + j) % 5,
       'Motiv ' || j || ' – ' || (ARRAY['Frühjahr', 'Rabatt', 'Sommer', 'Marke'])[k],
       'https://cdn.example/ads/' || (12 * (c - 1) + 3 * (k - 1) + j) || '.jpg',
       'https://shop' || c || '.example/landing/' || k,
       timestamp '2025-01-01' + (k + j) * interval '1 hour',
       timestamp '2025-01-01'
  FROM generate_series(1, current_setting('fixture.tenants')::integer) AS c, generate_series(1, 4) AS k,
       generate_series(1, 3) AS j;

-- Clicks and impressions fire the counter trigger, which bumps ads.clicks_count / impressions_count.
INSERT INTO impressions (id, company_id, ad_id, seen_at, site_url, cost_per_impression_usd, user_ip, user_data)
SELECT 120 * (a.company_id - 1) + 10 * ((a.id - 1) % 12) + i, a.company_id, a.id,
       timestamp '2025-02-01 08:00' + (a.id * 7 + i * 13) % 720 * interval '1 hour',
       (ARRAY['https://news.example/', 'https://bücher.example/neu', 'https://blog.example/post?id=7'])[1 + i % 3],
       CASE WHEN c.cost_model = 'cost_per_impression' THEN 0.0015 ELSE 0 END,
       ('10.' || (1 + (a.id + i) % 8) || '.' || (i * 17 % 256) || '.' || (a.id % 250 + 1))::inet,
       jsonb_build_object('browser', (ARRAY['Firefox', 'Chrome', 'Safari'])[1 + i % 3],
                          'lang', (ARRAY['de-DE', 'fr-CH', 'pl-PL', 'ja-JP'])[1 + (a.id + i) % 4],
                          'is_mobile', i % 3 = 0)
  FROM ads a JOIN campaigns c ON c.company_id = a.company_id AND c.id = a.campaign_id,
       generate_series(1, 10) AS i
 ORDER BY a.company_id, a.id, i;

INSERT INTO clicks (id, company_id, ad_id, clicked_at, site_url, cost_per_click_usd, user_ip, user_data)
SELECT 60 * (a.company_id - 1) + 5 * ((a.id - 1) % 12) + i, a.company_id, a.id,
       timestamp '2025-02-01 08:05' + (a.id * 7 + i * 26) % 720 * interval '1 hour',
       (ARRAY['https://news.example/', 'https://bücher.example/neu', 'https://blog.example/post?id=7'])[1 + i % 3],
       CASE WHEN c.cost_model = 'cost_per_click' THEN 0.25 ELSE 0 END,
       CASE WHEN i = 5 THEN '2001:db8:' || (1 + a.id % 3) || '::' || i
            ELSE '10.' || (1 + (a.id + i) % 8) || '.' || (i * 17 % 256) || '.' || (a.id % 250 + 1) END::inet,
       jsonb_build_object('browser', (ARRAY['Firefox', 'Chrome', 'Safari'])[1 + i % 3],
                          'lang', (ARRAY['de-DE', 'fr-CH', 'pl-PL', 'ja-JP'])[1 + (a.id + i) % 4],
                          'city', (ARRAY['Düsseldorf', 'Genève', 'Kraków', 'Ōsaka', 'Zürich'])[i],
                          'is_mobile', i % 2 = 0)
  FROM ads a JOIN campaigns c ON c.company_id = a.company_id AND c.id = a.campaign_id
 CROSS JOIN LATERAL generate_series(1, 1 + (a.id % 5)::integer) AS i
 ORDER BY a.company_id, a.id, i;

-- The counter trigger stamped ads.updated_at with the load time; make it deterministic again.
UPDATE ads SET updated_at = timestamp '2025-03-01';

SELECT setval('companies_id_seq', (SELECT max(id) FROM companies));
SELECT setval('campaigns_id_seq', (SELECT max(id) FROM campaigns));
SELECT setval('ads_id_seq', (SELECT max(id) FROM ads));
SELECT setval('clicks_id_seq', (SELECT max(id) FROM clicks));
SELECT setval('impressions_id_seq', (SELECT max(id) FROM impressions));

REFRESH MATERIALIZED VIEW daily_company_stats;
