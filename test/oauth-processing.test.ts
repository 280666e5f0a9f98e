import type * as oauth from 'oauth4webapi';
import { describe, expect, it } from 'vitest';
import { TetherError } from '../src/errors.js';
import { classifyFailure } from '../src/keeper/classify.js';
import {
  authorizationServerMetadataUrls,
  type Discovery,
  discoveredScopes,
  processAuthorizationServerMetadataResponse,
  processProtectedResourceMetadataResponse,
  protectedResourceMetadataUrls,
} from '../src/oauth/discovery.js';
import { assertSecureEndpoint, isLoopback, networkErrorCode, ResponseTooLargeError } from '../src/oauth/http.js';
import { failureBody, processRefreshResponse, refreshFailureFromError } from '../src/oauth/refresh.js';
import { clientMetadata, processRegistrationResponse, staticClient } from '../src/oauth/registration.js';

const NOW = Date.UTC(2026, 0, 1);
const MCP = new URL('https://mcp.example.com/mcp');
const ISSUER = new URL('https://auth.example.com');
const AS: oauth.AuthorizationServer = {
  issuer: 'https://auth.example.com',
  authorization_endpoint: 'https://auth.example.com/authorize',
  token_endpoint: 'https://auth.example.com/token',
  registration_endpoint: 'https://auth.example.com/register',
};
const CLIENT: oauth.Client = { client_id: 'c1', token_endpoint_auth_method: 'none' };
const HTML = '<!DOCTYPE html><html><body>Sign in</body></html>';

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json', ...headers } });
}
function text(body: string, status = 200, contentType = 'text/html'): Response {
  return new Response(body, { status, headers: { 'content-type': contentType } });
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof TetherError) return error.code;
    throw error;
  }
  return 'resolved';
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof Error)) throw new Error('expected a rejection');
  return error;
}

function messageOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
  return '';
}

