/**
 * `loginWithDeviceCode` (RFC 8628) against oidc-provider with its device flow
 * enabled. The HTTP is real; the login's waits run on a {@link FakeClock}, so
 * the test sees every wait the login asks for and decides when it ends: each
 * step waits (in real time) until the login is asleep on the fake clock, reads
 * how long it wants to sleep, and advances the clock by that much, which sends
 * the next real poll. The user is the auth server's headless one, who enters
 * the code on the verification page.
 */
import { createLocalJWKSet, jwtVerify } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { systemClock } from '../src/clock/system.js';
import { TetherError } from '../src/errors.js';
import type { TokenSet } from '../src/keeper/types.js';
import { discover, discoveredScopes, type Discovery } from '../src/oauth/discovery.js';
import { assertSecureEndpoint, HttpClient, oauthRequestOptions } from '../src/oauth/http.js';
import { loginWithDeviceCode, type LoginPrompt } from '../src/oauth/login.js';
import { DEFAULT_GRANT_TYPES, type DynamicClient, ensureClient } from '../src/oauth/registration.js';
import {
  type DeviceFlowOptions,
  startAuthServer,
  TEST_ACCOUNT,
  type TestAuthServer,
  MemoryRegistrations,
} from '../src/demo/auth-server.js';
import { startMcpServer } from '../src/demo/mcp-server.js';

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const REDIRECT_URI = 'http://127.0.0.1/callback';

const realDelay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A device login in progress, driven step by step on a fake clock. */
class DeviceLogin {
  readonly clock = new FakeClock();
  readonly prompts: LoginPrompt[] = [];
  /** Fake-clock sleeps the login asked for, in order. */
  readonly sleeps: number[] = [];
  /** Fake (monotonic) time of each poll sent. */
  readonly pollTimes: number[] = [];
  readonly result: Promise<TokenSet>;
  #settled = false;

