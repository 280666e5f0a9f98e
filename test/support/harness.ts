import { AsyncLocalStorage } from 'node:async_hooks';
import { FakeClock } from '../../src/clock/fake.js';
import { DEFAULT_KEEPER_CONFIG, type KeeperConfig } from '../../src/config/keeper-config.js';
import type { RefreshFailure } from '../../src/keeper/failure.js';
import { TokenKeeper, type KeeperOptions } from '../../src/keeper/keeper.js';
import { DEFAULT_LOCK_OPTIONS } from '../../src/store/lock.js';
import { TetherError } from '../../src/errors.js';
import type { KeeperEvent, KeeperStatus, RefreshResult, TokenSet } from '../../src/keeper/types.js';

export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;

/** A WAF block page, the origin bug's failure. */
export const WAF_403: RefreshFailure = {
  kind: 'http',
  status: 403,
  headers: { 'content-type': 'text/html' },
  body: '<!DOCTYPE html><html><body>Access denied</body></html>',
};
export const REFUSED: RefreshFailure = { kind: 'network', code: 'ECONNREFUSED' };
export const INVALID_GRANT: RefreshFailure = {
  kind: 'http',
  status: 400,
  headers: { 'content-type': 'application/json' },
  body: '{"error":"invalid_grant"}',
};
export const INVALID_CLIENT: RefreshFailure = {
  kind: 'http',
  status: 401,
  headers: { 'content-type': 'application/json' },
  body: '{"error":"invalid_client"}',
};

/**
 * A model of a token endpoint with refresh-token rotation: each success
 * issues `at-N`/`rt-N` and makes the previous refresh token invalid. A fault,
 * when set, answers instead of the server (never reaching it), as a fault
 * proxy would.
 */
export class TokenEndpoint {
  fault: RefreshFailure | undefined;
  lifetimeSeconds: number | undefined = 3600;
  latencyMs = 0;
  rotate = true;
  /** Runs when a request reaches the endpoint, before it is answered (to stage races). */
  beforeAnswer: (() => Promise<void>) | undefined;
  readonly requests: { at: number; refreshToken: string; answer: 'ok' | 'fault' | 'invalid_grant' }[] = [];
  inFlight = 0;
  maxInFlight = 0;
  #serial = 0;
  current = 'rt-0';

  constructor(readonly clock: FakeClock) {}

  /** Issues a token set as a login would. */
  login(): TokenSet {
    this.#serial++;
    this.current = `rt-${this.#serial}`;
    const now = this.clock.now();
    return {
      accessToken: `at-${this.#serial}`,
      refreshToken: this.current,
      issuedAt: now,
      ...(this.lifetimeSeconds !== undefined && { expiresAt: now + this.lifetimeSeconds * 1000 }),
    };
  }

  readonly refresh = async (refreshToken: string, signal: AbortSignal): Promise<RefreshResult> => {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.latencyMs > 0) {
        await new Promise<void>((resolve) => {
          const onAbort = (): void => {
            this.clock.clearTimeout(timer);
            resolve();
          };
          const timer = this.clock.setTimeout(() => {
            signal.removeEventListener('abort', onAbort);
            resolve();
          }, this.latencyMs);
          signal.addEventListener('abort', onAbort, { once: true });
        });
      }
      // An aborted request never reached the server (the keeper is stopping).
      if (signal.aborted) return { ok: false, failure: { kind: 'network', code: 'ABORT_ERR' } };
      await this.beforeAnswer?.();
      const at = this.clock.now();
      if (this.fault !== undefined) {
        this.requests.push({ at, refreshToken, answer: 'fault' });
        return { ok: false, failure: this.fault };
      }
      if (refreshToken !== this.current) {
        this.requests.push({ at, refreshToken, answer: 'invalid_grant' });
        return { ok: false, failure: INVALID_GRANT };
      }
      this.requests.push({ at, refreshToken, answer: 'ok' });
      this.#serial++;
      if (this.rotate) this.current = `rt-${this.#serial}`;
      return {
        ok: true,
        tokens: {
          accessToken: `at-${this.#serial}`,
          ...(this.rotate && { refreshToken: this.current }),
          ...(this.lifetimeSeconds !== undefined && { expiresIn: this.lifetimeSeconds }),
        },
      };
    } finally {
      this.inFlight--;
    }
  };
}

