/**
 * Shared setup of the end-to-end tests (test/e2e.test.ts): the BUILT CLI
 * (`dist/cli/main.js`, driven through the built `TetherCli`), a temporary
 * state directory, compressed keeper timings, the real remote of
 * `src/demo/remote.ts`, and the cleanup that leaves no process behind.
 */
import { isProcessAlive } from '../../src/store/lock.js';
import { existsSync, statSync } from 'node:fs';
import { chmod, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CliResult, TetherCli } from '../../src/demo/cli.js';
import { type Remote, startRemote } from '../../src/demo/remote.js';
import { CredentialStore } from '../../src/store/store.js';
import type { WorkloadStatus } from '../../src/workloads/status.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The built CLI: what `tether` runs once installed. */
export const BUILT_CLI = path.join(ROOT, 'dist/cli/main.js');
/** The built driver (`src/demo/cli.ts` compiled): its `CLI_ENTRY` is {@link BUILT_CLI}. */
const BUILT_DRIVER = path.join(ROOT, 'dist/demo/cli.js');

type DriverModule = typeof import('../../src/demo/cli.js');

/**
 * Loads the built driver. Throws a message that says what to do when the
 * build is missing; warns when it is older than the sources.
 */
export async function loadBuiltCli(): Promise<DriverModule> {
  const missing = [BUILT_CLI, BUILT_DRIVER].filter((file) => !existsSync(file));
  if (missing.length > 0) {
    throw new Error(
      `The end-to-end tests spawn the built CLI, but ${missing.map((file) => path.relative(ROOT, file)).join(' and ')} ` +
        `${missing.length > 1 ? 'are' : 'is'} missing: run \`npm run build\` first.`,
    );
  }
  const built = statSync(BUILT_CLI).mtimeMs;
  const newer = (await readdir(path.join(ROOT, 'src'), { recursive: true }))
    .filter((file) => file.endsWith('.ts'))
    .filter((file) => statSync(path.join(ROOT, 'src', file)).mtimeMs > built);
  if (newer.length > 0) {
    console.warn(
      `e2e: dist/ is older than ${String(newer.length)} source file(s) (e.g. src/${newer[0] ?? ''}): ` +
        'the tests run the build, run `npm run build` to test the current sources.',
    );
  }
  const driver = (await import(pathToFileURL(BUILT_DRIVER).href)) as DriverModule;
  if (path.resolve(driver.CLI_ENTRY) !== path.resolve(BUILT_CLI)) {
    throw new Error(`the built driver runs ${driver.CLI_ENTRY}, not ${BUILT_CLI}`);
  }
  return driver;
}

/** Compressed keeper timings (DESIGN §3.4), so that an outage and its recovery fit in seconds. */
export const KEEPER_TIMINGS = {
  TETHER_TOKEN_REFRESH_INITIAL_RETRY_INTERVAL: '500ms',
  TETHER_TOKEN_REFRESH_MAX_RETRY_INTERVAL: '1s',
  TETHER_TOKEN_REFRESH_MAX_ELAPSED_TIME: '2s',
  TETHER_TOKEN_AUTH_RETRYING_TICK_INTERVAL: '1s',
  TETHER_TOKEN_PROBE_MIN_INTERVAL: '500ms',
  TETHER_TOKEN_DEMAND_WAIT: '1s',
} as const;
/** The slow tier's cap, in ms (`TETHER_TOKEN_AUTH_RETRYING_TICK_INTERVAL`). */
export const TICK_MS = 1_000;
/** Access-token lifetime of the remote: refreshed at ~4.5 s, expired for sending at ~5.4 s. */
export const ACCESS_TOKEN_TTL_SECONDS = 6;

/** A login URL as the CLI prints it (an authorization request with PKCE). */
export const LOGIN_URL = /https?:\/\/\S*code_challenge=/;

/** Variables of the test runner's environment that must not reach tether. */
const SCRUBBED = /^(TETHER_|TOOLHIVE_|BROWSER$|HTTPS?_PROXY$|NO_PROXY$|ALL_PROXY$)/i;

export type StatusFile = WorkloadStatus;

/** How a command ended, for assertion messages. */
export function describeResult(result: CliResult): string {
  return `exit ${String(result.code)}\n--- stdout\n${result.stdout}\n--- stderr\n${result.stderr}`;
}

/** True while a process with this pid runs (not a zombie). */
export const isAlive = isProcessAlive;

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Calls `probe` until it returns something other than `undefined`, or throws
 * after `timeoutMs` naming `what` and the last thing seen.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  { timeoutMs = 15_000, intervalMs = 50, last }: { timeoutMs?: number; intervalMs?: number; last?: () => unknown } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      const seen = last === undefined ? '' : `; last seen: ${JSON.stringify(last())}`;
      throw new Error(`timed out after ${String(timeoutMs)} ms waiting for ${what}${seen}`);
    }
    await sleep(intervalMs);
  }
}

