/**
 * The local MCP proxy (DESIGN §6) against real peers on loopback: the SDK's
 * MCP server behind oidc-provider, a legacy SSE server from the SDK, and
 * small hand-written upstreams where a fault or a header has to be staged.
 * The token source is a fake wherever a fault must be injected.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { PassThrough } from 'node:stream';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { SSEClientTransport } from '@modelcontextprotocol/sdk/client/sse.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { systemClock } from '../src/clock/system.js';
import {
  closeServer,
  loginHeadlessly,
  MemoryRegistrations,
  startAuthServer,
  TEST_ACCOUNT,
} from '../src/demo/auth-server.js';
import { type RecordedMcpRequest, startMcpServer, type TestMcpServer } from '../src/demo/mcp-server.js';
import { TetherError } from '../src/errors.js';
import { TokenUnavailableError } from '../src/keeper/keeper.js';
import { discover } from '../src/oauth/discovery.js';
import { HttpClient } from '../src/oauth/http.js';
import { ensureClient } from '../src/oauth/registration.js';
import {
  clientResponseHeaders,
  extraUpstreamHeaders,
  type HeaderRecord,
  rejectsToken,
  upstreamRequestHeaders,
} from '../src/proxy/headers.js';
import {
  HEADERS_HOLD_MS,
  MAX_REPLAY_BODY_BYTES,
  type ProxyOptions,
  type ProxyRequestRecord,
  type RunningProxy,
  startProxy,
  type TokenSource,
} from '../src/proxy/proxy.js';
import { allowedHostNames, rebindingRefusal } from '../src/proxy/rebinding.js';
import { ENDPOINT_SCAN_LIMIT_BYTES, endpointRewriter } from '../src/proxy/sse.js';
import { localizeUrl, upstreamUrl } from '../src/proxy/urls.js';
import { type ForwardProxy, startForwardProxy } from './support/forward-proxy.js';
import { startLegacySseServer } from './support/proxy-legacy-sse.js';

const NAME = 'demo';
const REDIRECT_URI = 'http://127.0.0.1/callback';
const PROXY_VARIABLES = ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'no_proxy'];

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A token source that hands out `sequence` in turn: each `rejected()` moves on to the next token (the last one stays). */
class FakeTokens implements TokenSource {
  readonly rejections: string[] = [];
  readonly #sequence: readonly string[];
  #index = 0;

  constructor(...sequence: string[]) {
    this.#sequence = sequence;
  }

  getToken(): Promise<string> {
    return Promise.resolve(this.#sequence[Math.min(this.#index, this.#sequence.length - 1)] ?? '');
  }

  rejected(token: string): Promise<void> {
    this.rejections.push(token);
    this.#index++;
    return Promise.resolve();
  }
}

/** A token source whose `getToken()` always fails with `error`. */
function unavailable(error: Error): TokenSource {
  return { getToken: () => Promise.reject(error), rejected: () => Promise.resolve() };
}

interface Started {
  readonly proxy: RunningProxy;
  readonly records: ProxyRequestRecord[];
}

async function start(options: Omit<ProxyOptions, 'workloadName' | 'onRequest'>): Promise<Started> {
  const records: ProxyRequestRecord[] = [];
  const proxy = await startProxy({
    workloadName: NAME,
    onRequest: (record) => records.push(record),
    ...options,
  });
  cleanups.push(() => proxy.close());
  return { proxy, records };
}

/** One request as an upstream received it. */
interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: Buffer;
}

interface Upstream {
  /** `http://127.0.0.1:PORT/mcp`. */
  readonly url: string;
  readonly origin: string;
  readonly seen: readonly Seen[];
}

/** A plain HTTP upstream that records each request (its body read) before `handle` answers it. */
async function upstream(handle: (seen: Seen, res: http.ServerResponse) => void): Promise<Upstream> {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const request = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks),
      };
      seen.push(request);
      handle(request, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => closeServer(server));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url: `${origin}/mcp`, origin, seen };
}

function json(res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}

/** An upstream handler that answers every request with `status` and `body` as JSON. */
function replying(
  status: number,
  body: unknown,
  headers: http.OutgoingHttpHeaders = {},
): (seen: Seen, res: http.ServerResponse) => void {
  return (_seen, res) => {
    json(res, status, body, headers);
  };
}

interface RawResponse {
  readonly status: number;
  readonly headers: http.IncomingHttpHeaders;
  readonly body: string;
}

/** A request with full control of its headers (`fetch` refuses `Connection`, `Host`, …). */
function raw(
  url: string,
  init: { method?: string; headers?: http.OutgoingHttpHeaders; body?: string | Buffer } = {},
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      url,
      { method: init.method ?? 'GET', headers: init.headers ?? {}, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(init.body);
  });
}

function parse(body: string): Record<string, unknown> {
  return JSON.parse(body) as Record<string, unknown>;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await closeServer(server);
  return port;
}

/** Resolves on the first `data` chunk that makes `received` match. */
function waitForText(stream: NodeJS.ReadableStream, pattern: RegExp): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = '';
    stream.on('data', (chunk: Buffer) => {
      received += chunk.toString();
      if (pattern.test(received)) resolve(received);
    });
    stream.on('error', reject);
  });
}

