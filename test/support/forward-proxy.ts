/**
 * A forward HTTP proxy (the `proxy` package, as corporate networks run
 * Squid) on 127.0.0.1:0, for the `HTTPS_PROXY`/`HTTP_PROXY` tests. It records
 * what went through it: `CONNECT host:port` tunnels (https, and http through
 * undici, which tunnels by default) and absolute-URI requests.
 */
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createProxy } from 'proxy';
import { closeServer } from '../../src/demo/auth-server.js';

export interface ForwardProxy {
  /** `http://127.0.0.1:PORT`: the value for `HTTPS_PROXY`/`HTTP_PROXY`. */
  readonly url: string;
  /** One entry per request or tunnel: `CONNECT 127.0.0.1:1234` or `POST http://…`. */
  readonly seen: readonly string[];
  close(): Promise<void>;
}

export async function startForwardProxy(): Promise<ForwardProxy> {
  const seen: string[] = [];
  // Tunnels leave the HTTP server's connection list, so they are tracked here to be closed.
  const sockets = new Set<Socket>();
  const server = createProxy(http.createServer());
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('connect', (req: http.IncomingMessage) => seen.push(`CONNECT ${req.url ?? ''}`));
  server.on('request', (req: http.IncomingMessage) => seen.push(`${req.method ?? ''} ${req.url ?? ''}`));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: async () => {
      for (const socket of sockets) socket.destroy();
      await closeServer(server);
    },
  };
}
