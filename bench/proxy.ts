/**
 * bench/proxy — what tether's proxying costs an MCP client, against calling
 * the server directly and against `mcp-remote`, all in one run on loopback:
 *
 * 1. `tools/call whoami` latency (p50, p99) and throughput at concurrency 1
 *    and 32, with the same MCP SDK client, for: direct (bearer token in the
 *    client), tether's HTTP proxy (a workload started by the built CLI),
 *    `tether connect` (stdio bridge to that workload), and `mcp-remote`
 *    (stdio, its own OAuth login completed by the remote's stand-in user);
 * 2. stdio start-up: spawn → first `tools/list` answered, already logged in;
 * 3. resident memory of the proxy processes after the load.
 *
 * The remote (oidc-provider + the SDK's MCP server, `src/demo/remote.ts`)
 * runs in a child process of its own, so that the server's CPU does not
 * share the load generator's event loop: on a small machine that would hide
 * a proxy's cost. Cases are interleaved in rounds to spread drift evenly.
 *
 *   npm run bench:proxy        (npx tsx bench/proxy.ts; run `npm run build` first)
 */
import { type ChildProcess, execFileSync, fork, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdtemp, open, readFile, rm, writeFile, type FileHandle } from 'node:fs/promises';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { FetchLike, Transport } from '@modelcontextprotocol/sdk/shared/transport.js';
import { CLI_ENTRY, type CliResult, TetherCli } from '../src/demo/cli.js';
import type { Remote } from '../src/demo/remote.js';
import { machineLine, printTable } from './table.js';

// ---- what is measured -------------------------------------------------------------------------------------------

const WORKLOAD = 'bench';
/** Access tokens outlive the run: no refresh happens while it measures. */
const TOKEN_TTL_SECONDS = 3600;
/** Many short rounds: other work on the machine then weighs on every case alike. */
const ROUNDS = 8;
const HIGH_CONCURRENCY = 32;
/**
 * Per case and concurrency: at most `calls` (split over the rounds), and at most `roundMs` per
 * round — the time box that keeps the whole run near 3 minutes on a slow or busy machine.
 */
const LOAD = [
  { concurrency: 1, calls: 2_000, roundMs: 1_250 },
  { concurrency: HIGH_CONCURRENCY, calls: 10_000, roundMs: 1_500 },
] as const;
const WARMUP = [
  { concurrency: 1, calls: 300, roundMs: 1_500 },
  { concurrency: HIGH_CONCURRENCY, calls: 1_500, roundMs: 2_000 },
] as const;
const STARTUP_SPAWNS = 10;

/** The targets (issue 5). */
const TARGETS = {
  httpP50: 1.25,
  httpThroughput: 0.85,
  stdioP50: 1.4,
  stdioThroughput: 0.8,
  startupMs: 200,
  rssMiB: 100,
} as const;

const MCP_REMOTE_ENTRY = createRequire(import.meta.url).resolve('mcp-remote/dist/proxy.js');
const REMOTE_ROLE = '--serve-remote';
const WHOAMI = { name: 'whoami', arguments: {} } as const;
const EXPECTED_SUBJECT = 'test-user';

// ---- the remote, in its own process -------------------------------------------------------------------------------

type ToRemote = { readonly type: 'login'; readonly id: number; readonly url: string } | { readonly type: 'close' };
type FromRemote =
  | { readonly type: 'ready'; readonly mcpUrl: string }
  | { readonly type: 'login'; readonly id: number; readonly ok: boolean; readonly reason?: string };

/** The child: starts the remote, follows login URLs it is sent, closes when told (or when the parent goes). */
async function serveRemote(): Promise<void> {
  const { startRemote } = await import('../src/demo/remote.js');
  const remote = await startRemote({ accessTokenTtlSeconds: TOKEN_TTL_SECONDS });
  const send = (message: FromRemote): void => {
    process.send?.(message);
  };
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    // Whatever the remote's libraries leave scheduled, the child's work is done.
    closing ??= remote.close().finally(() => process.exit(0));
    return closing;
  };
  process.on('disconnect', () => {
    void close();
  });
  process.on('message', (message: ToRemote) => {
    if (message.type === 'close') {
      void close();
      return;
    }
    remote.completeLogin(message.url).then(
      () => {
        send({ type: 'login', id: message.id, ok: true });
      },
      (error: unknown) => {
        const text = error instanceof Error ? error.message : String(error);
        // The stand-in user expects tether's callback path (`/callback`, a redirect); mcp-remote's
        // `/oauth/callback` answers 200 with a page: the code was delivered all the same.
        const delivered = /^the login stopped at HTTP 200 \S*\/oauth\/callback\?/.test(text);
        // Never pass on a URL's query: it holds the code.
        send({ type: 'login', id: message.id, ok: delivered, reason: text.replace(/\?\S*/g, '?…').slice(0, 300) });
      },
    );
  });
  send({ type: 'ready', mcpUrl: remote.mcpUrl });
}

