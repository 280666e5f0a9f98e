import { spawnSync } from 'node:child_process';
import { appendFile, mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises';
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
import { currentStatus } from '../src/cli/workloads.js';
import {
  EVENT_LOG_RETRY_MS,
  EventLog,
  type EventLogIo,
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
import { loadSpec, saveSpec, type WorkloadSpec } from '../src/workloads/spec.js';
import { serveWorkload, STARTUP_VERDICT_WAIT_MS } from '../src/workloads/workload.js';
import { drive, fixedKey } from './support/store-helpers.js';
import {
  effectiveStatus,
  isWorkloadProcess,
  iso,
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
    await appendFile(files.events, '{"time":"cut');
    expect((await readEvents(files)).at(-1)).toEqual(record(9));
    // A log opened after a crash left part of a line starts a line of its own.
    await new EventLog(files, systemClock, { maxBytes: 400 }).append(record(10));
    expect((await readEvents(files)).slice(-2)).toEqual([record(9), record(10)]);
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

  it('a line cut short that cannot be cut off is left behind: the retried line starts a line of its own', async () => {
    const files = new WorkloadFiles(dir, 'w');
    const failing = { append: 0, truncate: 1 };
    const io: EventLogIo = {
      async appendFile(file, text) {
        if (failing.append-- <= 0) return appendFile(file, text);
        await appendFile(file, text.slice(0, 20)); // the disk filled up part-way
        throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      },
      truncate() {
        failing.truncate -= 1;
        return Promise.reject(Object.assign(new Error('i/o error'), { code: 'EIO' }));
      },
    };
    const log = new EventLog(files, new FakeClock(T0), { io });
    await log.append(record(0));
    failing.append = 1;
    await log.append(record(1));
    expect(failing.truncate).toBe(0);
    expect(await readFile(files.events, 'utf8')).toBe(
      `${JSON.stringify(record(0))}\n${JSON.stringify(record(1)).slice(0, 20)}`,
    );
    await log.append(record(2));
    expect(await readEvents(files)).toEqual([record(0), record(1), record(2)]);
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
  it('identical failures are written once, then as a count per window, at the last one’s time, while they go on', async () => {
    const clock = new FakeClock(T0);
    const written: ProxyRecord[] = [];
    const failures = new ProxyFailureLog(clock, (r) => written.push(r), { windowMs: 60_000 });
    const failure = (status = 503): ProxyRecord => ({
      time: iso(clock.now()),
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
    const last = failure();
    failures.observe(failure(502));
    expect(written.map((r) => [r.status, r.repeats])).toEqual([
      [503, undefined],
      [502, undefined],
    ]);

    await clock.advance(56_000); // the 503s' window ends; the 502 had no repeats
    expect(written.slice(2)).toEqual([{ ...last, repeats: 4 }]); // stamped when the last of them failed
    expect(formatRecord(written[2] as LogRecord)).toBe(
      '2026-11-28 10:00:04Z  proxy POST /mcp → 503 (2 ms), and 4 more like it',
    );
    failures.observe(failure());
    await clock.advance(60_000);
    expect(written.slice(3).map((r) => r.repeats)).toEqual([1]);
    await clock.advance(60_000); // a window without repeats ends quietly…
    expect(written).toHaveLength(4);
    failures.observe(failure()); // …and the next failure is written at once
    await clock.advance(5_000);
    failures.observe(failure());
    expect(written.slice(4).map((r) => r.repeats)).toEqual([undefined]);
    failures.flush();
    expect(written.slice(5)).toEqual([{ ...failure(), repeats: 1 }]);
    expect(clock.pendingTimers).toBe(0);
  });

  it('past the bound on paths, failures fold by method and status, then are written one by one: timers stay bounded', async () => {
    const clock = new FakeClock(T0);
    const written: ProxyRecord[] = [];
    const failures = new ProxyFailureLog(clock, (r) => written.push(r), { maxWindows: 3 });
    const failure = (path: string, method = 'GET'): ProxyRecord => ({
      time: iso(clock.now()),
      type: 'proxy',
      method,
      path,
      status: 404,
      durationMs: 1,
    });
    for (const path of ['/a', '/b', '/c']) failures.observe(failure(path));
    for (let n = 0; n < 500; n++) failures.observe(failure(`/scan/${String(n)}`)); // a client scanning paths
    for (const method of ['POST', 'PUT', 'PATCH', 'DELETE']) failures.observe(failure('/x', method));
    failures.observe(failure('/y', 'DELETE'));
    expect(written.map((r) => `${r.method} ${r.path}`)).toEqual([
      'GET /a',
      'GET /b',
      'GET /c',
      'GET /scan/0',
      'POST /x',
      'PUT /x',
      'PATCH /x', // no window left: written one by one
      'DELETE /x',
      'DELETE /y',
    ]);
    expect(clock.pendingTimers).toBe(6);

    await clock.advance(1_000);
    failures.observe(failure('/a'));
    const last = failure('/scan/500');
    failures.observe(last);
    failures.flush();
    expect(written.slice(9)).toEqual([
      { ...failure('/a'), repeats: 1 },
      { ...last, path: '*', repeats: 500 },
    ]);
    expect(clock.pendingTimers).toBe(0);
  });
});

describe('what workloads write', () => {
  it('a URL has its user name, password, query values and fragment redacted; the path is kept', () => {
    expect(redactUrl('https://mcp.example.com/v1/mcp?api_key=s3cret&region=eu')).toBe(
      'https://mcp.example.com/v1/mcp?api_key=redacted&region=redacted',
    );
    expect(redactUrl('https://me:s3cret@mcp.example.com/mcp')).toBe('https://redacted:redacted@mcp.example.com/mcp');
    expect(redactUrl('https://s3cret@mcp.example.com/mcp')).toBe('https://redacted@mcp.example.com/mcp');
    expect(redactUrl('https://mcp.example.com/mcp#token=s3cret')).toBe('https://mcp.example.com/mcp#redacted');
    expect(redactUrl('https://mcp.example.com/mcp')).toBe('https://mcp.example.com/mcp');
    expect(redactUrl('https://mcp.example.com/mcp/k3y')).toBe('https://mcp.example.com/mcp/k3y');
    expect(redactUrl('not a url?token=s3cret')).toBe('not a url');
    expect(redactUrl('//s3cret@not a url')).toBe('//redacted@not a url');
  });

  it('a workload that never ran shows its remote redacted too', async () => {
    const spec: WorkloadSpec = {
      version: 1,
      name: 'w',
      remoteUrl: 'https://s3cret@mcp.example.com/mcp?api_key=s3cret#s3cret',
      resource: 'https://mcp.example.com/mcp',
      authorizationServer: { issuer: 'https://as.example.com', token_endpoint: 'https://as.example.com/token' },
      client: { kind: 'dynamic', clientId: 'client-1' },
      scopes: [],
      host: '127.0.0.1',
      port: 0,
      headers: {},
      createdAt: iso(T0),
    };
    const shown = await currentStatus(new WorkloadFiles(dir, 'w'), spec);
    expect(shown).toMatchObject({ status: 'stopped', statusReason: 'not started' });
    expect(shown.remoteUrl).toBe('https://redacted@mcp.example.com/mcp?api_key=redacted#redacted');
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

/** Answers a held token request. */
type Answer = (status: number, body: object) => void;

/** A loopback token endpoint that holds each request until the test answers it. */
async function heldTokenEndpoint(): Promise<{
  readonly url: string;
  /** The next token request, once it arrives. */
  next(): Promise<Answer>;
  close(): Promise<void>;
}> {
  const held: Answer[] = [];
  const waiting: ((answer: Answer) => void)[] = [];
  const server = http.createServer((req, res) => {
    req.resume();
    const answer: Answer = (status, body) =>
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    const waiter = waiting.shift();
    if (waiter === undefined) held.push(answer);
    else waiter(answer);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${String(port)}`,
    next: () => {
      const answer = held.shift();
      return answer === undefined ? new Promise((resolve) => waiting.push(resolve)) : Promise.resolve(answer);
    },
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

/**
 * Polls until `probe` gives a value, for what only real I/O (fsyncs, sockets)
 * stands between: the budget is generous for a busy machine, and a wait that
 * ends costs nothing.
 */
async function waitUntil<T>(
  what: string,
  probe: () => T | undefined | Promise<T | undefined>,
  budgetMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + budgetMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** A POST to the local endpoint, as an MCP client sends one; resolves to the status. */
async function post(url: string): Promise<number> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
  });
  await response.arrayBuffer();
  return response.status;
}

/** Resolves once the workload counted `count` answers with `status` (its metrics, read over the control channel). */
function answered(files: WorkloadFiles, status: number, count: number): Promise<true> {
  return waitUntil(`${String(count)} answers ${String(status)}`, async () => {
    const metrics = (await controlRequest(files.controlSocket, 'GET', '/metrics')).body;
    const line = metrics
      .split('\n')
      .find((l) => l.startsWith(`tether_proxy_requests_total{`) && l.includes(`status="${String(status)}"`));
    return Number(line?.split(' ').at(-1)) >= count ? true : undefined;
  });
}

/** A promise and its resolve (Node 20 has no `Promise.withResolvers`). */
function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Budget of a test that starts a workload: real servers and fsyncs on a machine that may be busy. */
const SERVE_TEST_TIMEOUT_MS = 60_000;

describe('serveWorkload: the verdict on the stored credentials', () => {
  const NAME = 'w';
  const REMOTE = 'http://127.0.0.1:9/mcp?api_key=s3cret';

  /** A workload on the stored credentials, its access token expired (the keeper refreshes it at once on start) or valid. */
  async function storedWorkload(
    clock: FakeClock,
    tokenEndpoint: string,
    options: { expired?: boolean; port?: number } = {},
  ): Promise<CredentialStore> {
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
      port: options.port ?? (await freePort()),
      headers: {},
      createdAt: new Date(T0).toISOString(),
    });
    const expired = options.expired ?? true;
    await store.saveTokens(NAME, {
      accessToken: 'access-0',
      refreshToken: 'refresh-0',
      issuedAt: clock.now() - 3_600_000,
      expiresAt: clock.now() + (expired ? -60_000 : 3_600_000),
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
      answer: Answer;
      /** The token requests after the first. */
      next: () => Promise<Answer>;
      starting: WorkloadStatus;
    }) => Promise<void>,
  ): Promise<void> {
    const clock = new FakeClock(T0);
    const endpoint = await heldTokenEndpoint();
    const files = new WorkloadFiles(dir, NAME);
    const serving = serveWorkload({ store: await storedWorkload(clock, endpoint.url), name: NAME, env: {}, clock });
    try {
      const answer = await endpoint.next();
      const starting = await waitUntil('the endpoint to serve', async () => {
        const status = await readStatus(files);
        return status?.proxyUrl === undefined ? undefined : status;
      });
      await test({ files, clock, serving, answer, next: () => endpoint.next(), starting });
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
    { timeout: SERVE_TEST_TIMEOUT_MS },
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
        // Never running on the spent credential (a keeper may say auth_retrying while its first try waits its turn).
        expect(statuses).not.toContain('running');
        expect(statuses.at(-1)).toBe('unauthenticated');
        // The remote's secret is in neither the status file nor the log; the real URL stays in the settings.
        expect(lost?.remoteUrl).toBe('http://127.0.0.1:9/mcp?api_key=redacted');
        expect(await readFile(files.events, 'utf8')).not.toContain('s3cret');
        expect(await readFile(files.status, 'utf8')).not.toContain('s3cret');
      }),
  );

  it(
    `no answer within ${String(STARTUP_VERDICT_WAIT_MS / 1000)}s: serving as auth_retrying (no valid token), then the keeper's status once it answers`,
    { timeout: SERVE_TEST_TIMEOUT_MS },
    () =>
      withHeldStart(async ({ files, clock, serving, answer }) => {
        // The wait was armed before the status said `starting`: exactly its length, short of the request's own timeout.
        await clock.advance(STARTUP_VERDICT_WAIT_MS);
        await serving;
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

  it(
    'the 503s of an outage are counted in the log as it ends, at the last one’s time, before the status running',
    { timeout: SERVE_TEST_TIMEOUT_MS },
    () =>
      withHeldStart(async ({ files, clock, serving, answer, next, starting }) => {
        answer(503, {}); // transient: no valid token left, the keeper backs off (≥ 5 s)
        await serving;
        expect(await readStatus(files)).toMatchObject({ status: 'auth_retrying' });
        const url = starting.proxyUrl ?? '';
        for (let n = 0; n < 3; n++) {
          if (n > 0) await clock.advance(1_000);
          expect(await post(url)).toBe(503);
        }
        const lastFailedAt = clock.now();
        await answered(files, 503, 3);

        const refreshed = controlRequest(files.controlSocket, 'POST', '/refresh'); // the network is back
        (await next())(200, { access_token: 'access-1', token_type: 'Bearer', expires_in: 3600 });
        expect((await refreshed).status).toBe(200);
        const events = await waitUntil('the status running in the log', async () => {
          const read = await readEvents(files);
          return read.some((r) => r.type === 'status' && r.status === 'running') ? read : undefined;
        });
        const proxied = events.filter((r) => r.type === 'proxy');
        expect(proxied).toMatchObject([
          { time: iso(T0), method: 'POST', path: '/mcp', status: 503 },
          { time: iso(lastFailedAt), method: 'POST', path: '/mcp', status: 503, repeats: 2 },
        ]);
        expect(proxied).toHaveLength(2);
        const counted = events.indexOf(proxied[1] as LogRecord);
        expect(events.findIndex((r) => r.type === 'status' && r.status === 'running')).toBeGreaterThan(counted);
      }),
  );

  it(
    'a start that fails once the endpoint served writes the counts of its failed requests',
    { timeout: SERVE_TEST_TIMEOUT_MS },
    async () => {
      const clock = new FakeClock(T0);
      // A valid token and no port chosen yet: the port the endpoint got is saved, and that save fails.
      const store = await storedWorkload(clock, 'http://127.0.0.1:9', { expired: false, port: 0 });
      const saving = deferred<number>();
      const failSave = deferred<undefined>();
      store.saveMetadata = async (_workload, metadata) => {
        saving.resolve((metadata as WorkloadSpec).port);
        await failSave.promise;
        throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      };
      const files = new WorkloadFiles(dir, NAME);
      const serving = serveWorkload({ store, name: NAME, env: {}, clock });
      const url = `http://127.0.0.1:${String(await saving.promise)}/mcp`;
      for (let n = 0; n < 3; n++) expect(await post(url)).toBe(502); // the remote (port 9) refuses
      failSave.resolve(undefined);
      await expect(serving).rejects.toMatchObject({ code: 'ENOSPC' });

      const events = await readEvents(files);
      expect(events.filter((r) => r.type === 'proxy').map((r) => [r.status, r.repeats])).toEqual([
        [502, undefined],
        [502, 2],
      ]);
      expect(events.at(-1)).toMatchObject({ type: 'workload', event: 'error' });
      expect(clock.pendingTimers).toBe(0);
    },
  );
});
