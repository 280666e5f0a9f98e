import { AsyncLocalStorage } from 'node:async_hooks';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { open, unlink, utimes } from 'node:fs/promises';
import os from 'node:os';
import type { Clock, TimerHandle } from '../clock/clock.js';
import { TetherError, quoteUntrusted } from '../errors.js';
import { hasCode } from './files.js';

/*
 * A cross-process lock made of one file (DESIGN §5: one refresh at a time per
 * credential, across processes).
 *
 * - Taking it: create the lock file with O_EXCL (`wx`), holding the holder's
 *   pid, host, a random nonce and the time. Whoever creates it holds it.
 * - Holding it: a heartbeat refreshes the file's mtime every staleMs/4. It
 *   also checks that the file is still ours; if it is not (we stalled for
 *   longer than staleMs and were taken over), it stops, and the release will
 *   not delete the new holder's file. A holder stalled that long has been
 *   presumed dead by design, so staleMs must stay well above any legitimate
 *   stall; if it resumes in the instant of a takeover, two could briefly
 *   hold the lock — the one race this scheme does not close.
 * - Waiting: poll with a short growing delay (2 ms up to 25 ms, jittered) on
 *   the injected clock, up to `timeoutMs`, then `ERR_STORE_LOCK_TIMEOUT`;
 *   or until the caller's AbortSignal aborts: `ERR_STORE_LOCK_ABORTED`.
 * - Stale: a waiter presumes the holder dead when the lock file has not
 *   changed (same inode, mtime and size) for `staleMs` of the waiter's own
 *   monotonic time — not when its mtime is older than staleMs by the wall
 *   clock, which would declare every held lock stale the moment a laptop
 *   wakes from sleep, before the holder's heartbeat has had a chance to run.
 *   Sooner, at once, when the file names a pid on this host that no longer
 *   exists (`kill(pid, 0)` gives ESRCH); a pid that exists, even if reused
 *   by another program, only ever delays a takeover until staleMs. (Two
 *   containers sharing the state directory under the same host name but
 *   different pid namespaces would defeat this check; tether does not
 *   support that.)
 * - Taking over: a second O_EXCL file, `<lock>.takeover`, admits one taker
 *   at a time. Under it the taker checks that the lock file is still the one
 *   it judged stale and only then deletes it; after that, taking the lock is
 *   an ordinary O_EXCL create, which only one process can win. A taker that
 *   died holding `.takeover` is itself taken over by the same staleness rule.
 *
 * Within one process the lock is re-entrant along an async call chain:
 * `save()` called inside `exclusive()` runs at once instead of waiting for
 * itself, while every other caller waits.
 */

/** Timings of a file lock, in milliseconds. */
export interface LockOptions {
  /** A lock whose file has not been refreshed for this long is presumed abandoned and taken over. */
  readonly staleMs: number;
  /** How long to wait for the lock before giving up with `ERR_STORE_LOCK_TIMEOUT`. */
  readonly timeoutMs: number;
}

/**
 * 30 s stale: four missed heartbeats in a row, and twice the refresh
 * request's 15 s total timeout. 40 s wait: long enough to outlast a dead
 * holder's stale period, short enough that the refresh (15 s) still fits in
 * the keeper's 60 s attempt deadline after it.
 */
export const DEFAULT_LOCK_OPTIONS: Readonly<LockOptions> = Object.freeze({ staleMs: 30_000, timeoutMs: 40_000 });

/** Who holds a lock file. */
interface Owner {
  readonly pid: number;
  readonly host: string;
  readonly nonce: string;
}

/** A lock file as one open handle saw it. */
interface Seen {
  /** Changes whenever the file is replaced or its heartbeat runs. */
  readonly identity: string;
  /** Undefined while the holder is still writing it, or if it crashed doing so. */
  readonly owner: Owner | undefined;
}

/** A lock taken by this process; `held` turns false once released or lost. */
interface Claim {
  held: boolean;
}

const holding = new AsyncLocalStorage<ReadonlyMap<string, Claim>>();
/**
 * How many `holding.run` calls have not settled. On Node 20 a storage in use
 * keeps async hooks on for the whole process (~5% of the proxy's CPU per
 * request), so it is disabled whenever no lock is held.
 */
let runs = 0;

