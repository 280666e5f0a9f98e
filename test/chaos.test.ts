/**
 * Chaos (DESIGN §3.1, §3.2, §5, §7): the BUILT `tether` CLI against the real
 * loopback remote, as in test/e2e.test.ts, with the process, the clock and
 * the disk taken away at the worst moments:
 *
 * - `kill -9` of the workload inside a refresh-token rotation — after the
 *   server rotated the token, before tether could save the new one — then
 *   `tether restart`, against a server with no reuse grace and one with 30 s;
 * - SIGSTOP for longer than the token's lifetime, then SIGCONT;
 * - a state directory that cannot be written during a save;
 * - opt-in (`TETHER_CHAOS_NETNS=1`, root, Linux, `ip`, `iptables`): the origin
 *   bug report reproduced with a real packet filter on a veth pair.
 *
 * Timings are compressed through the environment (`KEEPER_TIMINGS` of the
 * e2e harness) and access tokens live 6–10 s. Every workload is removed and
 * its process checked gone after each test. Run `npm run build` first.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TEST_ACCOUNT } from '../src/demo/auth-server.js';
import { CredentialStore } from '../src/store/store.js';
import {
  debris,
  liveStatus,
  ReadOnlyDir,
  refreshGrants,
  rotations,
  TinyTmpfs,
  unwritableMethod,
  waitForRotation,
} from './support/chaos-harness.js';
import {
  describeResult,
  E2E,
  isAlive,
  LOGIN_URL,
  loadBuiltCli,
  mcpThrough,
  rawInitialize,
  sleep,
  type StatusFile,
  TICK_MS,
  waitFor,
} from './support/e2e-harness.js';

// Fails the whole file with "run `npm run build` first" when the build is missing.
const driver = await loadBuiltCli();
const unwritable = await unwritableMethod();

const NAME = 'work';
/** How long the fault proxy holds the server's answer to a refresh: the window the chaos lands in. */
const HOLD_MS = 4_000;

let world: E2E | undefined;
async function startWorld(options: { ttlSeconds?: number } = {}): Promise<E2E> {
  world = await E2E.start(driver, options);
  return world;
}
afterEach(async () => {
  const closing = world;
  world = undefined;
  await closing?.close();
});

/** No login URL anywhere the workload or the command could have shown one, and no browser opened. */
async function expectNoBrowserPrompt(e2e: E2E, ...outputs: string[]): Promise<void> {
  for (const output of outputs) expect(output).not.toMatch(LOGIN_URL);
  expect(await e2e.workloadStderr(NAME)).not.toMatch(LOGIN_URL);
  expect(await e2e.browserOpens()).toEqual([]);
}

/** The keeper's refresh attempts in the workload's event log. */
async function attempts(e2e: E2E): Promise<Record<string, unknown>[]> {
  return (await e2e.events(NAME)).filter((event) => event['type'] === 'attempt');
}

/**
 * Runs the workload, then lets its next scheduled refresh reach the server
 * and kills the process with SIGKILL while the fault proxy still holds the
 * server's answer: the server has spent the stored refresh token and issued
 * a new one that tether never sees. Returns both tokens.
 */
async function killInsideRotation(e2e: E2E): Promise<{ before: StatusFile; spent: string; issued: string }> {
  const { status: before } = await e2e.runWorkload(NAME);
  const pid = before.pid ?? -1;
  const { refreshToken: stored } = await e2e.storedTokens(NAME);
  const from = e2e.remote.auth.tokenRequests.length;
  e2e.remote.faults.setFault({ kind: 'delay', phase: 'response', ms: HOLD_MS }, 'token');

  const rotation = await waitForRotation(e2e.remote.auth, from);
  const answeredAt = Date.now();
  process.kill(pid, 'SIGKILL');
  await waitFor(`pid ${String(pid)} to die`, () => Promise.resolve(isAlive(pid) ? undefined : true));
  // Landed inside the window: the answer was still held when the process died.
  expect(Date.now() - answeredAt, 'SIGKILL landed while the answer was held').toBeLessThan(HOLD_MS);
  e2e.remote.faults.setFault(undefined);

  expect(rotation.presentedRefreshToken).toBe(stored);
  const issued = rotation.issuedRefreshToken ?? '';
  expect(issued).not.toBe(stored);
  // Tether never saw the answer: the store still holds the refresh token the server has spent.
  const after = await e2e.storedTokens(NAME);
  expect(after.refreshToken).toBe(stored);
  expect((await attempts(e2e)).filter((a) => a['outcome'] === 'success')).toEqual([]);

  const list = await e2e.tether(['list', '--json']);
  expect(list.code, describeResult(list)).toBe(0);
  expect((JSON.parse(list.stdout) as StatusFile[]).map((s) => [s.name, s.status])).toEqual([[NAME, 'error']]);
  return { before, spent: stored ?? '', issued };
}

