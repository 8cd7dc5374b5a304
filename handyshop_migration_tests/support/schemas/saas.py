"""The saas fixture: a shared database in the shape of Citus's multi-tenant tutorial, the ad-analytics app
(https://docs.citusdata.com/en/stable/use_cases/multi_tenant.html): companies, campaigns, ads, clicks,
impressions, geo_ips.

Tenants are the rows of `companies`; the tenant column is `company_id`. Every tenant table has the primary key
`(company_id, id)` and references its parent by a composite FK that includes company_id, so there are no
implied tables and no ambiguous rows: this is the clean case. `ad_formats` is a reference table referenced by
FK, `geo_ips` one that is only joined (`clicks.user_ip <<= geo_ips.addrs`). Counter triggers keep
`ads.clicks_count` / `impressions_count` (and the generated `ads.ctr`) up to date. Schema in
`saas_schema.sql`, data in `saas_data.sql`.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg

from ._fixture import AppAction, Fixture, FunctionCall, load

INFO = Fixture(
    name="saas",
    modelled_on="Citus multi-tenant tutorial (ad analytics), https://docs.citusdata.com/en/stable/use_cases/multi_tenant.html",
    tenants_table="companies",
    tenants_key="id",
    tenants_name="name",
    tenant_column="company_id",
    tenant_tables=("campaigns", "ads", "clicks", "impressions", "api_keys"),
    # ads, clicks, impressions reach companies only through their composite FKs.
    tenant_fk_tables=("campaigns", "api_keys"),
    composite_tenant_fks={
        "ads": (("ads", ("company_id", "campaign_id"), "campaigns"),),
        "clicks": (("clicks", ("company_id", "ad_id"), "ads"),),
        "impressions": (("impressions", ("company_id", "ad_id"), "ads"),),
    },
    reference_tables=("ad_formats", "geo_ips"),
    joined_reference_tables=("geo_ips",),
    shared_only=("companies",),
    functions={
        "campaign_ctr": FunctionCall("SELECT campaign_ctr(1, 1)", "numeric", Decimal("0.3000"), tenant=1),
        "geo_locate": FunctionCall("SELECT geo_locate('10.2.0.9')", "point", "(47.37,8.54)"),
        "company_spend": FunctionCall(
            "SELECT * FROM company_spend(1, '2025-01-01', '2026-01-01')", "bigint", 1, returns_set=True, tenant=1
        ),
        "record_click": FunctionCall(
            "SELECT record_click(2, 13, 'https://bücher.example/neu', '10.5.0.1', '{\"lang\": \"pl-PL\"}')",
            "bigint", tenant=2,
        ),
    },
    internal_functions=("set_updated_at", "bump_ad_counter"),
    triggers={
        "companies": ("companies_updated_at",),
        "campaigns": ("campaigns_updated_at",),
        "ads": ("ads_updated_at",),
        "clicks": ("clicks_bump_counter",),
        "impressions": ("impressions_bump_counter",),
    },
    views=("campaign_performance", "clicks_by_country"),
    materialized_views=("daily_company_stats",),
    domains={"http_url": "text"},
    enums={
        "cost_model": ("cost_per_click", "cost_per_impression"),
        "campaign_state": ("draft", "running", "paused", "archived"),
    },
    never_used_sequences={"api_keys_id_seq": "api_keys.id"},
    generated_columns={"ads": ("ctr",)},
    identity_columns={"api_keys": ("id",)},
    comments={
        "companies": "The tenants: one row per advertiser.",
        "geo_ips": "IP ranges and where they are; joined with clicks.user_ip <<= addrs, no foreign key.",
        "ads.ctr": "Click-through rate, generated from the counters.",
        "clicks.user_data": "Browser, language, device — as the tracking pixel reported it.",
    },
    app_actions=(
        AppAction(
            "company 1 pauses a campaign: updated_at is stamped",
            ("UPDATE campaigns SET state = 'paused' WHERE company_id = 1 AND id = 1 "
             "RETURNING updated_at > timestamp '2025-06-01'",),
            tenant=1, expect=(True,),
        ),
        AppAction(
            "the tracking endpoint records a click for company 2's ad 13: the counter and the generated ctr follow",
            ("SELECT record_click(2, 13, 'https://bücher.example/neu', '10.5.0.1', '{\"lang\": \"pl-PL\"}', "
             "'2025-03-02 12:00')",
             "SELECT clicks_count, impressions_count, ctr FROM ads WHERE company_id = 2 AND id = 13"),
            tenant=2, expect=(5, 10, Decimal("0.5000")),
        ),
        AppAction(
            "an impression arrives for company 1's ad 1 (a child row with its composite FK)",
            ("INSERT INTO impressions (company_id, ad_id, seen_at, site_url, cost_per_impression_usd, user_ip, "
             "user_data) VALUES (1, 1, '2025-03-02 12:00', 'https://news.example/', 0, '10.1.0.1', '{}')",
             "SELECT impressions_count, ctr FROM ads WHERE company_id = 1 AND id = 1"),
            tenant=1, expect=(11, Decimal("0.1818")),
        ),
        AppAction(
            "company 2 creates its first API key: the identity starts at 1 (its sequence was never used)",
            ("INSERT INTO api_keys (company_id, label, key_hash, scopes) "
             "VALUES (2, 'Reporting für Zürich', sha256('s3cret'::bytea), ARRAY['reports:read']) RETURNING id",),
            tenant=2, expect=(1,),
        ),
        AppAction(
            "the dashboard reads clicks by country (joins geo_ips)",
            ("SELECT clicks FROM clicks_by_country WHERE company_id = 1 AND country_code = 'BR'",),
            tenant=1, expect=(4,),
        ),
        AppAction(
            "the nightly job refreshes the daily stats concurrently",
            ("REFRESH MATERIALIZED VIEW CONCURRENTLY daily_company_stats",
             "SELECT count(*) > 0 FROM daily_company_stats WHERE company_id = 1"),
            tenant=1, expect=(True,),
        ),
    ),
    report={
        "clicks_bump_counter": "AFTER INSERT counter trigger: copying clicks with triggers enabled double-counts "
        "ads.clicks_count",
        "impressions_bump_counter": "AFTER INSERT counter trigger: copying impressions with triggers enabled "
        "double-counts ads.impressions_count",
        "geo_ips": "reference table no FK names: found only by reading views/functions (clicks_by_country)",
        "daily_company_stats": "materialized view over every company's rows: must be refreshed in each tenant",
    },
    notes=(
        "Ids are global bigserials, as in the tutorial: ids do not restart per company, and the primary keys are "
        "(company_id, id).",
        "ads.ctr is a STORED generated column: COPY into a tenant must leave it out.",
        "geo_ips.latlon is a point: no equality operator, so it cannot be compared or grouped directly.",
    ),
)


def create(conn: psycopg.Connection, tenants: int = 3) -> None:
    """Create the schema and the data of `tenants` companies (ids 1..tenants, at least 2) and commit."""
    load(conn, "saas", tenants)
