import type { Clock, TimerHandle } from '../clock/clock.js';
import type { KeeperConfig } from '../config/keeper-config.js';
import { formatDuration } from '../config/duration.js';
import { TetherError } from '../errors.js';
import { demandGap, shortTierAllows, shortTierDelay, slowTierDelay } from './backoff.js';
import { classifyFailure } from './classify.js';
import type { Classification } from './failure.js';
import { preExpiryLead, tokenTimes } from './timing.js';
import type {
  KeeperEvent,
  KeeperSnapshot,
  KeeperStateKind,
  KeeperStatus,
  KeeperStore,
  RefreshFunction,
  RefreshHealth,
  StatusSink,
  TokenResponse,
  TokenSet,
  Trigger,
} from './types.js';

/** What the keeper is given; it knows nothing of HTTP servers, files or the CLI. */
export interface KeeperOptions {
  readonly clock: Clock;
  readonly config: KeeperConfig;
  readonly refresh: RefreshFunction;
  readonly store: KeeperStore;
  readonly status: StatusSink;
  /** Source of randomness for jitter, in [0, 1). Default `Math.random`. */
  readonly random?: () => number;
  /** True when the client was registered dynamically (DCR/CIMD): enables the stale-registration hint. */
  readonly dynamicClient?: boolean;
  /** The workload's name, used in the hints the keeper gives. */
  readonly name?: string;
  /** Recreates the connection pool to the token endpoint (called on network change and wake). */
  readonly resetTransport?: () => void;
}

/**
 * Why no token could be handed out: `ERR_AUTH_RETRYING` (transient trouble;
 * `retryAfterSeconds` says when the next attempt can happen),
 * `ERR_UNAUTHENTICATED` (a verdict; `tether login` is needed),
 * `ERR_KEEPER_STOPPED`, `ERR_KEEPER_NOT_STARTED`.
 */
export class TokenUnavailableError extends TetherError {
  readonly retryAfterSeconds: number | undefined;

