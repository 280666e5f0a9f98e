import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { ATTEMPT_DEADLINE_MS, TokenKeeper, TokenUnavailableError } from '../src/keeper/keeper.js';
import { FakeClock } from '../src/clock/fake.js';
import { tokenTimes } from '../src/keeper/timing.js';
import type { TokenSet } from '../src/keeper/types.js';
import {
  type Harness,
  HOUR,
  INVALID_CLIENT,
  INVALID_GRANT,
  MINUTE,
  REFUSED,
  SECOND,
  STORE_LOCK_TIMEOUT_MS,
  WAF_403,
  attempts,
  startHarness,
} from './support/harness.js';

/** Resolves a getToken() call to its token or its error code, letting fake time run. */
async function tokenOrCode(promise: Promise<string>): Promise<string> {
  return promise.then(
    (token) => token,
    (error: unknown) => (error instanceof TokenUnavailableError ? error.code : 'OTHER'),
  );
}

describe('TokenKeeper — healthy life', () => {
  it('refreshes early, at 75% of the lifetime, and keeps running with no status writes', async () => {
    const h = await startHarness();
    await h.clock.advance(44 * MINUTE);
    expect(h.endpoint.requests).toHaveLength(0);
    await h.clock.advance(2 * MINUTE);
    expect(h.endpoint.requests).toHaveLength(1);
    expect(h.endpoint.requests[0]?.at).toBe(h.clock.now() - 1 * MINUTE); // at 45 min
    await h.clock.advance(10 * HOUR);
    expect(h.endpoint.requests.length).toBeGreaterThanOrEqual(13);
    expect(h.statuses).toEqual([]);
    expect(h.keeper.peekToken()).toBe(`at-${h.endpoint.requests.length + 1}`);
  });

  it.each([1, 10, 300, 3600, 86_400])(
    'a %s-second token is refreshed between 65 and 85 percent of its life, before it expires for sending',
    (seconds) => {
      const lifetime = seconds * SECOND;
      const at = (random: number): number => tokenTimes(0, lifetime, random).refreshAt / lifetime;
      expect(at(0)).toBeCloseTo(0.65);
      expect(at(0.5)).toBeCloseTo(0.75);
      expect(at(0.999_999)).toBeCloseTo(0.85);
      const { sendExpiresAt } = tokenTimes(0, lifetime, 0.999_999);
      expect(sendExpiresAt / lifetime).toBeGreaterThanOrEqual(0.9);
    },
  );

  it('persists a rotated refresh token before using it', async () => {
    const h = await startHarness();
    const served: string[] = [];
    h.keeper.on((event) => {
      if (event.type === 'state' && event.to === 'fresh') served.push(h.keeper.peekToken() ?? '');
    });
    await h.clock.advance(46 * MINUTE);
    expect(h.store.saved).toHaveLength(1);
    expect(h.store.saved[0]?.refreshToken).toBe(h.endpoint.current);
    expect(served).toEqual([h.store.saved[0]?.accessToken]);
  });

  it('keeps the old refresh token when the response carries none', async () => {
    const h = await startHarness();
    h.endpoint.rotate = false;
    await h.clock.advance(46 * MINUTE);
    expect(h.store.saved[0]?.refreshToken).toBe('rt-1');
    await h.clock.advance(46 * MINUTE);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok', 'ok']);
  });

  it('idles with a token that has no expiry: no refresh, no status change', async () => {
    const h = await startHarness({ lifetimeSeconds: undefined });
    await h.clock.advance(30 * 24 * HOUR);
    expect(h.endpoint.requests).toHaveLength(0);
    expect(h.statuses).toEqual([]);
    expect(await h.keeper.getToken()).toBe('at-1');
  });

  it('waits out a token valid for a year, although timers cannot wait that long', async () => {
    const h = await startHarness({ lifetimeSeconds: 365 * 24 * 3600 });
    await h.clock.advance(270 * 24 * HOUR);
    expect(h.endpoint.requests).toHaveLength(0);
    await h.clock.advance(10 * 24 * HOUR);
    expect(h.endpoint.requests).toHaveLength(1);
  });

  it('keeps serving from memory when the store cannot save, and reports it', async () => {
    const h = await startHarness();
    h.store.failSaves = true;
    await h.clock.advance(46 * MINUTE);
    expect(h.events.some((e) => e.type === 'persist_failed' && e.detail === 'ENOSPC')).toBe(true);
    expect(await h.keeper.getToken()).toBe('at-2');
    expect(h.statuses).toEqual([]);
    // The store still holds the older set: it is not mistaken for another process's rotation.
    await h.clock.advance(46 * MINUTE);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok', 'ok']);
  });

  it('an attempt lets go of its abort controller and listener when it ends', async () => {
    const h = await startHarness();
    const signals: AbortSignal[] = [];
    const refresh = h.endpoint.refresh;
    Object.defineProperty(h.endpoint, 'refresh', {
      value: (refreshToken: string, signal: AbortSignal) => {
        signals.push(signal);
        return refresh(refreshToken, signal);
      },
    });
    await h.clock.advance(46 * MINUTE);
    const [signal] = signals;
    expect(signal).toBeDefined();
    expect(getEventListeners(signal as AbortSignal, 'abort')).toEqual([]);
    await h.keeper.stop();
    expect(signal?.aborted).toBe(false); // the keeper no longer held its controller
  });

  it('does not serve a refreshed token before its save has completed', async () => {
    const h = await startHarness();
    h.store.saveDelayMs = 2 * SECOND;
    await h.clock.advance(45 * MINUTE + SECOND); // refreshed at 45:00, saving until 45:02
    expect(h.endpoint.requests).toHaveLength(1);
    expect(h.keeper.peekToken()).toBe('at-1');
    await h.clock.advance(SECOND);
    expect(h.store.tokens?.accessToken).toBe('at-2');
    expect(h.keeper.peekToken()).toBe('at-2');
  });

  it('new credentials put in place while a save is running are what the store ends with', async () => {
    const h = await startHarness();
    h.store.saveDelays.push(5 * SECOND, 0); // the refresh's save is slow, the login's fast
    await h.clock.advance(45 * MINUTE + SECOND); // the refreshed set is being saved
    const login = h.endpoint.login();
    h.keeper.setTokens(login); // `tether login` meanwhile
    await h.clock.advance(10 * SECOND);
    expect(h.store.tokens).toEqual(login);
    expect(h.keeper.peekToken()).toBe(login.accessToken);
  });

  it('a server issuing tokens that are due on arrival does not drive a tight loop', async () => {
    const h = await startHarness({ lifetimeSeconds: 0 });
    await h.clock.advance(10 * MINUTE);
    const times = h.endpoint.requests.map((r) => r.at);
    expect(times.length).toBeGreaterThan(1);
    expect(times.length).toBeLessThanOrEqual(10 * 6 + 1);
    for (let i = 1; i < times.length; i++) {
      expect((times[i] ?? 0) - (times[i - 1] ?? 0)).toBeGreaterThanOrEqual(h.config.probeMinInterval);
    }
  });
});

