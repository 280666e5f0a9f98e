/**
 * `loginWithBrowser` against the real peers: oidc-provider (the authorization
 * server) and an SDK MCP server. Discovery and dynamic registration are
 * tether's own; the browser is {@link headlessBrowser}, which follows the
 * authorization URL through the server's interactions and then requests the
 * loopback callback like a browser would, so the page the listener answers is
 * the page a user would see.
 */
import { createLocalJWKSet, jwtVerify } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { systemClock } from '../src/clock/system.js';
import { TetherError } from '../src/errors.js';
import type { TokenSet } from '../src/keeper/types.js';
import { discover, discoveredScopes, type Discovery } from '../src/oauth/discovery.js';
import { assertSecureEndpoint, HttpClient, oauthRequestOptions } from '../src/oauth/http.js';
import { LOGIN_TIMEOUT_MS, loginWithBrowser, type BrowserLoginOptions, type LoginPrompt } from '../src/oauth/login.js';
import { type DynamicClient, ensureClient } from '../src/oauth/registration.js';
import {
  headlessBrowser,
  type HeadlessBrowserOptions,
  startAuthServer,
  TEST_ACCOUNT,
  type TestAuthServer,
  MemoryRegistrations,
} from '../src/demo/auth-server.js';
import { startMcpServer, type TestMcpServer, mcpStatus } from '../src/demo/mcp-server.js';

/** Port-less: one registration serves every callback port (RFC 8252 §7.3), as registration.ts recommends. */
const REDIRECT_URI = 'http://127.0.0.1/callback';

/** What the headless browser saw at the loopback callback. */
interface CallbackVisit {
  readonly url: URL;
  readonly status: number;
  readonly body: string;
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  return promise.then(
    () => 'resolved',
    (error: unknown) => (error instanceof TetherError ? error.code : `other: ${String(error)}`),
  );
}