describe('header filtering', () => {
  it.each<[string, HeaderRecord, Record<string, string | string[]>]>([
    [
      'drops hop-by-hop headers',
      {
        connection: 'keep-alive',
        'keep-alive': 'timeout=5',
        te: 'trailers',
        trailer: 'x-checksum',
        'transfer-encoding': 'chunked',
        upgrade: 'h2c',
        'proxy-authorization': 'Basic eDp5',
        'proxy-authenticate': 'Basic',
        accept: 'application/json',
      },
      { accept: 'application/json' },
    ],
    [
      'drops the headers Connection names',
      { connection: 'X-Foo, close', 'x-foo': '1', 'x-bar': '2' },
      { 'x-bar': '2' },
    ],
    [
      'reads Connection from repeated lines',
      { connection: ['x-a', 'x-b'], 'x-a': '1', 'x-b': '2', 'x-c': '3' },
      { 'x-c': '3' },
    ],
    [
      "drops the client's credentials, Host, Expect and local context",
      {
        authorization: 'Bearer client-own',
        host: 'localhost:1',
        expect: '100-continue',
        origin: 'http://localhost:3000',
        referer: 'http://localhost:3000/app',
        cookie: 'session=local',
      },
      {},
    ],
    [
      'keeps MCP and other end-to-end headers',
      {
        'mcp-session-id': 's-1',
        'last-event-id': 'e-7',
        'mcp-protocol-version': '2025-06-18',
        'content-type': 'application/json',
        'content-length': '2',
        accept: 'application/json, text/event-stream',
        'accept-encoding': 'gzip',
      },
      {
        'mcp-session-id': 's-1',
        'last-event-id': 'e-7',
        'mcp-protocol-version': '2025-06-18',
        'content-type': 'application/json',
        'content-length': '2',
        accept: 'application/json, text/event-stream',
        'accept-encoding': 'gzip',
      },
    ],
    [
      'keeps repeated values, skips missing ones',
      { 'x-multi': ['a', 'b'], 'x-none': undefined },
      { 'x-multi': ['a', 'b'] },
    ],
  ])('request: %s', (_, headers, expected) => {
    expect(upstreamRequestHeaders(headers)).toEqual(expected);
  });

  it.each<[string, HeaderRecord, Record<string, string | string[]>]>([
    [
      'drops hop-by-hop headers and those Connection names',
      { connection: 'x-bar', 'x-bar': '1', 'keep-alive': 'timeout=5', 'proxy-authenticate': 'Basic', etag: '"1"' },
      { etag: '"1"' },
    ],
    [
      'drops WWW-Authenticate, on a 403 too, and Set-Cookie',
      { 'www-authenticate': 'Bearer error="insufficient_scope", scope="admin"', 'set-cookie': ['a=1', 'b=2'] },
      {},
    ],
    [
      'keeps MCP and other end-to-end headers',
      {
        'mcp-session-id': 's-2',
        'content-type': 'text/event-stream',
        'retry-after': '5',
        location: '/elsewhere',
        'cache-control': 'no-cache',
      },
      {
        'mcp-session-id': 's-2',
        'content-type': 'text/event-stream',
        'retry-after': '5',
        location: '/elsewhere',
        'cache-control': 'no-cache',
      },
    ],
  ])('response: %s', (_, headers, expected) => {
    expect(clientResponseHeaders(headers)).toEqual(expected);
  });

  it('lower-cases --header names and refuses Authorization, Host and hop-by-hop names', () => {
    expect(extraUpstreamHeaders({ 'X-Tenant': 'acme', Accept: 'application/json' })).toEqual({
      'x-tenant': 'acme',
      accept: 'application/json',
    });
    for (const name of ['Authorization', 'host', 'Connection', 'Transfer-Encoding']) {
      expect(() => extraUpstreamHeaders({ [name]: 'x' })).toThrow(
        expect.objectContaining({ code: 'ERR_INVALID_HEADER' }) as TetherError,
      );
    }
  });

  it.each<[string | string[] | undefined, boolean]>([
    ['Bearer error="invalid_token", error_description="expired"', true],
    ['Bearer', true],
    ['Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource", scope="mcp"', true],
    [['Basic realm="x"', 'Bearer error="invalid_token"'], true],
    ['Bearer error="insufficient_scope", scope="admin"', false],
    ['Bearer error="invalid_request"', false],
    ['Basic realm="mcp"', false],
    ['DPoP error="invalid_token"', false],
    ['', false],
    [undefined, false],
  ])('a 401 with WWW-Authenticate %j asks for a refresh: %s', (header, expected) => {
    expect(rejectsToken(header)).toBe(expected);
  });
});