describe('TokenKeeper — failures', () => {
  it('permanent on the hot path → one unauthenticated, no further requests', async () => {
    const h = await startHarness();
    h.endpoint.fault = INVALID_CLIENT;
    await h.clock.advance(HOUR); // token expired
    const calls = Array.from({ length: 5 }, () => tokenOrCode(h.keeper.getToken()));
    await h.clock.advance(SECOND);
    expect(await Promise.all(calls)).toEqual(Array(5).fill('ERR_UNAUTHENTICATED'));
    expect(h.statuses.map((s) => s.status)).toEqual(['unauthenticated']);
    const requests = h.endpoint.requests.length;
    await h.clock.advance(24 * HOUR);
    expect(h.endpoint.requests).toHaveLength(requests);
    expect(h.keeper.state).toBe('unauthenticated');
  });

  it('transient then success → no status change', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(45 * MINUTE + SECOND);
    expect(attempts(h.events).map((a) => a.outcome)).toEqual(['transient']);
    h.endpoint.fault = undefined;
    await h.clock.advance(30 * SECOND);
    expect(attempts(h.events).map((a) => a.outcome)).toEqual(['transient', 'success']);
    expect(h.statuses).toEqual([]);
    expect(h.keeper.snapshot().refresh.state).toBe('ok');
  });

  it('transient then permanent → unauthenticated', async () => {
    const h = await startHarness();
    h.endpoint.fault = REFUSED;
    await h.clock.advance(45 * MINUTE + SECOND);
    h.endpoint.fault = INVALID_CLIENT;
    await h.clock.advance(30 * SECOND);
    expect(attempts(h.events).map((a) => a.outcome)).toEqual(['transient', 'permanent']);
    expect(h.statuses.map((s) => s.status)).toEqual(['unauthenticated']);
  });

  it('short tier exhausted with a valid token left → still running, refresh degraded', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(48 * MINUTE);
    expect(attempts(h.events).length).toBeGreaterThanOrEqual(6); // 5 short tries, then the slow tier
    expect(h.statuses).toEqual([]);
    expect(h.keeper.status).toBe('running');
    expect(h.keeper.snapshot().refresh.state).toBe('degraded');
    expect(await h.keeper.getToken()).toBe('at-1');
  });

  it('exhausted and token expired → auth_retrying, written once → first success → running', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(3 * HOUR);
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying']);
    expect(h.statuses[0]?.at).toBe(h.store.tokens?.expiresAt !== undefined ? h.store.tokens.expiresAt - MINUTE : NaN);
    expect(h.keeper.snapshot().refresh.state).toBe('failing');
    h.endpoint.fault = undefined;
    await h.clock.advance(5 * MINUTE);
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying', 'running']);
    expect(await h.keeper.getToken()).toMatch(/^at-/);
  });

  it('no valid token left and the refresh failing → auth_retrying at once, even in the short tier', async () => {
    const h = await startHarness();
    await h.clock.advance(10 * MINUTE);
    h.clock.sleep(2 * HOUR); // the laptop slept past the token's expiry…
    h.endpoint.fault = REFUSED; // …and wakes with the network not up yet
    await h.keeper.trigger('wake');
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying']);
    h.endpoint.fault = undefined;
    await h.clock.advance(30 * SECOND); // the short tier's next try
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying', 'running']);
  });

  it('places one attempt just before the token expires for sending', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(HOUR);
    const sendExpiry = (h.store.tokens?.expiresAt ?? 0) - MINUTE;
    const before = h.endpoint.requests.filter((r) => r.at < sendExpiry).map((r) => r.at);
    const last = before[before.length - 1] ?? 0;
    expect(sendExpiry - last).toBeGreaterThan(0);
    // Within the lead (5 s) plus the probe minimum, which keeps it from crowding the attempt before.
    expect(sendExpiry - last).toBeLessThanOrEqual(5 * SECOND + h.config.probeMinInterval);
  });

  it('ceiling → unauthenticated with a reason naming the ceiling, and no stale-registration hint', async () => {
    const h = await startHarness({ dynamicClient: true, config: { ceiling: 2 * HOUR } });
    h.endpoint.fault = WAF_403;
    await h.clock.advance(4 * HOUR);
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying', 'unauthenticated']);
    expect(h.statuses[1]?.reason).toContain('TETHER_TOKEN_AUTH_RETRYING_MAX_ELAPSED');
    expect(h.events.filter((e) => e.type === 'hint')).toEqual([]);
    const failingSince = h.keeper.snapshot().refresh.failingSince ?? 0;
    expect(h.statuses[1]?.at).toBeGreaterThan(failingSince + 2 * HOUR);
    expect(h.statuses[1]?.at).toBeLessThanOrEqual(failingSince + 2 * HOUR + 5 * MINUTE);
  });

  it('ceiling 0 never gives up', async () => {
    const h = await startHarness({ config: { ceiling: 0 } });
    h.endpoint.fault = WAF_403;
    await h.clock.advance(7 * 24 * HOUR);
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying']);
    h.endpoint.fault = undefined;
    await h.clock.advance(5 * MINUTE);
    expect(h.keeper.status).toBe('running');
  });

  it('permanent during auth_retrying → unauthenticated at once', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(2 * HOUR);
    expect(h.keeper.status).toBe('auth_retrying');
    h.endpoint.fault = INVALID_GRANT;
    const before = h.endpoint.requests.length;
    await h.clock.advance(5 * MINUTE);
    expect(h.endpoint.requests).toHaveLength(before + 1);
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying', 'unauthenticated']);
    expect(h.statuses[1]?.at).toBe(h.endpoint.requests[before]?.at);
  });

  it('a stale-registration hint after a ceiling give-up then a real permanent error fires exactly once', async () => {
    const h = await startHarness({ dynamicClient: true, name: 'work', config: { ceiling: HOUR } });
    h.endpoint.fault = WAF_403;
    await h.clock.advance(3 * HOUR);
    expect(h.keeper.status).toBe('unauthenticated');
    expect(h.events.filter((e) => e.type === 'hint')).toHaveLength(0);
    for (let round = 0; round < 2; round++) {
      h.endpoint.fault = undefined;
      h.keeper.setTokens(h.endpoint.login()); // `tether login`
      expect(h.keeper.status).toBe('running');
      h.endpoint.fault = INVALID_CLIENT;
      await h.clock.advance(HOUR);
      expect(h.keeper.status).toBe('unauthenticated');
    }
    const hints = h.events.filter((e) => e.type === 'hint');
    expect(hints).toHaveLength(1);
    expect(hints[0]).toMatchObject({ code: 'stale_registration' });
    expect(hints[0]?.type === 'hint' && hints[0].message).toContain('tether login work --reregister');
  });

  it('no stale-registration hint for a statically registered client', async () => {
    const h = await startHarness({ dynamicClient: false });
    h.endpoint.fault = INVALID_CLIENT;
    await h.clock.advance(HOUR);
    expect(h.keeper.status).toBe('unauthenticated');
    expect(h.events.filter((e) => e.type === 'hint')).toHaveLength(0);
  });

  it('hot callers during auth_retrying fail fast with the seconds until the next attempt', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(90 * MINUTE);
    expect(h.keeper.status).toBe('auth_retrying');
    const first = tokenOrCode(h.keeper.getToken()); // the demand attempt, if its gap allows
    await h.clock.advance(SECOND);
    expect(await first).toBe('ERR_AUTH_RETRYING');
    const requests = h.endpoint.requests.length;
    const start = h.clock.monotonic();
    const error = await h.keeper.getToken().catch((e: unknown) => e);
    expect(h.clock.monotonic()).toBe(start); // failed without waiting
    expect(error).toBeInstanceOf(TokenUnavailableError);
    const seconds = (error as TokenUnavailableError).retryAfterSeconds ?? 0;
    expect(seconds).toBeGreaterThan(0);
    expect(seconds).toBeLessThanOrEqual(5 * 60);
    expect(h.endpoint.requests).toHaveLength(requests);
  });

  /** Another process sharing the credential refreshes it and stores the result. */
  async function otherProcessRefreshes(h: Harness, lifetime = HOUR): Promise<TokenSet> {
    const other = await h.endpoint.refresh(h.endpoint.current, new AbortController().signal);
    if (!other.ok) throw new Error('setup: the other refresh failed');
    const issuedAt = h.clock.now();
    const tokens = {
      accessToken: other.tokens.accessToken,
      refreshToken: other.tokens.refreshToken ?? '',
      issuedAt,
      expiresAt: issuedAt + lifetime,
    };
    h.store.tokens = tokens;
    return tokens;
  }

  it('re-reads the store before refreshing, and skips the refresh another process already made', async () => {
    const h = await startHarness();
    await h.clock.advance(30 * MINUTE);
    const other = await otherProcessRefreshes(h);
    await h.clock.advance(16 * MINUTE); // our refresh point: the store holds a newer token set
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok']); // the other process's only
    expect(h.events.some((e) => e.type === 'adopted')).toBe(true);
    expect(await h.keeper.getToken()).toBe(other.accessToken);
    await h.clock.advance(45 * MINUTE); // the next refresh uses the adopted refresh token
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok', 'ok']);
    expect(h.endpoint.requests[1]?.refreshToken).toBe(other.refreshToken);
    expect(h.statuses).toEqual([]);
  });

  it('believes invalid_grant only after a re-read: a rotation that raced ours is adopted', async () => {
    const h = await startHarness();
    await h.clock.advance(30 * MINUTE);
    let other: TokenSet | undefined;
    // The other process (without a lock) rotates just after our re-read, before our request lands.
    h.endpoint.beforeAnswer = async () => {
      h.endpoint.beforeAnswer = undefined;
      other = await otherProcessRefreshes(h);
    };
    await h.clock.advance(16 * MINUTE);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok', 'invalid_grant']);
    expect(h.events.some((e) => e.type === 'adopted')).toBe(true);
    expect(h.statuses).toEqual([]);
    expect(await h.keeper.getToken()).toBe(other?.accessToken);
  });

  it('adopting a stored token that is already due refreshes with its refresh token, never the spent one', async () => {
    const h = await startHarness();
    const spent = h.endpoint.current;
    await h.clock.advance(10 * MINUTE);
    const other = await otherProcessRefreshes(h, 40 * MINUTE); // its refresh point (30 min in) falls before ours
    await h.clock.advance(36 * MINUTE);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok', 'ok']);
    expect(h.endpoint.requests[1]?.refreshToken).toBe(other.refreshToken);
    expect(h.endpoint.requests[1]?.refreshToken).not.toBe(spent);
    expect(h.statuses).toEqual([]);
  });

  it('invalid_grant with nothing newer in the store → unauthenticated', async () => {
    const h = await startHarness();
    h.endpoint.current = 'revoked';
    await h.clock.advance(46 * MINUTE);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['invalid_grant']);
    expect(h.statuses.map((s) => s.status)).toEqual(['unauthenticated']);
  });
});

