import { describe, expect, it } from 'vitest';
import { peakPerSecond } from '../bench/peak.js';
import { FakeClock } from '../src/clock/fake.js';
import { DEFAULT_KEEPER_CONFIG } from '../src/config/keeper-config.js';
import { TokenKeeper } from '../src/keeper/keeper.js';
import { CatchUpPacer } from '../src/keeper/pacer.js';
import type { KeeperEvent } from '../src/keeper/types.js';
import {
  HOUR,
  MINUTE,
  MemoryStore,
  SECOND,
  TokenEndpoint,
  WAF_403,
  attempts,
  seededRandom,
} from './support/harness.js';

describe('CatchUpPacer', () => {
  /** A pacer on a fake clock; `at(ms)` moves the clock to monotonic time `ms`. */
  function pacerAt(): { clock: FakeClock; pacer: CatchUpPacer; at: (ms: number) => Promise<void> } {
    const clock = new FakeClock();
    return { clock, pacer: new CatchUpPacer(clock), at: (ms) => clock.advanceTo(ms) };
  }

  /** A keeper for the pacer, counting the times it is told its turn has come. */
  function keeper(): { turns: number; onTurn: () => void } {
    const k = {
      turns: 0,
      onTurn: () => {
        k.turns++;
      },
    };
    return k;
  }

  it('admits at once while the bucket holds an admission, then at max(5, 1% of the keepers) per second', async () => {
    const { pacer, at } = pacerAt();
    const [a, b, c] = [keeper(), keeper(), keeper()];
    for (const k of [a, b, c]) pacer.join(k);
    expect(pacer.admit(a, false, a.onTurn)).toBe(0);
    expect(pacer.admit(b, false, b.onTurn)).toBe(200); // 5 per second
    expect(pacer.admit(c, false, c.onTurn)).toBe(400);
    expect(pacer.turnIn(b)).toBe(200); // the head asks again then…
    expect(pacer.turnIn(c)).toBe(Infinity); // …the others are told when their turn comes
    expect(pacer.turnIn(a)).toBeUndefined(); // not in line
    await at(100);
    expect(pacer.admit(b, false, b.onTurn)).toBe(100); // too early: it keeps its place
    expect(pacer.waiting).toBe(2);
    await at(200);
    expect(pacer.admit(b, false, b.onTurn)).toBe(0);
    expect(c.turns).toBe(1);
    expect(pacer.turnIn(c)).toBe(200);
  });

  it('evaluates the rate when a keeper asks: keepers that joined since count at once', async () => {
    const { pacer, at } = pacerAt();
    const [a, b] = [keeper(), keeper()];
    pacer.join(a);
    expect(pacer.admit(a, false, a.onTurn)).toBe(0);
    expect(pacer.admit(b, false, b.onTurn)).toBe(200); // asked while one keeper was registered
    for (let i = 0; i < 9_999; i++) pacer.join({});
    expect(pacer.rate).toBe(100);
    expect(pacer.turnIn(b)).toBe(10);
    await at(10);
    expect(pacer.admit(b, false, b.onTurn)).toBe(0);
  });

  it('holds one place per keeper however often it asks, and nothing is left behind when it withdraws or leaves', () => {
    const { pacer } = pacerAt();
    const keepers = Array.from({ length: 5 }, keeper);
    for (const k of keepers) pacer.join(k);
    const [first, ...others] = keepers;
    expect(pacer.admit(first as object, false, () => undefined)).toBe(0);
    for (let round = 0; round < 6; round++) for (const k of others) pacer.admit(k, false, k.onTurn);
    expect(pacer.waiting).toBe(4); // the others asked six times each
    for (const k of others) pacer.withdraw(k); // each started another attempt
    pacer.withdraw(others[0] as object); // twice counts once
    expect(pacer.waiting).toBe(0);
    const newcomer = keeper();
    pacer.join(newcomer);
    expect(pacer.admit(newcomer, false, newcomer.onTurn)).toBe(200); // nobody ahead: the bucket's next admission
    pacer.leave(newcomer);
    expect(pacer.waiting).toBe(0);
  });

  it('tells the next keeper in line when the head withdraws or leaves', () => {
    const { pacer } = pacerAt();
    const [a, b, c] = [keeper(), keeper(), keeper()];
    for (const k of [a, b, c]) pacer.join(k);
    pacer.admit(a, false, a.onTurn);
    pacer.admit(b, false, b.onTurn);
    pacer.admit(c, false, c.onTurn);
    pacer.withdraw(c); // not the head: nobody's turn changes
    expect([b.turns, c.turns]).toEqual([0, 0]);
    pacer.admit(c, false, c.onTurn);
    pacer.leave(b); // the head stops
    expect(c.turns).toBe(1);
    expect(pacer.turnIn(c)).toBe(200);
  });

  it('puts keepers with no valid token ahead of those still serving one, also when a token expires in line', async () => {
    const { pacer, at } = pacerAt();
    const [first, valid1, valid2, expired] = [keeper(), keeper(), keeper(), keeper()];
    for (const k of [first, valid1, valid2, expired]) pacer.join(k);
    pacer.admit(first, false, first.onTurn);
    expect(pacer.admit(valid1, false, valid1.onTurn)).toBe(200);
    expect(pacer.admit(valid2, false, valid2.onTurn)).toBe(400);
    expect(pacer.admit(expired, true, expired.onTurn)).toBe(200); // ahead of both
    expect(pacer.turnIn(valid1)).toBe(Infinity); // no longer the head
    await at(50);
    expect(pacer.admit(valid2, true, valid2.onTurn)).toBe(350); // its token expired: behind the other urgent one
    await at(200);
    expect(pacer.admit(expired, true, expired.onTurn)).toBe(0);
    expect(valid2.turns).toBe(1);
    await at(400);
    expect(pacer.admit(valid2, true, valid2.onTurn)).toBe(0);
    expect(valid1.turns).toBe(1);
    await at(600);
    expect(pacer.admit(valid1, false, valid1.onTurn)).toBe(0);
  });

  it('does not queue a keeper whose own attempt comes before its turn would', () => {
    const { pacer } = pacerAt();
    const [a, b] = [keeper(), keeper()];
    pacer.join(a);
    pacer.join(b);
    pacer.admit(a, false, a.onTurn);
    expect(pacer.admit(b, false, b.onTurn, 150)).toBe(200);
    expect(pacer.waiting).toBe(0);
    expect(pacer.admit(b, false, b.onTurn, 250)).toBe(200);
    expect(pacer.waiting).toBe(1);
  });

  it('refills while nobody asks, by wall or monotonic time: after a quiet spell or a sleep the first goes at once', async () => {
    const { clock, pacer, at } = pacerAt();
    const [a, b] = [keeper(), keeper()];
    expect(pacer.admit(a, false, a.onTurn)).toBe(0);
    await at(10 * SECOND);
    expect(pacer.admit(a, false, a.onTurn)).toBe(0);
    clock.sleep(HOUR); // monotonic time stands still
    expect(pacer.admit(a, false, a.onTurn)).toBe(0);
    expect(pacer.admit(b, false, b.onTurn)).toBe(200);
  });
});

