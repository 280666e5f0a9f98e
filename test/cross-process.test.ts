/**
 * Across processes (issue 3): real tether processes — each a real TokenKeeper
 * over the shared credential store and a real refresh function — refresh one
 * credential in a loop against oidc-provider with refresh-token rotation, in
 * which one careless overlap (a spent refresh token sent again) gets a real
 * `invalid_grant` and the whole token family revoked. The fault proxy in
 * front of the server records every token request; each child reports which
 * refresh token (a hash of it) each of its requests sent and got back, so the
 * test can check that the requests form one unbroken chain of rotations.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLocalJWKSet, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { systemClock } from '../src/clock/system.js';
import type { RefreshFunction, TokenSet } from '../src/keeper/types.js';
import { discover, type Discovery } from '../src/oauth/discovery.js';
import { HttpClient } from '../src/oauth/http.js';
import { createRefreshFunction } from '../src/oauth/refresh.js';
import { type DynamicClient, ensureClient } from '../src/oauth/registration.js';
import { CredentialStore } from '../src/store/store.js';
import { loginHeadlessly, startAuthServer, type TestAuthServer, TEST_ACCOUNT } from '../src/demo/auth-server.js';
import { type FaultProxy, type RecordedTokenRequest, startFaultProxy } from '../src/demo/fault-proxy.js';
import { startMcpServer, type TestMcpServer, mcpStatus } from '../src/demo/mcp-server.js';
import type { ChildLine, RefreshChildArgs } from './support/refresh-child.js';

const CHILD = fileURLToPath(new URL('./support/refresh-child.ts', import.meta.url));
const REDIRECT_URI = 'http://127.0.0.1/callback';
/** The one workload name every process shares. */
const NAME = 'shared';
const PROCESSES = 4;
const ROTATIONS = 200;
/** Short, so that a hung holder is taken over within the test; the default is 30 s. */
const STALE_MS = 1_500;
/** The lock wait timeout of the children: a takeover must come well before it. */
const LOCK_TIMEOUT_MS = 20_000;
/** Longest random pause between two triggers of one child, so that the processes interleave. */
const MAX_PAUSE_MS = 5;

type RequestLine = Extract<ChildLine, { type: 'request' }>;
type FailureLine = Extract<ChildLine, { type: 'failure' }>;
type DoneLine = Extract<ChildLine, { type: 'done' }>;

/** Every child process still running. */
const running = new Set<ChildProcess>();
/** Every child spawned: afterAll kills those still running and waits for them (a backstop to onTestFinished). */
const spawned: Child[] = [];

