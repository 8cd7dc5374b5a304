"""Small hand-made tenants for the client tests: a login role with a password, a database it owns with Handyshop's
`customers` table (the tenant shape: no shop_id, no user_id), and the shared side's `customers` (reference §2.3).

Provisioning does this for real (engine/provisioning.py); the Node.js client and export tests only need databases
a password really logs in to (the embedded server authenticates with scram-sha-256), made in milliseconds.
"""

from __future__ import annotations

from psycopg import sql

from handyshop_migration.tenancy.application.registry import TenantCredentials
from handyshop_migration.tenancy.dsn import ConnectionSpec
from handyshop_migration.tenancy.secrets import Secret

# Passwords with the characters the app's generator uses and that break unencoded URLs (reference §4.1).
AWKWARD = "@#%^&*!$/:?"

# Handyshop's customers (§2.3); the tenant shape drops the master references user_id and shop_id (§3.1).
_CUSTOMERS = (
    "id serial PRIMARY KEY, first_name text NOT NULL, last_name text NOT NULL, phone text NOT NULL, email text, "
    "address text, zip_code text, city text, created_at timestamp NOT NULL DEFAULT now(), created_by text"
)
SHARED_CUSTOMERS = f"CREATE TABLE IF NOT EXISTS customers ({_CUSTOMERS}, user_id integer, shop_id integer DEFAULT 1)"
TENANT_CUSTOMERS = f"CREATE TABLE IF NOT EXISTS customers ({_CUSTOMERS})"


def create_login_role(admin: ConnectionSpec, name: str, password: str) -> None:
    with admin.connect(autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )


def create_tenant(admin: ConnectionSpec, namespace: str, shop_id: int, password: str) -> TenantCredentials:
    """Role `<ns>shop_user_<id>` and database `<ns>shop_<id>_db` it owns, holding `customers` created by it."""
    role, database = f"{namespace}shop_user_{shop_id}", f"{namespace}shop_{shop_id}_db"
    create_login_role(admin, role, password)
    with admin.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))
        conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
    creds = TenantCredentials(
        shop_id=shop_id, server="primary", host=admin.host, port=admin.port, database=database, role=role,
        password=Secret(password), owner_role=role, owner_password=Secret(password),
    )
    with creds.spec().connect() as conn:  # as the tenant role: it owns what is in its database
        conn.execute(TENANT_CUSTOMERS)
    return creds
