import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { RefreshFailure } from '../src/keeper/failure.js';
import { HOUR, MINUTE, REFUSED, SECOND, WAF_403 } from './support/harness.js';
import { simulate, type Scenario, type SimRecord } from './support/simulation.js';

const FAULTS: readonly RefreshFailure[] = [
  WAF_403,
  REFUSED,
  { kind: 'network', code: 'UND_ERR_CONNECT_TIMEOUT' },
  { kind: 'network', code: 'CERT_HAS_EXPIRED' },
  { kind: 'http', status: 503, headers: { 'retry-after': '120' }, body: '' },
  { kind: 'http', status: 429, headers: { 'retry-after': '30' }, body: '' },
  { kind: 'http', status: 500, headers: {}, body: '' },
  { kind: 'http', status: 200, headers: { 'content-type': 'text/html' }, body: '<html>captive portal</html>' },
];

const HORIZON = 30 * HOUR;
const duration = fc.oneof(
  fc.integer({ min: 10 * SECOND, max: 5 * MINUTE }),
  fc.integer({ min: 5 * MINUTE, max: HOUR }),
  fc.integer({ min: HOUR, max: 10 * HOUR }),
);

const scenario: fc.Arbitrary<Scenario> = fc
  .record({
    lifetimeSeconds: fc.constantFrom(300, 3600, 3600, 3 * 3600, undefined),
    config: fc.record({ ceiling: fc.constantFrom(0, 2 * HOUR, 6 * HOUR, 24 * HOUR) }),
    horizonMs: fc.constant(HORIZON),
    outages: fc.array(
      fc
        .record({ start: fc.integer({ min: 0, max: 24 * HOUR }), length: duration, fault: fc.constantFrom(...FAULTS) })
        .map((o) => ({
          start: o.start,
          end: o.start + o.length,
          fault: o.fault,
        })),
      { maxLength: 4 },
    ),
    revokeAt: fc.option(fc.integer({ min: 0, max: HORIZON }), { freq: 4, nil: undefined }),
    sleeps: fc.array(fc.record({ at: fc.integer({ min: 0, max: 28 * HOUR }), ms: duration }), { maxLength: 3 }),
    networkChanges: fc.array(fc.integer({ min: 0, max: HORIZON }), { maxLength: 5 }),
    bursts: fc.array(fc.record({ at: fc.integer({ min: 0, max: HORIZON }), count: fc.integer({ min: 1, max: 20 }) }), {
      maxLength: 8,
    }),
    patientClientAt: fc.option(fc.integer({ min: 0, max: 28 * HOUR }), { freq: 2, nil: undefined }),
    latencyMs: fc.constantFrom(0, 200, 2000),
    sampleStatusEveryMs: fc.constant(10 * MINUTE),
    seed: fc.integer(),
  })
  .map(({ revokeAt, patientClientAt, ...rest }): Scenario => ({
    ...rest,
    ...(revokeAt !== undefined && { revokeAt }),
    ...(patientClientAt !== undefined && { patientClientAt }),
  }));