describe('URL mapping', () => {
  const remote = new URL('https://mcp.example.com/v1/mcp?tenant=a');

  it.each([
    ['/mcp', 'https://mcp.example.com/v1/mcp?tenant=a'],
    ['/mcp?x=1', 'https://mcp.example.com/v1/mcp?tenant=a&x=1'],
    ['/messages?sessionId=abc', 'https://mcp.example.com/messages?sessionId=abc'],
    ['/mcp/extra', 'https://mcp.example.com/mcp/extra'],
    ['/', 'https://mcp.example.com/'],
    ['http://evil.example/steal?x=1', 'https://mcp.example.com/steal?x=1'],
    ['//evil.example/x', 'https://mcp.example.com//evil.example/x'], // a path, never a host
    ['//[', 'https://mcp.example.com//['],
    ['a:[', 'https://mcp.example.com/'], // a URL whose path is no path
    ['blob:https://mcp.example.com/mcp', 'https://mcp.example.com/'],
  ])('%s goes to %s', (target, expected) => {
    expect(upstreamUrl(remote, target).href).toBe(expected);
  });

  it('appends the local query to a remote URL without one', () => {
    expect(upstreamUrl(new URL('https://mcp.example.com/mcp'), '/mcp?x=1').href).toBe(
      'https://mcp.example.com/mcp?x=1',
    );
  });

  it.each([
    ['https://mcp.example.com/messages?sessionId=1', 'http://127.0.0.1:9/messages?sessionId=1'],
    ['https://mcp.example.com:443/m#f', 'http://127.0.0.1:9/m#f'],
    ['/messages?sessionId=1', '/messages?sessionId=1'],
    ['messages', 'messages'],
    ['https://other.example/messages', 'https://other.example/messages'],
    ['http://mcp.example.com/messages', 'http://mcp.example.com/messages'],
    ['https://mcp.example.com:8443/m', 'https://mcp.example.com:8443/m'],
  ])('localizes %s as %s', (value, expected) => {
    expect(localizeUrl(value, remote, 'http://127.0.0.1:9')).toBe(expected);
  });
});

describe('DNS-rebinding checks', () => {
  const names = allowedHostNames('127.0.0.1');

  it.each<[{ host?: string; origin?: string }, string | undefined]>([
    [{ host: '127.0.0.1:4000' }, undefined],
    [{ host: '127.0.0.1' }, undefined],
    [{ host: 'localhost:4000' }, undefined],
    [{ host: 'LocalHost:4000' }, undefined],
    [{ host: '[::1]:4000' }, undefined],
    [{ host: 'localhost:4001' }, 'forbidden_host'],
    [{ host: 'evil.example' }, 'forbidden_host'],
    [{ host: 'evil.example:4000' }, 'forbidden_host'],
    [{ host: 'localhost@evil.example' }, 'forbidden_host'],
    [{ host: 'localhost.evil.example:4000' }, 'forbidden_host'],
    [{ host: '127.0.0.1.nip.io:4000' }, 'forbidden_host'],
    [{ host: 'localhost/x' }, 'forbidden_host'],
    [{}, 'forbidden_host'],
    [{ host: 'localhost:4000', origin: 'http://localhost:3000' }, undefined],
    [{ host: 'localhost:4000', origin: 'https://127.0.0.1' }, undefined],
    [{ host: 'localhost:4000', origin: 'http://[::1]:5173' }, undefined],
    [{ host: 'localhost:4000', origin: 'http://evil.example' }, 'forbidden_origin'],
    [{ host: 'localhost:4000', origin: 'http://localhost.evil.example' }, 'forbidden_origin'],
    [{ host: 'localhost:4000', origin: 'null' }, 'forbidden_origin'],
    [{ host: 'localhost:4000', origin: 'chrome-extension://abcdef' }, 'forbidden_origin'],
    [{ host: 'evil.example', origin: 'http://localhost' }, 'forbidden_host'],
  ])('%j → %s', (headers, expected) => {
    expect(rebindingRefusal(headers, names, 4000)).toBe(expected);
  });

  it('also allows the host the proxy was bound to', () => {
    expect(rebindingRefusal({ host: '192.168.1.5:4000' }, allowedHostNames('192.168.1.5'), 4000)).toBeUndefined();
    expect(rebindingRefusal({ host: '[fd00::5]:4000' }, allowedHostNames('fd00::5'), 4000)).toBeUndefined();
    expect(rebindingRefusal({ host: '192.168.1.5:4000' }, names, 4000)).toBe('forbidden_host');
  });
});

