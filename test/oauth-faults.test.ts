import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock/system.js';
import { TetherError } from '../src/errors.js';
import { classifyFailure } from '../src/keeper/classify.js';
import type { FailureReason } from '../src/keeper/failure.js';
import type { RefreshFunction } from '../src/keeper/types.js';
import { discover, type Discovery, DiscoveryError } from '../src/oauth/discovery.js';
import { HttpClient } from '../src/oauth/http.js';
import { createRefreshFunction } from '../src/oauth/refresh.js';
import { type DynamicClient, ensureClient, type RegistrationStore } from '../src/oauth/registration.js';
import { loginHeadlessly, startAuthServer, type TestAuthServer } from '../src/demo/auth-server.js';
import { type Fault, type FaultProxy, startFaultProxy } from '../src/demo/fault-proxy.js';
import { startMcpServer, type TestMcpServer } from '../src/demo/mcp-server.js';

const REDIRECT_URI = 'http://127.0.0.1/callback';
const TIMEOUT_MS = 500;

let proxy: FaultProxy;
let as: TestAuthServer;
let mcp: TestMcpServer;
let http: HttpClient;
let discovery: Discovery;
let client: DynamicClient;
let refresh: RefreshFunction;
/** The refresh token the server currently honours. */
let current: string;

const store: RegistrationStore & { puts: number; entry?: DynamicClient } = {
  puts: 0,
  get() {
    return Promise.resolve(this.entry);
  },
  put(_issuer, registration) {
    this.puts++;
    this.entry = registration;
    return Promise.resolve();
  },
};

beforeAll(async () => {
  proxy = await startFaultProxy();
  as = await startAuthServer({ issuer: proxy.url });
  proxy.setTarget(as.url);
  mcp = await startMcpServer({ issuer: as.issuer, jwks: as.jwks });
  http = new HttpClient({ clock: systemClock, totalTimeoutMs: TIMEOUT_MS });
  discovery = await discover(mcp.url, { http });
  client = await ensureClient(discovery.authorizationServer, {
    http,
    clock: systemClock,
    store,
    redirectUris: [REDIRECT_URI],
  });
  current = (
    await loginHeadlessly({
      http,
      authorizationServer: discovery.authorizationServer,
      clientId: client.clientId,
      resource: discovery.resource,
    })
  ).refreshToken;
  refresh = createRefreshFunction({
    http,
    authorizationServer: discovery.authorizationServer,
    client,
    resource: discovery.resource,
  });
});

afterAll(async () => {
  await http.close();
  await mcp.close();
  await as.close();
  await proxy.close();
});

beforeEach(() => {
  proxy.setFault(undefined);
});

async function refreshOk(): Promise<void> {
  const result = await refresh(current, new AbortController().signal);
  if (!result.ok) throw new Error(`refresh failed: ${JSON.stringify(result.failure)}`);
  current = result.tokens.refreshToken ?? current;
}

describe('every fault of the fault proxy is a failure the classifier calls transient', () => {
  const faults: [Fault, FailureReason, Record<string, unknown>][] = [
    [{ kind: 'waf_403' }, 'no_oauth_error', { kind: 'http', status: 403 }],
    [{ kind: 'server_error' }, 'server_error_status', { kind: 'http', status: 503 }],
    [{ kind: 'server_error', status: 500 }, 'server_error_status', { kind: 'http', status: 500 }],
    [{ kind: 'rate_limited', retryAfter: '30' }, 'rate_limited', { kind: 'http', status: 429 }],
    [{ kind: 'reset' }, 'network', { kind: 'network' }],
    [{ kind: 'hang' }, 'network', { kind: 'network', code: 'ERR_TIMEOUT' }],
    [{ kind: 'html_200' }, 'invalid_token_response', { kind: 'http', status: 200 }],
    [{ kind: 'truncated_json' }, 'invalid_token_response', { kind: 'http', status: 200 }],
    [{ kind: 'huge' }, 'invalid_token_response', { kind: 'http', status: 200 }],
    [
      { kind: 'json', status: 200, body: { token_type: 'bearer', expires_in: 60 } },
      'invalid_token_response',
      { kind: 'http', status: 200 },
    ],
    [
      { kind: 'json', status: 400, body: { error: 'temporarily_unavailable' } },
      'oauth_transient',
      { kind: 'http', status: 400 },
    ],
  ];

  it.each(faults)('%o → %s', async (fault, reason, shape) => {
    const before = proxy.tokenRequests.length;
    proxy.setFault(fault);
    const result = await refresh(current, new AbortController().signal);
    if (result.ok) throw new Error('expected a failure');
    expect(result.failure).toMatchObject(shape);
    const verdict = classifyFailure(result.failure, Date.now());
    expect(verdict).toMatchObject({ class: 'transient', reason });
    if (fault.kind === 'rate_limited') expect(verdict.retryAfterMs).toBe(30_000);

    // Answered by the proxy, never forwarded: the same refresh token still works.
    expect(proxy.tokenRequests.slice(before)).toEqual([
      expect.objectContaining({ grantType: 'refresh_token', answer: fault.kind }),
    ]);
    proxy.setFault(undefined);
    await refreshOk();
    expect(proxy.tokenRequests.at(-1)).toMatchObject({ answer: 'forwarded', status: 200 });
  });

  it("gives up at once when the keeper's signal aborts", async () => {
    proxy.setFault({ kind: 'hang' });
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => {
      controller.abort();
    }, 50);
    const result = await refresh(current, controller.signal);
    expect(Date.now() - started).toBeLessThan(TIMEOUT_MS - 100);
    expect(result).toMatchObject({ ok: false, failure: { kind: 'network', code: 'ABORT_ERR' } });
  });

  it('keeps the failure free of tokens', async () => {
    proxy.setFault({ kind: 'json', status: 200, body: { access_token: 'leaked-at', refresh_token: 'leaked-rt' } });
    const result = await refresh(current, new AbortController().signal);
    expect(result.ok).toBe(false);
    expect(JSON.stringify(result)).not.toContain('leaked-');
    expect(JSON.stringify(result)).not.toContain(current);
  });
});

