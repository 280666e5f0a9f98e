import { appendFile, mkdir, open, rename, stat, truncate } from 'node:fs/promises';
import path from 'node:path';
import type { Clock, TimerHandle } from '../clock/clock.js';
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
      /**
       * On a line that closes a {@link ProxyFailureLog} window: how many more
       * failures like the one written before it were folded into this line,
       * whose `time` is the last one's. `path` is `*` when they were on other
       * paths than those folded one by one.
       */
      readonly repeats?: number;
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
/** Default number of lines kept in memory while the log cannot be written; beyond it the oldest are dropped. */
export const EVENT_LOG_MAX_PENDING = 1000;
/** Default wait after a failed write before the kept lines are tried again (they also go with the next append). */
export const EVENT_LOG_RETRY_MS = 5_000;

/**
 * The writes of {@link EventLog} that a full disk can stop part-way; the
 * default is `node:fs/promises` (a file created `0600`). Supplied by tests.
 */
export interface EventLogIo {
  appendFile(file: string, text: string): Promise<void>;
  truncate(file: string, size: number): Promise<void>;
}

const FS_IO: EventLogIo = {
  appendFile: (file, text) => appendFile(file, text, { mode: 0o600 }),
  truncate: (file, size) => truncate(file, size),
};

/** Options of {@link EventLog}. */
export interface EventLogOptions {
  readonly maxBytes?: number;
  readonly maxPending?: number;
  readonly retryMs?: number;
  readonly io?: EventLogIo;
}

/**
 * The append side of a workload's event log: lines land in order; a full
 * part is rotated. A line that cannot be written (a full disk) is kept in
 * memory and written, still in order, with the next append or on a retry —
 * the log must never stop the workload, nor silently lose why its store went
 * stale. At most `maxPending` lines are kept: the oldest beyond it are
 * dropped, and a `log_lines_lost` line says how many.
 */
export class EventLog {
  readonly #file: string;
  readonly #clock: Clock;
  readonly #maxBytes: number;
  readonly #maxPending: number;
  readonly #retryMs: number;
  readonly #io: EventLogIo;
  /** Records not written yet, oldest first. */
  readonly #pending: LogRecord[] = [];
  /** Records dropped from {@link #pending}, and the time of the last one. */
  #lost: { count: number; time: string } | undefined;
  #retry: TimerHandle | undefined;
  #writing: Promise<void> = Promise.resolve();
  #size: number | undefined;
  /** Whether the file ends in part of a line (a crash, or a failed write that could not be cut off). */
  #torn = false;

  constructor(files: WorkloadFiles, clock: Clock, options: EventLogOptions = {}) {
    this.#file = files.events;
    this.#clock = clock;
    this.#maxBytes = options.maxBytes ?? EVENT_LOG_MAX_BYTES;
    this.#maxPending = options.maxPending ?? EVENT_LOG_MAX_PENDING;
    this.#retryMs = options.retryMs ?? EVENT_LOG_RETRY_MS;
    this.#io = options.io ?? FS_IO;
  }

  /** Appends one record, after any kept from a write that failed. Never rejects. */
  append(record: LogRecord): Promise<void> {
    this.#pending.push(record);
    this.#bound();
    return this.#flush();
  }

  /** Resolves once every line appended so far is written, or kept after a write that failed. */
  flushed(): Promise<void> {
    return this.#writing;
  }