describe('the legacy SSE endpoint rewrite', () => {
  const remote = new URL('https://mcp.example.com/sse');
  const localize = (url: string) => localizeUrl(url, remote, 'http://127.0.0.1:9');

  /** Feeds `chunks` through the rewriter; resolves with what came out. */
  async function rewrite(chunks: readonly (string | Buffer)[]): Promise<string> {
    const rewriter = endpointRewriter(localize);
    const out: Buffer[] = [];
    rewriter.on('data', (chunk: Buffer) => out.push(chunk));
    const ended = new Promise((resolve) => rewriter.on('end', resolve));
    for (const chunk of chunks) rewriter.write(chunk);
    rewriter.end();
    await ended;
    return Buffer.concat(out).toString();
  }

  it('rewrites an absolute endpoint on the remote origin, even split byte by byte with CRLF lines', async () => {
    const stream =
      'event: endpoint\r\ndata: https://mcp.example.com/messages?sessionId=é1\r\n\r\nevent: message\r\ndata: {}\r\n\r\n';
    const bytes = [...Buffer.from(stream)].map((byte) => Buffer.from([byte]));
    expect(await rewrite(bytes)).toBe(
      'event: endpoint\r\ndata: http://127.0.0.1:9/messages?sessionId=%C3%A91\r\n\r\nevent: message\r\ndata: {}\r\n\r\n',
    );
  });

  it.each([
    [
      'passes comments and retry before the endpoint, and rewrites it',
      [': hello\n\nretry: 1000\n\n', 'event: endpoint\ndata:https://mcp.example.com/m?s=1\n\n'],
      ': hello\n\nretry: 1000\n\nevent: endpoint\ndata:http://127.0.0.1:9/m?s=1\n\n',
    ],
    [
      'leaves a relative endpoint as it is',
      ['event: endpoint\ndata: /messages?sessionId=1\n\n'],
      'event: endpoint\ndata: /messages?sessionId=1\n\n',
    ],
    [
      'leaves an endpoint on another origin as it is',
      ['event: endpoint\ndata: https://other.example/m\n\n'],
      'event: endpoint\ndata: https://other.example/m\n\n',
    ],
    [
      'looks no further than the first event',
      ['data: {"jsonrpc":"2.0"}\n\nevent: endpoint\ndata: https://mcp.example.com/m\n\n'],
      'data: {"jsonrpc":"2.0"}\n\nevent: endpoint\ndata: https://mcp.example.com/m\n\n',
    ],
    [
      'passes an unfinished tail at the end',
      ['event: endpoint\ndata: https://mcp.example.com/m'],
      'event: endpoint\ndata: https://mcp.example.com/m',
    ],
  ])('%s', async (_, chunks, expected) => {
    expect(await rewrite(chunks)).toBe(expected);
  });

  it('passes chunks on as they arrive once the first event is through, and gives up scanning past the limit', async () => {
    const rewriter = endpointRewriter(localize);
    const out: string[] = [];
    rewriter.on('data', (chunk: Buffer) => out.push(chunk.toString()));
    const tick = () => new Promise((resolve) => setImmediate(resolve));
    rewriter.write(Buffer.from('data: first\n\ndata: par'));
    await tick();
    expect(out.join('')).toBe('data: first\n\ndata: par');
    rewriter.write(Buffer.from('tial'));
    await tick();
    expect(out.at(-1)).toBe('tial');

    const long = endpointRewriter(localize);
    const longOut: string[] = [];
    long.on('data', (chunk: Buffer) => longOut.push(chunk.toString()));
    long.write(Buffer.from(`data: ${'x'.repeat(ENDPOINT_SCAN_LIMIT_BYTES)}`));
    await tick();
    expect(longOut.join('')).toHaveLength(ENDPOINT_SCAN_LIMIT_BYTES + 6);
  });
});

describe('the proxy in front of the SDK MCP server and oidc-provider', () => {
  let mcp: TestMcpServer;
  let accessToken: string;
  /** The MCP server's requests since the login (discovery's unauthenticated probe was one). */
  let sinceLogin: () => readonly RecordedMcpRequest[];

  beforeEach(async () => {
    const as = await startAuthServer({ accessTokenTtlSeconds: 300 });
    cleanups.push(() => as.close());
    mcp = await startMcpServer({ issuer: as.issuer, jwks: as.jwks });
    cleanups.push(() => mcp.close());
    const httpClient = new HttpClient({ clock: systemClock, totalTimeoutMs: 5000 });
    cleanups.push(() => httpClient.close());
    const discovery = await discover(mcp.url, { http: httpClient });
    const client = await ensureClient(discovery.authorizationServer, {
      http: httpClient,
      clock: systemClock,
      store: new MemoryRegistrations(),
      redirectUris: [REDIRECT_URI],
    });
    const login = await loginHeadlessly({
      http: httpClient,
      authorizationServer: discovery.authorizationServer,
      clientId: client.clientId,
      resource: discovery.resource,
    });
    accessToken = login.accessToken;
    const before = mcp.requests.length;
    sinceLogin = () => mcp.requests.slice(before);
  });

  /** An SDK client on the proxy that sends its own (bogus) bearer token, as a client with stale OAuth state would. */
  async function connect(url: string): Promise<{ client: Client; transport: StreamableHTTPClientTransport }> {
    const client = new Client({ name: 'proxy-test', version: '1.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(url), {
      requestInit: { headers: { Authorization: 'Bearer client-own-token' } },
    });
    await client.connect(transport);
    cleanups.push(() => client.close());
    return { client, transport };
  }

  it('lists and calls tools over Streamable HTTP with tether’s token, never the client’s', async () => {
    const tokens = new FakeTokens(accessToken);
    const { proxy, records } = await start({ remoteUrl: new URL(mcp.url), tokens });
    const { client, transport } = await connect(proxy.url);

    expect((await client.listTools()).tools.map((tool) => tool.name)).toContain('whoami');
    expect((await client.callTool({ name: 'whoami' })).content).toEqual([{ type: 'text', text: TEST_ACCOUNT }]);
    await transport.terminateSession();

    // The server verifies each bearer against the authorization server's keys: a forwarded client token would be a 401.
    expect(sinceLogin().length).toBeGreaterThanOrEqual(4);
    expect(sinceLogin().every((request) => request.subject === TEST_ACCOUNT && request.status < 300)).toBe(true);
    expect(sinceLogin().map((request) => request.method)).toContain('DELETE');
    expect(tokens.rejections).toEqual([]);
    expect(records.some((record) => record.method === 'POST' && record.status === 200 && record.upstream)).toBe(true);
    expect(records.every((record) => record.path === '/mcp' && record.durationMs >= 0)).toBe(true);
    expect(JSON.stringify(records)).not.toContain(accessToken);
  });

  it('refreshes once on a 401 and replays the request with the new token', async () => {
    const tokens = new FakeTokens('not-a-jwt', accessToken);
    const { proxy } = await start({ remoteUrl: new URL(mcp.url), tokens });
    const { client } = await connect(proxy.url);

    expect((await client.callTool({ name: 'whoami' })).content).toEqual([{ type: 'text', text: TEST_ACCOUNT }]);
    expect(tokens.rejections).toEqual(['not-a-jwt']);
    const [rejected, ...accepted] = sinceLogin();
    expect(rejected).toMatchObject({ method: 'POST', status: 401 });
    expect(accepted.length).toBeGreaterThanOrEqual(3);
    expect(accepted.every((request) => request.subject === TEST_ACCOUNT && request.status < 300)).toBe(true);
  });
});

