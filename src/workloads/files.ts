import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { assertWorkloadName } from '../store/paths.js';

/** Longest Unix socket path most platforms accept (macOS: 104 bytes including the NUL). */
const SOCKET_PATH_MAX = 100;

/**
 * Where a workload's own files live, next to its credentials in the state
 * directory (`workloads/<name>/`): the status file, the event log, the
 * process's stderr (crash reports), and the control channel's socket.
 */
export class WorkloadFiles {
  readonly name: string;
  readonly dir: string;

  constructor(stateDir: string, name: string) {
    assertWorkloadName(name);
    this.name = name;
    this.dir = path.join(stateDir, 'workloads', name);
  }

  /** The status file (DESIGN §7), plain JSON, `0600`. */
  get status(): string {
    return path.join(this.dir, 'status.json');
  }

  /** The event log: JSON lines, size-capped (the previous part is `events.jsonl.1`). */
  get events(): string {
    return path.join(this.dir, 'events.jsonl');
  }

  /** Held by the workload's process while it lives: one process per workload. */
  get instanceLock(): string {
    return path.join(this.dir, 'instance.lock');
  }

  /** The workload process's stderr: where a crash leaves its report. */
  get stderr(): string {
    return path.join(this.dir, 'stderr.log');
  }

  /**
   * The control channel: a named pipe on Windows, else a Unix socket in the
   * workload's directory (`0700`), or — when that path is too long for a
   * socket — one named by a hash of it in a directory of the user's own in
   * the temp directory (`tether-<uid>`, `0700`, checked before use).
   */
  get controlSocket(): string {
    const inDir = path.join(this.dir, 'control.sock');
    const hash = createHash('sha256').update(inDir).digest('hex').slice(0, 24);
    if (process.platform === 'win32') return `\\\\.\\pipe\\tether-${hash}`;
    if (Buffer.byteLength(inDir) <= SOCKET_PATH_MAX) return inDir;
    return path.join(os.tmpdir(), `tether-${String(process.getuid?.() ?? 'user')}`, `${hash.slice(0, 16)}.sock`);
  }
}
