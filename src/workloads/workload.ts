import type http from 'node:http';
import type { Clock } from '../clock/clock.js';
import { systemClock } from '../clock/system.js';
import { keeperConfigFromEnv } from '../config/keeper-config.js';
import { TetherError } from '../errors.js';
import { watchNetwork, watchWake, type Watcher } from '../keeper/detectors.js';
import { TokenKeeper } from '../keeper/keeper.js';
import type { KeeperEvent, RefreshFunction } from '../keeper/types.js';
import { HttpClient } from '../oauth/http.js';
import { createRefreshFunction } from '../oauth/refresh.js';
import { type ClientRegistration, DEFAULT_GRANT_TYPES } from '../oauth/registration.js';
import { type RunningProxy, startProxy } from '../proxy/proxy.js';
import { hasCode } from '../store/files.js';
import type { CredentialStore } from '../store/store.js';
import { startControlServer } from './control.js';
import { EventLog, formatRecord, keeperRecord, type LogRecord, ProxyFailureLog } from './events.js';
import { WorkloadFiles } from './files.js';
import { WorkloadMetrics } from './metrics.js';
import { userClient } from './setup.js';
import { loadSpec, saveSpec, type WorkloadSpec } from './spec.js';
import { iso, keeperFields, redactUrl, type WorkloadStatus, type WorkloadStatusKind, writeStatus } from './status.js';

/** How many recent events the live status carries (`tether status`). */
const RECENT_EVENTS = 30;

/**
 * How long a start waits for the verdict on the stored credentials when the
 * keeper refreshes them at once (`startup`): well within the time `tether
 * start` waits for the workload to serve, longer than a distant token
 * endpoint takes to answer.
 */
export const STARTUP_VERDICT_WAIT_MS = 5_000;

/** Options of {@link serveWorkload}. */
export interface ServeOptions {
  readonly store: CredentialStore;
  readonly name: string;
  /** Where the keeper's settings and a static client's secret are read from. */
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly clock?: Clock;
  /** Also gets every log record in the readable form (`--foreground`). */
  readonly echo?: (line: string) => void;
}

/** A workload serving in this process. */
export interface RunningWorkload {
  readonly proxyUrl: string;
  /** Stops it: status `stopping`, the endpoint closed, the keeper stopped (saves landed), status `stopped`. */
  stop(): Promise<void>;
}

/** The client the workload refreshes with: the cached dynamic registration or the user's static client. */
async function loadClient(
  store: CredentialStore,
  spec: WorkloadSpec,
  env: ServeOptions['env'],
): Promise<ClientRegistration> {
  const as = spec.authorizationServer;
  if (spec.client.kind === 'static') return userClient(as, spec.client, env);
  const cached = await store.loadRegistration(as.issuer);
  if (cached?.clientId === spec.client.clientId) return cached;
  // Another workload re-registered since: this one's client, public, is still its own.
  return {
    kind: 'dynamic',
    issuer: as.issuer,
    clientId: spec.client.clientId,
    tokenEndpointAuthMethod: 'none',
    redirectUris: [],
    grantTypes: DEFAULT_GRANT_TYPES,
    registeredAt: 0,
  };
}

/**
 * Runs a workload (DESIGN §7) in this process: the token keeper on the
 * stored credentials, the local MCP endpoint, the control channel, the
 * network and wake detectors, the status file and the event log. Needs
 * neither the network nor a person to start: everything comes from the
 * store. Resolves once the endpoint serves and — when the stored token is due
 * and refreshed at once — the server's verdict on it is in, or
 * {@link STARTUP_VERDICT_WAIT_MS} has passed: until then the status is
 * `starting`, never `running` on a credential that may be spent.
 */
