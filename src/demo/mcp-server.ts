/**
 * A real MCP server for tests: the SDK's `McpServer` over Streamable HTTP
 * (stateful sessions) at `/mcp` on 127.0.0.1:0, demanding a bearer token — a
 * JWT from the test authorization server, verified against its keys with
 * `jose`, whose audience must be this server's URL — and serving RFC 9728
 * protected-resource metadata. With `auth: false` it serves the same MCP
 * endpoint without any bearer check (what tether's local proxy looks like to
 * a client: the tests of the stdio bridge talk to it directly).
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';
import { createLocalJWKSet, type JSONWebKeySet, jwtVerify } from 'jose';
import { closeServer, MCP_SCOPE } from './auth-server.js';

export interface McpServerOptions {
  /** The authorization server: the JWT `iss`, and what the metadata names. */
  readonly issuer: string;
  /** Its public signing keys (`TestAuthServer.jwks`). */
  readonly jwks: JSONWebKeySet;
  /**
   * What a request without a valid token gets in `WWW-Authenticate`:
   * `Bearer resource_metadata="…"` (default), a bare `Bearer`, or nothing.
   */
  readonly challenge?: 'resource_metadata' | 'bare' | 'none';
  /** Where the metadata is served: the path-aware well-known URL (default), the root one, or nowhere. */
  readonly metadataAt?: 'path' | 'root' | 'none';
  /** The metadata's `resource`; default the MCP URL. */
  readonly resource?: string;
  /** `true` (the default): every request to `/mcp` needs a valid bearer token. */
  readonly auth?: true;
}

/** A server without any bearer check: `/mcp` answers everyone, no metadata is served, `whoami` says `anonymous`. */
export interface OpenMcpServerOptions {
  readonly auth: false;
}

/** One request to `/mcp`. */
export interface RecordedMcpRequest {
  readonly method: string;
  /** The token's `sub`, when it was valid. */
  readonly subject?: string;
  readonly status: number;
}

export interface TestMcpServer {
  /** `http://127.0.0.1:PORT/mcp`. */
  readonly url: string;
  /** Where the metadata is, per `metadataAt`. */
  readonly resourceMetadataUrl: string;
  readonly requests: readonly RecordedMcpRequest[];
  /** How many `initialize` requests opened a session. */
  readonly initializations: number;
  /** How many `notifications/initialized` the sessions received. */
  readonly initializedNotifications: number;
  /**
   * Ends every session, as a server does when sessions expire: their streams
   * are closed, and a request naming one of them gets `404` from then on
   * (what the MCP spec prescribes for an unknown session).
   */
  dropSessions(): Promise<void>;
  close(): Promise<void>;
}

