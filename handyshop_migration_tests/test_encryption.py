"""CredentialCipher: AES-256-GCM tokens with key ids, associated data and key rotation."""

from __future__ import annotations

import base64
import pickle

import pytest

from handyshop_migration.tenancy.application.encryption import (
    ENV_KEY,
    ENV_OLD_KEYS,
    CredentialCipher,
    generate_key,
)
from handyshop_migration.tenancy.errors import DecryptionError, EncryptionKeyError
from handyshop_migration.tenancy.secrets import Secret

CTX = "tenant-credential:shop:5"
PLAIN = "p@ss:w/o#rd%^&*!$ ünïcode"


def _flip_ciphertext_byte(token: str, index: int = 0) -> str:
    head, body = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw[index] ^= 0x01
    return head + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_generate_key_is_64_hex_and_random() -> None:
    key = generate_key()
    assert len(key) == 64 and bytes.fromhex(key)
    assert generate_key() != key


def test_roundtrip_and_token_format() -> None:
    cipher = CredentialCipher(generate_key())
    token = cipher.encrypt(PLAIN, context=CTX)
    version, key_id, nonce, sealed = token.split(".")
    assert (version, key_id) == ("v1", cipher.key_id)
    assert len(base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))) == 12
    assert PLAIN not in token
    assert cipher.decrypt(token, context=CTX) == PLAIN
    assert cipher.decrypt(cipher.encrypt("", context=CTX), context=CTX) == ""


def test_same_plaintext_encrypts_differently() -> None:
    cipher = CredentialCipher(generate_key())
    first, second = cipher.encrypt(PLAIN, context=CTX), cipher.encrypt(PLAIN, context=CTX)
    assert first != second
    assert first.split(".")[2] != second.split(".")[2]  # fresh nonce each time
    assert cipher.decrypt(first, context=CTX) == cipher.decrypt(second, context=CTX) == PLAIN


def test_key_id_is_stable_short_and_not_the_key() -> None:
    key = generate_key()
    a, b = CredentialCipher(key), CredentialCipher(Secret(key.upper()))
    assert a.key_id == b.key_id
    assert len(a.key_id) == 16 and a.key_id not in key
    assert CredentialCipher(generate_key()).key_id != a.key_id


def test_repr_shows_only_key_ids() -> None:
    key, old = generate_key(), generate_key()
    cipher = CredentialCipher(key, [old])
    text = repr(cipher) + str(cipher)
    assert cipher.key_id in text and CredentialCipher(old).key_id in text
    assert key not in text and old not in text
    with pytest.raises(TypeError):
        pickle.dumps(cipher)


@pytest.mark.parametrize("env", [{}, {ENV_KEY: ""}, {ENV_KEY: "   "}])
def test_missing_key(env: dict[str, str]) -> None:
    with pytest.raises(EncryptionKeyError) as err:
        CredentialCipher.from_env(env)
    message = str(err.value)
    assert message.startswith(f"{ENV_KEY} is not set. Generate one with `openssl rand -hex 32`")


def test_short_key_says_its_length_and_the_fix() -> None:
    short = generate_key()[:32]
    with pytest.raises(EncryptionKeyError) as err:
        CredentialCipher.from_env({ENV_KEY: short})
    message = str(err.value)
    assert "has 32 characters" in message and "64 hexadecimal" in message
    assert "openssl rand -hex 32" in message and ENV_KEY in message
    assert short not in message and short[:8] not in message


def test_non_hex_key() -> None:
    bad = "g" * 64
    with pytest.raises(EncryptionKeyError) as err:
        CredentialCipher(bad)
    message = str(err.value)
    assert "not hexadecimal" in message and "openssl rand -hex 32" in message and ENV_KEY in message
    assert bad[:8] not in message


def test_bad_old_key_names_variable_and_position() -> None:
    good, bad = generate_key(), generate_key()[:-2] + "zz"
    with pytest.raises(EncryptionKeyError) as err:
        CredentialCipher.from_env({ENV_KEY: generate_key(), ENV_OLD_KEYS: f"{good}, {bad}"})
    message = str(err.value)
    assert ENV_OLD_KEYS in message and "entry 2" in message and "not hexadecimal" in message
    assert bad not in message and good not in message
    with pytest.raises(EncryptionKeyError, match="entry 1.*has 3 characters"):
        CredentialCipher(generate_key(), ["abc"])


