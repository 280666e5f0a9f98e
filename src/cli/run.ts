import { systemClock } from '../clock/system.js';
import { TetherError } from '../errors.js';
import { assertSecureEndpoint, HttpClient, isLoopback } from '../oauth/http.js';
import { CredentialStore } from '../store/store.js';
import { WorkloadFiles } from '../workloads/files.js';
import { clientFor, discoverRemote, login, type LoginChoice, scopesFor } from '../workloads/setup.js';
import { loadSpec, saveSpec, type WorkloadClient, type WorkloadSpec } from '../workloads/spec.js';
import { CLIENT_SECRET_ENV } from '../oauth/client-secret.js';
import path from 'node:path';
import { readStatus, redactUrl, workloadProcessTitle } from '../workloads/status.js';
import { DEFAULT_LOCK_OPTIONS, withFileLock } from '../store/lock.js';
import { serveWorkload } from '../workloads/workload.js';
import { clientSnippets, type Io, progressPrinter } from './output.js';
import { startWorkload } from './workloads.js';

const clock = systemClock;

/** The options of `tether run` (DESIGN §8). */
export interface RunOptions extends LoginChoice {
  readonly name?: string;
  readonly port: number;
  readonly host: string;
  readonly clientId?: string;
  readonly clientSecretFile?: string;
  readonly scopes?: readonly string[];
  readonly resource?: string;
  readonly issuer?: string;
  readonly foreground: boolean;
  readonly headers: Readonly<Record<string, string>>;
}

/** A workload name from the remote's host: `mcp.example.com` → `mcp-example-com`. */
export function defaultName(remoteUrl: URL): string {
  const name = remoteUrl.hostname
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 63);
  return name === '' ? 'mcp' : name;
}

/**
 * `tether run`: discovery and login in the foreground, then the workload
 * started in the background (or here, with `--foreground`), returning once
 * it serves with the local URL and client configurations.
 */
export async function run(io: Io, remote: string, options: RunOptions): Promise<void> {
  const remoteUrl = assertSecureEndpoint(remote, 'the remote MCP URL');
  if (!isLoopback(new URL(`http://${options.host.includes(':') ? `[${options.host}]` : options.host}`))) {
    throw new TetherError(
      'ERR_USAGE',
      `--host ${options.host} is not a loopback address: anyone who can reach it would get requests sent with your token; use 127.0.0.1 (the default), ::1 or localhost`,
    );
  }
  const name = options.name ?? defaultName(remoteUrl);
  const store = await CredentialStore.open({ env: io.env });
  const files = new WorkloadFiles(store.dir, name);
  const existing = await loadSpec(store, name).catch(() => undefined);
  if (existing !== undefined || (await readStatus(files)) !== undefined) {
    throw new TetherError(
      'ERR_WORKLOAD_EXISTS',
      `a workload named ${name} already exists${existing === undefined ? '' : ` (for ${redactUrl(existing.remoteUrl)})`}; ` +
        `\`tether start ${name}\` serves it again, \`tether rm ${name}\` removes it, or choose another --name`,
    );
  }

  const http = new HttpClient({ clock });
  const onSignal = new AbortController();
  const cancel = (): void => {
    onSignal.abort(new TetherError('ERR_CANCELLED', 'cancelled'));
  };
  process.once('SIGINT', cancel);
  let spec: WorkloadSpec;
  try {
    const context = {
      store,
      http,
      clock,
      env: io.env,
      progress: progressPrinter(io),
      signal: onSignal.signal,
    };
    const discovery = await discoverRemote(
      remoteUrl.href,
      {
        ...(options.issuer !== undefined && { issuer: options.issuer }),
        ...(options.resource !== undefined && { resource: options.resource }),
      },
      context,
    );
    const wanted =
      options.clientId === undefined
        ? ({ kind: 'dynamic' } as const)
        : ({
            kind: 'static',
            clientId: options.clientId,
            // Absolute: `start` and `login` may run from another directory.
            ...(options.clientSecretFile !== undefined && { clientSecretFile: path.resolve(options.clientSecretFile) }),
            ...(options.clientSecretFile === undefined &&
              io.env[CLIENT_SECRET_ENV.name] !== undefined &&
              io.env[CLIENT_SECRET_ENV.name] !== '' && { secretFromEnv: true }),
          } as const);
    const registration = await clientFor(
      { authorizationServer: discovery.authorizationServer, client: wanted },
      false,
      options.deviceCode,
      context,
    );
    const client: WorkloadClient =
      wanted.kind === 'dynamic' ? { kind: 'dynamic', clientId: registration.clientId } : wanted;
    spec = {
      version: 1,
      name,
      remoteUrl: remoteUrl.href,
      resource: discovery.resource,
      authorizationServer: discovery.authorizationServer,
      client,
      scopes: scopesFor(discovery, options.scopes),
      host: options.host,
      port: options.port,
      headers: options.headers,
      ...(options.callbackPort !== undefined && { callbackPort: options.callbackPort }),
      createdAt: new Date(clock.now()).toISOString(),
    };
    const tokens = await login(spec, registration, options, context);
    await store.saveTokens(name, tokens);
    await saveSpec(store, spec);
  } finally {
    process.off('SIGINT', cancel);
    await http.close();
  }

  if (options.foreground) {
    await serveInForeground(io, store, name);
    return;
  }
  await startWorkload(io, files, true);
}

/** Serves a workload in this process until SIGINT/SIGTERM (`--foreground`, and the hidden serve command). */
export async function serveInForeground(io: Io, store: CredentialStore, name: string, echo = true): Promise<void> {
  // Listening before the workload starts: a stop that comes while it starts waits for it, then stops it.
  const stopRequested = new Promise<void>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(signal, () => {
        resolve();
      });
    }
  });
  const files = new WorkloadFiles(store.dir, name);
  // `ps` and `tether list` know the process by this title; a pid reused by another program is not taken for it.
  process.title = workloadProcessTitle(name);
  // One process per workload: a second one (two `tether start`s at once) leaves quietly, writing nothing.
  await withFileLock(files.instanceLock, clock, { ...DEFAULT_LOCK_OPTIONS, timeoutMs: 0 }, async () => {
    await serveHoldingLock(io, store, name, echo, stopRequested);
  }).catch((error: unknown) => {
    if (error instanceof TetherError && error.code === 'ERR_STORE_LOCK_TIMEOUT') {
      throw new TetherError('ERR_ALREADY_RUNNING', `workload ${name} is already running in another process`);
    }
    throw error;
  });
}

async function serveHoldingLock(
  io: Io,
  store: CredentialStore,
  name: string,
  echo: boolean,
  stopRequested: Promise<void>,
): Promise<void> {
  const workload = await serveWorkload({
    store,
    name,
    env: io.env,
    clock,
    ...(echo && {
      echo: (line: string) => {
        io.stderr.write(`${line}\n`);
      },
    }),
  });
  if (echo)
    io.stdout.write(`Serving ${workload.proxyUrl} (Ctrl-C stops it)\n\n${clientSnippets(name, workload.proxyUrl)}`);
  await stopRequested;
  await workload.stop();
}

/**
 * The hidden command a background workload process runs. It exits once
 * stopped, whatever a client may still hold open.
 */
export async function serve(io: Io, name: string): Promise<void> {
  const store = await CredentialStore.open({ env: io.env });
  await serveInForeground(io, store, name, false);
  process.exit(0);
}
