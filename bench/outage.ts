/**
 * bench/outage — tether against mcp-remote through real token-endpoint outages, every process on loopback.
 *
 * For each scenario and each tool there is a lane: a remote of its own (src/demo/remote.ts: oidc-provider
 * behind a fault proxy, and the MCP SDK's server with a `whoami` tool), the tool logged in once, and an MCP
 * client calling `whoami` once a second (one call at a time, 10 s timeout):
 *
 * - tether: `tether run` from the built CLI (a temporary TETHER_HOME, TETHER_STORE_KEY=file, the keeper's
 *   retry timings set through its TETHER_TOKEN_* variables: its defaults in the full run, halved in the quick
 *   one); the client is the SDK's `Client` over Streamable HTTP to the workload's local URL.
 * - mcp-remote: `node_modules/.bin/mcp-remote URL PORT`, spawned by the SDK's `StdioClientTransport`
 *   (MCP_REMOTE_CONFIG_DIR temporary); the client is the SDK's `Client` over stdio.
 *
 * Whatever browser either tool opens is a recorder script ($BROWSER, and `xdg-open` first on PATH), so every
 * browser prompt is counted. The first one (the initial login) is completed by the remote's stand-in user
 * (`remote.completeLogin`); later ones are counted and left alone, as when nobody is at the keyboard.
 *
 * Tokens live 120 s (70 s with --quick), so that the outage covers both tools' refresh points; see FULL.
 * A fault is switched on at the token endpoint before either tool's first refresh, kept well past the first
 * token's expiry, then cleared. All lanes run at once, each against its own remote. Prints a header, a
 * Markdown table and what happened, and writes an SVG timeline of the origin scenario (default
 * docs/outage.svg; `--json PATH` also writes every lane's raw record). Everything started is removed at
 * the end, also on failure and on Ctrl-C. About 4.5 minutes (--quick: 2.5).
 *
 *   npx tsx bench/outage.ts [--quick] [--svg PATH] [--json PATH]     (npm run build first: tether runs from dist/)
 */
