/**
 * A switchable gate in front of an MCP server, standing in for tether's
 * local proxy in the bridge tests: it passes every request through (bodies
 * and event streams streamed as they come) until told to refuse, and then
 * answers everything itself the way the proxy does without a usable token —
 * a status, headers and a JSON body. Optionally it refuses `GET` event
 * streams (`405`, as a server without them does), so that a client can learn
 * of an ended session only from its `POST`s.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { closeServer } from '../../src/demo/auth-server.js';

/** What the gate answers instead of passing a request on. */
export interface Refusal {
  readonly status: number;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body: unknown;
}

export interface BridgeGate {
  /** The gate's own `http://127.0.0.1:PORT/mcp`. */
  readonly url: string;
  /** From now on, answers every request with `refusal`. */
  refuse(refusal: Refusal): void;
  /** From now on, passes requests through again. */
  open(): void;
  close(): Promise<void>;
}

export interface BridgeGateOptions {
  /** `false`: answer every `GET` with `405`; default `true`. */
  readonly eventStreams?: boolean;
}

export async function startBridgeGate(target: string, options: BridgeGateOptions = {}): Promise<BridgeGate> {
  const targetUrl = new URL(target);
  let refusal: Refusal | undefined;
  const server = http.createServer((req, res) => {
    if (options.eventStreams === false && req.method === 'GET') {
      res.writeHead(405, { allow: 'POST, DELETE' }).end();
      return;
    }
    if (refusal !== undefined) {
      req.resume();
      res.writeHead(refusal.status, { 'content-type': 'application/json', ...refusal.headers });
      res.end(JSON.stringify(refusal.body));
      return;
    }
    const upstream = http.request(
      {
        hostname: targetUrl.hostname,
        port: targetUrl.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: targetUrl.host },
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    res.on('close', () => {
      upstream.destroy();
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`,
    refuse(next) {
      refusal = next;
    },
    open() {
      refusal = undefined;
    },
    close: () => closeServer(server),
  };
}
