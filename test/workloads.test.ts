import { spawnSync } from 'node:child_process';
import { mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { systemClock } from '../src/clock/system.js';
import { defaultName } from '../src/cli/run.js';
import { isProcessAlive as isAlive } from '../src/store/lock.js';
import { CredentialStore } from '../src/store/store.js';
import { controlRequest, startControlServer } from '../src/workloads/control.js';
import {
  EVENT_LOG_RETRY_MS,
  EventLog,
  followEvents,
  formatRecord,
  keeperRecord,
  type LogRecord,
  ProxyFailureLog,
  type ProxyRecord,
  readEvents,
} from '../src/workloads/events.js';
import { WorkloadFiles } from '../src/workloads/files.js';
import { WorkloadMetrics } from '../src/workloads/metrics.js';
import { loadSpec, saveSpec } from '../src/workloads/spec.js';
import { serveWorkload, STARTUP_VERDICT_WAIT_MS } from '../src/workloads/workload.js';
import { drive, fixedKey } from './support/store-helpers.js';
import {
  effectiveStatus,
  isWorkloadProcess,
  readStatus,
  redactUrl,
  type WorkloadStatus,
  workloadNames,
  writeStatus,
} from '../src/workloads/status.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'tether-workloads-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const T0 = Date.parse('2026-11-28T10:00:00.000Z');

function status(overrides: Partial<WorkloadStatus> = {}): WorkloadStatus {
  return {
    name: 'w',
    remoteUrl: 'https://mcp.example.com/mcp',
    proxyUrl: 'http://127.0.0.1:7000/mcp',
    port: 7000,
    pid: 4242,
    status: 'running',
    statusReason: 'started',
    statusSince: '2026-11-28T10:00:00.000Z',
    refresh: { state: 'ok' },
    token: {},
    createdAt: '2026-11-28T09:00:00.000Z',
    updatedAt: '2026-11-28T10:00:00.000Z',
    ...overrides,
  };
}

describe('workload status', () => {
  it('a live status whose process is gone is shown as error, with what to do', () => {
    const shown = effectiveStatus(status({ status: 'auth_retrying' }), () => false);
    expect(shown.status).toBe('error');
    expect(shown.pid).toBeUndefined();
    expect(shown.statusReason).toContain('pid 4242');
    expect(shown.statusReason).toContain('tether restart w');
  });

  it.runIf(process.platform === 'linux')(
    'a pid now used by another program is not the workload (after a crash and pid reuse)',
    () => {
      // This test process is alive, but it is not titled as workload w.
      const shown = effectiveStatus(status({ pid: process.pid }));
      expect(shown.status).toBe('error');
      expect(isWorkloadProcess(process.pid, 'w')).toBe(false);
    },
  );

  it('a live process keeps its status; a stopped workload needs no process', () => {
    expect(effectiveStatus(status(), () => true).status).toBe('running');
    const { pid, ...stopped } = status({ status: 'stopped' });
    expect(pid).toBe(4242);
    expect(effectiveStatus(stopped, () => false).status).toBe('stopped');
  });

  // Zombies and /proc are Linux's; elsewhere the signal-0 probe alone decides.
  it.runIf(process.platform === 'linux')(
    'a process that exited but was not reaped (a zombie) is not alive',
    async () => {
      const { spawn } = await import('node:child_process');
      // The shell starts a short sleep in the background, prints its pid, then becomes a long sleep, which never reaps it.
      const parent = spawn('sh', ['-c', 'sleep 0.05 & echo $!; exec sleep 5'], { stdio: ['ignore', 'pipe', 'ignore'] });
      try {
        const pid = Number(
          await new Promise<string>((resolve) => {
            parent.stdout.once('data', (d: Buffer) => {
              resolve(String(d));
            });
          }),
        );
        let zombie = false;
        for (let i = 0; i < 200 && !zombie; i++) {
          const stat = await readFile(`/proc/${String(pid)}/stat`, 'utf8');
          zombie = stat.includes(') Z ');
          if (!zombie) await new Promise((r) => setTimeout(r, 10));
        }
        expect(zombie).toBe(true);
        expect(() => process.kill(pid, 0)).not.toThrow(); // the probe alone would call it alive
        expect(isAlive(pid)).toBe(false);
        expect(isAlive(process.pid)).toBe(true);
      } finally {
        parent.kill('SIGKILL');
      }
    },
  );

  it('the status file is written 0600 and read back; another name or garbage reads as none', async () => {
    const files = new WorkloadFiles(dir, 'w');
    await writeStatus(files, status());
    expect((await stat(files.status)).mode & 0o777).toBe(0o600);
    expect(await readStatus(files)).toEqual(status());
    expect(await readStatus(new WorkloadFiles(dir, 'other'))).toBeUndefined();
    await writeStatus(files, { ...status(), name: 'other' });
    expect(await readStatus(files)).toBeUndefined();
  });

  it('lists workload directories by name, ignoring what is not a workload', async () => {
    await writeStatus(new WorkloadFiles(dir, 'b'), status({ name: 'b' }));
    await writeStatus(new WorkloadFiles(dir, 'a'), status({ name: 'a' }));
    await writeStatus(new WorkloadFiles(dir, 'a'), status({ name: 'a' }));
    expect(await workloadNames(dir)).toEqual(['a', 'b']);
    expect(await workloadNames(path.join(dir, 'missing'))).toEqual([]);
  });

  it('a control socket path too long for a socket moves to the temp directory', () => {
    const short = new WorkloadFiles(dir, 'w').controlSocket;
    expect(short.startsWith(dir)).toBe(process.platform !== 'win32');
    const long = new WorkloadFiles(path.join(dir, 'x'.repeat(120)), 'w').controlSocket;
    expect(Buffer.byteLength(long)).toBeLessThanOrEqual(104);
  });
});

describe('event log', () => {
  const record = (n: number): LogRecord => ({
    time: new Date(T0 + n).toISOString(),
    type: 'workload',
    event: 'e',
    message: `m${String(n)}`,
  });

  it('keeps lines in order across a rotation, and skips a line cut short', async () => {
    const files = new WorkloadFiles(dir, 'w');
    const log = new EventLog(files, systemClock, { maxBytes: 400 });
    for (let n = 0; n < 10; n++) void log.append(record(n));
    await log.flushed();
    expect((await stat(`${files.events}.1`)).size).toBeGreaterThan(0);
    const read = await readEvents(files);
    const messages = read.map((r) => (r.type === 'workload' ? r.message : ''));
    expect(messages.length).toBeGreaterThan(3);
    expect(messages).toEqual([...messages].sort((a, b) => Number(a.slice(1)) - Number(b.slice(1))));
    expect(messages.at(-1)).toBe('m9');
    expect(await readEvents(files, 2)).toHaveLength(2);
    await import('node:fs/promises').then((fs) => fs.appendFile(files.events, '{"time":"cut'));
    expect((await readEvents(files)).at(-1)).toEqual(record(9));
  });

  it('a log file is created 0600', async () => {
    const files = new WorkloadFiles(dir, 'w');
    const log = new EventLog(files, systemClock);
    await log.append(record(1));
    expect((await stat(files.events)).mode & 0o777).toBe(0o600);
  });

  it('follow delivers the records appended after it started, and stops on abort', async () => {
    const files = new WorkloadFiles(dir, 'w');
    const log = new EventLog(files, systemClock);
    await log.append(record(0));
    const seen: LogRecord[] = [];
    const stop = new AbortController();
    const following = followEvents(files, systemClock, (r) => seen.push(r), stop.signal, 5);
    await log.append(record(1));
    await log.append(record(2));
    for (let i = 0; i < 400 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 5));
    stop.abort();
    await following;
    expect(seen).toEqual([record(1), record(2)]);
  });

  it('a line that cannot be written is kept, and lands in order with the next append', async () => {
    const files = new WorkloadFiles(dir, 'w');
    const log = new EventLog(files, new FakeClock(T0));
    await mkdir(files.events, { recursive: true }); // a directory where the file goes: every write fails
    await log.append(record(0));
    await log.append(record(1));
    await rm(files.events, { recursive: true });
    expect(await readEvents(files)).toEqual([]);
    await log.append(record(2));
    expect(await readEvents(files)).toEqual([record(0), record(1), record(2)]);
  });

  it('kept lines are tried again on the clock, without a new append', async () => {
    const files = new WorkloadFiles(dir, 'w');
    const clock = new FakeClock(T0);
    const log = new EventLog(files, clock);
    await mkdir(files.events, { recursive: true });
    await log.append(record(0));
    await rm(files.events, { recursive: true });
    await clock.advance(EVENT_LOG_RETRY_MS - 1);
    await log.flushed();
    expect(await readEvents(files)).toEqual([]);
    await clock.advance(1);
    await log.flushed();
    expect(await readEvents(files)).toEqual([record(0)]);
  });

  it('past the bound the oldest kept lines are dropped, and a line says how many', async () => {
    const files = new WorkloadFiles(dir, 'w');
    const clock = new FakeClock(T0);
    const log = new EventLog(files, clock, { maxPending: 3 });
    await mkdir(files.events, { recursive: true });
    for (let n = 0; n < 6; n++) void log.append(record(n));
    await log.flushed();
    await rm(files.events, { recursive: true });
    await clock.advance(EVENT_LOG_RETRY_MS);
    await log.flushed();
    expect(await readEvents(files)).toEqual([
      {
        time: record(2).time,
        type: 'workload',
        event: 'log_lines_lost',
        message: '3 lines lost: the event log could not be written for a while',
      },
      record(3),
      record(4),
      record(5),
    ]);
  });

  it('a line cut short by a full disk is cut off, and lands whole once there is space (root: a tiny tmpfs)', async (context) => {
    const mount = path.join(dir, 'fs');
    await mkdir(mount);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', mount]).status !== 0) {
      context.skip('mounting a tmpfs needs root (CAP_SYS_ADMIN)');
    }
    try {
      const files = new WorkloadFiles(mount, 'w');
      const log = new EventLog(files, new FakeClock(T0));
      await log.append(record(0));
      const filler = await open(path.join(mount, 'filler'), 'w');
      const page = Buffer.alloc(4096);
      while ((await filler.write(page).catch(() => ({ bytesWritten: 0 }))).bytesWritten === page.length); // until full
      await filler.close();
      // Longer than what is left of the log's last page: part of it fits, then the disk is full.
      const long: LogRecord = { time: record(1).time, type: 'workload', event: 'e', message: 'x'.repeat(8000) };
      await log.append(long);
      expect(await readFile(files.events, 'utf8')).toBe(`${JSON.stringify(record(0))}\n`);
      await rm(path.join(mount, 'filler'));
      await log.append(record(2));
      expect(await readEvents(files)).toEqual([record(0), long, record(2)]);
    } finally {
      spawnSync('umount', ['-l', mount]);
    }
  });

  it('keeper events become records with ISO times; every kind reads as a line', () => {
    const attempt = keeperRecord({
      type: 'attempt',
      at: T0,
      trigger: 'schedule',
      outcome: 'transient',
      durationMs: 12,
      reason: 'no_oauth_error',
      detail: 'HTTP 403 text/html',
      nextAttemptAt: T0 + 10_000,
    });
    expect(attempt).toMatchObject({ time: '2026-11-28T10:00:00.000Z', nextAttemptAt: '2026-11-28T10:00:10.000Z' });
    expect(formatRecord(attempt)).toBe(
      '2026-11-28 10:00:00Z  refresh (schedule) failed, transient: no_oauth_error HTTP 403 text/html; next attempt 2026-11-28T10:00:10.000Z',
    );
    const status = keeperRecord({ type: 'status', at: T0, status: 'auth_retrying', reason: 'r' });
    expect(formatRecord(status)).toBe('2026-11-28 10:00:00Z  status auth_retrying: r');
    expect(
      formatRecord({ time: status.time, type: 'proxy', method: 'POST', path: '/mcp', status: 503, durationMs: 2 }),
    ).toBe('2026-11-28 10:00:00Z  proxy POST /mcp → 503 (2 ms)');
  });
});

