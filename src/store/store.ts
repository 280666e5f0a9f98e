import type { DynamicClient, RegistrationStore } from '../oauth/registration.js';
import { mkdir, rm, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Clock } from '../clock/clock.js';
import { systemClock } from '../clock/system.js';
import { TetherError, quoteUntrusted } from '../errors.js';
import type { KeeperStore, TokenSet } from '../keeper/types.js';
import { seal, unseal, type UnsealFailure } from './crypto.js';
import { hasCode, readIfExists, setAside, writeFileAtomic } from './files.js';
import { defaultKeySource, osKeychain, type KeySource, type Keychain } from './key.js';
import { DEFAULT_LOCK_OPTIONS, withFileLock, type LockOptions } from './lock.js';
import { StoreLayout, preparePrivateDir, stateDir } from './paths.js';

/**
 * Why a stored file could not be read: `invalid` (not an encrypted store
 * file), `other_key` (encrypted under a different key), `damaged` (fails its
 * integrity check), `not_json`, `unexpected_shape` (valid JSON, but not what
 * tether writes there).
 */
export type CorruptReason = UnsealFailure | 'not_json' | 'unexpected_shape';

/**
 * `ERR_STORE_CORRUPT`: a stored file could not be read. It has been renamed
 * to `setAsideAs` (never deleted, never overwritten) and the message says
 * what to do next; the next save writes a fresh file.
 */
export class StoreCorruptError extends TetherError {
  /** The path the file had. */
  readonly file: string;
  /** Where it is now. */
  readonly setAsideAs: string;
  readonly reason: CorruptReason;

  constructor(file: string, setAsideAs: string, reason: CorruptReason, message: string) {
    super('ERR_STORE_CORRUPT', message);
    this.name = 'StoreCorruptError';
    this.file = file;
    this.setAsideAs = setAsideAs;
    this.reason = reason;
  }
}

/** The environment variables the store reads (for the README and its check). */
export const STORE_ENV = [
  {
    name: 'TETHER_HOME',
    default: 'the platform state directory',
    description:
      'state directory (an absolute path); default `$XDG_STATE_HOME/tether` or `~/.local/state/tether` on Linux, `~/Library/Application Support/tether` on macOS, `%LOCALAPPDATA%\\tether` on Windows',
  },
  {
    name: 'TETHER_STORE_KEY',
    default: 'auto',
    description:
      '`auto`: the store key lives in the OS keychain when one is usable, else in `key.json` (0600) in the state directory; `file`: never use the keychain',
  },
] as const;

/** How a {@link CredentialStore} is set up; everything has a default. */
export interface StoreOptions {
  /** The state directory; default `$TETHER_HOME`, else the platform's (see `stateDir`). */
  readonly dir?: string;
  /** Where `TETHER_HOME`, `TETHER_STORE_KEY` and the platform variables are read; default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly clock?: Clock;
  /** Replaces the keychain-or-key-file key entirely. */
  readonly keySource?: KeySource;
  /** The keychain the default key source tries; default the OS keychain. */
  readonly keychain?: Keychain;
  /** Lock timings; default {@link DEFAULT_LOCK_OPTIONS}. */
  readonly lock?: Partial<LockOptions>;
}

/** What a read produced, before it becomes a value or a set-aside file. */
type Decoded<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly why: CorruptReason };

/** The words of a corruption message: what the file was, and how the user gets it back. */
interface Subject {
  readonly what: string;
  readonly next: string;
}

const REASONS: Readonly<Record<CorruptReason, string>> = {
  invalid: 'it is not an encrypted store file (damaged or cut short)',
  other_key: "it was encrypted under a different key than this store's",
  damaged: 'it fails its integrity check (damaged or altered)',
  not_json: 'it is not valid JSON (damaged or cut short)',
  unexpected_shape: 'its contents are not what tether writes there',
};

