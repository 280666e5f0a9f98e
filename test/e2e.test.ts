import { readdirSync, readFileSync } from 'node:fs';
/**
 * End to end (DESIGN §3, §6, §7, §8): the BUILT `tether` CLI in child
 * processes, with a temporary `TETHER_HOME`, against the real remote of
 * `src/demo/remote.ts` — oidc-provider behind a fault proxy, and the SDK's
 * MCP server — with the keeper's timings compressed through the environment
 * and 6-second access tokens. Each test gets its own remote and state
 * directory; every workload is removed and its process checked gone after
 * each test. Run `npm run build` first: the tests spawn `dist/cli/main.js`.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TEST_ACCOUNT } from '../src/demo/auth-server.js';
import {
  BUILT_CLI,
  describeResult,
  E2E,
  isAlive,
  listAndWhoami,
  loadBuiltCli,
  LOGIN_URL,
  mcpThrough,
  rawInitialize,
  sleep,
  type StatusFile,
  TICK_MS,
  waitFor,
} from './support/e2e-harness.js';

// Fails the whole file with "run `npm run build` first" when the build is missing.
const driver = await loadBuiltCli();

const NAME = 'work';

let e2e: E2E;
beforeEach(async () => {
  e2e = await E2E.start(driver);
});
afterEach(async () => {
  await e2e.close();
});

/** No login URL anywhere the workload or the command could have shown one, and no browser opened. */
async function expectNoBrowserPrompt(name: string, ...outputs: string[]): Promise<void> {
  for (const output of outputs) expect(output).not.toMatch(LOGIN_URL);
  expect(await e2e.workloadStderr(name)).not.toMatch(LOGIN_URL);
  expect(await e2e.browserOpens()).toEqual([]);
}

/** The statuses the workload's event log recorded, in order. */
async function loggedStatuses(name: string): Promise<string[]> {
  return (await e2e.events(name)).filter((event) => event['type'] === 'status').map((event) => String(event['status']));
}