/** The parent's handle on the remote's process. */
class RemoteProcess {
  readonly child: ChildProcess;
  readonly mcpUrl: string;
  readonly #pending = new Map<number, (answer: { ok: boolean; reason?: string }) => void>();
  #next = 0;

  private constructor(child: ChildProcess, mcpUrl: string) {
    this.child = child;
    this.mcpUrl = mcpUrl;
    child.on('message', (message: FromRemote) => {
      if (message.type !== 'login') return;
      this.#pending.get(message.id)?.({
        ok: message.ok,
        ...(message.reason !== undefined && { reason: message.reason }),
      });
      this.#pending.delete(message.id);
    });
  }

  static async start(): Promise<RemoteProcess> {
    // The child inherits this process's execArgv: tsx's loader, so that it runs this file too.
    const child = fork(fileURLToPath(import.meta.url), [REMOTE_ROLE], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const mcpUrl = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error('the remote did not start within 30 s'));
      }, 30_000);
      child.once('error', reject);
      child.once('exit', (code) => {
        reject(new Error(`the remote exited (${String(code)}) before it was ready`));
      });
      child.on('message', (message: FromRemote) => {
        if (message.type === 'ready') {
          clearTimeout(timer);
          resolve(message.mcpUrl);
        }
      });
    });
    return new RemoteProcess(child, mcpUrl);
  }

  /** The stand-in user follows `url` through consent to the loopback callback. */
  async login(url: string): Promise<void> {
    const id = ++this.#next;
    const answer = await new Promise<{ ok: boolean; reason?: string }>((resolve) => {
      this.#pending.set(id, resolve);
      this.child.send({ type: 'login', id, url } satisfies ToRemote);
    });
    if (!answer.ok) throw new Error(`the stand-in user could not complete the login: ${answer.reason ?? '?'}`);
  }

  /** What `TetherCli` needs of a remote: the stand-in user. */
  standIn(): Remote {
    const standIn: Pick<Remote, 'completeLogin'> = { completeLogin: (url) => this.login(url) };
    return standIn as Remote;
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => {
      this.child.once('exit', () => {
        resolve();
      });
    });
    if (this.child.connected) this.child.send({ type: 'close' } satisfies ToRemote);
    if (!(await within(exited, 5_000))) this.child.kill('SIGKILL');
  }
}

// ---- processes: CPU and memory from /proc -------------------------------------------------------------------------

