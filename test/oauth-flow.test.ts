import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CredentialStore } from '../src/store/store.js';
import { systemClock } from '../src/clock/system.js';
import { classifyFailure } from '../src/keeper/classify.js';
import type { RefreshResult } from '../src/keeper/types.js';
import { discover, discoveredScopes, type Discovery, DiscoveryError } from '../src/oauth/discovery.js';
import { assertSecureEndpoint, HttpClient, oauthRequestOptions } from '../src/oauth/http.js';
import { loginWithBrowser } from '../src/oauth/login.js';
import { createRefreshFunction } from '../src/oauth/refresh.js';
import { type DynamicClient, ensureClient, staticClient } from '../src/oauth/registration.js';
import {
  headlessBrowser,
  loginHeadlessly,
  startAuthServer,
  type TestAuthServer,
  TEST_ACCOUNT,
  MemoryRegistrations,
} from '../src/demo/auth-server.js';
import { startMcpServer, type TestMcpServer, mcpStatus } from '../src/demo/mcp-server.js';

const REDIRECT_URI = 'http://127.0.0.1/callback';

/** The store's registration cache, in memory. */

function signal(): AbortSignal {
  return new AbortController().signal;
}

function tokensOf(result: RefreshResult) {
  if (!result.ok) throw new Error(`refresh failed: ${JSON.stringify(result.failure)}`);
  return result.tokens;
}