describe('tether end to end (built CLI, real remote)', () => {
  it(
    'run logs in once and serves the remote: an MCP SDK client lists tools and calls whoami through the proxy',
    { timeout: 40_000 },
    async () => {
      const { result, status } = await e2e.runWorkload(NAME);

      expect(result.stdout).toMatch(
        new RegExp(
          `Workload ${NAME} is running: http://127\\.0\\.0\\.1:\\d+/mcp → ${e2e.remote.mcpUrl.replace(/[.]/g, '\\.')}`,
        ),
      );
      expect(status).toMatchObject({
        name: NAME,
        remoteUrl: e2e.remote.mcpUrl,
        status: 'running',
        refresh: { state: 'ok' },
      });
      expect(status.proxyUrl).toBe(`http://127.0.0.1:${String(status.port)}/mcp`);
      expect(status.pid).toBeGreaterThan(0);
      expect(isAlive(status.pid ?? -1)).toBe(true);
      expect(Date.parse(status.token.expiresAt ?? '')).toBeGreaterThan(Date.now());
      expect(await e2e.mode(e2e.statusPath(NAME))).toBe(0o600);
      expect(e2e.authorizationCodeGrants()).toBe(1);

      const mcp = await mcpThrough(status.proxyUrl ?? '');
      expect(mcp.tools).toContain('whoami');
      expect(mcp.whoami).toBe(TEST_ACCOUNT);
      // The upstream saw tether's token (the MCP server only answers a valid JWT for its audience).
      expect(e2e.remote.mcp.requests.some((r) => r.subject === TEST_ACCOUNT && r.status < 400)).toBe(true);

      const [list, details] = await Promise.all([
        e2e.tether(['list', '--json']),
        e2e.tether(['status', NAME, '--json']),
      ]);
      expect(list.code, describeResult(list)).toBe(0);
      const listed = JSON.parse(list.stdout) as StatusFile[];
      expect(listed.map((s) => [s.name, s.status, s.port])).toEqual([[NAME, 'running', status.port]]);
      expect(details.code, describeResult(details)).toBe(0);
      const detailed = JSON.parse(details.stdout) as StatusFile & { events: unknown[] };
      expect(detailed).toMatchObject({ name: NAME, status: 'running', pid: status.pid, proxyUrl: status.proxyUrl });
      expect(detailed.events.length).toBeGreaterThan(0);
    },
  );

  it(
    'rides through a WAF 403 + HTML at the token endpoint across a token expiry: auth_retrying, never unauthenticated, recovers by itself without a browser',
    { timeout: 60_000 },
    async () => {
      const { result, status } = await e2e.runWorkload(NAME);
      const faults = e2e.remote.faults;
      const sampler = e2e.sampleStatus(NAME);
      let seen: readonly string[];
      try {
        faults.setFault({ kind: 'waf_403' }, 'token');
        const faultedSince = Date.now();

        // The token expires for sending within ~6 s; with no valid token left, auth_retrying.
        const retrying = await e2e.waitForStatus(NAME, (s) => s.status === 'auth_retrying', 'auth_retrying', 20_000);
        expect(retrying.refresh.lastErrorClass).toBe('transient');
        expect(retrying.refresh.state).toBe('failing');

        // The local endpoint says so, with a Retry-After, and never a 401.
        const answer = await rawInitialize(status.proxyUrl ?? '');
        expect(answer.status).toBe(503);
        expect(answer.headers['www-authenticate']).toBeUndefined();
        // Seconds until the next attempt: the slow tier is capped at the tick (+20% jitter).
        expect(Number(answer.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        expect(Number(answer.headers['retry-after'])).toBeLessThanOrEqual(Math.ceil((1.2 * TICK_MS) / 1000));
        expect((JSON.parse(answer.body) as { error: string }).error).toBe('auth_retrying');

        // Well past the short tier (2 s) and several slow-tier ticks: the origin bug gave up here.
        const heldFrom = faults.tokenRequests.length;
        await sleep(6 * TICK_MS);
        const duringHold = faults.tokenRequests.slice(heldFrom).filter((r) => r.grantType === 'refresh_token');
        expect(duringHold.length, 'the keeper keeps trying during the outage').toBeGreaterThanOrEqual(2);
        expect(duringHold.every((r) => r.answer === 'waf_403' && r.status === 403)).toBe(true);
        const still = await e2e.readStatus(NAME);
        expect(still?.status).toBe('auth_retrying');

        faults.setFault(undefined);
        const clearedAt = Date.now();
        const recovered = await e2e.waitForStatus(
          NAME,
          (s) => s.status === 'running',
          'running after the fault cleared',
          10_000,
        );
        // The slow tier is capped at the tick (1 s), and a request would trigger one on demand: recovery is fast.
        expect(Date.now() - clearedAt).toBeLessThan(6 * TICK_MS);
        expect(recovered.refresh.state).toBe('ok');
        expect(recovered.pid).toBe(status.pid);
        expect(recovered.port).toBe(status.port);
        expect(Date.now() - faultedSince).toBeGreaterThan(6 * TICK_MS);

        const mcp = await mcpThrough(recovered.proxyUrl ?? '');
        expect(mcp.whoami).toBe(TEST_ACCOUNT);
        expect(
          faults.tokenRequests.some(
            (r) => r.grantType === 'refresh_token' && r.answer === 'forwarded' && r.status === 200,
          ),
        ).toBe(true);
      } finally {
        seen = await sampler.stop();
      }
      expect(seen).toContain('auth_retrying');
      expect(seen).not.toContain('unauthenticated');
      expect(await loggedStatuses(NAME)).not.toContain('unauthenticated');
      expect(await loggedStatuses(NAME)).toContain('auth_retrying');
      // Exactly one login: the stand-in user's, during `tether run`; the workload never asked for another.
      expect(e2e.authorizationCodeGrants()).toBe(1);
      await expectNoBrowserPrompt(NAME, result.stdout);
    },
  );

  it(
    'a revoked grant makes the workload unauthenticated and quiet; tether login puts new credentials in place on the same port',
    { timeout: 60_000 },
    async () => {
      const { status } = await e2e.runWorkload(NAME);
      // The store's current refresh token (decrypted with the key file); a rotation racing the read is retried.
      await waitFor('the grant to be revoked', async () => {
        const { refreshToken } = await e2e.storedTokens(NAME);
        if (refreshToken === undefined) throw new Error('the login stored no refresh token');
        return e2e.remote.auth.revokeGrant(refreshToken).then(
          () => true,
          () => undefined,
        );
      });

      // The next scheduled refresh (at ~75% of 6 s) gets a real invalid_grant: permanent.
      const unauthenticated = await e2e.waitForStatus(
        NAME,
        (s) => s.status === 'unauthenticated',
        'unauthenticated',
        20_000,
      );
      expect(unauthenticated.refresh.lastErrorClass).toBe('permanent');
      expect(unauthenticated.pid).toBe(status.pid);
      expect(e2e.remote.auth.tokenRequests.some((r) => r.error === 'invalid_grant')).toBe(true);

      // The keeper stopped: no token request for three ticks, even with a client asking the proxy.
      const before = e2e.remote.faults.tokenRequests.length;
      const deadline = Date.now() + 3 * TICK_MS;
      let probes = 0;
      while (Date.now() < deadline) {
        const answer = await rawInitialize(status.proxyUrl ?? '');
        probes++;
        expect(answer.status).toBe(503);
        expect(answer.headers['www-authenticate']).toBeUndefined();
        const body = JSON.parse(answer.body) as { error: string; message: string };
        expect(body.error).toBe('unauthenticated');
        expect(body.message).toContain(`tether login ${NAME}`);
        await sleep(250);
      }
      expect(probes).toBeGreaterThanOrEqual(3);
      expect(e2e.remote.faults.tokenRequests.slice(before)).toEqual([]);
      expect((await e2e.readStatus(NAME))?.status).toBe('unauthenticated');

      const login = await e2e.tether(['login', NAME, '--no-browser']);
      expect(login.code, describeResult(login)).toBe(0);
      expect(login.stderr).toMatch(LOGIN_URL); // printed, not opened
      const running = await e2e.waitForStatus(NAME, (s) => s.status === 'running', 'running after tether login');
      expect(running.port).toBe(status.port);
      expect(running.proxyUrl).toBe(status.proxyUrl);
      expect(running.pid).toBe(status.pid); // no restart
      expect(e2e.authorizationCodeGrants()).toBe(2);

      const mcp = await mcpThrough(running.proxyUrl ?? '');
      expect(mcp.whoami).toBe(TEST_ACCOUNT);
      expect(await e2e.browserOpens()).toEqual([]);
    },
  );

  it(
    'a workload killed with SIGKILL shows as error, and tether restart serves it again without a browser',
    { timeout: 40_000 },
    async () => {
      const { status } = await e2e.runWorkload(NAME);
      const pid = status.pid ?? -1;
      process.kill(pid, 'SIGKILL');
      await waitFor(`pid ${String(pid)} to die`, () => Promise.resolve(isAlive(pid) ? undefined : true));

      const list = await e2e.tether(['list', '--json']);
      expect(list.code, describeResult(list)).toBe(0);
      const listed = JSON.parse(list.stdout) as StatusFile[];
      expect(listed.map((s) => [s.name, s.status])).toEqual([[NAME, 'error']]);
      expect(listed[0]?.statusReason).toContain(`tether restart ${NAME}`);

      const restart = await e2e.tether(['restart', NAME]);
      expect(restart.code, describeResult(restart)).toBe(0);
      const running = await e2e.waitForStatus(
        NAME,
        (s) => s.status === 'running' && s.pid !== pid,
        'running in a new process after tether restart',
      );
      expect(isAlive(running.pid ?? -1)).toBe(true);
      expect(running.port).toBe(status.port); // client configurations stay valid

      const mcp = await mcpThrough(running.proxyUrl ?? '');
      expect(mcp.whoami).toBe(TEST_ACCOUNT);
      expect(e2e.authorizationCodeGrants()).toBe(1);
      await expectNoBrowserPrompt(NAME, restart.stdout, restart.stderr);
    },
  );

  it(
    'two tether starts at once leave one workload process serving, and both say where',
    { timeout: 40_000 },
    async () => {
      const { status } = await e2e.runWorkload(NAME);
      const stopped = await e2e.tether(['stop', NAME]);
      expect(stopped.code, describeResult(stopped)).toBe(0);
      expect(isAlive(status.pid ?? -1)).toBe(false);

      const [first, second] = await Promise.all([e2e.tether(['start', NAME]), e2e.tether(['start', NAME])]);
      expect(first.code, describeResult(first)).toBe(0);
      expect(second.code, describeResult(second)).toBe(0);
      const running = await e2e.waitForStatus(NAME, (s) => s.status === 'running', 'running after two starts');
      expect(first.stdout + second.stdout).toContain(running.proxyUrl ?? 'no url');
      // This test's workload processes: titled with its name, in its TETHER_HOME (Linux: /proc; CI runs there).
      const workloads = readdirSync('/proc')
        .filter((entry) => /^\d+$/.test(entry))
        .filter((pid) => {
          try {
            return (
              readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith(`tether-workload ${NAME}\0`) &&
              readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(`TETHER_HOME=${e2e.home}`)
            );
          } catch {
            return false; // ended meanwhile
          }
        });
      expect(workloads).toEqual([String(running.pid)]);

      const mcp = await mcpThrough(running.proxyUrl ?? '');
      expect(mcp.whoami).toBe(TEST_ACCOUNT);
    },
  );

  it(
    'tether connect is a stdio bridge: an SDK client over stdio lists tools and calls whoami',
    { timeout: 40_000 },
    async () => {
      await e2e.runWorkload(NAME);
      const env = Object.fromEntries(
        Object.entries(e2e.env).filter((entry): entry is [string, string] => entry[1] !== undefined),
      );
      const transport = new StdioClientTransport({
        command: process.execPath,
        args: [BUILT_CLI, 'connect', NAME],
        env,
        stderr: 'pipe',
      });
      let bridgeStderr = '';
      transport.stderr?.on('data', (chunk: Buffer) => {
        bridgeStderr += chunk.toString('utf8');
      });
      e2e.onCleanup(async () => {
        await transport.close();
        const pid = transport.pid;
        if (pid !== null && isAlive(pid)) process.kill(pid, 'SIGKILL');
      });
      const client = new Client({ name: 'tether-e2e-stdio', version: '1.0.0' });
      await client.connect(transport);
      const bridgePid = transport.pid;
      const mcp = await listAndWhoami(client);
      expect(mcp.tools, bridgeStderr).toContain('whoami');
      expect(mcp.whoami).toBe(TEST_ACCOUNT);
      if (bridgePid !== null) {
        await waitFor('the bridge to exit once the client closed', () =>
          Promise.resolve(isAlive(bridgePid) ? undefined : true),
        );
      }
    },
  );

  it(
    'the local proxy refuses a non-loopback Host (DNS-rebinding protection) without reaching the remote',
    { timeout: 40_000 },
    async () => {
      const { status } = await e2e.runWorkload(NAME);
      const upstreamBefore = e2e.remote.mcp.requests.length;

      const evil = await rawInitialize(status.proxyUrl ?? '', 'evil.example');
      expect(evil.status).toBe(403);
      expect((JSON.parse(evil.body) as { error: string }).error).toBe('forbidden_host');
      const evilWithPort = await rawInitialize(status.proxyUrl ?? '', `evil.example:${String(status.port)}`);
      expect(evilWithPort.status).toBe(403);
      expect(e2e.remote.mcp.requests.length).toBe(upstreamBefore);

      // The same request with a loopback Host passes.
      const local = await rawInitialize(status.proxyUrl ?? '', `localhost:${String(status.port)}`);
      expect(local.status).toBe(200);
      expect(e2e.remote.mcp.requests.length).toBeGreaterThan(upstreamBefore);
    },
  );

  it(
    'a second tether run with the same name fails with exit 1 and leaves the first workload as it was',
    { timeout: 40_000 },
    async () => {
      const { status } = await e2e.runWorkload(NAME);
      const second = await e2e.tether(['run', e2e.remote.mcpUrl, '--name', NAME, '--no-browser']);
      expect(second.code, describeResult(second)).toBe(1);
      expect(second.stderr).toContain('already exists');
      expect(second.stderr).toContain('ERR_WORKLOAD_EXISTS');
      expect(second.stderr).not.toMatch(LOGIN_URL);

      const after = await e2e.readStatus(NAME);
      expect(after).toMatchObject({ status: 'running', pid: status.pid, port: status.port, proxyUrl: status.proxyUrl });
      expect(isAlive(status.pid ?? -1)).toBe(true);
      expect(e2e.authorizationCodeGrants()).toBe(1);
      expect((await mcpThrough(status.proxyUrl ?? '')).whoami).toBe(TEST_ACCOUNT);
    },
  );

  it('usage errors exit 2; an unknown workload exits 1 and points at tether list', { timeout: 40_000 }, async () => {
    const url = e2e.remote.mcpUrl;
    const usage = [
      ['run', url, '--name', NAME, '--no-browser', '--port', 'abc'],
      ['run', url, '--name', NAME, '--no-browser', '--port', '70000'],
      ['run', '--name', NAME, '--no-browser'],
      ['no-such-command'],
    ];
    // In parallel: each command is a Node process start (~1 s here).
    const usageResults = await Promise.all(usage.map((args) => e2e.tether(args)));
    usage.forEach((args, i) => {
      const result = usageResults[i];
      expect(result?.code, `tether ${args.join(' ')}: ${result === undefined ? '' : describeResult(result)}`).toBe(2);
      expect(result?.stderr).not.toBe('');
    });
    // Nothing was created, nothing was asked of the remote.
    expect(e2e.remote.faults.tokenRequests).toEqual([]);
    const list = await e2e.tether(['list', '--all', '--json']);
    expect(JSON.parse(list.stdout)).toEqual([]);

    const unknown = [
      ['status', 'nope'],
      ['stop', 'nope'],
      ['restart', 'nope'],
      ['connect', 'nope'],
    ];
    const unknownResults = await Promise.all(unknown.map((args) => e2e.tether(args)));
    unknown.forEach((args, i) => {
      const result = unknownResults[i];
      expect(result?.code, `tether ${args.join(' ')}: ${result === undefined ? '' : describeResult(result)}`).toBe(1);
      expect(result?.stderr).toContain('nope');
      expect(result?.stderr).toContain('tether list');
      expect(result?.stderr).toContain('ERR_NO_WORKLOAD');
    });
  });
});