/** A child process running test/support/refresh-child.ts, with its output lines. */
class Child {
  readonly lines: ChildLine[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #process: ChildProcess;
  #waiters: (() => void)[] = [];

  constructor(args: RefreshChildArgs) {
    this.#process = spawn(process.execPath, ['--import', 'tsx', CHILD, JSON.stringify(args)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    running.add(this.#process);
    spawned.push(this);
    // Ended with its test, passed or failed, so that no child outlives it.
    onTestFinished(async () => {
      this.kill('SIGKILL');
      await this.exited;
    });
    let buffer = '';
    this.#process.stdout?.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('utf8');
      const parts = buffer.split('\n');
      buffer = parts.pop() ?? '';
      for (const part of parts) if (part !== '') this.lines.push(JSON.parse(part) as ChildLine);
      this.#wake();
    });
    this.exited = new Promise((resolve) => {
      // `close`, not `exit`: its output has been read to the end by then.
      this.#process.on('close', (code, signal) => {
        running.delete(this.#process);
        this.#wake();
        resolve({ code, signal });
      });
    });
  }

  get pid(): number | undefined {
    return this.#process.pid;
  }

  /** True once the child has exited or reported a failed attempt: waiting on is pointless then. */
  get inTrouble(): boolean {
    return !running.has(this.#process) || this.lines.some((l) => l.type === 'failure');
  }

  /** The first line of `type`, once printed; rejects if the child exits first. */
  async next<T extends ChildLine['type']>(type: T): Promise<Extract<ChildLine, { type: T }>> {
    for (;;) {
      const line = this.lines.find((l): l is Extract<ChildLine, { type: T }> => l.type === type);
      if (line !== undefined) return line;
      if (!running.has(this.#process)) throw new Error(`child ${String(this.pid)} exited before printing ${type}`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  of<T extends ChildLine['type']>(type: T): Extract<ChildLine, { type: T }>[] {
    return this.lines.filter((l): l is Extract<ChildLine, { type: T }> => l.type === type);
  }

  kill(signal: NodeJS.Signals): void {
    if (running.has(this.#process)) this.#process.kill(signal);
  }

  #wake(): void {
    for (const wake of this.#waiters.splice(0)) wake();
  }
}

function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 16);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls until `condition` holds; fails at once, saying why, when a child is in trouble. */
async function waitUntil(
  what: string,
  condition: () => boolean,
  timeoutMs: number,
  children: readonly Child[] = [],
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    const trouble = children.filter((c) => c.inTrouble);
    if (trouble.length > 0) {
      const report = trouble.map((c) => JSON.stringify(c.lines.filter((l) => l.type !== 'request').slice(-5)));
      throw new Error(`while waiting for ${what}, children failed or exited: ${report.join('; ')}`);
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

describe('Across processes', () => {
  let proxy: FaultProxy;
  let as: TestAuthServer;
  let mcp: TestMcpServer;
  let http: HttpClient;
  let dir: string;
  let home: string;
  let store: CredentialStore;
  let discovery: Discovery;
  let client: DynamicClient;
  let refresh: RefreshFunction;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'tether-xproc-'));
    home = path.join(dir, 'home');
    proxy = await startFaultProxy();
    as = await startAuthServer({ issuer: proxy.url, accessTokenTtlSeconds: 120 });
    proxy.setTarget(as.url);
    mcp = await startMcpServer({ issuer: as.issuer, jwks: as.jwks });
    http = new HttpClient({ clock: systemClock, totalTimeoutMs: 5_000 });
    store = await CredentialStore.open({ dir: home, env: { TETHER_STORE_KEY: 'file' } });
    discovery = await discover(mcp.url, { http });
    client = await ensureClient(discovery.authorizationServer, {
      http,
      clock: systemClock,
      store: store.registrations(),
      redirectUris: [REDIRECT_URI],
    });
    const sentAt = Date.now();
    const login = await loginHeadlessly({
      http,
      authorizationServer: discovery.authorizationServer,
      clientId: client.clientId,
      resource: discovery.resource,
    });
    await store.saveTokens(NAME, {
      accessToken: login.accessToken,
      refreshToken: login.refreshToken,
      issuedAt: sentAt,
      ...(login.expiresIn !== undefined && { expiresAt: sentAt + login.expiresIn * 1000 }),
      ...(login.scope !== undefined && { scope: login.scope }),
      tokenType: 'bearer',
    });
    refresh = createRefreshFunction({
      http,
      authorizationServer: discovery.authorizationServer,
      client,
      resource: discovery.resource,
    });
  }, 30_000);

  afterAll(async () => {
    for (const child of spawned) child.kill('SIGKILL'); // also ends a stopped (SIGSTOP) one
    await Promise.all(spawned.map((child) => child.exited));
    await http.close();
    await mcp.close();
    await as.close();
    await proxy.close();
    await rm(dir, { recursive: true, force: true });
  });

  function refresher(id: string, stopFile: string): Child {
    return new Child({
      mode: 'refresh',
      id,
      home,
      name: NAME,
      staleMs: STALE_MS,
      timeoutMs: LOCK_TIMEOUT_MS,
      stopFile,
      authorizationServer: discovery.authorizationServer,
      client,
      resource: discovery.resource,
      maxPauseMs: MAX_PAUSE_MS,
    });
  }

  function holder(id: string): Child {
    return new Child({ mode: 'hold', id, home, name: NAME, staleMs: STALE_MS, timeoutMs: LOCK_TIMEOUT_MS });
  }

  /** The refresh-token grants the proxy saw from index `from` of its record on. */
  function refreshGrants(from: number): RecordedTokenRequest[] {
    return proxy.tokenRequests.slice(from).filter((r) => r.grantType === 'refresh_token');
  }

  async function storedTokens(): Promise<TokenSet & { refreshToken: string }> {
    const tokens = await store.loadTokens(NAME);
    if (tokens?.refreshToken === undefined) throw new Error('no stored token set with a refresh token');
    return { ...tokens, refreshToken: tokens.refreshToken };
  }

  /**
   * The requests the children reported form one chain from `start`: each
   * sent the refresh token the previous one got, none sent a token twice, all
   * succeeded; returns the hash of the last refresh token issued.
   */
  function followChain(requests: readonly RequestLine[], start: string): string {
    expect(requests.filter((r) => !r.ok)).toEqual([]);
    const used = requests.map((r) => r.used);
    expect(new Set(used).size, 'a refresh token was sent more than once').toBe(used.length);
    const next = new Map(requests.map((r) => [r.used, r.got]));
    let link = start;
    let length = 0;
    for (let got = next.get(link); got !== undefined; got = next.get(link)) {
      link = got;
      length++;
    }
    expect(length, 'requests outside the chain of rotations').toBe(requests.length);
    return link;
  }

  /** The stored token set is good: its access token verifies for the MCP server and is accepted; its refresh token works. */
  async function expectStoredCredentialValid(lastIssued: string): Promise<void> {
    const tokens = await storedTokens();
    expect(tokenHash(tokens.refreshToken)).toBe(lastIssued);
    const { payload } = await jwtVerify(tokens.accessToken, createLocalJWKSet(as.jwks), {
      issuer: as.issuer,
      audience: discovery.resource,
    });
    expect(payload.sub).toBe(TEST_ACCOUNT);
    expect(await mcpStatus(mcp.url, tokens.accessToken)).toBe(200);
    const sentAt = Date.now();
    const result = await refresh(tokens.refreshToken, new AbortController().signal);
    if (!result.ok) throw new Error(`the stored refresh token was refused: ${JSON.stringify(result.failure)}`);
    // Stored again, as a keeper would, so that the credential stays usable.
    await store.saveTokens(NAME, {
      accessToken: result.tokens.accessToken,
      refreshToken: result.tokens.refreshToken ?? tokens.refreshToken,
      issuedAt: sentAt,
      ...(result.tokens.expiresIn !== undefined && { expiresAt: sentAt + result.tokens.expiresIn * 1000 }),
    });
  }

  /** Stops the children through their stop file and collects what they reported. */
  async function stopAll(children: readonly Child[], stopFile: string) {
    await writeFile(stopFile, '');
    const done: DoneLine[] = await Promise.all(children.map((c) => c.next('done')));
    const exits = await Promise.all(children.map((c) => c.exited));
    expect(exits).toEqual(children.map(() => ({ code: 0, signal: null })));
    const requests: RequestLine[] = children.flatMap((c) => c.of('request')).sort((a, b) => a.at - b.at);
    const failures: FailureLine[] = children.flatMap((c) => c.of('failure'));
    return { done, requests, failures };
  }

  it(`${PROCESSES} processes, ≥ ${ROTATIONS} rotations: one token request per rotation, no invalid_grant, the stored token valid`, async () => {
    const start = tokenHash((await storedTokens()).refreshToken);
    const from = proxy.tokenRequests.length;
    const stopFile = path.join(dir, 'stop-rotations');
    const startedAt = Date.now();
    const children = Array.from({ length: PROCESSES }, (_, i) => refresher(`p${String(i + 1)}`, stopFile));
    await Promise.all(children.map((c) => c.next('ready')));
    await waitUntil(`${ROTATIONS} rotations`, () => refreshGrants(from).length >= ROTATIONS, 60_000, children);
    const { done, requests, failures } = await stopAll(children, stopFile);
    const elapsed = Date.now() - startedAt;

    const grants = refreshGrants(from);
    // Every token request reached the server and was answered 200: no invalid_grant (a 400), nothing else.
    expect(grants.filter((g) => g.answer !== 'forwarded' || g.status !== 200)).toEqual([]);
    expect(grants.length).toBeGreaterThanOrEqual(ROTATIONS);
    // What the server saw is what the processes sent, and those requests form one chain of
    // rotations: exactly one token request per rotation, no refresh token used twice.
    expect(requests).toHaveLength(grants.length);
    const last = followChain(requests, start);
    expect(requests.filter((r) => r.error === 'invalid_grant')).toHaveLength(0);
    expect(failures).toEqual([]);
    // Every process took part, and the skip-if-already-refreshed path ran.
    for (const d of done) {
      expect(d.state, `process ${d.id}`).toBe('fresh');
      expect(d.refreshed, `process ${d.id}`).toBeGreaterThan(0);
    }
    expect(done.reduce((n, d) => n + d.refreshed, 0)).toBe(grants.length);
    const adopted = done.reduce((n, d) => n + d.adopted, 0);
    expect(adopted).toBeGreaterThan(0);
    await expectStoredCredentialValid(last);

    const perProcess = done.map((d) => `${d.id}: ${String(d.refreshed)} refreshed, ${String(d.adopted)} adopted`);
    console.info(
      `[cross-process] ${String(grants.length)} rotations = ${String(requests.length)} refresh requests, ` +
        `0 invalid_grant, ${String(adopted)} adoptions, in ${String(elapsed)} ms (${perProcess.join('; ')})`,
    );
  }, 90_000);

  it('a process killed with SIGKILL while it holds the lock, then one that hangs holding it: the others take over and the credential stays good', async () => {
    const start = tokenHash((await storedTokens()).refreshToken);
    const from = proxy.tokenRequests.length;
    const stopFile = path.join(dir, 'stop-takeover');
    const lockFile = path.join(home, 'locks', `workload-${NAME}.lock`);
    const children = Array.from({ length: PROCESSES }, (_, i) => refresher(`q${String(i + 1)}`, stopFile));
    await Promise.all(children.map((c) => c.next('ready')));
    await waitUntil('refreshes before the kill', () => refreshGrants(from).length >= 10, 30_000, children);

    // 1. kill -9 of a holder.
    const killed = holder('killed');
    await killed.next('holding');
    const heldAt = refreshGrants(from).length;
    // A live holder (its heartbeat running) is never taken over, however long it holds the lock.
    await sleep(STALE_MS + 500);
    expect(refreshGrants(from).length).toBe(heldAt);
    killed.kill('SIGKILL');
    const killedAt = Date.now();
    await waitUntil('a refresh after the kill', () => refreshGrants(from).length > heldAt, LOCK_TIMEOUT_MS, children);
    const afterKill = (refreshGrants(from)[heldAt]?.at ?? Infinity) - killedAt;
    expect(await killed.exited).toEqual({ code: null, signal: 'SIGKILL' });
    // Its pid is gone from this host: taken over at once (lock.ts), at the latest after the stale timeout.
    expect(afterKill).toBeLessThanOrEqual(STALE_MS + 1_000);
    await waitUntil('refreshes after the kill', () => refreshGrants(from).length >= heldAt + 10, 30_000, children);

    // 2. A holder that hangs (SIGSTOP, its pid still alive): taken over after the stale timeout, not before.
    const frozen = holder('frozen');
    await frozen.next('holding');
    frozen.kill('SIGSTOP');
    await sleep(50); // stopped for sure: no heartbeat from here on
    const frozenAt = refreshGrants(from).length;
    const lastBeat = (await stat(lockFile)).mtimeMs;
    await waitUntil('a refresh after the hang', () => refreshGrants(from).length > frozenAt, LOCK_TIMEOUT_MS, children);
    const afterLastBeat = (refreshGrants(from)[frozenAt]?.at ?? Infinity) - lastBeat;
    expect(afterLastBeat).toBeGreaterThanOrEqual(STALE_MS);
    expect(afterLastBeat).toBeLessThan(STALE_MS + 3_000); // well under the lock wait timeout (20 s)
    frozen.kill('SIGKILL');
    expect(await frozen.exited).toEqual({ code: null, signal: 'SIGKILL' });
    await waitUntil(
      'refreshes after the takeover',
      () => refreshGrants(from).length >= frozenAt + 10,
      30_000,
      children,
    );

    const { done, requests, failures } = await stopAll(children, stopFile);
    const grants = refreshGrants(from);
    expect(grants.filter((g) => g.answer !== 'forwarded' || g.status !== 200)).toEqual([]);
    expect(requests).toHaveLength(grants.length);
    const last = followChain(requests, start);
    // No attempt failed: not an invalid_grant, not a lock timeout.
    expect(failures).toEqual([]);
    for (const d of done) expect(d.state, `process ${d.id}`).toBe('fresh');
    await expectStoredCredentialValid(last);
    // Nothing left behind: no lock, no takeover guard.
    expect((await readdir(path.join(home, 'locks'))).filter((f) => f.startsWith(`workload-${NAME}`))).toEqual([]);

    console.info(
      `[cross-process] takeover: ${String(afterKill)} ms after SIGKILL of the holder (pid gone), ` +
        `${String(Math.round(afterLastBeat))} ms after the last heartbeat of a hung holder (stale ${String(STALE_MS)} ms); ` +
        `${String(grants.length)} rotations, 0 invalid_grant`,
    );
  }, 90_000);
});