// Two signatures rather than a union: the authenticated one is the last, so that
// `Parameters<typeof startMcpServer>[0]` (used by the tests) stays `McpServerOptions`.
export async function startMcpServer(options: OpenMcpServerOptions): Promise<TestMcpServer>;
// eslint-disable-next-line @typescript-eslint/unified-signatures -- see above
export async function startMcpServer(options: McpServerOptions): Promise<TestMcpServer>;
export async function startMcpServer(options: McpServerOptions | OpenMcpServerOptions): Promise<TestMcpServer> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const url = `${origin}/mcp`;
  const metadataAt = options.auth === false ? 'none' : (options.metadataAt ?? 'path');
  const metadataPath =
    metadataAt === 'root' ? '/.well-known/oauth-protected-resource' : '/.well-known/oauth-protected-resource/mcp';
  const metadata =
    options.auth === false
      ? undefined
      : {
          resource: options.resource ?? url,
          authorization_servers: [options.issuer],
          scopes_supported: [MCP_SCOPE],
          bearer_methods_supported: ['header'],
        };
  const keys = options.auth === false ? undefined : createLocalJWKSet(options.jwks);
  const sessions = new Map<string, StreamableHTTPServerTransport>();
  const requests: RecordedMcpRequest[] = [];
  const counts = { initializations: 0, initializedNotifications: 0 };

  const authenticate = async (req: http.IncomingMessage): Promise<string | undefined> => {
    if (options.auth === false || keys === undefined) return 'anonymous';
    const match = /^Bearer (\S+)$/i.exec(req.headers.authorization ?? '');
    if (match?.[1] === undefined) return undefined;
    try {
      const { payload } = await jwtVerify(match[1], keys, { issuer: options.issuer, audience: url });
      (req as http.IncomingMessage & { auth?: unknown }).auth = {
        token: match[1],
        clientId: String(payload.client_id),
        scopes: typeof payload.scope === 'string' ? payload.scope.split(' ') : [],
        ...(payload.exp !== undefined && { expiresAt: payload.exp }),
      };
      return payload.sub ?? '';
    } catch {
      return undefined;
    }
  };

  const serveMcp = async (req: http.IncomingMessage, res: http.ServerResponse, subject: string): Promise<void> => {
    const sessionId = req.headers['mcp-session-id'];
    if (typeof sessionId === 'string') {
      const transport = sessions.get(sessionId);
      if (transport === undefined) {
        res.writeHead(404).end();
        return;
      }
      await transport.handleRequest(req, res);
      return;
    }
    const body: unknown = req.method === 'POST' ? JSON.parse(await readBody(req)) : undefined;
    if (!isInitializeRequest(body)) {
      res.writeHead(400).end();
      return;
    }
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (id) => {
        counts.initializations += 1;
        sessions.set(id, transport);
      },
    });
    transport.onclose = () => {
      if (transport.sessionId !== undefined) sessions.delete(transport.sessionId);
    };
    const mcp = new McpServer({ name: 'tether-test-mcp', version: '1.0.0' });
    mcp.registerTool('whoami', { description: 'The subject of the bearer token.' }, () => ({
      content: [{ type: 'text', text: subject }],
    }));
    mcp.registerTool(
      'hang',
      {
        description:
          'Never answers (a progress notification first, when asked for one); for tests of a request in flight when its session ends.',
      },
      async (extra) => {
        const progressToken = extra._meta?.progressToken;
        if (progressToken !== undefined) {
          await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: 0 } });
        }
        return new Promise<never>((_resolve, reject) => {
          extra.signal.addEventListener('abort', () => {
            reject(new Error('cancelled'));
          });
        });
      },
    );
    mcp.server.oninitialized = () => {
      counts.initializedNotifications += 1;
    };
    await mcp.connect(transport);
    await transport.handleRequest(req, res, body);
  };

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = new URL(req.url ?? '/', origin).pathname;
    if (path === metadataPath && metadataAt !== 'none') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(metadata));
      return;
    }
    if (path !== '/mcp') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    void authenticate(req).then(async (subject) => {
      if (subject === undefined) {
        const challenge = options.auth === false ? 'none' : (options.challenge ?? 'resource_metadata');
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (challenge === 'resource_metadata') {
          headers['www-authenticate'] = `Bearer resource_metadata="${origin}${metadataPath}", scope="${MCP_SCOPE}"`;
        } else if (challenge === 'bare') {
          headers['www-authenticate'] = 'Bearer';
        }
        res.writeHead(401, headers).end(JSON.stringify({ error: 'invalid_token' }));
        requests.push({ method: req.method ?? '', status: 401 });
        return;
      }
      await serveMcp(req, res, subject).catch(() => {
        if (!res.headersSent) res.writeHead(500).end();
      });
      requests.push({ method: req.method ?? '', subject, status: res.statusCode });
    });
  });

  return {
    url,
    resourceMetadataUrl: `${origin}${metadataPath}`,
    requests,
    get initializations() {
      return counts.initializations;
    },
    get initializedNotifications() {
      return counts.initializedNotifications;
    },
    async dropSessions() {
      const ended = [...sessions.values()];
      sessions.clear();
      await Promise.all(ended.map((transport) => transport.close()));
    },
    async close() {
      await Promise.all([...sessions.values()].map((transport) => transport.close()));
      await closeServer(server);
    },
  };
}

async function readBody(req: http.IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

/** Sends an MCP `initialize` with the bearer token: 200 when the server accepts the token (it checks it against the AS keys and its own URL). */
export async function mcpStatus(mcpUrl: string, accessToken: string): Promise<number> {
  const response = await fetch(mcpUrl, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${accessToken}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
    },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'test', version: '1' } },
    }),
  });
  await response.body?.cancel();
  return response.status;
}
