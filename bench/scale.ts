/**
 * bench/scale — many keepers in one process (issue 5): 1,000 and 10,000
 * `TokenKeeper`s with the defaults, each with its own in-memory token endpoint
 * (a refresh function that rotates the refresh token and sends `expires_in`)
 * and its own in-memory store.
 *
 * 1. Heap per keeper: `heapUsed` after a full GC with the keepers running,
 *    minus the same before they were made, divided by their number. Tokens
 *    are what a real server sends: a 1,024-character JWT as the access token
 *    and a 1,024-character refresh token (the size of Keycloak's JWT refresh
 *    tokens; opaque ones are usually shorter). Measured just after `start()`
 *    and after each keeper's first refresh (a `manual` trigger, which is never
 *    paced), with the token strings alone and with 16-character tokens
 *    alongside, to tell the keeper's own cost apart.
 * 2. CPU while idle: `process.cpuUsage()` over `--idle-seconds` (default 60)
 *    of wall time, the keepers holding 1-hour tokens (the first refresh is
 *    39–51 minutes away), on the real clock.
 * 3. Refresh storms: every token issued at the same moment with the same
 *    expiry; each request's arrival is recorded and the most requests in any
 *    1-second window reported as a share of the keepers, with the first→last
 *    spread. On the real clock for short tokens (`--storm-lifetime-seconds`,
 *    default 15); on a `FakeClock` for what would take too long to wait out:
 *    lifetimes of 100 s, 5 min and 1 h, a restart whose stored tokens are
 *    already due — keepers started together, and one after another — and a
 *    wake from sleep (all paced over ~100 s). The fake
 *    clock runs the same keeper code, with a token endpoint that answers at
 *    once.
 *
 *   npm run bench:scale [-- --idle-seconds 60 --storm-lifetime-seconds 15]
 *
 * Heap figures need `global.gc`: without `--expose-gc` the script runs itself
 * again with it (and with tsx's loader, taken from `process.execArgv`).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { Clock } from '../src/clock/clock.js';
import { FakeClock } from '../src/clock/fake.js';
import { systemClock } from '../src/clock/system.js';
import { DEFAULT_KEEPER_CONFIG } from '../src/config/keeper-config.js';
import { TokenKeeper } from '../src/keeper/keeper.js';
import { CATCH_UP_SHARE } from '../src/keeper/pacer.js';
import { EARLY_REFRESH_FRACTION, EARLY_REFRESH_SPREAD, tokenTimes } from '../src/keeper/timing.js';
import type { KeeperStore, RefreshFunction, RefreshResult, TokenSet } from '../src/keeper/types.js';
import { peakPerSecond } from './peak.js';
import { machineLine, printTable } from './table.js';

const exposedGc = globalThis.gc;
if (exposedGc === undefined) {
  const args = [...process.execArgv, '--expose-gc', ...process.argv.slice(1)];
  const child = spawnSync(process.execPath, args, { stdio: 'inherit' });
  process.exit(child.status ?? 1);
}
const gc = exposedGc;

const { values: flags } = parseArgs({
  options: {
    'idle-seconds': { type: 'string', default: '60' },
    'storm-lifetime-seconds': { type: 'string', default: '15' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (flags.help) {
  process.stdout.write(
    [
      'npm run bench:scale [-- --idle-seconds N --storm-lifetime-seconds N]',
      '',
      '1,000 and 10,000 token keepers in one process: heap per keeper, CPU while idle, refresh storms.',
      '  --idle-seconds N            how long the idle CPU is measured (default 60)',
      '  --storm-lifetime-seconds N  token lifetime of the storms on the real clock (default 15)',
      '',
    ].join('\n'),
  );
  process.exit(0);
}
function positive(name: string, raw: string): number {
  const value = Number(raw);
  if (!(Number.isFinite(value) && value > 0)) throw new Error(`--${name} must be a positive number, got ${raw}`);
  return value;
}
const IDLE_SECONDS = positive('idle-seconds', flags['idle-seconds']);
const WALL_STORM_LIFETIME_S = positive('storm-lifetime-seconds', flags['storm-lifetime-seconds']);

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

const SIZES = [1_000, 10_000] as const;
const TOKEN_CHARS = 1024;
const HEAP_TARGET_BYTES = 5_000;
const IDLE_CPU_TARGET_PERCENT = 1;
const STORM_TARGET_PERCENT = 5;
/** Stored tokens of a restart: issued this long ago, 1-hour lifetime, so past the refresh point (39–51 min) but still valid. */
const DUE_ISSUED_AGO_MS = 52 * MINUTE;
/** How long the machine sleeps in the wake scenario. */
const SLEEP_MS = 8 * HOUR;

