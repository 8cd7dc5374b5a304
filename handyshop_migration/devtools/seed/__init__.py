"""A realistic shared ("unified") Handyshop database: the source the migration splits per shop.

The schema follows the real application (junomarx/Clientking-test, see the project's reference sheet on
the Handyshop app): 3 master tables and the 19 tenant tables of the migration script, where the script's
names that the real app lacks are modelled on the closest real table. The data carries the quirks a real
migration meets: global rows under shop 0 and 1682, NULL shop ids, optional orphan shop ids and one optional
cross-shop reference, camelCase columns, text[] values, double-encoded jsonb, German-comma money in text,
base64 signatures, umlauts and emoji, quoted shop names, ids that interleave across shops, a shop without
owner and users without shop.

- `schema`: the tables, keys and foreign keys (DDL);
- `vocabulary`: the words, names and base counts the rows are made of;
- `copy_text`: COPY text formatting of values;
- `generators`: one lazy row generator per tenant table;
- `loader`: `seed_database`, `add_shop`, `ensure_database` — COPY in one transaction, keys after the load.
"""

from handyshop_migration.devtools.seed.loader import SeedReport, add_shop, ensure_database, seed_database
from handyshop_migration.devtools.seed.schema import (
    FOREIGN_KEYS,
    GLOBAL_ROWS_POLICY,
    GLOBAL_SHOP_IDS,
    MASTER_TABLES,
    TENANT_TABLES,
    CrossShopReference,
    ForeignKey,
    create_schema,
)

__all__ = [
    "CrossShopReference",
    "ForeignKey",
    "FOREIGN_KEYS",
    "GLOBAL_ROWS_POLICY",
    "GLOBAL_SHOP_IDS",
    "MASTER_TABLES",
    "SeedReport",
    "TENANT_TABLES",
    "add_shop",
    "create_schema",
    "ensure_database",
    "seed_database",
]
