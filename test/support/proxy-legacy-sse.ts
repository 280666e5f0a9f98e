/**
 * A legacy MCP server (the 2024-11-05 "HTTP with SSE" transport) for the
 * proxy tests: the SDK's `McpServer` over `SSEServerTransport` on
 * 127.0.0.1:0 — `GET /sse` opens the event stream, whose `endpoint` event
 * names `POST /messages?sessionId=…` — demanding one bearer token.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { SSEServerTransport } from '@modelcontextprotocol/sdk/server/sse.js';
import { closeServer } from '../../src/demo/auth-server.js';

export interface LegacySseOptions {
  /** The bearer token every request must carry. */
  readonly token: string;
  /**
   * Send the `endpoint` as an absolute URL on this server's origin. The SDK
   * sends a path; other servers send an absolute URL, which a client
   * refuses unless it is on the origin it connected to.
   */
  readonly absoluteEndpoint?: boolean;
}

export interface LegacySseServer {
  /** `http://127.0.0.1:PORT/sse`. */
  readonly url: string;
  /** The `Authorization` header of every request, in order. */
  readonly authorizations: readonly (string | undefined)[];
  close(): Promise<void>;
}

export async function startLegacySseServer(options: LegacySseOptions): Promise<LegacySseServer> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  // eslint-disable-next-line @typescript-eslint/no-deprecated -- the legacy transport is what this serves
  const transports = new Map<string, SSEServerTransport>();
  const authorizations: (string | undefined)[] = [];

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    authorizations.push(req.headers.authorization);
    if (req.headers.authorization !== `Bearer ${options.token}`) {
      res.writeHead(401, { 'www-authenticate': 'Bearer error="invalid_token"' }).end();
      return;
    }
    const url = new URL(req.url ?? '/', origin);
    if (req.method === 'GET' && url.pathname === '/sse') {
      if (options.absoluteEndpoint === true) absolutizeEndpoint(res, origin);
      // eslint-disable-next-line @typescript-eslint/no-deprecated -- the legacy transport is what this serves
      const transport = new SSEServerTransport('/messages', res);
      transports.set(transport.sessionId, transport);
      transport.onclose = () => transports.delete(transport.sessionId);
      const mcp = new McpServer({ name: 'tether-legacy-sse', version: '1.0.0' });
      mcp.registerTool('legacy', { description: 'Answers over the legacy transport.' }, () => ({
        content: [{ type: 'text', text: 'legacy' }],
      }));
      void mcp.connect(transport);
      return;
    }
    const transport = transports.get(url.searchParams.get('sessionId') ?? '');
    if (req.method === 'POST' && url.pathname === '/messages' && transport !== undefined) {
      void transport.handlePostMessage(req, res);
      return;
    }
    res.writeHead(404).end();
  });

  return {
    url: `${origin}/sse`,
    authorizations,
    async close() {
      await Promise.all([...transports.values()].map((transport) => transport.close()));
      await closeServer(server);
    },
  };
}

/** Makes the path in the `endpoint` event the SDK writes an absolute URL on `origin`. */
function absolutizeEndpoint(res: http.ServerResponse, origin: string): void {
  const write = res.write.bind(res) as (chunk: unknown) => boolean;
  res.write = ((chunk: unknown) =>
    write(
      typeof chunk === 'string' && chunk.startsWith('event: endpoint\n')
        ? chunk.replace('data: /', `data: ${origin}/`)
        : chunk,
    )) as typeof res.write;
}