describe('answers for tether when there is no token to send', () => {
  it.each<[string, TokenUnavailableError, Record<string, unknown>, string | undefined]>([
    [
      'auth_retrying',
      new TokenUnavailableError('ERR_AUTH_RETRYING', 'retrying', 7),
      { error: 'auth_retrying', retryAfterSeconds: 7 },
      '7',
    ],
    [
      'unauthenticated',
      new TokenUnavailableError('ERR_UNAUTHENTICATED', 'run tether login'),
      { error: 'unauthenticated' },
      undefined,
    ],
    ['unavailable', new TokenUnavailableError('ERR_KEEPER_STOPPED', 'stopped'), { error: 'unavailable' }, undefined],
    [
      'unavailable',
      new TokenUnavailableError('ERR_KEEPER_NOT_STARTED', 'not started'),
      { error: 'unavailable' },
      undefined,
    ],
  ])('%s: 503 with a JSON body, never 401', async (_, error, body, retryAfter) => {
    const up = await upstream(replying(200, {}));
    const { proxy, records } = await start({ remoteUrl: new URL(up.url), tokens: unavailable(error) });

    const response = await fetch(proxy.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{}',
    });
    expect(response.status).toBe(503);
    expect(response.headers.get('retry-after') ?? undefined).toBe(retryAfter);
    expect(response.headers.get('www-authenticate')).toBeNull();
    expect(response.headers.get('content-type')).toBe('application/json');
    const answer = (await response.json()) as Record<string, unknown>;
    expect(answer).toMatchObject(body);
    expect(typeof answer['message']).toBe('string');
    expect(up.seen).toHaveLength(0);
    expect(records).toEqual([expect.objectContaining({ method: 'POST', path: '/mcp', status: 503, upstream: false })]);
  });

  it('names `tether login NAME` when the workload is unauthenticated', async () => {
    const { proxy } = await start({
      remoteUrl: new URL('http://127.0.0.1:1/mcp'),
      tokens: unavailable(new TokenUnavailableError('ERR_UNAUTHENTICATED', 'invalid_grant')),
    });
    const answer = parse((await raw(proxy.url, { method: 'POST', body: '{}' })).body);
    expect(answer['message']).toContain(`tether login ${NAME}`);
  });

  it('turns a 401 that survives the replay into a 503, without the challenge', async () => {
    const up = await upstream(
      replying(401, { error: 'invalid_token' }, { 'www-authenticate': 'Bearer error="invalid_token"' }),
    );
    const tokens = new FakeTokens('bad-1', 'bad-2');
    const { proxy } = await start({ remoteUrl: new URL(up.url), tokens });

    const response = await raw(proxy.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"id":1}',
    });
    expect(response.status).toBe(503);
    expect(response.headers['www-authenticate']).toBeUndefined();
    expect(parse(response.body)).toMatchObject({ error: 'upstream_rejected_token' });
    expect(response.body).not.toContain('bad-');
    expect(tokens.rejections).toEqual(['bad-1']);
    expect(up.seen.map((seen) => [seen.headers.authorization, seen.body.toString()])).toEqual([
      ['Bearer bad-1', '{"id":1}'],
      ['Bearer bad-2', '{"id":1}'],
    ]);
  });

  it('does not replay with the token that was just refused', async () => {
    const up = await upstream(replying(401, {}, { 'www-authenticate': 'Bearer' }));
    const tokens = new FakeTokens('same');
    const { proxy } = await start({ remoteUrl: new URL(up.url), tokens });

    expect((await raw(proxy.url, { method: 'POST', body: '{}' })).status).toBe(503);
    expect(tokens.rejections).toEqual(['same']);
    expect(up.seen).toHaveLength(1);
  });

  it('refreshes but does not replay a body too large to buffer, and streams it once the token is good', async () => {
    const up = await upstream((seen, res) => {
      if (seen.headers.authorization === 'Bearer bad') {
        json(res, 401, {}, { 'www-authenticate': 'Bearer error="invalid_token"' });
        return;
      }
      json(res, 200, { bytes: seen.body.length, sha256: createHash('sha256').update(seen.body).digest('hex') });
    });
    const tokens = new FakeTokens('bad', 'good');
    const { proxy } = await start({ remoteUrl: new URL(up.url), tokens });
    const body = Buffer.alloc(2 * MAX_REPLAY_BODY_BYTES, 'abc');

    const refused = await raw(proxy.url, { method: 'POST', body });
    expect(refused.status).toBe(503);
    expect(parse(refused.body)).toMatchObject({ error: 'upstream_rejected_token' });
    expect(tokens.rejections).toEqual(['bad']);
    expect(up.seen).toHaveLength(1);

    const passed = await raw(proxy.url, { method: 'POST', body });
    expect(passed.status).toBe(200);
    expect(parse(passed.body)).toEqual({ bytes: body.length, sha256: createHash('sha256').update(body).digest('hex') });
  });

  it('cuts off a 401 whose body does not end, then refreshes and replays', async () => {
    const up = await upstream((seen, res) => {
      if (seen.headers.authorization === 'Bearer bad') {
        res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' });
        res.write(Buffer.alloc(128 * 1024)); // and never ends
        return;
      }
      json(res, 200, { ok: true });
    });
    const tokens = new FakeTokens('bad', 'good');
    const { proxy } = await start({ remoteUrl: new URL(up.url), tokens });

    const response = await raw(proxy.url, { method: 'POST', body: '{}' });
    expect([response.status, parse(response.body)]).toEqual([200, { ok: true }]);
    expect(tokens.rejections).toEqual(['bad']);
  });

  it('passes 403 insufficient_scope through, without the challenge that would start a step-up login', async () => {
    const up = await upstream(
      replying(
        403,
        { error: 'insufficient_scope' },
        { 'www-authenticate': 'Bearer error="insufficient_scope", scope="mcp admin"' },
      ),
    );
    const tokens = new FakeTokens('token');
    const { proxy, records } = await start({ remoteUrl: new URL(up.url), tokens });

    const response = await raw(proxy.url, { method: 'POST', body: '{}' });
    expect(response.status).toBe(403);
    expect(parse(response.body)).toEqual({ error: 'insufficient_scope' });
    expect(response.headers['www-authenticate']).toBeUndefined();
    expect(tokens.rejections).toEqual([]);
    expect(records).toEqual([expect.objectContaining({ status: 403, upstream: true })]);
  });

  it('answers 502 naming the error code when the upstream is unreachable', async () => {
    const { proxy, records } = await start({
      remoteUrl: new URL(`http://127.0.0.1:${await closedPort()}/mcp`),
      tokens: new FakeTokens('secret-token'),
    });
    const response = await raw(proxy.url, { method: 'POST', body: '{}' });
    expect(response.status).toBe(502);
    expect(parse(response.body)).toMatchObject({ error: 'upstream_unreachable', code: 'ECONNREFUSED' });
    expect(response.body).not.toContain('secret-token');
    expect(records).toEqual([expect.objectContaining({ status: 502, upstream: false })]);
  });

  it('refuses a forbidden --header before listening', async () => {
    await expect(
      startProxy({
        remoteUrl: new URL('http://127.0.0.1:1/mcp'),
        tokens: new FakeTokens('t'),
        workloadName: NAME,
        headers: { Authorization: 'Bearer other' },
      }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_HEADER' });
  });
});