describe('chaos (built CLI, real remote)', () => {
  it(
    'kill -9 inside a refresh-token rotation, server with a 30 s reuse grace: tether restart is running, calls succeed, no login prompt',
    { timeout: 60_000 },
    async () => {
      const e2e = await startWorld();
      e2e.remote.auth.refreshTokenReuseGraceSeconds = 30;
      const { before, spent } = await killInsideRotation(e2e);

      const from = e2e.remote.auth.tokenRequests.length;
      const sampler = e2e.sampleStatus(NAME);
      let seen: readonly string[];
      let restart;
      try {
        restart = await e2e.tether(['restart', NAME]);
        expect(restart.code, describeResult(restart)).toBe(0);
        const running = await e2e.waitForStatus(
          NAME,
          (s) => s.status === 'running' && s.pid !== before.pid && s.refresh.state === 'ok',
          'running in a new process after tether restart',
        );
        await waitFor('the restarted workload to refresh', () => Promise.resolve(rotations(e2e.remote.auth, from)[0]));
        expect(running.port).toBe(before.port);
        const mcp = await mcpThrough(running.proxyUrl ?? '');
        expect(mcp.whoami).toBe(TEST_ACCOUNT);
      } finally {
        seen = await sampler.stop();
      }
      expect(seen).not.toContain('unauthenticated');
      expect(seen).not.toContain('auth_retrying');

      // The restarted workload presented the spent token once more, and the server took it within its grace.
      const [reuse, ...others] = refreshGrants(e2e.remote.auth, from);
      expect(reuse).toMatchObject({ presentedRefreshToken: spent, status: 200, reusedWithinGrace: true });
      expect(others.every((r) => r.status === 200)).toBe(true);
      // …and saved what it got: the store no longer holds a spent token.
      const latest = rotations(e2e.remote.auth, from).at(-1);
      await waitFor('the store to hold the newest refresh token', async () =>
        (await e2e.storedTokens(NAME)).refreshToken === latest?.issuedRefreshToken ? true : undefined,
      );
      expect(e2e.authorizationCodeGrants()).toBe(1);
      await expectNoBrowserPrompt(e2e, restart.stdout, restart.stderr);
    },
  );

  it(
    'kill -9 inside a refresh-token rotation, server without a reuse grace: at worst that credential is lost, reported as unauthenticated naming tether login, with no retry loop',
    { timeout: 60_000 },
    async () => {
      const e2e = await startWorld();
      e2e.remote.auth.refreshTokenReuseGraceSeconds = 0;
      const { before, spent } = await killInsideRotation(e2e);

      const from = e2e.remote.auth.tokenRequests.length;
      const sampler = e2e.sampleStatus(NAME);
      let seen: readonly string[];
      let restart;
      let lost: StatusFile;
      try {
        restart = await e2e.tether(['restart', NAME]);
        expect(restart.code, describeResult(restart)).toBe(0);
        lost = await e2e.waitForStatus(
          NAME,
          (s) => s.status === 'unauthenticated' && s.pid !== before.pid,
          'unauthenticated in a new process after tether restart',
        );
        // No loop: one refused attempt, then quiet for three ticks, even with a client asking.
        const quietFrom = e2e.remote.faults.tokenRequests.length;
        const deadline = Date.now() + 3 * TICK_MS;
        while (Date.now() < deadline) {
          const answer = await rawInitialize(lost.proxyUrl ?? '');
          expect(answer.status).toBe(503);
          expect(answer.headers['www-authenticate']).toBeUndefined();
          const body = JSON.parse(answer.body) as { error: string; message: string };
          expect(body.error).toBe('unauthenticated');
          expect(body.message).toContain(`tether login ${NAME}`);
          await sleep(250);
        }
        expect(e2e.remote.faults.tokenRequests.slice(quietFrom)).toEqual([]);
      } finally {
        seen = await sampler.stop();
      }
      expect(seen).not.toContain('auth_retrying');
      expect(refreshGrants(e2e.remote.auth, from)).toEqual([
        expect.objectContaining({ presentedRefreshToken: spent, status: 400, error: 'invalid_grant' }),
      ]);

      // Reported clearly, on every surface.
      expect(lost.refresh).toMatchObject({ state: 'given_up', lastErrorClass: 'permanent' });
      expect(lost.refresh.lastError).toContain('invalid_grant');
      expect(lost.statusReason).toContain(`tether login ${NAME}`);
      expect(restart.stdout + restart.stderr).toContain(`tether login ${NAME}`);
      const details = await e2e.tether(['status', NAME]);
      expect(details.code, describeResult(details)).toBe(0);
      expect(details.stdout).toContain('unauthenticated');
      expect(details.stdout).toContain(`tether login ${NAME}`);
      await expectNoBrowserPrompt(e2e, restart.stdout, restart.stderr);

      // The one lost credential comes back with a login, on the same port, without a restart.
      const login = await e2e.tether(['login', NAME, '--no-browser']);
      expect(login.code, describeResult(login)).toBe(0);
      const running = await e2e.waitForStatus(NAME, (s) => s.status === 'running', 'running after tether login');
      expect(running.pid).toBe(lost.pid);
      expect(running.port).toBe(before.port);
      expect((await mcpThrough(running.proxyUrl ?? '')).whoami).toBe(TEST_ACCOUNT);
    },
  );

  it(
    'SIGSTOP for longer than the token lifetime, then SIGCONT (a laptop lid closed and opened): calls succeed within seconds',
    { timeout: 60_000 },
    async () => {
      // What this proves: a workload frozen past its token's expiry (no timer, no request
      // served meanwhile) serves again within seconds of resuming — its overdue refresh
      // timer or the demand trigger of the first request refreshes at once, and it never
      // sends the token it knows expired. What it does not prove: the wake detector. Under
      // SIGSTOP the monotonic clock keeps counting (Linux CLOCK_MONOTONIC stops only in a
      // real suspend), so wall time never runs ahead of monotonic time and `watchWake`
      // sees no sleep; a real suspend, where Node's timers stand still, is covered only
      // by the unit tests of the detector and the keeper on a fake clock.
      const e2e = await startWorld();
      const { status } = await e2e.runWorkload(NAME);
      const pid = status.pid ?? -1;
      const expiresAt = Date.parse(status.token.expiresAt ?? '');
      let frozen = true;
      e2e.onCleanup(() => {
        if (frozen && isAlive(pid)) process.kill(pid, 'SIGCONT'); // else `tether rm` could not stop it
        return Promise.resolve();
      });

      process.kill(pid, 'SIGSTOP');
      const stoppedAt = Date.now();
      await waitFor('the token to be past its expiry', () =>
        Promise.resolve(Date.now() > Math.max(expiresAt, stoppedAt) + 1_500 ? true : undefined),
      );
      // Frozen indeed: its refresh (due at ~75% of the lifetime) never reached the server.
      expect(e2e.remote.faults.tokenRequests.filter((r) => r.at >= stoppedAt)).toEqual([]);
      const upstreamFrom = e2e.remote.mcp.requests.length;

      process.kill(pid, 'SIGCONT');
      frozen = false;
      const resumedAt = Date.now();
      const mcp = await mcpThrough(status.proxyUrl ?? '');
      const took = Date.now() - resumedAt;
      expect(mcp.whoami).toBe(TEST_ACCOUNT);
      expect(took, 'a tools/list and a whoami call right after SIGCONT').toBeLessThan(5_000);
      // The expired token was never sent: the remote saw no 401.
      expect(e2e.remote.mcp.requests.slice(upstreamFrom).map((r) => r.status)).not.toContain(401);

      const after = await e2e.waitForStatus(NAME, (s) => s.status === 'running', 'running after SIGCONT');
      expect(after.pid).toBe(pid);
      expect(Date.parse(after.token.expiresAt ?? '')).toBeGreaterThan(resumedAt);
      const resumed = (await attempts(e2e)).filter((a) => Date.parse(String(a['time'])) >= resumedAt - 1_000);
      expect(resumed[0]).toMatchObject({ outcome: 'success' });
      expect(['schedule', 'demand']).toContain(resumed[0]?.['trigger']);
      expect(e2e.authorizationCodeGrants()).toBe(1);
    },
  );

  const unwritableTest = unwritable.kind === 'none' ? it.skip : it;
  unwritableTest(
    `a state directory that cannot be written during a save (${unwritable.kind === 'none' ? `skipped: ${unwritable.reason}` : unwritable.kind === 'tmpfs' ? 'a full tmpfs' : 'chmod 0500'}): the in-memory token keeps serving, persist_failed is reported, the store still loads, and the next save catches up`,
    { timeout: 90_000 },
    async () => {
      // 10 s tokens: a refresh every ~7.5 s leaves room to make the directory unwritable
      // inside one save and writable again before the next.
      const e2e = await startWorld({ ttlSeconds: 10 });
      let tmpfs: TinyTmpfs | undefined;
      if (unwritable.kind === 'tmpfs') {
        tmpfs = await TinyTmpfs.mount(e2e.home, 1024);
        const mounted = tmpfs;
        // Before the harness's own cleanup, which would find nothing once unmounted.
        e2e.onCleanup(async () => {
          await mounted.drain();
          const removed = await e2e.tether(['rm', NAME]);
          await mounted.unmount();
          if (removed.code !== 0) throw new Error(`tether rm ${NAME}: ${describeResult(removed)}`);
        });
      }
      const { status } = await e2e.runWorkload(NAME);
      const workloadDir = path.join(e2e.home, 'workloads', NAME);
      const readOnly = new ReadOnlyDir(workloadDir);
      if (unwritable.kind === 'chmod') e2e.onCleanup(() => readOnly.unlock());
      const storedBefore = await e2e.storedTokens(NAME);
      const loginExpiry = Date.parse(status.token.expiresAt ?? '');

      // Hold the server's answer to the next refresh; make the directory unwritable while it is held.
      const from = e2e.remote.auth.tokenRequests.length;
      e2e.remote.faults.setFault({ kind: 'delay', phase: 'response', ms: 1_500 }, 'token');
      const rotation = await waitForRotation(e2e.remote.auth, from);
      if (tmpfs !== undefined) expect(await tmpfs.fill()).toBeGreaterThan(0);
      else await readOnly.lock();
      e2e.remote.faults.setFault(undefined);

      const failed = await waitFor(
        'persist_failed in the live status',
        async () => {
          const live = await liveStatus(e2e.home, NAME);
          return live?.events.some((event) => event.type === 'persist_failed') === true ? live : undefined;
        },
        { timeoutMs: 10_000 },
      );
      expect(failed.status).toBe('running');
      expect(failed.pid).toBe(status.pid);

      // Nothing corrupted: the store still loads — the set from before, the save never landed — and no debris.
      const whileFull = await e2e.storedTokens(NAME);
      expect(whileFull).toEqual(storedBefore);
      expect(await debris(workloadDir)).toEqual([]);

      // The in-memory token serves: past the old token's expiry, calls succeed with the new one.
      await waitFor('the token from before the failed save to expire', () =>
        Promise.resolve(Date.now() > loginExpiry ? true : undefined),
      );
      expect((await mcpThrough(status.proxyUrl ?? '')).whoami).toBe(TEST_ACCOUNT);

      // Writable again, before the next refresh: that refresh saves, and the store catches up.
      if (tmpfs !== undefined) await tmpfs.drain();
      else await readOnly.unlock();
      const next = await waitForRotation(e2e.remote.auth, e2e.remote.auth.tokenRequests.length);
      expect(next.presentedRefreshToken).toBe(rotation.issuedRefreshToken);
      await waitFor('the store to hold the newest refresh token', async () =>
        (await e2e.storedTokens(NAME)).refreshToken === next.issuedRefreshToken ? true : undefined,
      );
      expect(await debris(workloadDir)).toEqual([]);
      const store = await CredentialStore.open({ env: e2e.env });
      await expect(store.loadTokens(NAME)).resolves.toMatchObject({ refreshToken: next.issuedRefreshToken });

      // Reported: in the live timeline and in the readable status.
      const details = await e2e.tether(['status', NAME]);
      expect(details.code, describeResult(details)).toBe(0);
      expect(details.stdout).toContain('could not save the refreshed tokens');
      const logged = await readFile(e2e.eventsPath(NAME), 'utf8');
      expect(logged).toContain('persist_failed');

      // And a restart now needs no login.
      const restart = await e2e.tether(['restart', NAME]);
      expect(restart.code, describeResult(restart)).toBe(0);
      const running = await e2e.waitForStatus(
        NAME,
        (s) => s.status === 'running' && s.pid !== status.pid,
        'running after tether restart',
      );
      expect((await mcpThrough(running.proxyUrl ?? '')).whoami).toBe(TEST_ACCOUNT);
      expect(e2e.authorizationCodeGrants()).toBe(1);
    },
  );
});