describe('discovery → registration → login → refresh against oidc-provider and an SDK MCP server', () => {
  let as: TestAuthServer;
  let mcp: TestMcpServer;
  let http: HttpClient;

  beforeEach(async () => {
    as = await startAuthServer({ accessTokenTtlSeconds: 120 });
    mcp = await startMcpServer({ issuer: as.issuer, jwks: as.jwks });
    http = new HttpClient({ clock: systemClock, totalTimeoutMs: 5000 });
  });

  afterEach(async () => {
    await http.close();
    await mcp.close();
    await as.close();
  });

  async function registerAndLogin(): Promise<{ discovery: Discovery; client: DynamicClient; refreshToken: string }> {
    const discovery = await discover(mcp.url, { http });
    const store = new MemoryRegistrations();
    const client = await ensureClient(discovery.authorizationServer, {
      http,
      clock: systemClock,
      store,
      redirectUris: [REDIRECT_URI],
    });
    const login = await loginHeadlessly({
      http,
      authorizationServer: discovery.authorizationServer,
      clientId: client.clientId,
      resource: discovery.resource,
    });
    return { discovery, client, refreshToken: login.refreshToken };
  }

  it('discovers through the 401 challenge, registers, logs in, refreshes and rotates', async () => {
    const discovery = await discover(mcp.url, { http });
    expect(discovery.authorizationServer.issuer).toBe(as.issuer);
    expect(discovery.resource).toBe(mcp.url);
    expect(discovery.challengeScope).toBe('mcp');
    // oidc-provider publishes OpenID discovery only: RFC 8414's URL is tried first and misses.
    expect(discovery.attempts.map((a) => [a.step, a.outcome, a.url])).toEqual([
      ['probe', 'ok', mcp.url],
      ['protected_resource', 'ok', mcp.resourceMetadataUrl],
      ['authorization_server', 'ERR_METADATA_STATUS', `${as.issuer}/.well-known/oauth-authorization-server`],
      ['authorization_server', 'ok', `${as.issuer}/.well-known/openid-configuration`],
    ]);

    const store = new MemoryRegistrations();
    const client = await ensureClient(discovery.authorizationServer, {
      http,
      clock: systemClock,
      store,
      redirectUris: [REDIRECT_URI],
    });
    expect(client).toMatchObject({ kind: 'dynamic', tokenEndpointAuthMethod: 'none', issuer: as.issuer });
    expect(client.clientSecret).toBeUndefined();
    expect(store.entries.get(as.issuer)).toEqual(client);

    const login = await loginHeadlessly({
      http,
      authorizationServer: discovery.authorizationServer,
      clientId: client.clientId,
      resource: discovery.resource,
    });
    expect(await mcpStatus(mcp.url, login.accessToken)).toBe(200);

    const refresh = createRefreshFunction({
      http,
      authorizationServer: discovery.authorizationServer,
      client,
      resource: discovery.resource,
    });
    const first = tokensOf(await refresh(login.refreshToken, signal()));
    expect(first.refreshToken).toBeDefined();
    expect(first.refreshToken).not.toBe(login.refreshToken);
    expect(first.expiresIn).toBe(120);
    expect(first.tokenType).toBe('bearer');
    expect(await mcpStatus(mcp.url, first.accessToken)).toBe(200);
    expect(mcp.requests.at(-1)?.subject).toBe(TEST_ACCOUNT);

    const second = tokensOf(await refresh(first.refreshToken ?? '', signal()));
    expect(second.refreshToken).not.toBe(first.refreshToken);

    // The rotated-out token now gets the server's real verdict.
    const reused = await refresh(login.refreshToken, signal());
    expect(reused.ok).toBe(false);
    if (reused.ok) return;
    expect(reused.failure).toMatchObject({ kind: 'http', status: 400 });
    const verdict = classifyFailure(reused.failure, Date.now());
    expect(verdict).toMatchObject({ class: 'permanent', reason: 'oauth_error', oauthError: 'invalid_grant' });
  });

  it('fits the browser login of src/oauth/login.ts: a port-less loopback registration, then a refresh', async () => {
    const discovery = await discover(mcp.url, { http });
    const as = discovery.authorizationServer;
    // One registration serves every callback port (RFC 8252 §7.3), so the cache holds.
    const client = await ensureClient(as, {
      http,
      clock: systemClock,
      store: new MemoryRegistrations(),
      redirectUris: [REDIRECT_URI],
    });
    const tokenEndpoint = assertSecureEndpoint(String(as.token_endpoint), 'token_endpoint');
    const tokens = await loginWithBrowser({
      as,
      client: { clientId: client.clientId },
      resource: discovery.resource,
      scopes: discoveredScopes(discovery),
      clock: systemClock,
      prompt: () => undefined,
      requestOptions: oauthRequestOptions(http, tokenEndpoint),
      launch: headlessBrowser(http),
    });
    expect(await mcpStatus(mcp.url, tokens.accessToken)).toBe(200);
    const refresh = createRefreshFunction({ http, authorizationServer: as, client, resource: discovery.resource });
    const refreshed = tokensOf(await refresh(tokens.refreshToken ?? '', signal()));
    expect(await mcpStatus(mcp.url, refreshed.accessToken)).toBe(200);
  });

  it('caches the registration in the credential store, encrypted, for the next process', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'tether-reg-'));
    try {
      const discovery = await discover(mcp.url, { http });
      const options = { http, clock: systemClock, redirectUris: [REDIRECT_URI] };
      const first = await ensureClient(discovery.authorizationServer, {
        ...options,
        store: (await CredentialStore.open({ dir, env: { TETHER_STORE_KEY: 'file' } })).registrations(),
      });
      // Another process opens the same store: the registration is reused, not made again.
      const second = await ensureClient(discovery.authorizationServer, {
        ...options,
        store: (await CredentialStore.open({ dir, env: { TETHER_STORE_KEY: 'file' } })).registrations(),
      });
      expect(second).toEqual(first);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reuses the cached registration, and registers anew on demand or when the redirect URI is new', async () => {
    const discovery = await discover(mcp.url, { http });
    const store = new MemoryRegistrations();
    const options = { http, clock: systemClock, store, redirectUris: [REDIRECT_URI] };
    const first = await ensureClient(discovery.authorizationServer, options);
    const again = await ensureClient(discovery.authorizationServer, options);
    expect(again).toBe(first);
    expect(store.puts).toBe(1);

    const fresh = await ensureClient(discovery.authorizationServer, { ...options, reregister: true });
    expect(fresh.clientId).not.toBe(first.clientId);
    expect(store.puts).toBe(2);

    const other = await ensureClient(discovery.authorizationServer, {
      ...options,
      redirectUris: ['http://127.0.0.1:8765/callback'],
    });
    expect(other.clientId).not.toBe(fresh.clientId);
    expect(other.redirectUris).toEqual(['http://127.0.0.1:8765/callback']);
    expect(store.puts).toBe(3);

    // A cached secret past its expiry is no use: registered anew.
    store.entries.set(as.issuer, { ...other, clientSecret: 'old', clientSecretExpiresAt: Date.now() - 1000 });
    const renewed = await ensureClient(discovery.authorizationServer, {
      ...options,
      redirectUris: ['http://127.0.0.1:8765/callback'],
    });
    expect(renewed.clientId).not.toBe(other.clientId);
    expect(store.puts).toBe(4);
  });

  it('a revoked grant gets a real invalid_grant, classified permanent', async () => {
    const { discovery, client, refreshToken } = await registerAndLogin();
    await as.revokeGrant(refreshToken);
    const refresh = createRefreshFunction({
      http,
      authorizationServer: discovery.authorizationServer,
      client,
      resource: discovery.resource,
    });
    const result = await refresh(refreshToken, signal());
    if (result.ok) throw new Error('expected a failure');
    expect(classifyFailure(result.failure, Date.now())).toMatchObject({
      class: 'permanent',
      oauthError: 'invalid_grant',
    });
  });

  it('finds root metadata when the server sends a bare Bearer challenge', async () => {
    await mcp.close();
    mcp = await startMcpServer({ issuer: as.issuer, jwks: as.jwks, challenge: 'bare', metadataAt: 'root' });
    const discovery = await discover(mcp.url, { http });
    expect(discovery.authorizationServer.issuer).toBe(as.issuer);
    expect(discovery.attempts.map((a) => [a.step, a.outcome, a.status])).toEqual([
      ['probe', 'ok', 401],
      ['protected_resource', 'ERR_METADATA_STATUS', 404],
      ['protected_resource', 'ok', 200],
      ['authorization_server', 'ERR_METADATA_STATUS', 404],
      ['authorization_server', 'ok', 200],
    ]);
  });
});