describe('Streamable HTTP pass-through', () => {
  it('maps paths, passes end-to-end headers and statuses both ways, and strips hop-by-hop ones', async () => {
    const up = await upstream((seen, res) => {
      if (seen.method === 'DELETE') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('no such session');
        return;
      }
      res.setHeader('connection', 'x-bar');
      res.writeHead(200, {
        'x-bar': '1',
        'keep-alive': 'timeout=99',
        'proxy-authenticate': 'Basic',
        'www-authenticate': 'Bearer',
        'set-cookie': 'affinity=1',
        'mcp-session-id': 's-2',
        'content-type': 'application/json',
        'x-upstream': 'kept',
      });
      res.end('{"ok":true}');
    });
    const { proxy } = await start({
      remoteUrl: new URL(`${up.url}?tenant=a`),
      tokens: new FakeTokens('tether-token'),
      headers: { 'X-Tenant': 'acme' },
    });

    const response = await raw(`${proxy.url}?x=1`, {
      method: 'POST',
      headers: {
        connection: 'x-foo',
        'x-foo': '1',
        'keep-alive': 'timeout=5',
        te: 'trailers',
        'proxy-authorization': 'Basic eDp5',
        authorization: 'Bearer client-own',
        origin: 'http://localhost:3000',
        referer: 'http://localhost:3000/app',
        cookie: 'local=1',
        'x-tenant': 'client',
        'mcp-session-id': 's-1',
        'mcp-protocol-version': '2025-06-18',
        'last-event-id': 'e-7',
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: '{"jsonrpc":"2.0"}',
    });

    expect(response.status).toBe(200);
    expect(response.body).toBe('{"ok":true}');
    expect(response.headers).toMatchObject({
      'mcp-session-id': 's-2',
      'content-type': 'application/json',
      'x-upstream': 'kept',
    });
    for (const name of ['x-bar', 'proxy-authenticate', 'www-authenticate', 'set-cookie']) {
      expect(response.headers[name]).toBeUndefined();
    }
    expect(response.headers['keep-alive']).not.toBe('timeout=99');
    expect(response.headers.connection).not.toContain('x-bar');

    const [seen] = up.seen;
    expect(seen?.url).toBe('/mcp?tenant=a&x=1');
    expect(seen?.body.toString()).toBe('{"jsonrpc":"2.0"}');
    expect(seen?.headers).toMatchObject({
      host: new URL(up.origin).host,
      authorization: 'Bearer tether-token',
      'x-tenant': 'acme',
      'mcp-session-id': 's-1',
      'mcp-protocol-version': '2025-06-18',
      'last-event-id': 'e-7',
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    });
    for (const name of ['x-foo', 'te', 'proxy-authorization', 'origin', 'referer', 'cookie']) {
      expect(seen?.headers[name]).toBeUndefined();
    }
    expect(seen?.headers['keep-alive']).toBeUndefined();
    expect(seen?.headers.connection ?? '').not.toContain('x-foo');

    const deleted = await raw(proxy.url, { method: 'DELETE', headers: { 'mcp-session-id': 's-2' } });
    expect([deleted.status, deleted.body]).toEqual([404, 'no such session']);
    expect(up.seen[1]).toMatchObject({ method: 'DELETE', headers: { 'mcp-session-id': 's-2' } });
  });

  it('streams an SSE event to the client before the upstream stream ends', async () => {
    let finish = (): void => undefined;
    const up = await upstream((_seen, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('id: 1\nevent: message\ndata: {"n":1}\n\n');
      finish = () => res.end('id: 2\ndata: {"n":2}\n\n');
    });
    const { proxy } = await start({ remoteUrl: new URL(up.url), tokens: new FakeTokens('t') });

    const response = await fetch(proxy.url, { headers: { accept: 'text/event-stream' } });
    expect(response.headers.get('content-type')).toBe('text/event-stream');
    if (response.body === null) throw new Error('no body');
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe('id: 1\nevent: message\ndata: {"n":1}\n\n');
    finish();
    let rest = '';
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read())
      rest += new TextDecoder().decode(chunk.value);
    expect(rest).toBe('id: 2\ndata: {"n":2}\n\n');
  });

  it('sends an answer’s headers with its first chunk, or alone once HEADERS_HOLD_MS has passed without one', async () => {
    const bodies: ((text: string) => void)[] = [];
    const up = await upstream((_seen, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' }).flushHeaders();
      bodies.push((text) => res.write(text));
    });
    const clock = new FakeClock();
    const { proxy } = await start({ remoteUrl: new URL(up.url), tokens: new FakeTokens('t'), clock });
    /** A POST on a raw socket: what arrives in one piece shows. */
    const post = (): string[] => {
      const reads: string[] = [];
      const socket = net.connect(proxy.port, '127.0.0.1', () => {
        socket.write(`POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${proxy.port}\r\nContent-Length: 2\r\n\r\n{}`);
      });
      socket.on('data', (data: Buffer) => reads.push(data.toString()));
      cleanups.push(() => {
        socket.destroy();
        return Promise.resolve();
      });
      return reads;
    };

    const first = post();
    await expect.poll(() => clock.pendingTimers).toBe(1);
    expect(first).toEqual([]);
    bodies[0]?.('data: 1\n\n');
    await expect.poll(() => first.length).toBe(1);
    expect(first[0]).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\n[^]*data: 1\n\n/);
    expect(clock.pendingTimers).toBe(0);

    const second = post();
    await expect.poll(() => clock.pendingTimers).toBe(1);
    await clock.advance(HEADERS_HOLD_MS - 1);
    expect(second).toEqual([]);
    await clock.advance(1);
    await expect.poll(() => second.length).toBe(1);
    expect(second[0]).toMatch(/^HTTP\/1\.1 200 OK\r\n[^]*\r\n\r\n$/);
  });

  it('rewrites no endpoint event in a stream that answers a POST: only a GET opens a legacy SSE stream', async () => {
    const up = await upstream((_seen, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' }).end(`event: endpoint\ndata: ${up.origin}/m\n\n`);
    });
    const { proxy } = await start({ remoteUrl: new URL(up.url), tokens: new FakeTokens('t') });

    expect((await raw(proxy.url, { method: 'POST', body: '{}' })).body).toBe(
      `event: endpoint\ndata: ${up.origin}/m\n\n`,
    );
    expect((await raw(proxy.url)).body).toBe(`event: endpoint\ndata: http://127.0.0.1:${proxy.port}/m\n\n`);
  });

  it.each(['before the upstream answers', 'in the middle of a stream'])(
    'aborts the upstream request when the client goes away %s',
    async (when) => {
      let upstreamClosed = (): void => undefined;
      const closed = new Promise<void>((resolve) => {
        upstreamClosed = resolve;
      });
      let received = (): void => undefined;
      const arrived = new Promise<void>((resolve) => {
        received = resolve;
      });
      const up = await upstream((_seen, res) => {
        res.on('close', upstreamClosed);
        if (when === 'in the middle of a stream')
          res.writeHead(200, { 'content-type': 'text/event-stream' }).write(': open\n\n');
        received();
      });
      const { proxy, records } = await start({ remoteUrl: new URL(up.url), tokens: new FakeTokens('t') });

      const client = new AbortController();
      const response = fetch(proxy.url, { signal: client.signal }).then((r) => r.body?.getReader().read());
      await arrived;
      if (when === 'in the middle of a stream') await response;
      client.abort();
      await response.catch(() => undefined);
      await closed;
      await expect.poll(() => records.length).toBe(1);
      expect(records[0]).toMatchObject(
        when === 'in the middle of a stream' ? { status: 200, upstream: true } : { status: 499, upstream: false },
      );
    },
  );

  it('sends upstream requests through HTTP_PROXY (EnvHttpProxyAgent)', async () => {
    const forward: ForwardProxy = await startForwardProxy();
    cleanups.push(() => forward.close());
    const saved = PROXY_VARIABLES.map((name) => [name, process.env[name]] as const);
    cleanups.push(() => {
      for (const [name, value] of saved) {
        if (value === undefined) Reflect.deleteProperty(process.env, name);
        else process.env[name] = value;
      }
      return Promise.resolve();
    });
    for (const name of PROXY_VARIABLES) Reflect.deleteProperty(process.env, name);
    process.env['HTTP_PROXY'] = forward.url;
    const up = await upstream(replying(200, {}));
    const { proxy } = await start({ remoteUrl: new URL(up.url), tokens: new FakeTokens('t') });

    expect((await raw(proxy.url, { method: 'POST', body: '{}' })).status).toBe(200);
    expect(forward.seen).toEqual([`CONNECT ${new URL(up.origin).host}`]);
    expect(up.seen).toHaveLength(1);
  });
});