describe('failed requests of the local endpoint', () => {
  it('identical failures are written once, then as a count per window while they go on', async () => {
    const clock = new FakeClock(T0);
    const written: ProxyRecord[] = [];
    const failures = new ProxyFailureLog(clock, (r) => written.push(r), 60_000);
    const failure = (status = 503): ProxyRecord => ({
      time: new Date(clock.now()).toISOString(),
      type: 'proxy',
      method: 'POST',
      path: '/mcp',
      status,
      durationMs: 2,
    });
    failures.observe(failure());
    for (let n = 0; n < 4; n++) {
      await clock.advance(1_000);
      failures.observe(failure());
    }
    failures.observe(failure(502));
    expect(written.map((r) => [r.status, r.repeats])).toEqual([
      [503, undefined],
      [502, undefined],
    ]);

    await clock.advance(56_000); // the 503s' window ends; the 502 had no repeats
    expect(written.slice(2)).toEqual([{ ...failure(), repeats: 4 }]);
    expect(formatRecord(written[2] as LogRecord)).toBe(
      '2026-11-28 10:01:00Z  proxy POST /mcp → 503 (2 ms), and 4 more like it',
    );
    failures.observe(failure());
    await clock.advance(60_000);
    expect(written.slice(3).map((r) => r.repeats)).toEqual([1]);
    await clock.advance(60_000); // a window without repeats ends quietly…
    expect(written).toHaveLength(4);
    failures.observe(failure()); // …and the next failure is written at once
    failures.observe(failure());
    expect(written.slice(4).map((r) => r.repeats)).toEqual([undefined]);
    failures.flush();
    expect(written.slice(5).map((r) => r.repeats)).toEqual([1]);
    expect(clock.pendingTimers).toBe(0);
  });
});

