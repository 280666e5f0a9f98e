import { spawn } from 'node:child_process';
import { open } from 'node:fs/promises';
import type { Clock } from '../clock/clock.js';
import { TetherError } from '../errors.js';
import { hasCode, readIfExists } from '../store/files.js';
import type { WorkloadFiles } from './files.js';
import { isProcessAlive } from '../store/lock.js';
import { effectiveStatus, readStatus, type WorkloadStatus, type WorkloadStatusKind } from './status.js';

/** The hidden CLI command that runs a workload's process. */
export const SERVE_COMMAND = '__serve';

/** How long `run`/`start` wait for a new workload process to serve. */
export const START_TIMEOUT_MS = 30_000;

/** How long `stop` waits for a graceful exit before it kills the process. */
export const STOP_TIMEOUT_MS = 10_000;

/**
 * Node flags of a workload's process, before this CLI's own (which win):
 * one V8 background thread instead of four. A long-lived proxy compiles
 * little after its warm-up, and every thread keeps memory of its own after a
 * burst of requests: 10–20 MiB less resident memory after bench/proxy's load.
 */
const WORKLOAD_NODE_FLAGS: readonly string[] = ['--v8-pool-size=1'];

/** Statuses in which a workload serves its endpoint. */
const SERVING: ReadonlySet<WorkloadStatusKind> = new Set(['running', 'auth_retrying', 'unauthenticated']);

function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms, { keepAlive: true }));
}

/** A workload process just started, and where its own lines of `stderr.log` begin. */
export interface SpawnedWorkload {
  readonly pid: number;
  readonly stderrFrom: number;
}

/**
 * Starts the workload's process, detached from the terminal (it outlives the
 * command that started it), with this CLI's own entry point and the caller's
 * environment; its stderr is appended to the workload's `stderr.log`.
 */
export async function spawnWorkload(files: WorkloadFiles, env: NodeJS.ProcessEnv): Promise<SpawnedWorkload> {
  const entry = process.argv[1];
  if (entry === undefined) throw new TetherError('ERR_SPAWN', 'cannot tell which script this CLI runs from');
  const stderr = await open(files.stderr, 'a', 0o600); // appended: a restart keeps the last crash's report
  try {
    const stderrFrom = (await stderr.stat()).size;
    const args = [...WORKLOAD_NODE_FLAGS, ...process.execArgv, entry, SERVE_COMMAND, files.name];
    const child = spawn(process.execPath, args, {
      detached: true,
      stdio: ['ignore', 'ignore', stderr.fd],
      env,
      windowsHide: true,
    });
    if (child.pid === undefined) throw new TetherError('ERR_SPAWN', 'the workload process could not be started');
    child.unref();
    return { pid: child.pid, stderrFrom };
  } finally {
    await stderr.close();
  }
}

/**
 * Waits until the workload process `pid` serves (its status file says so),
 * or fails, or exits. Rejects with `ERR_WORKLOAD_START` carrying the
 * process's own reason, or the end of its stderr.
 */
export async function waitUntilServing(
  files: WorkloadFiles,
  { pid, stderrFrom }: SpawnedWorkload,
  clock: Clock,
  timeoutMs = START_TIMEOUT_MS,
): Promise<WorkloadStatus> {
  const deadline = clock.monotonic() + timeoutMs;
  const since = new Date(clock.now()).toISOString();
  for (;;) {
    const status = await readStatus(files);
    if (status?.pid === pid && SERVING.has(status.status) && status.proxyUrl !== undefined) return status;
    if (status?.status === 'error' && status.updatedAt >= since) {
      throw new TetherError('ERR_WORKLOAD_START', `the workload could not start: ${status.statusReason}`);
    }
    if (!isProcessAlive(pid)) {
      // Lost a race with another start of the same workload: that one serves, or soon will.
      const other = status === undefined ? undefined : effectiveStatus(status);
      if (other?.pid !== undefined && SERVING.has(other.status) && other.proxyUrl !== undefined) return other;
      if (other?.pid !== undefined && other.status === 'starting' && clock.monotonic() <= deadline) {
        await sleep(clock, 100);
        continue;
      }
      const ours = Buffer.from((await readIfExists(files.stderr)) ?? '')
        .subarray(stderrFrom)
        .toString('utf8');
      const stderr = ours.trim().split('\n').slice(-8).join('\n');
      throw new TetherError(
        'ERR_WORKLOAD_START',
        `the workload process exited before serving${stderr === '' ? '' : `:\n${stderr}`}\n(see ${files.stderr})`,
      );
    }
    if (clock.monotonic() > deadline) {
      process.kill(pid, 'SIGTERM'); // not left half-started behind the user's back
      throw new TetherError(
        'ERR_WORKLOAD_START',
        `the workload process (pid ${String(pid)}) did not serve within ${String(timeoutMs / 1000)}s; see \`tether logs ${files.name}\``,
      );
    }
    await sleep(clock, 100);
  }
}

/**
 * Stops the workload's process: `SIGTERM` (a graceful stop: the keeper's
 * saves land, the status says `stopped`), then `SIGKILL` after
 * {@link STOP_TIMEOUT_MS}. Returns whether a process was running.
 */
export async function stopWorkloadProcess(files: WorkloadFiles, clock: Clock): Promise<boolean> {
  const status = await readStatus(files);
  const pid = status === undefined ? undefined : effectiveStatus(status).pid;
  if (pid === undefined) return false;
  try {
    process.kill(pid, 'SIGTERM');
  } catch (error) {
    if (hasCode(error, 'ESRCH')) return true; // it ended on its own just now
    throw error;
  }
  const deadline = clock.monotonic() + STOP_TIMEOUT_MS;
  while (isProcessAlive(pid)) {
    if (clock.monotonic() > deadline) {
      process.kill(pid, 'SIGKILL');
      break;
    }
    await sleep(clock, 50);
  }
  return true;
}
