// The two secret formats a Node.js application meets, decrypted with node:crypto only.
//
// decryptToken: the migration registry's token, as route() hands it out in `password_token`
//   (handyshop_migration/tenancy/application/encryption.py): v1.<key id>.<nonce b64url>.<ciphertext+tag b64url>,
//   AES-256-GCM, key = the 32 bytes of the 64-hex TENANT_ENCRYPTION_KEY, associated data =
//   "handyshop-migration/credential/v1\0" + "tenant-credential:shop:<id>" (a token copied to another shop fails).
// decryptAppSecret: the real app's ConnectionRegistry format (server/tenancy/connectionRegistry.ts):
//   ivHex:tagHex:ciphertextHex, AES-256-GCM, no associated data, the key read by the app's rules.
//
// Errors name what is wrong and never quote a key, a token or a plaintext.

import { createDecipheriv, createHash } from "node:crypto";

const TOKEN_VERSION = "v1";
const KEY_ID_PREFIX = Buffer.from("handyshop-migration/credential-key-id/v1\0", "utf8");
const AAD_PREFIX = Buffer.from("handyshop-migration/credential/v1\0", "utf8");
const NONCE_LEN = 12;
const TAG_LEN = 16;
const HEX64 = /^[0-9a-fA-F]{64}$/;
const B64URL = /^[A-Za-z0-9_-]+$/;
const LOWER_HEX = /^(?:[0-9a-f]{2})*$/;
// The app refuses to start with this key (validateEncryptionKey).
const APP_DEFAULT_KEY = "default-key-change-in-production-environment";

function registryKey(keyHex) {
  const raw = String(keyHex ?? "").trim();
  if (!HEX64.test(raw)) {
    throw new Error(
      "TENANT_ENCRYPTION_KEY must be exactly 64 hexadecimal characters (32 bytes), the migration's key",
    );
  }
  return Buffer.from(raw, "hex");
}

/** The key id the migration writes into its tokens: a fingerprint of the key, never the key. */
export function keyId(keyHex) {
  const key = registryKey(keyHex);
  return createHash("sha256").update(Buffer.concat([KEY_ID_PREFIX, key])).digest("hex").slice(0, 16);
}

/**
 * The plaintext of a registry token for shop `shopId`. `keys` is the active 64-hex key, or a list of keys
 * (the active one and the old ones of a rotation): the token's key id picks the one that opens it.
 */
export function decryptToken(token, keys, shopId) {
  const candidates = (Array.isArray(keys) ? keys : [keys]).map((k) => ({ id: keyId(k), key: registryKey(k) }));
  const parts = typeof token === "string" ? token.split(".") : [];
  const malformed = "the password token is not a registry token (expected v1.<key id>.<nonce>.<ciphertext>)";
  if (parts.length !== 4 || parts[0] !== TOKEN_VERSION || !/^[0-9a-f]{16}$/.test(parts[1])) {
    throw new Error(malformed);
  }
  if (!B64URL.test(parts[2]) || !B64URL.test(parts[3])) throw new Error(malformed);
  const nonce = Buffer.from(parts[2], "base64url");
  const sealed = Buffer.from(parts[3], "base64url");
  if (nonce.length !== NONCE_LEN || sealed.length < TAG_LEN) throw new Error(malformed);
  const match = candidates.find((c) => c.id === parts[1]);
  if (!match) {
    throw new Error(
      `the password token of shop ${shopId} was encrypted with key id ${parts[1]}, which is not among the ` +
        `configured keys (${candidates.map((c) => c.id).join(", ")}): give the writer the migration's ` +
        "TENANT_ENCRYPTION_KEY (and, during a rotation, the old keys)",
    );
  }
  if (!Number.isSafeInteger(Number(shopId))) throw new Error("shopId must be an integer");
  const aad = Buffer.concat([AAD_PREFIX, Buffer.from(`tenant-credential:shop:${Number(shopId)}`, "utf8")]);
  const decipher = createDecipheriv("aes-256-gcm", match.key, nonce, { authTagLength: TAG_LEN });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_LEN));
  try {
    return Buffer.concat([decipher.update(sealed.subarray(0, sealed.length - TAG_LEN)), decipher.final()]).toString(
      "utf8",
    );
  } catch {
    throw new Error(
      `the password token of shop ${shopId} failed authentication under key id ${match.id}: ` +
        "it is corrupted, was changed, or belongs to another shop",
    );
  }
}

/**
 * The app's 32 key bytes, by its rules (getKeyBuffer and validateEncryptionKey): 64 hexadecimal characters are
 * the raw bytes, 44 characters are base64, anything else is hashed with SHA-256; shorter than 32 characters
 * or the app's placeholder default is refused.
 */
export function appKeyBytes(key) {
  const raw = String(key ?? "");
  if (raw.length < 32) throw new Error("the app's encryption key must have at least 32 characters");
  if (raw === APP_DEFAULT_KEY) throw new Error("the app's encryption key is its placeholder default; set a real key");
  if (raw.length === 64 && HEX64.test(raw)) return Buffer.from(raw, "hex");
  if (raw.length === 44) {
    const bytes = Buffer.from(raw, "base64");
    if (bytes.length !== 32) throw new Error("the app's 44-character key is not base64 of 32 bytes");
    return bytes;
  }
  return createHash("sha256").update(raw, "utf8").digest();
}

/** The plaintext of an app secret "ivHex:tagHex:ciphertextHex" (as tenant_connections stores them). */
export function decryptAppSecret(secret, key) {
  const parts = typeof secret === "string" ? secret.split(":") : [];
  if (parts.length !== 3 || !parts.every((p) => LOWER_HEX.test(p))) {
    throw new Error("the app secret is not in the format ivHex:tagHex:ciphertextHex (lower-case hex)");
  }
  const iv = Buffer.from(parts[0], "hex");
  const tag = Buffer.from(parts[1], "hex");
  if (iv.length !== NONCE_LEN || tag.length !== TAG_LEN) {
    throw new Error(`the app secret needs a ${NONCE_LEN}-byte iv and a ${TAG_LEN}-byte tag`);
  }
  const decipher = createDecipheriv("aes-256-gcm", appKeyBytes(key), iv, { authTagLength: TAG_LEN });
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(Buffer.from(parts[2], "hex")), decipher.final()]).toString("utf8");
  } catch {
    throw new Error("the app secret failed authentication: another key, or a changed value");
  }
}