describe('what workloads write', () => {
  it('a URL has its query values and password redacted', () => {
    expect(redactUrl('https://mcp.example.com/v1/mcp?api_key=s3cret&region=eu')).toBe(
      'https://mcp.example.com/v1/mcp?api_key=redacted&region=redacted',
    );
    expect(redactUrl('https://me:s3cret@mcp.example.com/mcp')).toBe('https://me:redacted@mcp.example.com/mcp');
    expect(redactUrl('https://mcp.example.com/mcp')).toBe('https://mcp.example.com/mcp');
    expect(redactUrl('not a url?token=s3cret')).toBe('not a url');
  });
});

describe('metrics', () => {
  it('counts attempts by trigger and outcome, requests by status, and marks the status in effect', () => {
    const metrics = new WorkloadMetrics();
    metrics.observe({ type: 'attempt', at: T0, trigger: 'schedule', outcome: 'success', durationMs: 1 });
    metrics.observe({ type: 'attempt', at: T0, trigger: 'schedule', outcome: 'success', durationMs: 1 });
    metrics.observe({ type: 'attempt', at: T0, trigger: 'demand', outcome: 'transient', durationMs: 1 });
    metrics.request(200);
    metrics.request(503);
    metrics.request(503);
    const text = metrics.render('w', 'auth_retrying', T0, T0 + 90_000);
    expect(text).toContain('tether_refresh_attempts_total{workload="w",trigger="schedule",outcome="success"} 2');
    expect(text).toContain('tether_refresh_attempts_total{workload="w",trigger="demand",outcome="transient"} 1');
    expect(text).toContain('tether_workload_status{workload="w",status="auth_retrying"} 1');
    expect(text).toContain('tether_workload_status{workload="w",status="running"} 0');
    expect(text).toContain('tether_workload_status_seconds{workload="w"} 90');
    expect(text).toContain('tether_proxy_requests_total{workload="w",status="503"} 2');
  });
});

