"""Encryption of tenant credentials at rest: AES-256-GCM with key ids, so keys can be rotated.

A token looks like ``v1.<key_id>.<nonce>.<ciphertext+tag>`` (the last two base64url without padding).
The key id is a fingerprint of the key, never the key; it tells which configured key opens a token,
so entries written under an old key stay readable while `TENANT_ENCRYPTION_OLD_KEYS` holds that key.
The caller's `context` (e.g. ``tenant-credential:shop:5``) is authenticated associated data: a token
copied onto another row fails to decrypt instead of silently handing out another shop's password.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import string
from collections.abc import Iterable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from handyshop_migration.tenancy.errors import DecryptionError, EncryptionKeyError
from handyshop_migration.tenancy.secrets import Secret

ENV_KEY = "TENANT_ENCRYPTION_KEY"
ENV_OLD_KEYS = "TENANT_ENCRYPTION_OLD_KEYS"

_VERSION = "v1"
_KEY_HEX_LEN = 64
_KEY_ID_LEN = 16
_NONCE_LEN = 12  # 96 bits: the size GCM is specified for
_TAG_LEN = 16
# Domain separation: the key id is a hash of the key, and must not equal any other hash of it.
_KEY_ID_PREFIX = b"handyshop-migration/credential-key-id/v1\x00"
# Binds the format version into the authenticated data, so a future format cannot be confused with v1.
_AAD_PREFIX = b"handyshop-migration/credential/v1\x00"
_HEX = frozenset(string.hexdigits)
_FIX = "Generate one with `openssl rand -hex 32`"


def generate_key() -> str:
    """A new random key: 64 hex characters, as `openssl rand -hex 32` prints."""
    return secrets.token_hex(32)


def _key_id(key: bytes) -> str:
    return hashlib.sha256(_KEY_ID_PREFIX + key).hexdigest()[:_KEY_ID_LEN]


def _parse_key(value: str | Secret | None, where: str, variable: str) -> bytes:
    """32 key bytes from 64 hex characters; errors say what is wrong and never echo the value."""
    raw = value.reveal() if isinstance(value, Secret) else value
    # Surrounding whitespace is a copy/paste accident (a trailing newline from a file), not key material.
    raw = (raw or "").strip()
    if not raw:
        raise EncryptionKeyError(
            f"{where} is not set. {_FIX} and set {variable} to it; keep the same key for every run, "
            "or the stored tenant credentials cannot be read."
        )
    if len(raw) != _KEY_HEX_LEN:
        raise EncryptionKeyError(
            f"{where} has {len(raw)} characters; it needs exactly {_KEY_HEX_LEN} hexadecimal characters "
            f"(32 bytes). {_FIX} and set {variable} to it."
        )
    if not _HEX.issuperset(raw):
        raise EncryptionKeyError(
            f"{where} is not hexadecimal; it needs exactly {_KEY_HEX_LEN} characters 0-9a-f (32 bytes). "
            f"{_FIX} and set {variable} to it."
        )
    return bytes.fromhex(raw)


def _b64decode(text: str) -> bytes:
    # Strict: characters outside the base64url alphabet are an error, not silently skipped.
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class CredentialCipher:
    """Encrypts and decrypts tenant credentials with the active key; reads tokens of old keys too."""

    __slots__ = ("_active", "_keys", "key_id")

    def __init__(
        self,
        key_hex: str | Secret,
        old_keys: Iterable[str | Secret] = (),
        *,
        variable: str = ENV_KEY,
    ) -> None:
        key = _parse_key(key_hex, variable, variable)
        self.key_id: str = _key_id(key)
        # Only AESGCM objects are kept, never the hex text, so nothing here prints key material.
        self._active = AESGCM(key)
        self._keys: dict[str, AESGCM] = {self.key_id: self._active}
        for position, old in enumerate(old_keys, start=1):
            old_key = _parse_key(old, f"{ENV_OLD_KEYS} entry {position} (comma-separated)", ENV_OLD_KEYS)
            self._keys.setdefault(_key_id(old_key), AESGCM(old_key))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CredentialCipher:
        """The cipher configured by TENANT_ENCRYPTION_KEY and (optional) TENANT_ENCRYPTION_OLD_KEYS."""
        env = os.environ if environ is None else environ
        old = [part for part in (env.get(ENV_OLD_KEYS) or "").split(",") if part.strip()]
        return cls(Secret(env.get(ENV_KEY) or ""), [Secret(part) for part in old])

    @property
    def key_ids(self) -> list[str]:
        """Ids of every configured key, the active one first."""
        return list(self._keys)

    def __repr__(self) -> str:
        old = [k for k in self._keys if k != self.key_id]
        return f"CredentialCipher(key_id={self.key_id!r}, old_key_ids={old!r})"

    __str__ = __repr__

    def __reduce__(self) -> object:
        # Pickling would write the keys to wherever the pickle goes (run storage, logs).
        raise TypeError("a CredentialCipher cannot be pickled; build it with CredentialCipher.from_env()")

    @staticmethod
    def _aad(context: str) -> bytes:
        if not isinstance(context, str) or not context:
            raise ValueError("context must be a non-empty string naming the row, e.g. 'tenant-credential:shop:5'")
        return _AAD_PREFIX + context.encode("utf-8")

    def encrypt(self, plaintext: str, *, context: str) -> str:
        if not isinstance(plaintext, str):
            raise TypeError("plaintext must be a str (call .reveal() on a Secret first)")
        nonce = os.urandom(_NONCE_LEN)
        sealed = self._active.encrypt(nonce, plaintext.encode("utf-8"), self._aad(context))
        return ".".join((_VERSION, self.key_id, _b64encode(nonce), _b64encode(sealed)))

    def _parse(self, token: str) -> tuple[str, bytes, bytes]:
        """(key_id, nonce, ciphertext+tag) of a well-formed token; messages never quote the token."""
        malformed = (
            "the stored entry is not a valid credential token (expected v1.<key id>.<nonce>.<ciphertext>); "
            "it is corrupted or was not written by handyshop-migration. Register the credentials again."
        )
        if not isinstance(token, str):
            raise DecryptionError(malformed)
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            raise DecryptionError(malformed)
        key_id = parts[1]
        if len(key_id) != _KEY_ID_LEN or not _HEX.issuperset(key_id):
            raise DecryptionError(malformed)
        try:
            nonce, sealed = _b64decode(parts[2]), _b64decode(parts[3])
        except (binascii.Error, ValueError):
            raise DecryptionError(malformed) from None
        if len(nonce) != _NONCE_LEN or len(sealed) < _TAG_LEN:
            raise DecryptionError(malformed)
        return key_id, nonce, sealed

    def decrypt(self, token: str, *, context: str) -> str:
        key_id, nonce, sealed = self._parse(token)
        aad = self._aad(context)
        cipher = self._keys.get(key_id)
        if cipher is None:
            raise DecryptionError(
                f"the entry for {context!r} was encrypted with key id {key_id}, which is not configured "
                f"(active key id {self.key_id}). Put the old key in {ENV_OLD_KEYS} (comma-separated) "
                f"next to the current {ENV_KEY}."
            )
        try:
            plain = cipher.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise DecryptionError(
                f"the entry for {context!r} failed authentication under key id {key_id}: it is corrupted, "
                "was changed, or was encrypted for another row. Register the credentials again."
            ) from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:  # authenticated but not text: only a foreign writer could produce it
            raise DecryptionError(
                f"the entry for {context!r} (key id {key_id}) does not hold text; register the credentials again."
            ) from None

    def needs_rotation(self, token: str) -> bool:
        """True if the token was written with a key other than the active one."""
        key_id, _, _ = self._parse(token)
        return key_id != self.key_id

    def rotate(self, token: str, *, context: str) -> str:
        """The token re-encrypted under the active key (the same token if it already is)."""
        plaintext = self.decrypt(token, context=context)  # authenticates even when nothing changes
        if not self.needs_rotation(token):
            return token
        return self.encrypt(plaintext, context=context)


__all__ = ["ENV_KEY", "ENV_OLD_KEYS", "CredentialCipher", "generate_key"]