/** How long the store's lock is waited for before `ERR_STORE_LOCK_TIMEOUT`, as `DEFAULT_LOCK_OPTIONS.timeoutMs`. */
export const STORE_LOCK_TIMEOUT_MS = DEFAULT_LOCK_OPTIONS.timeoutMs;

/** A lock held, as the store's async context sees it: `held` turns false on release. */
interface Claim {
  held: boolean;
}

/** The stores' locks held along the current async chain (one storage for all stores, as `lock.ts` has it). */
const holding = new AsyncLocalStorage<ReadonlyMap<MemoryStore, Claim>>();

/**
 * An in-memory store that records what was saved, in order. A save can be
 * made to take time (like an fsync), loads can fail, and a save can fail
 * after it has written (a rename that landed before a failed fsync).
 *
 * Its cross-process lock is modelled as `CredentialStore` has it: `exclusive`
 * and `save` both take it (first come, first served unless told otherwise), re-entrant along the
 * async chain that holds it (`save` inside `exclusive` runs at once), and a
 * wait ends after {@link STORE_LOCK_TIMEOUT_MS} with `ERR_STORE_LOCK_TIMEOUT`
 * or when the signal aborts. It can be made to hang, as a lock whose holder
 * never lets go would, and be held by someone else for a while (`holdLock`).
 */
export class MemoryStore {
  tokens: TokenSet | undefined;
  readonly saved: TokenSet[] = [];
  failSaves = false;
  /** The next this many saves write the tokens, then fail. */
  failAfterWriting = 0;
  failLoads = false;
  saveDelayMs = 0;
  /** Delays for the next saves, one each, before `saveDelayMs` applies again. */
  readonly saveDelays: number[] = [];
  loadDelayMs = 0;
  lockHangs = false;
  /**
   * The last waiter gets the lock first: a file lock is polled, so among
   * waiters in one process any may win — this makes the latest one win.
   */
  lockLastComeFirst = false;
  /** How long letting go of a lock taken by `exclusive` takes, after its work is done (a slow unlink). */
  releaseDelayMs = 0;
  /** Locks taken by `exclusive` (not re-entrant ones). */
  locksTaken = 0;
  /** Lock waits that ended in `ERR_STORE_LOCK_TIMEOUT`. */
  lockTimeouts = 0;
  #holder: Claim | undefined;
  readonly #waiting: { grant: (claim: Claim) => void }[] = [];

  constructor(private readonly clock: FakeClock) {}

  async load(): Promise<TokenSet | undefined> {
    if (this.loadDelayMs > 0) await this.#wait(this.loadDelayMs);
    if (this.failLoads) throw Object.assign(new Error('resource busy'), { code: 'EBUSY' });
    return this.tokens;
  }