const T0 = performance.now();
const progress = (message: string): void => {
  process.stderr.write(`bench/scale: [${((performance.now() - T0) / 1000).toFixed(1)} s] ${message}\n`);
};
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

// ---- tokens -----------------------------------------------------------------

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
const JWT_HEADER = Buffer.from('{"alg":"RS256","typ":"JWT","kid":"bench-scale"}').toString('base64url');
/** A JWT's parts: header, claims, and an RS256 signature (256 bytes → 342 characters). */
const JWT_SIGNATURE_CHARS = 342;
const scratch = Buffer.alloc(TOKEN_CHARS);
let seed = randomBytes(4).readUInt32LE(0) | 1;

/** xorshift32: tokens need to be distinct and incompressible, not secret; crypto would dominate the storms' CPU. */
function nextRandom(): number {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return seed >>> 0;
}

/** `length` random base64url characters into `scratch` from `offset`. */
function fillBase64url(offset: number, length: number): void {
  for (let i = offset; i < offset + length; i++) scratch[i] = BASE64URL.charCodeAt(nextRandom() & 63);
}

/**
 * A JWT-shaped token of TOKEN_CHARS characters (header.claims.signature), as
 * one flat string like one parsed from a response body.
 */
function jwt(): string {
  const claimsChars = TOKEN_CHARS - JWT_HEADER.length - JWT_SIGNATURE_CHARS - 2;
  let at = scratch.write(`${JWT_HEADER}.`, 0, 'latin1');
  fillBase64url(at, claimsChars);
  at += claimsChars;
  scratch[at++] = 0x2e; // '.'
  fillBase64url(at, JWT_SIGNATURE_CHARS);
  return scratch.toString('latin1');
}

/** A 16-character token: the keeper's own cost shows without the strings. */
function smallToken(): string {
  fillBase64url(0, 16);
  return scratch.toString('latin1', 0, 16);
}

interface TokenKind {
  readonly label: string;
  readonly make: () => string;
}
const JWT_TOKENS: TokenKind = { label: '1 KB JWT + 1 KB refresh token', make: jwt };
const SMALL_TOKENS: TokenKind = { label: '16-char tokens', make: smallToken };

function tokenSet(make: () => string, issuedAt: number, lifetimeMs: number): TokenSet {
  return {
    accessToken: make(),
    refreshToken: make(),
    issuedAt,
    expiresAt: issuedAt + lifetimeMs,
    tokenType: 'Bearer',
    scope: 'mcp',
  };
}

// ---- a fleet of keepers -------------------------------------------------------

interface FleetOptions {
  readonly clock: Clock;
  readonly lifetimeMs: number;
  readonly tokens: TokenKind;
  /** The first token sets were issued this long before start (0: just now). */
  readonly issuedAgoMs?: number;
  /** Called as each refresh request arrives at the token endpoint. */
  readonly onRequest?: (index: number) => void;
  /** The keeper's source of jitter; default Math.random. */
  readonly random?: (index: number) => () => number;
  /** Start each keeper once the one before has started (`for … await start()`), not all together. */
  readonly oneByOne?: boolean;
}

const ignoreStatus = (): void => undefined;

/** The store: the last token set saved, in memory. */
class MemoryStore implements KeeperStore {
  #stored: TokenSet | undefined;

  constructor(initial: TokenSet) {
    this.#stored = initial;
  }

