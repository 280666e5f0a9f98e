/**
 * Helpers of the chaos tests (test/chaos.test.ts): evidence from the remote's
 * own records (which refresh token the server spent and which it issued),
 * the workload's live status over its control channel, and a state directory
 * that can be made unwritable — a tiny tmpfs filled up (root), or a `chmod`
 * (not root: root ignores mode bits).
 */
import { spawnSync } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chmod, mkdir, mkdtemp, open, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { RecordedTokenRequest, TestAuthServer } from '../../src/demo/auth-server.js';
import { controlRequest } from '../../src/workloads/control.js';
import type { LogRecord } from '../../src/workloads/events.js';
import { WorkloadFiles } from '../../src/workloads/files.js';
import type { WorkloadStatus } from '../../src/workloads/status.js';
import { describeResult, type E2E, waitFor } from './e2e-harness.js';

/** A command's outcome; never throws. */
export interface CommandResult {
  readonly ok: boolean;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a command to its end (no shell). */
export function command(file: string, args: readonly string[]): CommandResult {
  const result = spawnSync(file, args, { encoding: 'utf8', timeout: 20_000 });
  const failure = result.error === undefined ? '' : String(result.error);
  return { ok: result.status === 0, stdout: result.stdout, stderr: `${result.stderr}${failure}` };
}

/** Runs a command and throws with its output when it fails. */
export function mustRun(file: string, args: readonly string[]): string {
  const result = command(file, args);
  if (!result.ok) throw new Error(`${file} ${args.join(' ')} failed: ${result.stderr.trim()}`);
  return result.stdout;
}

/** Whether an executable is on the PATH. */
export function onPath(name: string): boolean {
  return command('sh', ['-c', `command -v ${name}`]).ok;
}

export const IS_ROOT = process.getuid?.() === 0;

/** The token requests of a refresh-token grant the server answered with a new refresh token, from index `from` on. */
export function rotations(auth: TestAuthServer, from = 0): RecordedTokenRequest[] {
  return auth.tokenRequests
    .slice(from)
    .filter((r) => r.grantType === 'refresh_token' && r.status === 200 && r.issuedRefreshToken !== undefined);
}

/** Refresh-token grants from index `from` on, whatever their answer. */
export function refreshGrants(auth: TestAuthServer, from = 0): RecordedTokenRequest[] {
  return auth.tokenRequests.slice(from).filter((r) => r.grantType === 'refresh_token');
}

/** Waits until the server has rotated a refresh token (after index `from`); returns that request. */
export function waitForRotation(auth: TestAuthServer, from: number, timeoutMs = 15_000): Promise<RecordedTokenRequest> {
  return waitFor(
    'the authorization server to rotate the refresh token',
    () => Promise.resolve(rotations(auth, from)[0]),
    {
      timeoutMs,
      intervalMs: 5,
    },
  );
}

/** The live status of a running workload, with its recent events, from its control channel (what `tether status` shows). */
export async function liveStatus(
  home: string,
  name: string,
): Promise<(WorkloadStatus & { events: LogRecord[] }) | undefined> {
  const socket = new WorkloadFiles(home, name).controlSocket;
  const answer = await controlRequest(socket, 'GET', '/status', 5_000).catch(() => undefined);
  if (answer?.status !== 200) return undefined;
  return JSON.parse(answer.body) as WorkloadStatus & { events: LogRecord[] };
}

/** Files in a directory whose names say something went wrong: temp files left by a write, files set aside as corrupt. */
export async function debris(dir: string): Promise<string[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  return names.filter((name) => name.endsWith('.tmp') || name.includes('.corrupt-'));
}

/** How the state directory can be made unwritable on this machine, or why it cannot. */
export type UnwritableMethod =
  { readonly kind: 'tmpfs' } | { readonly kind: 'chmod' } | { readonly kind: 'none'; readonly reason: string };

/**
 * Probes once: as root (which ignores mode bits) a tmpfs mount, else
 * `chmod 0500` — kept only if it really stops a write (a root without
 * CAP_DAC_OVERRIDE would be stopped by it too).
 */
export async function unwritableMethod(): Promise<UnwritableMethod> {
  if (process.platform !== 'linux') return { kind: 'none', reason: 'tmpfs and mode-bit probes are Linux-only here' };
  const probe = await mkdtemp(path.join(os.tmpdir(), 'tether-chaos-probe-'));
  try {
    if (IS_ROOT) {
      const mounted = command('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe]);
      if (mounted.ok) {
        mustRun('umount', [probe]);
        return { kind: 'tmpfs' };
      }
    }
    const locked = path.join(probe, 'locked');
    await mkdir(locked);
    await chmod(locked, 0o500);
    const written = await open(path.join(locked, 'x'), 'wx').then(
      async (handle) => {
        await handle.close();
        return true;
      },
      () => false,
    );
    if (!written) return { kind: 'chmod' };
    return {
      kind: 'none',
      reason: 'running as root, which ignores mode bits, and a tmpfs cannot be mounted here (no CAP_SYS_ADMIN?)',
    };
  } finally {
    await chmod(path.join(probe, 'locked'), 0o700).catch(() => undefined);
    await rm(probe, { recursive: true, force: true });
  }
}

/**
 * A tmpfs of `sizeKb` mounted on `dir` (which it creates), that can be filled
 * to the last page and drained again: a full disk under a state directory.
 */
export class TinyTmpfs {
  readonly dir: string;
  readonly #filler: string;
  #mounted = true;

  private constructor(dir: string) {
    this.dir = dir;
    this.#filler = path.join(dir, 'filler.bin');
  }

  static async mount(dir: string, sizeKb: number): Promise<TinyTmpfs> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    mustRun('mount', ['-t', 'tmpfs', '-o', `size=${String(sizeKb)}k,mode=0700`, 'tmpfs', dir]);
    return new TinyTmpfs(dir);
  }

  /** Writes a filler file until the file system is full (ENOSPC); returns the bytes written. */
  async fill(): Promise<number> {
    const handle = await open(this.#filler, 'a');
    const chunk = Buffer.alloc(4096, 0x61);
    let written = 0;
    try {
      for (;;) {
        try {
          const { bytesWritten } = await handle.write(chunk);
          written += bytesWritten;
          if (bytesWritten < chunk.length) break;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw error;
        }
      }
    } finally {
      await handle.close();
    }
    return written;
  }

  /** Frees the space {@link fill} took. */
  async drain(): Promise<void> {
    await rm(this.#filler, { force: true });
  }

  async unmount(): Promise<void> {
    if (!this.#mounted) return;
    await this.drain();
    const result = command('umount', [this.dir]);
    // A process that still holds a file there keeps it busy: detach it now, it goes when that process does.
    if (!result.ok) mustRun('umount', ['-l', this.dir]);
    this.#mounted = false;
  }
}

/**
 * Appends newlines to `file` up to the end of a memory page, so that on a
 * full tmpfs the next append needs a new page and fails whole, instead of
 * landing in the slack of the last one (blank lines are skipped by readers
 * of JSON-lines logs).
 */
export async function padToPage(file: string): Promise<void> {
  const page = Number(command('getconf', ['PAGESIZE']).stdout.trim()) || 4096;
  const handle = await open(file, 'a');
  try {
    const { size } = await handle.stat();
    const pad = (page - (size % page)) % page;
    if (pad > 0) await handle.write('\n'.repeat(pad));
  } finally {
    await handle.close();
  }
}

/** `chmod 0500` on `dir` (not root): new files cannot be created in it, existing ones can still be written. */
export class ReadOnlyDir {
  constructor(readonly dir: string) {}

  async lock(): Promise<void> {
    await chmod(this.dir, 0o500);
    // Make sure it bites (it would not for a root with CAP_DAC_OVERRIDE).
    const bites = await access(this.dir, constants.W_OK).then(
      () => false,
      () => true,
    );
    if (!bites) throw new Error(`chmod 0500 ${this.dir} does not stop this user from writing there`);
  }

  async unlock(): Promise<void> {
    await chmod(this.dir, 0o700);
  }
}

/** A workload's state directory made unwritable and writable again, as this machine allows. */
export interface Unwritable {
  readonly how: 'a full tmpfs' | 'chmod 0500';
  /** Makes the workload's directory unwritable (a full file system, or no permission to create files). */
  block(): Promise<void>;
  /** Writable again. */
  restore(): Promise<void>;
}

/**
 * Prepares `e2e`'s state directory — before its first command: with `tmpfs`
 * the whole state directory becomes a 1 MB tmpfs (removed after the test, the
 * workload first). `block` fills it (the event log padded first, so that its
 * next line cannot hide in a page's slack), or `chmod 0500`s the workload's
 * directory.
 */
export async function prepareUnwritable(e2e: E2E, kind: 'tmpfs' | 'chmod', name: string): Promise<Unwritable> {
  const workloadDir = path.join(e2e.home, 'workloads', name);
  if (kind === 'chmod') {
    const dir = new ReadOnlyDir(workloadDir);
    e2e.onCleanup(() => dir.unlock().catch(() => undefined));
    return { how: 'chmod 0500', block: () => dir.lock(), restore: () => dir.unlock() };
  }
  const tmpfs = await TinyTmpfs.mount(e2e.home, 1024);
  // Runs before the harness's own `tether rm`, which would find nothing once this is unmounted.
  e2e.onCleanup(async () => {
    await tmpfs.drain();
    await removeOwnerlessLocks(path.join(e2e.home, 'locks'));
    const removed = await e2e.tether(['rm', name]);
    await tmpfs.unmount();
    if (removed.code !== 0) throw new Error(`tether rm ${name}: ${describeResult(removed)}`);
  });
  return {
    how: 'a full tmpfs',
    block: async () => {
      await padToPage(path.join(workloadDir, 'events.jsonl'));
      await tmpfs.fill();
    },
    restore: () => tmpfs.drain(),
  };
}

/** The lock files in `dir` that name no owner (left empty by a write that failed). */
export async function ownerlessLocks(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const text = await readFile(path.join(dir, name), 'utf8').catch(() => undefined);
    if (text === '') found.push(name);
  }
  return found;
}

/**
 * Cleanup only: deletes lock files that name no owner, which would otherwise
 * hold `tether rm` until they go stale (30 s).
 */
async function removeOwnerlessLocks(dir: string): Promise<void> {
  for (const name of await ownerlessLocks(dir)) await rm(path.join(dir, name), { force: true });
}