/**
 * The credential store of DESIGN §5 on the local file system; the on-disk
 * layout is described in `paths.ts`. Secrets (token sets, client
 * registrations) are encrypted with AES-256-GCM; every write is atomic and
 * happens under the lock of what it writes (re-entrant: a save inside
 * {@link CredentialStore.withWorkloadLock} does not wait for itself). Reads
 * take no lock — atomic writes mean a reader sees a whole file — except to
 * set a corrupt file aside.
 */
export class CredentialStore {
  readonly #layout: StoreLayout;
  readonly #clock: Clock;
  readonly #lock: LockOptions;
  readonly #keys: KeySource;

  private constructor(layout: StoreLayout, clock: Clock, lock: LockOptions, keys: KeySource) {
    this.#layout = layout;
    this.#clock = clock;
    this.#lock = lock;
    this.#keys = keys;
  }

  /**
   * Opens (creating if needed) the state directory: mode 0700, tightened if
   * looser, refused with `ERR_STORE_DIR` if it belongs to another user. The
   * key is not touched until the first secret is read or written.
   */
  static async open(options: StoreOptions = {}): Promise<CredentialStore> {
    const env = options.env ?? process.env;
    const dir = path.resolve(options.dir ?? stateDir({ env, home: os.homedir() }));
    const keyMode = env['TETHER_STORE_KEY'] ?? '';
    if (!['', 'auto', 'file'].includes(keyMode)) {
      throw new TetherError('ERR_CONFIG', `TETHER_STORE_KEY=${quoteUntrusted(keyMode, 40)}; expected auto or file`);
    }
    const layout = new StoreLayout(dir);
    await preparePrivateDir(dir);
    await mkdir(layout.locks, { recursive: true, mode: 0o700 });
    const clock = options.clock ?? systemClock;
    const lock: LockOptions = { ...DEFAULT_LOCK_OPTIONS, ...options.lock };
    // A zero stale time would make the heartbeat spin.
    if (!(lock.staleMs > 0) || !(lock.timeoutMs >= 0)) {
      throw new TetherError('ERR_CONFIG', 'lock timings: staleMs must be above 0 and timeoutMs at least 0');
    }
    const keys =
      options.keySource ??
      defaultKeySource({
        recordFile: layout.keyRecord,
        lockFile: layout.keyLock,
        clock,
        lock,
        keychain: keyMode === 'file' ? undefined : (options.keychain ?? osKeychain()),
      });
    return new CredentialStore(layout, clock, lock, keys);
  }

  /** The state directory. */
  get dir(): string {
    return this.#layout.dir;
  }

  /**
   * The keeper's view of one workload's token set: `load`, an atomic
   * encrypted `save`, and `exclusive`, the workload's cross-process lock.
   */
  keeperStore(workload: string): KeeperStore {
    this.#layout.workloadDir(workload); // validates the name now rather than at the first refresh
    return {
      load: () => this.loadTokens(workload),
      save: (tokens) => this.saveTokens(workload, tokens),
      exclusive: (exchange, signal) => this.withWorkloadLock(workload, exchange, signal),
    };
  }