describe('well-known URLs', () => {
  it.each([
    [
      'https://m.example/mcp',
      undefined,
      ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource'],
    ],
    [
      'https://m.example/mcp/',
      undefined,
      ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource'],
    ],
    [
      'https://m.example/a/b',
      undefined,
      ['/.well-known/oauth-protected-resource/a/b', '/.well-known/oauth-protected-resource'],
    ],
    ['https://m.example/', undefined, ['/.well-known/oauth-protected-resource']],
    [
      'https://m.example/mcp',
      'https://meta.example/prm',
      [
        'https://meta.example/prm',
        '/.well-known/oauth-protected-resource/mcp',
        '/.well-known/oauth-protected-resource',
      ],
    ],
    [
      'https://m.example/mcp',
      'not a url',
      ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource'],
    ],
  ])('protected resource %s (challenge %s)', (mcp, fromChallenge, expected) => {
    const urls = protectedResourceMetadataUrls(new URL(mcp), fromChallenge).map((u) => u.href);
    expect(urls).toEqual(expected.map((path) => new URL(path, 'https://m.example').href));
  });

  it.each([
    ['https://a.example', ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']],
    ['https://a.example/', ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']],
    [
      'https://a.example/tenant/1',
      [
        '/.well-known/oauth-authorization-server/tenant/1',
        '/.well-known/openid-configuration/tenant/1',
        '/tenant/1/.well-known/openid-configuration',
      ],
    ],
  ])('authorization server %s', (issuer, expected) => {
    const urls = authorizationServerMetadataUrls(new URL(issuer)).map((u) => u.href);
    expect(urls).toEqual(expected.map((path) => new URL(path, 'https://a.example').href));
  });
});

describe('discoveredScopes', () => {
  const base: Discovery = { mcpUrl: MCP.href, resource: MCP.href, authorizationServer: AS, attempts: [] };
  const metadata = { resource: MCP.href, authorization_servers: [ISSUER.href], scopes_supported: ['read', 'write'] };
  it.each<[string, Discovery, string[]]>([
    [
      'the challenge scope first',
      { ...base, challengeScope: 'mcp  tools', protectedResource: metadata },
      ['mcp', 'tools'],
    ],
    ['else the metadata scopes', { ...base, protectedResource: metadata }, ['read', 'write']],
    [
      'an empty challenge scope counts as none',
      { ...base, challengeScope: ' ', protectedResource: metadata },
      ['read', 'write'],
    ],
    ['else none', base, []],
  ])('%s', (_name, discovery, expected) => {
    expect(discoveredScopes(discovery)).toEqual(expected);
  });
});

describe('processProtectedResourceMetadataResponse', () => {
  const good = { resource: MCP.href, authorization_servers: [ISSUER.href], scopes_supported: ['mcp'] };

  it('accepts metadata for the MCP URL and keeps other members', async () => {
    const metadata = await processProtectedResourceMetadataResponse(MCP, json({ ...good, extra: 1 }));
    expect(metadata).toMatchObject({ resource: MCP.href, authorization_servers: [ISSUER.href], extra: 1 });
  });

  it.each([
    ['the origin', 'https://mcp.example.com'],
    ['the origin with a slash', 'https://mcp.example.com/'],
    ['a parent path', 'https://mcp.example.com/'],
  ])('accepts %s as resource (same-origin prefix, as the MCP SDK does)', async (_name, resource) => {
    const metadata = await processProtectedResourceMetadataResponse(MCP, json({ ...good, resource }));
    expect(metadata.resource).toBe(resource);
  });

  it.each<[string, Response, string]>([
    ['another origin', json({ ...good, resource: 'https://evil.example/mcp' }), 'ERR_RESOURCE_MISMATCH'],
    ['another path', json({ ...good, resource: 'https://mcp.example.com/other' }), 'ERR_RESOURCE_MISMATCH'],
    ['a longer sibling path', json({ ...good, resource: 'https://mcp.example.com/mc' }), 'ERR_RESOURCE_MISMATCH'],
    ['http instead of https', json({ ...good, resource: 'http://mcp.example.com/mcp' }), 'ERR_RESOURCE_MISMATCH'],
    ['a parent with a query', json({ ...good, resource: 'https://mcp.example.com/?x=1' }), 'ERR_RESOURCE_MISMATCH'],
    ['HTML', text(HTML), 'ERR_METADATA_NOT_JSON'],
    [
      'truncated JSON',
      text('{"resource":"https://mcp.example.com/mcp","authoriz', 200, 'application/json'),
      'ERR_METADATA_NOT_JSON',
    ],
    ['an empty body', text('', 200, 'application/json'), 'ERR_METADATA_NOT_JSON'],
    ['a JSON array', json([good]), 'ERR_METADATA_INVALID'],
    ['no resource', json({ authorization_servers: [ISSUER.href] }), 'ERR_METADATA_INVALID'],
    ['a resource that is no URL', json({ ...good, resource: 'mcp' }), 'ERR_METADATA_INVALID'],
    ['no authorization servers', json({ resource: MCP.href }), 'ERR_METADATA_INVALID'],
    ['an empty server list', json({ ...good, authorization_servers: [] }), 'ERR_METADATA_INVALID'],
    ['servers not strings', json({ ...good, authorization_servers: [1] }), 'ERR_METADATA_INVALID'],
    ['bad scopes_supported', json({ ...good, scopes_supported: 'mcp' }), 'ERR_METADATA_INVALID'],
    ['a 404', text('not found', 404), 'ERR_METADATA_STATUS'],
    ['a 200 behind a 3xx', new Response(null, { status: 302, headers: { location: '/x' } }), 'ERR_METADATA_STATUS'],
  ])('refuses %s', async (_name, response, code) => {
    expect(await codeOf(processProtectedResourceMetadataResponse(MCP, response))).toBe(code);
  });
});

describe('processAuthorizationServerMetadataResponse', () => {
  it('accepts metadata whose issuer matches', async () => {
    expect(await processAuthorizationServerMetadataResponse(ISSUER, json(AS))).toMatchObject(AS);
  });

  it('accepts plain http on loopback', async () => {
    const local = {
      issuer: 'http://127.0.0.1:8080',
      authorization_endpoint: 'http://127.0.0.1:8080/a',
      token_endpoint: 'http://localhost:8080/t',
    };
    await expect(processAuthorizationServerMetadataResponse(new URL(local.issuer), json(local))).resolves.toBeDefined();
  });

  it.each<[string, Response, string]>([
    ['another issuer (mix-up)', json({ ...AS, issuer: 'https://evil.example' }), 'ERR_ISSUER_MISMATCH'],
    ['an issuer with a path', json({ ...AS, issuer: 'https://auth.example.com/x' }), 'ERR_ISSUER_MISMATCH'],
    ['an issuer that is no URL', json({ ...AS, issuer: 'auth' }), 'ERR_METADATA_INVALID'],
    ['no issuer', json({ ...AS, issuer: undefined }), 'ERR_METADATA_INVALID'],
    [
      'a token endpoint on plain http',
      json({ ...AS, token_endpoint: 'http://auth.example.com/token' }),
      'ERR_INSECURE_ENDPOINT',
    ],
    [
      'an authorization endpoint on plain http',
      json({ ...AS, authorization_endpoint: 'http://auth.example.com/a' }),
      'ERR_INSECURE_ENDPOINT',
    ],
    [
      'a registration endpoint on plain http',
      json({ ...AS, registration_endpoint: 'http://10.0.0.1/reg' }),
      'ERR_INSECURE_ENDPOINT',
    ],
    [
      'a token endpoint on another scheme',
      json({ ...AS, token_endpoint: 'ftp://auth.example.com/t' }),
      'ERR_INSECURE_ENDPOINT',
    ],
    ['a token endpoint that is no URL', json({ ...AS, token_endpoint: 'token' }), 'ERR_INVALID_URL'],
    ['a token endpoint that is no string', json({ ...AS, token_endpoint: 42 }), 'ERR_METADATA_INVALID'],
    ['no token endpoint', json({ ...AS, token_endpoint: undefined }), 'ERR_METADATA_INVALID'],
    ['no authorization endpoint', json({ ...AS, authorization_endpoint: undefined }), 'ERR_METADATA_INVALID'],
    ['HTML', text(HTML), 'ERR_METADATA_NOT_JSON'],
    ['HTML labelled JSON', text(HTML, 200, 'application/json'), 'ERR_METADATA_NOT_JSON'],
    ['truncated JSON', text('{"issuer":"https://auth.exa', 200, 'application/json'), 'ERR_METADATA_NOT_JSON'],
    ['a 500', json({ error: 'server_error' }, 500), 'ERR_METADATA_STATUS'],
  ])('refuses %s', async (_name, response, code) => {
    expect(await codeOf(processAuthorizationServerMetadataResponse(ISSUER, response))).toBe(code);
  });

  it('quotes what the server claimed in the mismatch message', async () => {
    const evil = 'https://evil.example/\u001b[31m';
    const error = await rejection(processAuthorizationServerMetadataResponse(ISSUER, json({ ...AS, issuer: evil })));
    expect(error.message).toContain('"https://evil.example/\\u001b[31m"');
    expect(error.message).not.toContain('\u001b');
  });
});

describe('client registration', () => {
  const requested = clientMetadata(['http://127.0.0.1/callback'], ['authorization_code', 'refresh_token']);

  it('sends a public native client with loopback redirect URIs', () => {
    expect(requested).toEqual({
      client_name: 'mcp-tether',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: ['http://127.0.0.1/callback'],
    });
  });

  it.each([
    ['https://127.0.0.1/cb'],
    ['http://example.com/cb'],
    ['http://10.0.0.1/cb'],
    ['com.example.app:/cb'],
    ['nope'],
  ])('refuses the redirect URI %s', (uri) => {
    expect(() => clientMetadata([uri], ['authorization_code'])).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_REDIRECT_URI' }),
    );
  });

  it('refuses an empty list of redirect URIs', () => {
    expect(() => clientMetadata([], ['authorization_code'])).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_REDIRECT_URI' }),
    );
  });

  it('records a public registration', async () => {
    const response = json(
      { client_id: 'abc', token_endpoint_auth_method: 'none', redirect_uris: ['http://127.0.0.1/callback'] },
      201,
    );
    expect(await processRegistrationResponse(AS.issuer, response, requested, NOW)).toEqual({
      kind: 'dynamic',
      issuer: AS.issuer,
      clientId: 'abc',
      tokenEndpointAuthMethod: 'none',
      redirectUris: ['http://127.0.0.1/callback'],
      grantTypes: ['authorization_code', 'refresh_token'],
      registeredAt: NOW,
    });
  });

  it('takes a 200 like a 201', async () => {
    const registration = await processRegistrationResponse(AS.issuer, json({ client_id: 'abc' }, 200), requested, NOW);
    expect(registration).toMatchObject({ clientId: 'abc', tokenEndpointAuthMethod: 'none' });
  });

  it('records a confidential registration with its secret and expiry', async () => {
    const response = json(
      {
        client_id: 'abc',
        client_secret: 's3cret',
        client_secret_expires_at: 1_800_000_000,
        token_endpoint_auth_method: 'client_secret_post',
      },
      201,
    );
    expect(await processRegistrationResponse(AS.issuer, response, requested, NOW)).toMatchObject({
      clientSecret: 's3cret',
      clientSecretExpiresAt: 1_800_000_000_000,
      tokenEndpointAuthMethod: 'client_secret_post',
    });
  });

  it('assumes client_secret_basic for a secret without a method, and never-expiring for 0', async () => {
    const response = json({ client_id: 'abc', client_secret: 's3cret', client_secret_expires_at: 0 }, 201);
    const registration = await processRegistrationResponse(AS.issuer, response, requested, NOW);
    expect(registration.tokenEndpointAuthMethod).toBe('client_secret_basic');
    expect(registration.clientSecretExpiresAt).toBeUndefined();
  });

  it.each<[string, Response, string]>([
    ['no client_id', json({ client_secret: 'x', client_secret_expires_at: 0 }, 201), 'ERR_REGISTRATION_INVALID'],
    ['an empty client_id', json({ client_id: '' }, 201), 'ERR_REGISTRATION_INVALID'],
    ['HTML', text(HTML, 201), 'ERR_REGISTRATION_INVALID'],
    ['truncated JSON', text('{"client_id":"ab', 201, 'application/json'), 'ERR_REGISTRATION_INVALID'],
    ['a secret without its expiry', json({ client_id: 'a', client_secret: 'x' }, 201), 'ERR_REGISTRATION_INVALID'],
    [
      'a method tether cannot do',
      json({ client_id: 'a', token_endpoint_auth_method: 'private_key_jwt' }, 201),
      'ERR_REGISTRATION_INVALID',
    ],
    [
      'a secret method without a secret',
      json({ client_id: 'a', token_endpoint_auth_method: 'client_secret_basic' }, 201),
      'ERR_REGISTRATION_INVALID',
    ],
    [
      'an OAuth error',
      json({ error: 'invalid_redirect_uri', error_description: 'no' }, 400),
      'ERR_REGISTRATION_REFUSED',
    ],
    ['a WAF page', text(HTML, 403), 'ERR_REGISTRATION_REFUSED'],
    ['a 5xx', text('oops', 502), 'ERR_REGISTRATION_REFUSED'],
    [
      'a demand for an initial access token',
      new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } }),
      'ERR_REGISTRATION_REFUSED',
    ],
  ])('refuses %s', async (_name, response, code) => {
    expect(await codeOf(processRegistrationResponse(AS.issuer, response, requested, NOW))).toBe(code);
  });

  it('never puts a secret from the response into the error', async () => {
    const response = json({ client_secret: 'very-secret-value', client_secret_expires_at: 0 }, 201);
    const error = await rejection(processRegistrationResponse(AS.issuer, response, requested, NOW));
    expect(error.message).not.toContain('very-secret-value');
    expect(JSON.stringify(error)).not.toContain('very-secret-value');
    expect(error.cause).toBeUndefined();
  });
});