describe('control channel', () => {
  it('serves status, refresh, reload and metrics on a 0600 socket; nothing listening is a coded error', async () => {
    const files = new WorkloadFiles(dir, 'w');
    const { mkdir } = await import('node:fs/promises');
    await mkdir(files.dir, { recursive: true, mode: 0o700 });
    const calls: string[] = [];
    const server = await startControlServer(files.controlSocket, {
      status: () => ({ status: 'running' }),
      refresh: () => {
        calls.push('refresh');
        return Promise.resolve({ status: 'running', refreshed: true });
      },
      reload: () => Promise.reject(new Error('no credentials are stored')),
      metrics: () => 'tether_up 1\n',
    });
    try {
      if (process.platform !== 'win32') expect((await stat(files.controlSocket)).mode & 0o777).toBe(0o600);
      expect(JSON.parse((await controlRequest(files.controlSocket, 'GET', '/status')).body)).toEqual({
        status: 'running',
      });
      expect((await controlRequest(files.controlSocket, 'POST', '/refresh')).status).toBe(200);
      expect(calls).toEqual(['refresh']);
      const reload = await controlRequest(files.controlSocket, 'POST', '/reload');
      expect(reload.status).toBe(500);
      expect(reload.body).toContain('no credentials are stored');
      expect((await controlRequest(files.controlSocket, 'GET', '/metrics')).body).toBe('tether_up 1\n');
      expect((await controlRequest(files.controlSocket, 'GET', '/nope')).status).toBe(404);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
    await expect(controlRequest(files.controlSocket, 'GET', '/status')).rejects.toMatchObject({
      code: 'ERR_WORKLOAD_UNREACHABLE',
    });
  });
});

describe('workload settings', () => {
  it('settings that are not what tether writes are a coded error naming tether rm', async () => {
    const store = await CredentialStore.open({ dir, env: { TETHER_STORE_KEY: 'file' } });
    await store.saveMetadata('w', { version: 1, name: 'w' });
    await expect(loadSpec(store, 'w')).rejects.toMatchObject({ code: 'ERR_WORKLOAD_SPEC' });
    expect(await loadSpec(store, 'none')).toBeUndefined();
    expect(await readFile(path.join(dir, 'workloads', 'w', 'metadata.json'), 'utf8')).toContain('"version": 1');
  });

  it('a default name comes from the host', () => {
    expect(defaultName(new URL('https://MCP.Example.com/v1/mcp'))).toBe('mcp-example-com');
    expect(defaultName(new URL('http://127.0.0.1:8080/mcp'))).toBe('127-0-0-1');
    expect(defaultName(new URL('http://[::1]:8080/mcp'))).toBe('1');
  });
});

/** A loopback token endpoint that holds each request until the test answers it. */
async function heldTokenEndpoint(): Promise<{
  readonly url: string;
  next(): Promise<(status: number, body: object) => void>;
  close(): Promise<void>;
}> {
  const held: ((status: number, body: object) => void)[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    held.push((status, body) =>
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${String(port)}`,
    next: () => waitUntil('a token request', () => held.shift()),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** A port nothing listens on just now. */
async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Polls (real time) until `probe` gives a value. */
async function waitUntil<T>(what: string, probe: () => T | undefined | Promise<T | undefined>): Promise<T> {
  for (let i = 0; i < 300; i++) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('serveWorkload: the verdict on the stored credentials', () => {
  const NAME = 'w';
  const REMOTE = 'http://127.0.0.1:9/mcp?api_key=s3cret';

  /** A workload whose stored access token has expired: the keeper refreshes it at once on start. */
  async function expiredWorkload(clock: FakeClock, tokenEndpoint: string): Promise<CredentialStore> {
    const store = await CredentialStore.open({ dir, keySource: fixedKey(7) });
    await saveSpec(store, {
      version: 1,
      name: NAME,
      remoteUrl: REMOTE,
      resource: REMOTE,
      authorizationServer: { issuer: tokenEndpoint, token_endpoint: `${tokenEndpoint}/token` },
      client: { kind: 'dynamic', clientId: 'client-1' },
      scopes: [],
      host: '127.0.0.1',
      // Already chosen, as after a first start: a new one is saved under the credential's lock, which the refresh holds.
      port: await freePort(),
      headers: {},
      createdAt: new Date(T0).toISOString(),
    });
    await store.saveTokens(NAME, {
      accessToken: 'access-0',
      refreshToken: 'refresh-0',
      issuedAt: clock.now() - 3_600_000,
      expiresAt: clock.now() - 60_000,
    });
    return store;
  }

  /**
   * Runs `test` on the workload started, once its endpoint serves with the
   * refresh at startup held by the token endpoint; stops it after.
   */
  async function withHeldStart(
    test: (started: {
      files: WorkloadFiles;
      clock: FakeClock;
      serving: Promise<unknown>;
      answer: (status: number, body: object) => void;
      starting: WorkloadStatus;
    }) => Promise<void>,
  ): Promise<void> {
    const clock = new FakeClock(T0);
    const endpoint = await heldTokenEndpoint();
    const files = new WorkloadFiles(dir, NAME);
    const serving = serveWorkload({ store: await expiredWorkload(clock, endpoint.url), name: NAME, env: {}, clock });
    try {
      const answer = await endpoint.next();
      const starting = await waitUntil('the endpoint to serve', async () => {
        const status = await readStatus(files);
        return status?.proxyUrl === undefined ? undefined : status;
      });
      await test({ files, clock, serving, answer, starting });
    } finally {
      await endpoint.close();
      await (
        await drive(
          clock,
          serving.catch(() => undefined),
          100,
        )
      )?.stop();
    }
  }

  it(
    'serving, but starting until the server answers the refresh; a spent refresh token is then unauthenticated, never running first',
    { timeout: 15_000 },
    () =>
      withHeldStart(async ({ files, serving, answer, starting }) => {
        expect(starting).toMatchObject({ status: 'starting', pid: process.pid });

        answer(400, { error: 'invalid_grant' });
        await serving;
        const lost = await readStatus(files);
        expect(lost).toMatchObject({
          status: 'unauthenticated',
          proxyUrl: starting.proxyUrl,
          refresh: { state: 'given_up' },
        });
        expect(lost?.statusReason).toContain(`tether login ${NAME}`);
        const statuses = (await readEvents(files)).flatMap((r) => (r.type === 'status' ? [r.status] : []));
        expect(statuses).toEqual(['unauthenticated']);
        // The remote's secret is in neither the status file nor the log; the real URL stays in the settings.
        expect(lost?.remoteUrl).toBe('http://127.0.0.1:9/mcp?api_key=redacted');
        expect(await readFile(files.events, 'utf8')).not.toContain('s3cret');
        expect(await readFile(files.status, 'utf8')).not.toContain('s3cret');
      }),
  );

  it(
    `no answer within ${String(STARTUP_VERDICT_WAIT_MS / 1000)}s: serving as auth_retrying (no valid token), then the keeper's status once it answers`,
    { timeout: 15_000 },
    () =>
      withHeldStart(async ({ files, clock, serving, answer }) => {
        await drive(clock, serving, 100);
        expect(await readStatus(files)).toMatchObject({ status: 'auth_retrying' });

        answer(200, { access_token: 'access-1', token_type: 'Bearer', expires_in: 3600, refresh_token: 'refresh-1' });
        const running = await waitUntil('running', async () => {
          const status = await readStatus(files);
          return status?.status === 'running' ? status : undefined;
        });
        expect(running.refresh).toEqual({ state: 'ok' });
        expect(Date.parse(running.token.expiresAt ?? '')).toBeGreaterThan(clock.now());
      }),
  );
});