/**
 * Runs `fn` holding the lock `file` (an absolute path in an existing
 * directory), waiting for it as described at the top of this module, and
 * releases it when `fn` settles. When `signal` aborts, a wait for the lock
 * ends with `ERR_STORE_LOCK_ABORTED`; `fn`, once started, is not interrupted.
 */
export async function withFileLock<T>(
  file: string,
  clock: Clock,
  options: LockOptions,
  fn: () => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const outer = holding.getStore();
  if (outer?.get(file)?.held === true) return fn();
  const lock = await acquire(file, clock, options, signal);
  runs += 1;
  try {
    return await holding.run(new Map(outer).set(file, lock.claim), fn);
  } finally {
    runs -= 1;
    if (runs === 0) holding.disable();
    await lock.release();
  }
}

async function acquire(file: string, clock: Clock, options: LockOptions, signal?: AbortSignal): Promise<HeldLock> {
  const deadline = clock.monotonic() + options.timeoutMs;
  const lockWatch = new Watch(clock);
  const guardWatch = new Watch(clock);
  let last: Seen | undefined;
  for (let round = 0; ; round++) {
    if (signal?.aborted === true) {
      throw new TetherError('ERR_STORE_LOCK_ABORTED', `stopped waiting for the lock ${file}`, { cause: signal.reason });
    }
    const owner = newOwner();
    if (await tryCreate(file, owner, clock)) return new HeldLock(file, owner.nonce, clock, options);
    last = await inspect(file);
    if (last !== undefined && abandoned(last, lockWatch, options)) {
      if (await takeOver(file, last, clock, guardWatch, options)) continue;
    }
    const left = deadline - clock.monotonic();
    if (left <= 0) throw lockTimeout(file, options, last?.owner);
    await sleep(clock, Math.min(left, Math.min(25, 2 * 1.5 ** round) * (0.5 + Math.random())), signal);
  }
}

/**
 * Deletes the abandoned lock file `judged`, if it is still that file, under
 * the `.takeover` guard; true when it was deleted.
 */
async function takeOver(
  file: string,
  judged: Seen,
  clock: Clock,
  guardWatch: Watch,
  options: LockOptions,
): Promise<boolean> {
  const guardFile = `${file}.takeover`;
  const guard = newOwner();
  if (!(await tryCreate(guardFile, guard, clock))) {
    // Someone else is taking over right now — or died doing so.
    const seen = await inspect(guardFile);
    if (seen !== undefined && abandoned(seen, guardWatch, options)) {
      if ((await inspect(guardFile))?.identity === seen.identity) await unlinkIfPresent(guardFile);
    }
    return false;
  }
  try {
    // Released, or taken over by someone before us: then it is not ours to delete.
    if ((await inspect(file))?.identity !== judged.identity) return false;
    await unlinkIfPresent(file);
    return true;
  } finally {
    await releaseIfOurs(guardFile, guard.nonce);
  }
}

function abandoned(seen: Seen, watch: Watch, options: LockOptions): boolean {
  const owner = seen.owner;
  if (owner !== undefined && owner.host === os.hostname() && owner.pid !== process.pid && !isProcessAlive(owner.pid)) {
    return true;
  }
  return watch.unchangedFor(seen.identity) >= options.staleMs;
}

/**
 * True while a process with this pid runs: a signal-0 probe (EPERM: it
 * exists but belongs to someone else), and on Linux not a zombie — in a
 * container whose init does not reap orphans, a process that exited stays a
 * zombie and would otherwise look alive forever.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (error) {
    if (!hasCode(error, 'EPERM')) return false;
  }
  return !isZombie(pid);
}

function isZombie(pid: number): boolean {
  if (process.platform !== 'linux') return false;
  try {
    const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2); // after "pid (comm) "
    return state === 'Z' || state === 'X';
  } catch {
    return false;
  }
}

/** How long (monotonic) a lock file has looked the same to this waiter. */
class Watch {
  #identity: string | undefined;
  #since = 0;

  constructor(private readonly clock: Clock) {}

  unchangedFor(identity: string): number {
    const now = this.clock.monotonic();
    if (identity !== this.#identity) {
      this.#identity = identity;
      this.#since = now;
    }
    return now - this.#since;
  }
}