interface Member {
  readonly keeper: TokenKeeper;
  readonly endpoint: TokenEndpoint;
  readonly store: MemoryStore;
  readonly events: KeeperEvent[];
}

interface MemberOptions {
  /** The stored 1-hour token was issued this long ago (default 0: just now). */
  readonly issuedAgoMs?: number;
  readonly random?: () => number;
  /** The store cannot be read: start() rejects. */
  readonly failLoads?: boolean;
}

/** One keeper of the process on `clock`, with its own token endpoint and store; not started. */
function member(clock: FakeClock, options: MemberOptions = {}): Member {
  const endpoint = new TokenEndpoint(clock);
  const initial = endpoint.login();
  const issuedAt = initial.issuedAt - (options.issuedAgoMs ?? 0);
  const store = new MemoryStore(clock);
  store.tokens = { ...initial, issuedAt, expiresAt: issuedAt + HOUR };
  store.failLoads = options.failLoads ?? false;
  const events: KeeperEvent[] = [];
  const keeper = new TokenKeeper({
    clock,
    config: DEFAULT_KEEPER_CONFIG,
    refresh: (refreshToken, signal) => endpoint.refresh(refreshToken, signal),
    store,
    status: () => undefined,
    random: options.random ?? (() => 0.5),
  });
  keeper.on((event) => events.push(event));
  return { keeper, endpoint, store, events };
}

