import http from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { systemClock } from '../src/clock/system.js';
import { TetherError } from '../src/errors.js';
import { HttpClient, networkErrorCode, ResponseTooLargeError } from '../src/oauth/http.js';
import { closeServer } from '../src/demo/auth-server.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function serve(handler: Handler): Promise<{ url: string; connections: Socket[] }> {
  const connections: Socket[] = [];
  const server = http.createServer(handler);
  server.on('connection', (socket: Socket) => connections.push(socket));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => closeServer(server));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, connections };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function client(options: Partial<ConstructorParameters<typeof HttpClient>[0]> = {}): HttpClient {
  const created = new HttpClient({ clock: systemClock, totalTimeoutMs: 1000, ...options });
  cleanups.push(() => created.close());
  return created;
}

async function failure(promise: Promise<unknown>): Promise<TetherError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(error instanceof TetherError)) throw new Error(`expected a TetherError, got ${String(error)}`);
  return error;
}

describe('HttpClient', () => {
  it('returns the response with its body read', async () => {
    const { url } = await serve((_req, res) => res.writeHead(201, { 'x-a': 'b' }).end('hello'));
    const response = await client().fetch(url, { method: 'GET' });
    expect(response.status).toBe(201);
    expect(response.headers.get('x-a')).toBe('b');
    expect(await response.text()).toBe('hello');
  });

  it('gives up on a server that never answers: ERR_TIMEOUT', async () => {
    const { url } = await serve(() => undefined);
    const started = Date.now();
    const error = await failure(client({ totalTimeoutMs: 200 }).fetch(url, { method: 'GET' }));
    expect(error.code).toBe('ERR_TIMEOUT');
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it('gives up on a body that stalls: the timeout covers the whole response', async () => {
    const { url } = await serve((_req, res) => {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"partial":');
    });
    expect((await failure(client({ totalTimeoutMs: 200 }).fetch(url, { method: 'GET' }))).code).toBe('ERR_TIMEOUT');
  });

  it('times out on the injected clock', async () => {
    const { url } = await serve(() => undefined);
    const clock = new FakeClock();
    const pending = failure(client({ clock, totalTimeoutMs: 15_000 }).fetch(url, { method: 'GET' }));
    await new Promise((resolve) => setTimeout(resolve, 50));
    await clock.advance(15_000);
    expect((await pending).code).toBe('ERR_TIMEOUT');
    expect(clock.pendingTimers).toBe(0);
  });

  it('cuts off a response over the cap, keeping status, headers and a prefix', async () => {
    const { url } = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('x'.repeat(3 * 1024 * 1024));
    });
    const error = await failure(client().fetch(url, { method: 'GET' }));
    if (!(error instanceof ResponseTooLargeError)) throw new Error('expected ResponseTooLargeError');
    const tooLarge = error;
    expect(tooLarge.code).toBe('ERR_RESPONSE_TOO_LARGE');
    expect(tooLarge.status).toBe(200);
    expect(tooLarge.headers['content-type']).toBe('text/plain');
    expect(tooLarge.bodyPrefix).toHaveLength(2048);
  });

  it('accepts a response exactly at the cap', async () => {
    const { url } = await serve((_req, res) => res.end('y'.repeat(1000)));
    const response = await client({ maxResponseBytes: 1000 }).fetch(url, { method: 'GET' });
    expect((await response.text()).length).toBe(1000);
  });

  it('reports a refused connection as ERR_NETWORK with the socket code as cause', async () => {
    const error = await failure(client().fetch(`http://127.0.0.1:${await closedPort()}/`, { method: 'GET' }));
    expect(error.code).toBe('ERR_NETWORK');
    expect(networkErrorCode(error)).toBe('ECONNREFUSED');
  });

  it('reports a reset connection with ECONNRESET', async () => {
    const { url } = await serve((req) => req.socket.resetAndDestroy());
    const error = await failure(client().fetch(url, { method: 'GET' }));
    expect(error.code).toBe('ERR_NETWORK');
    expect(networkErrorCode(error)).toBe('ECONNRESET');
  });

  it("passes the caller's abort through as it is", async () => {
    const { url } = await serve(() => undefined);
    const controller = new AbortController();
    const reason = new Error('stopping');
    setTimeout(() => {
      controller.abort(reason);
    }, 50);
    await expect(client().fetch(url, { method: 'GET', signal: controller.signal })).rejects.toBe(reason);
  });

  it('drops the body unread when asked (an endless event stream)', async () => {
    const { url } = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: 1\n\n');
    });
    const response = await client({ totalTimeoutMs: 5000 }).fetch(url, { method: 'POST', discardBody: true });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('text/event-stream');
  });

  it('resetTransport drops pooled connections: the next request opens a new one', async () => {
    const { url, connections } = await serve((_req, res) => res.end('ok'));
    const http1 = client();
    await (await http1.fetch(url, { method: 'GET' })).text();
    await new Promise((resolve) => setTimeout(resolve, 20)); // undici returns the socket to the pool a tick later
    await (await http1.fetch(url, { method: 'GET' })).text();
    expect(connections).toHaveLength(1); // kept alive and reused
    const closed = new Promise((resolve) => connections[0]?.once('close', resolve));
    http1.resetTransport();
    await closed;
    await (await http1.fetch(url, { method: 'GET' })).text();
    expect(connections).toHaveLength(2);
  });
});
