import type { TimerHandle } from '../src/clock/clock.js';
import { shortTierAllows, shortTierDelay } from '../src/keeper/backoff.js';
import { classifyFailure } from '../src/keeper/classify.js';
import { TokenUnavailableError } from '../src/keeper/keeper.js';
import type { KeeperStatus, TokenSet } from '../src/keeper/types.js';
import type { Policy, PolicyDeps, SimKeeper } from '../test/support/simulation.js';

/**
 * Models of the token monitors tether replaces, for bench/outage-sim. Both
 * refresh only at expiry (oauth2's 10 s expiry delta), retry a transient
 * failure on the same short tier as tether (10 s, ×1.5, ±50%, 5 tries, 5 m),
 * and serve no token once it has expired — requests do not trigger anything.
 *
 * - `give-up`: after the short tier, `unauthenticated` for good (the origin bug).
 * - `fixed-cadence`: after the short tier, one attempt every 10 minutes until
 *   a 24 h ceiling (the best fix published before tether).
 */
class ExpiryMonitor implements SimKeeper {
  status: KeeperStatus = 'running';
  #tokens: TokenSet | undefined;
  #timer: TimerHandle | undefined;
  #failures = 0;
  #failingSince: number | undefined;
  #stopped = false;
  readonly #abort = new AbortController();

  constructor(
    private readonly deps: PolicyDeps,
    private readonly afterShortTier: 'give-up' | 'fixed-cadence',
  ) {}

  start(initial: TokenSet): Promise<void> {
    this.#tokens = initial;
    this.#scheduleAtExpiry();
    return Promise.resolve();
  }

  getToken(): Promise<string> {
    const token = this.peekToken();
    return token !== undefined
      ? Promise.resolve(token)
      : Promise.reject(new TokenUnavailableError('ERR_AUTH_RETRYING', 'token expired'));
  }

  peekToken(): string | undefined {
    const t = this.#tokens;
    if (t === undefined || this.status === 'unauthenticated') return undefined;
    return t.expiresAt === undefined || this.deps.clock.now() < t.expiresAt - 10_000 ? t.accessToken : undefined;
  }

  stop(): void {
    this.#stopped = true;
    this.#abort.abort();
    if (this.#timer !== undefined) this.deps.clock.clearTimeout(this.#timer);
  }

  #after(ms: number): void {
    if (this.#timer !== undefined) this.deps.clock.clearTimeout(this.#timer);
    this.#timer = this.deps.clock.setTimeout(() => void this.#attempt(), ms);
  }

  #scheduleAtExpiry(): void {
    const expiresAt = this.#tokens?.expiresAt;
    if (expiresAt !== undefined) this.#after(expiresAt - 10_000 - this.deps.clock.now());
  }

  #setStatus(status: KeeperStatus, reason: string): void {
    if (status === this.status) return;
    this.status = status;
    this.deps.status(status, reason);
  }

  async #attempt(): Promise<void> {
    const { clock, config } = this.deps;
    const refreshToken = this.#tokens?.refreshToken ?? '';
    const sentAt = clock.now();
    const result = await this.deps.refresh(refreshToken, this.#abort.signal);
    if (this.#stopped) return;
    if (result.ok) {
      const { tokens } = result;
      this.#tokens = {
        accessToken: tokens.accessToken,
        refreshToken: tokens.refreshToken ?? refreshToken,
        issuedAt: sentAt,
        ...(tokens.expiresIn !== undefined && { expiresAt: sentAt + tokens.expiresIn * 1000 }),
      };
      await this.deps.store.save(this.#tokens);
      this.#failures = 0;
      this.#failingSince = undefined;
      this.#setStatus('running', 'refreshed');
      this.#scheduleAtExpiry();
      return;
    }
    const verdict = classifyFailure(result.failure, clock.now());
    if (verdict.class === 'permanent') {
      this.#setStatus('unauthenticated', verdict.detail);
      return;
    }
    this.#failures++;
    this.#failingSince ??= clock.now();
    const elapsed = clock.now() - this.#failingSince;
    const delay = shortTierDelay(this.#failures - 1, config, this.deps.random());
    if (shortTierAllows(this.#failures, elapsed, delay, config)) {
      this.#after(delay);
      return;
    }
    if (this.afterShortTier === 'give-up') {
      this.#setStatus('unauthenticated', 'short tier exhausted');
      return;
    }
    if (elapsed > 24 * 3_600_000) {
      this.#setStatus('unauthenticated', 'ceiling');
      return;
    }
    this.#setStatus('auth_retrying', 'retrying every 10 minutes');
    this.#after(10 * 60_000);
  }
}

export const giveUpPolicy: Policy = (deps) => new ExpiryMonitor(deps, 'give-up');
export const fixedCadencePolicy: Policy = (deps) => new ExpiryMonitor(deps, 'fixed-cadence');
