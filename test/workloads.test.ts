import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock/system.js';
import { defaultName } from '../src/cli/run.js';
import { isProcessAlive as isAlive } from '../src/store/lock.js';
import { CredentialStore } from '../src/store/store.js';
import { controlRequest, startControlServer } from '../src/workloads/control.js';
import {
  EventLog,
  followEvents,
  formatRecord,
  keeperRecord,
  type LogRecord,
  readEvents,
} from '../src/workloads/events.js';
import { WorkloadFiles } from '../src/workloads/files.js';
import { WorkloadMetrics } from '../src/workloads/metrics.js';
import { loadSpec } from '../src/workloads/spec.js';
import {
  effectiveStatus,
  isWorkloadProcess,
  readStatus,
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
    const log = new EventLog(files, 400);
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
    const log = new EventLog(files);
    await log.append(record(1));
    expect((await stat(files.events)).mode & 0o777).toBe(0o600);
  });

  it('follow delivers the records appended after it started, and stops on abort', async () => {
    const files = new WorkloadFiles(dir, 'w');
    const log = new EventLog(files);
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