describe('TokenKeeper — the store', () => {
  it('takes the store lock for each attempt', async () => {
    const h = await startHarness();
    await h.clock.advance(46 * MINUTE);
    expect(h.store.locksTaken).toBe(1);
    expect(h.endpoint.requests).toHaveLength(1);
  });

  it('a lock that never comes ends the attempt at its deadline, as a transient failure', async () => {
    const h = await startHarness({ config: { ceiling: 2 * HOUR } });
    h.store.lockHangs = true;
    await h.clock.advance(45 * MINUTE);
    await h.clock.advance(ATTEMPT_DEADLINE_MS);
    expect(attempts(h.events).map((a) => [a.outcome, a.reason])).toEqual([['transient', 'attempt_timeout']]);
    await h.clock.advance(4 * HOUR);
    expect(h.endpoint.requests).toHaveLength(0);
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying', 'unauthenticated']);
    await expect(h.keeper.trigger('manual')).resolves.toBeUndefined(); // nothing hangs
  });

  it('an attempt given up at its deadline after the server rotated the token: the set it saved is held, never the spent refresh token', async () => {
    const h = await startHarness();
    let slow = true;
    h.endpoint.beforeAnswer = () => {
      if (!slow) return Promise.resolve();
      slow = false; // the first request reaches the server, which answers 65 s later, past the deadline
      return new Promise((resolve) => h.clock.setTimeout(resolve, ATTEMPT_DEADLINE_MS + 5 * SECOND));
    };
    await h.clock.advance(45 * MINUTE + ATTEMPT_DEADLINE_MS + 10 * SECOND);
    expect(attempts(h.events).map((a) => [a.outcome, a.reason])).toEqual([['transient', 'attempt_timeout']]);
    expect(h.store.tokens).toMatchObject({ accessToken: 'at-2', refreshToken: h.endpoint.current });
    expect(h.keeper.peekToken()).toBe('at-2');
    expect(h.keeper.state).toBe('fresh'); // the episode the deadline began is over
    await h.clock.advance(2 * HOUR);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok', 'ok', 'ok']);
    expect(h.statuses).toEqual([]);
  });

  it('an unreadable store stops the exchange before a possibly spent refresh token is sent', async () => {
    const h = await startHarness();
    h.store.failLoads = true;
    await h.clock.advance(46 * MINUTE);
    expect(h.endpoint.requests).toHaveLength(0);
    const failed = attempts(h.events).map((a) => `${a.outcome} ${String(a.reason)}`);
    expect(failed.length).toBeGreaterThan(0);
    expect(new Set(failed)).toEqual(new Set(['transient store_unavailable']));
    h.store.failLoads = false;
    await h.clock.advance(MINUTE);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok']);
  });

  it('a refresh the server answered is saved even when the keeper stops meanwhile', async () => {
    const h = await startHarness();
    h.endpoint.latencyMs = 2 * SECOND;
    await h.clock.advance(45 * MINUTE + SECOND); // request in flight
    h.endpoint.beforeAnswer = () => {
      void h.keeper.stop(); // the workload stops just as the server rotates the token
      return Promise.resolve();
    };
    await h.clock.advance(5 * SECOND);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok']);
    expect(h.store.tokens?.refreshToken).toBe(h.endpoint.current);
    expect(h.statuses).toEqual([]);
  });

  it('a keeper stopped while start() is loading never refreshes', async () => {
    const h = await startHarness();
    await h.clock.advance(HOUR); // the stored token is due
    h.store.loadDelayMs = SECOND;
    const keeper = new TokenKeeper({
      clock: h.clock,
      config: h.config,
      refresh: (token, signal) => h.endpoint.refresh(token, signal),
      store: h.store,
      status: () => undefined,
    });
    const starting = keeper.start();
    void keeper.stop();
    await h.clock.advance(MINUTE);
    await starting;
    expect(keeper.state).toBe('stopped');
    expect(h.endpoint.requests.filter((r) => r.at > h.clock.now() - MINUTE)).toHaveLength(0);
  });

  it("adopts another process's refresh even when that process's clock is behind (no clocks compared)", async () => {
    const h = await startHarness();
    const behind = new FakeClock(h.clock.now() - 10 * MINUTE); // another machine, or a clock stepped back
    const b = new TokenKeeper({
      clock: behind,
      config: h.config,
      refresh: (token, signal) => h.endpoint.refresh(token, signal),
      store: h.store,
      status: () => undefined,
    });
    await b.start(h.store.tokens);
    await h.keeper.trigger('manual'); // A refreshes
    await b.trigger('manual'); // B adopts A's set without a request…
    await b.trigger('manual'); // …then refreshes it, stamping its own (earlier) time
    await h.keeper.trigger('manual'); // A must adopt B's set, not replay its spent refresh token
    await h.keeper.trigger('manual');
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok', 'ok', 'ok']);
    expect(h.keeper.status).toBe('running');
    void b.stop();
  });

  it("adopts another process's refresh on a server that does not rotate refresh tokens", async () => {
    const h = await startHarness();
    h.endpoint.rotate = false;
    await h.clock.advance(30 * MINUTE);
    const other = await h.endpoint.refresh(h.endpoint.current, new AbortController().signal);
    if (!other.ok) throw new Error('setup');
    h.store.tokens = {
      accessToken: other.tokens.accessToken,
      refreshToken: h.endpoint.current,
      issuedAt: h.clock.now(),
      expiresAt: h.clock.now() + HOUR,
    };
    await h.clock.advance(16 * MINUTE);
    expect(h.endpoint.requests).toHaveLength(1); // the other process's only
    expect(await h.keeper.getToken()).toBe(other.tokens.accessToken);
  });
});