  load(): Promise<TokenSet | undefined> {
    return Promise.resolve(this.#stored);
  }

  save(tokens: TokenSet): Promise<void> {
    this.#stored = tokens;
    return Promise.resolve();
  }
}

/**
 * N keepers, each with its own token endpoint and store. The arrays are made
 * before the keepers (so a heap baseline can include them): what is measured
 * is the keepers, their stores, refresh functions, timers and token sets.
 *
 * Every per-keeper function is made anonymous (returned from a factory):
 * tsx compiles with esbuild's `keepNames`, which gives each named closure
 * instance a `name` property of its own — 256 bytes of dictionary per closure
 * that code compiled by tsc does not pay.
 */
class Fleet {
  readonly keepers: TokenKeeper[];
  /** The refresh token each keeper's endpoint accepts next (it rotates on every refresh). */
  readonly #valid: string[];
  /** Requests the endpoint refused because they carried a spent refresh token (must stay 0). */
  spentTokenRequests = 0;

  constructor(readonly size: number) {
    this.keepers = new Array<TokenKeeper>(size);
    this.#valid = new Array<string>(size).fill('');
  }

  /** Makes and starts the keepers; resolves with when their first tokens were issued. */
  async start(options: FleetOptions): Promise<number> {
    const { clock, lifetimeMs, tokens, issuedAgoMs = 0, random, oneByOne = false } = options;
    const issuedAt = clock.now() - issuedAgoMs;
    const starts: Promise<void>[] = [];
    for (let i = 0; i < this.size; i++) {
      const initial = tokenSet(tokens.make, issuedAt, lifetimeMs);
      this.#valid[i] = initial.refreshToken ?? '';
      const keeper = new TokenKeeper({
        clock,
        config: DEFAULT_KEEPER_CONFIG,
        refresh: this.#endpoint(i, options),
        store: new MemoryStore(initial),
        status: ignoreStatus,
        ...(random && { random: random(i) }),
      });
      this.keepers[i] = keeper;
      if (oneByOne) await keeper.start();
      else starts.push(keeper.start());
    }
    await Promise.all(starts);
    return issuedAt;
  }

  /** Keeper `index`'s refresh function: one request to its token endpoint. */
  #endpoint(index: number, options: FleetOptions): RefreshFunction {
    return (refreshToken) => {
      options.onRequest?.(index);
      return Promise.resolve(this.#answer(index, refreshToken, options));
    };
  }

  /** The token endpoint: a spent refresh token is `invalid_grant`, else a new pair and `expires_in`. */
  #answer(index: number, refreshToken: string, options: FleetOptions): RefreshResult {
    if (refreshToken !== this.#valid[index]) {
      this.spentTokenRequests++;
      return {
        ok: false,
        failure: {
          kind: 'http',
          status: 400,
          headers: { 'content-type': 'application/json' },
          body: '{"error":"invalid_grant"}',
        },
      };
    }
    const next = options.tokens.make();
    this.#valid[index] = next;
    return {
      ok: true,
      tokens: {
        accessToken: options.tokens.make(),
        refreshToken: next,
        expiresIn: options.lifetimeMs / 1000,
        tokenType: 'Bearer',
        scope: 'mcp',
      },
    };
  }

  allFresh(): boolean {
    return this.keepers.every((keeper) => keeper.state === 'fresh');
  }

  async stop(): Promise<void> {
    await Promise.all(this.keepers.map((keeper) => keeper.stop()));
  }
}

/** Polls until `done()` (real time), or throws after `timeoutMs`. */
async function until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// ---- 1. heap ----------------------------------------------------------------

async function fullGc(): Promise<number> {
  gc();
  await nextTurn();
  gc();
  return process.memoryUsage().heapUsed;
}

type HeapSubject = 'token sets only' | 'keeper, just started' | 'keeper, after its first refresh';

async function heapPerKeeper(subject: HeapSubject, tokens: TokenKind, n: number): Promise<number> {
  if (subject === 'token sets only') {
    const sets = new Array<TokenSet>(n);
    const before = await fullGc();
    for (let i = 0; i < n; i++) sets[i] = tokenSet(tokens.make, Date.now(), HOUR);
    const after = await fullGc();
    if (sets.length !== n) throw new Error('unreachable');
    return (after - before) / n;
  }
  const fleet = new Fleet(n);
  let requests = 0;
  const refreshed = subject === 'keeper, after its first refresh';
  const before = await fullGc();
  await fleet.start({
    clock: systemClock,
    lifetimeMs: HOUR,
    tokens,
    onRequest: () => {
      requests++;
    },
  });
  // Each keeper refreshes once at once, then holds a new 1-hour token.
  if (refreshed) for (const keeper of fleet.keepers) void keeper.trigger('manual');
  await until(() => requests === (refreshed ? n : 0) && fleet.allFresh(), 30 * SECOND, 'the keepers to settle');
  const after = await fullGc();
  await fleet.stop();
  if (fleet.spentTokenRequests !== 0) throw new Error('a keeper sent a spent refresh token');
  return (after - before) / n;
}

