import { FakeClock } from '../../src/clock/fake.js';
import { DEFAULT_KEEPER_CONFIG, type KeeperConfig } from '../../src/config/keeper-config.js';
import type { RefreshFailure } from '../../src/keeper/failure.js';
import { TokenKeeper, TokenUnavailableError } from '../../src/keeper/keeper.js';
import type {
  KeeperStatus,
  KeeperStore,
  RefreshFunction,
  RefreshHealth,
  StatusSink,
  TokenSet,
} from '../../src/keeper/types.js';
import { seededRandom, TokenEndpoint } from './harness.js';

/**
 * A day in the life of one credential, driven on a fake clock: outages at
 * the token endpoint, a revocation, sleeps, network changes and client
 * requests, all in wall-clock milliseconds from the start of the run. Used by
 * the property-based tests (invariants over random scenarios) and by
 * `bench/outage-sim` (tether against other policies).
 */
export interface Scenario {
  readonly lifetimeSeconds: number | undefined;
  readonly config?: Partial<KeeperConfig>;
  readonly horizonMs: number;
  readonly outages: readonly { readonly start: number; readonly end: number; readonly fault: RefreshFailure }[];
  /** From this moment on the refresh token is revoked (the server answers `invalid_grant`). */
  readonly revokeAt?: number;
  readonly sleeps: readonly { readonly at: number; readonly ms: number }[];
  readonly networkChanges: readonly number[];
  readonly bursts: readonly { readonly at: number; readonly count: number }[];
  /** A client that calls getToken() every this many ms (0 or absent: none). */
  readonly pollEveryMs?: number;
  /** A client that calls once at this moment, then again when told to (Retry-After), until it succeeds. */
  readonly patientClientAt?: number;
  /** Sample "is a valid token held?" every second (for the time-without-token metric). */
  readonly sampleValidity?: boolean;
  /** Sample the real keeper's status and refresh health this often (for the status invariants). */
  readonly sampleStatusEveryMs?: number;
  readonly latencyMs: number;
  readonly seed: number;
}

/** Who asked for a token: a burst of requests, the polling client, or the patient client (retries when told). */
export type Client = 'burst' | 'poll' | 'patient';

/** What the simulation needs of a token keeper; the real one and the bench's alternative policies have it. */
export interface SimKeeper {
  start(initial: TokenSet): Promise<void>;
  getToken(): Promise<string>;
  peekToken(): string | undefined;
  trigger?(kind: 'network' | 'wake' | 'manual'): Promise<void>;
  stop(): void;
  readonly status: KeeperStatus;
}

/** Everything a policy is built from. */
export interface PolicyDeps {
  readonly clock: FakeClock;
  readonly config: KeeperConfig;
  readonly refresh: RefreshFunction;
  readonly store: KeeperStore;
  readonly status: StatusSink;
  readonly random: () => number;
}

export type Policy = (deps: PolicyDeps) => SimKeeper;

/** The real keeper as a simulation policy. */
export const tetherPolicy: Policy = (deps) => new TokenKeeper(deps);

export interface SimRecord {
  readonly requests: readonly { at: number; refreshToken: string; answer: 'ok' | 'fault' | 'invalid_grant' }[];
  /** Status writes, with the keeper's state and whether it held a valid token at that moment. */
  readonly statuses: readonly {
    at: number;
    status: KeeperStatus;
    reason: string;
    state: string | undefined;
    tokenValid: boolean;
  }[];
  /** getToken() outcomes (`asked`: when called, `at`: when settled): `token` on success, else the error code and retry-after. */
  readonly served: readonly {
    client: Client;
    asked: number;
    at: number;
    status: KeeperStatus;
    token?: string;
    code?: string;
    retryAfterSeconds?: number;
  }[];
  /** Saves, with the order in which each happened relative to requests and serves. */
  readonly saves: readonly { at: number; seq: number; tokens: TokenSet }[];
  /** Every access token served, with its sequence number. */
  readonly servedSeq: readonly { seq: number; token: string }[];
  /** Refresh tokens sent, with their sequence number. */
  readonly sentSeq: readonly { seq: number; refreshToken: string }[];
  /**
   * When outages really ended and sleeps really happened: an event whose time
   * falls inside a sleep happens at the wake, later than the scenario says.
   */
  readonly actual: {
    readonly outageEnds: readonly number[];
    readonly sleeps: readonly { at: number; until: number }[];
  };
  /** The real keeper's status, refresh health and state, sampled (see `sampleStatusEveryMs`). */
  readonly statusSamples: readonly { at: number; status: KeeperStatus; health: RefreshHealth; state: string }[];
  /** Times the keeper took a token into use that the store did not hold yet. */
  readonly heldBeforePersisted: number;
  /** Seconds sampled without a valid token (when sampling). */
  readonly secondsWithoutToken: number;
  readonly maxInFlight: number;
  readonly initialRefreshToken: string;
  /** Wall-clock time at the start of the run (token expiries are absolute). */
  readonly t0: number;
  readonly config: KeeperConfig;
  readonly keeper: SimKeeper;
}

