import { describe, expect, it } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { DEFAULT_KEEPER_CONFIG } from '../src/config/keeper-config.js';
import { TokenKeeper } from '../src/keeper/keeper.js';
import { CatchUpPacer } from '../src/keeper/pacer.js';
import { HOUR, MINUTE, MemoryStore, SECOND, TokenEndpoint, WAF_403, seededRandom } from './support/harness.js';

describe('CatchUpPacer', () => {
  it('hands out slots at 5 per second for a few keepers, and at 1% of them per second for many', () => {
    const pacer = new CatchUpPacer();
    const keepers = Array.from({ length: 10_000 }, () => ({}));
    pacer.join(keepers[0] as object);
    expect([0, 0, 0].map(() => pacer.reserve(1000))).toEqual([0, 200, 400]);
    for (const keeper of keepers) pacer.join(keeper);
    expect(pacer.reserve(1000)).toBe(600); // slots already handed out are kept
    expect(pacer.reserve(1000)).toBe(610); // 100 per second
    for (const keeper of keepers.slice(1_000)) pacer.leave(keeper);
    pacer.leave(keepers[1_000] as object); // leaving twice counts once
    expect(pacer.reserve(1000)).toBe(620);
    expect(pacer.reserve(1000)).toBe(720); // 10 per second
  });

  it('a slot in the past is free at once', () => {
    const pacer = new CatchUpPacer();
    expect(pacer.reserve(0)).toBe(0);
    expect(pacer.reserve(10 * SECOND)).toBe(0);
    expect(pacer.reserve(10 * SECOND)).toBe(200);
  });
});

/** N keepers in one process (one fake clock), each with its own token endpoint and store. */
async function fleet(
  n: number,
  options: { issuedAgoMs?: number; random?: (i: number) => () => number } = {},
): Promise<{ clock: FakeClock; keepers: TokenKeeper[]; endpoints: TokenEndpoint[] }> {
  const clock = new FakeClock();
  const endpoints: TokenEndpoint[] = [];
  const keepers: TokenKeeper[] = [];
  const starts: Promise<void>[] = [];
  for (let i = 0; i < n; i++) {
    const endpoint = new TokenEndpoint(clock);
    const initial = endpoint.login();
    const issuedAt = initial.issuedAt - (options.issuedAgoMs ?? 0);
    const tokens = { ...initial, issuedAt, expiresAt: issuedAt + HOUR };
    const store = new MemoryStore(clock);
    store.tokens = tokens;
    const keeper = new TokenKeeper({
      clock,
      config: DEFAULT_KEEPER_CONFIG,
      refresh: (refreshToken, signal) => endpoint.refresh(refreshToken, signal),
      store,
      status: () => undefined,
      random: options.random?.(i) ?? (() => 0.5),
    });
    endpoints.push(endpoint);
    keepers.push(keeper);
    starts.push(keeper.start());
  }
  await Promise.all(starts);
  return { clock, keepers, endpoints };
}

/** Monotonic times of every request the endpoints received, sorted. */
function requestTimes(clock: FakeClock, endpoints: readonly TokenEndpoint[], since = 0): number[] {
  const offset = clock.now() - clock.monotonic();
  return endpoints
    .flatMap((e) => e.requests.map((r) => r.at - offset))
    .filter((t) => t >= since)
    .sort((a, b) => a - b);
}

/** The most requests in any window of one second. */
function peakPerSecond(sorted: readonly number[]): number {
  let best = 0;
  let from = 0;
  for (let i = 0; i < sorted.length; i++) {
    while ((sorted[i] ?? 0) - (sorted[from] ?? 0) >= SECOND) from++;
    best = Math.max(best, i - from + 1);
  }
  return best;
}