/** N keepers in one process (one fake clock), each with its own token endpoint and store. */
async function fleet(
  n: number,
  options: { issuedAgoMs?: number; random?: (i: number) => () => number; sequential?: boolean } = {},
): Promise<{ clock: FakeClock; keepers: TokenKeeper[]; endpoints: TokenEndpoint[]; members: Member[] }> {
  const clock = new FakeClock();
  const members = Array.from({ length: n }, (_, i) =>
    member(clock, {
      ...(options.issuedAgoMs !== undefined && { issuedAgoMs: options.issuedAgoMs }),
      ...(options.random && { random: options.random(i) }),
    }),
  );
  if (options.sequential === true) for (const m of members) await m.keeper.start();
  else await Promise.all(members.map((m) => m.keeper.start()));
  return { clock, keepers: members.map((m) => m.keeper), endpoints: members.map((m) => m.endpoint), members };
}

/** Monotonic times of every request the endpoints received, sorted. */
function requestTimes(clock: FakeClock, endpoints: readonly TokenEndpoint[], since = 0): number[] {
  const offset = clock.now() - clock.monotonic();
  return endpoints
    .flatMap((e) => e.requests.map((r) => r.at - offset))
    .filter((t) => t >= since)
    .sort((a, b) => a - b);
}

describe('TokenKeeper — catch-up attempts of many keepers in one process are paced', () => {
  it('a restart of 1,000 keepers whose stored tokens are due: 1% per second, the first at once', async () => {
    const { clock, keepers, endpoints, members } = await fleet(1_000, { issuedAgoMs: 52 * MINUTE });
    await clock.advance(2 * MINUTE);
    const times = requestTimes(clock, endpoints);
    expect(times).toHaveLength(1_000);
    expect(times[0]).toBe(0);
    expect(peakPerSecond(times)).toBeLessThanOrEqual(11); // 10 per second, and one on the window's edge
    expect(times.at(-1)).toBeLessThanOrEqual(100 * SECOND);
    expect(keepers.every((k) => k.status === 'running' && k.peekToken() !== undefined)).toBe(true);
    expect(new Set(members.flatMap((m) => attempts(m.events).map((a) => a.trigger)))).toEqual(new Set(['startup']));
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

  it('keepers started one after another are paced at the rate of all of them, not of those started so far', async () => {
    const { clock, keepers, endpoints } = await fleet(10_000, { issuedAgoMs: 52 * MINUTE, sequential: true });
    await clock.advance(3 * MINUTE);
    const times = requestTimes(clock, endpoints);
    expect(times).toHaveLength(10_000);
    expect(times.at(-1)).toBeLessThanOrEqual(101 * SECOND); // 1% per second: ~100 s, not 400 s
    expect(peakPerSecond(times)).toBeLessThanOrEqual(101);
    expect(keepers.every((k) => k.peekToken() !== undefined)).toBe(true);
    await Promise.all(keepers.map((k) => k.stop()));
  });

  it('network changes during an outage do not pile up places in line: a newcomer waits no longer than a catch-up of every keeper', async () => {
    const waits: number[] = [];
    for (const changes of [1, 6]) {
      const { clock, keepers, endpoints } = await fleet(1_000);
      for (const endpoint of endpoints) endpoint.fault = WAF_403;
      await clock.advance(61 * MINUTE); // every token has expired; every keeper retries on the slow tier
      for (let i = 0; i < changes; i++) {
        for (const keeper of keepers) void keeper.trigger('network');
        await clock.advance(11 * SECOND);
      }
      const newcomer = member(clock, { issuedAgoMs: 52 * MINUTE });
      const startedAt = clock.monotonic();
      await newcomer.keeper.start();
      await clock.advance(10 * MINUTE);
      waits.push((requestTimes(clock, [newcomer.endpoint])[0] ?? Infinity) - startedAt);
      await Promise.all([...keepers, newcomer.keeper].map((k) => k.stop()));
    }
    // 1,000 keepers: 10 per second, so every keeper's catch-up fits in 100 s, however many changes came.
    expect(Math.max(...waits)).toBeLessThanOrEqual(100 * SECOND);
  }, 60_000);

  it('a keeper waiting its turn with no valid token says so, goes before keepers with a valid one, and a request still refreshes at once', async () => {
    const clock = new FakeClock();
    // Due, still valid for 30 s (sent until 59 min), started first; then tokens that expired an hour ago.
    const valid = Array.from({ length: 600 }, () => member(clock, { issuedAgoMs: 58.5 * MINUTE }));
    const expired = Array.from({ length: 400 }, () => member(clock, { issuedAgoMs: 2 * HOUR }));
    const everyone = [...valid, ...expired];
    await Promise.all(everyone.map((m) => m.keeper.start()));
    const startedAt = clock.now();
    await clock.advance(5 * SECOND);
    const [waitingExpired] = expired.slice(-1);
    if (waitingExpired === undefined) throw new Error('setup');
    expect(waitingExpired.endpoint.requests).toHaveLength(0);
    expect(waitingExpired.keeper.status).toBe('auth_retrying');
    expect(waitingExpired.keeper.snapshot().refresh).toMatchObject({
      state: 'failing',
      nextAttemptAt: expect.any(Number) as unknown,
    });
    expect(waitingExpired.keeper.snapshot().refresh.nextAttemptAt).toBeGreaterThan(clock.now());
    // The valid tokens expire for sending at 30 s: the keepers still waiting say so.
    await clock.advance(30 * SECOND);
    const [waitingValid] = valid.slice(-1);
    if (waitingValid === undefined) throw new Error('setup');
    expect(waitingValid.keeper.peekToken()).toBeUndefined();
    expect(waitingValid.keeper.status).toBe('auth_retrying');
    expect(waitingValid.keeper.snapshot().refresh.state).toBe('failing');
    // A request does not wait its turn.
    const token = waitingValid.keeper.getToken();
    await clock.flush();
    expect(await token).toBe(waitingValid.keeper.peekToken());
    expect(waitingValid.keeper.status).toBe('running');
    expect(attempts(waitingValid.events).map((a) => a.trigger)).toEqual(['demand']);
    await clock.advance(2 * MINUTE);
    expect(everyone.every((m) => m.endpoint.requests.length === 1 && m.keeper.status === 'running')).toBe(true);
    // 10 per second: the first keeper at once, then the 400 without a token, before the 599 others.
    const firstAt = (ms: Member[]): number[] => ms.map((m) => m.endpoint.requests[0]?.at ?? NaN);
    expect(Math.max(...firstAt(expired))).toBeLessThan(Math.min(...firstAt(valid.slice(1, -1))));
    expect(Math.max(...firstAt(everyone)) - startedAt).toBeLessThanOrEqual(100 * SECOND);
    await Promise.all(everyone.map((m) => m.keeper.stop()));
  });

  it('a keeper whose start() failed is not counted', async () => {
    const clock = new FakeClock();
    for (let i = 0; i < 1_000; i++) {
      await expect(member(clock, { failLoads: true }).keeper.start()).rejects.toMatchObject({ code: 'EBUSY' });
    }
    const healthy = Array.from({ length: 10 }, () => member(clock));
    await Promise.all(healthy.map((m) => m.keeper.start()));
    await clock.advance(10 * MINUTE);
    clock.sleep(8 * HOUR);
    const wokeAt = clock.monotonic();
    for (const m of healthy) void m.keeper.trigger('wake');
    await clock.advance(5 * SECOND);
    // 10 keepers: 5 per second, not the 10 per second of 1,010.
    const slots = Array.from({ length: 10 }, (_, i) => wokeAt + i * 200);
    expect(
      requestTimes(
        clock,
        healthy.map((m) => m.endpoint),
        wokeAt,
      ),
    ).toEqual(slots);
    await Promise.all(healthy.map((m) => m.keeper.stop()));
  });

  it('a paced attempt is reported with what triggered it: startup, wake, network', async () => {
    const { clock, keepers, members } = await fleet(20, { issuedAgoMs: 52 * MINUTE });
    await clock.advance(10 * SECOND);
    clock.sleep(8 * HOUR);
    for (const keeper of keepers) void keeper.trigger('wake');
    await clock.advance(10 * SECOND);
    clock.sleep(8 * HOUR); // and no wake noticed, but the network changed
    for (const keeper of keepers) void keeper.trigger('network');
    await clock.advance(10 * SECOND);
    for (const m of members) {
      expect(attempts(m.events).map((a) => a.trigger)).toEqual(['startup', 'wake', 'network']);
    }
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