/** Runs one scenario to its horizon and returns what happened. */
export async function simulate(scenario: Scenario, policy: Policy = tetherPolicy): Promise<SimRecord> {
  const clock = new FakeClock();
  const t0 = clock.now();
  const config = { ...DEFAULT_KEEPER_CONFIG, ...scenario.config };
  const endpoint = new TokenEndpoint(clock);
  endpoint.lifetimeSeconds = scenario.lifetimeSeconds;
  endpoint.latencyMs = scenario.latencyMs;
  let seq = 0;
  const saves: { at: number; seq: number; tokens: TokenSet }[] = [];
  const sentSeq: { seq: number; refreshToken: string }[] = [];
  const servedSeq: { seq: number; token: string }[] = [];
  let stored: TokenSet | undefined;
  let lock: Promise<void> = Promise.resolve();
  const store: KeeperStore = {
    load: () => Promise.resolve(stored),
    // A save takes a millisecond, like an fsync: a keeper that used a token before its save completed would show.
    // The cross-process lock, as an in-process mutex: the keeper's protocol runs under it.
    exclusive: <T>(exchange: () => Promise<T>): Promise<T> => {
      const run = lock.then(exchange);
      lock = run.then(
        () => undefined,
        () => undefined,
      );
      return run;
    },
    save: async (tokens) => {
      await new Promise<void>((resolve) => clock.setTimeout(resolve, 1));
      stored = tokens;
      saves.push({ at: clock.now() - t0, seq: seq++, tokens });
    },
  };
  const refresh: RefreshFunction = (refreshToken, signal) => {
    sentSeq.push({ seq: seq++, refreshToken });
    return endpoint.refresh(refreshToken, signal);
  };
  const statuses: SimRecord['statuses'][number][] = [];
  const keeper: SimKeeper = policy({
    clock,
    config,
    refresh,
    store,
    status: (status, reason) => {
      const state = keeper instanceof TokenKeeper ? keeper.state : undefined;
      statuses.push({ at: clock.now() - t0, status, reason, state, tokenValid: keeper.peekToken() !== undefined });
    },
    random: seededRandom(scenario.seed),
  });

  const served: SimRecord['served'][number][] = [];
  const ask = async (client: Client): Promise<{ token?: string; code?: string; retryAfterSeconds?: number }> => {
    const asked = clock.now() - t0;
    try {
      const token = await keeper.getToken();
      served.push({ client, asked, at: clock.now() - t0, status: keeper.status, token });
      servedSeq.push({ seq: seq++, token });
      return { token };
    } catch (error) {
      const code = error instanceof TokenUnavailableError ? error.code : 'OTHER';
      const retryAfterSeconds = error instanceof TokenUnavailableError ? error.retryAfterSeconds : undefined;
      served.push({
        client,
        asked,
        at: clock.now() - t0,
        status: keeper.status,
        code,
        ...(retryAfterSeconds !== undefined && { retryAfterSeconds }),
      });
      return { code, ...(retryAfterSeconds !== undefined && { retryAfterSeconds }) };
    }
  };

  // Persisted before used: whenever the keeper takes a token into use, the store must already hold it.
  let heldBeforePersisted = 0;
  if (keeper instanceof TokenKeeper) {
    keeper.on((event) => {
      if (event.type !== 'state' || event.to !== 'fresh') return;
      const held = keeper.peekToken();
      if (held !== undefined && stored?.accessToken !== held) heldBeforePersisted++;
    });
  }

  // The login's save happened before the run starts (no clock runs yet to time it).
  const initial = endpoint.login();
  stored = initial;
  saves.push({ at: 0, seq: seq++, tokens: initial });
  const initialRefreshToken = initial.refreshToken ?? '';
  await keeper.start(initial);

  // The scenario as events in wall-clock order.
  const events: { at: number; apply: () => void }[] = [];
  const outageEnds: number[] = [];
  const sleeps: { at: number; until: number }[] = [];
  for (const outage of scenario.outages) {
    events.push({ at: outage.start, apply: () => (endpoint.fault = outage.fault) });
    events.push({
      at: outage.end,
      // Another outage may still be running (scenario time, not the clock: timers land on fractional ms).
      apply: () => {
        endpoint.fault = scenario.outages.find((o) => o.start <= outage.end && outage.end < o.end)?.fault;
        outageEnds[scenario.outages.indexOf(outage)] = clock.now() - t0;
      },
    });
  }
  if (scenario.revokeAt !== undefined)
    events.push({ at: scenario.revokeAt, apply: () => (endpoint.current = 'revoked') });
  for (const sleep of scenario.sleeps) {
    events.push({
      at: sleep.at,
      // The wake detector notices within one poll; the simulation wakes the keeper at once.
      apply: () => {
        sleeps.push({ at: clock.now() - t0, until: clock.now() - t0 + sleep.ms });
        clock.sleep(sleep.ms);
        void keeper.trigger?.('wake');
      },
    });
  }
  for (const at of scenario.networkChanges) {
    events.push({
      at,
      apply: () => {
        void keeper.trigger?.('network');
      },
    });
  }
  for (const burst of scenario.bursts) {
    events.push({
      at: burst.at,
      apply: () => void Promise.all(Array.from({ length: burst.count }, () => ask('burst'))),
    });
  }
  if (scenario.patientClientAt !== undefined) {
    events.push({
      at: scenario.patientClientAt,
      apply: () => {
        const attempt = (): void => {
          void ask('patient').then((outcome) => {
            // It stops once served, when told to log in (no point retrying), or at the end of the run.
            if (outcome.token !== undefined || outcome.code === 'ERR_UNAUTHENTICATED') return;
            if (clock.now() - t0 >= scenario.horizonMs) return;
            clock.setTimeout(attempt, (outcome.retryAfterSeconds ?? 1) * 1000);
          });
        };
        attempt();
      },
    });
  }
  events.sort((a, b) => a.at - b.at);

  let secondsWithoutToken = 0;
  const periodic = (everyMs: number, tick: () => void): void => {
    const arm = (): void => {
      clock.setTimeout(() => {
        if (clock.now() - t0 >= scenario.horizonMs) return;
        tick();
        arm();
      }, everyMs);
    };
    arm();
  };
  if (scenario.pollEveryMs !== undefined && scenario.pollEveryMs > 0)
    periodic(scenario.pollEveryMs, () => void ask('poll'));
  if (scenario.sampleValidity === true) {
    periodic(1000, () => {
      if (keeper.peekToken() === undefined) secondsWithoutToken++;
    });
  }
  const statusSamples: SimRecord['statusSamples'][number][] = [];
  if (scenario.sampleStatusEveryMs !== undefined && keeper instanceof TokenKeeper) {
    periodic(scenario.sampleStatusEveryMs, () => {
      const snapshot = keeper.snapshot();
      statusSamples.push({
        at: clock.now() - t0,
        status: snapshot.status,
        health: snapshot.refresh.state,
        state: snapshot.state,
      });
    });
  }

  for (const event of events) {
    const wait = event.at - (clock.now() - t0);
    if (wait > 0) await clock.advance(wait);
    event.apply();
    await clock.flush();
  }
  const rest = scenario.horizonMs - (clock.now() - t0);
  if (rest > 0) await clock.advance(rest);
  keeper.stop();
  await clock.flush();

  return {
    requests: endpoint.requests.map((r) => ({ ...r, at: r.at - t0 })),
    statuses,
    served,
    saves,
    servedSeq,
    sentSeq,
    actual: { outageEnds, sleeps },
    statusSamples,
    heldBeforePersisted,
    secondsWithoutToken,
    maxInFlight: endpoint.maxInFlight,
    initialRefreshToken,
    t0,
    config,
    keeper,
  };
}