def test_from_env_reads_old_keys() -> None:
    old1, old2, new = generate_key(), generate_key(), generate_key()
    token = CredentialCipher(old2).encrypt(PLAIN, context=CTX)
    cipher = CredentialCipher.from_env({ENV_KEY: new, ENV_OLD_KEYS: f" {old1} ,,{old2}\n"})
    assert cipher.key_ids == [CredentialCipher(k).key_id for k in (new, old1, old2)]
    assert cipher.decrypt(token, context=CTX) == PLAIN


def test_tampered_ciphertext_is_rejected_not_garbage() -> None:
    cipher = CredentialCipher(generate_key())
    token = cipher.encrypt(PLAIN, context=CTX)
    for index in (0, 5, -1):  # ciphertext body and the tag at its end
        tampered = _flip_ciphertext_byte(token, index)
        with pytest.raises(DecryptionError) as err:
            cipher.decrypt(tampered, context=CTX)
        message = str(err.value)
        assert cipher.key_id in message and CTX in message
        assert "corrupted" in message and "another row" in message
        assert tampered not in message and PLAIN not in message
        assert err.value.__cause__ is None and err.value.__suppress_context__


def test_tampered_nonce_is_rejected() -> None:
    cipher = CredentialCipher(generate_key())
    v, kid, nonce, sealed = cipher.encrypt(PLAIN, context=CTX).split(".")
    other_nonce = cipher.encrypt(PLAIN, context=CTX).split(".")[2]
    with pytest.raises(DecryptionError, match="failed authentication"):
        cipher.decrypt(".".join((v, kid, other_nonce, sealed)), context=CTX)


def test_wrong_context_is_rejected() -> None:
    cipher = CredentialCipher(generate_key())
    token = cipher.encrypt(PLAIN, context=CTX)
    with pytest.raises(DecryptionError) as err:
        cipher.decrypt(token, context="tenant-credential:shop:6")
    assert "tenant-credential:shop:6" in str(err.value) and "another row" in str(err.value)


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "v1.abc", "v2.0123456789abcdef.AAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", "a.b.c.d.e"],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(DecryptionError, match="not a valid credential token"):
        CredentialCipher(generate_key()).decrypt(token, context=CTX)


def test_truncated_and_mangled_tokens() -> None:
    cipher = CredentialCipher(generate_key())
    token = cipher.encrypt(PLAIN, context=CTX)
    v, kid, nonce, sealed = token.split(".")
    candidates = [
        token[:-4],  # truncated ciphertext: authentication fails
        ".".join((v, kid, nonce, sealed[:10])),  # shorter than a tag
        ".".join((v, kid, nonce[:-2], sealed)),  # nonce of the wrong length
        ".".join((v, kid, nonce, sealed[:-1] + "*")),  # not base64url
        ".".join((v, "XYZ", nonce, sealed)),
    ]
    for bad in candidates:
        with pytest.raises(DecryptionError) as err:
            cipher.decrypt(bad, context=CTX)
        assert bad not in str(err.value) and PLAIN not in str(err.value)


def test_forged_key_id_does_not_help() -> None:
    victim, attacker = CredentialCipher(generate_key()), CredentialCipher(generate_key())
    v, _, nonce, sealed = attacker.encrypt(PLAIN, context=CTX).split(".")
    with pytest.raises(DecryptionError, match="failed authentication"):
        victim.decrypt(".".join((v, victim.key_id, nonce, sealed)), context=CTX)


def test_rotation() -> None:
    old_key, new_key = generate_key(), generate_key()
    old = CredentialCipher(old_key)
    token = old.encrypt(PLAIN, context=CTX)

    # Without the old key: a clear error naming the unknown key id and the fix.
    with pytest.raises(DecryptionError) as err:
        CredentialCipher(new_key).decrypt(token, context=CTX)
    message = str(err.value)
    assert old.key_id in message and "not configured" in message and ENV_OLD_KEYS in message
    assert old_key not in message and token not in message

    rotating = CredentialCipher(new_key, [old_key])
    assert rotating.needs_rotation(token)
    assert rotating.decrypt(token, context=CTX) == PLAIN
    rotated = rotating.rotate(token, context=CTX)
    assert rotated.split(".")[1] == rotating.key_id != old.key_id
    assert not rotating.needs_rotation(rotated)
    assert rotating.rotate(rotated, context=CTX) == rotated  # already current: unchanged
    # Once rotated, the old key is no longer needed.
    assert CredentialCipher(new_key).decrypt(rotated, context=CTX) == PLAIN
    # Rotation authenticates: it refuses a tampered token instead of re-encrypting garbage.
    with pytest.raises(DecryptionError):
        rotating.rotate(_flip_ciphertext_byte(token), context=CTX)
    with pytest.raises(DecryptionError):
        rotating.rotate(token, context="tenant-credential:shop:6")