describe('bad metadata gives coded errors', () => {
  async function discoveryError(): Promise<TetherError> {
    const error = await discover(mcp.url, { http }).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (!(error instanceof TetherError)) throw new Error(`expected a TetherError, got ${String(error)}`);
    return error;
  }

  async function realMetadata(): Promise<Record<string, unknown>> {
    proxy.setFault(undefined);
    const response = await fetch(`${proxy.url}/.well-known/openid-configuration`);
    return (await response.json()) as Record<string, unknown>;
  }

  it.each<[string, Fault, string]>([
    ['HTML', { kind: 'html_200' }, 'ERR_METADATA_NOT_JSON'],
    ['truncated', { kind: 'truncated_json' }, 'ERR_METADATA_NOT_JSON'],
    ['10 MB', { kind: 'huge' }, 'ERR_RESPONSE_TOO_LARGE'],
    ['slow past the timeout', { kind: 'hang' }, 'ERR_TIMEOUT'],
    ['a WAF page', { kind: 'waf_403' }, 'ERR_METADATA_STATUS'],
  ])('%s: ERR_DISCOVERY listing every attempt', async (_name, fault, attemptCode) => {
    proxy.setFault(fault, 'metadata');
    const error = await discoveryError();
    expect(error.code).toBe('ERR_DISCOVERY');
    if (!(error instanceof DiscoveryError)) throw new Error('expected a DiscoveryError');
    expect(error.attempts.map((a) => [a.step, a.outcome, a.url])).toEqual([
      ['probe', 'ok', mcp.url],
      ['protected_resource', 'ok', mcp.resourceMetadataUrl],
      ['authorization_server', attemptCode, `${proxy.url}/.well-known/oauth-authorization-server`],
      ['authorization_server', attemptCode, `${proxy.url}/.well-known/openid-configuration`],
    ]);
    expect(error.message).toContain(JSON.stringify(`${proxy.url}/.well-known/openid-configuration`));
  });

  it('an issuer that does not match: ERR_ISSUER_MISMATCH, at once', async () => {
    const metadata = await realMetadata();
    proxy.setFault(
      { kind: 'json', status: 200, body: { ...metadata, issuer: 'https://attacker.example' } },
      'metadata',
    );
    expect((await discoveryError()).code).toBe('ERR_ISSUER_MISMATCH');
  });

  it('a token endpoint on plain http away from loopback: ERR_INSECURE_ENDPOINT', async () => {
    const metadata = await realMetadata();
    const forged = { ...metadata, token_endpoint: 'http://auth.example.com/token' };
    proxy.setFault({ kind: 'json', status: 200, body: forged }, 'metadata');
    expect((await discoveryError()).code).toBe('ERR_INSECURE_ENDPOINT');
    expect(() =>
      createRefreshFunction({
        http,
        authorizationServer: { ...discovery.authorizationServer, token_endpoint: forged.token_endpoint },
        client,
      }),
    ).toThrow(expect.objectContaining({ code: 'ERR_INSECURE_ENDPOINT' }));
  });
});

describe('bad registration responses store nothing', () => {
  async function reregister(): Promise<string> {
    try {
      await ensureClient(discovery.authorizationServer, {
        http,
        clock: systemClock,
        store,
        redirectUris: [REDIRECT_URI],
        reregister: true,
      });
    } catch (error) {
      if (error instanceof TetherError) return error.code;
      throw error;
    }
    return 'registered';
  }

  it.each<[string, Fault, string]>([
    [
      'no client_id',
      { kind: 'json', status: 201, body: { client_name: 'mcp-tether', redirect_uris: [REDIRECT_URI] } },
      'ERR_REGISTRATION_INVALID',
    ],
    ['HTML', { kind: 'html_200' }, 'ERR_REGISTRATION_INVALID'],
    ['a WAF page', { kind: 'waf_403' }, 'ERR_REGISTRATION_REFUSED'],
    [
      'an OAuth error',
      { kind: 'json', status: 400, body: { error: 'invalid_client_metadata' } },
      'ERR_REGISTRATION_REFUSED',
    ],
    ['a reset', { kind: 'reset' }, 'ERR_NETWORK'],
  ])('%s', async (_name, fault, code) => {
    const puts = store.puts;
    proxy.setFault(fault, 'registration');
    expect(await reregister()).toBe(code);
    expect(store.puts).toBe(puts);
    expect(store.entry).toBe(client);
  });
});