/** The invariants of DESIGN §3 over one simulated run; returns a description of the first one broken. */
function brokenInvariant(s: Scenario, r: SimRecord): string | undefined {
  if (r.maxInFlight > 1) return `${r.maxInFlight} refreshes in flight at once`;

  if (r.heldBeforePersisted > 0) return `${r.heldBeforePersisted} token sets taken into use before they were persisted`;
  // A rotated refresh token is persisted before it is used, and a served token was persisted before it was served.
  const savedAt = new Map<string, number>();
  for (const save of r.saves) {
    if (save.tokens.refreshToken !== undefined && !savedAt.has(save.tokens.refreshToken))
      savedAt.set(save.tokens.refreshToken, save.seq);
    if (!savedAt.has(save.tokens.accessToken)) savedAt.set(save.tokens.accessToken, save.seq);
  }
  for (const sent of r.sentSeq) {
    if (!((savedAt.get(sent.refreshToken) ?? Infinity) < sent.seq)) return `refresh token used before it was persisted`;
  }
  for (const served of r.servedSeq) {
    if (!((savedAt.get(served.token) ?? Infinity) < served.seq)) return `access token served before it was persisted`;
  }

  // Never an expired token; a token is served only while running.
  const expiry = new Map(r.saves.map((save) => [save.tokens.accessToken, save.tokens.expiresAt] as const));
  for (const served of r.served) {
    if (served.token === undefined) continue;
    const expiresAt = expiry.get(served.token);
    if (expiresAt !== undefined && served.at + r.t0 >= expiresAt) return `served an expired token at ${served.at}`;
    if (served.status !== 'running') return `served a token while ${served.status}`;
  }

  // Status agrees with the state.
  for (const st of r.statuses) {
    if ((st.status === 'unauthenticated') !== (st.state === 'unauthenticated'))
      return `status ${st.status} in state ${String(st.state)}`;
    if (st.status === 'auth_retrying' && st.tokenValid) return `auth_retrying while a valid token is held`;
    // Failing, or waiting to refresh a token it cannot serve (`fresh`: the gap after the last attempt, or its turn).
    if (st.status === 'auth_retrying' && st.state !== 'backoff' && st.state !== 'refreshing' && st.state !== 'fresh')
      return `auth_retrying in state ${String(st.state)}`;
  }

  // …and at every sample: auth_retrying exactly while failing with no valid token; unauthenticated exactly when given up.
  for (const sample of r.statusSamples) {
    if ((sample.status === 'auth_retrying') !== (sample.health === 'failing'))
      return `status ${sample.status} with refresh ${sample.health} at ${sample.at}`;
    if ((sample.status === 'unauthenticated') !== (sample.health === 'given_up'))
      return `status ${sample.status} with refresh ${sample.health} at ${sample.at}`;
  }

  // Never unauthenticated from transient failures inside the ceiling.
  const ceiling = r.config.ceiling;
  for (const st of r.statuses.filter((x) => x.status === 'unauthenticated')) {
    const before = r.requests.filter((q) => q.at <= st.at);
    const last = before.at(-1);
    if (last?.answer === 'invalid_grant') {
      if (s.revokeAt === undefined || last.at < s.revokeAt) return `invalid_grant without a revocation`;
      continue;
    }
    const lastOk = before.findLastIndex((q) => q.answer === 'ok');
    const firstFailure = before[lastOk + 1];
    if (ceiling === 0 || firstFailure === undefined)
      return `unauthenticated at ${st.at} without a verdict (${st.reason})`;
    if (!(st.at - firstFailure.at > ceiling)) return `gave up after ${st.at - firstFailure.at} ms, inside the ceiling`;
  }

  // After an outage ends, the next attempt succeeds, within the tick interval when idle.
  const tick = r.config.tickInterval;
  const bound = tick + s.latencyMs + 1;
  for (const [index, outage] of s.outages.entries()) {
    const end = r.actual.outageEnds[index] ?? Infinity; // late if it fell inside a sleep
    const window = (a: number, b: number): boolean => a < end + bound && b > end - tick;
    if (end + bound >= s.horizonMs) continue;
    if (s.revokeAt !== undefined && s.revokeAt <= end + bound) continue;
    if (s.outages.some((o, i) => o !== outage && window(o.start, Math.max(o.end, r.actual.outageEnds[i] ?? Infinity))))
      continue;
    if (r.actual.sleeps.some((z) => window(z.at, z.until))) continue;
    if (r.statuses.some((x) => x.status === 'unauthenticated' && x.at <= end)) continue;
    const before = r.requests.filter((q) => q.at <= end).at(-1);
    if (before?.answer !== 'fault') continue; // not failing when the outage ended
    const after = r.requests.find((q) => q.at > end);
    if (after?.answer !== 'ok') return `first attempt after the outage ending at ${end} did not succeed`;
    if (after.at - end > bound) return `recovered ${after.at - end} ms after the outage ended, past the tick`;
  }
  // On demand, within one attempt: a client that comes back when told (Retry-After) while the
  // upstream is healthy gets a token on that request.
  const patient = r.served.filter((x) => x.client === 'patient');
  for (let i = 1; i < patient.length; i++) {
    const before = patient[i - 1];
    const next = patient[i];
    if (before === undefined || next === undefined || next.token !== undefined) continue;
    const from = before.asked - s.latencyMs - 1;
    const to = next.at;
    const overlaps = (a: number, b: number): boolean => a < to && b > from;
    if (s.outages.some((o, k) => overlaps(o.start, Math.max(o.end, r.actual.outageEnds[k] ?? Infinity)))) continue;
    if (r.actual.sleeps.some((z) => overlaps(z.at, z.until))) continue;
    if (s.revokeAt !== undefined && s.revokeAt <= to) continue;
    if (r.statuses.some((x) => x.status === 'unauthenticated' && x.at <= to)) continue;
    return `a client back after Retry-After at ${next.asked} with the upstream healthy got ${String(next.code)}`;
  }
  return undefined;
}

describe('TokenKeeper — simulated outages (property-based)', () => {
  it('holds its invariants over 1,000 random scenarios', async () => {
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        const record = await simulate(s);
        const broken = brokenInvariant(s, record);
        expect(broken, broken).toBeUndefined();
      }),
      { numRuns: 1000 },
    );
  }, 300_000);

  it('the invariant check catches a keeper that gives up after the short tier', async () => {
    // The origin bug, as a scenario: a 3-hour WAF outage across a token expiry.
    const s: Scenario = {
      lifetimeSeconds: 3600,
      horizonMs: 6 * HOUR,
      outages: [{ start: 40 * MINUTE, end: 3 * HOUR, fault: WAF_403 }],
      sleeps: [],
      networkChanges: [],
      bursts: [],
      latencyMs: 0,
      seed: 1,
    };
    const record = await simulate(s);
    expect(brokenInvariant(s, record)).toBeUndefined();
    const forged: SimRecord = {
      ...record,
      statuses: [
        ...record.statuses,
        {
          at: HOUR + 5 * MINUTE,
          status: 'unauthenticated',
          reason: 'short tier exhausted',
          state: 'unauthenticated',
          tokenValid: false,
        },
      ],
    };
    expect(brokenInvariant(s, forged)).toMatch(/without a verdict|inside the ceiling/);
  });
});
