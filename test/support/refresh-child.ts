/**
 * A separate tether process for the cross-process refresh test, run with
 * `node --import tsx refresh-child.ts '<json>'`. Prints one JSON object per
 * line on stdout.
 *
 * - `refresh`: a real {@link TokenKeeper} over the shared credential store
 *   (`keeperStore(name)`, its cross-process lock) and a real refresh function
 *   (oauth4webapi through an {@link HttpClient}) on the system clock. Prints
 *   `{"type":"ready"}`, then loops `await keeper.trigger('manual')` until the
 *   stop file exists, then stops the keeper and prints `{"type":"done",…}`.
 *   Every token request is reported as `{"type":"request",…}` with short
 *   hashes (never the tokens) of the refresh token sent and of the one
 *   received; every attempt that failed as `{"type":"failure",…}`.
 * - `hold`: takes the credential's lock, prints `{"type":"holding"}` and keeps
 *   it until killed (a process that dies, or hangs, in the middle of a refresh).
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import type * as oauth from 'oauth4webapi';
import { systemClock } from '../../src/clock/system.js';
import { DEFAULT_KEEPER_CONFIG } from '../../src/config/keeper-config.js';
import { TokenKeeper } from '../../src/keeper/keeper.js';
import type { RefreshFunction } from '../../src/keeper/types.js';
import { HttpClient } from '../../src/oauth/http.js';
import { createRefreshFunction } from '../../src/oauth/refresh.js';
import type { ClientRegistration } from '../../src/oauth/registration.js';
import { CredentialStore } from '../../src/store/store.js';

export interface RefreshChildArgs {
  readonly mode: 'refresh' | 'hold';
  readonly id: string;
  /** The state directory every process shares. */
  readonly home: string;
  /** The workload whose credential every process shares. */
  readonly name: string;
  readonly staleMs: number;
  readonly timeoutMs: number;
  /** `refresh` only: */
  readonly stopFile?: string;
  readonly authorizationServer?: oauth.AuthorizationServer;
  readonly client?: ClientRegistration;
  readonly resource?: string;
  /** Longest random pause between two triggers, so that the processes interleave; default 0. */
  readonly maxPauseMs?: number;
}

/** One line of a child's output. */
export type ChildLine =
  | { readonly type: 'ready' | 'holding'; readonly pid: number }
  | {
      readonly type: 'request';
      readonly id: string;
      readonly at: number;
      /** Hash of the refresh token sent. */
      readonly used: string;
      /** Hash of the refresh token received; absent when the request failed. */
      readonly got?: string;
      readonly ok: boolean;
      readonly status?: number;
      /** Of a failed request: the OAuth `error` (`invalid_grant`…), or the network error's code. */
      readonly error?: string;
    }
  | {
      readonly type: 'failure';
      readonly id: string;
      readonly at: number;
      readonly reason: string;
      readonly detail: string;
    }
  | {
      readonly type: 'done';
      readonly id: string;
      readonly triggers: number;
      readonly refreshed: number;
      readonly adopted: number;
      /** The keeper's state when the loop ended: `fresh` unless something went wrong. */
      readonly state: string;
    };

/** A short, one-way name for a token: enough to compare, useless to an attacker (the test computes the same). */
function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 16);
}

function print(line: ChildLine): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

async function hold(args: RefreshChildArgs, store: CredentialStore): Promise<void> {
  const keeperStore = store.keeperStore(args.name);
  if (keeperStore.exclusive === undefined) throw new Error('the store has no lock');
  // A pending promise does not keep Node alive; this timer does.
  setInterval(() => undefined, 60_000);
  await keeperStore.exclusive(() => {
    print({ type: 'holding', pid: process.pid });
    return new Promise<never>(() => undefined);
  }, new AbortController().signal);
}

async function refreshLoop(args: RefreshChildArgs, store: CredentialStore): Promise<void> {
  const { authorizationServer, client, resource, stopFile } = args;
  if (authorizationServer === undefined || client === undefined || stopFile === undefined) {
    throw new Error('refresh mode needs authorizationServer, client and stopFile');
  }
  const http = new HttpClient({ clock: systemClock });
  const real = createRefreshFunction({
    http,
    authorizationServer,
    client,
    ...(resource !== undefined && { resource }),
  });
  let refreshed = 0;
  // Watches the real refresh function without changing what it does.
  const refresh: RefreshFunction = async (refreshToken, signal) => {
    const result = await real(refreshToken, signal);
    if (result.ok) refreshed++;
    const failure = result.ok ? undefined : result.failure;
    // The OAuth `error` of an error response, or the network error's code.
    const error = failure?.kind === 'http' ? /"error"\s*:\s*"([^"]+)"/.exec(failure.body)?.[1] : failure?.code;
    print({
      type: 'request',
      id: args.id,
      at: Date.now(),
      used: tokenHash(refreshToken),
      ...(result.ok && result.tokens.refreshToken !== undefined && { got: tokenHash(result.tokens.refreshToken) }),
      ok: result.ok,
      ...(failure?.kind === 'http' && { status: failure.status }),
      ...(error !== undefined && { error }),
    });
    return result;
  };

  const keeper = new TokenKeeper({
    clock: systemClock,
    config: DEFAULT_KEEPER_CONFIG,
    refresh,
    store: store.keeperStore(args.name),
    status: () => undefined,
    dynamicClient: client.kind === 'dynamic',
    name: args.name,
    resetTransport: () => {
      http.resetTransport();
    },
  });
  let adopted = 0;
  keeper.on((event) => {
    if (event.type === 'adopted') adopted++;
    if (event.type !== 'attempt') return;
    if (event.outcome === 'success') return;
    print({
      type: 'failure',
      id: args.id,
      at: event.at,
      reason: event.reason ?? 'unknown',
      detail: event.detail ?? '',
    });
  });

  await keeper.start();
  print({ type: 'ready', pid: process.pid });
  let triggers = 0;
  const pause = args.maxPauseMs ?? 0;
  while (!existsSync(stopFile) && keeper.state !== 'unauthenticated') {
    triggers++;
    await keeper.trigger('manual');
    if (pause > 0) await new Promise((resolve) => setTimeout(resolve, Math.random() * pause));
  }
  const state = keeper.state;
  await keeper.stop();
  await http.close();
  print({ type: 'done', id: args.id, triggers, refreshed, adopted, state });
}

const args = JSON.parse(process.argv[2] ?? '{}') as RefreshChildArgs;
const store = await CredentialStore.open({
  dir: args.home,
  env: { TETHER_STORE_KEY: 'file' },
  lock: { staleMs: args.staleMs, timeoutMs: args.timeoutMs },
});
if (args.mode === 'hold') await hold(args, store);
else await refreshLoop(args, store);
