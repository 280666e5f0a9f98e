import { describe, expect, it } from 'vitest';
import type { LogRecord } from '../src/workloads/events.js';
import { renderTimeline } from '../src/workloads/timeline.js';

const T0 = Date.parse('2026-11-28T10:00:00.000Z');
const at = (seconds: number): string => new Date(T0 + seconds * 1000).toISOString();

/** A workload that serves, loses its token endpoint, goes auth_retrying, and recovers on demand. */
const OUTAGE: LogRecord[] = [
  { time: at(0), type: 'workload', event: 'starting', message: 'pid 1' },
  { time: at(1), type: 'workload', event: 'serving', message: 'url' },
  {
    time: at(30),
    type: 'attempt',
    trigger: 'schedule',
    outcome: 'transient',
    durationMs: 5,
    reason: 'no_oauth_error',
    detail: 'HTTP 403 text/html',
  },
  { time: at(40), type: 'status', status: 'auth_retrying', reason: 'no valid token' },
  {
    time: at(45),
    type: 'attempt',
    trigger: 'demand',
    outcome: 'transient',
    durationMs: 5,
    reason: 'no_oauth_error',
    detail: 'HTTP 403 text/html',
  },
  { time: at(60), type: 'attempt', trigger: 'demand', outcome: 'success', durationMs: 5 },
  { time: at(60), type: 'status', status: 'running', reason: 'token refreshed' },
];

describe('tether status --timeline', () => {
  it('draws the status band over time, with the attempts and their triggers in their columns', () => {
    const text = renderTimeline(OUTAGE, T0 + 80_000, 80); // one column per second
    const row = (label: string): string =>
      text
        .split('\n')
        .find((line) => line.startsWith(`  ${label}`))
        ?.split('│')[1] ?? '';
    const status = row('status');
    expect(status).toHaveLength(80);
    expect(status.slice(1, 40)).toBe('█'.repeat(39));
    expect(status.slice(40, 60)).toBe('▒'.repeat(20));
    expect(status.slice(60)).toBe('█'.repeat(20));
    expect(status[0]).toBe('┄');
    const refresh = row('refresh');
    expect([refresh[30], refresh[45], refresh[60]]).toEqual(['✗', '✗', '✓']);
    expect(refresh.replace(/[✗✓]/g, '').trim()).toBe('');
    expect([row('trigger')[30], row('trigger')[45], row('trigger')[60]]).toEqual(['s', 'd', 'd']);
  });

  it('lists each stretch of status with its attempts and last error', () => {
    const text = renderTimeline(OUTAGE, T0 + 80_000, 80);
    expect(text).toContain('10:00:00 UTC → 10:01:20 UTC (80s; one column ≈ 1.0s');
    expect(text).toMatch(
      /10:00:01–10:00:40 {2}running +39s {2}refresh: 0 ok, 1 failed \(1 schedule\); last error: no_oauth_error HTTP 403 text\/html/,
    );
    expect(text).toMatch(/10:00:40–10:01:00 {2}auth_retrying +20s {2}refresh: 1 ok, 1 failed \(2 demand\)/);
    expect(text).toMatch(/10:01:00–now +running +20s\n/);
  });

  it('says so when there is nothing to draw', () => {
    expect(renderTimeline([], T0)).toBe('No events yet.\n');
  });
});