describe('DNS-rebinding protection on the local endpoint', () => {
  it('refuses a foreign Host or Origin with 403 and lets loopback names through', async () => {
    const up = await upstream(replying(200, {}));
    const { proxy, records } = await start({ remoteUrl: new URL(up.url), tokens: new FakeTokens('t') });

    const evilHost = await raw(proxy.url, { headers: { host: 'evil.example' } });
    expect(evilHost.status).toBe(403);
    expect(parse(evilHost.body)).toMatchObject({ error: 'forbidden_host' });
    const evilOrigin = await raw(proxy.url, { headers: { origin: 'http://evil.example' } });
    expect(evilOrigin.status).toBe(403);
    expect(parse(evilOrigin.body)).toMatchObject({ error: 'forbidden_origin' });
    const otherPort = await raw(proxy.url, { headers: { host: `127.0.0.1:${proxy.port + 1}` } });
    expect(otherPort.status).toBe(403);
    expect(up.seen).toHaveLength(0);

    expect((await raw(proxy.url, { headers: { host: `localhost:${proxy.port}` } })).status).toBe(200);
    expect((await raw(proxy.url, { headers: { origin: 'http://localhost:5173' } })).status).toBe(200);
    expect(up.seen).toHaveLength(2);
    expect(records.map((record) => [record.status, record.upstream])).toEqual([
      [403, false],
      [403, false],
      [403, false],
      [200, true],
      [200, true],
    ]);
  });
});