  /**
   * Runs `fn` holding the workload's cross-process lock (see `lock.ts`):
   * `ERR_STORE_LOCK_TIMEOUT` if it cannot be had in time,
   * `ERR_STORE_LOCK_ABORTED` if `signal` aborts the wait.
   */
  withWorkloadLock<T>(workload: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return withFileLock(this.#layout.workloadLock(workload), this.#clock, this.#lock, fn, signal);
  }

  /**
   * Runs `fn` holding the lock of the registration with `issuer`, so that
   * processes logging in at once register one client, not one each: take it,
   * re-read with {@link CredentialStore.loadRegistration}, register only if
   * there is still none, save.
   */
  withRegistrationLock<T>(issuer: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    return withFileLock(this.#layout.registrationLock(issuer), this.#clock, this.#lock, fn, signal);
  }

  /** The workload's token set, or `undefined` if none is stored; `ERR_STORE_CORRUPT` if unreadable. */
  async loadTokens(workload: string): Promise<TokenSet | undefined> {
    const file = this.#layout.tokens(workload);
    const subject = {
      what: `the stored tokens of workload ${JSON.stringify(workload)}`,
      next: `run \`tether login ${workload}\` to sign in again`,
    };
    return this.#read(file, this.#layout.workloadLock(workload), subject, this.#sealed(parseTokenSet));
  }

  /** Stores the workload's token set, encrypted, replacing the old one atomically. */
  async saveTokens(workload: string, tokens: TokenSet): Promise<void> {
    const file = this.#layout.tokens(workload);
    const text = seal(await this.#keys.getKey(), JSON.stringify(tokens));
    await this.withWorkloadLock(workload, () => writeFileAtomic(file, text));
  }

  /**
   * The workload's discovered metadata (resource and authorization-server
   * metadata, the remote's URL…) as last saved, or `undefined`;
   * `ERR_STORE_CORRUPT` if unreadable. The caller validates its shape.
   */
  async loadMetadata(workload: string): Promise<Readonly<Record<string, unknown>> | undefined> {
    const subject = {
      what: `the discovered metadata of workload ${JSON.stringify(workload)}`,
      next: `run \`tether login ${workload}\` to discover it again`,
    };
    return this.#read(this.#layout.metadata(workload), this.#layout.workloadLock(workload), subject, (text) =>
      Promise.resolve(parseJson(text, (value) => (isRecord(value) ? value : undefined))),
    );
  }

  /** Stores the workload's discovered metadata as plain JSON: it must hold nothing secret. */
  async saveMetadata(workload: string, metadata: object): Promise<void> {
    const file = this.#layout.metadata(workload);
    await this.withWorkloadLock(workload, () => writeFileAtomic(file, `${JSON.stringify(metadata, null, 2)}\n`));
  }

  /** Deletes everything stored for the workload (`tether rm`), files set aside as corrupt included. */
  async removeWorkload(workload: string): Promise<void> {
    const dir = this.#layout.workloadDir(workload);
    await this.withWorkloadLock(workload, () => rm(dir, { recursive: true, force: true }));
  }

  /** The cached registration with `issuer`, or `undefined`; `ERR_STORE_CORRUPT` if unreadable. */
  async loadRegistration(issuer: string): Promise<DynamicClient | undefined> {
    const file = this.#layout.registration(issuer);
    const subject = {
      what: `the cached client registration for ${quoteUntrusted(issuer, 200)}`,
      next: 'the next `tether login` of a workload that uses this server registers a new client',
    };
    // The file name is a hash of the issuer; the issuer inside must be the one asked for.
    const decode = this.#sealed((value) => {
      const registration = parseRegistration(value);
      return registration?.issuer === issuer ? registration : undefined;
    });
    return this.#read(file, this.#layout.registrationLock(issuer), subject, decode);
  }

