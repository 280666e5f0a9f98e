/**
 * `tether demo`: the product's story on loopback, told by driving the real
 * CLI as a user would. A local OAuth-protected MCP server, `tether run`
 * against it with automatic consent, an MCP client calling through the
 * workload, a WAF-style outage across a token expiry, the workload riding
 * through it and recovering by itself, the timeline, and `tether rm`.
 *
 * It keeps its own time (it stands in for the user and the remote side, like
 * the rest of src/demo): the timings of the workload it starts are compressed
 * through the keeper's environment variables so that the story takes well
 * under a minute. Everything it starts — servers, the workload process, the
 * temporary state directory — is removed at the end, also on failure and on
 * interruption.
 */
import type { ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { parseDuration } from '../config/duration.js';
import { KEEPER_ENV, type KeeperConfig } from '../config/keeper-config.js';
import { TetherError } from '../errors.js';
import { formatRecord, type LogRecord, readEvents } from '../workloads/events.js';
import { renderTimeline } from '../workloads/timeline.js';
import { WorkloadFiles } from '../workloads/files.js';
import { effectiveStatus, isWorkloadProcess, readStatus, type WorkloadStatus } from '../workloads/status.js';
import { CLI_ENTRY, TetherCli } from './cli.js';
import type { RecordedTokenRequest } from './fault-proxy.js';
import type { Remote } from './remote.js';

/** The workload's name in the demo. */
export const DEMO_WORKLOAD = 'demo';

/**
 * The keeper's timings for the demo, compressed from the defaults so that a
 * token's life, a failing refresh and a recovery fit in seconds. Every
 * variable of {@link KEEPER_ENV} is set, so that the user's own settings do
 * not change the story.
 */
export const DEMO_KEEPER_SETTINGS: Readonly<Record<keyof KeeperConfig, string>> = Object.freeze({
  initialRetryInterval: '1s',
  maxRetryInterval: '3s',
  maxTries: '5',
  maxElapsed: '5s',
  tickInterval: '3s',
  ceiling: '1h',
  probeMinInterval: '1s',
  demandWait: '2s',
});

/** What {@link DemoStory} is given. */
export interface DemoOptions {
  /** Where the story is told. */
  readonly out: NodeJS.WritableStream;
  /** The environment the CLI's commands start from (proxies are dropped; the state dir and timings are the demo's). */
  readonly env: NodeJS.ProcessEnv;
  /** Lifetime of the remote's access tokens, in seconds. Default 20. */
  readonly tokenTtlSeconds?: number;
  /** How long the outage lasts after the status turned `auth_retrying`, in ms. Default 10 s. */
  readonly outageAfterAuthRetryingMs?: number;
}

/** One `whoami` call and what it got. */
interface CallOutcome {
  /** When it started and ended, ms since the story began. */
  readonly startedAt: number;
  readonly endedAt: number;
  readonly ok: boolean;
  /** `ok "test-user"`, `503 auth_retrying, Retry-After 2`, or the error. */
  readonly label: string;
  /** The label without per-call values, for counting: `503 auth_retrying`. */
  readonly kind: string;
}

/** The last answer the local endpoint gave to a POST that failed. */
export interface FailedAnswer {
  readonly status: number;
  readonly error: string | undefined;
  readonly retryAfter: string | null;
}

/** A status as the story tracks it: the status file's status and refresh state. */
interface Seen {
  readonly at: number;
  readonly status: WorkloadStatus['status'];
  readonly refresh: WorkloadStatus['refresh']['state'];
}

/** What the command printed and how it ended. */
interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

const LOGIN_URL = /https?:\/\/\S*code_challenge=\S*/;
const CANCELLED = 'ERR_CANCELLED';

/** Why a failed refresh is transient, for people. */
const REASONS: Readonly<Record<string, string>> = {
  no_oauth_error: 'no OAuth error code (a WAF page, not a verdict)',
  network: 'no answer',
  tls: 'TLS failure',
  server_error_status: 'server error',
  rate_limited: 'rate limited',
  request_timeout: 'request timeout',
  invalid_token_response: 'not a token response',
  oauth_transient: 'the server says: later',
  oauth_error: "the authorization server's verdict",
};

/**
 * The demo, start to end. {@link run} tells the story and resolves when it
 * happened as it should; it rejects with `ERR_DEMO` (what went wrong) or,
 * after {@link interrupt}, `ERR_CANCELLED` — in every case after everything it
 * started is gone.
 */
export class DemoStory {
  readonly #out: NodeJS.WritableStream;
  readonly #baseEnv: NodeJS.ProcessEnv;
  readonly #ttlSeconds: number;
  readonly #holdMs: number;
  /** Aborted by {@link interrupt}: every wait of the story ends. */
  readonly #interrupted = new AbortController();
  /** Aborted when the story's background loops (calls, status, events) must end. */
  readonly #background = new AbortController();
  readonly #started = Date.now();
  #lastLine = Date.now();

  #home: string | undefined;
  #remote: Remote | undefined;
  #cli: TetherCli | undefined;
  #files: WorkloadFiles | undefined;
  #children = new Set<ChildProcess>();
  #client: Client | undefined;
  /** `instanceof` the SDK's HTTP error (the SDK is loaded when the client connects). */
  #isHttpError: (error: unknown) => boolean = () => false;
  #workloadPid: number | undefined;

  #status: WorkloadStatus | undefined;
  readonly #seen: Seen[] = [];
  #fatal: string | undefined;
  readonly #calls: CallOutcome[] = [];
  #lastFailedAnswer: FailedAnswer | undefined;
  #backgroundLoops: Promise<unknown>[] = [];

  constructor(options: DemoOptions) {
    this.#out = options.out;
    this.#baseEnv = options.env;
    this.#ttlSeconds = options.tokenTtlSeconds ?? 20;
    this.#holdMs = options.outageAfterAuthRetryingMs ?? 10_000;
  }

  /** Ends the story early (Ctrl-C): {@link run} cleans up and rejects with `ERR_CANCELLED`. */
  interrupt(): void {
    this.#interrupted.abort();
  }

  /**
   * The last resort when cleaning up itself is interrupted (a second Ctrl-C):
   * kills what the story started and deletes its state directory, at once.
   */
  killNow(): void {
    for (const child of this.#children) child.kill('SIGKILL');
    const pid = this.#workloadPid;
    if (pid !== undefined && isWorkloadProcess(pid, DEMO_WORKLOAD)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    if (this.#home !== undefined) rmSync(this.#home, { recursive: true, force: true });
  }

  /** Tells the story; see {@link DemoStory}. */
  async run(): Promise<void> {
    let failure: TetherError | undefined;
    try {
      await this.#story();
    } catch (error) {
      failure = this.#interrupted.signal.aborted
        ? new TetherError(CANCELLED, 'interrupted')
        : error instanceof TetherError
          ? error
          : new TetherError('ERR_DEMO', `the demo failed: ${error instanceof Error ? error.message : String(error)}`, {
              cause: error,
            });
      if (failure.code !== CANCELLED) this.#say(`✗ The story did not happen as it should: ${failure.message}`);
    }
    const leftovers = await this.#cleanUp(failure !== undefined);
    if (failure !== undefined) throw failure;
    if (leftovers !== undefined) throw new TetherError('ERR_DEMO', leftovers);
    this.#say(`Done in ${this.#seconds(this.#elapsed())}: nothing of the demo is left running.`);
  }

  // ---- the story ------------------------------------------------------------

  async #story(): Promise<void> {
    if (!existsSync(CLI_ENTRY)) {
      throw new TetherError('ERR_DEMO', `the built CLI is missing (${CLI_ENTRY}); run \`npm run build\` first`);
    }
    this.#write(
      `tether demo — the whole story on loopback, nothing to set up (about ${String(Math.round(this.#ttlSeconds + this.#holdMs / 1000 + 5))} s)\n\n`,
    );

    // 1. The remote.
    this.#say(
      `1. Starting the remote on 127.0.0.1: an OAuth authorization server (oidc-provider) behind a switchable "WAF",`,
    );
    this.#more(
      `and an MCP server (the MCP SDK's) that accepts its tokens. Access tokens live ${String(this.#ttlSeconds)} s.`,
    );
    bypassProxiesForLoopback(process.env); // the stand-in user's browser runs in this process
    // Loaded here, not at the top: oidc-provider takes a moment to load, and the story has started.
    const { startRemote } = await import('./remote.js');
    this.#remote = await startRemote({ accessTokenTtlSeconds: this.#ttlSeconds });
    const remote = this.#remote;
    this.#checkpoint();
    this.#more(`MCP server ${remote.mcpUrl}; authorization server ${remote.faults.url} (through the WAF)`);

    // 2. tether run.
    this.#home = await mkdtemp(path.join(os.tmpdir(), 'tether-demo-'));
    const env = this.#childEnv(this.#home);
    this.#cli = new TetherCli(env, remote);
    this.#files = new WorkloadFiles(this.#home, DEMO_WORKLOAD);
    const files = this.#files;
    this.#say(`2. $ tether run ${remote.mcpUrl} --name ${DEMO_WORKLOAD} --no-browser`);
    this.#more(`(TETHER_HOME=${this.#home}; keeper timings compressed: retries after 1 s, 1.5 s, …,`);
    this.#more('5 tries or 5 s in the short tier, then every ≤3 s; a request with no token waits ≤2 s for a refresh)');
    const runResult = await this.#command(['run', remote.mcpUrl, '--name', DEMO_WORKLOAD, '--no-browser'], true);
    if (runResult.code !== 0) {
      throw new TetherError(
        'ERR_DEMO',
        `\`tether run\` exited with ${String(runResult.code)}:\n${indent(runResult.stderr.trim() || runResult.stdout.trim())}`,
      );
    }
    this.#checkpoint();
    const started = await readStatus(files);
    if (started?.proxyUrl === undefined || started.pid === undefined) {
      throw new TetherError(
        'ERR_DEMO',
        '`tether run` succeeded but the workload wrote no local URL in its status file',
      );
    }
    this.#workloadPid = started.pid;
    const localUrl = started.proxyUrl;
    this.#more(
      `workload ${DEMO_WORKLOAD} serves ${localUrl} (pid ${String(started.pid)}, detached, as after any \`tether run\`)`,
    );
    this.#more('(`tether run` also prints ready-to-paste configs for Cursor, VS Code, Claude Code and Claude Desktop)');
    this.#observe(started);
    this.#more(`status: ${started.status} (refresh ${started.refresh.state})`);
    this.#backgroundLoops.push(this.#watchStatus(files), this.#followAttempts(files));

    // 3. An MCP client through the workload.
    this.#say(
      `3. An MCP client (the SDK's Client over Streamable HTTP) calls \`whoami\` at ${localUrl} once a second.`,
    );
    await this.#connect(localUrl);
    this.#checkpoint();
    this.#backgroundLoops.push(this.#callLoop());
    await this.#until('a first successful `whoami` call', 15_000, () => this.#calls.some((c) => c.ok));
    await this.#wait(2_000);

    // 4. The outage.
    const outageStart = this.#elapsed();
    remote.faults.setFault({ kind: 'waf_403' }, 'token');
    this.#say(
      '4. WAF outage: from now on the token endpoint answers 403 with an HTML block page, as after a VPN drop.',
    );
    const expiresIn = this.#tokenExpiresIn();
    this.#more(
      expiresIn === undefined
        ? 'tether keeps serving the token it has, and refreshes it early, at ~75% of its life.'
        : `The token is still valid for ${this.#seconds(expiresIn)}: tether keeps serving it and refreshes it early, at ~75% of its life.`,
    );
    const expectedTurn = (expiresIn ?? this.#ttlSeconds * 1000) + 15_000;
    await this.#until('the status `auth_retrying` (no valid token left)', expectedTurn, () =>
      this.#seen.some((s) => s.at >= outageStart && s.status === 'auth_retrying'),
    );
    const turnedAt = this.#seen.find((s) => s.at >= outageStart && s.status === 'auth_retrying')?.at ?? this.#elapsed();
    this.#more(
      `The token is expired for sending (10% of its life before its expiry); the WAF stays up ${this.#seconds(this.#holdMs)} more.`,
    );
    await this.#wait(Math.max(0, turnedAt + this.#holdMs - this.#elapsed()));

    // 5. The network comes back.
    const outageEnd = this.#elapsed();
    remote.faults.setFault(undefined);
    this.#say('5. The network is back: the token endpoint answers again. Nobody opens a browser or restarts anything.');
    await this.#until('the status `running` after the outage (the workload never recovered)', 20_000, () => {
      const s = this.#status;
      return s?.status === 'running' && s.refresh.state === 'ok' && this.#seen.some((x) => x.at >= outageEnd);
    });
    const runningAt = this.#seen.find((s) => s.at >= outageEnd && s.status === 'running')?.at ?? this.#elapsed();
    this.#more(`status running again ${this.#seconds(runningAt - outageEnd)} after the network came back`);
    await this.#until('a successful `whoami` call after the outage', 20_000, () =>
      this.#calls.some((c) => c.ok && c.startedAt >= outageEnd),
    );
    const firstOk = this.#calls.find((c) => c.ok && c.startedAt >= outageEnd);
    const okAt = firstOk?.endedAt ?? this.#elapsed();
    this.#more(`the next \`whoami\` call succeeded ${this.#seconds(okAt - outageEnd)} after the network came back`);

    // 6. The timeline and the summary.
    await this.#stopBackground();
    this.#say('6. The timeline, from the workload’s event log (keeper state changes left out):');
    // Complete though the workload still runs: it wrote its count of the outage's 503s when its status turned running.
    const records = await readEvents(files);
    for (const line of timeline(records, this.#started)) this.#write(`${line}\n`);
    this.#write(`\n   The same log drawn as \`tether status ${DEMO_WORKLOAD} --timeline\` draws it:\n`);
    for (const line of renderTimeline(records, Date.now(), 64).trimEnd().split('\n')) this.#write(`   ${line}\n`);
    this.#write('\n');
    this.#summary(records, { outageStart, outageEnd, turnedAt, runningAt, okAt });
    const problem = this.#verdict(records, outageStart, outageEnd);
    if (problem !== undefined) throw new TetherError('ERR_DEMO', problem);

    // 7. tether rm.
    this.#say(`7. $ tether rm ${DEMO_WORKLOAD}`);
    const removed = await this.#command(['rm', DEMO_WORKLOAD], false);
    if (removed.code !== 0) {
      throw new TetherError('ERR_DEMO', `\`tether rm\` exited with ${String(removed.code)}: ${removed.stderr.trim()}`);
    }
    for (const line of removed.stdout.trim().split('\n')) this.#more(line);
    if (isWorkloadProcess(started.pid, DEMO_WORKLOAD)) {
      throw new TetherError(
        'ERR_DEMO',
        `the workload process (pid ${String(started.pid)}) is still alive after \`tether rm\``,
      );
    }
  }

  /** The summary after the timeline: what this run measured, and the contrast with the origin bug report. */
  #summary(
    records: readonly LogRecord[],
    t: { outageStart: number; outageEnd: number; turnedAt: number; runningAt: number; okAt: number },
  ): void {
    const remote = this.#remote;
    if (remote === undefined) return;
    const ok = this.#calls.filter((c) => c.ok).length;
    const failed = this.#calls.filter((c) => !c.ok);
    const kinds = countBy(failed.map((c) => c.kind));
    const at = (ms: number): number => this.#started + ms;
    // The WAF's answers are the outage, whatever the timestamps say at its edges.
    const requests = remote.faults.tokenRequests.filter((r) => r.at >= at(t.outageStart));
    const during = requests.filter((r) => r.answer !== 'forwarded');
    const after = requests.find((r) => r.answer === 'forwarded');
    // The failure episode: the attempts from the outage's start to the first success.
    const since = records.filter(
      (r): r is Extract<LogRecord, { type: 'attempt' }> =>
        r.type === 'attempt' && Date.parse(r.time) >= at(t.outageStart),
    );
    const recovered = since.findIndex((a) => a.outcome === 'success');
    const failures = recovered < 0 ? since : since.slice(0, recovered);
    const success = recovered < 0 ? undefined : since[recovered];
    const statuses = this.#statusesSeen(records);

    const never = !statuses.includes('unauthenticated');
    const budget = this.#shortTier();
    const spent = shortTierSpentAt(failures, budget);

    this.#write('Summary\n');
    const label = 18;
    const line = (name: string, text: string): void => {
      const body = wrap(text, 120, ' '.repeat(label + 2)).trimStart();
      this.#write(`  ${`${name}:`.padEnd(label)}${body}\n`);
    };
    line(
      'whoami calls',
      `${String(ok)} ok, ${String(failed.length)} failed${failed.length === 0 ? '' : ` (${describeCounts(kinds)})`}`,
    );
    line(
      'outage',
      `${this.#seconds(t.outageEnd - t.outageStart)}, of which ${this.#seconds(t.outageEnd - t.turnedAt)} with no valid token (auth_retrying)`,
    );
    line(
      'token requests',
      `${String(during.length)} during the outage: ${describeCounts(countBy(during.map(describeTokenRequest)))}` +
        (after === undefined ? '' : `; then ${describeTokenRequest(after)}`),
    );
    line(
      'refresh attempts',
      `${String(failures.length)} failed (${describeCounts(countBy(failures.map((a) => `${a.trigger} ${a.outcome}`)))})` +
        (success === undefined ? '' : `, then 1 succeeded (${success.trigger})`),
    );
    line(
      'recovery',
      `status running ${this.#seconds(t.runningAt - t.outageEnd)}, first successful call ${this.#seconds(t.okAt - t.outageEnd)} after the network came back; no browser, no restart`,
    );
    line('statuses seen', `${statuses.join(' → ')}${never ? '; never unauthenticated' : ''}`);
    if (spent !== undefined && never) {
      line(
        'vs. origin bug',
        `its monitor marks the workload unauthenticated for good once its short retry is spent (5 tries, ~1–2 min ` +
          `at its defaults); here that budget (${String(budget.maxTries)} tries / ${this.#seconds(budget.maxElapsedMs)}) ` +
          `was spent by ${this.#at(Date.parse(spent.time) - this.#started)}, and tether made ` +
          `${String(failures.length - spent.index - 1)} more attempts and served again ` +
          `${this.#seconds(t.okAt - t.outageEnd)} after the network came back.`,
      );
    }
    this.#write('\n');
  }

  /** Why the run does not tell the story, if it does not. */
  #verdict(records: readonly LogRecord[], outageStart: number, outageEnd: number): string | undefined {
    if (this.#statusesSeen(records).includes('unauthenticated')) return 'the workload turned unauthenticated';
    const remote = this.#remote;
    const at = (ms: number): number => this.#started + ms;
    const during = remote?.faults.tokenRequests.filter((r) => r.at >= at(outageStart) && r.at < at(outageEnd)) ?? [];
    if (during.length === 0) return 'no token request reached the WAF during the outage';
    if (!this.#seen.some((s) => s.status === 'auth_retrying')) return 'the status never turned auth_retrying';
    return undefined;
  }

  /** The statuses in order, from the log's status events and the status file, without repeats. */
  #statusesSeen(records: readonly LogRecord[]): string[] {
    // The log has the keeper's changes only, not the status it started with.
    const fromLog = records.flatMap((r) => (r.type === 'status' ? [r.status] : []));
    const fromFile = this.#seen.map((s) => s.status);
    const all: string[] = fromLog.length > 0 ? [...fromFile.slice(0, 1), ...fromLog] : fromFile;
    if (fromFile.includes('unauthenticated') && !all.includes('unauthenticated')) all.push('unauthenticated');
    return all.filter((s, i) => i === 0 || s !== all[i - 1]);
  }

  #shortTier(): { maxTries: number; maxElapsedMs: number } {
    return {
      maxTries: Number(DEMO_KEEPER_SETTINGS.maxTries),
      maxElapsedMs: parseDuration(DEMO_KEEPER_SETTINGS.maxElapsed),
    };
  }

  // ---- the workload's status and events -------------------------------------

  /** Records a status read from the file; prints a change of status or refresh state. */
  #observe(status: WorkloadStatus): boolean {
    const previous = this.#status;
    this.#status = status;
    if (status.pid !== undefined) this.#workloadPid = status.pid;
    if (previous?.status === status.status && previous.refresh.state === status.refresh.state) return false;
    this.#seen.push({ at: this.#elapsed(), status: status.status, refresh: status.refresh.state });
    if (status.status === 'unauthenticated')
      this.#fatal = `the workload turned unauthenticated: ${status.statusReason}`;
    if (status.status === 'error' || status.status === 'stopped' || status.status === 'stopping') {
      this.#fatal = `the workload stopped serving (status ${status.status}): ${status.statusReason}`;
    }
    return previous !== undefined;
  }

  async #watchStatus(files: WorkloadFiles): Promise<void> {
    const signal = this.#background.signal;
    while (!signal.aborted) {
      const read = await readStatus(files).catch(() => undefined); // a read that fails is retried
      const status = read === undefined ? undefined : effectiveStatus(read); // a dead process shows as error
      if (status !== undefined && this.#observe(status)) {
        this.#more(`status: ${status.status} (refresh ${status.refresh.state}) — ${explainStatus(status)}`);
      }
      await sleep(100, undefined, { signal }).catch(() => undefined);
    }
  }

  /** Prints every refresh attempt as the workload logs it. */
  async #followAttempts(files: WorkloadFiles): Promise<void> {
    const signal = this.#background.signal;
    // The log is small and does not rotate in the demo's time: re-read, print what is new.
    let seen = (await readEvents(files)).length;
    while (!signal.aborted) {
      await sleep(200, undefined, { signal }).catch(() => undefined);
      const records = await readEvents(files).catch(() => []);
      for (const record of records.slice(seen)) {
        if (record.type === 'attempt') this.#more(describeAttempt(record, Date.parse(record.time)));
        else if (record.type === 'hint' || record.type === 'persist_failed') this.#more(describeRecord(record));
      }
      seen = Math.max(seen, records.length);
    }
  }

  #tokenExpiresIn(): number | undefined {
    const expiresAt = this.#status?.token.expiresAt;
    return expiresAt === undefined ? undefined : Date.parse(expiresAt) - Date.now();
  }

  // ---- the MCP client -------------------------------------------------------

  async #connect(url: string): Promise<void> {
    const [{ Client }, { StreamableHTTPClientTransport, StreamableHTTPError }] = await Promise.all([
      import('@modelcontextprotocol/sdk/client/index.js'),
      import('@modelcontextprotocol/sdk/client/streamableHttp.js'),
    ]);
    this.#isHttpError = (error) => error instanceof StreamableHTTPError;
    const recordingFetch = failureRecordingFetch((answer) => {
      this.#lastFailedAnswer = answer;
    });
    const client = new Client({ name: 'tether-demo-client', version: '1.0.0' });
    client.onerror = () => undefined; // failures are reported per call
    const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: recordingFetch });
    await client.connect(transport, { timeout: 10_000 });
    this.#client = client;
  }

  async #callLoop(): Promise<void> {
    const signal = this.#background.signal;
    while (!signal.aborted) {
      const began = Date.now();
      const outcome = await this.#callOnce();
      if (this.#background.signal.aborted) return;
      this.#report(outcome);
      await sleep(Math.max(0, 1000 - (Date.now() - began)), undefined, { signal }).catch(() => undefined);
    }
  }

  async #callOnce(): Promise<CallOutcome> {
    const client = this.#client;
    const startedAt = this.#elapsed();
    this.#lastFailedAnswer = undefined;
    const end = (ok: boolean, label: string, kind: string): CallOutcome => ({
      startedAt,
      endedAt: this.#elapsed(),
      ok,
      label,
      kind,
    });
    if (client === undefined) return end(false, 'no client', 'no client');
    try {
      // No abort signal: the SDK keeps a listener on it per request; closing the client ends a call in flight.
      const result = await client.callTool({ name: 'whoami' }, undefined, { timeout: 10_000 });
      const text = firstText(result);
      if (result.isError === true) return end(false, `tool error ${JSON.stringify(text ?? '')}`, 'tool error');
      return end(true, `ok, ${JSON.stringify(text ?? '')}`, 'ok');
    } catch (error) {
      const answer = this.#failedAnswer();
      if (this.#isHttpError(error) && answer !== undefined) {
        const kind = `${String(answer.status)} ${answer.error ?? 'error'}`;
        return end(false, answer.retryAfter === null ? kind : `${kind}, Retry-After ${answer.retryAfter}`, kind);
      }
      const message = error instanceof Error ? error.message : String(error);
      return end(false, `error: ${message.slice(0, 160)}`, 'error');
    }
  }

  /** Read through a call: TypeScript would keep the field narrowed to `undefined` across the await. */
  #failedAnswer(): FailedAnswer | undefined {
    return this.#lastFailedAnswer;
  }

  /** Prints the first success, every failure, and the first success after failures. */
  #report(outcome: CallOutcome): void {
    const previous = this.#calls.at(-1);
    this.#calls.push(outcome);
    if (!outcome.ok) {
      const expected = outcome.kind === '503 auth_retrying';
      const firstOfKind = previous?.kind !== outcome.kind;
      this.#more(
        `whoami → ${outcome.label}${expected && firstOfKind ? ' (expected: no valid token yet; tether says when to come back)' : ''}`,
      );
      if (outcome.kind === '503 unauthenticated') this.#fatal = 'the local endpoint answered 503 unauthenticated';
    } else if (previous === undefined || !previous.ok) {
      this.#more(`whoami → ${outcome.label}`);
    }
  }

  // ---- commands, waiting, printing ------------------------------------------

  /**
   * Runs `tether ARGS` to its end, relaying its progress (stderr) when `relay`;
   * a login URL it prints is completed by the remote's stand-in user.
   */
  async #command(args: readonly string[], relay: boolean, cleaningUp = false): Promise<CommandResult> {
    if (!cleaningUp) this.#checkpoint();
    const cli = this.#cli;
    const remote = this.#remote;
    if (cli === undefined || remote === undefined) throw new TetherError('ERR_DEMO', 'the remote is not running');
    const child = cli.spawn(args);
    this.#children.add(child);
    let stdout = '';
    let stderr = '';
    let pending = '';
    let loginStarted = false;
    let loginFailed: string | undefined;
    const onLine = (line: string): void => {
      const url = LOGIN_URL.exec(line)?.[0];
      if (url !== undefined && !loginStarted) {
        loginStarted = true;
        if (relay) this.#more(`| ${line.replace(url, shorten(url, 72))}`);
        remote.completeLogin(url).then(
          () => {
            if (relay) this.#more('(the remote’s stand-in user opened that URL and consented: automatic consent)');
          },
          (error: unknown) => {
            loginFailed = error instanceof Error ? error.message : String(error);
          },
        );
        return;
      }
      if (relay && line.trim() !== '') this.#more(`| ${line}`);
    };
    child.stdout?.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
    });
    child.stderr?.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      stderr += text;
      pending += text;
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      for (const line of lines) onLine(line);
    });
    const exited = new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code, signal) => {
        resolve(code ?? (signal === null ? -1 : 128));
      });
    });
    const onInterrupt = (): void => {
      child.kill('SIGINT');
    };
    if (!cleaningUp) this.#interrupted.signal.addEventListener('abort', onInterrupt, { once: true });
    const timeout = setTimeout(() => {
      child.kill('SIGTERM');
    }, 60_000);
    try {
      const code = await exited;
      if (pending !== '') onLine(pending);
      if (loginFailed !== undefined) stderr += `\n(the stand-in user could not complete the login: ${loginFailed})\n`;
      if (relay) {
        const workloadLine = stdout.split('\n').find((l) => l.startsWith('Workload '));
        if (workloadLine !== undefined) this.#more(`| ${workloadLine}`);
      }
      return { code, stdout, stderr };
    } finally {
      clearTimeout(timeout);
      this.#interrupted.signal.removeEventListener('abort', onInterrupt);
      this.#children.delete(child);
    }
  }

  /** Waits until `done()`, failing as soon as the workload turns fatal or `timeoutMs` passes; keeps the terminal alive. */
  async #until(what: string, timeoutMs: number, done: () => boolean): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#fatal !== undefined) throw new TetherError('ERR_DEMO', this.#fatal);
      if (done()) return;
      if (Date.now() > deadline) {
        throw new TetherError('ERR_DEMO', `${what} did not happen within ${this.#seconds(timeoutMs)}`);
      }
      await sleep(100, undefined, { signal: this.#interrupted.signal });
      this.#heartbeat();
    }
  }

  /** Ends the story here if it was interrupted. */
  #checkpoint(): void {
    if (this.#interrupted.signal.aborted) throw new TetherError(CANCELLED, 'interrupted');
  }

  async #wait(ms: number): Promise<void> {
    const end = Date.now() + ms;
    await this.#until('a pause', ms + 60_000, () => Date.now() >= end);
  }

  /** A line after a few quiet seconds, so that nobody stares at a silent terminal. */
  #heartbeat(): void {
    if (Date.now() - this.#lastLine < 3_000) return;
    const status = this.#status;
    const expiresIn = this.#tokenExpiresIn();
    const ok = this.#calls.filter((c) => c.ok).length;
    const failed = this.#calls.length - ok;
    const token =
      expiresIn === undefined
        ? ''
        : expiresIn > 0
          ? `; token expires in ${this.#seconds(expiresIn)}`
          : `; token expired ${this.#seconds(-expiresIn)} ago`;
    this.#more(
      `… status ${status?.status ?? 'unknown'} (refresh ${status?.refresh.state ?? 'unknown'})${token}; whoami ${String(ok)} ok, ${String(failed)} failed`,
    );
  }

  #elapsed(): number {
    return Date.now() - this.#started;
  }

  #at(ms: number): string {
    return `+${(ms / 1000).toFixed(1)}s`;
  }

  #seconds(ms: number): string {
    return `${(ms / 1000).toFixed(1)} s`;
  }

  #write(text: string): void {
    this.#out.write(text);
    this.#lastLine = Date.now();
  }

  /** A numbered step or a notable moment, with its time since the start. */
  #say(text: string): void {
    this.#write(`${stamp(this.#elapsed())} ${text}\n`);
  }

  /** A line within the current step. */
  #more(text: string): void {
    this.#write(`${stamp(this.#elapsed())}    ${text}\n`);
  }

  // ---- set-up and clean-up ----------------------------------------------------

  /** The CLI's environment: the demo's state directory and store key, the compressed timings, no proxies. */
  #childEnv(home: string): NodeJS.ProcessEnv {
    const aliases = new Set(KEEPER_ENV.map((variable) => variable.alias));
    const env: NodeJS.ProcessEnv = Object.fromEntries(
      Object.entries(this.#baseEnv).filter(([key]) => !/^(https?|all)_proxy$/i.test(key) && !aliases.has(key)),
    );
    for (const variable of KEEPER_ENV) env[variable.name] = DEMO_KEEPER_SETTINGS[variable.key];
    env['TETHER_HOME'] = home;
    env['TETHER_STORE_KEY'] = 'file';
    return env;
  }

  async #stopBackground(): Promise<void> {
    this.#background.abort();
    await Promise.allSettled(this.#backgroundLoops);
    this.#backgroundLoops = [];
    const client = this.#client;
    this.#client = undefined;
    await client?.close().catch(() => undefined);
  }

  /**
   * Removes everything the story started: the client, the workload (`tether
   * rm`, else its process killed), the remote, the state directory. Returns
   * what could not be cleaned up, if anything.
   */
  async #cleanUp(failed: boolean): Promise<string | undefined> {
    const problems: string[] = [];
    await this.#stopBackground();
    for (const child of this.#children) child.kill('SIGINT');
    await this.#waitFor(() => this.#children.size === 0, 5_000);
    for (const child of this.#children) child.kill('SIGKILL');

    const files = this.#files;
    if (files !== undefined && existsSync(files.dir)) {
      if (failed) this.#write('Cleaning up …\n');
      // `tether run` may have been cut off just after it started the workload: give it time to write its pid.
      if (existsSync(files.stderr)) await this.#waitFor(() => existsSync(files.status), 3_000);
      const status = await readStatus(files).catch(() => undefined);
      if (status?.pid !== undefined) this.#workloadPid = status.pid;
      if (this.#cli !== undefined && this.#remote !== undefined) {
        const removed = await this.#command(['rm', DEMO_WORKLOAD], false, true).catch(() => undefined);
        if (removed?.code !== 0)
          problems.push(`\`tether rm ${DEMO_WORKLOAD}\` failed: ${removed?.stderr.trim() ?? ''}`);
      }
    }
    const pid = this.#workloadPid;
    if (pid !== undefined && isWorkloadProcess(pid, DEMO_WORKLOAD)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      problems.push(`the workload process (pid ${String(pid)}) had to be killed`);
    }
    await this.#remote?.close().catch(() => undefined);
    this.#remote = undefined;
    if (this.#home !== undefined) await rm(this.#home, { recursive: true, force: true });
    return problems.length === 0 ? undefined : problems.join('; ');
  }

  async #waitFor(done: () => boolean, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!done() && Date.now() < deadline) await sleep(50);
  }
}

