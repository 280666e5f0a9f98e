import { randomBytes } from 'node:crypto';
import { AsyncEntry } from '@napi-rs/keyring';
import type { Clock } from '../clock/clock.js';
import { TetherError } from '../errors.js';
import { KEY_BYTES } from './crypto.js';
import { readIfExists, writeFileAtomic } from './files.js';
import { withFileLock, type LockOptions } from './lock.js';

/** Where the store's encryption key comes from (injectable for tests). */
export interface KeySource {
  /** The 32-byte AES-256 key, created and kept the first time it is asked for. */
  getKey(): Promise<Uint8Array>;
}

/** One secret string in an OS credential store, as {@link defaultKeySource} uses it. */
export interface Keychain {
  /** The stored string, or `undefined` when there is none; throws when the keychain is unusable. */
  read(): Promise<string | undefined>;
  /** Stores the string; throws when the keychain is unusable. */
  write(secret: string): Promise<void>;
}

/**
 * The OS keychain entry `service`/`account` through `@napi-rs/keyring`:
 * macOS Keychain, Windows Credential Manager, the Secret Service on Linux.
 * On Linux the entry is pinned to the Secret Service: the library's fallback,
 * the kernel keyring, is emptied at logout or reboot, and the store's files
 * would then be unreadable.
 */
export function osKeychain(service = 'mcp-tether', account = 'store-key'): Keychain {
  const entry = (): AsyncEntry => new AsyncEntry(service, account, { linux: { store: 'secret-service' } });
  return {
    // async: where no keychain is usable, creating the entry already throws.
    read: async () => (await entry().getPassword()) ?? undefined,
    write: async (secret) => {
      await entry().setPassword(secret);
    },
  };
}

/** What `key.json` says. */
type KeyRecord = { readonly source: 'file'; readonly key: Uint8Array } | { readonly source: 'keychain' };

/** Where and how {@link defaultKeySource} keeps the key. */
export interface DefaultKeySourceOptions {
  /** The store's `key.json`. */
  readonly recordFile: string;
  /** The lock under which a first key is created, so that two processes starting together agree on one. */
  readonly lockFile: string;
  readonly clock: Clock;
  readonly lock: LockOptions;
  /** The keychain to try; `undefined` keeps the key in the key file only (`TETHER_STORE_KEY=file`). */
  readonly keychain: Keychain | undefined;
}

/**
 * The store key as DESIGN §5 asks: in the OS keychain when one is usable,
 * else in the 0600 `key.json` in the state directory.
 *
 * The first time, the keychain is probed — read, and if empty a new key
 * written and read back — and any failure there (no Secret Service, a headless
 * session) quietly means the key file instead. The choice is recorded in
 * `key.json` and kept from then on: a store whose key is in the keychain
 * does not fall back to a new key file when the keychain is unreachable
 * later (that would make every stored secret unreadable); it fails with
 * `ERR_STORE_KEY_UNAVAILABLE` until the keychain is back. A damaged
 * `key.json` fails with `ERR_STORE_KEY` and is left as it is.
 */
export function defaultKeySource(options: DefaultKeySourceOptions): KeySource {
  let key: Promise<Uint8Array> | undefined;
  return {
    getKey() {
      key ??= resolveKey(options).catch((error: unknown) => {
        key = undefined; // a keychain that was locked may be unlocked next time
        throw error;
      });
      return key;
    },
  };
}

async function resolveKey(options: DefaultKeySourceOptions): Promise<Uint8Array> {
  const existing = await readRecord(options.recordFile);
  if (existing !== undefined) return keyFrom(existing, options);
  return withFileLock(options.lockFile, options.clock, options.lock, async () => {
    const raced = await readRecord(options.recordFile);
    if (raced !== undefined) return keyFrom(raced, options);
    const fresh = new Uint8Array(randomBytes(KEY_BYTES));
    const inKeychain = options.keychain === undefined ? undefined : await probe(options.keychain, fresh);
    if (inKeychain !== undefined) {
      await writeFileAtomic(options.recordFile, `${JSON.stringify({ v: 1, source: 'keychain' })}\n`);
      return inKeychain;
    }
    await writeFileAtomic(options.recordFile, `${JSON.stringify({ v: 1, source: 'file', key: encode(fresh) })}\n`);
    return fresh;
  });
}

/**
 * The key in the keychain — the one already there (another state directory
 * of this user put it there), else `fresh` once it is stored and reads back
 * — or `undefined` when the keychain cannot be used.
 */
async function probe(keychain: Keychain, fresh: Uint8Array): Promise<Uint8Array | undefined> {
  try {
    const stored = await keychain.read();
    if (stored !== undefined) return decode(stored); // a foreign or damaged entry is left alone: key file
    await keychain.write(encode(fresh));
    return (await keychain.read()) === encode(fresh) ? fresh : undefined;
  } catch {
    return undefined;
  }
}

async function keyFrom(record: KeyRecord, options: DefaultKeySourceOptions): Promise<Uint8Array> {
  if (record.source === 'file') return record.key;
  const unavailable = (why: string, cause?: unknown): TetherError =>
    new TetherError(
      'ERR_STORE_KEY_UNAVAILABLE',
      `the store's key is kept in the OS keychain (see ${options.recordFile}), but ${why}; unlock or start the keychain and try again — or, to start over, delete ${options.recordFile} and run \`tether login\` for each workload`,
      cause === undefined ? undefined : { cause },
    );
  if (options.keychain === undefined) throw unavailable('TETHER_STORE_KEY=file forbids using the keychain');
  let stored: string | undefined;
  try {
    stored = await options.keychain.read();
  } catch (error) {
    throw unavailable('the keychain cannot be reached', error);
  }
  const key = stored === undefined ? undefined : decode(stored);
  if (key === undefined) throw unavailable('the keychain holds no usable key for tether');
  return key;
}

async function readRecord(file: string): Promise<KeyRecord | undefined> {
  const text = await readIfExists(file);
  if (text === undefined) return undefined;
  const damaged = (): TetherError =>
    new TetherError(
      'ERR_STORE_KEY',
      `the store's key file ${file} is damaged; restore it from a backup if you have one — otherwise delete it and run \`tether login\` for each workload`,
    );
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw damaged();
  }
  const { v, source, key } = (typeof value === 'object' && value !== null ? value : {}) as Record<string, unknown>;
  if (v === 1 && source === 'keychain') return { source };
  const bytes = v === 1 && source === 'file' && typeof key === 'string' ? decode(key) : undefined;
  if (bytes === undefined) throw damaged();
  return { source: 'file', key: bytes };
}

function encode(key: Uint8Array): string {
  return Buffer.from(key).toString('base64');
}

function decode(text: string): Uint8Array | undefined {
  const bytes = Buffer.from(text, 'base64');
  // Buffer.from skips characters that are not base64, so check the round trip too.
  return bytes.length === KEY_BYTES && bytes.toString('base64') === text ? new Uint8Array(bytes) : undefined;
}
