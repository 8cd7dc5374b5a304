"""Verbs for the application's side: `export-app-registry` (the registry in the real app's own format)."""

from __future__ import annotations

import argparse
import os

from handyshop_migration import settings
from handyshop_migration.cli.environment import preflight, say
from handyshop_migration.tenancy.errors import ConfigurationError


def cmd_export_app_registry(args: argparse.Namespace) -> int:
    """Write the registry into the app's `tenant_connections` (its columns, its `ivHex:tagHex:ciphertextHex`
    secrets under its own key), so that the app's own router reaches migrated shops unchanged."""
    from handyshop_migration.tenancy.application.encryption import CredentialCipher
    from handyshop_migration.tenancy.application.export import export_registry
    from handyshop_migration.tenancy.application.registry import ConnectionRegistry
    from handyshop_migration.tenancy.dsn import ConnectionSpec
    from handyshop_migration.tenancy.lifecycle import Lifecycle, State
    from handyshop_migration.tenancy.secrets import Secret

    source = preflight()
    app_key = os.environ.get(settings.APP_ENCRYPTION_KEY, "")
    if not app_key.strip():
        raise ConfigurationError(
            f"{settings.APP_ENCRYPTION_KEY} is not set: give the key the application's ConnectionRegistry reads "
            "(its CONNECTION_ENCRYPTION_KEY), in the environment, never on the command line."
        )
    target = ConnectionSpec.from_url(args.target_url or os.environ[settings.SOURCE_URL], name="--target-url")
    not_ready = {State.REGISTERED, State.PROVISIONING, State.DEPROVISIONING}
    inactive = {r.shop_id for r in Lifecycle(source).all() if r.state in not_ready}
    with ConnectionRegistry(source, CredentialCipher.from_env()) as registry:
        result = export_registry(
            registry, target, Secret(app_key), schema=args.schema, table=args.table, host=args.host or None,
            port=args.port, inactive=inactive,
        )
    say(result.summary())
    return 0