import { chmodSync, existsSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { formatDuration } from '../src/config/duration.js';
import { DEFAULT_KEEPER_CONFIG, KEEPER_ENV, type KeeperConfig } from '../src/config/keeper-config.js';
import { CLI_ENTRY, TetherCli } from '../src/demo/cli.js';
import type { FaultProxy, RecordedTokenRequest } from '../src/demo/fault-proxy.js';
import type { Remote } from '../src/demo/remote.js';
import { readEvents } from '../src/workloads/events.js';
import { WorkloadFiles } from '../src/workloads/files.js';
import { effectiveStatus, isWorkloadProcess, readStatus } from '../src/workloads/status.js';
import { machineLine, printTable } from './table.js';
import { failureRecordingFetch } from '../src/demo/story.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DEFAULT_SVG = path.join(ROOT, 'docs', 'outage.svg');
const MCP_REMOTE_BIN = path.join(ROOT, 'node_modules', '.bin', 'mcp-remote');
/** How long a `whoami` call may take before the client gives up on it. */
const CALL_TIMEOUT_MS = 10_000;
/** How long a tool has to log in and serve its first call. */
const START_TIMEOUT_MS = 90_000;
/** The tether status file is read this often. */
const STATUS_POLL_MS = 250;

type Tool = 'tether' | 'mcp-remote';
const TOOLS: readonly Tool[] = ['tether', 'mcp-remote'];

/** The time compression of a run. */
export interface Timing {
  readonly mode: 'full' | 'quick';
  /** Lifetime of the remote's access tokens. */
  readonly ttlSeconds: number;
  /** From the login (the first token issued) to the start of the outage. */
  readonly outageOffsetMs: number;
  readonly outageMs: number;
  /** Longest wait after the outage for a successful call. */
  readonly afterMaxMs: number;
  /** How long a lane goes on after its first successful call after the outage. */
  readonly settleMs: number;
  /** tether's retry timings are its defaults times this. */
  readonly keeperFactor: number;
  readonly retryAfterSeconds: number;
}

/**
 * The full run compresses only the token's lifetime: the outage lasts the origin report's 3 minutes, and both
 * tools keep their own timings. Tokens must outlive mcp-remote's fixed 60 s refresh margin
 * (TOKEN_EXPIRY_MARGIN_MS in its source): with a shorter lifetime it would refresh on every request. The
 * outage starts before either tool's first refresh (mcp-remote: 60 s before expiry; tether: at 75% ±5% of
 * the lifetime) and ends well after the token expired. The quick run also halves the outage and tether's
 * timings (mcp-remote's cannot be changed).
 */
const FULL: Timing = {
  mode: 'full',
  ttlSeconds: 120,
  outageOffsetMs: 50_000,
  outageMs: 180_000,
  afterMaxMs: 60_000,
  settleMs: 10_000,
  keeperFactor: 1,
  retryAfterSeconds: 30,
};
const QUICK: Timing = {
  mode: 'quick',
  ttlSeconds: 70,
  outageOffsetMs: 8_000,
  outageMs: 90_000,
  afterMaxMs: 30_000,
  settleMs: 5_000,
  keeperFactor: 0.5,
  retryAfterSeconds: 15,
};

export interface Scenario {
  readonly id: 'origin' | 'storm' | 'rate-limit' | 'reset';
  readonly title: string;
  describe(timing: Timing): string;
  /** Switches the fault on; returns what switches it off. */
  begin(faults: FaultProxy, timing: Timing): () => void;
}

const STORM_STATUSES = [500, 502, 503, 504] as const;
const STORM_STEP_MS = 2_000;

export const SCENARIOS: readonly Scenario[] = [
  {
    id: 'origin',
    title: '403 + HTML (WAF)',
    describe: () => 'the token endpoint answers 403 with an HTML block page, as in the origin bug report',
    begin(faults) {
      faults.setFault({ kind: 'waf_403' }, 'token');
      return () => {
        faults.setFault(undefined);
      };
    },
  },
  {
    id: 'storm',
    title: '5xx storm',
    describe: () =>
      `the token endpoint answers ${STORM_STATUSES.join(', ')} in turn (HTML bodies), changing every ${String(STORM_STEP_MS / 1000)} s`,
    begin(faults) {
      let step = 0;
      const next = (): void => {
        faults.setFault({ kind: 'server_error', status: STORM_STATUSES[step % STORM_STATUSES.length] ?? 503 }, 'token');
        step += 1;
      };
      next();
      const timer = setInterval(next, STORM_STEP_MS);
      return () => {
        clearInterval(timer);
        faults.setFault(undefined);
      };
    },
  },
  {
    id: 'rate-limit',
    title: '429 + Retry-After',
    describe: (timing) =>
      `the token endpoint answers 429 with Retry-After: ${String(timing.retryAfterSeconds)} (an HTML body)`,
    begin(faults, timing) {
      faults.setFault({ kind: 'rate_limited', retryAfter: String(timing.retryAfterSeconds) }, 'token');
      return () => {
        faults.setFault(undefined);
      };
    },
  },
  {
    id: 'reset',
    title: 'connection reset',
    describe: () =>
      'every request to the authorization server (metadata and token alike) is reset (TCP RST, no answer); ' +
      'a refused connection cannot be made without closing the fault proxy’s port, so a reset stands in for it',
    begin(faults) {
      faults.setFault({ kind: 'reset' }, 'all');
      return () => {
        faults.setFault(undefined);
      };
    },
  },
];

/** One `whoami` call. Times are `Date.now()`. */
interface CallRecord {
  readonly start: number;
  readonly end: number;
  readonly ok: boolean;
  /** `ok`, or what the failure was, without per-call values. */
  readonly kind: string;
}

interface StatusSample {
  readonly at: number;
  readonly status: string;
  readonly refresh: string;
}

interface Prompt {
  readonly at: number;
  readonly url: string;
}

/** A refresh attempt: tether's from its event log, mcp-remote's from the token requests the remote saw. */
interface Attempt {
  readonly at: number;
  readonly ok: boolean;
}

export interface LaneResult {
  readonly tool: Tool;
  readonly scenario: Scenario;
  /** When the tool was started, and when the client was connected to it (the login in between). */
  readonly spawned: number | undefined;
  readonly ready: number | undefined;
  /** When the first token was issued (the authorization-code exchange the remote answered). */
  readonly login: number | undefined;
  readonly outageStart: number | undefined;
  readonly outageEnd: number | undefined;
  readonly end: number;
  readonly calls: readonly CallRecord[];
  readonly prompts: readonly Prompt[];
  readonly tokenRequests: readonly RecordedTokenRequest[];
  readonly statuses: readonly StatusSample[];
  readonly attempts: readonly Attempt[];
  readonly error: string | undefined;
  /** Problems cleaning up, and other remarks. */
  readonly notes: readonly string[];
}

// ---- everything started, for the last-resort clean-up ---------------------------------------------------

/** Processes and directories started by any lane, killed and removed at once by a second Ctrl-C. */
const started = {
  pids: new Set<number>(),
  dirs: new Set<string>(),
  killNow(): void {
    for (const pid of this.pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
  },
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---- a lane ---------------------------------------------------------------------------------------------

/** The environment every tool starts from: no proxies (all peers are on loopback), no desktop, no settings. */
function baseEnv(): Record<string, string> {
  const dropped = new Set<string>([
    ...KEEPER_ENV.flatMap((v) => [v.name, v.alias]),
    'TETHER_HOME',
    'TETHER_STORE_KEY',
    'MCP_REMOTE_CONFIG_DIR',
    'BROWSER',
    'DISPLAY',
    'WAYLAND_DISPLAY',
    'XDG_CURRENT_DESKTOP',
    'XDG_SESSION_DESKTOP',
    'DESKTOP_SESSION',
    'KDE_FULL_SESSION',
    'GNOME_DESKTOP_SESSION_ID',
  ]);
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || dropped.has(key) || /^(https?|all|no)_proxy$/i.test(key)) continue;
    env[key] = value;
  }
  return env;
}

/** tether's keeper timings for this run: its defaults times the factor (the count and the ceiling kept). */
function keeperSettings(timing: Timing): Record<keyof KeeperConfig, string> {
  const scaled = (ms: number): string => `${String(Math.round(ms * timing.keeperFactor))}ms`;
  const d = DEFAULT_KEEPER_CONFIG;
  return {
    initialRetryInterval: scaled(d.initialRetryInterval),
    maxRetryInterval: scaled(d.maxRetryInterval),
    maxTries: String(d.maxTries),
    maxElapsed: scaled(d.maxElapsed),
    tickInterval: scaled(d.tickInterval),
    ceiling: `${String(d.ceiling)}ms`,
    probeMinInterval: scaled(d.probeMinInterval),
    demandWait: scaled(d.demandWait),
  };
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  if (address === null || typeof address === 'string') throw new Error('no free port');
  return address.port;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

class Lane {
  readonly tool: Tool;
  readonly scenario: Scenario;
  readonly #timing: Timing;
  readonly #signal: AbortSignal;
  /** Ends the lane's background loops (calls, status, prompts). */
  readonly #loops = new AbortController();
  readonly #background: Promise<unknown>[] = [];
  readonly #cleanups: (() => Promise<void>)[] = [];
  readonly #notes: string[] = [];
  readonly #calls: CallRecord[] = [];
  readonly #prompts: Prompt[] = [];
  readonly #statuses: StatusSample[] = [];
  #attempts: Attempt[] = [];
  #remote: Remote | undefined;
  #dir = '';
  #spawned: number | undefined;
  #ready: number | undefined;
  #login: number | undefined;
  #outageStart: number | undefined;
  #outageEnd: number | undefined;
  #error: string | undefined;
  /** The tail of the tool's own output, for when it fails. */
  #output = '';
  /** What a failed call got, without per-call values (tether's client knows the local endpoint's answer). */
  #describeFailure: (error: unknown) => string = describeError;

  constructor(tool: Tool, scenario: Scenario, timing: Timing, signal: AbortSignal) {
    this.tool = tool;
    this.scenario = scenario;
    this.#timing = timing;
    this.#signal = signal;
  }

  get name(): string {
    return `${this.tool}/${this.scenario.id}`;
  }

  async run(): Promise<LaneResult> {
    try {
      await this.#run();
    } catch (error) {
      this.#error = this.#signal.aborted ? 'interrupted' : message(error);
      const tail = this.#output.trim().split('\n').slice(-8).join('\n');
      if (!this.#signal.aborted && tail !== '') this.#notes.push(`last output of ${this.tool}:\n${tail}`);
    }
    this.#loops.abort();
    await Promise.allSettled(this.#background);
    const end = Date.now();
    for (const cleanup of this.#cleanups.reverse()) {
      await cleanup().catch((error: unknown) => {
        this.#notes.push(`clean-up: ${message(error)}`);
      });
    }
    return {
      tool: this.tool,
      scenario: this.scenario,
      spawned: this.#spawned,
      ready: this.#ready,
      login: this.#login,
      outageStart: this.#outageStart,
      outageEnd: this.#outageEnd,
      end,
      calls: this.#calls,
      prompts: this.#prompts,
      tokenRequests: [...(this.#remote?.faults.tokenRequests ?? [])],
      statuses: this.#statuses,
      attempts: this.#attempts,
      error: this.#error,
      notes: this.#notes,
    };
  }

  async #run(): Promise<void> {
    const { startRemote } = await import('../src/demo/remote.js');
    const remote = await startRemote({ accessTokenTtlSeconds: this.#timing.ttlSeconds });
    this.#remote = remote;
    this.#cleanups.push(() => remote.close());

    this.#dir = await mkdtemp(path.join(os.tmpdir(), `tether-outage-${this.tool}-`));
    const dir = this.#dir;
    started.dirs.add(dir);
    this.#cleanups.push(async () => {
      await rm(dir, { recursive: true, force: true });
      started.dirs.delete(dir);
    });
    const browser = await this.#recorder(dir);
    this.#background.push(this.#watchPrompts(browser.log, remote));

    this.#spawned = Date.now();
    const client =
      this.tool === 'tether' ? await this.#startTether(remote, browser) : await this.#startMcpRemote(remote, browser);
    this.#ready = Date.now();
    this.#login = remote.faults.tokenRequests.find((r) => r.grantType === 'authorization_code' && r.status === 200)?.at;
    if (this.#login === undefined) throw new Error('no authorization-code exchange reached the remote');
    this.#background.push(this.#callLoop(client));

    // The outage.
    await this.#sleepUntil(this.#login + this.#timing.outageOffsetMs);
    const stop = this.scenario.begin(remote.faults, this.#timing);
    this.#outageStart = Date.now();
    try {
      await this.#sleepUntil(this.#outageStart + this.#timing.outageMs);
    } finally {
      stop();
    }
    this.#outageEnd = Date.now();

    // After it: until a successful call (and a little more), or the bounded wait.
    const outageEnd = this.#outageEnd;
    const deadline = outageEnd + this.#timing.afterMaxMs;
    for (;;) {
      const firstOk = this.#calls.find((c) => c.ok && c.start >= outageEnd);
      if (firstOk !== undefined && Date.now() >= firstOk.end + this.#timing.settleMs) break;
      if (Date.now() >= deadline) break;
      await sleep(200, undefined, { signal: this.#signal });
    }
  }

  async #sleepUntil(at: number): Promise<void> {
    await sleep(Math.max(0, at - Date.now()), undefined, { signal: this.#signal });
  }

  /** A browser that records the URL it is asked to open: `$BROWSER`, and `xdg-open` first on PATH. */
  async #recorder(dir: string): Promise<{ script: string; bin: string; log: string }> {
    const bin = path.join(dir, 'bin');
    await mkdir(bin);
    const log = path.join(dir, 'browser-prompts.log');
    const body = `#!/bin/sh\n# bench/outage: a browser that only records the URL it is asked to open\nprintf '%s\\n' "$1" >> '${log}'\nexit 0\n`;
    const script = path.join(bin, 'record-browser');
    for (const file of [script, path.join(bin, 'xdg-open')]) {
      await writeFile(file, body);
      chmodSync(file, 0o755);
    }
    return { script, bin, log };
  }

  /** Counts every browser prompt; the first (the initial login) is completed by the remote's stand-in user. */
  async #watchPrompts(log: string, remote: Remote): Promise<void> {
    const signal = this.#loops.signal;
    while (!signal.aborted) {
      const text = await readFile(log, 'utf8').catch(() => '');
      const urls = text.split('\n').filter((line) => line.trim() !== '');
      for (const url of urls.slice(this.#prompts.length)) {
        this.#prompts.push({ at: Date.now(), url });
        if (this.#prompts.length === 1) {
          remote.completeLogin(url).catch((error: unknown) => {
            this.#notes.push(`the stand-in user could not complete the login: ${message(error)}`);
          });
        }
      }
      await sleep(100, undefined, { signal }).catch(() => undefined);
    }
  }

  // ---- tether -------------------------------------------------------------------------------------------

  async #startTether(remote: Remote, browser: { script: string; bin: string }): Promise<Client> {
    const env: Record<string, string> = baseEnv();
    const settings = keeperSettings(this.#timing);
    for (const variable of KEEPER_ENV) env[variable.name] = settings[variable.key];
    env['TETHER_HOME'] = path.join(this.#dir, 'home');
    env['TETHER_STORE_KEY'] = 'file';
    env['BROWSER'] = browser.script;
    env['PATH'] = `${browser.bin}${path.delimiter}${env['PATH'] ?? ''}`;
    // No remote given: the CLI does not complete the login itself; the browser prompt (the recorder) does.
    const cli = new TetherCli(env);
    const name = `outage-${this.scenario.id}`;
    const files = new WorkloadFiles(env['TETHER_HOME'], name);
    let pid: number | undefined;
    this.#cleanups.push(async () => {
      if (!existsSync(files.dir)) return;
      const status = await readStatus(files).catch(() => undefined);
      pid ??= status?.pid;
      const removed = await this.#cli(cli, ['rm', name], 30_000);
      if (removed.code !== 0)
        this.#notes.push(`tether rm ${name} exited ${String(removed.code)}: ${removed.stderr.trim()}`);
      if (pid !== undefined && isWorkloadProcess(pid, name)) {
        process.kill(pid, 'SIGKILL');
        this.#notes.push(`the workload process (pid ${String(pid)}) had to be killed`);
      }
      if (pid !== undefined) started.pids.delete(pid);
    });

    const result = await this.#cli(cli, ['run', remote.mcpUrl, '--name', name], START_TIMEOUT_MS);
    this.#output += result.stderr;
    if (result.code !== 0) throw new Error(`tether run exited with ${String(result.code)}`);
    const status = await readStatus(files);
    if (status?.proxyUrl === undefined || status.pid === undefined) throw new Error('tether run wrote no local URL');
    pid = status.pid;
    started.pids.add(pid);
    this.#background.push(this.#watchStatus(files));

    let lastFailure: string | undefined;
    const recordingFetch = failureRecordingFetch((answer) => {
      lastFailure = `${String(answer.status)} ${answer.error ?? 'error'}`;
    });
    const client = new Client({ name: 'bench-outage', version: '1.0.0' });
    client.onerror = () => undefined; // failures are recorded per call
    const transport = new StreamableHTTPClientTransport(new URL(status.proxyUrl), { fetch: recordingFetch });
    await client.connect(transport, { timeout: CALL_TIMEOUT_MS });
    this.#cleanups.push(() => client.close().catch(() => undefined));
    this.#describeFailure = (error) => {
      const failure = lastFailure;
      lastFailure = undefined;
      if (error instanceof StreamableHTTPError && failure !== undefined) return failure;
      return describeError(error);
    };
    return client;
  }

  async #watchStatus(files: WorkloadFiles): Promise<void> {
    const signal = this.#loops.signal;
    while (!signal.aborted) {
      const read = await readStatus(files).catch(() => undefined);
      if (read !== undefined) {
        const status = effectiveStatus(read);
        const last = this.#statuses.at(-1);
        if (last?.status !== status.status || last.refresh !== status.refresh.state) {
          // The file says when the change happened: the status since `statusSince`, a failing refresh since
          // `refresh.failingSince`; the time it was read is only the fallback.
          const now = Date.now();
          const stated =
            last?.status !== status.status
              ? Date.parse(status.statusSince)
              : status.refresh.failingSince === undefined
                ? now
                : Date.parse(status.refresh.failingSince);
          const at = Number.isFinite(stated) && stated <= now ? Math.max(stated, last?.at ?? 0) : now;
          this.#statuses.push({ at, status: status.status, refresh: status.refresh.state });
        }
      }
      await sleep(STATUS_POLL_MS, undefined, { signal }).catch(() => undefined);
    }
    // The attempts, from the event log, before the workload is removed.
    const records = await readEvents(files).catch(() => []);
    this.#attempts = records.flatMap((r) =>
      r.type === 'attempt' ? [{ at: Date.parse(r.time), ok: r.outcome === 'success' }] : [],
    );
  }

  /** Runs the CLI to its end (killed after `timeoutMs`). */
  async #cli(cli: TetherCli, args: readonly string[], timeoutMs: number): Promise<CliRun> {
    const child = cli.spawn(args);
    let stdout = '';
    let stderr = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, timeoutMs);
    const onAbort = (): void => {
      child.kill('SIGINT');
    };
    this.#signal.addEventListener('abort', onAbort, { once: true });
    try {
      const code = await new Promise<number>((resolve, reject) => {
        child.once('error', reject);
        child.once('close', (exit) => {
          resolve(exit ?? -1);
        });
      });
      return { code, stdout, stderr };
    } finally {
      clearTimeout(timer);
      this.#signal.removeEventListener('abort', onAbort);
    }
  }

  // ---- mcp-remote ---------------------------------------------------------------------------------------

  async #startMcpRemote(remote: Remote, browser: { script: string; bin: string }): Promise<Client> {
    const env: Record<string, string> = baseEnv();
    env['MCP_REMOTE_CONFIG_DIR'] = path.join(this.#dir, 'mcp-auth');
    env['BROWSER'] = browser.script;
    env['PATH'] = `${browser.bin}${path.delimiter}${env['PATH'] ?? ''}`;
    const port = await freePort();
    // The stand-in user's browser stops at `/callback`; 127.0.0.1 rather than `localhost` as the redirect host.
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [
        realpathSync(MCP_REMOTE_BIN),
        remote.mcpUrl,
        String(port),
        '--host',
        '127.0.0.1',
        '--callback-path',
        '/callback',
      ],
      env,
      stderr: 'pipe',
    });
    transport.stderr?.on('data', (chunk: Buffer) => {
      this.#output = (this.#output + chunk.toString('utf8')).slice(-20_000);
    });
    const client = new Client({ name: 'bench-outage', version: '1.0.0' });
    client.onerror = () => undefined;
    this.#cleanups.push(async () => {
      const pid = transport.pid ?? undefined;
      await client.close().catch(() => undefined);
      if (pid !== undefined) {
        await sleep(500);
        if (alive(pid)) {
          process.kill(pid, 'SIGKILL');
          this.#notes.push(`mcp-remote (pid ${String(pid)}) had to be killed`);
        }
        started.pids.delete(pid);
      }
    });
    const connecting = client.connect(transport, { timeout: START_TIMEOUT_MS });
    const pid = transport.pid;
    if (pid !== null) started.pids.add(pid);
    await connecting;
    this.#describeFailure = describeError;
    return client;
  }

  // ---- the client ---------------------------------------------------------------------------------------

  async #callLoop(client: Client): Promise<void> {
    const signal = this.#loops.signal;
    while (!signal.aborted) {
      const start = Date.now();
      let ok = false;
      let kind: string;
      try {
        const result = await client.callTool({ name: 'whoami' }, undefined, { timeout: CALL_TIMEOUT_MS });
        ok = (result as { isError?: unknown }).isError !== true;
        kind = ok ? 'ok' : 'tool error';
      } catch (error) {
        kind = this.#describeFailure(error);
      }
      if (this.#loops.signal.aborted) return; // a call cut short by the end of the lane is not counted
      this.#calls.push({ start, end: Date.now(), ok, kind });
      await sleep(Math.max(0, 1000 - (Date.now() - start)), undefined, { signal }).catch(() => undefined);
    }
  }
}

interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** A failed call, without per-call values. */
function describeError(error: unknown): string {
  const text = message(error);
  if (/request timed out/i.test(text)) return `no answer within ${String(CALL_TIMEOUT_MS / 1000)} s`;
  if (/not connected|connection closed/i.test(text)) return 'connection closed';
  if (/unauthorized/i.test(text)) return 'unauthorized';
  const mcpRemote = /mcp-remote: ([^,:]+)/.exec(text);
  if (mcpRemote?.[1] !== undefined) return `mcp-remote: ${mcpRemote[1].trim()}`;
  return text.replace(/^MCP error -?\d+: /, '').slice(0, 60);
}

// ---- measures -------------------------------------------------------------------------------------------

interface Measures {
  readonly ok: number;
  readonly failed: number;
  /** Failure kinds and their counts. */
  readonly kinds: ReadonlyMap<string, number>;
  /** Seconds in which the client got no answer: from a failed call's start to the end of the next ok call. */
  readonly unservedMs: number;
  /** The last failure was never followed by a success. */
  readonly unservedOpen: boolean;
  /** Prompts after the initial login. */
  readonly prompts: number;
  /** From the outage's end to the end of the first successful call started after it. */
  readonly recoveryMs: number | undefined;
  readonly waitedMs: number;
  readonly requestsDuring: number;
  readonly requestsTotal: number;
  readonly states: readonly string[];
  /** tether: failed calls that started while its status file said `running`. */
  readonly failedWhileRunning: number;
}