describe('loginWithBrowser against oidc-provider', () => {
  let as: TestAuthServer;
  let mcp: TestMcpServer;
  let http: HttpClient;
  let discovery: Discovery;
  let client: DynamicClient;
  let prompts: LoginPrompt[];
  let visits: CallbackVisit[];

  beforeEach(async () => {
    as = await startAuthServer({ accessTokenTtlSeconds: 120 });
    mcp = await startMcpServer({ issuer: as.issuer, jwks: as.jwks });
    http = new HttpClient({ clock: systemClock, totalTimeoutMs: 5000 });
    discovery = await discover(mcp.url, { http });
    client = await ensureClient(discovery.authorizationServer, {
      http,
      clock: systemClock,
      store: new MemoryRegistrations(),
      redirectUris: [REDIRECT_URI],
    });
    prompts = [];
    visits = [];
  });

  afterEach(async () => {
    await http.close();
    await mcp.close();
    await as.close();
  });

  /** The login as the CLI runs it, with the headless browser in place of the user's. */
  function login(hooks: Omit<HeadlessBrowserOptions, 'onCallback'> = {}): Promise<TokenSet> {
    const authorizationServer = discovery.authorizationServer;
    const tokenEndpoint = assertSecureEndpoint(String(authorizationServer.token_endpoint), 'token_endpoint');
    const options: BrowserLoginOptions = {
      as: authorizationServer,
      client: { clientId: client.clientId, tokenEndpointAuthMethod: client.tokenEndpointAuthMethod },
      resource: discovery.resource,
      scopes: discoveredScopes(discovery),
      clock: systemClock,
      prompt: (prompt) => prompts.push(prompt),
      requestOptions: oauthRequestOptions(http, tokenEndpoint),
      launch: headlessBrowser(http, {
        ...hooks,
        onCallback: (url, page) => visits.push({ url, ...page }),
      }),
    };
    return loginWithBrowser(options);
  }

  const codeExchanges = (): number => as.tokenRequests.filter((r) => r.grantType === 'authorization_code').length;

  it('registers a port-less loopback client, logs in through the server, and gets a refresh token and a JWT for the MCP URL', async () => {
    const scopes = discoveredScopes(discovery);
    expect(scopes).toEqual(['mcp']);
    expect(client).toMatchObject({ kind: 'dynamic', tokenEndpointAuthMethod: 'none', redirectUris: [REDIRECT_URI] });

    const tokens = await login();

    // The prompt got the authorization URL the browser was sent to, with what the server needs.
    expect(prompts).toHaveLength(1);
    const prompt = prompts[0];
    if (prompt?.kind !== 'browser') throw new Error('expected a browser prompt');
    expect(prompt).toMatchObject({ opened: true, timeoutMs: LOGIN_TIMEOUT_MS });
    const url = new URL(prompt.url);
    expect(`${url.origin}${url.pathname}`).toBe(discovery.authorizationServer.authorization_endpoint);
    const params = url.searchParams;
    expect(params.get('client_id')).toBe(client.clientId);
    expect(params.get('resource')).toBe(mcp.url);
    expect(params.get('code_challenge_method')).toBe('S256');
    expect(params.get('scope')?.split(' ')).toEqual(expect.arrayContaining(['mcp', 'offline_access']));
    // The registered URI has no port; the login's listener has one, and the server accepted it.
    const redirect = new URL(params.get('redirect_uri') ?? '');
    expect(`${redirect.protocol}//${redirect.hostname}${redirect.pathname}`).toBe('http://127.0.0.1/callback');
    expect(redirect.port).toMatch(/^\d+$/);

    // The callback the server redirected to: the code, our state, and the RFC 9207 issuer.
    expect(discovery.authorizationServer.authorization_response_iss_parameter_supported).toBe(true);
    expect(visits).toHaveLength(1);
    const visit = visits[0];
    expect(visit?.url.searchParams.get('state')).toBe(params.get('state'));
    expect(visit?.url.searchParams.get('iss')).toBe(as.issuer);
    expect(visit?.url.searchParams.has('code')).toBe(true);
    // The page the user sees in the tab.
    expect(visit?.status).toBe(200);
    expect(visit?.body).toContain('You can close this tab');

    // Tokens: a refresh token, and a JWT access token for the MCP server, signed by the AS.
    expect(tokens.refreshToken).toEqual(expect.any(String));
    expect(tokens.tokenType?.toLowerCase()).toBe('bearer');
    expect(tokens.expiresAt === undefined ? undefined : tokens.expiresAt - tokens.issuedAt).toBe(120_000);
    const { payload } = await jwtVerify(tokens.accessToken, createLocalJWKSet(as.jwks), {
      issuer: as.issuer,
      audience: mcp.url,
    });
    expect(payload.sub).toBe(TEST_ACCOUNT);
    expect(payload.client_id).toBe(client.clientId);
    expect(String(payload.scope).split(' ')).toEqual(expect.arrayContaining(scopes));
    expect(tokens.scope?.split(' ')).toEqual(expect.arrayContaining(scopes));
    expect(await mcpStatus(mcp.url, tokens.accessToken)).toBe(200);
    expect(codeExchanges()).toBe(1);

    // The listener is gone once the login is over.
    await expect(fetch(visit?.url ?? '')).rejects.toThrow();
  });

  it('RFC 9207: a callback whose iss is not the issuer (mix-up) → ERR_LOGIN_STATE, the code never exchanged', async () => {
    const code = await codeOf(
      login({
        rewriteCallback: (url) => {
          url.searchParams.set('iss', 'https://attacker.example');
          return url;
        },
      }),
    );
    expect(code).toBe('ERR_LOGIN_STATE');
    expect(visits[0]?.url.searchParams.has('code')).toBe(true);
    expect(codeExchanges()).toBe(0);
  });

  it('RFC 9207: the server advertises iss, so a callback without it → ERR_LOGIN_STATE', async () => {
    const code = await codeOf(
      login({
        rewriteCallback: (url) => {
          url.searchParams.delete('iss');
          return url;
        },
      }),
    );
    expect(code).toBe('ERR_LOGIN_STATE');
    expect(codeExchanges()).toBe(0);
  });

  it('a user who denies consent at the server → ERR_LOGIN_DENIED, and the tab says the sign-in did not complete', async () => {
    as.consent = 'deny';
    const error = await login().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(TetherError);
    expect((error as TetherError).code).toBe('ERR_LOGIN_DENIED');
    expect((error as TetherError).message).toContain('access_denied');

    const visit = visits[0];
    expect(visit?.url.searchParams.get('error')).toBe('access_denied');
    expect(visit?.url.searchParams.get('iss')).toBe(as.issuer);
    expect(visit?.status).toBe(400);
    expect(visit?.body).toContain('did not complete');
    expect(visit?.body).not.toContain('close this tab');
    expect(codeExchanges()).toBe(0);

    // The same user changes their mind: the next login works.
    as.consent = 'grant';
    expect(await codeOf(login())).toBe('resolved');
    expect(codeExchanges()).toBe(1);
  });

  it('a login cancelled while the browser opens → ERR_LOGIN_ABORTED at once', async () => {
    const clock = new FakeClock();
    const controller = new AbortController();
    const login = codeOf(
      loginWithBrowser({
        as: discovery.authorizationServer,
        client: { clientId: client.clientId },
        resource: discovery.resource,
        clock,
        prompt: (prompt) => prompts.push(prompt),
        signal: controller.signal,
        launch: () => {
          controller.abort(); // the user presses Ctrl-C before finishing in the browser
          return Promise.resolve(true);
        },
      }),
    );
    try {
      const early = await Promise.race([login, new Promise((resolve) => setTimeout(resolve, 200, 'pending'))]);
      expect(early).toBe('ERR_LOGIN_ABORTED');
    } finally {
      await clock.advance(LOGIN_TIMEOUT_MS); // ends the stuck login (ERR_LOGIN_TIMEOUT) and closes its listener
      await login;
    }
  });
});