describe('TokenKeeper — a save that failed (D4)', () => {
  /** Refreshes once (at 45 min) with the store failing to save; returns when each save was tried. */
  async function refreshWithSavesFailing(h: Harness): Promise<number[]> {
    const tried: number[] = [];
    const save = h.store.save.bind(h.store);
    h.store.save = (tokens) => {
      tried.push(h.clock.now());
      return save(tokens);
    };
    h.store.failSaves = true;
    await h.clock.advance(45 * MINUTE + 100);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok']);
    return tried;
  }

  const events = (h: Harness, type: 'persist_failed' | 'persist_recovered'): unknown[] =>
    h.events.filter((e) => e.type === type);

  it('is retried on a backoff (1 s doubling, capped at a minute) while the token serves from memory', async () => {
    const h = await startHarness();
    const tried = await refreshWithSavesFailing(h);
    const refreshedAt = h.endpoint.requests[0]?.at ?? NaN;
    await h.clock.advance(10 * MINUTE);
    const gaps = tried.map((t, i) => (t - (tried[i - 1] ?? refreshedAt)) / SECOND);
    expect(gaps.slice(0, 10)).toEqual([0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
    expect(await h.keeper.getToken()).toBe('at-2');
    expect(events(h, 'persist_failed')).toHaveLength(1); // reported once, retries only counted
    expect(h.store.tokens?.accessToken).toBe('at-1');
    expect(h.statuses).toEqual([]);
  });

  it('lands once the store can be written again, and the recovery is reported', async () => {
    const h = await startHarness();
    await refreshWithSavesFailing(h);
    await h.clock.advance(MINUTE); // 6 failed saves: at 0, 1, 3, 7, 15 and 31 s
    h.store.failSaves = false;
    await h.clock.advance(MINUTE);
    expect(h.store.tokens).toMatchObject({ accessToken: 'at-2', refreshToken: h.endpoint.current });
    expect(events(h, 'persist_recovered')).toEqual([
      expect.objectContaining({ detail: expect.stringMatching(/after 6 failed saves$/) as unknown }),
    ]);
    const saves = h.store.saved.length;
    await h.clock.advance(10 * MINUTE);
    expect(h.store.saved).toHaveLength(saves); // no more retries
  });

  it('a graceful stop saves it once more, and resolves only once that save has landed', async () => {
    const h = await startHarness();
    await refreshWithSavesFailing(h);
    await h.clock.advance(20 * SECOND); // the retries so far have failed; the next is 16 s away
    h.store.failSaves = false;
    h.store.saveDelays.push(2 * SECOND); // an fsync that takes a while
    let stopped = false;
    void h.keeper.stop().then(() => (stopped = true));
    await h.clock.advance(SECOND);
    expect(stopped).toBe(false);
    expect(h.store.tokens?.refreshToken).toBe('rt-1'); // the spent one
    await h.clock.advance(SECOND);
    expect(stopped).toBe(true);
    expect(h.store.tokens).toMatchObject({ accessToken: 'at-2', refreshToken: h.endpoint.current });
    expect(events(h, 'persist_recovered')).toHaveLength(1);
    expect(h.clock.pendingTimers).toBe(0);
    expect(h.statuses).toEqual([]);
  });

  it('a graceful stop on a store that still fails ends without retrying again', async () => {
    const h = await startHarness();
    await refreshWithSavesFailing(h);
    const saves = h.store.saved.length;
    await h.keeper.stop();
    await h.clock.advance(HOUR);
    expect(h.store.saved).toHaveLength(saves);
    expect(h.clock.pendingTimers).toBe(0);
    expect(h.keeper.state).toBe('stopped');
  });

  it.each([
    ['the next retry finds it there', false],
    ['the keeper adopts it first', true],
  ])('is not written over a newer set that another process stored meanwhile: %s', async (_label, adoptFirst) => {
    const h = await startHarness();
    await refreshWithSavesFailing(h);
    const now = h.clock.now();
    h.store.tokens = {
      accessToken: 'at-elsewhere',
      refreshToken: 'rt-elsewhere',
      issuedAt: now,
      expiresAt: now + HOUR,
    };
    if (adoptFirst) await h.keeper.trigger('manual');
    h.store.failSaves = false;
    await h.clock.advance(5 * MINUTE);
    expect(h.store.tokens.accessToken).toBe('at-elsewhere');
    expect(h.store.saved).toEqual([]);
    expect(h.events.filter((e) => e.type === 'persist_recovered')).toEqual([]);
    if (!adoptFirst) await h.keeper.trigger('manual'); // the next attempt adopts it
    expect(h.events.filter((e) => e.type === 'adopted')).toHaveLength(1);
    expect(await h.keeper.getToken()).toBe('at-elsewhere');
  });

  it('a later save of new credentials ends the retries of the older set', async () => {
    const h = await startHarness();
    await refreshWithSavesFailing(h);
    h.store.failSaves = false;
    const login = h.endpoint.login();
    h.keeper.setTokens(login);
    await h.clock.advance(10 * MINUTE);
    expect(h.store.tokens).toEqual(login);
    expect(h.store.saved).toEqual([login]);
    expect(events(h, 'persist_recovered')).toHaveLength(1);
  });
  it('takes the lock before its place in the save queue, as new credentials do: no stall behind the lock', async () => {
    const h = await startHarness();
    await refreshWithSavesFailing(h); // at-2's save failed at 45:00; the retry comes at 45:01
    h.store.failSaves = false;
    void h.store.holdLock(3 * SECOND); // another process holds the lock until 45:03.1: the retry waits for it
    await h.clock.advance(SECOND);
    const login = h.endpoint.login();
    h.keeper.setTokens(login); // `tether login` meanwhile: its save waits for the lock too
    await h.clock.advance(5 * SECOND);
    expect(h.store.tokens).toEqual(login);
    expect(h.store.saved.map((t) => t.accessToken)).toEqual(['at-2', login.accessToken]);
    expect(events(h, 'persist_failed')).toEqual([expect.objectContaining({ detail: 'ENOSPC' })]);
    expect(h.store.lockTimeouts).toBe(0);
    let stopped = false;
    void h.keeper.stop().then(() => (stopped = true));
    await h.clock.advance(SECOND);
    expect(stopped).toBe(true);
  });

  it('a save that failed after writing is still its own: the retry of a later set is not dropped for it', async () => {
    const h = await startHarness();
    await h.clock.advance(10 * MINUTE);
    h.store.failAfterWriting = 1;
    await h.keeper.trigger('manual'); // at-2: written, but the save reports a failure
    expect(h.store.tokens?.accessToken).toBe('at-2');
    h.store.failSaves = true;
    await h.keeper.trigger('manual'); // at-3, refreshed with at-2's refresh token: its save fails
    h.store.failSaves = false;
    await h.clock.advance(MINUTE);
    expect(h.store.tokens).toMatchObject({ accessToken: 'at-3', refreshToken: h.endpoint.current });
    await h.clock.advance(2 * HOUR);
    expect(h.endpoint.requests.map((r) => r.answer)).not.toContain('invalid_grant');
    expect(h.keeper.status).toBe('running');
    expect(h.events.filter((e) => e.type === 'adopted')).toEqual([]);
  });

  it('new credentials that wait for the lock are not written over the refresh made of them meanwhile', async () => {
    const h = await startHarness();
    h.store.lockLastComeFirst = true;
    void h.store.holdLock(SECOND); // another process holds the lock
    const login = h.endpoint.login();
    const due = { ...login, issuedAt: h.clock.now() - 30 * MINUTE, expiresAt: h.clock.now() + 5 * MINUTE };
    h.keeper.setTokens(due); // due at once: its save, then its refresh wait for the lock; the refresh gets it first
    await h.clock.advance(5 * SECOND);
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok']);
    expect(h.store.tokens).toMatchObject({ refreshToken: h.endpoint.current });
    await h.clock.advance(2 * HOUR);
    expect(h.endpoint.requests.map((r) => r.answer)).not.toContain('invalid_grant');
  });
});

describe('TokenKeeper — concurrency and shutdown', () => {
  it('the status turns when the token expires for sending, even with an attempt still in flight', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    h.endpoint.latencyMs = 30 * SECOND;
    await h.clock.advance(HOUR + 5 * MINUTE);
    const sendExpiry = (h.store.tokens?.expiresAt ?? 0) - MINUTE;
    expect(h.statuses[0]?.status).toBe('auth_retrying');
    expect(h.statuses[0]?.at).toBe(sendExpiry);
  });

  it('a token without a refresh token is served to its last moment, then the keeper gives up', async () => {
    const h = await startHarness();
    h.keeper.setTokens({ accessToken: 'static-ish', issuedAt: h.clock.now(), expiresAt: h.clock.now() + HOUR });
    await h.clock.advance(58 * MINUTE);
    expect(await h.keeper.getToken()).toBe('static-ish');
    await h.clock.advance(2 * MINUTE);
    expect(h.statuses.map((s) => s.status)).toEqual(['unauthenticated']);
    expect(h.statuses[0]?.at).toBe(h.clock.now() - MINUTE); // at the expired-for-sending point
  });

  it('a token response with an unusable expires_in is a transient failure, not a timer loop', async () => {
    const h = await startHarness();
    h.endpoint.lifetimeSeconds = Number.NaN;
    await h.clock.advance(50 * MINUTE);
    const outcomes = attempts(h.events).map((a) => [a.outcome, a.reason]);
    expect(outcomes[0]).toEqual(['transient', 'invalid_token_response']);
    expect(outcomes.length).toBeLessThan(10);
  });

  it('a refresh function that throws instead of reporting counts as a transient failure', async () => {
    const h = await startHarness();
    const healthy = h.endpoint.refresh;
    let calls = 0;
    Object.defineProperty(h.endpoint, 'refresh', {
      value: (refreshToken: string, signal: AbortSignal) => {
        calls++;
        if (calls === 1) throw new TypeError('Invalid URL');
        return healthy(refreshToken, signal);
      },
    });
    await h.clock.advance(46 * MINUTE);
    expect(attempts(h.events).map((a) => a.outcome)).toEqual(['transient', 'success']);
    expect(h.statuses).toEqual([]);
  });

  it('a stop right after a start with a due token stays stopped, with no status written', async () => {
    const h = await startHarness();
    await h.clock.advance(HOUR); // keeper's token expired, as if the process restarted now
    const keeper = new TokenKeeper({
      clock: h.clock,
      config: h.config,
      refresh: h.endpoint.refresh,
      store: h.store,
      status: () => {
        throw new Error('no status may be written');
      },
    });
    await keeper.start(h.store.tokens);
    void keeper.stop();
    await h.clock.advance(HOUR);
    expect(keeper.state).toBe('stopped');
  });

  it('a stop from inside an event listener is final', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    h.keeper.on((event) => {
      if (event.type === 'attempt') void h.keeper.stop();
    });
    await h.clock.advance(24 * HOUR);
    expect(h.keeper.state).toBe('stopped');
    expect(h.endpoint.requests).toHaveLength(1);
    expect(h.statuses).toEqual([]);
    expect(h.clock.pendingTimers).toBe(0);
  });

  it('a demand caller waits at most the demand budget for a slow token endpoint', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(3 * HOUR); // no valid token left
    h.endpoint.fault = undefined;
    h.endpoint.latencyMs = MINUTE;
    void h.keeper.trigger('manual'); // an attempt in flight, answered in a minute
    const start = h.clock.monotonic();
    let settledAt: number | undefined;
    const call = tokenOrCode(h.keeper.getToken()).finally(() => (settledAt = h.clock.monotonic()));
    await h.clock.advance(30 * SECOND);
    expect(await call).toBe('ERR_AUTH_RETRYING');
    expect((settledAt ?? Infinity) - start).toBe(h.config.demandWait);
  });

  it('10,000 concurrent getToken() calls at expiry cause exactly one refresh and all get the same token', async () => {
    const h = await startHarness();
    h.endpoint.latencyMs = 200;
    h.endpoint.fault = WAF_403;
    await h.clock.advance(HOUR + MINUTE); // token expired, short tier exhausted
    h.endpoint.fault = undefined;
    await h.clock.advance(10 * SECOND);
    const before = h.endpoint.requests.length;
    const calls = Array.from({ length: 10_000 }, () => h.keeper.getToken());
    await h.clock.advance(SECOND);
    const tokens = new Set(await Promise.all(calls));
    expect(h.endpoint.requests.length - before).toBe(1);
    expect(h.endpoint.maxInFlight).toBe(1);
    expect(tokens.size).toBe(1);
    expect([...tokens][0]).toBe(h.keeper.peekToken());
  });

  it.each([
    ['waiting for the early refresh', 10 * MINUTE],
    ['in the short tier', 45 * MINUTE + 5 * SECOND],
    ['in the slow tier', 50 * MINUTE],
    ['during auth_retrying', 2 * HOUR],
    ['during an attempt in flight', 45 * MINUTE + 100],
  ])('stop %s ends quietly with no status write', async (_label, at) => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    h.endpoint.latencyMs = 1000;
    await h.clock.advance(at);
    const statusesBefore = h.statuses.length;
    const requestsBefore = h.endpoint.requests.length;
    const waiting = tokenOrCode(h.keeper.getToken());
    void h.keeper.stop();
    await h.clock.advance(48 * HOUR);
    expect(h.statuses).toHaveLength(statusesBefore);
    expect(h.endpoint.requests).toHaveLength(requestsBefore);
    expect(h.clock.pendingTimers).toBe(0);
    expect(h.keeper.state).toBe('stopped');
    // A caller either had the valid token, failed fast, or was told the keeper stopped.
    expect(['ERR_KEEPER_STOPPED', 'ERR_AUTH_RETRYING', 'at-1']).toContain(await waiting);
  });
});