function measure(lane: LaneResult): Measures {
  const calls = lane.calls;
  const failed = calls.filter((c) => !c.ok);
  const kinds = new Map<string, number>();
  for (const call of failed) kinds.set(call.kind, (kinds.get(call.kind) ?? 0) + 1);
  let unservedMs = 0;
  let gapStart: number | undefined;
  for (const call of calls) {
    if (!call.ok) gapStart ??= call.start;
    else if (gapStart !== undefined) {
      unservedMs += call.end - gapStart;
      gapStart = undefined;
    }
  }
  const lastCall = calls.at(-1);
  if (gapStart !== undefined && lastCall !== undefined) unservedMs += lastCall.end - gapStart;
  const { outageStart, outageEnd } = lane;
  const firstOk = outageEnd === undefined ? undefined : calls.find((c) => c.ok && c.start >= outageEnd);
  const during =
    outageStart === undefined || outageEnd === undefined
      ? []
      : lane.tokenRequests.filter((r) => r.at >= outageStart && r.at <= outageEnd);
  const statusAt = (at: number): string | undefined => lane.statuses.filter((s) => s.at <= at).at(-1)?.status;
  return {
    ok: calls.length - failed.length,
    failed: failed.length,
    kinds,
    unservedMs,
    unservedOpen: gapStart !== undefined,
    prompts: Math.max(0, lane.prompts.length - 1),
    recoveryMs: firstOk === undefined || outageEnd === undefined ? undefined : firstOk.end - outageEnd,
    waitedMs: outageEnd === undefined ? 0 : lane.end - outageEnd,
    requestsDuring: during.length,
    requestsTotal: lane.tokenRequests.length,
    states: dedupe(
      lane.tool === 'tether' ? lane.statuses.map((s) => s.status) : mcpRemoteStates(lane).map((s) => s.state),
    ),
    failedWhileRunning: lane.tool === 'tether' ? failed.filter((c) => statusAt(c.start) === 'running').length : 0,
  };
}

function dedupe(values: readonly string[]): string[] {
  return values.filter((v, i) => i === 0 || v !== values[i - 1]);
}

type McpRemoteState = 'serving' | 'failing' | 'needs browser login';

/**
 * mcp-remote has no status: it is derived from what the client saw. `serving` after a successful call,
 * `failing` after a failed one, `needs browser login` from a browser prompt (after the initial login) until
 * the next successful call.
 */
function mcpRemoteStates(lane: LaneResult): { at: number; state: McpRemoteState }[] {
  const events = [
    ...lane.calls.map((c) => ({ at: c.end, kind: c.ok ? ('ok' as const) : ('failed' as const) })),
    ...lane.prompts.slice(1).map((p) => ({ at: p.at, kind: 'prompt' as const })),
  ].sort((a, b) => a.at - b.at);
  const states: { at: number; state: McpRemoteState }[] = [];
  let prompted = false;
  for (const event of events) {
    let state: McpRemoteState;
    if (event.kind === 'ok') {
      prompted = false;
      state = 'serving';
    } else if (event.kind === 'prompt') {
      prompted = true;
      state = 'needs browser login';
    } else {
      state = prompted ? 'needs browser login' : 'failing';
    }
    if (states.at(-1)?.state !== state) states.push({ at: event.at, state });
  }
  return states;
}

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

