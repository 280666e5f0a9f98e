import { unlink } from 'node:fs/promises';
import { systemClock } from '../clock/system.js';
import { TetherError } from '../errors.js';
import { HttpClient } from '../oauth/http.js';
import { CredentialStore } from '../store/store.js';
import { controlRequest } from '../workloads/control.js';
import { followEvents, formatRecord, readEvents } from '../workloads/events.js';
import { WorkloadFiles } from '../workloads/files.js';
import { noSuchWorkload } from '../workloads/lookup.js';
import { renderTimeline } from '../workloads/timeline.js';
import { spawnWorkload, stopWorkloadProcess, waitUntilServing } from '../workloads/process.js';
import { clientFor, login, type LoginChoice } from '../workloads/setup.js';
import { loadSpec, saveSpec, type WorkloadSpec } from '../workloads/spec.js';
import {
  effectiveStatus,
  readStatus,
  redactUrl,
  type WorkloadStatus,
  workloadNames,
  writeStatus,
} from '../workloads/status.js';
import { clientSnippets, type Io, nextStep, progressPrinter, relative, table } from './output.js';

const clock = systemClock;

/** The store and a workload's files, for commands on an existing workload. */
export async function openWorkload(
  io: Io,
  name: string,
): Promise<{ store: CredentialStore; files: WorkloadFiles; spec: WorkloadSpec }> {
  const store = await CredentialStore.open({ env: io.env });
  const files = new WorkloadFiles(store.dir, name);
  const spec = await loadSpec(store, name);
  if (spec === undefined) throw noSuchWorkload(name);
  return { store, files, spec };
}

/** The status to show for a workload: the file's (a dead process shown as `error`), or `stopped` if it never ran. */
export async function currentStatus(files: WorkloadFiles, spec: WorkloadSpec): Promise<WorkloadStatus> {
  const status = await readStatus(files);
  if (status !== undefined) return effectiveStatus(status);
  return {
    name: spec.name,
    remoteUrl: redactUrl(spec.remoteUrl), // as a workload that ran writes it
    status: 'stopped',
    statusReason: 'not started',
    statusSince: spec.createdAt,
    refresh: { state: 'ok' },
    token: {},
    createdAt: spec.createdAt,
    updatedAt: spec.createdAt,
  };
}