describe('the legacy SSE transport', () => {
  it.each([false, true])('lists tools through the proxy (absolute endpoint: %s)', async (absoluteEndpoint) => {
    const legacy = await startLegacySseServer({ token: 'legacy-token', absoluteEndpoint });
    cleanups.push(() => legacy.close());
    const { proxy } = await start({ remoteUrl: new URL(legacy.url), tokens: new FakeTokens('legacy-token') });

    const client = new Client({ name: 'proxy-test', version: '1.0.0' });
    // eslint-disable-next-line @typescript-eslint/no-deprecated -- the legacy transport is what this tests
    await client.connect(new SSEClientTransport(new URL(proxy.url)));
    cleanups.push(() => client.close());
    expect((await client.listTools()).tools.map((tool) => tool.name)).toEqual(['legacy']);
    expect(legacy.authorizations.length).toBeGreaterThanOrEqual(3);
    expect(legacy.authorizations.every((authorization) => authorization === 'Bearer legacy-token')).toBe(true);
  });

  it('rewrites an absolute endpoint to the origin the client used', async () => {
    const legacy = await startLegacySseServer({ token: 'legacy-token', absoluteEndpoint: true });
    cleanups.push(() => legacy.close());
    const { proxy } = await start({ remoteUrl: new URL(legacy.url), tokens: new FakeTokens('legacy-token') });

    const body = new PassThrough();
    const req = http.get(proxy.url, { headers: { host: `localhost:${proxy.port}` }, agent: false }, (res) =>
      res.pipe(body),
    );
    cleanups.push(() => {
      req.destroy();
      return Promise.resolve();
    });
    const event = await waitForText(body, /\n\n/);
    expect(event).toMatch(
      new RegExp(`^event: endpoint\ndata: http://localhost:${proxy.port}/messages\\?sessionId=[0-9a-f-]{36}\n\n$`),
    );
  });
});