function describeKinds(kinds: ReadonlyMap<string, number>): string {
  return [...kinds]
    .sort((a, b) => b[1] - a[1])
    .map(([kind, n]) => `${String(n)} × ${kind}`)
    .join(', ');
}

// ---- the report -----------------------------------------------------------------------------------------

function version(pkg: string): string {
  try {
    const json = JSON.parse(readFileSync(path.join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as {
      version?: unknown;
    };
    return typeof json.version === 'string' ? json.version : '?';
  } catch {
    return '?';
  }
}

function printHeader(timing: Timing): void {
  const k = keeperSettings(timing);
  const ttl = timing.ttlSeconds;
  const earliestTether = Math.round(0.7 * ttl);
  const latestTether = Math.round(0.8 * ttl);
  console.log(`bench/outage — tether vs. mcp-remote ${version('mcp-remote')} through token-endpoint outages`);
  console.log(`machine: ${machineLine()}; ${os.platform()} ${os.release()}`);
  console.log(
    `run: ${timing.mode}${timing.mode === 'full' ? ' (--quick for a shorter one)' : ''}, started ${new Date().toISOString()}; MCP SDK ${version('@modelcontextprotocol/sdk')}`,
  );
  console.log('');
  const factor = timing.keeperFactor === 1 ? '' : ` × ${String(timing.keeperFactor)}`;
  console.log('Time compression:');
  console.log(
    `- access tokens live ${String(ttl)} s, not the usual 1 h: that places the outage over both tools' refresh points. mcp-remote's`,
  );
  console.log(
    `  refresh margin is fixed at 60 s, so tokens must live longer; it refreshes from ${String(ttl - 60)} s after the login, tether at`,
  );
  console.log(
    `  75% ±5% (${String(earliestTether)}–${String(latestTether)} s), and tether stops sending a token min(60 s, 10% of its life) = ${String(Math.min(60, ttl / 10))} s before it expires.`,
  );
  console.log(
    `- each outage starts ${seconds(timing.outageOffsetMs)} after the login, before either tool's first refresh, lasts ${seconds(timing.outageMs)}` +
      (timing.outageMs === 180_000
        ? " (the origin report's 3 min)"
        : ` (the origin report's 3 min × ${String(timing.outageMs / 180_000)})`),
  );
  console.log(
    `  and ends ${seconds(timing.outageOffsetMs + timing.outageMs - ttl * 1000)} after the first token's expiry.`,
  );
  console.log(
    `- tether's retry timings are its defaults${factor}, set through TETHER_TOKEN_*: first retry ${formatDuration(parseMs(k.initialRetryInterval))}, at most ${formatDuration(parseMs(k.maxRetryInterval))} apart,`,
  );
  console.log(
    `  ${k.maxTries} tries or ${formatDuration(parseMs(k.maxElapsed))} in the short tier, slow tier capped at ${formatDuration(parseMs(k.tickInterval))}, probe gap ${formatDuration(parseMs(k.probeMinInterval))}, a request waits ≤ ${formatDuration(parseMs(k.demandWait))}.`,
  );
  console.log(
    '- mcp-remote has no such settings: its refresh margin (60 s) and its wait for a browser sign-in run in real time.',
  );
  console.log(
    `- the client calls whoami once a second, one call at a time (a call that hangs delays the next; ${String(CALL_TIMEOUT_MS / 1000)} s timeout).`,
  );
  console.log(
    `- after the outage each lane waits for a successful call (then ${seconds(timing.settleMs)} more), at most ${seconds(timing.afterMaxMs)}.`,
  );
  console.log('All lanes (4 scenarios × 2 tools) run at once, each against a remote of its own.');
  console.log('');
}

function parseMs(value: string): number {
  return Number(value.replace(/ms$/, ''));
}

function printTableOf(results: readonly LaneResult[]): void {
  const rows = results.map((lane) => {
    const m = measure(lane);
    if (lane.error !== undefined && lane.outageEnd === undefined) {
      return [lane.scenario.title, lane.tool, `failed: ${lane.error.slice(0, 40)}`, '', '', '', '', ''];
    }
    return [
      lane.scenario.title,
      lane.tool,
      `${String(m.ok)} / ${String(m.failed)}`,
      `${(m.unservedMs / 1000).toFixed(0)} s${m.unservedOpen ? ' (still)' : ''}`,
      String(m.prompts),
      m.recoveryMs === undefined ? `never (${(m.waitedMs / 1000).toFixed(0)} s)` : seconds(m.recoveryMs),
      `${String(m.requestsDuring)} / ${String(m.requestsTotal)}`,
      m.states.join(' → '),
    ];
  });
  printTable(
    [
      'scenario',
      'tool',
      'calls ok / failed',
      'without service',
      'browser prompts',
      'restored → 1st ok call',
      'token requests (outage / total)',
      'states seen',
    ],
    rows,
  );
  console.log('');
  console.log(
    'Columns: "without service" sums the time from a failed call\'s start to the end of the next successful one; ' +
      '"browser prompts" counts those after the initial login (which the stand-in user completed), left unanswered; ' +
      '"restored → 1st ok call" runs from the fault being cleared to the end of the first successful call started ' +
      'after it ("never": none within the wait shown); "token requests" are those the remote\'s token endpoint saw ' +
      '(total: from the login to the end, the login\'s own exchange included); "states seen": tether\'s status file, ' +
      "read every 250 ms; mcp-remote's derived from the calls (serving / failing) and the prompts (needs browser login).",
  );
  console.log('');
}

function printScenarios(timing: Timing): void {
  console.log("Scenarios (switched on at the remote's fault proxy, in front of the authorization server):");
  for (const scenario of SCENARIOS) console.log(`- ${scenario.title}: ${scenario.describe(timing)}.`);
  console.log('');
}

/** `a–b` seconds over the values, or `a` when they agree to the tenth. */
function spread(values: readonly number[]): string {
  if (values.length === 0) return '–';
  const low = (Math.min(...values) / 1000).toFixed(1);
  const high = (Math.max(...values) / 1000).toFixed(1);
  return low === high ? `${low} s` : `${low}–${high} s`;
}

function countSpread(values: readonly number[]): string {
  if (values.length === 0) return '–';
  const low = Math.min(...values);
  const high = Math.max(...values);
  return low === high ? String(low) : `${String(low)}–${String(high)}`;
}

/** When calls began to fail after the outage started, relative to the first token's expiry (negative: before). */
function firstFailureVsExpiry(lane: LaneResult, timing: Timing): number | undefined {
  const { login, outageStart } = lane;
  if (login === undefined || outageStart === undefined) return undefined;
  const failure = lane.calls.find((c) => !c.ok && c.start >= outageStart);
  return failure === undefined ? undefined : failure.start - (login + timing.ttlSeconds * 1000);
}

/** The median time between two token requests during the outage. */
function medianGap(lane: LaneResult): number | undefined {
  const { outageStart, outageEnd } = lane;
  if (outageStart === undefined || outageEnd === undefined) return undefined;
  const times = lane.tokenRequests.filter((r) => r.at >= outageStart && r.at <= outageEnd).map((r) => r.at);
  const gaps = times.slice(1).map((at, i) => at - (times[i] ?? at));
  if (gaps.length === 0) return undefined;
  gaps.sort((a, b) => a - b);
  const mid = Math.floor(gaps.length / 2);
  return gaps.length % 2 === 1 ? (gaps[mid] ?? 0) : ((gaps[mid - 1] ?? 0) + (gaps[mid] ?? 0)) / 2;
}

function printFindings(results: readonly LaneResult[], timing: Timing): void {
  console.log('What happened');
  for (const tool of TOOLS) {
    const lanes = results.filter((r) => r.tool === tool);
    const done = lanes.filter((r) => r.outageEnd !== undefined);
    const measured = done.map((lane) => ({ lane, m: measure(lane) }));
    const sentences: string[] = [];
    const failedLanes = lanes.filter((r) => r.outageEnd === undefined);
    if (failedLanes.length > 0) {
      sentences.push(
        `The lane${failedLanes.length === 1 ? '' : 's'} ${failedLanes.map((r) => `"${r.scenario.title}"`).join(', ')} did not get through the outage (${failedLanes.map((r) => r.error ?? '?').join('; ')}).`,
      );
    }
    // Browser prompts.
    const prompts = measured.filter(({ m }) => m.prompts > 0);
    sentences.push(
      prompts.length === 0
        ? 'No browser prompt after the initial login, in any scenario.'
        : `It opened the browser ${String(prompts.reduce((n, { m }) => n + m.prompts, 0))} times after the initial login, nobody answering (${prompts.map(({ lane, m }) => `${lane.scenario.title}: ${String(m.prompts)}`).join(', ')}).`,
    );
    // States.
    const sequences = new Set(measured.map(({ m }) => m.states.join(' → ')));
    const unauthenticated = measured.filter(({ m }) => m.states.includes('unauthenticated'));
    if (sequences.size === 1) {
      sentences.push(
        `${tool === 'tether' ? 'Its status' : 'Its derived state'} went ${[...sequences].join('')} in every scenario.`,
      );
    } else {
      sentences.push(
        `${tool === 'tether' ? 'Its status' : 'Its derived state'} went ${measured.map(({ lane, m }) => `${m.states.join(' → ')} (${lane.scenario.title})`).join('; ')}.`,
      );
    }
    if (tool === 'tether') {
      sentences.push(
        unauthenticated.length === 0
          ? 'It never turned unauthenticated.'
          : `It turned unauthenticated in ${unauthenticated.map(({ lane }) => lane.scenario.title).join(', ')}.`,
      );
    }
    // When the calls began to fail.
    const onsets = measured.flatMap(({ lane }) => {
      const onset = firstFailureVsExpiry(lane, timing);
      return onset === undefined ? [] : [onset];
    });
    if (onsets.length > 0) {
      const before = onsets.every((o) => o < 0);
      const after = onsets.every((o) => o >= 0);
      const range = spread(onsets.map(Math.abs));
      const margin = Math.min(60, 0.1 * timing.ttlSeconds);
      const atExpiry = onsets.every((o) => Math.abs(o) <= 2_000);
      const onset = atExpiry
        ? `Calls began to fail at the first token's expiry (within ${spread(onsets.map(Math.abs)).replace(/^.*–/, '')})`
        : before
          ? `Calls began to fail ${range} before the first token's expiry${tool === 'tether' ? ` (tether stops sending a token min(60 s, 10% of its life) = ${margin.toFixed(0)} s before it expires)` : ''}`
          : after
            ? `Calls kept succeeding on the old token until ${range} after its expiry`
            : `Calls began to fail between ${spread(onsets)} relative to the first token's expiry`;
      const unserved = measured.filter(({ m }) => m.failed > 0).map(({ m }) => m.unservedMs);
      const kinds = new Map<string, number>();
      for (const { m } of measured) for (const [kind, n] of m.kinds) kinds.set(kind, (kinds.get(kind) ?? 0) + n);
      sentences.push(
        `${onset}; ${spread(unserved)} without service per scenario (failed calls: ${describeKinds(kinds)}).`,
      );
    } else {
      sentences.push('No call failed during any outage.');
    }
    // Recovery.
    const recovered = measured.filter(({ m }) => m.recoveryMs !== undefined);
    const never = measured.filter(({ m }) => m.recoveryMs === undefined);
    if (recovered.length > 0) {
      sentences.push(
        `After the fault was cleared, the first successful call came ${spread(recovered.map(({ m }) => m.recoveryMs ?? 0))} later` +
          ` (${recovered.map(({ lane, m }) => `${lane.scenario.title}: ${seconds(m.recoveryMs ?? 0)}`).join(', ')}).`,
      );
    }
    if (never.length > 0) {
      sentences.push(
        `No successful call after the outage in ${never.map(({ lane, m }) => `${lane.scenario.title} (waited ${seconds(m.waitedMs)})`).join(', ')}.`,
      );
    }
    // Load on the token endpoint.
    const requests = measured.map(({ m }) => m.requestsDuring);
    const callsDuring = measured.map(({ lane }) =>
      lane.outageStart === undefined || lane.outageEnd === undefined
        ? 0
        : lane.calls.filter((c) => c.start >= (lane.outageStart ?? 0) && c.start <= (lane.outageEnd ?? 0)).length,
    );
    const perCall =
      requests.reduce((a, b) => a + b, 0) /
      Math.max(
        1,
        callsDuring.reduce((a, b) => a + b, 0),
      );
    sentences.push(
      `It sent ${countSpread(requests)} token requests per ${seconds(timing.outageMs)} outage (${perCall.toFixed(2)} per whoami call made meanwhile).`,
    );
    const gaps = measured.map(({ lane }) => ({ lane, gap: medianGap(lane) }));
    if (gaps.some(({ gap }) => gap !== undefined)) {
      sentences.push(
        `Median gap between its token requests during the outage: ${gaps.map(({ lane, gap }) => `${lane.scenario.title}: ${gap === undefined ? '–' : seconds(gap)}`).join(', ')}.`,
      );
    }
    const whileRunning = measured.reduce((n, { m }) => n + m.failedWhileRunning, 0);
    if (whileRunning > 0) {
      sentences.push(`${String(whileRunning)} failed calls started while its status file said running.`);
    }
    const startups = lanes.flatMap((r) =>
      r.spawned === undefined || r.ready === undefined ? [] : [r.ready - r.spawned],
    );
    if (startups.length > 0) {
      sentences.push(
        `From its start to a connected client (the login included) it took ${spread(startups)}, all lanes starting together.`,
      );
    }
    console.log(`- ${tool}: ${sentences.join(' ')}`);
    for (const lane of lanes) {
      for (const note of lane.notes) console.log(`  - note (${lane.scenario.title}): ${note}`);
    }
  }
  console.log('');
}

// ---- the SVG --------------------------------------------------------------------------------------------

const COLORS: Readonly<Record<string, string>> = {
  running: '#43a047',
  serving: '#43a047',
  /** `running` while the refresh fails: the token still valid is served. */
  degraded: '#aed581',
  auth_retrying: '#fbc02d',
  failing: '#e53935',
  'needs browser login': '#8e24aa',
  unauthenticated: '#b71c1c',
};

/** The colour of a state; tether's `running` is lighter while its refresh is failing. */
function stateColor(state: string, refresh?: string): string {
  if (state === 'running' && refresh !== undefined && refresh !== 'ok') return COLORS['degraded'] ?? '#aed581';
  return COLORS[state] ?? '#9e9e9e';
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** The origin scenario as a timeline, one band per tool; hand-written SVG, no dependencies. */
export function renderSvg(results: readonly LaneResult[], timing: Timing): string {
  const width = 900;
  const height = 300;
  const left = 118;
  const right = 872;
  const lanes = TOOLS.map((tool) => results.find((r) => r.tool === tool && r.scenario.id === 'origin'));
  const span = Math.max(
    timing.ttlSeconds,
    ...lanes.map((lane) => (lane?.login === undefined ? 0 : (lane.end - lane.login) / 1000)),
  );
  const tickStep = span > 150 ? 30 : 15;
  const axisEnd = Math.ceil(span / tickStep) * tickStep;
  const x = (seconds: number): number => left + (Math.min(Math.max(seconds, 0), axisEnd) / axisEnd) * (right - left);
  const f = (n: number): string => n.toFixed(1);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${String(width)}" height="${String(height)}" viewBox="0 0 ${String(width)} ${String(height)}" font-family="system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif" font-size="11" fill="#212121">`,
  );
  out.push(
    `<title>tether vs. mcp-remote: a 403 + HTML outage at the token endpoint across a token expiry</title>`,
    `<rect width="${String(width)}" height="${String(height)}" fill="#ffffff"/>`,
    `<text x="12" y="20" font-size="14" font-weight="bold">403 + HTML at the token endpoint across a token expiry: a client calls whoami once a second</text>`,
    `<text x="12" y="36" fill="#555">tokens live ${String(timing.ttlSeconds)} s (not 1 h), outage ${seconds(timing.outageMs)}${timing.keeperFactor === 1 ? '' : `, tether's timings × ${String(timing.keeperFactor)}`} (bench/outage.ts, ${timing.mode} run); bands: state over time; marks: refresh attempts</text>`,
  );

  const bands = [
    { top: 62, label: 'tether', sub: 'status file' },
    { top: 150, label: 'mcp-remote', sub: 'derived from calls' },
  ];
  const bandHeight = 26;
  lanes.forEach((lane, i) => {
    const band = bands[i];
    if (band === undefined) return;
    const y = band.top;
    out.push(
      `<text x="12" y="${String(y + 12)}" font-size="13" font-weight="bold">${escapeXml(band.label)}</text>`,
      `<text x="12" y="${String(y + 26)}" fill="#555">${escapeXml(band.sub)}</text>`,
    );
    if (lane !== undefined) {
      const prompts = Math.max(0, lane.prompts.length - 1);
      out.push(
        `<text x="12" y="${String(y + 40)}" fill="${prompts === 0 ? '#555' : '#8e24aa'}">${String(prompts)} browser prompt${prompts === 1 ? '' : 's'}</text>`,
      );
    }
    if (lane?.login === undefined) {
      out.push(
        `<text x="${String(left)}" y="${String(y + 16)}" fill="#b71c1c">no data: ${escapeXml(lane?.error ?? 'not run')}</text>`,
      );
      return;
    }
    const login = lane.login;
    const t = (at: number): number => x((at - login) / 1000);
    // The outage, shaded over the band, its calls and its marks.
    if (lane.outageStart !== undefined) {
      const end = lane.outageEnd ?? lane.end;
      out.push(
        `<rect x="${f(t(lane.outageStart))}" y="${String(y - 10)}" width="${f(t(end) - t(lane.outageStart))}" height="${String(bandHeight + 46)}" fill="#eceff1" stroke="#90a4ae" stroke-dasharray="3 2"/>`,
      );
      if (i === 0) {
        out.push(
          `<text x="${f((t(lane.outageStart) + t(end)) / 2)}" y="${String(y - 13)}" text-anchor="middle" fill="#455a64">token endpoint: 403 + HTML block page (${seconds(end - lane.outageStart)})</text>`,
        );
      }
    }
    // The band.
    const segments: readonly { at: number; state: string; color: string }[] =
      lane.tool === 'tether'
        ? lane.statuses.map((s) => ({
            at: s.at,
            state: s.refresh === 'ok' ? s.status : `${s.status} (refresh ${s.refresh})`,
            color: stateColor(s.status, s.refresh),
          }))
        : mcpRemoteStates(lane).map((s) => ({ at: s.at, state: s.state, color: stateColor(s.state) }));
    out.push(
      `<rect x="${f(x(0))}" y="${String(y)}" width="${f(t(lane.end) - x(0))}" height="${String(bandHeight)}" fill="#f5f5f5"/>`,
    );
    segments.forEach((segment, k) => {
      const from = t(segment.at);
      const to = t(segments[k + 1]?.at ?? lane.end);
      if (to <= from) return;
      out.push(
        `<rect x="${f(from)}" y="${String(y)}" width="${f(to - from)}" height="${String(bandHeight)}" fill="${segment.color}"><title>${escapeXml(segment.state)}</title></rect>`,
      );
    });
    // The calls: a thin strip, one mark per call.
    const callsY = y + bandHeight + 3;
    for (const call of lane.calls) {
      const from = t(call.start);
      const to = Math.max(t(call.end), from + 1.2);
      out.push(
        `<rect x="${f(from)}" y="${String(callsY)}" width="${f(to - from)}" height="6" fill="${call.ok ? '#a5d6a7' : '#ef9a9a'}"/>`,
      );
    }
    // Refresh attempts: tether's event log; mcp-remote's token requests (the login's exchange left out).
    const marksY = y + bandHeight + 19;
    const attempts =
      lane.tool === 'tether'
        ? lane.attempts
        : lane.tokenRequests
            .filter((r) => r.grantType === 'refresh_token')
            .map((r) => ({ at: r.at, ok: r.answer === 'forwarded' && r.status === 200 }));
    for (const attempt of attempts) {
      const cx = t(attempt.at);
      out.push(
        attempt.ok
          ? `<circle cx="${f(cx)}" cy="${String(marksY)}" r="3.5" fill="none" stroke="#2e7d32" stroke-width="1.6"/>`
          : `<path d="M${f(cx - 3)} ${String(marksY - 3)}l6 6m0 -6l-6 6" stroke="#c62828" stroke-width="1.5"/>`,
      );
    }
    // Browser prompts after the initial login.
    for (const prompt of lane.prompts.slice(1)) {
      const px = t(prompt.at);
      out.push(`<path d="M${f(px - 4)} ${String(y - 8)}h8l-4 6z" fill="#8e24aa"><title>browser prompt</title></path>`);
    }
  });

  // The first token's expiry.
  const ex = x(timing.ttlSeconds);
  out.push(
    `<line x1="${f(ex)}" y1="50" x2="${f(ex)}" y2="222" stroke="#212121" stroke-dasharray="4 3"/>`,
    `<text x="${f(ex + 3)}" y="221" fill="#212121">first token expires</text>`,
  );

  // The axis.
  const axisY = 230;
  out.push(
    `<line x1="${String(left)}" y1="${String(axisY)}" x2="${String(right)}" y2="${String(axisY)}" stroke="#616161"/>`,
  );
  for (let s = 0; s <= axisEnd; s += tickStep) {
    out.push(
      `<line x1="${f(x(s))}" y1="${String(axisY)}" x2="${f(x(s))}" y2="${String(axisY + 4)}" stroke="#616161"/>`,
      `<text x="${f(x(s))}" y="${String(axisY + 15)}" text-anchor="middle" fill="#424242">${String(s)} s</text>`,
    );
  }
  out.push(`<text x="12" y="${String(axisY + 15)}" fill="#424242">since the login</text>`);

  // The legend: each item a mark and a label, laid out left to right.
  const legendRow = (y: number, items: readonly { mark: (x: number) => string; label: string }[]): void => {
    let lx = 12;
    for (const item of items) {
      out.push(item.mark(lx), `<text x="${String(lx + 17)}" y="${String(y)}">${escapeXml(item.label)}</text>`);
      lx += 17 + item.label.length * 6 + 16;
    }
  };
  const swatch =
    (color: string, y: number) =>
    (lx: number): string =>
      `<rect x="${String(lx)}" y="${String(y - 9)}" width="12" height="10" fill="${color}"/>`;
  const row1 = 266;
  legendRow(row1, [
    { mark: swatch(stateColor('running'), row1), label: 'running / serving' },
    { mark: swatch(stateColor('running', 'degraded'), row1), label: 'running, refresh failing' },
    { mark: swatch(stateColor('auth_retrying'), row1), label: 'auth_retrying: no valid token' },
    { mark: swatch(stateColor('failing'), row1), label: 'failing' },
    { mark: swatch(stateColor('needs browser login'), row1), label: 'needs browser login' },
    { mark: swatch(stateColor('unauthenticated'), row1), label: 'unauthenticated' },
  ]);
  const row2 = 287;
  legendRow(row2, [
    {
      mark: (lx) =>
        `<circle cx="${String(lx + 6)}" cy="${String(row2 - 4)}" r="3.5" fill="none" stroke="#2e7d32" stroke-width="1.6"/>`,
      label: 'refresh ok',
    },
    {
      mark: (lx) =>
        `<path d="M${String(lx + 3)} ${String(row2 - 7)}l6 6m0 -6l-6 6" stroke="#c62828" stroke-width="1.5"/>`,
      label: 'refresh failed (tether: event log; mcp-remote: token requests)',
    },
    {
      mark: (lx) => `<path d="M${String(lx + 2)} ${String(row2 - 9)}h8l-4 6z" fill="#8e24aa"/>`,
      label: 'browser prompt',
    },
    {
      mark: (lx) =>
        `<rect x="${String(lx)}" y="${String(row2 - 7)}" width="6" height="6" fill="#a5d6a7"/><rect x="${String(lx + 7)}" y="${String(row2 - 7)}" width="6" height="6" fill="#ef9a9a"/>`,
      label: 'calls ok / failed',
    },
    {
      mark: (lx) =>
        `<rect x="${String(lx)}" y="${String(row2 - 9)}" width="13" height="10" fill="#eceff1" stroke="#90a4ae" stroke-dasharray="3 2"/>`,
      label: 'outage',
    },
  ]);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

// ---- main -----------------------------------------------------------------------------------------------

const USAGE = 'usage: npx tsx bench/outage.ts [--quick] [--svg PATH] [--json PATH]';

interface Options {
  readonly timing: Timing;
  readonly svg: string;
  /** Where to write every lane's raw record, if anywhere. */
  readonly json: string | undefined;
}

function parseArgs(argv: readonly string[]): Options {
  let timing = FULL;
  let svg = DEFAULT_SVG;
  let json: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--quick') timing = QUICK;
    else if (arg === '--svg') {
      const value = argv[++i];
      if (value === undefined || value === '') throw new UsageError('--svg needs a path');
      svg = path.resolve(value);
    } else if (arg === '--json') {
      const value = argv[++i];
      if (value === undefined || value === '') throw new UsageError('--json needs a path');
      json = path.resolve(value);
    } else if (arg?.startsWith('--svg=') === true) svg = path.resolve(arg.slice('--svg='.length));
    else if (arg === '--help' || arg === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new UsageError(`unknown argument ${String(arg)}`);
  }
  return { timing, svg, json };
}

class UsageError extends Error {}

async function main(): Promise<number> {
  let options: Options;
  try {
    options = parseArgs(process.argv.slice(2));
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${error.message}\n${USAGE}`);
    return 2;
  }
  const { timing, svg, json } = options;
  if (!existsSync(CLI_ENTRY)) {
    console.error(`the built CLI is missing (${CLI_ENTRY}); run \`npm run build\` first`);
    return 1;
  }
  if (!existsSync(MCP_REMOTE_BIN)) {
    console.error(`mcp-remote is missing (${MCP_REMOTE_BIN}); run \`npm install\` first`);
    return 1;
  }

  const interrupted = new AbortController();
  const onSignal = (): void => {
    if (interrupted.signal.aborted) {
      started.killNow();
      process.exit(130);
    }
    console.error('\ninterrupted: cleaning up (Ctrl-C again to kill everything at once)…');
    interrupted.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  printHeader(timing);
  printScenarios(timing);
  const began = Date.now();
  const lanes = SCENARIOS.flatMap((scenario) =>
    TOOLS.map((tool) => new Lane(tool, scenario, timing, interrupted.signal)),
  );
  // Started a little apart, so that eight logins do not compete for the CPU in the same second.
  const results = await Promise.all(
    lanes.map(async (lane, i) => {
      await sleep(i * 750, undefined, { signal: interrupted.signal }).catch(() => undefined);
      const result = await lane.run();
      process.stderr.write(
        `[${seconds(Date.now() - began).padStart(7)}] ${lane.name} done${result.error === undefined ? '' : `: ${result.error}`}\n`,
      );
      return result;
    }),
  );
  console.log(`Ran for ${seconds(Date.now() - began)}.`);
  console.log('');
  if (interrupted.signal.aborted) return 130;

  printTableOf(results);
  printFindings(results, timing);
  await mkdir(path.dirname(svg), { recursive: true });
  writeFileSync(svg, renderSvg(results, timing));
  console.log(`SVG timeline of the origin scenario: ${path.relative(process.cwd(), svg) || svg}`);
  if (json !== undefined) {
    const raw = results.map((r) => ({ ...r, scenario: r.scenario.id }));
    writeFileSync(json, `${JSON.stringify({ timing, lanes: raw }, null, 1)}\n`);
    console.log(`raw records: ${json}`);
  }
  const leftovers = [...started.pids].filter(alive);
  if (leftovers.length > 0) {
    console.log(`left running: ${leftovers.join(', ')}; killing them`);
    started.killNow();
  }
  return results.some((r) => r.error !== undefined) ? 1 : 0;
}

// Run only as a script, so that renderSvg can be imported.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      console.error(error);
      started.killNow();
      process.exitCode = 1;
    },
  );
}
