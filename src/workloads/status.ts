import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import type { KeeperSnapshot } from '../keeper/types.js';
import { hasCode, readIfExists, writeFileAtomic } from '../store/files.js';
import { isProcessAlive } from '../store/lock.js';
import { WORKLOAD_NAME_PATTERN } from '../store/paths.js';
import type { WorkloadFiles } from './files.js';

/** A workload's statuses (DESIGN §7). */
export const WORKLOAD_STATUSES = [
  'starting',
  'running',
  'auth_retrying',
  'unauthenticated',
  'stopping',
  'stopped',
  'error',
] as const;

/** A workload's status (DESIGN §7). */
export type WorkloadStatusKind = (typeof WORKLOAD_STATUSES)[number];

/**
 * The status file (DESIGN §7), and the fields of `tether list --json` and
 * `tether status --json`. Times are ISO 8601 strings. Stable: fields may be
 * added, never renamed or removed.
 */
export interface WorkloadStatus {
  readonly name: string;
  readonly remoteUrl: string;
  /** The local endpoint to give MCP clients; absent until the process serves. */
  readonly proxyUrl?: string;
  readonly port?: number;
  /** The workload process; absent once stopped. */
  readonly pid?: number;
  readonly status: WorkloadStatusKind;
  readonly statusReason: string;
  readonly statusSince: string;
  readonly refresh: {
    /** `ok`, `degraded` (failing, a valid token still served), `failing` (none left), `given_up`. */
    readonly state: KeeperSnapshot['refresh']['state'];
    readonly failingSince?: string;
    readonly lastError?: string;
    readonly lastErrorClass?: 'transient' | 'permanent';
    readonly nextAttemptAt?: string;
  };
  readonly token: { readonly expiresAt?: string };
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** ISO 8601 of a wall-clock time in ms. */
export function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * A URL as workloads write and show it (status file, event log, `tether
 * list`): the user name, the password, every value of the query and the
 * fragment replaced by `redacted`, since a remote may carry a secret there
 * (`https://KEY@host/mcp`, `?api_key=…`, `#token=…`). The path is kept: it
 * names the endpoint, and a secret in the path (`/mcp/KEY`) cannot be told
 * from a name — it is written as is. Requests use the real URL.
 */
export function redactUrl(href: string): string {
  if (!URL.canParse(href)) return href.replace(/[?#].*$/s, '').replace(/\/\/[^/]*@/, '//redacted@');
  const url = new URL(href);
  if (url.username !== '') url.username = 'redacted';
  if (url.password !== '') url.password = 'redacted';
  for (const key of new Set(url.searchParams.keys())) url.searchParams.set(key, 'redacted');
  if (url.hash !== '') url.hash = 'redacted';
  return url.href;
}

/** The status fields the keeper decides, from its snapshot. */
export function keeperFields(snapshot: KeeperSnapshot): Pick<WorkloadStatus, 'refresh' | 'token'> {
  const { refresh, token } = snapshot;
  return {
    refresh: {
      state: refresh.state,
      ...(refresh.failingSince !== undefined && { failingSince: iso(refresh.failingSince) }),
      ...(refresh.lastError !== undefined && { lastError: refresh.lastError }),
      ...(refresh.lastErrorClass !== undefined && { lastErrorClass: refresh.lastErrorClass }),
      ...(refresh.nextAttemptAt !== undefined && { nextAttemptAt: iso(refresh.nextAttemptAt) }),
    },
    token: token.expiresAt !== undefined ? { expiresAt: iso(token.expiresAt) } : {},
  };
}

/** Writes the status file atomically (`0600`). */
export function writeStatus(files: WorkloadFiles, status: WorkloadStatus): Promise<void> {
  return writeFileAtomic(files.status, `${JSON.stringify(status, null, 2)}\n`);
}

/** The status file as written, or `undefined` when there is none or it cannot be parsed. */
export async function readStatus(files: WorkloadFiles): Promise<WorkloadStatus | undefined> {
  const text = await readIfExists(files.status);
  if (text === undefined) return undefined;
  try {
    const value = JSON.parse(text) as unknown;
    return typeof value === 'object' && value !== null && (value as { name?: unknown }).name === files.name
      ? (value as WorkloadStatus)
      : undefined;
  } catch {
    return undefined;
  }
}

/** The title a workload process gives itself, so that a pid reused by another program is not taken for it. */
export function workloadProcessTitle(name: string): string {
  return `tether-workload ${name}`;
}

/**
 * True while `pid` is the workload `name`'s process: alive, and — where the
 * command line can be read cheaply (Linux) — titled as that workload, so that
 * after a crash and a reboot a reused pid is neither shown as the workload
 * nor signalled by \`tether stop\`.
 */
export function isWorkloadProcess(pid: number, name: string): boolean {
  if (!isProcessAlive(pid)) return false;
  if (process.platform !== 'linux') return true;
  try {
    return readFileSync(`/proc/${String(pid)}/cmdline`, 'utf8').startsWith(workloadProcessTitle(name));
  } catch {
    return false;
  }
}

/** Statuses in which the workload's process should be alive. */
const LIVE: ReadonlySet<WorkloadStatusKind> = new Set([
  'starting',
  'running',
  'auth_retrying',
  'unauthenticated',
  'stopping',
]);

/**
 * The status to show: the file's, except that a workload whose process is
 * gone while the file says it lives is `error` (DESIGN §7: a dead process is
 * never shown as `running`).
 */
export function effectiveStatus(
  status: WorkloadStatus,
  alive: (pid: number) => boolean = (pid) => isWorkloadProcess(pid, status.name),
): WorkloadStatus {
  if (!LIVE.has(status.status)) return status;
  if (status.pid !== undefined && alive(status.pid)) return status;
  const { pid, ...rest } = status;
  return {
    ...rest,
    status: 'error',
    statusReason: `the workload process${status.pid === undefined ? '' : ` (pid ${String(status.pid)})`} is not running: it exited or was killed while ${status.status}; run \`tether restart ${status.name}\``,
  };
}

/** The names of the workloads in the state directory, sorted. */
export async function workloadNames(stateDir: string): Promise<string[]> {
  try {
    const entries = await readdir(path.join(stateDir, 'workloads'), { withFileTypes: true });
    return entries
      .filter((entry) => entry.isDirectory() && WORKLOAD_NAME_PATTERN.test(entry.name))
      .map((entry) => entry.name)
      .sort();
  } catch (error) {
    if (hasCode(error, 'ENOENT')) return [];
    throw error;
  }
}