describe('TokenKeeper — catch-up attempts of many keepers in one process are paced', () => {
  it('a restart of 1,000 keepers whose stored tokens are due: 1% per second, the first at once', async () => {
    const { clock, keepers, endpoints } = await fleet(1_000, { issuedAgoMs: 52 * MINUTE });
    await clock.advance(2 * MINUTE);
    const times = requestTimes(clock, endpoints);
    expect(times).toHaveLength(1_000);
    expect(times[0]).toBe(0);
    expect(peakPerSecond(times)).toBeLessThanOrEqual(11); // 10 per second, and one on the window's edge
    expect(times.at(-1)).toBeLessThan(100 * SECOND);
    expect(keepers.every((k) => k.status === 'running' && k.peekToken() !== undefined)).toBe(true);
    await Promise.all(keepers.map((k) => k.stop()));
  });

  it('a lone keeper is never held back: a start with a due token refreshes at once', async () => {
    const { clock, endpoints } = await fleet(1, { issuedAgoMs: 52 * MINUTE });
    await clock.flush();
    expect(requestTimes(clock, endpoints)).toEqual([0]);
  });

  it('a wake: fresh keepers past their refresh point and failing ones both wait for their slot', async () => {
    const { clock, keepers, endpoints } = await fleet(4);
    const [failing] = endpoints;
    if (failing === undefined) throw new Error('setup');
    failing.fault = WAF_403;
    await clock.advance(46 * MINUTE); // every keeper refreshed at 45 min; the first failed and is in backoff
    expect(keepers.map((k) => k.state)).toEqual(['backoff', 'fresh', 'fresh', 'fresh']);
    failing.fault = undefined;
    clock.sleep(8 * HOUR);
    const wokeAt = clock.monotonic();
    for (const keeper of keepers) void keeper.trigger('wake');
    await clock.advance(SECOND);
    // A few keepers: 5 per second.
    expect(requestTimes(clock, endpoints, wokeAt)).toEqual([0, 200, 400, 600].map((t) => wokeAt + t));
    expect(keepers.map((k) => k.status)).toEqual(['running', 'running', 'running', 'running']);
    await Promise.all(keepers.map((k) => k.stop()));
  });

  it('a request waiting for a token is never paced', async () => {
    const { clock, keepers, endpoints } = await fleet(100);
    await clock.advance(10 * MINUTE);
    clock.sleep(8 * HOUR); // every token has expired
    const wokeAt = clock.monotonic();
    for (const keeper of keepers) void keeper.trigger('wake');
    const last = keepers.at(-1);
    expect(last?.peekToken()).toBeUndefined();
    const token = last?.getToken();
    await clock.flush();
    expect(await token).toBe(last?.peekToken());
    expect(clock.monotonic()).toBe(wokeAt);
    // The first keeper's slot, and the last keeper's demand; the other 98 are paced over 20 s.
    expect(requestTimes(clock, endpoints, wokeAt)).toEqual([wokeAt, wokeAt]);
    await clock.advance(20 * SECOND);
    expect(requestTimes(clock, endpoints, wokeAt)).toHaveLength(100);
    await Promise.all(keepers.map((k) => k.stop()));
  });

  it('a stopped keeper no longer counts: the pace follows the keepers still running', async () => {
    const { clock, keepers, endpoints } = await fleet(1_000);
    await Promise.all(keepers.slice(10).map((k) => k.stop()));
    await clock.advance(10 * MINUTE);
    clock.sleep(8 * HOUR);
    const wokeAt = clock.monotonic();
    for (const keeper of keepers.slice(0, 10)) void keeper.trigger('wake');
    await clock.advance(5 * SECOND);
    // 10 keepers left: 5 per second, not the 10 per second of 1,000.
    const slots = Array.from({ length: 10 }, (_, i) => wokeAt + i * 200);
    expect(requestTimes(clock, endpoints, wokeAt)).toEqual(slots);
    await Promise.all(keepers.map((k) => k.stop()));
  });

  it('tokens issued together are refreshed over a fifth of their lifetime (65%–85%)', async () => {
    const { clock, keepers, endpoints } = await fleet(1_000, { random: (i) => seededRandom(i) });
    await clock.advance(HOUR);
    const times = requestTimes(clock, endpoints);
    expect(times).toHaveLength(1_000);
    expect(times[0]).toBeGreaterThanOrEqual(0.65 * HOUR);
    expect(times.at(-1)).toBeLessThan(0.85 * HOUR);
    expect((times.at(-1) ?? 0) - (times[0] ?? 0)).toBeGreaterThan(0.19 * HOUR);
    await Promise.all(keepers.map((k) => k.stop()));
  });
});