describe('TokenKeeper — a token the resource server rejects', () => {
  it('many requests that saw the same 401 cause one refresh, and then get the new token', async () => {
    const h = await startHarness();
    h.endpoint.latencyMs = 200;
    await h.clock.advance(5 * MINUTE);
    const rejected = await h.keeper.getToken();
    const flights = Array.from({ length: 10 }, () => h.keeper.rejected(rejected));
    await h.clock.advance(SECOND);
    await Promise.all(flights);
    expect(h.endpoint.requests).toHaveLength(1);
    expect(attempts(h.events).map((a) => [a.trigger, a.outcome])).toEqual([['rejected', 'success']]);
    expect(await h.keeper.getToken()).not.toBe(rejected);
  });

  it('a token already replaced is not refreshed again, and rejections are at least the probe minimum apart', async () => {
    const h = await startHarness();
    await h.clock.advance(5 * MINUTE);
    const first = await h.keeper.getToken();
    await h.keeper.rejected(first);
    await h.keeper.rejected(first); // a late 401 for the old token
    const second = await h.keeper.getToken();
    await h.keeper.rejected(second); // the new one rejected at once: too soon
    expect(h.endpoint.requests).toHaveLength(1);
    await h.clock.advance(h.config.probeMinInterval);
    await h.keeper.rejected(second);
    expect(h.endpoint.requests).toHaveLength(2);
  });

  it('a keeper already failing keeps its backoff, and stops serving the rejected token', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(46 * MINUTE);
    expect(h.keeper.state).toBe('backoff');
    expect(h.keeper.status).toBe('running'); // degraded: at-1 is still valid for 13 minutes
    const sent = h.endpoint.requests.length;
    const next = h.keeper.snapshot().refresh.nextAttemptAt;
    await h.keeper.rejected(await h.keeper.getToken());
    expect(h.endpoint.requests).toHaveLength(sent);
    expect(h.keeper.snapshot().refresh.nextAttemptAt).toBe(next);
    expect(h.keeper.peekToken()).toBeUndefined();
    expect(h.statuses.map((s) => [s.status, s.at])).toEqual([['auth_retrying', h.clock.now()]]);
    const refused = await h.keeper.getToken().catch((e: unknown) => e);
    expect(refused).toMatchObject({ code: 'ERR_AUTH_RETRYING' });
    expect((refused as TokenUnavailableError).retryAfterSeconds).toBeGreaterThan(0);
    h.endpoint.fault = undefined;
    await h.clock.advance(5 * MINUTE);
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying', 'running']);
    expect(await h.keeper.getToken()).toMatch(/^at-/);
  });

  it('a rejected token is trusted again after the probe minimum, and twice as long after each further rejection', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(50 * MINUTE); // failing since 45 min; at-1 valid until 59 min
    const probe = h.config.probeMinInterval;
    await h.keeper.rejected('at-1'); // a glitch of the resource server
    expect(h.keeper.peekToken()).toBeUndefined();
    await h.clock.advance(probe);
    expect(h.keeper.peekToken()).toBe('at-1'); // served again
    await h.keeper.rejected('at-1');
    await h.clock.advance(probe);
    expect(h.keeper.peekToken()).toBeUndefined();
    await h.clock.advance(probe);
    expect(h.keeper.peekToken()).toBe('at-1');
    const turns = h.statuses.map((s) => s.status);
    expect(turns).toEqual(['auth_retrying', 'running', 'auth_retrying', 'running']);
    expect(h.keeper.snapshot().refresh.state).toBe('degraded');
  });

  it('a token distrusted for good while failing ends its distrust at its expiry for sending', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(50 * MINUTE);
    for (let i = 0; i < 8; i++) {
      await h.keeper.rejected('at-1'); // the resource server refuses it each time it is tried
      await h.clock.advance(h.keeper.peekToken() === undefined ? 5 * MINUTE : 0);
    }
    await h.clock.advance(10 * MINUTE); // past 59 min
    expect(h.keeper.peekToken()).toBeUndefined();
    expect(h.keeper.status).toBe('auth_retrying');
    expect(h.clock.pendingTimers).toBeLessThanOrEqual(2); // the next attempt (and the save retry, if any)
  });

  it('a late rejection of a token already replaced changes nothing, also while failing', async () => {
    const h = await startHarness();
    await h.clock.advance(46 * MINUTE); // at-2 replaced at-1
    h.endpoint.fault = WAF_403;
    await h.clock.advance(46 * MINUTE); // at-2's refresh failed
    expect(h.keeper.state).toBe('backoff');
    await h.keeper.rejected('at-1');
    expect(h.keeper.peekToken()).toBe('at-2');
    expect(h.statuses).toEqual([]);
  });

  it('a forced refresh that fails stops serving the token the resource server rejected', async () => {
    const h = await startHarness();
    await h.clock.advance(5 * MINUTE);
    h.endpoint.fault = WAF_403;
    await h.keeper.rejected('at-1');
    expect(attempts(h.events).map((a) => [a.trigger, a.outcome])).toEqual([['rejected', 'transient']]);
    expect(h.keeper.peekToken()).toBeUndefined();
    expect(h.keeper.status).toBe('auth_retrying');
  });

  it('a rejection during a refresh that succeeds leaves the new token served', async () => {
    const h = await startHarness();
    h.endpoint.latencyMs = SECOND;
    await h.clock.advance(45 * MINUTE + 100); // the early refresh is in flight
    const rejection = h.keeper.rejected('at-1');
    await h.clock.advance(SECOND);
    await rejection;
    expect(h.keeper.peekToken()).toBe('at-2');
    expect(h.statuses).toEqual([]);
  });

  it('a rejection during a refresh that fails stops serving the rejected token', async () => {
    const h = await startHarness();
    h.endpoint.latencyMs = SECOND;
    h.endpoint.fault = WAF_403;
    await h.clock.advance(45 * MINUTE + 100);
    expect(h.keeper.state).toBe('refreshing');
    const rejection = h.keeper.rejected('at-1');
    await h.clock.advance(SECOND);
    await rejection;
    expect(h.keeper.peekToken()).toBeUndefined();
    expect(h.keeper.status).toBe('auth_retrying');
  });
});

