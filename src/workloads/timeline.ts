import type { Trigger } from '../keeper/types.js';
import type { LogRecord } from './events.js';
import type { WorkloadStatusKind } from './status.js';

/** How each status is drawn in the status band. */
const BAND: Readonly<Record<WorkloadStatusKind, string>> = {
  starting: '┄',
  running: '█',
  auth_retrying: '▒',
  unauthenticated: '░',
  stopping: '┄',
  stopped: ' ',
  error: '×',
};

/** The letter of each trigger in the triggers row. */
const TRIGGER_LETTER: Readonly<Record<Trigger, string>> = {
  startup: 'u',
  schedule: 's',
  demand: 'd',
  network: 'n',
  wake: 'w',
  manual: 'm',
  rejected: 'r',
};

/** The status a workload event starts. */
const WORKLOAD_EVENT_STATUS: Readonly<Record<string, WorkloadStatusKind>> = {
  starting: 'starting',
  serving: 'running',
  stopping: 'stopping',
  stopped: 'stopped',
  error: 'error',
};

/** A stretch of time in one status. */
interface Band {
  readonly status: WorkloadStatusKind;
  readonly from: number;
  to: number;
  readonly attempts: { ok: number; failed: number; triggers: Map<Trigger, number>; lastError?: string };
}

function bandsOf(records: readonly LogRecord[], now: number): Band[] {
  const bands: Band[] = [];
  const enter = (status: WorkloadStatusKind, at: number): void => {
    const last = bands.at(-1);
    if (last?.status === status) return;
    if (last !== undefined) last.to = at;
    bands.push({ status, from: at, to: now, attempts: { ok: 0, failed: 0, triggers: new Map() } });
  };
  for (const record of records) {
    const at = Date.parse(record.time);
    if (record.type === 'status') enter(record.status, at);
    else if (record.type === 'workload') {
      const status = WORKLOAD_EVENT_STATUS[record.event];
      if (status !== undefined) enter(status, at);
    } else if (record.type === 'attempt') {
      const band = bands.at(-1);
      if (band === undefined) continue;
      if (record.outcome === 'success') band.attempts.ok++;
      else {
        band.attempts.failed++;
        band.attempts.lastError = `${record.reason ?? ''} ${record.detail ?? ''}`.trim();
      }
      band.attempts.triggers.set(record.trigger, (band.attempts.triggers.get(record.trigger) ?? 0) + 1);
    }
  }
  return bands;
}

function clockTime(ms: number): string {
  return new Date(ms).toISOString().slice(11, 19);
}

function span(ms: number): string {
  if (ms < 10_000) return `${(ms / 1000).toFixed(1)}s`;
  const s = Math.round(ms / 1000);
  if (s < 120) return `${String(s)}s`;
  const m = Math.round(s / 60);
  return m < 120 ? `${String(m)}m` : `${String(Math.floor(m / 60))}h${String(m % 60).padStart(2, '0')}m`;
}

/**
 * The event log as a text timeline (`tether status NAME --timeline`): a
 * status band and the refresh attempts (✓ succeeded, ✗ failed, with the
 * trigger's letter below) on one time axis of `width` columns, then one line
 * per stretch of status with its attempts and last error.
 */
export function renderTimeline(records: readonly LogRecord[], now: number, width = 72): string {
  const bands = bandsOf(records, now);
  const first = bands[0];
  if (first === undefined) return 'No events yet.\n';
  const start = first.from;
  const total = Math.max(1, now - start);
  const column = (at: number): number => Math.min(width - 1, Math.floor(((at - start) / total) * width));
  const statusRow = Array.from({ length: width }, () => ' ');
  for (const band of bands) {
    for (let c = column(band.from); c <= column(Math.max(band.from, band.to - 1)); c++)
      statusRow[c] = BAND[band.status];
  }
  const attemptRow = Array.from({ length: width }, () => ' ');
  const triggerRow = Array.from({ length: width }, () => ' ');
  for (const record of records) {
    if (record.type !== 'attempt') continue;
    const c = column(Date.parse(record.time));
    // A failure is not hidden by a success in the same column.
    if (attemptRow[c] !== '✗') attemptRow[c] = record.outcome === 'success' ? '✓' : '✗';
    triggerRow[c] = TRIGGER_LETTER[record.trigger];
  }
  const lines = [
    `${clockTime(start)} UTC → ${clockTime(now)} UTC (${span(now - start)}; one column ≈ ${span(total / width)})`,
    `  status   │${statusRow.join('')}│`,
    `  refresh  │${attemptRow.join('')}│`,
    `  trigger  │${triggerRow.join('')}│`,
    '  █ running  ▒ auth_retrying  ░ unauthenticated  × error  ┄ starting/stopping  ✓/✗ refresh ok/failed',
    '  triggers: s schedule, d demand (a request with no token), n network change, w wake, m manual, r rejected token, u startup',
    '',
  ];
  for (const band of bands) {
    const { ok, failed, triggers, lastError } = band.attempts;
    const by = [...triggers].map(([trigger, n]) => `${String(n)} ${trigger}`).join(', ');
    const attempts = ok + failed === 0 ? '' : `  refresh: ${String(ok)} ok, ${String(failed)} failed (${by})`;
    const error = failed > 0 && lastError !== undefined ? `; last error: ${lastError}` : '';
    lines.push(
      `  ${clockTime(band.from)}–${band === bands.at(-1) ? 'now     ' : clockTime(band.to)}  ${band.status.padEnd(15)} ${span(band.to - band.from).padStart(6)}${attempts}${error}`,
    );
  }
  return `${lines.join('\n')}\n`;
}
