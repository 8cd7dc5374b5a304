"""Errors of the tenancy library.

Every error says what is wrong and how to fix it, and never carries a password, a key or a connection
string with a password in it.
"""

from __future__ import annotations


class HandyshopError(Exception):
    """Base class: a problem an operator can act on (the message says how)."""


class ConfigurationError(HandyshopError):
    """A setting or environment variable is missing or malformed."""


class EncryptionKeyError(ConfigurationError):
    """TENANT_ENCRYPTION_KEY (or an old key) is missing or malformed."""


class DecryptionError(HandyshopError):
    """A stored ciphertext failed authentication: wrong key, tampered or corrupted entry."""


class RegistryError(HandyshopError):
    """The credential registry has no usable entry for a shop."""


class ProvisioningError(HandyshopError):
    """A tenant database or role could not be created or is in an unexpected state."""


class MigrationError(HandyshopError):
    """A tenant schema migration is missing, changed after it was applied, or failed."""


class CatalogError(HandyshopError):
    """The source catalog does not match what the migration expects."""


class CopyError(HandyshopError):
    """A shop's data could not be copied consistently."""


class BackupError(HandyshopError):
    """pg_dump or pg_restore failed, or no suitable client exists."""


class ConnectionFailed(HandyshopError):
    """A server could not be reached or refused the credentials."""


class CaptureError(HandyshopError):
    """Capturing a shop's writes, fencing them or applying them failed."""


class RoutingRefused(HandyshopError):
    """A routing step was asked for in a state that does not allow it."""


class CutoverRefused(HandyshopError):
    """A gate failed during cutover or its rollback; routing was left where it was."""


class RetirementRefused(HandyshopError):
    """Retirement or restore was refused; nothing was deleted or written."""


class LifecycleRefused(HandyshopError):
    """A shop's lifecycle transition was asked for from a state that does not allow it; nothing changed."""


class UnexpectedResult(HandyshopError):
    """A query that always returns a row returned none: the server or a concurrent change broke an invariant."""


class PlacementRefused(ProvisioningError):
    """No tenant server may take a shop (full, over its connection budget, draining), or a pin names one that cannot."""


class SchemaChangeRefused(MigrationError):
    """A tenant migration would break what the migration relies on for a shop (its capture, its way back)."""


class MoveRefused(HandyshopError):
    """A move of a tenant database to another server was refused or its gate failed; routing stayed where it was."""


class ExportError(HandyshopError):
    """Writing the registry into the app's tenant_connections table failed; nothing was written."""


class PrivilegeMissing(HandyshopError):
    """The connected role lacks a privilege the migration needs (the message names it and the GRANT)."""