// ---- 2. idle CPU ----------------------------------------------------------------

interface IdleResult {
  readonly n: number;
  /** Timer callbacks the keepers got during the window. */
  readonly timers: number;
  readonly wallMs: number;
  readonly userMs: number;
  readonly systemMs: number;
  readonly percent: number;
  readonly requests: number;
}

async function idleCpu(n: number, seconds: number): Promise<IdleResult> {
  const fleet = new Fleet(n);
  let requests = 0;
  let timers = 0;
  // The system clock, its timers counted as they fire.
  const clock: Clock = {
    now: () => systemClock.now(),
    monotonic: () => systemClock.monotonic(),
    setTimeout: (callback, delayMs, options) =>
      systemClock.setTimeout(
        () => {
          timers++;
          callback();
        },
        delayMs,
        options,
      ),
    clearTimeout: (handle) => {
      systemClock.clearTimeout(handle);
    },
  };
  await fleet.start({
    clock,
    lifetimeMs: HOUR,
    tokens: JWT_TOKENS,
    onRequest: () => {
      requests++;
    },
  });
  await fullGc(); // the set-up's garbage is not the idle keepers' cost
  timers = 0;
  const cpuBefore = process.cpuUsage();
  const wallBefore = performance.now();
  await sleep(seconds * SECOND);
  const cpu = process.cpuUsage(cpuBefore);
  const wallMs = performance.now() - wallBefore;
  await fleet.stop();
  const userMs = cpu.user / 1000;
  const systemMs = cpu.system / 1000;
  return { n, timers, wallMs, userMs, systemMs, percent: ((userMs + systemMs) / wallMs) * 100, requests };
}

// ---- 3. refresh storms ------------------------------------------------------------

interface StormResult {
  readonly scenario: string;
  readonly clock: 'system' | 'fake';
  readonly lifetimeMs: number;
  readonly n: number;
  /** Arrival times (wall ms) of the first refresh of every keeper, sorted. */
  readonly wave1: readonly number[];
  /** Arrival times of the second refresh of every keeper, sorted (fake clock only). */
  readonly wave2: readonly number[] | undefined;
  /** Arrival minus the planned refresh point, ms, sorted (real clock, scheduled refreshes only). */
  readonly lateness: readonly number[] | undefined;
  /** What an even spread over the jitter window would give, % of keepers per second. */
  readonly evenPercent: number | undefined;
  readonly target: boolean;
}

const sortNumbers = (values: number[]): number[] => values.sort((a, b) => a - b);
const evenSpread = (lifetimeMs: number): number => 100 / ((EARLY_REFRESH_SPREAD * lifetimeMs) / SECOND);

/** Tokens issued together, on the real clock: wait for every keeper's scheduled refresh. */
async function wallStormTogether(n: number, lifetimeMs: number): Promise<StormResult> {
  const fleet = new Fleet(n);
  const arrivals: number[] = [];
  const lateness: number[] = [];
  const draws = new Float64Array(n); // each keeper's latest jitter draw, to know when it meant to refresh
  let issuedAt = NaN; // set before the first refresh is due
  issuedAt = await fleet.start({
    clock: systemClock,
    lifetimeMs,
    tokens: JWT_TOKENS,
    random: (i) => () => (draws[i] = Math.random()),
    onRequest: (i) => {
      const at = Date.now();
      arrivals.push(at);
      lateness.push(at - tokenTimes(issuedAt, issuedAt + lifetimeMs, draws[i] ?? 0).refreshAt);
    },
  });
  await until(() => arrivals.length >= n, lifetimeMs + 30 * SECOND, 'the storm');
  await fleet.stop();
  if (fleet.spentTokenRequests !== 0) throw new Error('a keeper sent a spent refresh token');
  return {
    scenario: 'tokens issued together',
    clock: 'system',
    lifetimeMs,
    n,
    wave1: sortNumbers(arrivals.slice(0, n)),
    wave2: undefined,
    lateness: sortNumbers(lateness.slice(0, n)),
    evenPercent: evenSpread(lifetimeMs),
    target: false,
  };
}