describe('discovery without protected-resource metadata, and bad metadata', () => {
  let as: TestAuthServer;
  let http: HttpClient;
  const servers: TestMcpServer[] = [];

  beforeEach(async () => {
    as = await startAuthServer();
    http = new HttpClient({ clock: systemClock, totalTimeoutMs: 5000 });
  });

  afterEach(async () => {
    await http.close();
    for (const server of servers.splice(0)) await server.close();
    await as.close();
  });

  async function mcpServer(options: Omit<Parameters<typeof startMcpServer>[0], 'issuer' | 'jwks'>) {
    const server = await startMcpServer({ issuer: as.issuer, jwks: as.jwks, ...options });
    servers.push(server);
    return server;
  }

  it('tries the MCP origin as the authorization server, and lists every attempt when that fails too', async () => {
    const mcp = await mcpServer({ challenge: 'none', metadataAt: 'none' });
    const origin = new URL(mcp.url).origin;
    const error = await discover(mcp.url, { http }).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (!(error instanceof DiscoveryError)) throw new Error('expected a DiscoveryError');
    expect(error.code).toBe('ERR_DISCOVERY');
    expect(error.attempts.map((a) => [a.step, a.method, a.outcome, a.status, a.url])).toEqual([
      ['probe', 'POST', 'ok', 401, mcp.url],
      ['protected_resource', 'GET', 'ERR_METADATA_STATUS', 404, `${origin}/.well-known/oauth-protected-resource/mcp`],
      ['protected_resource', 'GET', 'ERR_METADATA_STATUS', 404, `${origin}/.well-known/oauth-protected-resource`],
      ['authorization_server', 'GET', 'ERR_METADATA_STATUS', 404, `${origin}/.well-known/oauth-authorization-server`],
      ['authorization_server', 'GET', 'ERR_METADATA_STATUS', 404, `${origin}/.well-known/openid-configuration`],
    ]);
    for (const attempt of error.attempts) expect(error.message).toContain(JSON.stringify(attempt.url));
  });

  it('uses the given issuer and resource instead (--issuer, --resource)', async () => {
    const mcp = await mcpServer({ challenge: 'none', metadataAt: 'none' });
    const discovery = await discover(mcp.url, { http, issuer: as.issuer, resource: 'https://api.example/' });
    expect(discovery.authorizationServer.issuer).toBe(as.issuer);
    expect(discovery.resource).toBe('https://api.example/');
    expect(discovery.protectedResource).toBeUndefined();
  });

  it('refuses metadata for another resource: ERR_RESOURCE_MISMATCH', async () => {
    const mcp = await mcpServer({ resource: 'http://127.0.0.1:1/mcp' });
    await expect(discover(mcp.url, { http })).rejects.toMatchObject({ code: 'ERR_RESOURCE_MISMATCH' });
  });

  it('refuses a non-http MCP URL: ERR_INVALID_URL', async () => {
    await expect(discover('file:///etc/passwd', { http })).rejects.toMatchObject({ code: 'ERR_INVALID_URL' });
    await expect(discover('not a url', { http })).rejects.toMatchObject({ code: 'ERR_INVALID_URL' });
  });

  it('refuses an authorization server on plain http away from loopback before asking it', async () => {
    const mcp = await mcpServer({});
    await expect(discover(mcp.url, { http, issuer: 'http://auth.example.com' })).rejects.toMatchObject({
      code: 'ERR_INSECURE_ENDPOINT',
    });
  });

  it('says so when the server offers no registration: ERR_REGISTRATION_UNSUPPORTED', async () => {
    await as.close();
    as = await startAuthServer({ registration: false });
    const mcp = await mcpServer({});
    const discovery = await discover(mcp.url, { http });
    const store = new MemoryRegistrations();
    await expect(
      ensureClient(discovery.authorizationServer, { http, clock: systemClock, store, redirectUris: [REDIRECT_URI] }),
    ).rejects.toMatchObject({ code: 'ERR_REGISTRATION_UNSUPPORTED' });
    expect(store.puts).toBe(0);
  });
});