/** What an MCP session through the proxy got. */
export interface McpOutcome {
  readonly tools: readonly string[];
  readonly whoami: string;
}

/** tools/list and tools/call whoami with a connected client; closes it. */
export async function listAndWhoami(client: Client): Promise<McpOutcome> {
  try {
    const { tools } = await client.listTools();
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    const content = result.content as readonly { type: string; text?: string }[] | undefined;
    if (result.isError === true) throw new Error(`whoami failed: ${JSON.stringify(result)}`);
    return { tools: tools.map((tool) => tool.name), whoami: content?.[0]?.text ?? '' };
  } finally {
    await client.close();
  }
}

/** An MCP SDK client over Streamable HTTP to `url` (the local proxy): tools/list and whoami. */
export async function mcpThrough(url: string): Promise<McpOutcome> {
  const client = new Client({ name: 'tether-e2e', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(url)));
  return listAndWhoami(client);
}

/** A raw HTTP answer. */
export interface RawAnswer {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** An MCP `initialize` POST to `url` with node:http, with an optional `Host`. */
export function rawInitialize(url: string, host?: string): Promise<RawAnswer> {
  const body = JSON.stringify({
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
  });
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: target.hostname,
        port: target.port,
        path: target.pathname,
        method: 'POST',
        headers: {
          ...(host !== undefined && { host }),
          'content-type': 'application/json',
          accept: 'application/json, text/event-stream',
          'content-length': Buffer.byteLength(body),
        },
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    req.setTimeout(15_000, () => req.destroy(new Error('no answer within 15 s')));
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * One test's world: a temporary `TETHER_HOME`, the remote, the built CLI
 * with compressed timings, and a `$BROWSER` that records every URL it is
 * asked to open (tether must never open one here: every command gets
 * `--no-browser`, and the workload's refresh path must never try).
 */
export class E2E {
  readonly home: string;
  readonly env: NodeJS.ProcessEnv;
  readonly remote: Remote;
  readonly cli: TetherCli;
  /** Where the recording `$BROWSER` writes the URLs it was given. */
  readonly browserLog: string;
  /** Every workload process seen in a status file: all must be gone after cleanup. */
  readonly #pids = new Set<number>();
  readonly #names = new Set<string>();
  readonly #cleanups: (() => Promise<void>)[] = [];
  readonly #root: string;

  private constructor(root: string, remote: Remote, driver: DriverModule) {
    this.#root = root;
    this.home = path.join(root, 'home');
    this.browserLog = path.join(root, 'browser.log');
    this.remote = remote;
    const inherited = Object.fromEntries(Object.entries(process.env).filter(([key]) => !SCRUBBED.test(key)));
    this.env = {
      ...inherited,
      TETHER_HOME: this.home,
      TETHER_STORE_KEY: 'file',
      BROWSER: path.join(root, 'browser.sh'),
      ...KEEPER_TIMINGS,
    };
    this.cli = new driver.TetherCli(this.env, remote);
  }

  static async start(driver: DriverModule, options: { ttlSeconds?: number } = {}): Promise<E2E> {
    const root = await mkdtemp(path.join(os.tmpdir(), 'tether-e2e-'));
    const browser = path.join(root, 'browser.sh');
    await writeFile(browser, `#!/bin/sh\necho "$1" >> '${path.join(root, 'browser.log')}'\n`);
    await chmod(browser, 0o700);
    const remote = await startRemote({ accessTokenTtlSeconds: options.ttlSeconds ?? ACCESS_TOKEN_TTL_SECONDS });
    return new E2E(root, remote, driver);
  }

  /** Registers a cleanup step, run (last first) before the workloads are removed. */
  onCleanup(step: () => Promise<void>): void {
    this.#cleanups.push(step);
  }

  statusPath(name: string): string {
    return path.join(this.home, 'workloads', name, 'status.json');
  }

  /** The workload process's stderr (where it would print a login URL). */
  workloadStderrPath(name: string): string {
    return path.join(this.home, 'workloads', name, 'stderr.log');
  }

  eventsPath(name: string): string {
    return path.join(this.home, 'workloads', name, 'events.jsonl');
  }

  /** The status file as written, or `undefined` while there is none. */
  async readStatus(name: string): Promise<StatusFile | undefined> {
    let text: string;
    try {
      text = await readFile(this.statusPath(name), 'utf8');
    } catch {
      return undefined;
    }
    const status = JSON.parse(text) as StatusFile; // written atomically: always whole
    if (status.pid !== undefined) this.#pids.add(status.pid);
    return status;
  }

  /** Polls the status file until `accept` holds. */
  async waitForStatus(
    name: string,
    accept: (status: StatusFile) => boolean,
    what: string,
    timeoutMs = 15_000,
  ): Promise<StatusFile> {
    let last: StatusFile | undefined;
    return waitFor(
      `${name}: ${what}`,
      async () => {
        last = await this.readStatus(name);
        return last !== undefined && accept(last) ? last : undefined;
      },
      { timeoutMs, last: () => last },
    );
  }

  /**
   * Records the status file's `status` every `intervalMs` until stopped:
   * the evidence that a status never appeared.
   */
  sampleStatus(name: string, intervalMs = 50): { stop(): Promise<readonly string[]> } {
    const seen: string[] = [];
    const sampling = { on: true };
    const loop = (async () => {
      while (sampling.on) {
        const status = await this.readStatus(name).catch(() => undefined);
        if (status !== undefined) seen.push(status.status);
        await sleep(intervalMs);
      }
    })();
    return {
      async stop() {
        sampling.on = false;
        await loop;
        return seen;
      },
    };
  }

  /** `tether ARGS` to its end. */
  tether(args: readonly string[]): Promise<CliResult> {
    return this.cli.run(args);
  }

  /** `tether run <remote> --name NAME --no-browser`; expects success and the workload running. */
  async runWorkload(name: string, extra: readonly string[] = []): Promise<{ result: CliResult; status: StatusFile }> {
    this.#names.add(name);
    const result = await this.tether(['run', this.remote.mcpUrl, '--name', name, '--no-browser', ...extra]);
    if (result.code !== 0) throw new Error(`tether run ${name} failed: ${describeResult(result)}`);
    const status = await this.waitForStatus(name, (s) => s.status === 'running', 'status running after tether run');
    return { result, status };
  }

  /** The stored token set of a workload, decrypted with the store's key file. */
  async storedTokens(name: string): Promise<{ accessToken: string; refreshToken?: string }> {
    const store = await CredentialStore.open({ env: this.env });
    const tokens = await store.loadTokens(name);
    if (tokens === undefined) throw new Error(`no tokens stored for ${name}`);
    return tokens;
  }

  /** Token requests that carried an authorization code: one per completed login. */
  authorizationCodeGrants(): number {
    return this.remote.faults.tokenRequests.filter((r) => r.grantType === 'authorization_code').length;
  }

  /** The URLs the recording `$BROWSER` was asked to open. */
  async browserOpens(): Promise<string[]> {
    const text = await readFile(this.browserLog, 'utf8').catch(() => '');
    return text.split('\n').filter((line) => line !== '');
  }

  async workloadStderr(name: string): Promise<string> {
    return readFile(this.workloadStderrPath(name), 'utf8').catch(() => '');
  }

  /** The workload's event log, parsed. */
  async events(name: string): Promise<Record<string, unknown>[]> {
    const text = await readFile(this.eventsPath(name), 'utf8').catch(() => '');
    return text
      .split('\n')
      .filter((line) => line !== '')
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  /**
   * Ends everything: the test's own cleanups, `tether rm` of every workload,
   * a SIGKILL for any workload process still alive (then reported as an
   * error: `rm` must stop it), the remote, the temporary directory.
   */
  async close(): Promise<void> {
    const problems: string[] = [];
    for (const step of this.#cleanups.splice(0).reverse()) {
      await step().catch((error: unknown) => problems.push(`cleanup step: ${String(error)}`));
    }
    for (const name of this.#names) {
      if (!existsSync(path.join(this.home, 'workloads', name))) continue;
      await this.readStatus(name).catch(() => undefined);
      const result = await this.tether(['rm', name]).catch((error: unknown) => ({
        code: -1,
        stdout: '',
        stderr: String(error),
      }));
      if (result.code !== 0) problems.push(`tether rm ${name}: ${describeResult(result)}`);
    }
    for (const pid of this.#pids) {
      if (!isAlive(pid)) continue;
      // `rm` returns once the process is gone; give a slow exit a moment before calling it a leak.
      await waitFor(`pid ${String(pid)} to exit`, () => Promise.resolve(isAlive(pid) ? undefined : true), {
        timeoutMs: 3_000,
      }).catch(() => {
        process.kill(pid, 'SIGKILL');
        problems.push(`workload process ${String(pid)} was still alive after tether rm (killed)`);
      });
    }
    await this.remote.close().catch((error: unknown) => problems.push(`remote.close: ${String(error)}`));
    await rm(this.#root, { recursive: true, force: true });
    if (problems.length > 0) throw new Error(`e2e cleanup:\n${problems.join('\n')}`);
  }

  /** Mode bits of a file in the state directory. */
  async mode(file: string): Promise<number> {
    return (await stat(file)).mode & 0o777;
  }
}