describe('TokenKeeper — improvements over give-up and fixed-cadence monitors', () => {
  it('an outage shorter than the early-refresh slack causes zero failed getToken() calls and no status change', async () => {
    const h = await startHarness();
    await h.clock.advance(44 * MINUTE);
    h.endpoint.fault = WAF_403;
    let failed = 0;
    for (let t = 0; t < 14 * 60; t++) {
      await h.keeper.getToken().catch(() => failed++);
      await h.clock.advance(SECOND);
    }
    h.endpoint.fault = undefined;
    for (let t = 0; t < 10 * 60; t++) {
      await h.keeper.getToken().catch(() => failed++);
      await h.clock.advance(SECOND);
    }
    expect(failed).toBe(0);
    expect(h.statuses).toEqual([]);
    expect(attempts(h.events).some((a) => a.outcome === 'transient')).toBe(true);
    expect(attempts(h.events).at(-1)?.outcome).toBe('success');
  });

  it('after an outage ends, a demand request recovers within one attempt', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(3 * HOUR);
    h.endpoint.fault = undefined;
    // The demand gap is at most the tick interval; the request after it triggers the attempt.
    let token: string | undefined;
    const before = h.endpoint.requests.length;
    for (let t = 0; t < 5 * 60 && token === undefined; t++) {
      token = await h.keeper.getToken().catch(() => undefined);
      if (token === undefined) await h.clock.advance(SECOND);
    }
    expect(token).toMatch(/^at-/);
    expect(h.endpoint.requests.slice(before).map((r) => r.answer)).toEqual(['ok']);
  });

  it('a client that comes back when its Retry-After says gets a token on that request', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(HOUR + 7 * MINUTE); // 22 minutes into the episode: the demand gap still grows
    await h.keeper.trigger('manual'); // a failed attempt just now
    h.endpoint.fault = undefined;
    const refused = await h.keeper.getToken().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TokenUnavailableError);
    const seconds = (refused as TokenUnavailableError).retryAfterSeconds ?? 0;
    await h.clock.advance(seconds * SECOND);
    const before = h.endpoint.requests.length;
    const call = h.keeper.getToken();
    await h.clock.advance(SECOND);
    expect(await call).toMatch(/^at-/);
    expect(h.endpoint.requests.length - before).toBeLessThanOrEqual(1);
  });

  it('the demand gap grows with the episode: max(probe minimum, 10%), capped at the tick', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(HOUR);
    const t0 = h.endpoint.requests.length;
    for (let t = 0; t < 3600; t++) {
      await h.keeper.getToken().catch(() => undefined);
      await h.clock.advance(SECOND);
    }
    const perHourHammered = h.endpoint.requests.length - t0;
    expect(perHourHammered).toBeGreaterThan(12); // demand adds attempts…
    expect(perHourHammered).toBeLessThanOrEqual(30); // …but a hammering client adds little load
  });

  it.each(['network', 'wake'] as const)(
    'a %s trigger starts an attempt at once when the last one is older than the minimum gap',
    async (kind) => {
      const resets: number[] = [];
      const h = await startHarness({ resetTransport: () => resets.push(h.clock.now()) });
      h.endpoint.fault = WAF_403;
      await h.clock.advance(3 * HOUR);
      h.endpoint.fault = undefined;
      const lastFailure = h.endpoint.requests.at(-1)?.at ?? 0;
      if (h.clock.now() - lastFailure < h.config.probeMinInterval) await h.clock.advance(h.config.probeMinInterval);
      if (kind === 'wake') h.clock.sleep(20 * MINUTE);
      const triggeredAt = h.clock.now();
      await h.keeper.trigger(kind);
      expect(h.endpoint.requests.at(-1)).toMatchObject({ at: triggeredAt, answer: 'ok' });
      expect(h.keeper.status).toBe('running');
      expect(resets).toEqual([triggeredAt]); // the connection pool was recreated first
    },
  );

  it('a manual trigger does not recreate the connection pool', async () => {
    let resets = 0;
    const h = await startHarness({ resetTransport: () => resets++ });
    await h.keeper.trigger('manual');
    expect(h.endpoint.requests).toHaveLength(1);
    expect(resets).toBe(0);
  });

  it('a trigger right after an attempt waits out the minimum gap, then tries', async () => {
    const h = await startHarness();
    h.endpoint.fault = WAF_403;
    await h.clock.advance(3 * HOUR);
    await h.keeper.trigger('manual'); // an attempt now
    const manual = h.endpoint.requests.at(-1)?.at ?? 0;
    void h.keeper.trigger('network');
    await h.clock.advance(9 * SECOND);
    expect(h.endpoint.requests.at(-1)?.at).toBe(manual);
    await h.clock.advance(SECOND);
    expect(h.endpoint.requests.at(-1)?.at).toBe(manual + 10 * SECOND);
  });

  it('Retry-After: 120 → no attempt earlier than 120 s, whatever triggers', async () => {
    const h = await startHarness();
    h.endpoint.fault = { kind: 'http', status: 503, headers: { 'retry-after': '120' }, body: '' };
    await h.clock.advance(45 * MINUTE + SECOND);
    expect(h.endpoint.requests).toHaveLength(1);
    const first = h.endpoint.requests[0]?.at ?? 0;
    await h.keeper.trigger('manual');
    await h.keeper.trigger('network');
    await h.clock.advance(118 * SECOND);
    expect(h.endpoint.requests).toHaveLength(1);
    await h.clock.advance(2 * SECOND);
    expect(h.endpoint.requests).toHaveLength(2);
    expect((h.endpoint.requests[1]?.at ?? 0) - first).toBe(120 * SECOND);
  });

  it('a machine asleep past the ceiling tries once more on wake before giving up', async () => {
    const h = await startHarness({ config: { ceiling: 4 * HOUR } });
    h.endpoint.fault = WAF_403;
    await h.clock.advance(90 * MINUTE);
    h.clock.sleep(10 * HOUR);
    const before = h.endpoint.requests.length;
    h.endpoint.fault = undefined;
    await h.keeper.trigger('wake');
    expect(h.endpoint.requests.slice(before).map((r) => r.answer)).toEqual(['ok']);
    expect(h.keeper.status).toBe('running');
  });

  it('…and gives up after that one try if it still fails', async () => {
    const h = await startHarness({ config: { ceiling: 4 * HOUR } });
    h.endpoint.fault = WAF_403;
    await h.clock.advance(90 * MINUTE);
    h.clock.sleep(10 * HOUR);
    const before = h.endpoint.requests.length;
    await h.keeper.trigger('wake');
    expect(h.endpoint.requests.length - before).toBe(1);
    expect(h.keeper.status).toBe('unauthenticated');
  });

  it('a start with a stored token that has expired refreshes at once, with no status written', async () => {
    const h = await startHarness();
    await h.clock.advance(2 * HOUR); // at-3 since 1 h 30 min
    const statuses: string[] = [];
    const keeper = new TokenKeeper({
      clock: h.clock,
      config: h.config,
      refresh: (token, signal) => h.endpoint.refresh(token, signal),
      store: h.store,
      status: (status) => statuses.push(status),
    });
    await h.keeper.stop();
    h.clock.sleep(HOUR); // the machine was off: at-3 has expired
    await keeper.start();
    await h.clock.flush();
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok', 'ok', 'ok']);
    expect(keeper.peekToken()).toBe('at-4');
    expect(statuses).toEqual([]);
    await keeper.stop();
  });

  it('a wake with a fresh token past its refresh point refreshes at once', async () => {
    const h = await startHarness();
    await h.clock.advance(10 * MINUTE);
    h.clock.sleep(3 * HOUR);
    await h.keeper.trigger('wake');
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok']);
    expect(h.statuses).toEqual([]);
  });
});