/** Starts the workload's process and waits until it serves; prints where. */
export async function startWorkload(io: Io, files: WorkloadFiles, snippets: boolean): Promise<WorkloadStatus> {
  io.stderr.write(`Starting workload ${files.name} …\n`);
  const spawned = await spawnWorkload(files, io.env);
  const interrupted = (): void => {
    io.stderr.write(
      `\nStopped waiting. Workload ${files.name} goes on starting in the background: \`tether status ${files.name}\` shows it, \`tether stop ${files.name}\` stops it.\n`,
    );
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  const status = await waitUntilServing(files, spawned, clock).finally(() => {
    process.off('SIGINT', interrupted);
  });
  io.stdout.write(`Workload ${files.name} is ${status.status}: ${status.proxyUrl ?? ''} → ${status.remoteUrl}\n`);
  const step = nextStep(status);
  if (step !== undefined) io.stdout.write(`${status.statusReason}\n${step}\n`);
  if (snippets && status.proxyUrl !== undefined) io.stdout.write(`\n${clientSnippets(files.name, status.proxyUrl)}`);
  return status;
}

/** `tether start NAME`. */
export async function start(io: Io, name: string): Promise<void> {
  const { files, spec } = await openWorkload(io, name);
  const status = await currentStatus(files, spec);
  if (status.pid !== undefined) {
    io.stdout.write(`Workload ${name} is already ${status.status} at ${status.proxyUrl ?? '(starting)'}\n`);
    return;
  }
  await startWorkload(io, files, false);
}

/** `tether stop NAME`: a graceful stop; a process that does not stop in time is killed. */
export async function stop(io: Io, name: string): Promise<void> {
  const { files, spec } = await openWorkload(io, name);
  const wasRunning = await stopWorkloadProcess(files, clock);
  const after = await currentStatus(files, spec);
  if (!wasRunning && after.status !== 'error') {
    io.stdout.write(`Workload ${name} is not running.\n`);
    return;
  }
  if (after.status !== 'stopped') {
    // Killed, or it died while stopping: the file must not keep saying it runs.
    const { pid, ...rest } = after;
    await writeStatus(files, {
      ...rest,
      status: 'stopped',
      statusReason: wasRunning ? 'stopped (the process had to be killed)' : 'stopped (its process had already ended)',
      statusSince: new Date(clock.now()).toISOString(),
      updatedAt: new Date(clock.now()).toISOString(),
    });
  }
  io.stdout.write(`Stopped workload ${name}.\n`);
}

/** `tether restart NAME`. */
export async function restart(io: Io, name: string): Promise<void> {
  await stop(io, name);
  const { files } = await openWorkload(io, name);
  await startWorkload(io, files, false);
}

/** `tether rm NAME`: stops it and deletes everything stored for it, its credentials included. */
export async function remove(io: Io, name: string): Promise<void> {
  const { store, files } = await openWorkload(io, name);
  await stopWorkloadProcess(files, clock);
  await store.removeWorkload(name);
  await unlink(files.controlSocket).catch(() => undefined);
  io.stdout.write(`Removed workload ${name} and its stored credentials.\n`);
}

/** `tether list [--all] [--json]`. */
export async function list(io: Io, options: { all: boolean; json: boolean }): Promise<void> {
  const store = await CredentialStore.open({ env: io.env });
  const statuses: WorkloadStatus[] = [];
  for (const name of await workloadNames(store.dir)) {
    const files = new WorkloadFiles(store.dir, name);
    const spec = await loadSpec(store, name).catch(() => undefined);
    if (spec === undefined) continue;
    const status = await currentStatus(files, spec);
    if (options.all || status.status !== 'stopped') statuses.push(status);
  }
  if (options.json) {
    io.stdout.write(`${JSON.stringify(statuses, null, 2)}\n`);
    return;
  }
  if (statuses.length === 0) {
    io.stdout.write(
      options.all
        ? 'No workloads. Create one with `tether run <remote-url>`.\n'
        : 'No workloads running. `tether list --all` shows stopped ones too.\n',
    );
    return;
  }
  const now = clock.now();
  io.stdout.write(
    table(
      ['NAME', 'STATUS', 'SINCE', 'LOCAL URL', 'REMOTE'],
      statuses.map((s) => [s.name, s.status, relative(s.statusSince, now), s.proxyUrl ?? '-', s.remoteUrl]),
    ),
  );
}

/** `tether status NAME [--json]`: the live status from the process, else the files; with recent events. */
export async function status(io: Io, name: string, options: { json: boolean; timeline: boolean }): Promise<void> {
  const { files, spec } = await openWorkload(io, name);
  if (options.timeline) {
    io.stdout.write(`Workload ${name}: `);
    io.stdout.write(renderTimeline(await readEvents(files), clock.now()));
    return;
  }
  let current: WorkloadStatus & { events?: unknown[] } = await currentStatus(files, spec);
  if (current.pid !== undefined) {
    const live = await controlRequest(files.controlSocket, 'GET', '/status', 5000).catch(() => undefined);
    if (live?.status === 200) current = JSON.parse(live.body) as typeof current;
  }
  const events =
    (current.events as Awaited<ReturnType<typeof readEvents>> | undefined) ?? (await readEvents(files, 30));
  if (options.json) {
    io.stdout.write(`${JSON.stringify({ ...current, events }, null, 2)}\n`);
    return;
  }
  const now = clock.now();
  const rows: [string, string][] = [
    ['status', `${current.status} (since ${current.statusSince}, ${relative(current.statusSince, now)})`],
    ['reason', current.statusReason],
    ['local URL', current.proxyUrl ?? '-'],
    ['remote', current.remoteUrl],
    ['pid', current.pid === undefined ? '-' : String(current.pid)],
  ];
  const refresh = current.refresh;
  let refreshLine: string = refresh.state;
  if (refresh.failingSince !== undefined) refreshLine += `, failing since ${refresh.failingSince}`;
  rows.push(['refresh', refreshLine]);
  if (refresh.lastError !== undefined) {
    rows.push(['last error', `${refresh.lastErrorClass ?? ''} ${refresh.lastError}`.trim()]);
  }
  if (refresh.nextAttemptAt !== undefined) {
    rows.push(['next attempt', `${refresh.nextAttemptAt} (${relative(refresh.nextAttemptAt, now)})`]);
  }
  if (current.token.expiresAt !== undefined) {
    rows.push(['token expires', `${current.token.expiresAt} (${relative(current.token.expiresAt, now)})`]);
  }
  io.stdout.write(`Workload ${name}\n`);
  for (const [key, value] of rows) io.stdout.write(`  ${`${key}:`.padEnd(15)}${value}\n`);
  const step = nextStep(current);
  if (step !== undefined) io.stdout.write(`\n  What to do: ${step}\n`);
  io.stdout.write(`\nRecent events (oldest first; \`tether logs ${name}\` has them all):\n`);
  for (const record of events) io.stdout.write(`  ${formatRecord(record)}\n`);
  if (events.length === 0) io.stdout.write('  (none yet)\n');
}

/** `tether logs NAME [--follow] [--json]`. */
export async function logs(io: Io, name: string, options: { follow: boolean; json: boolean }): Promise<void> {
  const { files } = await openWorkload(io, name);
  const print = (record: Parameters<typeof formatRecord>[0]): void => {
    io.stdout.write(`${options.json ? JSON.stringify(record) : formatRecord(record)}\n`);
  };
  for (const record of await readEvents(files)) print(record);
  if (!options.follow) return;
  const stopFollowing = new AbortController();
  const onSignal = (): void => {
    stopFollowing.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    await followEvents(files, clock, print, stopFollowing.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** `tether refresh NAME`: an attempt now, through the control channel. */
export async function refresh(io: Io, name: string): Promise<void> {
  const { files, spec } = await openWorkload(io, name);
  const before = await currentStatus(files, spec);
  if (before.pid === undefined) {
    throw new TetherError('ERR_NOT_RUNNING', `workload ${name} is not running; start it with \`tether start ${name}\``);
  }
  io.stderr.write(`Refreshing the token of workload ${name} …\n`);
  const answer = await controlRequest(files.controlSocket, 'POST', '/refresh');
  if (answer.status !== 200) throw new TetherError('ERR_REFRESH', `the workload could not refresh: ${answer.body}`);
  const after = JSON.parse(answer.body) as WorkloadStatus;
  const ok = after.refresh.state === 'ok';
  io.stdout.write(
    ok
      ? `Refreshed: ${after.status}${after.token.expiresAt === undefined ? '' : `, token valid until ${after.token.expiresAt}`}\n`
      : `The refresh failed (${after.refresh.lastError ?? 'unknown'}); status ${after.status}\n`,
  );
  const step = nextStep(after);
  if (step !== undefined) io.stdout.write(`${step}\n`);
  if (!ok) process.exitCode = 1;
}

/**
 * `tether login NAME`: a new login; the credentials are saved and, when the
 * workload runs, taken into use through its control channel — same port, no restart.
 */
export async function loginAgain(io: Io, name: string, options: { reregister: boolean } & LoginChoice): Promise<void> {
  const { store, files, spec } = await openWorkload(io, name);
  const http = new HttpClient({ clock });
  try {
    const context = { store, http, clock, env: io.env, progress: progressPrinter(io) };
    const client = await clientFor(spec, options.reregister, options.deviceCode, context);
    const callbackPort = options.callbackPort ?? spec.callbackPort;
    const tokens = await login(
      spec,
      client,
      { ...options, ...(callbackPort !== undefined && { callbackPort }) },
      context,
    );
    await store.saveTokens(name, tokens);
    if (spec.client.kind === 'dynamic' && spec.client.clientId !== client.clientId) {
      await saveSpec(store, { ...spec, client: { kind: 'dynamic', clientId: client.clientId } });
    }
  } finally {
    await http.close();
  }
  const current = await currentStatus(files, spec);
  if (current.pid === undefined) {
    io.stdout.write(`Saved the new credentials. Start the workload with \`tether start ${name}\`.\n`);
    return;
  }
  const answer = await controlRequest(files.controlSocket, 'POST', '/reload');
  if (answer.status !== 200) {
    throw new TetherError(
      'ERR_RELOAD',
      `the credentials are saved, but the running workload could not take them: ${answer.body}; run \`tether restart ${name}\``,
    );
  }
  const after = JSON.parse(answer.body) as WorkloadStatus;
  io.stdout.write(`Workload ${name} uses the new credentials: ${after.status} at ${after.proxyUrl ?? ''}\n`);
}