  #flush(): Promise<void> {
    this.#writing = this.#writing.then(() => this.#writePending());
    return this.#writing;
  }

  /** Writes the kept records one line at a time (so parts rotate at their size), until done or a write fails. */
  async #writePending(): Promise<void> {
    for (;;) {
      const lost = this.#lost;
      this.#lost = undefined;
      const record = lost === undefined ? this.#pending.shift() : lostRecord(lost);
      if (record === undefined) break;
      try {
        await this.#write(`${JSON.stringify(record)}\n`);
      } catch {
        // Kept in front of what came meanwhile; tried again with the next append or on the retry.
        if (lost === undefined) this.#pending.unshift(record);
        else this.#countLost(lost.count, lost.time);
        this.#bound();
        this.#retry ??= this.#clock.setTimeout(() => {
          this.#retry = undefined;
          void this.#flush();
        }, this.#retryMs);
        return;
      }
    }
    if (this.#retry !== undefined) this.#clock.clearTimeout(this.#retry);
    this.#retry = undefined;
  }

  /** Drops the oldest kept records beyond the bound, counting them. */
  #bound(): void {
    while (this.#pending.length > this.#maxPending) {
      const dropped = this.#pending.shift();
      if (dropped !== undefined) this.#countLost(1, dropped.time);
    }
  }

  #countLost(count: number, time: string): void {
    const before = this.#lost;
    this.#lost = {
      count: (before?.count ?? 0) + count,
      time: before !== undefined && before.time > time ? before.time : time,
    };
  }

  async #write(text: string): Promise<void> {
    if (this.#size === undefined) {
      await mkdir(path.dirname(this.#file), { recursive: true, mode: 0o700 });
      const size = await stat(this.#file).then(
        (s) => s.size,
        () => 0,
      );
      this.#torn = size > 0 && !(await endsWithNewline(this.#file, size));
      this.#size = size;
    }
    if (this.#size > 0 && this.#size + Buffer.byteLength(text) > this.#maxBytes) {
      await rename(this.#file, `${this.#file}.1`);
      this.#size = 0;
      this.#torn = false;
    }
    // After part of a line, start a line of its own: readers skip the broken one, and this one survives.
    const line = this.#torn ? `\n${text}` : text;
    const size = this.#size;
    try {
      await this.#io.appendFile(this.#file, line);
    } catch (error) {
      // A full disk may have taken part of the text: cut it off, so the retry does not land after half a line.
      // If that fails too, the file is read again before the next write, and its end found torn.
      await this.#io.truncate(this.#file, size).catch(() => undefined);
      this.#size = undefined;
      throw error;
    }
    this.#torn = false;
    this.#size = size + Buffer.byteLength(line);
  }
}

/** Whether the file's last byte (at `size - 1`) is a newline; false when it cannot be read. */
async function endsWithNewline(file: string, size: number): Promise<boolean> {
  try {
    const handle = await open(file, 'r');
    try {
      const last = Buffer.alloc(1);
      const { bytesRead } = await handle.read(last, 0, 1, size - 1);
      return bytesRead === 1 && last[0] === 0x0a;
    } finally {
      await handle.close();
    }
  } catch {
    return false;
  }
}

/** The line that stands for records dropped while the log could not be written. */
function lostRecord(lost: { readonly count: number; readonly time: string }): LogRecord {
  return {
    time: lost.time,
    type: 'workload',
    event: 'log_lines_lost',
    message: `${String(lost.count)} lines lost: the event log could not be written for a while`,
  };
}

/** A failed request of the local endpoint, as the event log holds it. */
export type ProxyRecord = Extract<LogRecord, { type: 'proxy' }>;

/** Default window in which identical failed requests are folded into one line. */
export const PROXY_REPEAT_WINDOW_MS = 60_000;
/** Default number of paths whose failures are folded apart (see {@link ProxyFailureLog}). */
export const PROXY_MAX_WINDOWS = 100;

/** Options of {@link ProxyFailureLog}. */
export interface ProxyFailureLogOptions {
  readonly windowMs?: number;
  readonly maxWindows?: number;
}

/** Failures folded into one line: the first was written, `repeats` more came since. */
interface FoldWindow {
  repeats: number;
  last: ProxyRecord;
  timer: TimerHandle;
}

/**
 * Folds identical failed requests (method, path, status) so that a client
 * retrying against a `503` does not write a line per request: the first is
 * written at once, then one line per window with how many more there were,
 * stamped with the time of the last of them, for as long as they go on.
 * {@link ProxyFailureLog.flush} writes the counts still open — the workload calls it when its
 * status changes (a count never spans an outage's end) and when it stops.
 *
 * The path is the client's to choose: failures are folded apart for at most
 * `maxWindows` paths at a time; on further paths by method and status only
 * (the count line's path is `*`), in at most `maxWindows` more windows; beyond
 * those, written one by one. Memory and timers stay bounded either way.
 */
export class ProxyFailureLog {
  readonly #clock: Clock;
  readonly #write: (record: ProxyRecord) => void;
  readonly #windowMs: number;
  readonly #maxWindows: number;
  /** Open windows by method, status and path. */
  readonly #byPath = new Map<string, FoldWindow>();
  /** Open windows by method and status, for failures on paths beyond {@link #byPath}'s bound. */
  readonly #anyPath = new Map<string, FoldWindow>();

  constructor(clock: Clock, write: (record: ProxyRecord) => void, options: ProxyFailureLogOptions = {}) {
    this.#clock = clock;
    this.#write = write;
    this.#windowMs = options.windowMs ?? PROXY_REPEAT_WINDOW_MS;
    this.#maxWindows = options.maxWindows ?? PROXY_MAX_WINDOWS;
  }

  observe(record: ProxyRecord): void {
    const kind = `${record.method} ${String(record.status)}`;
    const exact = `${kind} ${record.path}`;
    const full = this.#byPath.size >= this.#maxWindows;
    const window = this.#byPath.get(exact) ?? (full ? this.#anyPath.get(kind) : undefined);
    if (window !== undefined) {
      window.repeats += 1;
      window.last = record;
      return;
    }
    this.#write(record);
    if (!full) this.#open(this.#byPath, exact, record);
    else if (this.#anyPath.size < this.#maxWindows) this.#open(this.#anyPath, kind, record);
  }

  /** Writes the counts still open and closes every window (the outage is over, or the workload stops). */
  flush(): void {
    for (const key of [...this.#byPath.keys()]) this.#close(this.#byPath, key, true);
    for (const key of [...this.#anyPath.keys()]) this.#close(this.#anyPath, key, true);
  }

  #open(windows: Map<string, FoldWindow>, key: string, record: ProxyRecord): void {
    windows.set(key, { repeats: 0, last: record, timer: this.#arm(windows, key) });
  }

  #arm(windows: Map<string, FoldWindow>, key: string): TimerHandle {
    return this.#clock.setTimeout(() => {
      this.#close(windows, key, false);
    }, this.#windowMs);
  }

  /** Ends a window: its count is written; a window that had repeats opens the next, one without ends. */
  #close(windows: Map<string, FoldWindow>, key: string, final: boolean): void {
    const window = windows.get(key);
    if (window === undefined) return;
    this.#clock.clearTimeout(window.timer);
    if (window.repeats > 0) {
      const anyPath = windows === this.#anyPath;
      this.#write({ ...window.last, ...(anyPath && { path: '*' }), repeats: window.repeats });
    }
    if (window.repeats > 0 && !final) {
      window.repeats = 0;
      window.timer = this.#arm(windows, key);
    } else windows.delete(key);
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
    case 'persist_recovered':
      return `saved the tokens in use again (${record.detail})`;
    case 'hint':
      return `hint: ${record.message}`;
    case 'workload':
      return `${record.event}: ${record.message}`;
    case 'proxy': {
      const more = record.repeats === undefined ? '' : `, and ${String(record.repeats)} more like it`;
      return `proxy ${record.method} ${record.path} → ${String(record.status)} (${String(Math.round(record.durationMs))} ms)${more}`;
    }
  }
}
