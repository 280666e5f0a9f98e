import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it, onTestFinished } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { systemClock } from '../src/clock/system.js';
import { TetherError } from '../src/errors.js';
import { withFileLock, type LockOptions } from '../src/store/lock.js';
import { drive, listFiles, tempHome } from './support/store-helpers.js';

const CHILD = fileURLToPath(new URL('./support/store-lock-child.ts', import.meta.url));

/** Records who is inside a critical section, to catch two at once. */
class Occupancy {
  inside = 0;
  most = 0;
  entries = 0;

  async visit(work: () => Promise<void>): Promise<void> {
    this.inside++;
    this.entries++;
    this.most = Math.max(this.most, this.inside);
    try {
      await work();
    } finally {
      this.inside--;
    }
  }
}

/** Lets real I/O run a few times over without moving fake time. */
const yieldIo = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 1));

/** A pid that no process has any more. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '']).pid;
}

async function writeLock(file: string, owner: { pid: number; host: string }): Promise<void> {
  await writeFile(file, JSON.stringify({ ...owner, nonce: 'someone-else', acquiredAt: '2026-01-01T00:00:00.000Z' }));
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  return promise.then(
    () => 'resolved',
    (error: unknown) => (error instanceof TetherError ? error.code : String(error)),
  );
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = (): void => undefined;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

describe('file lock, in one process', () => {
  it('admits one holder at a time and leaves nothing behind', async () => {
    const dir = await tempHome();
    const file = path.join(dir, 'a.lock');
    const occupancy = new Occupancy();
    const options = { staleMs: 30_000, timeoutMs: 10_000 };
    await Promise.all(
      Array.from({ length: 10 }, () => withFileLock(file, systemClock, options, () => occupancy.visit(yieldIo))),
    );
    expect(occupancy).toMatchObject({ most: 1, entries: 10, inside: 0 });
    expect(await listFiles(dir)).toEqual([]);
  });

  it('is re-entrant along one async call chain, and released when the work throws', async () => {
    const dir = await tempHome();
    const file = path.join(dir, 'a.lock');
    const options = { staleMs: 30_000, timeoutMs: 1_000 };
    const nested = withFileLock(file, systemClock, options, () =>
      withFileLock(file, systemClock, options, () => Promise.resolve('inner')),
    );
    expect(await nested).toBe('inner');
    const failing = withFileLock(file, systemClock, options, () => Promise.reject(new Error('boom')));
    await expect(failing).rejects.toThrow('boom');
    expect(await listFiles(dir)).toEqual([]);
  });

  it('times out with ERR_STORE_LOCK_TIMEOUT while a live holder keeps its heartbeat', async () => {
    const dir = await tempHome();
    const file = path.join(dir, 'a.lock');
    const clock = new FakeClock(Date.now());
    // Stale after 300 ms without a heartbeat, but the holder beats every 75 ms for the whole second.
    const options: LockOptions = { staleMs: 300, timeoutMs: 1_000 };
    const release = deferred();
    const holder = withFileLock(file, clock, options, () => release.promise);
    await drive(clock, yieldIo());
    const started = clock.monotonic();
    expect(await drive(clock, codeOf(withFileLock(file, clock, options, () => Promise.resolve())))).toBe(
      'ERR_STORE_LOCK_TIMEOUT',
    );
    expect(clock.monotonic() - started).toBeGreaterThanOrEqual(1_000);
    release.resolve();
    await holder;
    expect(await listFiles(dir)).toEqual([]);
  });

  it('does not take a held lock over when the wall clock jumps (wake from sleep)', async () => {
    const dir = await tempHome();
    const file = path.join(dir, 'a.lock');
    const clock = new FakeClock(Date.now());
    const release = deferred();
    const holder = withFileLock(file, clock, { staleMs: 1_000, timeoutMs: 1_000 }, () => release.promise);
    await drive(clock, yieldIo());
    clock.sleep(3_600_000); // an hour of wall time, no monotonic time, no heartbeat
    const waiter = withFileLock(file, clock, { staleMs: 1_000, timeoutMs: 500 }, () => Promise.resolve());
    expect(await drive(clock, codeOf(waiter))).toBe('ERR_STORE_LOCK_TIMEOUT');
    release.resolve();
    await holder;
  });

  it.each([
    ['a live process on this host', () => ({ pid: process.ppid, host: os.hostname() })],
    ['a process on another host', () => ({ pid: 1, host: 'elsewhere.example' })],
    ['a holder that died while writing it', undefined],
  ])('takes over a lock left unchanged for staleMs by %s', async (_name, owner) => {
    const dir = await tempHome();
    const file = path.join(dir, 'a.lock');
    if (owner === undefined) await writeFile(file, '');
    else await writeLock(file, owner());
    const clock = new FakeClock(Date.now());
    const started = clock.monotonic();
    const taken = withFileLock(file, clock, { staleMs: 1_000, timeoutMs: 5_000 }, () =>
      Promise.resolve(clock.monotonic() - started),
    );
    const waited = await drive(clock, taken);
    expect(waited).toBeGreaterThanOrEqual(1_000);
    expect(waited).toBeLessThan(1_500);
    expect(await listFiles(dir)).toEqual([]);
  });

  it('takes over at once from a holder whose pid is gone from this host', async () => {
    const dir = await tempHome();
    const file = path.join(dir, 'a.lock');
    await writeLock(file, { pid: deadPid(), host: os.hostname() });
    const clock = new FakeClock(Date.now());
    const started = clock.monotonic();
    await drive(
      clock,
      withFileLock(file, clock, { staleMs: 30_000, timeoutMs: 5_000 }, () => Promise.resolve()),
    );
    expect(clock.monotonic() - started).toBeLessThan(1_000);
  });

  it.each([
    ['dead on this host', () => ({ pid: deadPid(), host: os.hostname() })],
    ['silent on another host', () => ({ pid: 1, host: 'elsewhere.example' })],
  ])('racing takeovers of a stale lock (holder %s) produce one holder at a time', async (_name, owner) => {
    const dir = await tempHome();
    const file = path.join(dir, 'a.lock');
    const clock = new FakeClock(Date.now());
    const options = { staleMs: 500, timeoutMs: 60_000 };
    for (let round = 0; round < 5; round++) {
      await writeLock(file, owner());
      const occupancy = new Occupancy();
      const all = Promise.all(
        Array.from({ length: 12 }, () => withFileLock(file, clock, options, () => occupancy.visit(yieldIo))),
      );
      await drive(clock, all);
      expect(occupancy).toMatchObject({ most: 1, entries: 12 });
      expect(await listFiles(dir)).toEqual([]);
    }
  });

  it('recovers from a taker that died holding the takeover guard', async () => {
    const dir = await tempHome();
    const file = path.join(dir, 'a.lock');
    await writeLock(file, { pid: deadPid(), host: os.hostname() });
    await writeLock(`${file}.takeover`, { pid: deadPid(), host: os.hostname() });
    const clock = new FakeClock(Date.now());
    await drive(
      clock,
      withFileLock(file, clock, { staleMs: 500, timeoutMs: 5_000 }, () => Promise.resolve()),
    );
    expect(await listFiles(dir)).toEqual([]);
  });

  it('a holder that lost its lock (stalled past staleMs) leaves the new holder’s file alone', async () => {
    const dir = await tempHome();
    const file = path.join(dir, 'a.lock');
    const clock = new FakeClock(Date.now());
    const options = { staleMs: 400, timeoutMs: 1_000 };
    const release = deferred();
    const holder = withFileLock(file, clock, options, () => release.promise);
    await drive(clock, yieldIo());
    // Someone took it over while we were stalled.
    await writeLock(file, { pid: process.ppid, host: os.hostname() });
    const taken = await readFile(file, 'utf8');
    const touched = (await stat(file)).mtimeMs;
    for (let beat = 0; beat < 5; beat++) {
      await clock.advance(100); // a heartbeat: it sees the file is not ours and stops
      await yieldIo();
    }
    expect((await stat(file)).mtimeMs).toBe(touched);
    release.resolve();
    await holder;
    expect(await readFile(file, 'utf8')).toBe(taken);
  });
});

/** A child process running test/support/store-lock-child.ts, with its output lines. */
class Child {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  readonly #process: ChildProcess;
  #waiters: (() => void)[] = [];