  /** Stores a registration, encrypted, under its issuer, replacing any older one. */
  async saveRegistration(registration: DynamicClient): Promise<void> {
    const file = this.#layout.registration(registration.issuer);
    const text = seal(await this.#keys.getKey(), JSON.stringify(registration));
    await this.withRegistrationLock(registration.issuer, () => writeFileAtomic(file, text));
  }

  /** The registration cache as the oauth component uses it (`ensureClient`). */
  registrations(): RegistrationStore {
    return {
      get: (issuer) => this.loadRegistration(issuer),
      put: (_issuer, registration) => this.saveRegistration(registration),
    };
  }

  /** Forgets the registration with `issuer`, so that the next login registers again. */
  async deleteRegistration(issuer: string): Promise<void> {
    const file = this.#layout.registration(issuer);
    await this.withRegistrationLock(issuer, async () => {
      try {
        await unlink(file);
      } catch (error) {
        if (!hasCode(error, 'ENOENT')) throw error;
      }
    });
  }

  /**
   * A decoder for an encrypted file. The key is fetched before any verdict
   * on the file: a keychain that cannot be reached fails the read, it does
   * not get the file set aside.
   */
  #sealed<T>(shape: (value: unknown) => T | undefined): (text: string) => Promise<Decoded<T>> {
    return async (text) => {
      const opened = unseal(await this.#keys.getKey(), text);
      return opened.ok ? parseJson(opened.plaintext, shape) : opened;
    };
  }

  /**
   * Reads and decodes `file`. A file that does not decode is looked at again
   * under its lock — a writer may have replaced it meanwhile — and, if it
   * still does not, set aside and reported.
   */
  async #read<T>(
    file: string,
    lockFile: string,
    subject: Subject,
    decode: (text: string) => Promise<Decoded<T>>,
  ): Promise<T | undefined> {
    const text = await readIfExists(file);
    if (text === undefined) return undefined;
    const first = await decode(text);
    if (first.ok) return first.value;
    return withFileLock(lockFile, this.#clock, this.#lock, async () => {
      const again = await readIfExists(file);
      if (again === undefined) return undefined;
      const second = await decode(again);
      if (second.ok) return second.value;
      const aside = await setAside(file, this.#clock.now());
      throw new StoreCorruptError(
        file,
        aside,
        second.why,
        `${subject.what} could not be read: ${REASONS[second.why]}. The file was set aside as ${aside}; ${subject.next}.`,
      );
    });
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJson<T>(text: string, shape: (value: unknown) => T | undefined): Decoded<T> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, why: 'not_json' };
  }
  const shaped = shape(value);
  return shaped === undefined ? { ok: false, why: 'unexpected_shape' } : { ok: true, value: shaped };
}

const optionalString = (value: unknown): value is string | undefined =>
  value === undefined || typeof value === 'string';

const finite = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value);

function parseTokenSet(value: unknown): TokenSet | undefined {
  if (!isRecord(value)) return undefined;
  const { accessToken, refreshToken, issuedAt, expiresAt, scope, tokenType } = value;
  if (typeof accessToken !== 'string' || accessToken === '' || !finite(issuedAt)) return undefined;
  if (!optionalString(refreshToken) || !optionalString(scope) || !optionalString(tokenType)) return undefined;
  if (expiresAt !== undefined && !finite(expiresAt)) return undefined;
  return {
    accessToken,
    issuedAt,
    ...(refreshToken === undefined ? {} : { refreshToken }),
    ...(expiresAt === undefined ? {} : { expiresAt }),
    ...(scope === undefined ? {} : { scope }),
    ...(tokenType === undefined ? {} : { tokenType }),
  };
}

function parseRegistration(value: unknown): DynamicClient | undefined {
  if (!isRecord(value)) return undefined;
  const { kind, issuer, clientId, clientSecret, tokenEndpointAuthMethod, redirectUris, grantTypes } = value;
  const { registeredAt, clientSecretExpiresAt } = value;
  if (kind !== 'dynamic' || typeof issuer !== 'string' || typeof clientId !== 'string' || clientId === '')
    return undefined;
  if (!optionalString(clientSecret) || typeof registeredAt !== 'number') return undefined;
  if (clientSecretExpiresAt !== undefined && typeof clientSecretExpiresAt !== 'number') return undefined;
  if (
    tokenEndpointAuthMethod !== 'none' &&
    tokenEndpointAuthMethod !== 'client_secret_basic' &&
    tokenEndpointAuthMethod !== 'client_secret_post'
  )
    return undefined;
  if (!isStringArray(redirectUris) || !isStringArray(grantTypes)) return undefined;
  return {
    kind,
    issuer,
    clientId,
    tokenEndpointAuthMethod,
    redirectUris,
    grantTypes,
    registeredAt,
    ...(clientSecret === undefined ? {} : { clientSecret }),
    ...(clientSecretExpiresAt === undefined ? {} : { clientSecretExpiresAt }),
  };
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}