export async function serveWorkload(options: ServeOptions): Promise<RunningWorkload> {
  const { store, name, env } = options;
  const clock = options.clock ?? systemClock;
  const files = new WorkloadFiles(store.dir, name);
  const loaded = await loadSpec(store, name);
  if (loaded === undefined) {
    throw new TetherError('ERR_NO_WORKLOAD', `there is no workload named ${name}; see \`tether list --all\``);
  }
  let spec = loaded;
  const log = new EventLog(files, clock);
  const metrics = new WorkloadMetrics();
  const recent: LogRecord[] = [];
  const record = (entry: LogRecord): void => {
    // The timeline `tether status` shows is the keeper's and the workload's, not every request a client retried.
    if (entry.type !== 'proxy') recent.push(entry);
    if (recent.length > RECENT_EVENTS) recent.shift();
    void log.append(entry);
    options.echo?.(formatRecord(entry));
  };
  const note = (event: string, message: string): void => {
    record({ time: iso(clock.now()), type: 'workload', event, message });
  };
  const proxyFailures = new ProxyFailureLog(clock, record);

  let kind: WorkloadStatusKind = 'starting';
  let reason = 'starting';
  let since = clock.now();
  let proxy: RunningProxy | undefined;
  let keeper: TokenKeeper | undefined;
  const compose = (): WorkloadStatus => ({
    name,
    remoteUrl: redactUrl(spec.remoteUrl), // what is written; requests use the real one
    ...(proxy !== undefined && { proxyUrl: proxy.url, port: proxy.port }),
    // Only a live process has a pid here: a stopped or failed one is not to be signalled or waited for.
    ...(kind !== 'stopped' && kind !== 'error' && { pid: process.pid }),
    status: kind,
    statusReason: reason,
    statusSince: iso(since),
    ...(keeper === undefined ? { refresh: { state: 'ok' as const }, token: {} } : keeperFields(keeper.snapshot())),
    createdAt: spec.createdAt,
    updatedAt: iso(clock.now()),
  });
  let writing = Promise.resolve();
  const publish = (): Promise<void> => {
    const status = compose();
    writing = writing.then(() => writeStatus(files, status)).catch(() => undefined);
    return writing;
  };
  const setStatus = (next: WorkloadStatusKind, why: string): Promise<void> => {
    if (next !== kind) since = clock.now();
    kind = next;
    reason = why;
    return publish();
  };

  await setStatus('starting', 'starting');
  note('starting', `pid ${String(process.pid)}, remote ${redactUrl(spec.remoteUrl)}`);
  const http = new HttpClient({ clock });
  const watchers: Watcher[] = [];
  let control: http.Server | undefined;
  /**
   * Whether the keeper's status is the workload's: not until the endpoint
   * serves and the verdict on the stored credentials is in (`starting`),
   * nor once it stops.
   */
  let serving = false;
  try {
    let refresh: RefreshFunction = createRefreshFunction({
      http,
      authorizationServer: spec.authorizationServer,
      client: await loadClient(store, spec, env),
      resource: spec.resource,
    });
    const running = new TokenKeeper({
      clock,
      config: keeperConfigFromEnv(env),
      refresh: (refreshToken, signal) => refresh(refreshToken, signal),
      store: store.keeperStore(name),
      status: (status, why) => {
        if (serving) void setStatus(status, why);
      },
      dynamicClient: spec.client.kind === 'dynamic',
      name,
      resetTransport: () => {
        http.resetTransport();
      },
    });
    keeper = running;
    running.on((event: KeeperEvent) => {
      metrics.observe(event);
      // Counts of failed requests end with the status they were answered in, and land before its change.
      if (event.type === 'status') proxyFailures.flush();
      record(keeperRecord(event));
      if (event.type !== 'status') void publish(); // a status event is published by the sink
    });
    await running.start();
    const startupAttempt = attemptEnded(running);

    proxy = await startProxy({
      remoteUrl: new URL(spec.remoteUrl),
      tokens: running,
      workloadName: name,
      host: spec.host,
      port: spec.port,
      headers: spec.headers,
      onRequest: (request) => {
        metrics.request(request.status);
        if (request.status >= 400 || !request.upstream) {
          proxyFailures.observe({ time: iso(clock.now()), type: 'proxy', ...request });
        }
      },
    }).catch((error: unknown) => {
      if (hasCode(error, 'EADDRINUSE')) {
        throw new TetherError(
          'ERR_PORT_IN_USE',
          `port ${String(spec.port)} on ${spec.host} is in use by another program; stop it, or remove this workload (\`tether rm ${name}\`) and run it again with another --port`,
        );
      }
      throw error;
    });
    if (spec.port !== proxy.port) {
      spec = { ...spec, port: proxy.port }; // the same port after every restart: client configs stay valid
      await saveSpec(store, spec);
    }

    control = await startControlServer(files.controlSocket, {
      status: () => ({ ...compose(), events: recent }),
      refresh: async () => {
        await running.trigger('manual');
        return compose();
      },
      reload: async () => {
        const tokens = await store.loadTokens(name);
        if (tokens === undefined) throw new TetherError('ERR_NO_CREDENTIALS', 'no credentials are stored');
        spec = (await loadSpec(store, name)) ?? spec; // `tether login` may have changed the client
        refresh = createRefreshFunction({
          http,
          authorizationServer: spec.authorizationServer,
          client: await loadClient(store, spec, env),
          resource: spec.resource,
        });
        running.setTokens(tokens);
        note('reloaded', 'new credentials from `tether login` are in use');
        await publish();
        return compose();
      },
      metrics: () => metrics.render(name, kind, since, clock.now()),
    });
    watchers.push(
      watchNetwork({ clock, onChange: () => void running.trigger('network') }),
      watchWake({ clock, onWake: () => void running.trigger('wake') }),
    );
    // Not `running` on a credential the keeper is still refreshing: a refresh token spent by a process
    // killed inside a rotation is known lost only once the server answers. `tether start` waits for this.
    // The wait is armed before the status says `starting`: whoever reads that status knows the wait has begun.
    const verdictIn = settlesWithin(clock, startupAttempt, STARTUP_VERDICT_WAIT_MS);
    if (running.state === 'refreshing') await setStatus('starting', 'serving; refreshing the stored credentials');
    const verdict = await verdictIn;
    serving = true;
    const publishKeeperStatus = (): Promise<void> =>
      running.state === 'refreshing' && running.peekToken() === undefined
        ? setStatus(
            'auth_retrying',
            `no valid token yet: the refresh of the stored credentials has not answered within ${String(STARTUP_VERDICT_WAIT_MS / 1000)}s`,
          )
        : setStatus(running.status, running.snapshot().statusReason || 'serving');
    await publishKeeperStatus();
    if (!verdict) {
      void startupAttempt.then(() => {
        if (serving) void publishKeeperStatus();
      });
    }
    note('serving', `${proxy.url} → ${redactUrl(spec.remoteUrl)}`);
    return {
      proxyUrl: proxy.url,
      async stop() {
        serving = false;
        await setStatus('stopping', 'stopping');
        note('stopping', 'stop requested');
        await shutdown();
        proxyFailures.flush(); // the endpoint is closed: no more failures to count
        await setStatus('stopped', 'stopped');
        note('stopped', 'stopped');
        await log.flushed();
      },
    };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    await shutdown();
    proxyFailures.flush(); // the endpoint is closed: no more failures to count
    await setStatus('error', message);
    note('error', message);
    await log.flushed();
    throw error;
  }

  /**
   * The keeper first: it aborts an attempt in flight (which a control request
   * such as `tether refresh` may be waiting for) and waits for its saves.
   */
  async function shutdown(): Promise<void> {
    for (const watcher of watchers) watcher.stop();
    await keeper?.stop();
    await proxy?.close();
    await new Promise<void>((resolve) => {
      if (control === undefined) resolve();
      else {
        control.close(() => {
          resolve();
        });
        control.closeAllConnections();
      }
    });
    await http.close();
  }
}

/**
 * Resolves when the keeper's attempt in flight ends — once its outcome is
 * applied, status included — or at once when none is.
 */
function attemptEnded(keeper: TokenKeeper): Promise<void> {
  if (keeper.state !== 'refreshing') return Promise.resolve();
  return new Promise((resolve) => {
    const subscription = keeper.on((event) => {
      if (event.type !== 'state' || event.from !== 'refreshing') return;
      subscription.dispose();
      resolve(); // awaiters run after this turn of the keeper's, in which it also reports the status
    });
  });
}

/** Whether `promise` settles within `ms`. */
function settlesWithin(clock: Clock, promise: Promise<void>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = clock.setTimeout(() => {
      resolve(false);
    }, ms);
    void promise.then(() => {
      clock.clearTimeout(timer);
      resolve(true);
    });
  });
}
