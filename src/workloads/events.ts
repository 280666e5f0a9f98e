import { appendFile, mkdir, open, rename, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Clock } from '../clock/clock.js';
import type { KeeperEvent } from '../keeper/types.js';
import { hasCode, readIfExists } from '../store/files.js';
import type { WorkloadFiles } from './files.js';
import { iso } from './status.js';

/**
 * One line of a workload's event log: the keeper's events (DESIGN §3.5), the
 * workload's own (`workload`: started, serving, reloaded, stopping, …) and
 * requests the proxy could not serve (`proxy`). `time` is ISO 8601. Never
 * holds a token or a secret: the keeper's details and the proxy's records
 * carry none.
 */
export type LogRecord =
  | TimedKeeperEvent
  | { readonly time: string; readonly type: 'workload'; readonly event: string; readonly message: string }
  | {
      readonly time: string;
      readonly type: 'proxy';
      readonly method: string;
      readonly path: string;
      readonly status: number;
      readonly durationMs: number;
    };

/** A keeper event with its times as ISO 8601 (distributes over the union). */
type TimedKeeperEvent = KeeperEvent extends infer E
  ? E extends { readonly at: number }
    ? Omit<E, 'at' | 'nextAttemptAt'> & { readonly time: string; readonly nextAttemptAt?: string }
    : never
  : never;

/** The log line of a keeper event. */
export function keeperRecord(event: KeeperEvent): LogRecord {
  const { at, ...rest } = event;
  if (rest.type === 'attempt' && rest.nextAttemptAt !== undefined) {
    return { ...rest, time: iso(at), nextAttemptAt: iso(rest.nextAttemptAt) };
  }
  return { ...rest, time: iso(at) } as LogRecord;
}

/** Default size at which the log starts a new part (the previous part is kept as `.1`). */
export const EVENT_LOG_MAX_BYTES = 1024 * 1024;

/** The append side of a workload's event log: lines land in order; a full part is rotated. */
export class EventLog {
  readonly #file: string;
  readonly #maxBytes: number;
  #writing: Promise<void> = Promise.resolve();
  #size: number | undefined;

  constructor(files: WorkloadFiles, maxBytes = EVENT_LOG_MAX_BYTES) {
    this.#file = files.events;
    this.#maxBytes = maxBytes;
  }

  /** Appends one record; a write that fails is dropped (the log must never stop the workload). */
  append(record: LogRecord): Promise<void> {
    const line = `${JSON.stringify(record)}\n`;
    this.#writing = this.#writing.then(() => this.#write(line)).catch(() => undefined);
    return this.#writing;
  }

  /** Resolves once every line appended so far is written. */
  flushed(): Promise<void> {
    return this.#writing;
  }

  async #write(line: string): Promise<void> {
    if (this.#size === undefined) {
      await mkdir(path.dirname(this.#file), { recursive: true, mode: 0o700 });
      this.#size = await stat(this.#file).then(
        (s) => s.size,
        () => 0,
      );
    }
    if (this.#size > 0 && this.#size + Buffer.byteLength(line) > this.#maxBytes) {
      await rename(this.#file, `${this.#file}.1`);
      this.#size = 0;
    }
    await appendFile(this.#file, line, { mode: 0o600 });
    this.#size += Buffer.byteLength(line);
  }
}

function parseLines(text: string): LogRecord[] {
  const records: LogRecord[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const value = JSON.parse(line) as unknown;
      if (typeof value === 'object' && value !== null && 'time' in value && 'type' in value)
        records.push(value as LogRecord);
    } catch {
      // A line cut short by a crash: skipped.
    }
  }
  return records;
}

/** The records of the log, oldest first (the previous part, then the current); the last `limit` when given. */
export async function readEvents(files: WorkloadFiles, limit?: number): Promise<LogRecord[]> {
  const previous = (await readIfExists(`${files.events}.1`)) ?? '';
  const current = (await readIfExists(files.events)) ?? '';
  const records = [...parseLines(previous), ...parseLines(current)];
  return limit === undefined ? records : records.slice(-limit);
}

/**
 * Calls `onRecord` for each record appended to the log from now on, polling
 * every `pollMs`, across rotations, until `signal` aborts.
 */
export async function followEvents(
  files: WorkloadFiles,
  clock: Clock,
  onRecord: (record: LogRecord) => void,
  signal: AbortSignal,
  pollMs = 250,
): Promise<void> {
  let offset = await stat(files.events).then(
    (s) => s.size,
    () => 0,
  );
  while (!signal.aborted) {
    await new Promise<void>((resolve) => {
      const onAbort = (): void => {
        clock.clearTimeout(timer);
        resolve();
      };
      const timer = clock.setTimeout(
        () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        pollMs,
        { keepAlive: true },
      );
      signal.addEventListener('abort', onAbort, { once: true });
    });
    let size: number;
    try {
      size = (await stat(files.events)).size;
    } catch (error) {
      if (hasCode(error, 'ENOENT')) continue;
      throw error;
    }
    if (size < offset) offset = 0; // rotated
    if (size === offset) continue;
    const handle = await open(files.events, 'r');
    try {
      const buffer = Buffer.alloc(size - offset);
      await handle.read(buffer, 0, buffer.length, offset);
      const text = buffer.toString('utf8');
      const complete = text.lastIndexOf('\n') + 1; // a line still being written waits for the next poll
      offset += Buffer.byteLength(text.slice(0, complete));
      for (const record of parseLines(text.slice(0, complete))) onRecord(record);
    } finally {
      await handle.close();
    }
  }
}

/** A record for people: `2026-11-28 21:04:05  what happened`. */
export function formatRecord(record: LogRecord): string {
  const time = record.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  return `${time}  ${describeRecord(record)}`;
}

function describeRecord(record: LogRecord): string {
  switch (record.type) {
    case 'attempt': {
      const took = `${String(Math.round(record.durationMs))} ms`;
      if (record.outcome === 'success') return `refresh (${record.trigger}) succeeded in ${took}`;
      const next = record.nextAttemptAt === undefined ? '' : `; next attempt ${record.nextAttemptAt}`;
      return `refresh (${record.trigger}) failed, ${record.outcome}: ${record.reason ?? ''} ${record.detail ?? ''}${next}`;
    }
    case 'state':
      return `keeper ${record.from} → ${record.to}`;
    case 'status':
      return `status ${record.status}: ${record.reason}`;
    case 'adopted':
      return `adopted tokens: ${record.detail}`;
    case 'persist_failed':
      return `could not save the refreshed tokens (${record.detail}); serving them from memory`;
    case 'hint':
      return `hint: ${record.message}`;
    case 'workload':
      return `${record.event}: ${record.message}`;
    case 'proxy':
      return `proxy ${record.method} ${record.path} → ${String(record.status)} (${String(Math.round(record.durationMs))} ms)`;
  }
}
