import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

/** The store key's length: AES-256. */
export const KEY_BYTES = 32;

const IV_BYTES = 12; // the GCM standard nonce; random per write, and a key seals far fewer than 2^32 files
const TAG_BYTES = 16;

/**
 * How an encrypted file looks on disk (JSON): `v` the format version, `alg`
 * the cipher, `kid` a fingerprint of the key it was sealed under (so that
 * "another key" can be told apart from damage), and base64 `iv`, `tag`, `ct`.
 */
export interface Envelope {
  readonly v: 1;
  readonly alg: 'A256GCM';
  readonly kid: string;
  readonly iv: string;
  readonly tag: string;
  readonly ct: string;
}

/** Why an envelope could not be opened: not an envelope, sealed under another key, or altered. */
export type UnsealFailure = 'invalid' | 'other_key' | 'damaged';

/** The result of {@link unseal}: the plaintext, or why there is none. */
export type Unsealed =
  { readonly ok: true; readonly plaintext: string } | { readonly ok: false; readonly why: UnsealFailure };

/**
 * A short public fingerprint of a key. A truncated hash of a random 256-bit
 * key gives nothing away about it.
 */
function keyId(key: Uint8Array): string {
  return createHash('sha256').update('mcp-tether store key id\0').update(key).digest('hex').slice(0, 16);
}

/** Encrypts `plaintext` under `key` with AES-256-GCM and returns the envelope as JSON text. */
export function seal(key: Uint8Array, plaintext: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
  const envelope: Envelope = {
    v: 1,
    alg: 'A256GCM',
    kid: keyId(key),
    iv: iv.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
    ct: ct.toString('base64'),
  };
  return `${JSON.stringify(envelope)}\n`;
}

/** Opens an envelope written by {@link seal}; never throws on bad input. */
export function unseal(key: Uint8Array, text: string): Unsealed {
  const envelope = parseEnvelope(text);
  if (envelope === undefined) return { ok: false, why: 'invalid' };
  if (envelope.kid !== keyId(key)) return { ok: false, why: 'other_key' };
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, envelope.iv, { authTagLength: TAG_BYTES });
    decipher.setAuthTag(envelope.tag);
    const plaintext = Buffer.concat([decipher.update(envelope.ct), decipher.final()]).toString('utf8');
    return { ok: true, plaintext };
  } catch {
    return { ok: false, why: 'damaged' };
  }
}

interface RawEnvelope {
  readonly kid: string;
  readonly iv: Buffer;
  readonly tag: Buffer;
  readonly ct: Buffer;
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

function parseEnvelope(text: string): RawEnvelope | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const { v, alg, kid, iv, tag, ct } = value as Record<string, unknown>;
  if (v !== 1 || alg !== 'A256GCM' || typeof kid !== 'string') return undefined;
  if (typeof iv !== 'string' || typeof tag !== 'string' || typeof ct !== 'string') return undefined;
  // Buffer.from(…, 'base64') skips bad characters silently; a damaged envelope must not decode "successfully".
  if (![iv, tag, ct].every((field) => BASE64.test(field))) return undefined;
  const raw = { kid, iv: Buffer.from(iv, 'base64'), tag: Buffer.from(tag, 'base64'), ct: Buffer.from(ct, 'base64') };
  return raw.iv.length === IV_BYTES && raw.tag.length === TAG_BYTES ? raw : undefined;
}