describe('TokenKeeper — review fixes (rotated sets, late saves, distrust)', () => {
  it('an exchange whose save landed before the deadline, but whose lock was let go after it, leaves the new set held', async () => {
    const h = await startHarness();
    h.store.releaseDelayMs = ATTEMPT_DEADLINE_MS + 5 * SECOND; // saved at 45:00, the lock let go at 46:05
    await h.clock.advance(45 * MINUTE + ATTEMPT_DEADLINE_MS + SECOND);
    h.store.releaseDelayMs = 0;
    expect(attempts(h.events).map((a) => [a.outcome, a.reason])).toEqual([['transient', 'attempt_timeout']]);
    expect(h.store.tokens).toMatchObject({ accessToken: 'at-2', refreshToken: h.endpoint.current });
    await h.clock.advance(2 * HOUR);
    expect(h.endpoint.requests.map((r) => r.answer)).not.toContain('invalid_grant');
    expect(h.keeper.status).toBe('running');
    expect(h.statuses).toEqual([]);
  });

  it('new credentials whose lock wait timed out are not written over the refresh made of them meanwhile', async () => {
    const h = await startHarness();
    h.store.lockLastComeFirst = true;
    void h.store.holdLock(SECOND); // another process holds the lock
    const login = h.endpoint.login();
    const due = { ...login, issuedAt: h.clock.now() - 30 * MINUTE, expiresAt: h.clock.now() + 5 * MINUTE };
    // Due at once: its refresh gets the lock first, saves, and holds the lock until the save of `due` gives up.
    h.store.releaseDelayMs = STORE_LOCK_TIMEOUT_MS;
    h.keeper.setTokens(due);
    await h.clock.advance(2 * SECOND);
    h.store.releaseDelayMs = 0;
    expect(h.endpoint.requests.map((r) => r.answer)).toEqual(['ok']);
    await h.clock.advance(5 * MINUTE);
    expect(h.store.lockTimeouts).toBe(1);
    expect(h.store.tokens).toMatchObject({ refreshToken: h.endpoint.current });
    await h.clock.advance(2 * HOUR);
    expect(h.endpoint.requests.map((r) => r.answer)).not.toContain('invalid_grant');
    expect(h.keeper.status).toBe('running');
  });

  it('with a probe minimum of 0, a rejected token is served again at once', async () => {
    const h = await startHarness({ config: { probeMinInterval: 0 } });
    h.endpoint.fault = WAF_403;
    await h.clock.advance(50 * MINUTE); // failing since 45 min; at-1 valid until 59 min
    await h.keeper.rejected('at-1');
    await h.clock.advance(1);
    expect(h.keeper.peekToken()).toBe('at-1');
    expect(await h.keeper.getToken()).toBe('at-1');
    expect(h.keeper.snapshot().refresh.state).toBe('degraded');
  });

  it('a token distrusted when an attempt fails still gets its attempt just before it expires for sending', async () => {
    // Jitter 0.1: refreshes from 40:12; slow-tier attempts at 51:30 and 55:42, then 59:54 — past at-1's 59:00.
    const h = await startHarness({ random: () => 0.1, config: { probeMinInterval: 2 * MINUTE } });
    h.endpoint.fault = WAF_403;
    await h.clock.advance(3250 * SECOND);
    await h.keeper.rejected('at-1'); // distrusted for 2 min: still when the attempt at 55:42 fails
    await h.clock.advance(20 * MINUTE);
    const sendExpiry = (h.store.tokens?.expiresAt ?? 0) - MINUTE;
    const last = h.endpoint.requests.filter((r) => r.at < sendExpiry).at(-1)?.at ?? 0;
    expect(sendExpiry - last).toBeLessThanOrEqual(10 * SECOND); // within the lead (5 s)
  });

  it('an attempt cut off at its deadline that crosses the ceiling: the set its exchange saved late is taken up', async () => {
    const h = await startHarness({ config: { ceiling: 10 * MINUTE } });
    h.endpoint.fault = WAF_403;
    const failingFrom = h.clock.now() + 45 * MINUTE;
    let slow = true;
    h.endpoint.beforeAnswer = () => {
      if (!slow || h.clock.now() < failingFrom + 9 * MINUTE) return Promise.resolve();
      slow = false; // the outage ends, but this answer comes after the attempt's deadline, past the ceiling
      h.endpoint.fault = undefined;
      return new Promise((resolve) => h.clock.setTimeout(resolve, ATTEMPT_DEADLINE_MS + 5 * SECOND));
    };
    await h.clock.advance(62 * MINUTE); // the last attempt before at-1 expires (58:55) is cut off at 59:55
    expect(h.statuses.map((s) => s.status)).toEqual(['auth_retrying', 'unauthenticated', 'running']);
    expect(h.store.tokens).toMatchObject({ accessToken: 'at-2', refreshToken: h.endpoint.current });
    expect(h.keeper.state).toBe('fresh');
    expect(await h.keeper.getToken()).toBe('at-2');
    await h.clock.advance(2 * HOUR);
    expect(h.endpoint.requests.map((r) => r.answer)).not.toContain('invalid_grant');
    expect(h.keeper.status).toBe('running');
  });
});
