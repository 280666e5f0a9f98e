import type { FailureReason, RefreshFailure } from './failure.js';

/**
 * A token set as the keeper holds and persists it. Times are wall-clock
 * milliseconds; `issuedAt` is when the request that produced it was sent, so
 * that network latency never stretches the lifetime.
 */
export interface TokenSet {
  readonly accessToken: string;
  readonly refreshToken?: string;
  readonly issuedAt: number;
  /** Absent for a token without expiry (a static bearer): it is never refreshed. */
  readonly expiresAt?: number;
  readonly scope?: string;
  readonly tokenType?: string;
}

/** A successful token response, as the refresh function reports it. */
export interface TokenResponse {
  readonly accessToken: string;
  /** A new refresh token replaces the old one; absent keeps the old one (§3.1). */
  readonly refreshToken?: string;
  /** Lifetime in seconds (`expires_in`). */
  readonly expiresIn?: number;
  readonly scope?: string;
  readonly tokenType?: string;
}

/** What one refresh request produced. */
export type RefreshResult =
  { readonly ok: true; readonly tokens: TokenResponse } | { readonly ok: false; readonly failure: RefreshFailure };

/**
 * The injected refresh function: one token request with the given refresh
 * token. It reports failures as data; a throw is treated as a network failure.
 * It must give up when `signal` aborts (the keeper is stopping).
 */
export type RefreshFunction = (refreshToken: string, signal: AbortSignal) => Promise<RefreshResult>;

/** The keeper's view of the credential store (DESIGN §5). */
export interface KeeperStore {
  /** Reads the stored token set (another process may have rotated it). */
  load(): Promise<TokenSet | undefined>;
  /** Persists a token set; called before the keeper uses it. */
  save(tokens: TokenSet): Promise<void>;
  /**
   * Runs `exchange` holding the credential's cross-process lock, if the store
   * has one: the keeper re-reads, refreshes and saves inside it, so that
   * processes sharing a credential never refresh it twice. `load` and `save`
   * are called inside, so the lock must not be taken again by them. A wait
   * for the lock ends when `signal` aborts.
   */
  exclusive?<T>(exchange: () => Promise<T>, signal: AbortSignal): Promise<T>;
}

/** A workload's status as far as the keeper decides it (DESIGN §7). */
export type KeeperStatus = 'running' | 'auth_retrying' | 'unauthenticated';

/** Told about every status change, and only about changes. */
export type StatusSink = (status: KeeperStatus, reason: string) => void;

/**
 * What started an attempt (DESIGN §3.5); `rejected` is the resource server's
 * `401 invalid_token` on a proxied request (§6).
 */
export type Trigger = 'startup' | 'schedule' | 'demand' | 'network' | 'wake' | 'manual' | 'rejected';

/** The kinds of the keeper's state machine. */
export type KeeperStateKind = 'idle' | 'fresh' | 'refreshing' | 'backoff' | 'unauthenticated' | 'stopped';

/**
 * Health of the refresh loop: `ok`; `degraded` (failing, but a valid token is
 * still served); `failing` (failing with no valid token left); `given_up`.
 */
export type RefreshHealth = 'ok' | 'degraded' | 'failing' | 'given_up';

/** An event for every attempt and every transition (DESIGN §3.5). */
export type KeeperEvent =
  | {
      readonly type: 'attempt';
      readonly at: number;
      readonly trigger: Trigger;
      readonly outcome: 'success' | 'transient' | 'permanent';
      readonly durationMs: number;
      readonly reason?: FailureReason | 'no_refresh_token';
      readonly detail?: string;
      /** Wall-clock time of the next scheduled attempt after a transient failure. */
      readonly nextAttemptAt?: number;
    }
  | { readonly type: 'state'; readonly at: number; readonly from: KeeperStateKind; readonly to: KeeperStateKind }
  | { readonly type: 'status'; readonly at: number; readonly status: KeeperStatus; readonly reason: string }
  | { readonly type: 'adopted'; readonly at: number; readonly detail: string }
  | { readonly type: 'persist_failed'; readonly at: number; readonly detail: string }
  /** A save landed after failed ones: the store holds the tokens in use again (`detail`: after how many). */
  | { readonly type: 'persist_recovered'; readonly at: number; readonly detail: string }
  | { readonly type: 'hint'; readonly at: number; readonly code: 'stale_registration'; readonly message: string };

/** A point-in-time view of the keeper, for status files and `--json`. */
export interface KeeperSnapshot {
  readonly state: KeeperStateKind;
  readonly status: KeeperStatus;
  readonly statusReason: string;
  readonly refresh: {
    readonly state: RefreshHealth;
    readonly failingSince?: number;
    readonly lastError?: string;
    readonly lastErrorClass?: 'transient' | 'permanent';
    readonly nextAttemptAt?: number;
  };
  readonly token: { readonly expiresAt?: number };
}