/** A lock this process holds, with its heartbeat. */
class HeldLock {
  readonly claim: Claim = { held: true };
  #timer: TimerHandle | undefined;
  #beat: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: string,
    private readonly nonce: string,
    private readonly clock: Clock,
    private readonly options: LockOptions,
  ) {
    this.#schedule();
  }

  async release(): Promise<void> {
    const wasHeld = this.claim.held;
    this.claim.held = false;
    if (this.#timer !== undefined) this.clock.clearTimeout(this.#timer);
    await this.#beat;
    if (wasHeld) await releaseIfOurs(this.file, this.nonce);
  }

  #schedule(): void {
    this.#timer = this.clock.setTimeout(() => {
      this.#beat = this.#refresh();
    }, this.options.staleMs / 4);
  }

  async #refresh(): Promise<void> {
    try {
      if ((await inspect(this.file))?.owner?.nonce !== this.nonce) {
        this.claim.held = false; // taken over after a stall: never touch the new holder's file
        return;
      }
      const seconds = this.clock.now() / 1000;
      await utimes(this.file, seconds, seconds);
    } catch {
      // A failed beat (a transient I/O error) is retried at the next one; only a run of them lets the lock go stale.
    }
    if (this.claim.held) this.#schedule();
  }
}

function newOwner(): Owner {
  return { pid: process.pid, host: os.hostname(), nonce: randomBytes(12).toString('hex') };
}

/**
 * Creates `file` holding `owner` and the time (for a person looking at it)
 * unless it exists; true when this call created it.
 */
async function tryCreate(file: string, owner: Owner, clock: Clock): Promise<boolean> {
  let handle;
  try {
    handle = await open(file, 'wx', 0o600);
  } catch (error) {
    if (hasCode(error, 'EEXIST')) return false;
    throw error;
  }
  try {
    await handle.writeFile(JSON.stringify({ ...owner, acquiredAt: new Date(clock.now()).toISOString() }), 'utf8');
  } catch (error) {
    // A lock file without its owner (a full disk) would hold every waiter until it went stale.
    await handle.close();
    await unlink(file).catch(() => undefined);
    throw error;
  }
  await handle.close();
  return true;
}

/** Reads a lock file's owner and identity through one handle, so the two agree; undefined if it is gone. */
async function inspect(file: string): Promise<Seen | undefined> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    if (hasCode(error, 'ENOENT')) return undefined;
    throw error;
  }
  try {
    const info = await handle.stat();
    const text = await handle.readFile('utf8');
    return { identity: `${info.dev}:${info.ino}:${info.mtimeMs}:${info.size}`, owner: parseOwner(text) };
  } finally {
    await handle.close();
  }
}

function parseOwner(text: string): Owner | undefined {
  try {
    const value = JSON.parse(text) as Partial<Record<keyof Owner, unknown>> | null;
    if (value === null || typeof value !== 'object') return undefined;
    const { pid, host, nonce } = value;
    if (typeof pid !== 'number' || typeof host !== 'string' || typeof nonce !== 'string') return undefined;
    return { pid, host, nonce };
  } catch {
    return undefined;
  }
}

async function releaseIfOurs(file: string, nonce: string): Promise<void> {
  if ((await inspect(file))?.owner?.nonce === nonce) await unlinkIfPresent(file);
}

async function unlinkIfPresent(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (error) {
    if (!hasCode(error, 'ENOENT')) throw error;
  }
}

/**
 * A wait for the lock is work in progress and must keep the process alive —
 * a CLI command would otherwise exit in the middle of it — but the system
 * clock unrefs its timers (right for the keeper's and the heartbeat's), so
 * the timer is re-ref'd when the clock hands out a Node timer.
 */
function sleep(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const onAbort = (): void => {
      clock.clearTimeout(handle);
      resolve();
    };
    const handle = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms) as Partial<Pick<NodeJS.Timeout, 'ref'>>;
    if (typeof handle.ref === 'function') handle.ref();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function lockTimeout(file: string, options: LockOptions, holder: Owner | undefined): TetherError {
  const by = holder === undefined ? '' : ` (held by pid ${holder.pid} on ${quoteUntrusted(holder.host, 100)})`;
  return new TetherError(
    'ERR_STORE_LOCK_TIMEOUT',
    `gave up after ${options.timeoutMs} ms waiting for the lock ${file}${by}; another tether process is using this credential — if none is running, delete the lock file`,
  );
}