  constructor(args: Record<string, unknown>) {
    this.#process = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(args)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let buffer = '';
    this.#process.stdout?.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      const parts = buffer.split('\n');
      buffer = parts.pop() ?? '';
      this.lines.push(...parts);
      for (const wake of this.#waiters.splice(0)) wake();
    });
    this.exited = new Promise((resolve) => {
      this.#process.on('exit', resolve);
    });
    onTestFinished(() => {
      if (this.#process.exitCode === null && this.#process.signalCode === null) this.#process.kill('SIGKILL');
    });
  }

  /** Resolves once the child has printed `line`. */
  async printed(line: string): Promise<void> {
    while (!this.lines.includes(line)) await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  signal(name: NodeJS.Signals): void {
    this.#process.kill(name);
  }
}

/** The enter/exit log must alternate: each holder leaves before the next enters. */
function assertNoOverlap(log: string): void {
  const lines = log.trim().split('\n');
  for (let i = 0; i < lines.length; i += 2) {
    const enter = /^enter (\S+)$/.exec(lines[i] ?? '');
    expect(enter, `line ${i}: ${lines[i] ?? ''}`).not.toBeNull();
    expect(lines[i + 1], `line ${i + 1}`).toBe(`exit ${enter?.[1] ?? ''}`);
  }
}

async function sharedCounter(): Promise<{ home: string; counter: string; log: string }> {
  const dir = await tempHome();
  const shared = { home: path.join(dir, 'home'), counter: path.join(dir, 'counter'), log: path.join(dir, 'log') };
  await writeFile(shared.counter, '0');
  await writeFile(shared.log, '');
  return shared;
}

describe('file lock, across processes', () => {
  it('4 processes, 200 increments under the lock: no lost update, no overlap', async () => {
    const shared = await sharedCounter();
    const children = ['a', 'b', 'c', 'd'].map(
      (id) => new Child({ ...shared, mode: 'count', id, staleMs: 5_000, iterations: 50 }),
    );
    expect(await Promise.all(children.map((c) => c.exited))).toEqual([0, 0, 0, 0]);
    expect(await readFile(shared.counter, 'utf8')).toBe('200');
    const log = await readFile(shared.log, 'utf8');
    assertNoOverlap(log);
    expect(log.trim().split('\n')).toHaveLength(400);
  }, 30_000);

  it('a holder killed with SIGKILL: the waiters take over, one at a time', async () => {
    const shared = await sharedCounter();
    const holder = new Child({ ...shared, mode: 'hold', id: 'h', staleMs: 1_500 });
    await holder.printed('held');
    const waiters = ['a', 'b', 'c'].map(
      (id) => new Child({ ...shared, mode: 'count', id, staleMs: 1_500, iterations: 10 }),
    );
    await Promise.all(waiters.map((w) => w.printed('ready')));
    await new Promise((resolve) => setTimeout(resolve, 100)); // they are polling now
    expect(await readFile(shared.counter, 'utf8')).toBe('0');
    holder.signal('SIGKILL');
    expect(await Promise.all(waiters.map((w) => w.exited))).toEqual([0, 0, 0]);
    expect(await readFile(shared.counter, 'utf8')).toBe('30');
    assertNoOverlap(await readFile(shared.log, 'utf8'));
    expect(await listFiles(path.join(shared.home, 'locks'))).toEqual([]);
  }, 30_000);

  it('a holder that hangs (SIGSTOP): taken over after the stale timeout, not before', async () => {
    const shared = await sharedCounter();
    const staleMs = 1_500;
    const holder = new Child({ ...shared, mode: 'hold', id: 'h', staleMs });
    await holder.printed('held');
    holder.signal('SIGSTOP');
    const waiter = new Child({ ...shared, mode: 'count', id: 'a', staleMs, iterations: 1 });
    await waiter.printed('ready');
    const started = performance.now();
    await waiter.printed('done');
    const waited = performance.now() - started;
    expect(waited).toBeGreaterThanOrEqual(staleMs - 50); // the child starts its watch just after `ready`
    expect(waited).toBeLessThan(staleMs + 3_000);
    expect(await readFile(shared.counter, 'utf8')).toBe('1');
    holder.signal('SIGKILL');
  }, 30_000);
});
