import type { Clock, TimerHandle } from '../clock/clock.js';
import type { KeeperConfig } from '../config/keeper-config.js';
import { formatDuration } from '../config/duration.js';
import { TetherError } from '../errors.js';
import { demandGap, saveRetryDelay, shortTierAllows, shortTierDelay, slowTierDelay } from './backoff.js';
import { classifyFailure } from './classify.js';
import type { Classification } from './failure.js';
import { sharedPacer, type CatchUpPacer } from './pacer.js';
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
  /** Served while the wall clock is before this: its expiry for sending, or the moment it was distrusted. */
  readonly sendExpiresAt: number;
  readonly promise: Promise<string>;
  /**
   * The resource server rejected it while refreshes were failing: it is not
   * served until `until`, then trusted again until `expiresAt` (its real
   * expiry for sending); `times` counts the rejections, each doubling the next
   * distrust.
   */
  readonly distrust?: { readonly until: number; readonly times: number; readonly expiresAt: number };
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

/** What one exchange with the token endpoint (under the lock) came to. */
type Outcome =
  | { readonly kind: 'refreshed' | 'adopted'; readonly tokens: TokenSet }
  | { readonly kind: 'no_refresh_token' }
  | { readonly kind: 'failure'; readonly verdict: Classification };

/** The fields every attempt event carries. */
interface AttemptFields {
  readonly type: 'attempt';
  readonly at: number;
  readonly trigger: Trigger;
  readonly durationMs: number;
}

/** Why an attempt was aborted (the signal's reason): only a deadline makes it a failure. */
const STOPPED = 'stopped';
const SUPERSEDED = 'superseded';
const DEADLINE = 'deadline';

/** Longest an attempt may take, lock wait and save included (the refresh itself times out at 15 s). */
export const ATTEMPT_DEADLINE_MS = 60_000;

const ATTEMPT_TIMEOUT: Classification = {
  class: 'transient',
  reason: 'attempt_timeout',
  detail: `no outcome within ${String(ATTEMPT_DEADLINE_MS / 1000)}s (lock, token endpoint or store)`,
};
const STORE_UNREADABLE: Classification = {
  class: 'transient',
  reason: 'store_unavailable',
  detail: 'the credential store could not be read; nothing was sent',
};
const BAD_EXPIRES_IN: Classification = {
  class: 'transient',
  reason: 'invalid_token_response',
  detail: 'expires_in is not a non-negative number',
};

/** Floor of the gap between a success and a refresh of the token it brought. */
const MIN_REFRESH_GAP_MS = 1000;

/** Triggers that reach every keeper of a process at the same moment: their attempts are paced. */
type CatchUpTrigger = Extract<Trigger, 'startup' | 'network' | 'wake'>;

function isCatchUp(trigger: Trigger): trigger is CatchUpTrigger {
  return trigger === 'startup' || trigger === 'network' || trigger === 'wake';
}

/**
 * The keeper's state: each kind holds only its own data (STYLE.md §2).
 * `catchUp`: a catch-up attempt is wanted and waits in the pacer's line, with
 * the trigger that asked for it (reported when it starts).
 */
