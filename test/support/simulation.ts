import type { NetworkInterfaceInfo } from 'node:os';
import { FakeClock } from '../../src/clock/fake.js';
import { DEFAULT_KEEPER_CONFIG, type KeeperConfig } from '../../src/config/keeper-config.js';
import { watchNetwork, watchWake } from '../../src/keeper/detectors.js';
import type { RefreshFailure } from '../../src/keeper/failure.js';
import { TokenKeeper, TokenUnavailableError } from '../../src/keeper/keeper.js';
import type { KeeperStatus, KeeperStore, RefreshFunction, StatusSink, TokenSet } from '../../src/keeper/types.js';
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
  readonly latencyMs: number;
  readonly seed: number;
}

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
  readonly statuses: readonly { at: number; status: KeeperStatus; reason: string; state: string | undefined }[];
  /** getToken() outcomes: `token` on success, else the error code and retry-after. */
  readonly served: readonly { at: number; token?: string; code?: string; retryAfterSeconds?: number }[];
  /** Saves, with the order in which each happened relative to requests and serves. */
  readonly saves: readonly { at: number; seq: number; tokens: TokenSet }[];
  /** Every access token served, with its sequence number. */
  readonly servedSeq: readonly { seq: number; token: string }[];
  /** Refresh tokens sent, with their sequence number. */
  readonly sentSeq: readonly { seq: number; refreshToken: string }[];
  /** Seconds sampled without a valid token (when sampling). */
  readonly secondsWithoutToken: number;
  readonly maxInFlight: number;
  readonly initialRefreshToken: string;
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
  const store: KeeperStore = {
    load: () => Promise.resolve(stored),
    save: (tokens) => {
      stored = tokens;
      saves.push({ at: clock.now() - t0, seq: seq++, tokens });
      return Promise.resolve();
    },
  };
  const refresh: RefreshFunction = (refreshToken, signal) => {
    sentSeq.push({ seq: seq++, refreshToken });
    return endpoint.refresh(refreshToken, signal);
  };
  const statuses: { at: number; status: KeeperStatus; reason: string; state: string | undefined }[] = [];
  const keeper: SimKeeper = policy({
    clock,
    config,
    refresh,
    store,
    status: (status, reason) => {
      const state = keeper instanceof TokenKeeper ? keeper.state : undefined;
      statuses.push({ at: clock.now() - t0, status, reason, state });
    },
    random: seededRandom(scenario.seed),
  });

  const served: { at: number; token?: string; code?: string; retryAfterSeconds?: number }[] = [];
  const ask = async (): Promise<{ token?: string; retryAfterSeconds?: number }> => {
    const at = clock.now() - t0;
    try {
      const token = await keeper.getToken();
      served.push({ at, token });
      servedSeq.push({ seq: seq++, token });
      return { token };
    } catch (error) {
      const code = error instanceof TokenUnavailableError ? error.code : 'OTHER';
      const retryAfterSeconds = error instanceof TokenUnavailableError ? error.retryAfterSeconds : undefined;
      served.push({ at, code, ...(retryAfterSeconds !== undefined && { retryAfterSeconds }) });
      return retryAfterSeconds !== undefined ? { retryAfterSeconds } : {};
    }
  };

  // Detectors, as a workload wires them: a wake or a network change is a trigger.
  let networkGeneration = 0;
  const interfaces = (): NodeJS.Dict<NetworkInterfaceInfo[]> => ({
    eth0: [
      {
        address: `192.0.2.${String(1 + (networkGeneration % 250))}`,
        netmask: '255.255.255.0',
        family: 'IPv4',
        mac: '00:00:00:00:00:00',
        internal: false,
        cidr: null,
      },
    ],
  });
  const watchers = [
    watchWake({ clock, onWake: () => void keeper.trigger?.('wake') }),
    watchNetwork({ clock, interfaces, onChange: () => void keeper.trigger?.('network') }),
  ];

  const initial = endpoint.login();
  await store.save(initial);
  const initialRefreshToken = initial.refreshToken ?? '';
  await keeper.start(initial);

  // The scenario as events in wall-clock order.
  const events: { at: number; apply: () => void }[] = [];
  for (const outage of scenario.outages) {
    events.push({ at: outage.start, apply: () => (endpoint.fault = outage.fault) });
    events.push({
      at: outage.end,
      apply: () => {
        const now = clock.now() - t0;
        const active = scenario.outages.find((o) => o.start <= now && now < o.end);
        endpoint.fault = active?.fault;
      },
    });
  }
  if (scenario.revokeAt !== undefined) events.push({ at: scenario.revokeAt, apply: () => (endpoint.current = 'revoked') });
  for (const sleep of scenario.sleeps) {
    events.push({
      at: sleep.at,
      apply: () => {
        clock.sleep(sleep.ms);
      },
    });
  }
  for (const at of scenario.networkChanges) {
    events.push({
      at,
      apply: () => {
        networkGeneration++;
      },
    });
  }
  for (const burst of scenario.bursts) {
    events.push({ at: burst.at, apply: () => void Promise.all(Array.from({ length: burst.count }, ask)) });
  }
  if (scenario.patientClientAt !== undefined) {
    events.push({
      at: scenario.patientClientAt,
      apply: () => {
        const attempt = (): void => {
          void ask().then((outcome) => {
            if (outcome.token !== undefined) return;
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
  if (scenario.pollEveryMs !== undefined && scenario.pollEveryMs > 0) periodic(scenario.pollEveryMs, () => void ask());
  if (scenario.sampleValidity === true) {
    periodic(1000, () => {
      if (keeper.peekToken() === undefined) secondsWithoutToken++;
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
  for (const watcher of watchers) watcher.stop();
  await clock.flush();

  return {
    requests: endpoint.requests.map((r) => ({ ...r, at: r.at - t0 })),
    statuses,
    served,
    saves,
    servedSeq,
    sentSeq,
    secondsWithoutToken,
    maxInFlight: endpoint.maxInFlight,
    initialRefreshToken,
    config,
    keeper,
  };
}