describe('a static client', () => {
  it('refreshes with client_secret_basic, the secret never in a failure', async () => {
    const secret = 'static-secret-0123456789abcdef0123456789abcdef';
    const as = await startAuthServer({
      clients: [
        {
          client_id: 'tether-static',
          client_secret: secret,
          token_endpoint_auth_method: 'client_secret_basic',
          redirect_uris: [REDIRECT_URI],
        },
      ],
    });
    const mcp = await startMcpServer({ issuer: as.issuer, jwks: as.jwks });
    const http = new HttpClient({ clock: systemClock, totalTimeoutMs: 5000 });
    try {
      const discovery = await discover(mcp.url, { http });
      const client = staticClient(discovery.authorizationServer, { clientId: 'tether-static', clientSecret: secret });
      expect(client.tokenEndpointAuthMethod).toBe('client_secret_basic');
      const login = await loginHeadlessly({
        http,
        authorizationServer: discovery.authorizationServer,
        clientId: client.clientId,
        clientSecret: secret,
        resource: discovery.resource,
      });
      const refresh = createRefreshFunction({
        http,
        authorizationServer: discovery.authorizationServer,
        client,
        resource: discovery.resource,
      });
      const tokens = tokensOf(await refresh(login.refreshToken, signal()));
      expect(await mcpStatus(mcp.url, tokens.accessToken)).toBe(200);

      const wrong = createRefreshFunction({
        http,
        authorizationServer: discovery.authorizationServer,
        client: { ...client, clientSecret: 'not-the-secret' },
        resource: discovery.resource,
      });
      const result = await wrong(tokens.refreshToken ?? '', signal());
      if (result.ok) throw new Error('expected a failure');
      expect(classifyFailure(result.failure, Date.now())).toMatchObject({
        class: 'permanent',
        oauthError: 'invalid_client',
      });
      expect(JSON.stringify(result.failure)).not.toContain('not-the-secret');
      expect(JSON.stringify(result.failure)).not.toContain(tokens.refreshToken);
    } finally {
      await http.close();
      await mcp.close();
      await as.close();
    }
  });
});
