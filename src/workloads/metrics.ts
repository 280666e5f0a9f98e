import type { KeeperEvent } from '../keeper/types.js';
import { WORKLOAD_STATUSES, type WorkloadStatusKind } from './status.js';

/**
 * A workload's counters, rendered as Prometheus text (exposition format
 * 0.0.4) by the control channel's `/metrics`.
 */
export class WorkloadMetrics {
  readonly #attempts = new Map<string, number>();
  readonly #requests = new Map<number, number>();

  /** Counts a refresh attempt by trigger and outcome (`success`, `transient`, `permanent`). */
  observe(event: KeeperEvent): void {
    if (event.type !== 'attempt') return;
    const key = `trigger="${event.trigger}",outcome="${event.outcome}"`;
    this.#attempts.set(key, (this.#attempts.get(key) ?? 0) + 1);
  }

  /** Counts a request to the local endpoint by the status it was answered with. */
  request(status: number): void {
    this.#requests.set(status, (this.#requests.get(status) ?? 0) + 1);
  }

  /** The exposition text; `statusSince` and `now` are wall-clock ms. */
  render(name: string, status: WorkloadStatusKind, statusSince: number, now: number): string {
    const workload = `workload="${name}"`;
    const lines = [
      '# HELP tether_refresh_attempts_total Refresh attempts by what triggered them and how they ended.',
      '# TYPE tether_refresh_attempts_total counter',
      ...[...this.#attempts].map(([labels, n]) => `tether_refresh_attempts_total{${workload},${labels}} ${String(n)}`),
      '# HELP tether_workload_status 1 for the workload status in effect, 0 for the others.',
      '# TYPE tether_workload_status gauge',
      ...WORKLOAD_STATUSES.map((s) => `tether_workload_status{${workload},status="${s}"} ${s === status ? '1' : '0'}`),
      '# HELP tether_workload_status_seconds Time since the status last changed.',
      '# TYPE tether_workload_status_seconds gauge',
      `tether_workload_status_seconds{${workload}} ${String(Math.max(0, (now - statusSince) / 1000))}`,
      '# HELP tether_proxy_requests_total Requests to the local MCP endpoint by the status they were answered with.',
      '# TYPE tether_proxy_requests_total counter',
      ...[...this.#requests]
        .sort(([a], [b]) => a - b)
        .map(([code, n]) => `tether_proxy_requests_total{${workload},status="${String(code)}"} ${String(n)}`),
    ];
    return `${lines.join('\n')}\n`;
  }
}
