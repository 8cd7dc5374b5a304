-- The saas fixture: an ad-analytics SaaS in the shape of the multi-tenant tutorial of Citus ("Let's make an
-- app - ad analytics": companies, campaigns, ads, clicks, impressions, geo_ips). Every tenant table carries
-- company_id and has a composite primary key (company_id, id); children reference their parents by composite
-- foreign keys that include company_id, so a row can never point into another company.
-- Written for these tests in the tutorial's shape; the extras (ad_formats, api_keys, the counters) are ours.

CREATE TYPE cost_model AS ENUM ('cost_per_click', 'cost_per_impression');
CREATE TYPE campaign_state AS ENUM ('draft', 'running', 'paused', 'archived');
CREATE DOMAIN http_url AS text CONSTRAINT http_url_check CHECK (VALUE ~ '^https?://');

-- Stamps updated_at unless the statement set it itself (the application sets it when it knows better).
CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now()::timestamp;
    END IF;
    RETURN NEW;
END
$$;

CREATE TABLE companies (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    image_url http_url,
    settings jsonb NOT NULL DEFAULT '{}',
    created_at timestamp NOT NULL,
    updated_at timestamp NOT NULL
);

-- Reference tables: one referenced by FK, one only joined (by address range, not by key).
CREATE TABLE ad_formats (
    id smallint PRIMARY KEY,
    name text NOT NULL UNIQUE,
    width integer NOT NULL CHECK (width > 0),
    height integer NOT NULL CHECK (height > 0)
);
CREATE TABLE geo_ips (
    addrs cidr NOT NULL PRIMARY KEY,
    latlon point NOT NULL
        CHECK (-90 <= latlon[0] AND latlon[0] <= 90 AND -180 <= latlon[1] AND latlon[1] <= 180),
    country_code char(2) NOT NULL,
    city text
);
CREATE INDEX geo_ips_addrs_gist ON geo_ips USING gist (addrs inet_ops);

CREATE TABLE campaigns (
    id bigserial,
    company_id bigint NOT NULL REFERENCES companies (id),
    name text NOT NULL,
    cost_model cost_model NOT NULL,
    state campaign_state NOT NULL,
    monthly_budget bigint,
    blocked_site_urls text[],
    created_at timestamp NOT NULL,
    updated_at timestamp NOT NULL,
    PRIMARY KEY (company_id, id)
);

CREATE TABLE ads (
    id bigserial,
    company_id bigint NOT NULL,
    campaign_id bigint NOT NULL,
    ad_format_id smallint NOT NULL REFERENCES ad_formats (id),
    name text NOT NULL,
    image_url http_url,
    target_url http_url,
    impressions_count bigint NOT NULL DEFAULT 0,
    clicks_count bigint NOT NULL DEFAULT 0,
    ctr numeric GENERATED ALWAYS AS (
        CASE WHEN impressions_count > 0 THEN round(clicks_count::numeric / impressions_count, 4) END
    ) STORED,
    created_at timestamp NOT NULL,
    updated_at timestamp NOT NULL,
    PRIMARY KEY (company_id, id),
    FOREIGN KEY (company_id, campaign_id) REFERENCES campaigns (company_id, id) ON DELETE CASCADE
);

CREATE TABLE clicks (
    id bigserial,
    company_id bigint NOT NULL,
    ad_id bigint NOT NULL,
    clicked_at timestamp NOT NULL,
    site_url http_url NOT NULL,
    cost_per_click_usd numeric(20,10),
    user_ip inet NOT NULL,
    user_data jsonb NOT NULL,
    PRIMARY KEY (company_id, id),
    FOREIGN KEY (company_id, ad_id) REFERENCES ads (company_id, id) ON DELETE CASCADE
);
CREATE INDEX clicks_ad_clicked_at ON clicks (company_id, ad_id, clicked_at);
CREATE INDEX clicks_user_data ON clicks USING gin (user_data jsonb_path_ops);

CREATE TABLE impressions (
    id bigserial,
    company_id bigint NOT NULL,
    ad_id bigint NOT NULL,
    seen_at timestamp NOT NULL,
    site_url http_url NOT NULL,
    cost_per_impression_usd numeric(20,10),
    user_ip inet NOT NULL,
    user_data jsonb NOT NULL,
    PRIMARY KEY (company_id, id),
    FOREIGN KEY (company_id, ad_id) REFERENCES ads (company_id, id) ON DELETE CASCADE
);
CREATE INDEX impressions_ad_seen_at ON impressions (company_id, ad_id, seen_at);

-- API keys for the reporting API: shipped with the last release, nobody has created one yet.
CREATE TABLE api_keys (
    company_id bigint NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    label text NOT NULL,
    key_hash bytea NOT NULL,
    scopes text[] NOT NULL DEFAULT '{}',
    created_at timestamp NOT NULL DEFAULT now(),
    PRIMARY KEY (company_id, id)
);

-- Counter caches: every click and impression bumps its ad's counter (the generated ctr follows).
CREATE FUNCTION bump_ad_counter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'clicks' THEN
        UPDATE ads SET clicks_count = clicks_count + 1 WHERE company_id = NEW.company_id AND id = NEW.ad_id;
    ELSE
        UPDATE ads SET impressions_count = impressions_count + 1
         WHERE company_id = NEW.company_id AND id = NEW.ad_id;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER companies_updated_at BEFORE UPDATE ON companies FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER campaigns_updated_at BEFORE UPDATE ON campaigns FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER ads_updated_at BEFORE UPDATE ON ads FOR EACH ROW EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER clicks_bump_counter AFTER INSERT ON clicks FOR EACH ROW EXECUTE FUNCTION bump_ad_counter();
CREATE TRIGGER impressions_bump_counter AFTER INSERT ON impressions FOR EACH ROW EXECUTE FUNCTION bump_ad_counter();

-- Helper functions the application calls: SQL and PL/pgSQL.
CREATE FUNCTION campaign_ctr(p_company_id bigint, p_campaign_id bigint) RETURNS numeric
LANGUAGE sql STABLE AS $$
    SELECT round(sum(clicks_count)::numeric / nullif(sum(impressions_count), 0), 4)
      FROM ads WHERE company_id = p_company_id AND campaign_id = p_campaign_id
$$;

CREATE FUNCTION geo_locate(p_ip inet) RETURNS point LANGUAGE sql STABLE AS $$
    SELECT latlon FROM geo_ips WHERE addrs >>= p_ip ORDER BY masklen(addrs) DESC LIMIT 1
$$;

CREATE FUNCTION company_spend(p_company_id bigint, p_from timestamp, p_to timestamp)
RETURNS TABLE (campaign_id bigint, spend numeric) LANGUAGE sql STABLE AS $$
    SELECT a.campaign_id,
           coalesce(sum(c.cost_per_click_usd), 0)
             + coalesce((SELECT sum(i.cost_per_impression_usd) FROM impressions i
                          JOIN ads a2 ON a2.company_id = i.company_id AND a2.id = i.ad_id
                         WHERE i.company_id = p_company_id AND a2.campaign_id = a.campaign_id
                           AND i.seen_at >= p_from AND i.seen_at < p_to), 0)
      FROM ads a
      LEFT JOIN clicks c ON c.company_id = a.company_id AND c.ad_id = a.id
                        AND c.clicked_at >= p_from AND c.clicked_at < p_to
     WHERE a.company_id = p_company_id
     GROUP BY a.campaign_id
     ORDER BY a.campaign_id
$$;

-- Records a click at the price of its campaign's cost model and returns the click's id.
CREATE FUNCTION record_click(p_company_id bigint, p_ad_id bigint, p_site_url text, p_user_ip inet,
                             p_user_data jsonb DEFAULT '{}', p_at timestamp DEFAULT now()::timestamp)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_model cost_model;
    v_id bigint;
BEGIN
    SELECT c.cost_model INTO v_model
      FROM ads a JOIN campaigns c ON c.company_id = a.company_id AND c.id = a.campaign_id
     WHERE a.company_id = p_company_id AND a.id = p_ad_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'company % has no ad %', p_company_id, p_ad_id;
    END IF;
    INSERT INTO clicks (company_id, ad_id, clicked_at, site_url, cost_per_click_usd, user_ip, user_data)
    VALUES (p_company_id, p_ad_id, p_at, p_site_url,
            CASE WHEN v_model = 'cost_per_click' THEN 0.25 ELSE 0 END, p_user_ip, p_user_data)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

CREATE VIEW campaign_performance AS
SELECT c.company_id, c.id AS campaign_id, c.name, c.state, count(a.id) AS ads,
       coalesce(sum(a.impressions_count), 0) AS impressions, coalesce(sum(a.clicks_count), 0) AS clicks,
       round(sum(a.clicks_count)::numeric / nullif(sum(a.impressions_count), 0), 4) AS ctr
  FROM campaigns c
  LEFT JOIN ads a ON a.company_id = c.company_id AND a.campaign_id = c.id
 GROUP BY c.company_id, c.id, c.name, c.state;

-- Joins the reference table geo_ips by address range.
CREATE VIEW clicks_by_country AS
SELECT c.company_id, coalesce(g.country_code, '??') AS country_code, count(*) AS clicks
  FROM clicks c
  LEFT JOIN geo_ips g ON c.user_ip <<= g.addrs
 GROUP BY c.company_id, coalesce(g.country_code, '??');

CREATE MATERIALIZED VIEW daily_company_stats AS
SELECT company_id, day, sum(clicks) AS clicks, sum(impressions) AS impressions, sum(spend) AS spend
  FROM (SELECT company_id, clicked_at::date AS day, 1 AS clicks, 0 AS impressions, cost_per_click_usd AS spend
          FROM clicks
        UNION ALL
        SELECT company_id, seen_at::date, 0, 1, cost_per_impression_usd FROM impressions) AS events
 GROUP BY company_id, day
WITH NO DATA;
CREATE UNIQUE INDEX daily_company_stats_key ON daily_company_stats (company_id, day);

COMMENT ON TABLE companies IS 'The tenants: one row per advertiser.';
COMMENT ON TABLE geo_ips IS 'IP ranges and where they are; joined with clicks.user_ip <<= addrs, no foreign key.';
COMMENT ON COLUMN ads.ctr IS 'Click-through rate, generated from the counters.';
COMMENT ON COLUMN clicks.user_data IS 'Browser, language, device — as the tracking pixel reported it.';