  save(tokens: TokenSet): Promise<void> {
    return this.#locked(async () => {
      const delay = this.saveDelays.shift() ?? this.saveDelayMs;
      if (delay > 0) await this.#wait(delay);
      if (this.failSaves) throw Object.assign(new Error('disk full'), { code: 'ENOSPC' });
      this.tokens = tokens;
      this.saved.push(tokens);
      if (this.failAfterWriting > 0) {
        this.failAfterWriting--;
        throw Object.assign(new Error('i/o error'), { code: 'EIO' });
      }
    }, undefined);
  }

  exclusive<T>(exchange: () => Promise<T>, signal: AbortSignal): Promise<T> {
    const releaseDelay = this.releaseDelayMs;
    const run =
      releaseDelay > 0
        ? async (): Promise<T> => {
            const result = await exchange();
            await this.#wait(releaseDelay);
            return result;
          }
        : exchange;
    return this.#locked(run, signal, () => this.locksTaken++);
  }

  /** Someone else (another process) holds the lock for `ms`. */
  holdLock(ms: number): Promise<void> {
    return this.#locked(() => this.#wait(ms), undefined);
  }

  async #locked<T>(fn: () => Promise<T>, signal: AbortSignal | undefined, taken?: () => void): Promise<T> {
    const outer = holding.getStore();
    if (outer?.get(this)?.held === true) return fn();
    const claim = await this.#acquire(signal);
    taken?.();
    try {
      return await holding.run(new Map(outer).set(this, claim), fn);
    } finally {
      claim.held = false;
      this.#holder = undefined;
      this.#waiting.shift()?.grant({ held: true });
    }
  }

  #acquire(signal: AbortSignal | undefined): Promise<Claim> {
    if (this.#holder === undefined && this.#waiting.length === 0 && !this.lockHangs) {
      this.#holder = { held: true };
      return Promise.resolve(this.#holder);
    }
    return new Promise<Claim>((resolve, reject) => {
      const waiter = {
        grant: (claim: Claim): void => {
          done();
          this.#holder = claim;
          resolve(claim);
        },
      };
      const give = (error: Error): void => {
        done();
        const at = this.#waiting.indexOf(waiter);
        if (at >= 0) this.#waiting.splice(at, 1);
        reject(error);
      };
      const timer = this.lockHangs
        ? undefined
        : this.clock.setTimeout(() => {
            this.lockTimeouts++;
            give(new TetherError('ERR_STORE_LOCK_TIMEOUT', 'gave up waiting for the lock'));
          }, STORE_LOCK_TIMEOUT_MS);
      const onAbort = (): void => {
        give(Object.assign(new Error('lock wait aborted'), { code: 'ABORT_ERR' }));
      };
      const done = (): void => {
        if (timer !== undefined) this.clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      if (this.lockHangs) return;
      if (this.lockLastComeFirst) this.#waiting.unshift(waiter);
      else this.#waiting.push(waiter);
    });
  }

  #wait(ms: number): Promise<void> {
    return new Promise<void>((resolve) => this.clock.setTimeout(resolve, ms));
  }
}

/** A deterministic PRNG (mulberry32), so jitter is reproducible. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface Harness {
  clock: FakeClock;
  endpoint: TokenEndpoint;
  store: MemoryStore;
  keeper: TokenKeeper;
  statuses: { status: KeeperStatus; reason: string; at: number }[];
  events: KeeperEvent[];
  config: KeeperConfig;
}

/** A keeper wired to a fake clock, a model token endpoint and an in-memory store, started with a fresh login. */
export async function startHarness(
  options: { config?: Partial<KeeperConfig>; lifetimeSeconds?: number | undefined; random?: () => number } & Partial<
    Pick<KeeperOptions, 'dynamicClient' | 'name' | 'resetTransport'>
  > = {},
): Promise<Harness> {
  const clock = new FakeClock();
  const endpoint = new TokenEndpoint(clock);
  if ('lifetimeSeconds' in options) endpoint.lifetimeSeconds = options.lifetimeSeconds;
  const store = new MemoryStore(clock);
  const config = { ...DEFAULT_KEEPER_CONFIG, ...options.config };
  const statuses: Harness['statuses'] = [];
  const events: KeeperEvent[] = [];
  const keeper = new TokenKeeper({
    clock,
    config,
    refresh: (refreshToken, signal) => endpoint.refresh(refreshToken, signal),
    store,
    status: (status, reason) => statuses.push({ status, reason, at: clock.now() }),
    random: options.random ?? (() => 0.5),
    ...(options.dynamicClient !== undefined && { dynamicClient: options.dynamicClient }),
    ...(options.name !== undefined && { name: options.name }),
    ...(options.resetTransport !== undefined && { resetTransport: options.resetTransport }),
  });
  keeper.on((event) => events.push(event));
  const initial = endpoint.login();
  await store.save(initial);
  store.saved.length = 0;
  await keeper.start(initial);
  return { clock, endpoint, store, keeper, statuses, events, config };
}

/** The attempt events recorded so far. */
export function attempts(events: KeeperEvent[]): Extract<KeeperEvent, { type: 'attempt' }>[] {
  return events.filter((e): e is Extract<KeeperEvent, { type: 'attempt' }> => e.type === 'attempt');
}