/** A bound on a catch-up of every keeper (about 100 s at the pacer's 1% per second), with room to spare. */
const CATCH_UP_BOUND_MS = 5 * MINUTE;

/**
 * On a fake clock, two waves: the first refresh of every keeper and the one
 * after it (its new token was issued when the first wave reached it).
 * `restart`: 1-hour tokens stored 52 minutes ago, so due when the keepers
 * start (`restart-one-by-one`: each started once the one before has). `wake`:
 * 1-hour tokens, then the machine sleeps past their expiry.
 */
async function fakeStorm(
  kind: 'together' | 'restart' | 'restart-one-by-one' | 'wake',
  n: number,
  lifetimeMs: number,
): Promise<StormResult> {
  const clock = new FakeClock();
  const fleet = new Fleet(n);
  const arrivals: number[] = [];
  await fleet.start({
    clock,
    lifetimeMs,
    tokens: JWT_TOKENS,
    issuedAgoMs: kind === 'restart' || kind === 'restart-one-by-one' ? DUE_ISSUED_AGO_MS : 0,
    oneByOne: kind === 'restart-one-by-one',
    onRequest: () => arrivals.push(clock.now()),
  });
  if (kind === 'wake') {
    // The machine sleeps: wall time jumps, timers stand still. On waking, the
    // wake detector triggers each keeper — here in one poll, as one detector
    // for the process (or N detectors started together) would.
    clock.sleep(SLEEP_MS);
    for (const keeper of fleet.keepers) void keeper.trigger('wake');
  }
  // Tokens issued together refresh within 85% of their lifetime; a restart or a wake catches up at
  // once, paced. The second wave ends within 85% of a lifetime after the first.
  const latest = EARLY_REFRESH_FRACTION + EARLY_REFRESH_SPREAD / 2;
  await clock.advance(kind === 'together' ? latest * lifetimeMs + SECOND : CATCH_UP_BOUND_MS);
  if (arrivals.length !== n) throw new Error(`wave 1: ${arrivals.length} requests, expected ${n}`);
  await clock.advance(latest * lifetimeMs + (kind === 'together' ? SECOND : CATCH_UP_BOUND_MS));
  if (arrivals.length !== 2 * n) throw new Error(`wave 2: ${arrivals.length} requests, expected ${2 * n}`);
  await fleet.stop();
  if (fleet.spentTokenRequests !== 0) throw new Error('a keeper sent a spent refresh token');
  return {
    scenario: {
      together: 'tokens issued together',
      restart: `restart, stored tokens due (1 h, issued ${DUE_ISSUED_AGO_MS / MINUTE} min ago)`,
      'restart-one-by-one': `restart, stored tokens due, keepers started one after another`,
      wake: `wake after ${SLEEP_MS / HOUR} h asleep`,
    }[kind],
    clock: 'fake',
    lifetimeMs,
    n,
    wave1: sortNumbers(arrivals.slice(0, n)),
    wave2: sortNumbers(arrivals.slice(n)),
    lateness: undefined,
    evenPercent: kind === 'together' ? evenSpread(lifetimeMs) : undefined,
    target: kind === 'together' && lifetimeMs === HOUR,
  };
}

// ---- formatting ---------------------------------------------------------------