const CLOCK_TICKS = ((): number => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** User + system CPU time of a process so far, in ms; `undefined` when it cannot be read. */
function cpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  if (pid === process.pid) {
    const usage = process.cpuUsage();
    return (usage.user + usage.system) / 1000;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** VmRSS and VmHWM (peak) of a process, in MiB (`ps -o rss=` when /proc is not there). */
function memoryMiB(pid: number | undefined): { rss?: number; peak?: number } {
  if (pid === undefined) return {};
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const field = (name: string): number | undefined => {
      const kb = new RegExp(`^${name}:\\s*(\\d+) kB`, 'm').exec(status)?.[1];
      return kb === undefined ? undefined : Number(kb) / 1024;
    };
    const rss = field('VmRSS');
    const peak = field('VmHWM');
    return { ...(rss !== undefined && { rss }), ...(peak !== undefined && { peak }) };
  } catch {
    try {
      const kb = Number(execFileSync('ps', ['-o', 'rss=', '-p', String(pid)], { encoding: 'utf8' }).trim());
      return Number.isFinite(kb) && kb > 0 ? { rss: kb / 1024 } : {};
    } catch {
      return {};
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---- the cases ------------------------------------------------------------------------------------------------------

type CaseId = 'direct' | 'http' | 'connect' | 'mcp-remote';

interface Case {
  readonly id: CaseId;
  readonly label: string;
  readonly client: Client;
  /** The proxy's processes, for their CPU time (none for direct). */
  readonly proxyPids: () => readonly (number | undefined)[];
}

/** What one case at one concurrency accumulated over the rounds. */
class Tally {
  readonly latencies: number[] = [];
  calls = 0;
  errors = 0;
  elapsedMs = 0;
  readonly cpu = { client: 0, proxy: 0, server: 0, known: true };
}

/** Runs `calls` tool calls with `concurrency` in flight (or until the time box ends); adds to `tally`. */
async function batch(
  target: Case,
  calls: number,
  concurrency: number,
  maxMs: number,
  tally: Tally | undefined,
  serverPid: number | undefined,
): Promise<void> {
  const cpuOf = (pids: readonly (number | undefined)[]): number | undefined => {
    let sum = 0;
    for (const pid of pids) {
      const ms = cpuMs(pid);
      if (ms === undefined) return undefined;
      sum += ms;
    }
    return sum;
  };
  const before = { client: cpuOf([process.pid]), proxy: cpuOf(target.proxyPids()), server: cpuOf([serverPid]) };
  let issued = 0;
  let errors = 0;
  const latencies: number[] = [];
  const start = performance.now();
  const deadline = start + maxMs;
  const worker = async (): Promise<void> => {
    while (issued < calls && performance.now() < deadline) {
      issued += 1;
      const t0 = performance.now();
      try {
        const result = await target.client.callTool(WHOAMI);
        if (result.isError === true) errors += 1;
        else latencies.push(performance.now() - t0);
      } catch {
        errors += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const elapsedMs = performance.now() - start;
  if (tally === undefined) return;
  tally.latencies.push(...latencies);
  tally.calls += issued;
  tally.errors += errors;
  tally.elapsedMs += elapsedMs;
  const after = { client: cpuOf([process.pid]), proxy: cpuOf(target.proxyPids()), server: cpuOf([serverPid]) };
  for (const side of ['client', 'proxy', 'server'] as const) {
    const a = after[side];
    const b = before[side];
    if (a === undefined || b === undefined) tally.cpu.known = false;
    else tally.cpu[side] += a - b;
  }
}

/** Nearest-rank percentile of sorted values. */
function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? NaN;
}

interface Summary {
  readonly calls: number;
  readonly errors: number;
  readonly p50: number;
  readonly p99: number;
  readonly perSecond: number;
  readonly cpuUs?: { readonly client: number; readonly proxy: number; readonly server: number };
}

function summarize(tally: Tally): Summary {
  const sorted = [...tally.latencies].sort((a, b) => a - b);
  const ok = tally.latencies.length;
  return {
    calls: tally.calls,
    errors: tally.errors,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    perSecond: tally.elapsedMs > 0 ? (ok * 1000) / tally.elapsedMs : NaN,
    ...(tally.cpu.known &&
      tally.calls > 0 && {
        cpuUs: {
          client: (tally.cpu.client * 1000) / tally.calls,
          proxy: (tally.cpu.proxy * 1000) / tally.calls,
          server: (tally.cpu.server * 1000) / tally.calls,
        },
      }),
  };
}

// ---- helpers ----------------------------------------------------------------------------------------------------------

/** `promise` settled within `ms`: true; else false (the promise keeps running). */
async function within(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => {
      resolve(false);
    }, ms);
  });
  try {
    return await Promise.race([promise.then(() => true as const), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Progress on stderr; stdout carries only the report. */
function progress(text: string): void {
  process.stderr.write(`bench/proxy: ${text}\n`);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * What the children do not get: anything that would change tether's or mcp-remote's behaviour, and
 * `NODE_EXTRA_CA_CERTS` (every connection here is plain HTTP on loopback; where it is set, loading
 * the bundle adds to every Node start — the header says how much on this machine).
 */
const SCRUBBED_ENV =
  /^(TETHER_|TOOLHIVE_|MCP_REMOTE_|BROWSER$|HTTPS?_PROXY$|NO_PROXY$|ALL_PROXY$|NODE_OPTIONS$|NODE_EXTRA_CA_CERTS$)/i;

/**
 * The fetch of the benchmark's own HTTP clients. The SDK transport hands its one long-lived
 * AbortSignal to every fetch, and undici (Node 20) keeps an abort listener on it per request until
 * that request is garbage-collected: under load thousands pile up, Node formats and prints a
 * MaxListenersExceededWarning for every request past 1,500, and the load generator spends CPU on
 * that instead of on calls. The benchmark never aborts a call, so its POSTs go without the signal —
 * the same for the direct and the proxied client. (The stdio proxies' stderr is still scanned: the
 * report counts any such warning they print.)
 */
const benchFetch: FetchLike = (url, init) => {
  if (init === undefined || (init.method ?? 'GET') === 'GET') return fetch(url, init);
  const { signal, ...rest } = init;
  return fetch(url, rest);
};

/** The environment without anything that would change tether's or mcp-remote's behaviour here. */
function cleanEnv(extra: Readonly<Record<string, string>>): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !SCRUBBED_ENV.test(key)) env[key] = value;
  }
  return { ...env, ...extra };
}

function describe(result: CliResult): string {
  return `exit ${String(result.code)}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
}

const ms = (value: number): string => (Number.isFinite(value) ? value.toFixed(value < 10 ? 2 : 1) : 'n/a');
const ratio = (value: number): string => (Number.isFinite(value) ? `×${value.toFixed(2)}` : 'n/a');
const mib = (value: number | undefined): string => (value === undefined ? 'n/a' : value.toFixed(1));
function median(values: readonly number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    0.5,
  );
}

/** Connects an SDK client over `transport` and checks that `whoami` answers the test account. */
async function connectClient(transport: Transport, what: string): Promise<Client> {
  const client = new Client({ name: 'bench-proxy', version: '1.0.0' });
  await client.connect(transport);
  const { tools } = await client.listTools();
  if (!tools.some((tool) => tool.name === 'whoami')) throw new Error(`${what}: no whoami tool`);
  const result = await client.callTool(WHOAMI);
  const content = result.content as readonly { type: string; text?: string }[] | undefined;
  if (content?.[0]?.text !== EXPECTED_SUBJECT) throw new Error(`${what}: whoami answered ${JSON.stringify(result)}`);
  return client;
}

// ---- the run ----------------------------------------------------------------------------------------------------------

/** What the run works with: the environments, the stderr logs of the stdio proxies, the clean-up steps. */
interface Setup {
  readonly tetherEnv: Record<string, string>;
  readonly mcpRemoteEnv: Record<string, string>;
  /** Each stdio proxy's stderr goes to a file, as an MCP client's log would take it. */
  readonly logs: { readonly connect: FileHandle; readonly mcpRemote: FileHandle };
  readonly logPaths: { readonly connect: string; readonly mcpRemote: string };
  /** Run last first. */
  readonly cleanups: (() => Promise<unknown>)[];
}

async function main(): Promise<void> {
  if (!existsSync(CLI_ENTRY)) throw new Error(`${CLI_ENTRY} is missing: run \`npm run build\` first`);
  const root = await mkdtemp(path.join(os.tmpdir(), 'tether-bench-proxy-'));
  const browser = path.join(root, 'browser.sh');
  await writeFile(browser, '#!/bin/sh\nexit 0\n');
  await chmod(browser, 0o700);
  const logPaths = { connect: path.join(root, 'connect.stderr'), mcpRemote: path.join(root, 'mcp-remote.stderr') };
  const setup: Setup = {
    tetherEnv: cleanEnv({ TETHER_HOME: path.join(root, 'tether-home'), TETHER_STORE_KEY: 'file', BROWSER: browser }),
    mcpRemoteEnv: cleanEnv({ MCP_REMOTE_CONFIG_DIR: path.join(root, 'mcp-remote'), BROWSER: browser }),
    logs: { connect: await open(logPaths.connect, 'a'), mcpRemote: await open(logPaths.mcpRemote, 'a') },
    logPaths,
    cleanups: [],
  };

  let cleaned = false;
  const cleanUp = async (): Promise<void> => {
    if (cleaned) return;
    cleaned = true;
    for (const step of setup.cleanups.reverse()) {
      await step().catch((error: unknown) => {
        console.error(`cleanup: ${error instanceof Error ? error.message : String(error)}`);
      });
    }
    await setup.logs.connect.close().catch(() => undefined);
    await setup.logs.mcpRemote.close().catch(() => undefined);
    await rm(root, { recursive: true, force: true });
  };
  const onSignal = (): void => {
    void cleanUp().finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  try {
    await run(setup);
  } catch (error) {
    for (const [name, file] of Object.entries(logPaths)) {
      // Never a URL's query: a login URL's holds nothing secret, a callback's would.
      const tail = (await readFile(file, 'utf8').catch(() => '')).slice(-1_500).replace(/\?\S*/g, '?…');
      if (tail !== '') console.error(`--- last stderr of ${name}\n${tail}`);
    }
    throw error;
  } finally {
    await cleanUp();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

async function run(setup: Setup): Promise<void> {
  const { tetherEnv, mcpRemoteEnv, cleanups } = setup;
  const started = performance.now();
  const loadBefore = os.loadavg()[0] ?? NaN;
  progress('starting the remote, logging tether in, starting the workload');
  const remote = await RemoteProcess.start();
  cleanups.push(() => remote.close());
  const serverPid = remote.child.pid;

  // tether: `run` logs in once (the stand-in user consents) and starts the workload.
  const cli = new TetherCli(tetherEnv, remote.standIn());
  const workload: { pid?: number } = {};
  cleanups.push(async () => {
    const removed = await cli.run(['rm', WORKLOAD]);
    if (removed.code !== 0) console.error(`cleanup: tether rm ${WORKLOAD}: ${describe(removed)}`);
    // `tether rm` stops the process; a workload still alive a moment later is killed.
    const pid = workload.pid;
    if (pid === undefined) return;
    for (let i = 0; i < 30 && isAlive(pid); i++) await sleep(100);
    if (isAlive(pid)) {
      process.kill(pid, 'SIGKILL');
      throw new Error(`the workload process ${String(pid)} outlived tether rm (killed)`);
    }
  });
  const ran = await cli.run(['run', remote.mcpUrl, '--name', WORKLOAD, '--no-browser']);
  if (ran.code !== 0) throw new Error(`tether run failed: ${describe(ran)}`);
  const statusFile = path.join(tetherEnv['TETHER_HOME'] ?? '', 'workloads', WORKLOAD, 'status.json');
  const status = JSON.parse(await readFile(statusFile, 'utf8')) as { pid?: number; proxyUrl?: string; status: string };
  const workloadPid = status.pid;
  if (status.proxyUrl === undefined || workloadPid === undefined) {
    throw new Error(`the workload is ${status.status}, without a local URL or pid`);
  }
  workload.pid = workloadPid;

  // The same login's access token, for the direct client (never printed).
  const { CredentialStore } = await import('../src/store/store.js');
  const tokens = await (await CredentialStore.open({ env: tetherEnv })).loadTokens(WORKLOAD);
  if (tokens === undefined) throw new Error('no tokens stored for the workload');

  // mcp-remote: a first start logs in (its login URL is followed by the stand-in user), then it is closed.
  const mcpRemoteArgs = [MCP_REMOTE_ENTRY, remote.mcpUrl];
  progress('logging mcp-remote in');
  await loginMcpRemote(remote, mcpRemoteArgs, mcpRemoteEnv);

  const stdio = (args: readonly string[], env: Record<string, string>, log: FileHandle): StdioClientTransport =>
    new StdioClientTransport({ command: process.execPath, args: [...args], env, stderr: log.fd });

  const track = (client: Client): Client => {
    cleanups.push(() => client.close());
    return client;
  };
  const connectArgs = [CLI_ENTRY, 'connect', WORKLOAD];
  const connectTransport = stdio(connectArgs, tetherEnv, setup.logs.connect);
  const mcpRemoteTransport = stdio(mcpRemoteArgs, mcpRemoteEnv, setup.logs.mcpRemote);
  // Ends the children even if their client never connected (closing twice is harmless).
  cleanups.push(() => connectTransport.close());
  cleanups.push(() => mcpRemoteTransport.close());
  const cases: Case[] = [
    {
      id: 'direct',
      label: 'direct (SDK client → server, bearer token)',
      client: track(
        await connectClient(
          new StreamableHTTPClientTransport(new URL(remote.mcpUrl), {
            requestInit: { headers: { authorization: `Bearer ${tokens.accessToken}` } },
            fetch: benchFetch,
          }),
          'direct',
        ),
      ),
      proxyPids: () => [],
    },
    {
      id: 'http',
      label: 'tether HTTP proxy',
      client: track(
        await connectClient(
          new StreamableHTTPClientTransport(new URL(status.proxyUrl), { fetch: benchFetch }),
          'tether proxy',
        ),
      ),
      proxyPids: () => [workloadPid],
    },
    {
      id: 'connect',
      label: 'tether connect (stdio)',
      client: track(await connectClient(connectTransport, 'tether connect')),
      proxyPids: () => [connectTransport.pid ?? undefined, workloadPid],
    },
    {
      id: 'mcp-remote',
      label: 'mcp-remote (stdio)',
      client: track(await connectClient(mcpRemoteTransport, 'mcp-remote')),
      proxyPids: () => [mcpRemoteTransport.pid ?? undefined],
    },
  ];

  const proxyProcesses = [
    { label: 'tether workload (serves the HTTP proxy)', pid: () => workloadPid },
    { label: 'tether connect (stdio bridge)', pid: () => connectTransport.pid ?? undefined },
    { label: 'mcp-remote', pid: () => mcpRemoteTransport.pid ?? undefined },
  ];
  // Connected, nothing called but the checks: the proxies at rest.
  const memoryAtRest = proxyProcesses.map((p) => memoryMiB(p.pid()));

  // Warm-up: JIT, connection pools, sessions.
  progress('warming up');
  for (const target of cases) {
    for (const { concurrency, calls, roundMs } of WARMUP) {
      await batch(target, calls, concurrency, roundMs, undefined, serverPid);
    }
  }

  // Load: every case once per round, the order rotating, so that drift spreads over all of them.
  const tallies = new Map<string, Tally>();
  const tallyOf = (id: CaseId, concurrency: number): Tally => {
    const key = `${id}@${String(concurrency)}`;
    let tally = tallies.get(key);
    if (tally === undefined) {
      tally = new Tally();
      tallies.set(key, tally);
    }
    return tally;
  };
  for (const { concurrency, calls, roundMs } of LOAD) {
    for (let round = 0; round < ROUNDS; round++) {
      progress(`load at c=${String(concurrency)}, round ${String(round + 1)} of ${String(ROUNDS)}`);
      for (let i = 0; i < cases.length; i++) {
        const target = cases[(i + round) % cases.length];
        if (target === undefined) continue;
        await batch(target, calls / ROUNDS, concurrency, roundMs, tallyOf(target.id, concurrency), serverPid);
      }
    }
  }

  const loadAfter = os.loadavg()[0] ?? NaN;
  // Memory after the load, the stdio proxies still connected.
  const memory = proxyProcesses.map((p, i) => ({
    label: p.label,
    ...memoryMiB(p.pid()),
    atRest: memoryAtRest[i]?.rss,
  }));

  // What the stdio proxies wrote to stderr during the load (a warning printed per request would show here).
  const stderrDuringLoad = {
    connect: await stderrSummary(setup.logPaths.connect),
    mcpRemote: await stderrSummary(setup.logPaths.mcpRemote),
  };

  // The floor of any stdio start-up: Node itself starting and exiting.
  const nodeStart = await nodeStartMs(tetherEnv);
  const extraCa = process.env['NODE_EXTRA_CA_CERTS'];
  const nodeStartWithCa =
    extraCa === undefined ? undefined : await nodeStartMs({ ...tetherEnv, NODE_EXTRA_CA_CERTS: extraCa });

  progress('stdio start-up');
  // Start-up, already logged in: spawn → first tools/list answered; one unmeasured spawn each first.
  const startup: Record<'connect' | 'mcp-remote', number[]> = { connect: [], 'mcp-remote': [] };
  const spawnArgs = {
    connect: [connectArgs, tetherEnv, setup.logs.connect],
    'mcp-remote': [mcpRemoteArgs, mcpRemoteEnv, setup.logs.mcpRemote],
  } as const;
  for (let i = 0; i <= STARTUP_SPAWNS; i++) {
    for (const id of i % 2 === 0 ? (['connect', 'mcp-remote'] as const) : (['mcp-remote', 'connect'] as const)) {
      const [args, env, log] = spawnArgs[id];
      const client = new Client({ name: 'bench-proxy', version: '1.0.0' });
      const t0 = performance.now();
      try {
        await client.connect(stdio(args, env, log));
        await client.listTools();
        if (i > 0) startup[id].push(performance.now() - t0);
      } finally {
        await client.close();
      }
    }
  }

  const results = new Map<string, Summary>();
  for (const [key, tally] of tallies) results.set(key, summarize(tally));
  const result = (id: CaseId, concurrency: number): Summary => {
    const summary = results.get(`${id}@${String(concurrency)}`);
    if (summary === undefined) throw new Error(`no result for ${id} at ${String(concurrency)}`);
    return summary;
  };

  // ---- report ----
  console.log(`bench/proxy — ${machineLine()}`);
  console.log(
    `load average (1 min): ${loadBefore.toFixed(1)} at the start, ${loadAfter.toFixed(1)} after the load, on ` +
      `${String(os.cpus().length)} cores (anything above 0 is other work competing with the run)`,
  );
  const plan = LOAD.map(
    (l) => `up to ${String(l.calls)} calls at c=${String(l.concurrency)} (≤ ${String(l.roundMs / 1000)} s a round)`,
  );
  console.log(
    `tools/call whoami over loopback, the same MCP SDK client and server (the remote in its own process); per case ` +
      `${plan.join(' and ')}, ${String(ROUNDS)} interleaved rounds after a warm-up; ` +
      `the run took ${((performance.now() - started) / 1000).toFixed(0)} s\n`,
  );
  const rows: string[][] = [];
  for (const concurrency of [1, HIGH_CONCURRENCY]) {
    const base = result('direct', concurrency);
    for (const target of cases) {
      const r = result(target.id, concurrency);
      rows.push([
        target.label,
        String(concurrency),
        String(r.calls),
        String(r.errors),
        ms(r.p50),
        ms(r.p99),
        r.perSecond.toFixed(0),
        target.id === 'direct' ? '—' : ratio(r.p50 / base.p50),
        target.id === 'direct' ? '—' : ratio(r.p99 / base.p99),
        target.id === 'direct' ? '—' : ratio(r.perSecond / base.perSecond),
        r.cpuUs === undefined
          ? 'n/a'
          : `${r.cpuUs.client.toFixed(0)} / ${target.id === 'direct' ? '—' : r.cpuUs.proxy.toFixed(0)} / ${r.cpuUs.server.toFixed(0)}`,
      ]);
    }
  }
  printTable(
    [
      'path',
      'c',
      'calls',
      'errors',
      'p50 ms',
      'p99 ms',
      'calls/s',
      'p50 vs direct',
      'p99 vs direct',
      'calls/s vs direct',
      'CPU µs/call client / proxy / server',
    ],
    rows,
  );

  console.log(
    `\nstdio start-up, logged in: spawn → first tools/list answered (${String(STARTUP_SPAWNS)} spawns each)\n`,
  );
  const startupRow = (label: string, values: readonly number[]): string[] => [
    label,
    String(values.length),
    ms(median(values)),
    ms(Math.min(...values)),
    ms(Math.max(...values)),
  ];
  printTable(
    ['stdio proxy', 'spawns', 'median ms', 'min ms', 'max ms'],
    [startupRow('tether connect', startup.connect), startupRow('mcp-remote', startup['mcp-remote'])],
  );
  console.log(
    `\nfloor: \`node -e 0\` spawn → exit, median of 5: ${ms(nodeStart)} ms` +
      (nodeStartWithCa === undefined
        ? ''
        : `; with this machine's NODE_EXTRA_CA_CERTS ${ms(nodeStartWithCa)} ms (removed from every child's environment)`),
  );

  console.log(`\nresident memory: connected before any load, and after the load (the stdio proxies still connected)\n`);
  printTable(
    ['process', 'RSS MiB at rest', 'RSS MiB after the load', 'peak RSS MiB'],
    memory.map((m) => [m.label, mib(m.atRest), mib(m.rss), mib(m.peak)]),
  );

  // ---- targets ----
  const direct1 = result('direct', 1);
  const direct32 = result('direct', HIGH_CONCURRENCY);
  const p50Ratio = (id: CaseId): number => result(id, 1).p50 / direct1.p50;
  const tputRatio = (id: CaseId): number => result(id, HIGH_CONCURRENCY).perSecond / direct32.perSecond;
  const verdict = (ok: boolean): string => (ok ? 'met' : 'MISSED');
  const atMost = (value: number, limit: number): string => `${ratio(value)} ${verdict(value <= limit)}`;
  const atLeast = (value: number, limit: number): string => `${ratio(value)} ${verdict(value >= limit)}`;
  const connectStart = median(startup.connect);
  const mcpRemoteStart = median(startup['mcp-remote']);
  const rssLine = (m: { rss?: number }): string =>
    m.rss === undefined ? 'n/a' : `${m.rss.toFixed(1)} MiB ${verdict(m.rss < TARGETS.rssMiB)}`;
  const [workloadMemory, connectMemory, mcpRemoteMemory] = memory;
  console.log('\ntargets (tether; mcp-remote against the same bar, for comparison):');
  console.log(`- HTTP proxy p50 at c=1 ≤ ×${TARGETS.httpP50} of direct: ${atMost(p50Ratio('http'), TARGETS.httpP50)}`);
  console.log(
    `- HTTP proxy throughput at c=${String(HIGH_CONCURRENCY)} ≥ ×${TARGETS.httpThroughput} of direct: ` +
      atLeast(tputRatio('http'), TARGETS.httpThroughput),
  );
  console.log(
    `- stdio p50 at c=1 ≤ ×${TARGETS.stdioP50} of direct: tether connect ${atMost(p50Ratio('connect'), TARGETS.stdioP50)}; ` +
      `mcp-remote ${atMost(p50Ratio('mcp-remote'), TARGETS.stdioP50)}`,
  );
  console.log(
    `- stdio throughput at c=${String(HIGH_CONCURRENCY)} ≥ ×${TARGETS.stdioThroughput} of direct: ` +
      `tether connect ${atLeast(tputRatio('connect'), TARGETS.stdioThroughput)}; ` +
      `mcp-remote ${atLeast(tputRatio('mcp-remote'), TARGETS.stdioThroughput)}`,
  );
  console.log(
    `- stdio start-up < ${String(TARGETS.startupMs)} ms: tether connect ${ms(connectStart)} ms ${verdict(connectStart < TARGETS.startupMs)}; ` +
      `mcp-remote ${ms(mcpRemoteStart)} ms ${verdict(mcpRemoteStart < TARGETS.startupMs)}`,
  );
  console.log(
    `- RSS after the load < ${String(TARGETS.rssMiB)} MiB: tether workload ${rssLine(workloadMemory ?? {})}; ` +
      `tether connect ${rssLine(connectMemory ?? {})}; mcp-remote ${rssLine(mcpRemoteMemory ?? {})}`,
  );
  const stderrLine = (name: string, summary: { lines: number; leakWarnings: number }): string =>
    `${name} ${String(summary.lines)} lines` +
    (summary.leakWarnings > 0 ? ` (${String(summary.leakWarnings)} MaxListenersExceededWarning)` : '');
  console.log(
    `\nstderr during the load: ${stderrLine('tether connect', stderrDuringLoad.connect)}; ` +
      stderrLine('mcp-remote', stderrDuringLoad.mcpRemote),
  );
  console.log(
    '\nColumns: p50/p99 over the successful calls of all rounds; calls/s = successful calls over the time the case ' +
      'ran; CPU µs/call = CPU time (user + system) per call of the load generator, of the proxy process(es) ' +
      '(tether connect: bridge + workload) and of the remote (authorization server + MCP server).',
  );
}

/** Lines a stdio proxy wrote to its stderr so far, and how many were MaxListenersExceededWarnings. */
async function stderrSummary(file: string): Promise<{ lines: number; leakWarnings: number }> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  return {
    lines: lines.length,
    leakWarnings: lines.filter((line) => line.includes('MaxListenersExceededWarning')).length,
  };
}

/** Median of 5: `node -e 0` from spawn to exit, with `env`. */
async function nodeStartMs(env: Record<string, string>): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await new Promise<void>((resolve, reject) => {
      const child = spawn(process.execPath, ['-e', '0'], { env, stdio: 'ignore' });
      child.once('error', reject);
      child.once('exit', () => {
        resolve();
      });
    });
    times.push(performance.now() - t0);
  }
  return median(times);
}

/** Starts mcp-remote once, completes its browser login with the stand-in user, checks it serves, closes it. */
async function loginMcpRemote(remote: RemoteProcess, args: readonly string[], env: Record<string, string>) {
  const transport = new StdioClientTransport({ command: process.execPath, args: [...args], env, stderr: 'pipe' });
  let stderr = '';
  let login: Promise<void> | undefined;
  transport.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
    const url = /Please authorize this client by visiting:\s*(https?:\/\/\S+)/.exec(stderr)?.[1];
    if (url !== undefined && login === undefined) login = remote.login(url);
  });
  try {
    const client = await connectClient(transport, 'mcp-remote (login)');
    if (login === undefined) throw new Error('mcp-remote connected without a login: is its config dir fresh?');
    await login;
    await client.close();
  } catch (error) {
    await transport.close().catch(() => undefined);
    const tail = stderr.slice(-2_000).replace(/\?\S*/g, '?…');
    throw new Error(`mcp-remote's login failed: ${error instanceof Error ? error.message : String(error)}\n${tail}`);
  }
}

if (process.argv[2] === REMOTE_ROLE) {
  await serveRemote();
} else {
  await main();
}