  constructor(code: string, message: string, retryAfterSeconds?: number) {
    super(code, message);
    this.name = 'TokenUnavailableError';
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** A token set ready for the hot path: its cut points precomputed, its promise pre-resolved. */
interface HeldToken {
  readonly set: TokenSet;
  readonly refreshAt: number;
  readonly sendExpiresAt: number;
  readonly promise: Promise<string>;
}

/** A run of consecutive failed attempts. */
interface Episode {
  /** Wall-clock time of the episode's first failure (the ceiling counts from here). */
  readonly failingSince: number;
  readonly failures: number;
  readonly tier: 'short' | 'slow';
  /** Attempts made so far in the slow tier. */
  readonly slowSteps: number;
  readonly last: Classification;
  /** Lower bound from `Retry-After`, measured from the end of the last attempt. */
  readonly retryAfterMs: number;
}

/** The keeper's state: each kind holds only its own data (STYLE.md §2). */
type State =
  | { readonly kind: 'idle' }
  | { readonly kind: 'fresh' }
  | { readonly kind: 'refreshing'; readonly episode: Episode | undefined; readonly flight: Promise<void> }
  | { readonly kind: 'backoff'; readonly episode: Episode; readonly nextAttemptAt: number }
  | { readonly kind: 'unauthenticated'; readonly reason: string; readonly episode: Episode | undefined }
  | { readonly kind: 'stopped' };

/**
 * The token keeper (DESIGN §3): keeps one credential's access token fresh,
 * rides through transient failures on two retry tiers, and stops only on the
 * OAuth server's verdict or after the ceiling.
 *
 * `getToken()` is the hot path: with a valid cached token it returns a
 * pre-resolved promise without I/O or awaiting. Without one, the request
 * becomes the *demand* trigger and waits a bounded time for that attempt.
 */
export class TokenKeeper {
  readonly #clock: Clock;
  readonly #config: KeeperConfig;
  readonly #options: KeeperOptions;
  readonly #random: () => number;
  readonly #listeners = new Set<(event: KeeperEvent) => void>();

  #state: State = { kind: 'idle' };
  #held: HeldToken | undefined;
  #status: KeeperStatus = 'running';
  #statusReason = 'started';
  #timer: TimerHandle | undefined;
  /** Aborts the attempt in flight; stop() and setTokens() use it, and the attempt then ends quietly. */
  #attemptAbort: AbortController | undefined;
  /** End of the last attempt on both time lines, so that gaps survive sleep and clock jumps. */
  #lastAttempt: { readonly wall: number; readonly mono: number } | undefined;
  #hintGiven = false;

  constructor(options: KeeperOptions) {
    this.#options = options;
    this.#clock = options.clock;
    this.#config = options.config;
    this.#random = options.random ?? Math.random;
  }

  /** The state machine's current kind. */
  get state(): KeeperStateKind {
    return this.#state.kind;
  }

  /** The status as last reported to the sink. */
  get status(): KeeperStatus {
    return this.#status;
  }

  /** Subscribes to events; returns a disposable. */
  on(listener: (event: KeeperEvent) => void): { dispose(): void } {
    this.#listeners.add(listener);
    return { dispose: () => this.#listeners.delete(listener) };
  }

  /**
   * Starts keeping `initial`, or the stored token set when none is given.
   * A token already due (or expired) is refreshed at once (`startup`).
   */
  async start(initial?: TokenSet): Promise<void> {
    if (this.#state.kind !== 'idle')
      throw new TetherError('ERR_KEEPER_STATE', `keeper cannot start from state ${this.#state.kind}`);
    const tokens = initial ?? (await this.#options.store.load());
    if (this.state !== 'idle') return; // stopped while loading
    if (tokens === undefined) {
      this.#transition({ kind: 'unauthenticated', reason: 'no stored credentials', episode: undefined });
      return;
    }
    this.#accept(tokens, 'startup');
  }

  /** Stops quietly: timers cleared, the attempt in flight aborted, no status written. */
  stop(): void {
    if (this.#state.kind === 'stopped') return;
    this.#attemptAbort?.abort();
    this.#held = undefined;
    this.#transition({ kind: 'stopped' });
  }

  /**
   * Puts new credentials in place (after `tether login`), from any state but
   * stopped: a failure episode or an `unauthenticated` verdict is over.
   */
  setTokens(tokens: TokenSet): void {
    if (this.#state.kind === 'stopped') throw new TetherError('ERR_KEEPER_STOPPED', 'the keeper has been stopped');
    this.#attemptAbort?.abort();
    this.#accept(tokens, 'new credentials');
  }

  /** The cached token if it is valid for sending, without side effects. */
  peekToken(): string | undefined {
    const held = this.#held;
    return held !== undefined && this.#clock.now() < held.sendExpiresAt ? held.set.accessToken : undefined;
  }

  /**
   * The access token to send. Hot path: no I/O and no await while the cached
   * token is valid. Otherwise a demand attempt (if its gap allows) for which
   * the caller waits at most the demand budget; rejects with
   * {@link TokenUnavailableError}.
   */
  getToken(): Promise<string> {
    const held = this.#held;
    if (held !== undefined && this.#clock.now() < held.sendExpiresAt) return held.promise;
    return this.#demand();
  }

  /**
   * A trigger from outside: a network change, a wake from sleep, or a manual
   * `tether refresh`. Starts an attempt at once if the minimum gap and
   * `Retry-After` allow it, else moves the next attempt to the earliest
   * allowed moment. Resolves when the attempt it started (if any) ends.
   */
  trigger(trigger: 'network' | 'wake' | 'manual'): Promise<void> {
    if (trigger !== 'manual') this.#options.resetTransport?.();
    const state = this.#state;
    switch (state.kind) {
      case 'refreshing':
        return state.flight;
      case 'fresh':
        if (trigger === 'manual' || this.#clock.now() >= (this.#held?.refreshAt ?? Infinity))
          return this.#startAttempt(trigger);
        this.#arm(); // timers stand still during sleep: re-aim at the wall-clock refresh point
        return Promise.resolve();
      case 'backoff': {
        const gap = trigger === 'manual' ? 0 : this.#config.probeMinInterval;
        const wait = this.#waitBeforeAttempt(gap, state.episode);
        if (wait <= 0) return this.#startAttempt(trigger);
        const earliest = this.#clock.monotonic() + wait;
        if (earliest < state.nextAttemptAt) this.#transition({ ...state, nextAttemptAt: earliest });
        return Promise.resolve();
      }
      case 'idle':
      case 'unauthenticated':
      case 'stopped':
        return Promise.resolve();
    }
  }

  /** A point-in-time view for status files and `--json`. */
  snapshot(): KeeperSnapshot {
    const state = this.#state;
    const episode = 'episode' in state ? state.episode : undefined;
    const nextAttemptAt = state.kind === 'backoff' ? this.#toWall(state.nextAttemptAt) : undefined;
    return {
      state: state.kind,
      status: this.#status,
      statusReason: this.#statusReason,
      refresh: {
        state: this.#health(),
        ...(episode && {
          failingSince: episode.failingSince,
          lastError: `${episode.last.reason}: ${episode.last.detail}`,
          lastErrorClass: episode.last.class,
        }),
        ...(nextAttemptAt !== undefined && { nextAttemptAt }),
      },
      token: this.#held?.set.expiresAt !== undefined ? { expiresAt: this.#held.set.expiresAt } : {},
    };
  }

  /** Same as {@link snapshot}, for `JSON.stringify`. */
  toJSON(): KeeperSnapshot {
    return this.snapshot();
  }

  // ---- demand ---------------------------------------------------------------

  async #demand(): Promise<string> {
    const state = this.#state;
    switch (state.kind) {
      case 'idle':
        throw new TokenUnavailableError('ERR_KEEPER_NOT_STARTED', 'the token keeper has not been started');
      case 'stopped':
        throw new TokenUnavailableError('ERR_KEEPER_STOPPED', 'the token keeper has been stopped');
      case 'unauthenticated':
        throw this.#unauthenticatedError(state.reason);
      case 'refreshing':
        return this.#awaitFlight(state.flight);
      case 'fresh':
      case 'backoff': {
        const episode = state.kind === 'backoff' ? state.episode : undefined;
        const gap = episode
          ? demandGap(this.#clock.now() - episode.failingSince, this.#config)
          : this.#config.probeMinInterval;
        const wait = this.#waitBeforeAttempt(gap, episode);
        if (wait <= 0) return this.#awaitFlight(this.#startAttempt('demand'));
        const untilScheduled = state.kind === 'backoff' ? state.nextAttemptAt - this.#clock.monotonic() : wait;
        throw this.#retryingError(Math.min(wait, untilScheduled));
      }
    }
  }

  /** Waits for an attempt, but no longer than the demand budget, then answers from what it left. */
  async #awaitFlight(flight: Promise<void>): Promise<string> {
    let timer: TimerHandle | undefined;
    const budget = new Promise<void>((resolve) => {
      timer = this.#clock.setTimeout(resolve, this.#config.demandWait);
    });
    await Promise.race([flight, budget]);
    if (timer !== undefined) this.#clock.clearTimeout(timer);
    const token = this.peekToken();
    if (token !== undefined) return token;
    const state = this.#state;
    switch (state.kind) {
      case 'unauthenticated':
        throw this.#unauthenticatedError(state.reason);
      case 'stopped':
      case 'idle':
        throw new TokenUnavailableError('ERR_KEEPER_STOPPED', 'the token keeper has been stopped');
      case 'backoff':
        throw this.#retryingError(state.nextAttemptAt - this.#clock.monotonic());
      case 'refreshing':
      case 'fresh':
        throw this.#retryingError(this.#config.probeMinInterval);
    }
  }

  #retryingError(waitMs: number): TokenUnavailableError {
    const seconds = Math.max(1, Math.ceil(waitMs / 1000));
    return new TokenUnavailableError(
      'ERR_AUTH_RETRYING',
      `no valid access token yet; the next refresh attempt is in ${seconds}s`,
      seconds,
    );
  }

  #unauthenticatedError(reason: string): TokenUnavailableError {
    const login = `tether login ${this.#options.name ?? 'NAME'}`;
    return new TokenUnavailableError('ERR_UNAUTHENTICATED', `not authenticated (${reason}); run \`${login}\``);
  }

  /**
   * How long until an attempt may start: at least `gap` since the last
   * attempt, and at least the `Retry-After` of its response. Elapsed time is
   * the larger of wall and monotonic time, so that neither a sleep (monotonic
   * stands still) nor a wall-clock step backwards holds an attempt back.
   */
  #waitBeforeAttempt(gap: number, episode: Episode | undefined): number {
    const last = this.#lastAttempt;
    if (last === undefined) return 0;
    const elapsed = Math.max(this.#clock.now() - last.wall, this.#clock.monotonic() - last.mono);
    return Math.max(gap, episode?.retryAfterMs ?? 0) - elapsed;
  }

  // ---- attempts -------------------------------------------------------------

  /** Starts an attempt unless one is in flight (single flight). */
  #startAttempt(trigger: Trigger): Promise<void> {
    const state = this.#state;
    if (state.kind === 'refreshing') return state.flight;
    const episode = state.kind === 'backoff' ? state.episode : undefined;
    const controller = new AbortController();
    this.#attemptAbort = controller;
    const flight = Promise.resolve().then(() => this.#attempt(trigger, episode, controller.signal));
    this.#transition({ kind: 'refreshing', episode, flight });
    return flight;
  }

  async #attempt(trigger: Trigger, episode: Episode | undefined, signal: AbortSignal): Promise<void> {
    // Stopped or superseded (new credentials) while awaiting: end quietly. A
    // function, because TypeScript keeps a property narrowed across awaits.
    const superseded = (): boolean => signal.aborted;
    const started = this.#clock.monotonic();
    let refreshToken = this.#held?.set.refreshToken;
    let adoptionTried = false;
    for (;;) {
      if (refreshToken === undefined) {
        const verdict: Classification = {
          class: 'permanent',
          reason: 'oauth_error',
          detail: 'no refresh token was issued',
        };
        this.#finishAttempt();
        this.#emit({
          type: 'attempt',
          at: this.#clock.now(),
          trigger,
          outcome: 'permanent',
          durationMs: 0,
          reason: 'no_refresh_token',
          detail: verdict.detail,
        });
        this.#giveUp('no refresh token: the server issued none, so the session cannot be renewed', episode, verdict);
        return;
      }
      const sentAt = this.#clock.now();
      const result = await this.#options
        .refresh(refreshToken, signal)
        .catch((error: unknown) => ({ ok: false as const, failure: networkFailureFrom(error) }));
      if (superseded()) return;
      if (result.ok) {
        await this.#succeed(trigger, started, sentAt, refreshToken, result.tokens, signal);
        return;
      }
      const verdict = classifyFailure(result.failure, this.#clock.now());
      if (verdict.oauthError === 'invalid_grant' && !adoptionTried) {
        // Another process may have rotated the refresh token (DESIGN §3.2 point 2).
        adoptionTried = true;
        const stored = await this.#options.store.load().catch(() => undefined);
        if (superseded()) return;
        if (stored?.refreshToken !== undefined && stored.refreshToken !== refreshToken) {
          this.#emit({
            type: 'adopted',
            at: this.#clock.now(),
            detail: 'another process had already rotated the refresh token',
          });
          const times = tokenTimes(stored.issuedAt, stored.expiresAt, this.#random());
          if (this.#clock.now() < times.refreshAt) {
            this.#finishAttempt();
            this.#emit({
              type: 'attempt',
              at: this.#clock.now(),
              trigger,
              outcome: 'success',
              durationMs: this.#clock.monotonic() - started,
            });
            this.#accept(stored, 'adopted a token refreshed by another process');
            return;
          }
          refreshToken = stored.refreshToken;
          continue;
        }
      }
      this.#fail(trigger, started, verdict, episode);
      return;
    }
  }

  async #succeed(
    trigger: Trigger,
    started: number,
    sentAt: number,
    usedRefreshToken: string,
    response: TokenResponse,
    signal: AbortSignal,
  ): Promise<void> {
    const tokens: TokenSet = {
      accessToken: response.accessToken,
      refreshToken: response.refreshToken ?? usedRefreshToken,
      issuedAt: sentAt,
      ...(response.expiresIn !== undefined && { expiresAt: sentAt + response.expiresIn * 1000 }),
      ...(response.scope !== undefined && { scope: response.scope }),
      ...(response.tokenType !== undefined && { tokenType: response.tokenType }),
    };
    // Persisted before it is used: a rotated refresh token that only lived in
    // memory would be lost with the process, and the old one is now spent.
    try {
      await this.#options.store.save(tokens);
    } catch (error) {
      // The in-memory token keeps serving; the failure is reported, not fatal.
      this.#emit({ type: 'persist_failed', at: this.#clock.now(), detail: errorCode(error) });
    }
    if (signal.aborted) return;
    this.#finishAttempt();
    this.#emit({
      type: 'attempt',
      at: this.#clock.now(),
      trigger,
      outcome: 'success',
      durationMs: this.#clock.monotonic() - started,
    });
    this.#accept(tokens, 'token refreshed');
  }

  #fail(trigger: Trigger, started: number, verdict: Classification, prior: Episode | undefined): void {
    this.#finishAttempt();
    const now = this.#clock.now();
    const attempt = {
      type: 'attempt',
      at: now,
      trigger,
      durationMs: this.#clock.monotonic() - started,
      reason: verdict.reason,
      detail: verdict.detail,
    } as const;
    const episode: Episode = {
      failingSince: prior?.failingSince ?? now,
      failures: (prior?.failures ?? 0) + 1,
      tier: prior?.tier ?? 'short',
      slowSteps: prior?.slowSteps ?? 0,
      last: verdict,
      retryAfterMs: verdict.retryAfterMs ?? 0,
    };
    if (verdict.class === 'permanent') {
      this.#emit({ ...attempt, outcome: 'permanent' });
      this.#giveUp(`the authorization server refused the refresh (${verdict.detail})`, episode, verdict);
      return;
    }
    const ceiling = this.#config.ceiling;
    // Enforced only here, at a failed attempt: after a long sleep the keeper
    // always tries once more before giving up.
    if (ceiling > 0 && now - episode.failingSince > ceiling) {
      this.#emit({ ...attempt, outcome: 'transient' });
      this.#giveUp(
        `no successful refresh for ${formatDuration(now - episode.failingSince)}, past the ceiling of ${formatDuration(ceiling)} (TETHER_TOKEN_AUTH_RETRYING_MAX_ELAPSED); last error: ${verdict.reason} ${verdict.detail}`,
        episode,
        undefined,
      );
      return;
    }
    const next = this.#schedule(episode, now);
    this.#emit({ ...attempt, outcome: 'transient', nextAttemptAt: now + next.delay });
    this.#transition({ kind: 'backoff', episode: next.episode, nextAttemptAt: this.#clock.monotonic() + next.delay });
  }

  /**
   * The delay before the next attempt after a transient failure: the short
   * tier while it lasts, then the slow tier; never less than `Retry-After`;
   * and while the token is valid, never past the last moment before it
   * expires for sending (§3.2 point 4).
   */
  #schedule(episode: Episode, now: number): { episode: Episode; delay: number } {
    let next = episode;
    let delay: number | undefined;
    if (episode.tier === 'short') {
      const candidate = shortTierDelay(episode.failures - 1, this.#config, this.#random());
      if (shortTierAllows(episode.failures, now - episode.failingSince, candidate, this.#config)) delay = candidate;
      else next = { ...episode, tier: 'slow' };
    }
    if (delay === undefined) {
      delay = slowTierDelay(next.slowSteps, this.#config, this.#random());
      next = { ...next, slowSteps: next.slowSteps + 1 };
    }
    const held = this.#held;
    if (held !== undefined && held.sendExpiresAt !== Infinity) {
      const lastChance = held.sendExpiresAt - preExpiryLead(held.set.issuedAt, held.sendExpiresAt);
      if (now < lastChance && now + delay > lastChance) delay = lastChance - now;
    }
    return { episode: next, delay: Math.max(delay, episode.retryAfterMs) };
  }

  #finishAttempt(): void {
    this.#lastAttempt = { wall: this.#clock.now(), mono: this.#clock.monotonic() };
  }

  #giveUp(reason: string, episode: Episode | undefined, verdict: Classification | undefined): void {
    if (
      verdict?.reason === 'oauth_error' &&
      verdict.oauthError !== undefined &&
      this.#options.dynamicClient === true &&
      !this.#hintGiven
    ) {
      this.#hintGiven = true;
      const name = this.#options.name ?? 'NAME';
      this.#emit({
        type: 'hint',
        at: this.#clock.now(),
        code: 'stale_registration',
        message: `the authorization server rejected this dynamically registered client (${verdict.detail}); its cached registration may be stale: run \`tether login ${name} --reregister\``,
      });
    }
    this.#held = undefined;
    this.#transition({ kind: 'unauthenticated', reason, episode });
  }

  /** Takes a token set into use: fresh if it is not yet due, else refreshed at once. */
  #accept(tokens: TokenSet, reason: string): void {
    const times = tokenTimes(tokens.issuedAt, tokens.expiresAt, this.#random());
    this.#held = { set: tokens, ...times, promise: Promise.resolve(tokens.accessToken) };
    this.#transition({ kind: 'fresh' }, reason);
    if (this.#clock.now() >= times.refreshAt) void this.#startAttempt('startup');
  }

  // ---- transitions, timers, status ------------------------------------------

  /** The one place where the state changes: event, timer and status follow from the new state. */
  #transition(next: State, reason?: string): void {
    const from = this.#state.kind;
    this.#state = next;
    if (from !== next.kind) this.#emit({ type: 'state', at: this.#clock.now(), from, to: next.kind });
    this.#arm();
    this.#updateStatus(reason);
  }

  /** Arms the one timer for what the state waits for next. */
  #arm(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    const due = this.#nextWake();
    if (due === undefined) return;
    const delay = Math.max(0, due - this.#clock.monotonic());
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#onTimer();
    }, delay);
  }

  /** Monotonic time of the next thing to do: an attempt, or the moment the status must turn. */
  #nextWake(): number | undefined {
    const state = this.#state;
    const held = this.#held;
    if (state.kind === 'fresh') return held && held.refreshAt !== Infinity ? this.#toMono(held.refreshAt) : undefined;
    if (state.kind !== 'backoff') return undefined;
    const turns = state.episode.tier === 'slow' && held !== undefined && this.#clock.now() < held.sendExpiresAt;
    return turns ? Math.min(state.nextAttemptAt, this.#toMono(held.sendExpiresAt)) : state.nextAttemptAt;
  }

  #onTimer(): void {
    const state = this.#state;
    // A timer may fire before what it waits for (delays are capped): then it is re-armed.
    const due =
      (state.kind === 'fresh' && this.#clock.now() >= (this.#held?.refreshAt ?? Infinity)) ||
      (state.kind === 'backoff' && this.#clock.monotonic() >= state.nextAttemptAt);
    if (due) void this.#startAttempt('schedule');
    else {
      this.#updateStatus();
      this.#arm();
    }
  }

  /** Reports the status derived from the state, if it changed (DESIGN §3.2 point 5). */
  #updateStatus(reason?: string): void {
    const state = this.#state;
    if (state.kind === 'stopped' || state.kind === 'idle') return; // quiet: no status on stop
    let status: KeeperStatus = 'running';
    let why = reason ?? 'token valid';
    if (state.kind === 'unauthenticated') {
      status = 'unauthenticated';
      why = state.reason;
    } else if (this.#health() === 'failing' && 'episode' in state && state.episode?.tier === 'slow') {
      status = 'auth_retrying';
      why = `no valid token; refresh failing since ${new Date(state.episode.failingSince).toISOString()}: ${state.episode.last.reason} ${state.episode.last.detail}`;
    }
    if (status === this.#status) return;
    this.#status = status;
    this.#statusReason = why;
    this.#emit({ type: 'status', at: this.#clock.now(), status, reason: why });
    try {
      this.#options.status(status, why);
    } catch (error) {
      // The sink writes a file; its failure must not stop the keeper, only be reported.
      this.#emit({ type: 'persist_failed', at: this.#clock.now(), detail: `status: ${errorCode(error)}` });
    }
  }

  #health(): RefreshHealth {
    const state = this.#state;
    if (state.kind === 'unauthenticated') return 'given_up';
    const episode = 'episode' in state ? state.episode : undefined;
    if (episode === undefined) return 'ok';
    return this.peekToken() !== undefined ? 'degraded' : 'failing';
  }

  #toMono(wall: number): number {
    return this.#clock.monotonic() + (wall - this.#clock.now());
  }

  #toWall(mono: number): number {
    return this.#clock.now() + (mono - this.#clock.monotonic());
  }

  #emit(event: KeeperEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // a faulty listener must not break the keeper
      }
    }
  }
}

/** A refresh function that threw instead of reporting: treated as a network failure. */
function networkFailureFrom(error: unknown): { kind: 'network'; code?: string; message?: string } {
  const code = errorCode(error);
  return { kind: 'network', code, ...(error instanceof Error && { message: error.message }) };
}

function errorCode(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string')
    return error.code;
  return error instanceof Error ? error.name : 'UNKNOWN';
}