  constructor(
    private readonly as: TestAuthServer,
    discovery: Discovery,
    client: DynamicClient,
    http: HttpClient,
    signal?: AbortSignal,
  ) {
    const authorizationServer = discovery.authorizationServer;
    this.result = loginWithDeviceCode({
      as: authorizationServer,
      client: { clientId: client.clientId, tokenEndpointAuthMethod: client.tokenEndpointAuthMethod },
      resource: discovery.resource,
      scopes: discoveredScopes(discovery),
      clock: this.clock,
      prompt: (prompt) => this.prompts.push(prompt),
      requestOptions: oauthRequestOptions(
        http,
        assertSecureEndpoint(String(authorizationServer.token_endpoint), 'token_endpoint'),
      ),
      ...(signal !== undefined && { signal }),
    });
    this.result.then(
      () => (this.#settled = true),
      () => (this.#settled = true),
    );
  }

  get devicePolls(): number {
    return this.as.tokenRequests.filter((r) => r.grantType === DEVICE_GRANT).length;
  }

  /** The device prompt shown to the user. */
  get shown(): Extract<LoginPrompt, { kind: 'device' }> {
    const prompt = this.prompts[0];
    if (prompt?.kind !== 'device') throw new Error('no device prompt was shown');
    return prompt;
  }

  /** Waits (in real time) until the login sleeps on the clock; returns how long it sleeps, or undefined once it has ended. */
  async nextSleep(): Promise<number | undefined> {
    for (let i = 0; i < 1000; i++) {
      const due = this.clock.nextTimerAt();
      if (due !== undefined) return due - this.clock.monotonic();
      if (this.#settled) return undefined;
      await realDelay(5);
    }
    throw new Error('the login neither slept nor ended within 5 s');
  }

  /** Lets the login's next sleep run out, which sends one poll; waits until it is answered. */
  async poll(): Promise<void> {
    const sleep = await this.nextSleep();
    if (sleep === undefined) throw new Error('the login has already ended');
    this.sleeps.push(sleep);
    const before = this.devicePolls;
    await this.clock.advance(sleep);
    this.pollTimes.push(this.clock.monotonic());
    // Answered: the login sleeps again or has ended.
    for (let i = 0; i < 1000 && this.clock.nextTimerAt() === undefined && !this.#settled; i++) await realDelay(5);
    if (this.devicePolls === before && !this.#settled) throw new Error('no poll was sent');
  }
}

async function errorOf(promise: Promise<unknown>): Promise<TetherError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof TetherError)) throw new Error(`expected a TetherError, got ${String(error)}`);
  return error;
}

describe('loginWithDeviceCode against oidc-provider', () => {
  /** What a test started, closed after it in reverse order. */
  const started: { close(): Promise<void> }[] = [];

  afterEach(async () => {
    for (const peer of started.splice(0).reverse()) await peer.close();
  });

  /** Starts the peers, discovers, and registers a client that may use the device grant. */
  async function setUp(deviceFlow: DeviceFlowOptions | undefined) {
    const server = await startAuthServer({
      accessTokenTtlSeconds: 120,
      ...(deviceFlow !== undefined && { deviceFlow }),
    });
    started.push(server);
    const mcp = await startMcpServer({ issuer: server.issuer, jwks: server.jwks });
    started.push(mcp);
    const transport = new HttpClient({ clock: systemClock, totalTimeoutMs: 5000 });
    started.push(transport);
    const discovery = await discover(mcp.url, { http: transport });
    const client = await ensureClient(discovery.authorizationServer, {
      http: transport,
      clock: systemClock,
      store: new MemoryRegistrations(),
      redirectUris: [REDIRECT_URI],
      grantTypes: deviceFlow === undefined ? DEFAULT_GRANT_TYPES : [...DEFAULT_GRANT_TYPES, DEVICE_GRANT],
    });
    return {
      as: server,
      mcpUrl: mcp.url,
      discovery,
      client,
      start: (signal?: AbortSignal) => new DeviceLogin(server, discovery, client, transport, signal),
    };
  }

  it('shows the code and the URL, polls at the server’s interval while pending, and gets tokens once approved', async () => {
    const { as, mcpUrl, discovery, client, start } = await setUp({ intervalSeconds: 2 });
    expect(discovery.authorizationServer.device_authorization_endpoint).toBe(`${as.issuer}/device/auth`);
    const login = start();

    await login.poll();
    const shown = login.shown;
    expect(shown.userCode).toMatch(/^[A-Z]{4}-[A-Z]{4}$/);
    expect(shown.verificationUri).toBe(`${as.issuer}/device`);
    expect(shown.verificationUriComplete).toBe(`${as.issuer}/device?user_code=${shown.userCode}`);
    expect(shown.expiresInMs).toBe(600_000);
    expect(login.prompts).toHaveLength(1);

    await login.poll();
    const page = await as.enterUserCode(shown.userCode);
    expect(page.status).toBe(200);
    expect(page.body).toContain('Signed in');
    await login.poll();
    const tokens = await login.result;

    // Polled every 2 s (the server's interval), pending twice, then the tokens.
    expect(login.sleeps).toEqual([2000, 2000, 2000]);
    expect(login.pollTimes).toEqual([2000, 4000, 6000]);
    expect(as.tokenRequests.map((r) => [r.grantType, r.status, r.error])).toEqual([
      [DEVICE_GRANT, 400, 'authorization_pending'],
      [DEVICE_GRANT, 400, 'authorization_pending'],
      [DEVICE_GRANT, 200, undefined],
    ]);

    expect(tokens.refreshToken).toEqual(expect.any(String));
    expect(tokens.issuedAt).toBe(login.clock.now());
    expect(tokens.expiresAt).toBe(login.clock.now() + 120_000);
    const { payload } = await jwtVerify(tokens.accessToken, createLocalJWKSet(as.jwks), {
      issuer: as.issuer,
      audience: mcpUrl,
    });
    expect(payload.sub).toBe(TEST_ACCOUNT);
    expect(payload.client_id).toBe(client.clientId);
    expect(String(payload.scope).split(' ')).toEqual(expect.arrayContaining(discoveredScopes(discovery)));
  });

  it('waits 5 s between polls when the server states no interval (oidc-provider’s default)', async () => {
    const { as, start } = await setUp({});
    const login = start();
    await login.poll();
    await login.poll();
    expect(login.sleeps).toEqual([5000, 5000]);
    await as.enterUserCode(login.shown.userCode);
    await login.poll();
    await expect(login.result).resolves.toMatchObject({ refreshToken: expect.any(String) as unknown });
  });

  it('slow_down adds 5 s to the interval, for that poll and every later one', async () => {
    const { as, start } = await setUp({ intervalSeconds: 1 });
    const login = start();
    await login.poll();
    as.slowDownNextPolls(1);
    await login.poll();
    await login.poll();
    await login.poll();
    await as.enterUserCode(login.shown.userCode);
    await login.poll();
    await login.result;
    expect(as.tokenRequests.map((r) => r.error)).toEqual([
      'authorization_pending',
      'slow_down',
      'authorization_pending',
      'authorization_pending',
      undefined,
    ]);
    expect(login.sleeps).toEqual([1000, 1000, 6000, 6000, 6000]);
  });

  it('the user aborts on the confirmation page → ERR_LOGIN_DENIED, and polling stops', async () => {
    const { as, start } = await setUp({ intervalSeconds: 1 });
    const login = start();
    await login.poll();
    await as.enterUserCode(login.shown.userCode, 'abort');
    await login.poll();
    const error = await errorOf(login.result);
    expect(error.code).toBe('ERR_LOGIN_DENIED');
    expect(as.tokenRequests.map((r) => r.error)).toEqual(['authorization_pending', 'access_denied']);
    expect(await login.nextSleep()).toBeUndefined();
  });

  it('the user denies consent after signing in → ERR_LOGIN_DENIED', async () => {
    const { as, start } = await setUp({ intervalSeconds: 1 });
    as.consent = 'deny';
    const login = start();
    await login.poll();
    await as.enterUserCode(login.shown.userCode);
    await login.poll();
    expect((await errorOf(login.result)).code).toBe('ERR_LOGIN_DENIED');
    expect(as.tokenRequests.at(-1)?.error).toBe('access_denied');
  });

  it('gives up when the code’s lifetime has run out on the clock → ERR_LOGIN_TIMEOUT, without a poll past it', async () => {
    const { as, start } = await setUp({ intervalSeconds: 1, ttlSeconds: 3 });
    const login = start();
    await login.poll();
    await login.poll();
    expect(login.shown.expiresInMs).toBe(3000);
    await login.poll(); // at 3 s the code has expired: the login ends instead of polling
    const error = await errorOf(login.result);
    expect(error.code).toBe('ERR_LOGIN_TIMEOUT');
    expect(error.message).toContain('expired');
    expect(as.tokenRequests.map((r) => r.error)).toEqual(['authorization_pending', 'authorization_pending']);
  });

  it('the server says expired_token → ERR_LOGIN_TIMEOUT', async () => {
    const { as, start } = await setUp({ intervalSeconds: 1, ttlSeconds: 2 });
    const login = start();
    await login.nextSleep();
    // Real time runs past the server's 2 s lifetime while the login's clock stays short of it.
    await realDelay(2100);
    await login.poll();
    const error = await errorOf(login.result);
    expect(error.code).toBe('ERR_LOGIN_TIMEOUT');
    expect(as.tokenRequests.map((r) => r.error)).toEqual(['expired_token']);
  });

  it('a server without a device authorization endpoint → ERR_LOGIN_UNSUPPORTED, nothing shown or sent', async () => {
    const { as, start } = await setUp(undefined);
    const login = start();
    const error = await errorOf(login.result);
    expect(error.code).toBe('ERR_LOGIN_UNSUPPORTED');
    expect(error.message).toContain('--device-code');
    expect(login.prompts).toEqual([]);
    expect(as.tokenRequests).toEqual([]);
  });

  it('a login cancelled while it waits to poll → ERR_LOGIN_ABORTED, no further poll', async () => {
    const { as, start } = await setUp({ intervalSeconds: 1 });
    const controller = new AbortController();
    const login = start(controller.signal);
    await login.poll();
    expect(await login.nextSleep()).toBe(1000);
    controller.abort();
    expect((await errorOf(login.result)).code).toBe('ERR_LOGIN_ABORTED');
    expect(login.devicePolls).toBe(1);
    expect(login.clock.pendingTimers).toBe(0);
    expect(as.tokenRequests).toHaveLength(1);
  });

  it('a login cancelled before the code is issued → ERR_LOGIN_ABORTED', async () => {
    const { start } = await setUp({ intervalSeconds: 1 });
    const controller = new AbortController();
    controller.abort();
    const login = start(controller.signal);
    expect((await errorOf(login.result)).code).toBe('ERR_LOGIN_ABORTED');
  });
});