describe('staticClient', () => {
  it.each<[string, string | undefined, string[] | undefined, string]>([
    ['no secret: public', undefined, undefined, 'none'],
    ['an empty secret: public', '', undefined, 'none'],
    ['a secret: basic', 's', undefined, 'client_secret_basic'],
    ['a secret, basic listed: basic', 's', ['client_secret_post', 'client_secret_basic'], 'client_secret_basic'],
    ['a secret, only post listed: post', 's', ['client_secret_post'], 'client_secret_post'],
  ])('%s', (_name, clientSecret, supported, method) => {
    const as = { ...AS, ...(supported !== undefined && { token_endpoint_auth_methods_supported: supported }) };
    const client = staticClient(as, { clientId: 'id', ...(clientSecret !== undefined && { clientSecret }) });
    expect(client.tokenEndpointAuthMethod).toBe(method);
    expect(client.kind).toBe('static');
  });

  it('refuses an empty client id', () => {
    expect(() => staticClient(AS, { clientId: ' ' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_CLIENT' }));
  });
});

describe('processRefreshResponse', () => {
  it('returns the token set', async () => {
    const response = json({
      access_token: 'at',
      refresh_token: 'rt',
      expires_in: 3600,
      scope: 'mcp',
      token_type: 'Bearer',
    });
    expect(await processRefreshResponse(AS, CLIENT, response)).toEqual({
      ok: true,
      tokens: { accessToken: 'at', refreshToken: 'rt', expiresIn: 3600, scope: 'mcp', tokenType: 'bearer' },
    });
  });

  it('leaves out what the server left out (no new refresh token keeps the old one)', async () => {
    expect(await processRefreshResponse(AS, CLIENT, json({ access_token: 'at', token_type: 'bearer' }))).toEqual({
      ok: true,
      tokens: { accessToken: 'at', tokenType: 'bearer' },
    });
  });

  it.each<[string, Response, 'transient' | 'permanent']>([
    ['200 with HTML (a captive portal)', text(HTML), 'transient'],
    ['200 with truncated JSON', text('{"access_token":"eyJh', 200, 'application/json'), 'transient'],
    ['200 without access_token', json({ token_type: 'bearer', expires_in: 60 }), 'transient'],
    ['200 without token_type', json({ access_token: 'at' }), 'transient'],
    ['200 with an unknown token_type', json({ access_token: 'at', token_type: 'mac' }), 'transient'],
    ['200 with a negative expires_in', json({ access_token: 'at', token_type: 'bearer', expires_in: -5 }), 'transient'],
    ['201 with a token response', json({ access_token: 'at', token_type: 'bearer' }, 201), 'transient'],
    ['204', new Response(null, { status: 204 }), 'transient'],
    ['403 with HTML (a WAF)', text(HTML, 403), 'transient'],
    ['503', text('busy', 503), 'transient'],
    ['429', text('slow down', 429), 'transient'],
    ['302 to a login page', new Response(null, { status: 302, headers: { location: 'https://portal/' } }), 'transient'],
    ['400 invalid_grant', json({ error: 'invalid_grant' }, 400), 'permanent'],
    ['401 invalid_client', json({ error: 'invalid_client' }, 401), 'permanent'],
    ['400 temporarily_unavailable', json({ error: 'temporarily_unavailable' }, 400), 'transient'],
  ])('%s is an http failure the classifier calls %s', async (_name, response, expected) => {
    const status = response.status;
    const result = await processRefreshResponse(AS, CLIENT, response);
    if (result.ok) throw new Error('expected a failure');
    expect(result.failure).toMatchObject({ kind: 'http', status });
    expect(classifyFailure(result.failure, NOW).class).toBe(expected);
  });

  it('keeps lower-cased headers (Retry-After) and at most 2 KB of body', async () => {
    const response = new Response('x'.repeat(5000), { status: 503, headers: { 'Retry-After': '120', 'X-Thing': 'y' } });
    const result = await processRefreshResponse(AS, CLIENT, response);
    if (result.ok) throw new Error('expected a failure');
    if (result.failure.kind !== 'http') throw new Error('expected http');
    expect(result.failure.headers['retry-after']).toBe('120');
    expect(result.failure.headers['x-thing']).toBe('y');
    expect(result.failure.body).toHaveLength(2048);
    expect(classifyFailure(result.failure, NOW).retryAfterMs).toBe(120_000);
  });

  it('redacts tokens from a 2xx it could not accept', async () => {
    const response = json({ access_token: 'secret-at', refresh_token: 'secret-rt', token_type: 'mac' });
    const result = await processRefreshResponse(AS, CLIENT, response);
    expect(JSON.stringify(result)).not.toContain('secret-');
  });
});

describe('failureBody', () => {
  it.each([
    ['JSON', '{"access_token":"abc","x":1}', '{"access_token":"[redacted]","x":1}'],
    [
      'JSON with spaces and escapes',
      '{ "refresh_token" : "a\\"b", "id_token":"c"}',
      '{ "refresh_token" : "[redacted]", "id_token":"[redacted]"}',
    ],
    ['truncated JSON', '{"access_token":"eyJhbGciOi', '{"access_token":"[redacted]"'],
    [
      'form encoding',
      'access_token=abc&token_type=bearer&refresh_token=def',
      'access_token=[redacted]&token_type=bearer&refresh_token=[redacted]',
    ],
    ['an error body is kept', '{"error":"invalid_grant"}', '{"error":"invalid_grant"}'],
  ])('%s', (_name, body, expected) => {
    expect(failureBody(body)).toBe(expected);
  });
});

describe('refreshFailureFromError', () => {
  it('keeps status and headers of a response cut off at the cap', () => {
    const error = new ResponseTooLargeError('https://a/token', 1024, 200, { 'content-type': 'text/html' }, '<html>');
    expect(refreshFailureFromError(error)).toEqual({
      kind: 'http',
      status: 200,
      headers: { 'content-type': 'text/html' },
      body: '<html>',
    });
    expect(JSON.stringify(error)).not.toContain('<html>');
  });

  it('takes the innermost code and message of a network error', () => {
    const socket = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET' });
    const wrapped = new TetherError('ERR_NETWORK', 'request failed', {
      cause: new TypeError('fetch failed', { cause: socket }),
    });
    expect(refreshFailureFromError(wrapped)).toEqual({
      kind: 'network',
      code: 'ECONNRESET',
      message: 'read ECONNRESET',
    });
  });

  it('reports a TLS failure by its code (the classifier tells it apart)', () => {
    const tls = Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' });
    const failure = refreshFailureFromError(
      new TetherError('ERR_NETWORK', 'x', { cause: new TypeError('fetch failed', { cause: tls }) }),
    );
    expect(classifyFailure(failure, NOW)).toMatchObject({ class: 'transient', reason: 'tls' });
  });

  it('reports our own timeout by its code', () => {
    expect(refreshFailureFromError(new TetherError('ERR_TIMEOUT', 'slow'))).toEqual({
      kind: 'network',
      code: 'ERR_TIMEOUT',
      message: 'slow',
    });
  });

  it('reports an abort as such', () => {
    const controller = new AbortController();
    controller.abort();
    expect(refreshFailureFromError(new Error('x'), controller.signal)).toMatchObject({
      kind: 'network',
      code: 'ABORT_ERR',
    });
  });
});

describe('endpoint security', () => {
  it.each([
    ['https://auth.example.com/token', true],
    ['http://127.0.0.1:8080/token', true],
    ['http://127.1.2.3/token', true],
    ['http://localhost/token', true],
    ['http://[::1]:9/token', true],
    ['http://auth.example.com/token', false],
    ['http://127.0.0.1.nip.io/token', false],
    ['http://10.0.0.1/token', false],
    ['http://[::2]/token', false],
    ['ws://127.0.0.1/token', false],
  ])('%s allowed: %s', (url, allowed) => {
    if (allowed) expect(assertSecureEndpoint(url, 'token_endpoint').href).toBe(new URL(url).href);
    else
      expect(() => assertSecureEndpoint(url, 'token_endpoint')).toThrow(
        expect.objectContaining({ code: 'ERR_INSECURE_ENDPOINT' }),
      );
  });

  it('quotes the value in its message', () => {
    const message = messageOf(() => assertSecureEndpoint('\u202enot a url', 'token_endpoint'));
    expect(message).toContain('token_endpoint');
    expect(message).toContain('"\\u202enot a url"');
  });

  it.each([
    ['http://127.0.0.1', true],
    ['http://localhost:1', true],
    ['http://LOCALHOST', true],
    ['http://[::1]', true],
    ['http://128.0.0.1', false],
    ['http://localhost.example.com', false],
  ])('isLoopback(%s) = %s', (url, expected) => {
    expect(isLoopback(new URL(url))).toBe(expected);
  });
});

describe('networkErrorCode', () => {
  it.each<[string, unknown, string | undefined]>([
    [
      'the innermost code',
      new TypeError('fetch failed', {
        cause: Object.assign(new Error('x'), {
          code: 'UND_ERR_SOCKET',
          cause: Object.assign(new Error('y'), { code: 'ECONNRESET' }),
        }),
      }),
      'ECONNRESET',
    ],
    ['a code on the outer error', Object.assign(new Error('x'), { code: 'ECONNREFUSED' }), 'ECONNREFUSED'],
    ['numeric codes are ignored', Object.assign(new Error('x'), { code: 20 }), undefined],
    ['no code', new Error('x'), undefined],
    ['not an error', 'boom', undefined],
  ])('%s', (_name, error, expected) => {
    expect(networkErrorCode(error)).toBe(expected);
  });

  it('survives a cause cycle', () => {
    const a: Error & { cause?: unknown } = new Error('a');
    a.cause = a;
    expect(networkErrorCode(a)).toBeUndefined();
  });
});