// ---- formatting ---------------------------------------------------------------

function stamp(ms: number): string {
  return `[${(ms / 1000).toFixed(1).padStart(6)}s]`;
}

/** `text` wrapped at `width` columns, every line indented. */
function wrap(text: string, width: number, indentation: string): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line !== '' && indentation.length + line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line === '' ? word : `${line} ${word}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines.map((l) => `${indentation}${l}`).join('\n');
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `    ${line}`)
    .join('\n');
}

function shorten(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

function explainStatus(status: WorkloadStatus): string {
  switch (status.status) {
    case 'running':
      return status.refresh.state === 'ok'
        ? 'serving with a fresh token'
        : 'the refresh is failing, but the token still valid is served';
    case 'auth_retrying':
      return 'no valid token left: local requests get 503 + Retry-After while tether keeps retrying';
    default:
      return status.statusReason;
  }
}

/** A refresh attempt for people, its next attempt relative to when it happened. */
function describeAttempt(record: Extract<LogRecord, { type: 'attempt' }>, at: number): string {
  if (record.outcome === 'success') {
    return `refresh (${record.trigger}) succeeded in ${String(Math.round(record.durationMs))} ms: a new token`;
  }
  const why = record.reason === undefined ? '' : `, ${REASONS[record.reason] ?? record.reason}`;
  const next =
    record.nextAttemptAt === undefined
      ? ''
      : `; next try in ${((Date.parse(record.nextAttemptAt) - at) / 1000).toFixed(1)} s`;
  return `refresh (${record.trigger}) failed: ${record.detail ?? ''}${why} → ${record.outcome}${next}`;
}

const ISO_TIME = /\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z\b/g;

/** `formatRecord` without its time; times in its text are shown since `startedAt`, when given. */
function describeRecord(record: LogRecord, startedAt?: number): string {
  const text = formatRecord(record);
  const cut = text.indexOf('  ');
  const description = cut < 0 ? text : text.slice(cut + 2);
  return startedAt === undefined
    ? description
    : description.replace(ISO_TIME, (time) => `+${((Date.parse(time) - startedAt) / 1000).toFixed(1)}s`);
}

/**
 * The event log as a timeline with times since the story began: keeper state
 * changes are left out, and the local endpoint's failed requests are
 * summarised at the first of them.
 */
export function timeline(records: readonly LogRecord[], startedAt: number): string[] {
  const proxied = new Map<string, { first: number; last: number; count: number }>();
  for (const record of records) {
    if (record.type !== 'proxy') continue;
    const key = `${record.method} ${record.path} → ${String(record.status)}`;
    const at = Date.parse(record.time);
    // A line with `repeats` stands for that many requests like the one before it (the log folds them), the
    // last of them at its time.
    const count = record.repeats ?? 1;
    const entry = proxied.get(key);
    if (entry === undefined) proxied.set(key, { first: at, last: at, count });
    else proxied.set(key, { ...entry, last: at, count: entry.count + count });
  }
  const lines: string[] = [];
  const printed = new Set<string>();
  for (const record of records) {
    const at = Date.parse(record.time);
    const prefix = `  ${stamp(at - startedAt)} `;
    switch (record.type) {
      case 'state':
        break;
      case 'attempt':
        lines.push(`${prefix}${describeAttempt(record, at)}`);
        break;
      case 'proxy': {
        const key = `${record.method} ${record.path} → ${String(record.status)}`;
        const entry = proxied.get(key);
        if (printed.has(key) || entry === undefined) break;
        printed.add(key);
        const span =
          entry.count === 1
            ? ''
            : ` ×${String(entry.count)}, until ${stamp(entry.last - startedAt)
                .slice(1, -1)
                .trim()}`;
        lines.push(`${prefix}local endpoint: ${key}${span}`);
        break;
      }
      default:
        lines.push(`${prefix}${describeRecord(record, startedAt)}`);
    }
  }
  return lines;
}

function countBy(values: readonly string[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  return counts;
}

function describeCounts(counts: ReadonlyMap<string, number>): string {
  if (counts.size === 0) return 'none';
  return [...counts].map(([what, n]) => `${String(n)} × ${what}`).join(', ');
}

function describeTokenRequest(request: RecordedTokenRequest): string {
  const status = request.status === undefined ? 'no answer' : String(request.status);
  return request.answer === 'forwarded'
    ? `${status} from the authorization server`
    : `${status} ${request.answer === 'waf_403' ? 'HTML block page from the WAF' : request.answer}`;
}

/**
 * The failed attempt by which the short tier's budget (tries or elapsed time)
 * was certainly spent, and its index, if it was.
 */
function shortTierSpentAt(
  failures: readonly Extract<LogRecord, { type: 'attempt' }>[],
  budget: { maxTries: number; maxElapsedMs: number },
): { index: number; time: string } | undefined {
  const first = failures[0];
  if (first === undefined) return undefined;
  const start = Date.parse(first.time);
  const index = failures.findIndex(
    (f, i) => i + 1 >= budget.maxTries || Date.parse(f.time) - start >= budget.maxElapsedMs,
  );
  const spent = failures[index];
  return spent === undefined ? undefined : { index, time: spent.time };
}

function firstText(result: unknown): string | undefined {
  const content = (result as { content?: unknown }).content;
  if (!Array.isArray(content)) return undefined;
  const first: unknown = content[0];
  return typeof first === 'object' && first !== null && 'text' in first && typeof first.text === 'string'
    ? first.text
    : undefined;
}

/**
 * A fetch for the SDK's HTTP transport that tells `onFailure` how each failed
 * POST was answered (status, the JSON `error`, Retry-After): the SDK's error
 * keeps only the status.
 */
export function failureRecordingFetch(
  onFailure: (answer: FailedAnswer) => void,
): (input: string | URL, init?: RequestInit) => Promise<Response> {
  return async (input, init) => {
    const response = await fetch(input, init);
    if (init?.method === 'POST' && !response.ok) {
      const body = await response
        .clone()
        .text()
        .catch(() => '');
      onFailure({
        status: response.status,
        error: jsonErrorField(body),
        retryAfter: response.headers.get('retry-after'),
      });
    }
    return response;
  };
}

/** The `error` field of a JSON body (tether's own 503s, an OAuth error), if there is one. */
function jsonErrorField(body: string): string | undefined {
  try {
    const value = JSON.parse(body) as unknown;
    return typeof value === 'object' && value !== null && 'error' in value && typeof value.error === 'string'
      ? value.error
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Makes loopback bypass any forward proxy set in `env`: the demo's peers are
 * all on 127.0.0.1, and a corporate proxy cannot reach them.
 */
function bypassProxiesForLoopback(env: NodeJS.ProcessEnv): void {
  const proxied = Object.keys(env).some((key) => /^(https?|all)_proxy$/i.test(key) && env[key] !== '');
  if (!proxied) return;
  const current = env['NO_PROXY'] ?? env['no_proxy'] ?? '';
  const extra = ['127.0.0.1', 'localhost'].filter(
    (host) =>
      !current
        .split(',')
        .map((s) => s.trim())
        .includes(host),
  );
  const value = [current, ...extra].filter((s) => s !== '').join(',');
  env['NO_PROXY'] = value;
  env['no_proxy'] = value;
}