type State =
  | { readonly kind: 'idle' }
  | { readonly kind: 'fresh'; readonly catchUp?: CatchUpTrigger }
  | { readonly kind: 'refreshing'; readonly episode: Episode | undefined; readonly flight: Promise<void> }
  | {
      readonly kind: 'backoff';
      readonly episode: Episode;
      readonly nextAttemptAt: number;
      readonly catchUp?: CatchUpTrigger;
    }
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
 *
 * Catch-up attempts — on start with a stored token already due, on a wake,
 * on a network change — come to every keeper of a process at the same
 * moment, so the keepers sharing a clock share a {@link CatchUpPacer} that
 * admits them at `max(5, 1% of the keepers)` per second. A lone keeper (the
 * CLI's one workload per process) still tries at once, as DESIGN §3.2 point 7
 * says; 10,000 keepers spread their catch-up over about 100 s. A keeper not
 * admitted waits in line (keepers with no valid token first) and starts its
 * attempt when its turn comes, reported with the trigger that asked for it;
 * while it waits with no valid token its status is `auth_retrying`, with the
 * estimated turn as the next attempt. Urgent attempts are never paced: a
 * request waiting for a token (demand), `tether refresh`, a token the
 * resource server rejected.
 *
 * A save that fails (full disk, read-only directory) does not stop the
 * keeper: the token is served from memory, and the save is retried on a
 * backoff, and once more by `stop()`, until one lands. Every save takes the
 * store's lock first and then its place in the keeper's queue of saves —
 * never the other way round, or a save waiting for the lock and a retry
 * holding it would wait for each other.
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
  /** Aborts the attempt in flight (released when it ends); stop() and setTokens() use it, and the attempt then ends quietly. */
  #attemptAbort: AbortController | undefined;
  readonly #pacer: CatchUpPacer;
  /** End of the last attempt on both time lines, so that gaps survive sleep and clock jumps. */
  #lastAttempt: { readonly wall: number; readonly mono: number } | undefined;
  #hintGiven = false;
  /** The last save in progress: saves are chained so they land in order. */
  #saving: Promise<void> = Promise.resolve();
  /**
   * Generations of the token sets handed to be saved, in the order they were
   * made, and the newest one written so far: a set made before one already
   * written (new credentials that waited for the lock while an attempt
   * refreshed them) is not written over it.
   */
  #generations = 0;
  #written = 0;
  /**
   * The newest token set whose save failed, and the failed saves so far. The
   * store still holds an older set — after a rotation, with a spent refresh
   * token — so it is saved again until a save lands.
   */
  #unsaved: { readonly tokens: TokenSet; readonly failures: number; readonly generation: number } | undefined;
  #saveRetry: TimerHandle | undefined;
  /** Counts the credentials put in place by setTokens(): an exchange begun on older ones does not save its result. */
  #credential = 0;
  /**
   * The access token of the set the store last held as far as this keeper
   * knows (what it started from, saved, or adopted). A stored set that differs
   * from it was written by someone else — no clocks compared, so neither a
   * clock step nor another machine's clock can make a newer set look older —
   * while a save of ours that failed leaves it in place, so the older set
   * still on disk is not mistaken for a rotation.
   */
  #lastKnownStored: string | undefined;
  /**
   * Access tokens of this keeper's sets whose saves failed since one last
   * landed (or a retry last read which one the store holds). A failed save
   * may have written after all (a rename that landed before a failed fsync),
   * so the store holding one of them is no sign of another process: each is
   * older than the set held.
   */
  #failedSaves: string[] | undefined;

  constructor(options: KeeperOptions) {
    this.#options = options;
    this.#clock = options.clock;
    this.#config = options.config;
    this.#random = options.random ?? Math.random;
    this.#pacer = sharedPacer(options.clock);
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
    this.#pacer.join(this); // only now: a start that failed to load must not count for ever
    if (tokens === undefined) {
      this.#transition({ kind: 'unauthenticated', reason: 'no stored credentials', episode: undefined });
      return;
    }
    this.#lastKnownStored = tokens.accessToken;
    this.#accept(tokens, 'started', 'startup');
  }

  /**
   * Stops quietly: timers cleared, the attempt in flight aborted, no status
   * written. Resolves once a save still in progress has landed (a refresh the
   * server already answered is saved: its old refresh token is spent), so
   * that deleting the credentials afterwards is final — and once a save that
   * failed earlier has been tried again: memory is about to lose the only
   * copy of its refresh token.
   */
  stop(): Promise<void> {
    if (this.#state.kind !== 'stopped') {
      this.#attemptAbort?.abort(STOPPED);
      this.#held = undefined;
      this.#pacer.leave(this);
      this.#transition({ kind: 'stopped' });
      this.#armSaveRetry(); // cleared: the retry below takes its place
    }
    return this.#saving.then(() => this.#retrySave());
  }

  /**
   * Puts new credentials in place (after `tether login`), from any state but
   * stopped: a failure episode or an `unauthenticated` verdict is over.
   */
  setTokens(tokens: TokenSet): void {
    if (this.#state.kind === 'stopped') throw new TetherError('ERR_KEEPER_STOPPED', 'the keeper has been stopped');
    this.#attemptAbort?.abort(SUPERSEDED);
    this.#credential++;
    // Under the lock, then after any save of the old credential still in progress, so the old one cannot land last.
    const generation = ++this.#generations;
    this.#locked(() => this.#persist(tokens, generation)).catch((error: unknown) => {
      this.#saveFailed(tokens, error, generation); // the lock could not be had
    });
    this.#accept(tokens, 'new credentials', 'manual');
  }

  /** The cached token if it is valid for sending, without side effects. */
  peekToken(): string | undefined {
    this.#trustAgain();
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
    this.#trustAgain();
    const held = this.#held;
    if (held !== undefined && this.#clock.now() < held.sendExpiresAt) return held.promise;
    return this.#demand();
  }

  /**
   * A trigger from outside: a network change, a wake from sleep, or a manual
   * `tether refresh`. Starts an attempt at once if the minimum gap and
   * `Retry-After` allow it — a network change or a wake when the pacer admits
   * it, which is at once unless many keepers share the process, else when its
   * turn comes (a keeper already in line keeps its place; one in backoff whose
   * own attempt comes sooner does not queue) — else moves the next attempt to
   * the earliest allowed moment. Resolves when the attempt it started (if
   * any) ends.
   */
  trigger(trigger: 'network' | 'wake' | 'manual'): Promise<void> {
    if (trigger !== 'manual') this.#options.resetTransport?.();
    const state = this.#state;
    switch (state.kind) {
      case 'refreshing':
        return state.flight;
      case 'fresh':
        if (trigger === 'manual' || this.#refreshDueIn() <= 0) return this.#startAttempt(trigger);
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

  /**
   * The resource server rejected `token` (`401 invalid_token`): one forced
   * refresh, shared by every request that saw the rejection (single flight),
   * at most one per probe minimum so that a server rejecting every token
   * cannot drive a loop. A token already replaced is not refreshed again; a
   * keeper that is already failing keeps its backoff. Resolves when the
   * attempt (if any) ends; `getToken()` then answers from it.
   *
   * While refreshes fail, a rejected token is not served for a while: every
   * request would only earn another `401`. The keeper is then `auth_retrying`,
   * and requests get the seconds until the next attempt (and may trigger
   * one). The token is trusted again after the probe minimum — one stray
   * `401` must not take a valid token out of service for a whole outage —
   * and each further rejection doubles the time, up to the tick interval.
   */
  rejected(token: string): Promise<void> {
    const state = this.#state;
    const distrust = (): void => {
      this.#distrust(token);
    };
    if (state.kind === 'refreshing') return state.flight.then(distrust);
    if (this.#held?.set.accessToken !== token) return Promise.resolve();
    if (state.kind === 'backoff') this.#distrust(token);
    else if (state.kind === 'fresh' && this.#waitBeforeAttempt(this.#config.probeMinInterval, undefined) <= 0)
      return this.#startAttempt('rejected').then(distrust);
    return Promise.resolve();
  }

  /** A point-in-time view for status files and `--json`. */
  snapshot(): KeeperSnapshot {
    const state = this.#state;
    const episode = 'episode' in state ? state.episode : undefined;
    const next = this.#nextAttempt();
    const nextAttemptAt = next === undefined ? undefined : this.#toWall(next);
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

  /**
   * Monotonic time of the next attempt, to report it: while in backoff, or
   * while no valid token is left — the scheduled attempt, or the estimated turn
   * of a catch-up attempt waiting in the pacer's line, whichever comes first.
   */
  #nextAttempt(): number | undefined {
    const state = this.#state;
    const mono = this.#clock.monotonic();
    const turn = catchUpOf(state) === undefined ? undefined : this.#pacer.estimate(this);
    const inLine = turn === undefined ? Infinity : mono + turn;
    if (state.kind === 'backoff') return Math.min(state.nextAttemptAt, inLine);
    if (state.kind !== 'fresh' || this.#health() !== 'failing') return undefined;
    return Math.min(inLine, state.catchUp === undefined ? mono + this.#refreshDueIn() : Infinity);
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
        // The episode is measured up to the last attempt, so the gap is fixed
        // until the next one and a client told to come back in N seconds
        // (Retry-After) finds the gap passed when it does.
        const gap = episode
          ? demandGap((this.#lastAttempt?.wall ?? this.#clock.now()) - episode.failingSince, this.#config)
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

  /**
   * Starts an attempt unless one is in flight (single flight). A catch-up
   * attempt starts only when the pacer admits it; until then it waits in
   * line, and its timer asks again when its turn comes.
   */
  #startAttempt(trigger: Trigger): Promise<void> {
    const state = this.#state;
    if (state.kind === 'refreshing') return state.flight;
    if (isCatchUp(trigger) && !this.#admitted(trigger)) return Promise.resolve();
    const episode = state.kind === 'backoff' ? state.episode : undefined;
    const controller = new AbortController();
    this.#attemptAbort = controller;
    const flight = Promise.resolve().then(() => this.#attempt(trigger, episode, controller));
    this.#transition({ kind: 'refreshing', episode, flight });
    return flight;
  }

  /**
   * Asks the pacer to admit a catch-up attempt now. If it does not, the state
   * records the wait (keeping the trigger that first asked) — unless the
   * keeper, in backoff, would get its turn no sooner than its own next
   * attempt: then it does not take a place in line.
   */
  #admitted(trigger: CatchUpTrigger): boolean {
    const state = this.#state;
    if (state.kind !== 'fresh' && state.kind !== 'backoff') return true;
    const urgent = this.peekToken() === undefined;
    const ownAttempt = state.kind === 'backoff' ? state.nextAttemptAt : Infinity;
    const onTurn = (): void => {
      this.#arm();
    };
    if (this.#pacer.admit(this, urgent, onTurn, ownAttempt) <= 0) return true;
    if (this.#pacer.turnIn(this) === undefined) return false; // its own attempt comes first
    this.#transition({ ...state, catchUp: state.catchUp ?? trigger });
    return false;
  }

  /**
   * One attempt: the exchange under the credential's lock, then its outcome
   * applied. A deadline bounds it (a lock or a save that never returns must
   * not stall the keeper); stop() and setTokens() end it at once, quietly.
   */
  async #attempt(trigger: Trigger, episode: Episode | undefined, controller: AbortController): Promise<void> {
    const { signal } = controller;
    const credential = this.#credential;
    const started = this.#clock.monotonic();
    const deadline = this.#clock.setTimeout(() => {
      controller.abort(DEADLINE);
    }, ATTEMPT_DEADLINE_MS);
    const cutOffOutcome: Outcome = { kind: 'failure', verdict: ATTEMPT_TIMEOUT };
    let cutOff: (outcome: Outcome) => void = () => undefined;
    const cut = new Promise<Outcome>((resolve) => (cutOff = resolve));
    const onAbort = (): void => {
      cutOff(cutOffOutcome);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const store = this.#options.store;
    const exchange = (): Promise<Outcome> => this.#exchange(signal);
    const ran = store.exclusive ? store.exclusive(exchange, signal) : exchange();
    let outcome: Outcome;
    try {
      outcome = await Promise.race([ran, cut]);
    } catch (error) {
      // The lock could not be had (or a store call threw): no verdict on the credential.
      outcome = { kind: 'failure', verdict: classifyFailure(networkFailureFrom(error), this.#clock.now()) };
    } finally {
      // Released now, not kept until the next attempt: ~1.6 KB per keeper (issue 5: 10,000 keepers).
      this.#clock.clearTimeout(deadline);
      signal.removeEventListener('abort', onAbort);
      if (this.#attemptAbort === controller) this.#attemptAbort = undefined;
    }
    if (aborted(signal) && signal.reason !== DEADLINE) return; // stopped or superseded: quietly
    if (outcome === cutOffOutcome) {
      // Given up at its deadline, the exchange may still be answered: then what it saved is what to hold.
      void ran.then(
        (late) => {
          this.#lateOutcome(late, credential);
        },
        () => undefined,
      );
    }
    this.#lastAttempt = { wall: this.#clock.now(), mono: this.#clock.monotonic() };
    const at = this.#clock.now();
    const durationMs = this.#clock.monotonic() - started;
    switch (outcome.kind) {
      case 'refreshed':
      case 'adopted':
        this.#emit({ type: 'attempt', at, trigger, outcome: 'success', durationMs });
        this.#accept(
          outcome.tokens,
          outcome.kind === 'refreshed' ? 'token refreshed' : 'adopted a token refreshed by another process',
          'schedule',
        );
        return;
      case 'no_refresh_token': {
        const detail = 'no refresh token: the server issued none, so the session cannot be renewed';
        this.#emit({
          type: 'attempt',
          at,
          trigger,
          outcome: 'permanent',
          durationMs,
          reason: 'no_refresh_token',
          detail,
        });
        this.#giveUp(detail, episode, undefined);
        return;
      }
      case 'failure':
        this.#fail({ type: 'attempt', at, trigger, durationMs }, outcome.verdict, episode);
        return;
    }
  }

  /**
   * An exchange that went on after its attempt was given up at the deadline
   * (a slow lock, token endpoint or store) and was answered: the server has
   * spent the old refresh token, and the exchange saved the new set and took
   * it into use (see {@link TokenKeeper.#exchange}). Once the lock is let go,
   * the failure episode that the deadline began is over — unless another
   * attempt is already under way, which will use the new set.
   */
  #lateOutcome(late: Outcome, credential: number): void {
    if (late.kind !== 'refreshed' || credential !== this.#credential) return;
    const state = this.#state.kind;
    // Given up at the ceiling by this very attempt: the set it saved is good, and nothing else would take it up.
    const givenUp = state === 'unauthenticated' && this.#held === undefined;
    if (!givenUp && (state !== 'backoff' || this.#held?.set !== late.tokens)) return;
    this.#accept(late.tokens, 'a refresh given up at its deadline was answered after all', 'schedule');
  }

  /**
   * The DESIGN §5 protocol, run under the credential's lock when the store has
   * one: re-read → skip if another process already refreshed → refresh →
   * save. An `invalid_grant` is believed only after one more re-read: another
   * process without the lock may have rotated the refresh token (§3.2 point 2).
   * A store that cannot be read stops the exchange before anything is sent:
   * sending a refresh token that may be spent can make a server revoke the
   * whole token family.
   */
  async #exchange(signal: AbortSignal): Promise<Outcome> {
    const credential = this.#credential;
    let reread = await this.#adoptNewer(signal);
    for (;;) {
      if (reread === 'unreadable') return { kind: 'failure', verdict: STORE_UNREADABLE };
      const held = this.#held;
      if (aborted(signal) || held === undefined) return { kind: 'failure', verdict: ATTEMPT_TIMEOUT };
      if (reread === 'adopted' && this.#clock.now() < held.refreshAt) return { kind: 'adopted', tokens: held.set };
      const refreshToken = held.set.refreshToken;
      if (refreshToken === undefined) return { kind: 'no_refresh_token' };
      const sentAt = this.#clock.now();
      const result = await Promise.resolve()
        .then(() => this.#options.refresh(refreshToken, signal))
        .catch((error: unknown) => ({ ok: false as const, failure: networkFailureFrom(error) }));
      if (result.ok) {
        const tokens = tokenSetFrom(result.tokens, sentAt, refreshToken);
        if (tokens === undefined) return { kind: 'failure', verdict: BAD_EXPIRES_IN };
        // Persisted before it is used, and even when stopping or past the
        // deadline: the old refresh token is spent now. Only new credentials
        // (setTokens) make it moot.
        if (credential !== this.#credential) return { kind: 'refreshed', tokens };
        await this.#persist(tokens);
        // From now on only this set's refresh token is good, so it is held at once (under the lock,
        // before any other exchange can start) — also when the deadline is still to come: it may fire
        // before the lock is let go, and the attempt is then given up with the new set held.
        if (credential !== this.#credential || this.#held?.set !== held.set) return { kind: 'refreshed', tokens };
        this.#held = this.#hold(tokens);
        if (aborted(signal) && signal.reason === DEADLINE) {
          this.#emit({
            type: 'adopted',
            at: this.#clock.now(),
            detail: 'a refresh given up at its deadline was answered after all; its token set is in use',
          });
        }
        return { kind: 'refreshed', tokens };
      }
      if (aborted(signal)) return { kind: 'failure', verdict: ATTEMPT_TIMEOUT };
      const verdict = classifyFailure(result.failure, this.#clock.now());
      if (verdict.oauthError !== 'invalid_grant' || reread !== 'none') return { kind: 'failure', verdict };
      reread = await this.#adoptNewer(signal);
      if (reread === 'none') return { kind: 'failure', verdict };
    }
  }

  /**
   * Re-reads the store and takes a newer token set (another process refreshed
   * the credential) into use in place of the held one; the caller decides
   * whether it still needs refreshing. Never sends a spent refresh token again.
   */
  async #adoptNewer(signal: AbortSignal): Promise<'adopted' | 'none' | 'unreadable'> {
    let stored: TokenSet | undefined;
    try {
      stored = await this.#options.store.load();
    } catch {
      return 'unreadable';
    }
    const held = this.#held;
    if (aborted(signal) || stored === undefined || held === undefined) return 'none';
    // Changed since we last knew it, and not ours: a refresh made elsewhere (rotating or not).
    if (this.#isOwn(stored.accessToken) || stored.accessToken === held.set.accessToken) return 'none';
    this.#lastKnownStored = stored.accessToken;
    this.#failedSaves = undefined;
    this.#held = this.#hold(stored);
    // A set of ours whose save failed is older than this one: it must not overwrite it.
    this.#unsaved = undefined;
    this.#armSaveRetry();
    this.#emit({
      type: 'adopted',
      at: this.#clock.now(),
      detail: 'another process had already refreshed this credential',
    });
    return 'adopted';
  }

  /**
   * Saves one token set after any save still in progress, so that saves land
   * in order — unless a set made after it has been written meanwhile. The
   * caller holds the store's lock (see {@link TokenKeeper.#locked}).
   */
  #persist(tokens: TokenSet, generation = ++this.#generations): Promise<void> {
    return this.#enqueue(async () => {
      if (generation < this.#written) return; // older than a set already written: its refresh token is spent
      this.#written = generation;
      try {
        await this.#options.store.save(tokens);
      } catch (error) {
        this.#saveFailed(tokens, error, generation);
        return;
      }
      this.#saved(tokens);
    });
  }

  /**
   * Runs `save` under the store's lock, when it has one — taken before the
   * save queue, the one order every save takes. Only the store's own timeout
   * ends the wait: a stop does not make a save moot.
   */
  #locked(save: () => Promise<void>): Promise<void> {
    const store = this.#options.store;
    return store.exclusive ? store.exclusive(save, new AbortController().signal) : save();
  }

  /** Whether the store holding `accessToken` can be this keeper's doing (see {@link TokenKeeper.#failedSaves}). */
  #isOwn(accessToken: string): boolean {
    return accessToken === this.#lastKnownStored || this.#failedSaves?.includes(accessToken) === true;
  }

  /** Runs `write` (which never rejects) after any save still in progress. */
  #enqueue(write: () => Promise<void>): Promise<void> {
    const next = this.#saving.then(write);
    this.#saving = next;
    return next;
  }

  #saved(tokens: TokenSet): void {
    this.#lastKnownStored = tokens.accessToken;
    this.#failedSaves = undefined;
    const unsaved = this.#unsaved;
    if (unsaved === undefined) return;
    this.#unsaved = undefined;
    this.#armSaveRetry();
    const saves = unsaved.failures === 1 ? 'save' : 'saves';
    this.#emit({
      type: 'persist_recovered',
      at: this.#clock.now(),
      detail: `after ${String(unsaved.failures)} failed ${saves}`,
    });
  }

  /**
   * The in-memory token keeps serving: a failed save is reported (once per
   * token set; retries that fail are only counted), not fatal, and retried.
   */
  #saveFailed(tokens: TokenSet, error: unknown, generation: number): void {
    if (generation < this.#written) return; // a newer set was written since: this one's refresh token is spent
    const prior = this.#unsaved;
    if (prior?.tokens !== tokens)
      this.#emit({ type: 'persist_failed', at: this.#clock.now(), detail: errorCode(error) });
    this.#unsaved = { tokens, failures: (prior?.failures ?? 0) + 1, generation };
    if (!this.#isOwn(tokens.accessToken)) (this.#failedSaves ??= []).push(tokens.accessToken);
    this.#armSaveRetry();
  }

  /** Arms the retry of a failed save, or clears it when there is none (or the keeper has stopped). */
  #armSaveRetry(): void {
    if (this.#saveRetry !== undefined) this.#clock.clearTimeout(this.#saveRetry);
    this.#saveRetry = undefined;
    const unsaved = this.#unsaved;
    if (unsaved === undefined || this.#state.kind === 'stopped') return;
    this.#saveRetry = this.#clock.setTimeout(() => {
      this.#saveRetry = undefined;
      void this.#retrySave();
    }, saveRetryDelay(unsaved.failures));
  }

  /**
   * Saves the set whose save failed once more. The DESIGN §5 protocol, under
   * the credential's lock and in line with the other saves: re-read, and
   * write only over a set of this keeper's own — the one it last knew the
   * store held, or one whose save failed but may have landed. A set written
   * since by another process (or `tether login`) is newer: it is left in
   * place, and the next attempt adopts it.
   */
  #retrySave(): Promise<void> {
    if (this.#unsaved === undefined) return Promise.resolve();
    const store = this.#options.store;
    const retry = (): Promise<void> =>
      this.#enqueue(async () => {
        const unsaved = this.#unsaved;
        if (unsaved === undefined) return; // a later save landed meanwhile
        if (unsaved.generation < this.#written) {
          this.#unsaved = undefined; // a newer set was written since: this one must not go over it
          this.#armSaveRetry();
          return;
        }
        try {
          const stored = await store.load();
          if (this.#unsaved !== unsaved) return; // adopted or saved meanwhile
          if (stored?.accessToken === unsaved.tokens.accessToken) {
            this.#saved(unsaved.tokens); // the failed save had landed after all
          } else if (stored === undefined || !this.#isOwn(stored.accessToken)) {
            this.#unsaved = undefined;
            this.#armSaveRetry();
          } else {
            // Read under the lock with no save of ours in flight: the set of ours on disk is now known,
            // and the other failed saves did not land (so #failedSaves does not grow with every refresh).
            this.#lastKnownStored = stored.accessToken;
            this.#failedSaves = undefined;
            await store.save(unsaved.tokens);
            this.#saved(unsaved.tokens);
          }
        } catch (error) {
          this.#saveFailed(unsaved.tokens, error, unsaved.generation);
        }
      });
    return this.#locked(retry).catch((error: unknown) => {
      // The lock could not be had: the save waits for the next retry.
      const unsaved = this.#unsaved;
      if (unsaved !== undefined) this.#saveFailed(unsaved.tokens, error, unsaved.generation);
    });
  }

  #fail(attempt: AttemptFields, verdict: Classification, prior: Episode | undefined): void {
    const now = attempt.at;
    const failed = { ...attempt, reason: verdict.reason, detail: verdict.detail } as const;
    const episode: Episode = {
      failingSince: prior?.failingSince ?? now,
      failures: (prior?.failures ?? 0) + 1,
      tier: prior?.tier ?? 'short',
      slowSteps: prior?.slowSteps ?? 0,
      last: verdict,
      retryAfterMs: verdict.retryAfterMs ?? 0,
    };
    if (verdict.class === 'permanent') {
      this.#emit({ ...failed, outcome: 'permanent' });
      this.#giveUp(
        `the authorization server refused the refresh (${verdict.detail}); run \`tether login ${this.#options.name ?? 'NAME'}\``,
        episode,
        verdict,
      );
      return;
    }
    const ceiling = this.#config.ceiling;
    // Enforced only here, at a failed attempt: after a long sleep the keeper
    // always tries once more before giving up.
    if (ceiling > 0 && now - episode.failingSince > ceiling) {
      this.#emit({ ...failed, outcome: 'transient' });
      this.#giveUp(
        `no successful refresh for ${formatDuration(now - episode.failingSince)}, past the ceiling of ${formatDuration(ceiling)} (TETHER_TOKEN_AUTH_RETRYING_MAX_ELAPSED); last error: ${verdict.reason} ${verdict.detail}`,
        episode,
        undefined,
      );
      return;
    }
    const next = this.#schedule(episode, now);
    this.#emit({ ...failed, outcome: 'transient', nextAttemptAt: now + next.delay });
    this.#transition({ kind: 'backoff', episode: next.episode, nextAttemptAt: this.#clock.monotonic() + next.delay });
  }

  /**
   * The delay before the next attempt after a transient failure: the short
   * tier while it lasts, then the slow tier; never less than `Retry-After`;
   * and while the token is valid, never past the last moment before it
   * expires for sending (§3.2 point 4) — unless that moment is closer than the
   * probe minimum, which keeps two attempts from crowding together.
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
    // A distrusted token's real expiry for sending: the last chance before it is still worth an attempt.
    const sendExpiresAt = held?.distrust?.expiresAt ?? held?.sendExpiresAt;
    if (held !== undefined && sendExpiresAt !== undefined && sendExpiresAt !== Infinity) {
      const lastChance = sendExpiresAt - preExpiryLead(held.set.issuedAt, sendExpiresAt);
      if (now + this.#config.probeMinInterval <= lastChance && now + delay > lastChance) delay = lastChance - now;
    }
    return { episode: next, delay: Math.max(delay, episode.retryAfterMs) };
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

  #hold(tokens: TokenSet): HeldToken {
    const times = tokenTimes(tokens.issuedAt, tokens.expiresAt, this.#random());
    // Without a refresh token there is nothing to try early: the token is
    // served to its last moment, and only then does the keeper give up.
    const refreshAt = tokens.refreshToken === undefined ? times.sendExpiresAt : times.refreshAt;
    return { set: tokens, refreshAt, sendExpiresAt: times.sendExpiresAt, promise: Promise.resolve(tokens.accessToken) };
  }

  /**
   * Takes a token set into use. One already due is refreshed at once — but
   * never sooner than a short gap after the last attempt, so that a server
   * issuing tokens that are due on arrival cannot drive a tight loop.
   */
  #accept(tokens: TokenSet, reason: string, trigger: Trigger): void {
    const held = this.#held;
    // Already held (switched to under the lock by the exchange that saved it): kept as it is.
    this.#held = held?.set === tokens && held.distrust === undefined ? held : this.#hold(tokens);
    this.#transition({ kind: 'fresh' }, reason);
    if (this.#refreshDueIn() <= 0) void this.#startAttempt(trigger);
  }

  /** Ms until the held token's refresh may start: its refresh point, and the gap after the last attempt. */
  #refreshDueIn(): number {
    const refreshAt = this.#held?.refreshAt ?? Infinity;
    const gap = Math.max(this.#config.probeMinInterval, MIN_REFRESH_GAP_MS);
    return Math.max(refreshAt - this.#clock.now(), this.#waitBeforeAttempt(gap, undefined));
  }

  /**
   * Stops serving `token`, which the resource server rejected, if it is still
   * the one held and served while refreshes fail: the status turns to
   * `auth_retrying`, and requests are told when the next attempt comes
   * instead of being sent to earn another `401`.
   *
   * For a while only: a `401` may be a glitch of the resource server while the
   * token is good, and a distrust that lasted until a refresh succeeds would
   * answer every request with a `503` for the rest of a token-endpoint outage.
   * So the token is trusted again after the probe minimum; a rejection after
   * that distrusts it for twice as long, up to the tick interval — a token
   * the resource server really refuses then costs one burst of `401`s per
   * tick, as an idle retry would.
   */
  #distrust(token: string): void {
    const state = this.#state;
    const held = this.#held;
    const now = this.#clock.now();
    if (state.kind !== 'backoff' || held?.set.accessToken !== token || !(now < held.sendExpiresAt)) return;
    const times = (held.distrust?.times ?? 0) + 1;
    const lasts = Math.min(this.#config.probeMinInterval * 2 ** Math.min(times - 1, 40), this.#config.tickInterval);
    const expiresAt = held.distrust?.expiresAt ?? held.sendExpiresAt;
    this.#held = {
      ...held,
      sendExpiresAt: now,
      distrust: { until: Math.min(now + lasts, expiresAt), times, expiresAt },
    };
    this.#transition(state);
  }

  /** Serves the held token again once its distrust has lapsed (see {@link TokenKeeper.#distrust}). */
  #trustAgain(): void {
    const held = this.#held;
    const distrust = held?.distrust;
    if (distrust === undefined || held === undefined || held.sendExpiresAt === distrust.expiresAt) return;
    if (this.#clock.now() >= distrust.until) this.#held = { ...held, sendExpiresAt: distrust.expiresAt };
  }

  // ---- transitions, timers, status ------------------------------------------

  /** The one place where the state changes: event, timer and status follow from the new state. */
  #transition(next: State, reason?: string): void {
    const prior = this.#state;
    const from = prior.kind;
    if (from === 'stopped') return; // stopped is final, even for a listener's late call
    this.#state = next;
    // Out of the pacer's line as soon as no catch-up attempt waits: the next keeper's turn comes sooner.
    if (catchUpOf(prior) !== undefined && catchUpOf(next) === undefined) this.#pacer.withdraw(this);
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

  /**
   * Monotonic time of the next thing to do: an attempt, asking the pacer
   * again when the keeper's turn comes, or the moment the status must turn.
   */
  #nextWake(): number | undefined {
    this.#trustAgain(); // lapsed before its timer fired (or with no timer, for a probe minimum of 0)
    const state = this.#state;
    const mono = this.#clock.monotonic();
    let due = this.#statusTurnsAt();
    if (state.kind === 'fresh') {
      const held = this.#held;
      if (state.catchUp !== undefined) due = Math.min(due, mono + (this.#pacer.turnIn(this) ?? 0));
      else if (held !== undefined && held.refreshAt !== Infinity) due = Math.min(due, mono + this.#refreshDueIn());
    } else if (state.kind === 'backoff') {
      const turn = state.catchUp === undefined ? undefined : this.#pacer.turnIn(this);
      due = Math.min(due, state.nextAttemptAt, turn === undefined ? Infinity : mono + turn);
    } else if (state.kind !== 'refreshing') {
      return undefined;
    }
    return due === Infinity ? undefined : due;
  }

  /**
   * Monotonic time at which the status may turn with no attempt: when a
   * distrusted token is trusted again, or when the held token expires for
   * sending while the keeper is failing — also with an attempt in flight — or
   * waiting to refresh it (its turn in the pacer's line).
   */
  #statusTurnsAt(): number {
    const state = this.#state;
    const held = this.#held;
    if (held === undefined) return Infinity;
    const now = this.#clock.now();
    if (held.distrust !== undefined && held.sendExpiresAt !== held.distrust.expiresAt)
      return this.#toMono(Math.max(held.distrust.until, now));
    const watched = state.kind === 'fresh' || ('episode' in state && state.episode !== undefined);
    return watched && now < held.sendExpiresAt ? this.#toMono(held.sendExpiresAt) : Infinity;
  }

  #onTimer(): void {
    this.#trustAgain();
    const state = this.#state;
    // A timer may fire before what it waits for (delays are capped): then it is re-armed.
    if (state.kind === 'backoff' && this.#clock.monotonic() >= state.nextAttemptAt) {
      void this.#startAttempt('schedule'); // its own attempt: out of the pacer's line, if it was in it
    } else if ((state.kind === 'fresh' || state.kind === 'backoff') && state.catchUp !== undefined) {
      void this.#startAttempt(state.catchUp); // asks again: its turn, or a token that has expired meanwhile
    } else if (state.kind === 'fresh' && this.#refreshDueIn() <= 0) {
      void this.#startAttempt('schedule');
    } else {
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
    } else if (this.#health() === 'failing') {
      status = 'auth_retrying';
      const episode = 'episode' in state ? state.episode : undefined;
      if (episode !== undefined)
        why = `no valid token; refresh failing since ${new Date(episode.failingSince).toISOString()}: ${episode.last.reason} ${episode.last.detail}`;
      else if (catchUpOf(state) !== undefined)
        why = `no valid token; its refresh waits its turn (catch-up refreshes in this process are paced at ${String(this.#pacer.rate)} per second)`;
      else why = 'no valid token; its refresh waits out the minimum gap after the last attempt';
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

  /**
   * `failing` whenever no valid token can be served and it is not given up:
   * in a failure episode, and also while waiting to refresh it with no
   * failure yet (its turn in the pacer's line, or the gap after the last
   * attempt) — not on the way to an attempt that starts at once. An attempt
   * in flight without a failure behind it keeps the status it started in.
   */
  #health(): RefreshHealth {
    const state = this.#state;
    if (state.kind === 'unauthenticated') return 'given_up';
    const valid = this.peekToken() !== undefined;
    const episode = 'episode' in state ? state.episode : undefined;
    if (episode !== undefined) return valid ? 'degraded' : 'failing';
    if (valid) return 'ok';
    if (state.kind === 'fresh') return state.catchUp !== undefined || this.#refreshDueIn() > 0 ? 'failing' : 'ok';
    return state.kind === 'refreshing' && this.#status === 'auth_retrying' ? 'failing' : 'ok';
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

/** The trigger of the catch-up attempt waiting in the pacer's line, if one does. */
function catchUpOf(state: State): CatchUpTrigger | undefined {
  return state.kind === 'fresh' || state.kind === 'backoff' ? state.catchUp : undefined;
}

/**
 * The token set a response makes: lifetime from when the request was sent; no
 * new refresh token keeps the old (§3.1). `undefined` for an unusable lifetime.
 */
function tokenSetFrom(response: TokenResponse, sentAt: number, usedRefreshToken: string): TokenSet | undefined {
  const { expiresIn } = response;
  // A NaN or negative lifetime would turn into a 1 ms timer loop.
  if (expiresIn !== undefined && !(Number.isFinite(expiresIn) && expiresIn >= 0)) return undefined;
  return {
    accessToken: response.accessToken,
    refreshToken: response.refreshToken ?? usedRefreshToken,
    issuedAt: sentAt,
    ...(response.expiresIn !== undefined && { expiresAt: sentAt + response.expiresIn * 1000 }),
    ...(response.scope !== undefined && { scope: response.scope }),
    ...(response.tokenType !== undefined && { tokenType: response.tokenType }),
  };
}

/** Read through a call: TypeScript would keep `signal.aborted` narrowed across awaits. */
function aborted(signal: AbortSignal): boolean {
  return signal.aborted;
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