const count = (n: number): string => n.toLocaleString('en-US');
const kb = (bytes: number): string => `${(bytes / 1000).toFixed(2)} KB`;
const percent = (value: number): string => `${value < 1 ? value.toFixed(2) : value.toFixed(1)}%`;
function duration(ms: number): string {
  if (ms < SECOND) return `${ms.toFixed(0)} ms`;
  if (ms < 10 * MINUTE) return `${(ms / SECOND).toFixed(1)} s`;
  return `${(ms / MINUTE).toFixed(1)} min`;
}
function lifetime(ms: number): string {
  if (ms % HOUR === 0) return `${ms / HOUR} h`;
  if (ms % MINUTE === 0) return `${ms / MINUTE} min`;
  return `${ms / SECOND} s`;
}
const quantile = (sorted: readonly number[], q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
const peakPercent = (wave: readonly number[], n: number): number => (peakPerSecond(wave) / n) * 100;
const verdict = (met: boolean): string => (met ? 'met' : 'MISSED');

// ---- run ----------------------------------------------------------------------

const startedAt = performance.now();

const heapCases: readonly (readonly [HeapSubject, TokenKind])[] = [
  ['token sets only', JWT_TOKENS],
  ['keeper, just started', SMALL_TOKENS],
  ['keeper, after its first refresh', SMALL_TOKENS],
  ['keeper, just started', JWT_TOKENS],
  ['keeper, after its first refresh', JWT_TOKENS],
];

// Warm-up: every path runs once (compiled, optimised, lazily initialised) before anything is measured,
// so that no figure carries code the JIT made along the way.
progress('warming up');
for (const [subject, tokens] of heapCases) await heapPerKeeper(subject, tokens, 500);

progress('heap per keeper');
const heapRows: { subject: HeapSubject; tokens: TokenKind; perKeeper: number[] }[] = [];
for (const [subject, tokens] of heapCases) {
  const perKeeper: number[] = [];
  for (const n of SIZES) perKeeper.push(await heapPerKeeper(subject, tokens, n));
  heapRows.push({ subject, tokens, perKeeper });
}

const idle: IdleResult[] = [];
for (const n of SIZES) {
  progress(`idle CPU, ${count(n)} keepers, ${IDLE_SECONDS} s`);
  idle.push(await idleCpu(n, IDLE_SECONDS));
}

const storms: StormResult[] = [];
for (const n of SIZES) {
  progress(`storm on the real clock, ${count(n)} keepers, ${WALL_STORM_LIFETIME_S} s tokens`);
  storms.push(await wallStormTogether(n, WALL_STORM_LIFETIME_S * SECOND));
}
progress('storms on the fake clock');
for (const lifetimeMs of [WALL_STORM_LIFETIME_S * SECOND, 100 * SECOND, 5 * MINUTE, HOUR]) {
  for (const n of SIZES) storms.push(await fakeStorm('together', n, lifetimeMs));
}
for (const kind of ['restart', 'restart-one-by-one', 'wake'] as const) {
  for (const n of SIZES) storms.push(await fakeStorm(kind, n, HOUR));
}
const runSeconds = (performance.now() - startedAt) / SECOND;

// ---- report -------------------------------------------------------------------------

console.log(`bench/scale — ${machineLine()}, ${process.platform} ${process.arch}`);
console.log(
  `TokenKeeper × ${SIZES.map(count).join(' and ')} in one process; DEFAULT_KEEPER_CONFIG; in-memory token endpoint and store per keeper; run took ${runSeconds.toFixed(0)} s\n`,
);

console.log('### Heap per keeper\n');
console.log(
  'heapUsed after a full GC with the keepers running, minus before they were made, ÷ keepers; tokens valid 1 h; a keeper includes its store, refresh function, timer and token set\n',
);
printTable(
  ['what', 'tokens', ...SIZES.map((n) => `bytes/keeper at ${count(n)}`)],
  heapRows.map((row) => [row.subject, row.tokens.label, ...row.perKeeper.map((b) => count(Math.round(b)))]),
);

console.log(`\n### CPU while idle\n`);
console.log(
  `process.cpuUsage() over ${IDLE_SECONDS} s of wall time; every keeper holds a 1-hour token (first refresh ≥ 39 min away); system clock\n`,
);
if (IDLE_SECONDS < 60) {
  console.log(
    `(a short window: a few ms of the runtime's own background work — a GC in tsx's loader thread, say — weigh more; 60 s is the measurement)\n`,
  );
}
printTable(
  ['keepers', 'wall', 'user CPU', 'system CPU', '% of one core', 'keeper timers fired', 'refresh requests'],
  idle.map((r) => [
    count(r.n),
    duration(r.wallMs),
    `${r.userMs.toFixed(1)} ms`,
    `${r.systemMs.toFixed(1)} ms`,
    percent(r.percent),
    String(r.timers),
    String(r.requests),
  ]),
);

console.log(`\n### Refresh storms\n`);
console.log(
  `every keeper refreshes once (wave 1) — and on the fake clock once more (wave 2); peak = most requests arriving in any 1-second window, as % of keepers; "even" = an even spread over the jitter window (${percent(EARLY_REFRESH_SPREAD * 100)} of the lifetime); lateness = arrival − planned refresh point; a restart or a wake is paced: ${CATCH_UP_SHARE * 100}% of the keepers per second\n`,
);
printTable(
  [
    'scenario',
    'clock',
    'lifetime',
    'keepers',
    'wave 1 first→last',
    'wave 1 peak/s',
    'peak % of keepers',
    'even',
    'wave 2 peak %',
    'lateness p50 / max',
  ],
  storms.map((s) => [
    s.scenario,
    s.clock,
    lifetime(s.lifetimeMs),
    count(s.n),
    duration((s.wave1.at(-1) ?? 0) - (s.wave1[0] ?? 0)),
    count(peakPerSecond(s.wave1)),
    percent(peakPercent(s.wave1, s.n)),
    s.evenPercent === undefined ? '—' : percent(s.evenPercent),
    s.wave2 === undefined ? '—' : percent(peakPercent(s.wave2, s.n)),
    s.lateness === undefined ? '—' : `${duration(quantile(s.lateness, 0.5))} / ${duration(s.lateness.at(-1) ?? NaN)}`,
  ]),
);

const realistic = heapRows.filter((row) => row.tokens === JWT_TOKENS && row.subject !== 'token sets only');
const worstHeap = Math.max(...realistic.flatMap((row) => row.perKeeper));
const worstIdle = Math.max(...idle.map((r) => r.percent));
console.log('\ntargets:');
console.log(
  `- heap per keeper < ${kb(HEAP_TARGET_BYTES)} (1 KB JWT + 1 KB refresh token, worst of the keeper rows): ${verdict(worstHeap < HEAP_TARGET_BYTES)} (${kb(worstHeap)})`,
);
console.log(
  `- idle CPU < ${IDLE_CPU_TARGET_PERCENT}% of one core: ${verdict(worstIdle < IDLE_CPU_TARGET_PERCENT)} (${percent(worstIdle)} at worst)`,
);
console.log(`- refresh storm peak < ${STORM_TARGET_PERCENT}% of keepers in any one second:`);
const groups = new Map<string, StormResult[]>();
for (const s of storms) {
  const key = `${s.scenario}, ${lifetime(s.lifetimeMs)} tokens, ${s.clock} clock${s.target ? ' (the realistic case)' : ''}`;
  groups.set(key, [...(groups.get(key) ?? []), s]);
}
for (const [key, group] of groups) {
  const peaks = group.map((s) => peakPercent(s.wave1, s.n));
  const values = group.map((s, i) => `${percent(peaks[i] ?? NaN)} at ${count(s.n)}`).join(', ');
  const why = group[0] === undefined ? '' : limit(group[0]);
  console.log(`  - ${key}: ${verdict(peaks.every((p) => p < STORM_TARGET_PERCENT))} (${values})${why}`);
}

/** Why a storm of tokens issued together cannot meet the target, when it cannot. */
function limit(s: StormResult): string {
  if (s.evenPercent === undefined || s.evenPercent < STORM_TARGET_PERCENT) return '';
  const seconds = s.lifetimeMs / SECOND;
  // Every keeper refreshes at least once per lifetime: N requests in L seconds.
  const floor = 100 / seconds;
  if (floor >= STORM_TARGET_PERCENT) {
    return ` — out of reach for any design: every keeper must refresh once per ${lifetime(s.lifetimeMs)}, so some second carries at least ${percent(floor)} of them`;
  }
  return ` — the jitter spreads refreshes over ${percent(EARLY_REFRESH_SPREAD * 100)} of the lifetime (${duration(EARLY_REFRESH_SPREAD * s.lifetimeMs)}): ${percent(s.evenPercent)} per second if perfectly even; under ${STORM_TARGET_PERCENT}% needs lifetimes over ${lifetime((100 / STORM_TARGET_PERCENT / EARLY_REFRESH_SPREAD) * SECOND)}`;
}
