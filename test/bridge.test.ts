/**
 * `tether connect` (DESIGN §6): the stdio bridge, driven by the SDK's own
 * `Client` over the bridge's stdin/stdout, in front of real SDK MCP servers
 * over Streamable HTTP: src/demo/mcp-server.ts without the bearer check (what
 * tether's local proxy looks like from the bridge), and, for event streams,
 * one with an event store that numbers its events and can close its streams.
 * Where the proxy's own answers matter (503 without a usable token), a gate
 * that can refuse stands in between. The bridge runs in this process on a
 * fake clock, so that its reconnection backoff is checked to the millisecond;
 * one test runs it as a child process, as `tether connect` runs.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryEventStore } from '@modelcontextprotocol/sdk/examples/shared/inMemoryEventStore.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { McpError, ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import fc from 'fast-check';
import { describe, expect, it, onTestFinished } from 'vitest';
import { FakeClock } from '../src/clock/fake.js';
import { closeServer } from '../src/demo/auth-server.js';
import { startMcpServer, type TestMcpServer } from '../src/demo/mcp-server.js';
import { TetherError } from '../src/errors.js';
import { BRIDGE_ERROR_CODE, type BridgeErrorData, runStdioBridge } from '../src/proxy/bridge.js';
import { EventStreamParser, type ServerSentEvent } from '../src/proxy/event-stream.js';
import { WorkloadFiles } from '../src/workloads/files.js';
import { lookUpWorkload } from '../src/workloads/lookup.js';
import { writeStatus } from '../src/workloads/status.js';
import { type BridgeGate, type BridgeGateOptions, startBridgeGate } from './support/bridge-gate.js';

const CHILD = fileURLToPath(new URL('./support/bridge-child.ts', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));

async function mcpServer(): Promise<TestMcpServer> {
  const server = await startMcpServer({ auth: false });
  onTestFinished(() => server.close());
  return server;
}

async function gate(target: string, options?: BridgeGateOptions): Promise<BridgeGate> {
  const started = await startBridgeGate(target, options);
  onTestFinished(() => started.close());
  return started;
}

interface Bridged {
  readonly client: Client;
  /** Errors the client's protocol layer reported, e.g. a response to a request it never sent. */
  readonly clientErrors: Error[];
  /** The bridge's diagnostics so far. */
  readonly logs: string[];
  /** The bridge's clock. */
  readonly clock: FakeClock;
  /** The bridge's stdin, for lines the client would not write. */
  readonly stdin: PassThrough;
}

/** An SDK client whose server is the bridge (in this process, on a fake clock) to `url`; closed with the test. */
async function bridgedClient(url: string): Promise<Bridged> {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const clock = new FakeClock();
  const logs: string[] = [];
  const bridge = runStdioBridge({ url: new URL(url), stdin, stdout, clock, log: (line) => logs.push(line) });
  const client = new Client({ name: 'bridge-test', version: '1.0.0' });
  const clientErrors: Error[] = [];
  client.onerror = (error) => {
    clientErrors.push(error);
  };
  onTestFinished(async () => {
    await client.close();
    stdin.end();
    await bridge;
  });
  // The SDK's stdio transport over the bridge's pipes: it reads the bridge's stdout, writes its stdin.
  await client.connect(new StdioServerTransport(stdout, stdin));
  return { client, clientErrors, logs, clock, stdin };
}

/** The text of a `tools/call` result's first content item. */
function text(result: Awaited<ReturnType<Client['callTool']>>): unknown {
  const content = result.content as readonly { type: string; text?: string }[];
  return content[0]?.text;
}

/** The MCP error a promise rejected with. */
async function mcpError(promise: Promise<unknown>): Promise<McpError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(McpError);
  return error as McpError;
}

/** Waits until the bridge has set a timer (its I/O runs for real), and says in how many ms it fires. */
async function nextTimerIn(clock: FakeClock): Promise<number> {
  await expect.poll(() => clock.nextTimerAt(), { timeout: 5_000 }).toBeDefined();
  return (clock.nextTimerAt() ?? NaN) - clock.monotonic();
}

// ---- a server whose event streams can be closed, refused and resumed ------------------------------------------------

interface StreamServer {
  readonly url: string;
  /** Every request to `/mcp`, as it arrived. */
  readonly requests: readonly { readonly method: string; readonly lastEventId?: string }[];
  /** How many sessions were started. */
  readonly initializations: number;
  /** Ends every session: its streams close, and requests naming it get `404`. */
  dropSessions(): Promise<void>;
  /** Answers every request with tether's `503` until {@link StreamServer.open}. */
  refuse(): void;
  open(): void;
  /** Closes every session's `GET` event stream; the sessions live on. */
  closeEventStreams(): void;
  /** Sends `notifications/tools/list_changed` to every session (on its `GET` stream). */
  notify(): Promise<void>;
  /** Lets the `polled` tool answer. */
  release(): void;
  close(): Promise<void>;
}

/**
 * The SDK's MCP server with two tools: `polled` closes its request's stream
 * at once (after the priming event that numbers it, with `retry: retryMs`)
 * and answers once released, so the client must resume the stream to get
 * the answer; `vanish` is answered with an event stream that ends at once,
 * without the answer. With `resumable: false`, no event store: nothing is
 * numbered.
 */
async function streamServer(options: {
  readonly resumable: boolean;
  readonly retryMs?: number;
}): Promise<StreamServer> {
  const sessions = new Map<string, { transport: StreamableHTTPServerTransport; mcp: McpServer }>();
  const requests: { method: string; lastEventId?: string }[] = [];
  let initializations = 0;
  let refusing = false;
  let release = (): void => undefined;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });

  const newSession = async (): Promise<StreamableHTTPServerTransport> => {
    const mcp = new McpServer({ name: 'stream-test', version: '1.0.0' });
    const transport: StreamableHTTPServerTransport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      ...(options.resumable && { eventStore: new InMemoryEventStore() }),
      ...(options.retryMs !== undefined && { retryInterval: options.retryMs }),
      onsessioninitialized: (id) => {
        initializations += 1;
        sessions.set(id, { transport, mcp });
      },
    });
    mcp.registerTool('polled', { description: 'answers on a resumed stream' }, async (extra) => {
      extra.closeSSEStream?.();
      await released;
      return { content: [{ type: 'text', text: 'done' }] };
    });
    await mcp.connect(transport);
    return transport;
  };

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const lastEventId = req.headers['last-event-id'];
    requests.push({ method: req.method ?? '', ...(typeof lastEventId === 'string' && { lastEventId }) });
    if (refusing) {
      req.resume();
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'auth_retrying', message: 'tether is still retrying the token refresh' }));
      return;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = req.method === 'POST' ? (JSON.parse(Buffer.concat(chunks).toString()) as unknown) : undefined;
    const id = req.headers['mcp-session-id'];
    const session = typeof id === 'string' ? sessions.get(id) : undefined;
    if (typeof id === 'string' && session === undefined) {
      res.writeHead(404).end();
      return;
    }
    const call = body as { method?: string; params?: { name?: string } } | undefined;
    if (call?.method === 'tools/call' && call.params?.name === 'vanish') {
      res.writeHead(200, { 'content-type': 'text/event-stream' }).end();
      return;
    }
    await (session?.transport ?? (await newSession())).handleRequest(req, res, body);
  };
  const server = http.createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const started: StreamServer = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`,
    requests,
    get initializations() {
      return initializations;
    },
    async dropSessions() {
      const ended = [...sessions.values()];
      sessions.clear();
      await Promise.all(ended.map(({ transport }) => transport.close()));
    },
    refuse() {
      refusing = true;
    },
    open() {
      refusing = false;
    },
    closeEventStreams() {
      for (const { transport } of sessions.values()) transport.closeStandaloneSSEStream();
    },
    async notify() {
      await Promise.all([...sessions.values()].map(({ mcp }) => mcp.server.sendToolListChanged()));
    },
    release: () => {
      release();
    },
    async close() {
      release();
      await Promise.all([...sessions.values()].map(({ transport }) => transport.close()));
      await closeServer(server);
    },
  };
  onTestFinished(() => started.close());
  return started;
}

const gets = (server: StreamServer): number => server.requests.filter((request) => request.method === 'GET').length;

/**
 * Counts the `notifications/tools/list_changed` the client gets, and returns
 * once one has come: proof that the session's `GET` stream is open.
 */
async function listening(server: StreamServer, client: Client): Promise<() => number> {
  let received = 0;
  client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
    received += 1;
  });
  await expect
    .poll(
      async () => {
        await server.notify();
        return received;
      },
      { timeout: 5_000 },
    )
    .toBeGreaterThan(0);
  return () => received;
}

// ---- the tests ------------------------------------------------------------------------------------------------------

describe('tether connect: the stdio bridge', { timeout: 60_000 }, () => {
  it('forwards requests and answers both ways: tools/list and tools/call', async () => {
    const server = await mcpServer();
    const { client, clientErrors, logs, stdin } = await bridgedClient(server.url);

    const { tools } = await client.listTools();
    expect(tools.map((tool) => tool.name)).toContain('whoami');
    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');

    expect(client.getServerVersion()?.name).toBe('tether-test-mcp');
    expect(server.initializations).toBe(1);
    // The client's notifications/initialized went through too.
    await expect.poll(() => server.initializedNotifications, { timeout: 5_000 }).toBe(1);

    // A line that is no JSON-RPC message is logged and skipped; what follows is served.
    stdin.write('{"not":"json-rpc"}\nnot even json\n');
    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');
    expect(logs.filter((line) => line.includes('could not read a message'))).toHaveLength(2);
    expect(clientErrors).toEqual([]);
  });

  it('starts a new session when the server answers 404 for an expired one, and resends the request', async () => {
    const server = await mcpServer();
    // No event streams: only the POST can find the session gone.
    const front = await gate(server.url, { eventStreams: false });
    const { client, clientErrors } = await bridgedClient(front.url);
    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');

    await server.dropSessions();
    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');

    expect(server.requests).toContainEqual(expect.objectContaining({ method: 'POST', status: 404 }));
    expect(server.initializations).toBe(2);
    // The initialize and initialized were replayed; the replayed initialize's answer never reached the client.
    await expect.poll(() => server.initializedNotifications, { timeout: 5_000 }).toBe(2);
    expect(clientErrors).toEqual([]);

    // And the new session is the one in use from then on.
    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');
    expect(server.initializations).toBe(2);
  });

  it('answers a request lost with its session with ERR_SESSION_LOST, and starts a new session', async () => {
    const server = await mcpServer();
    const { client, clientErrors } = await bridgedClient(server.url);
    let reached!: () => void;
    const hanging = new Promise<void>((resolve) => {
      reached = resolve;
    });
    // The hang tool never answers; its progress notification proves it reached the server, through the bridge.
    const lost = client.callTool({ name: 'hang' }, undefined, {
      onprogress: () => {
        reached();
      },
      timeout: 20_000,
    });
    await hanging;

    // The server ends the request's stream with the session: the bridge finds the session gone (404).
    await server.dropSessions();
    const error = await mcpError(lost);
    expect(error.code).toBe(BRIDGE_ERROR_CODE);
    expect((error.data as BridgeErrorData).code).toBe('ERR_SESSION_LOST');
    await expect.poll(() => server.initializations, { timeout: 5_000 }).toBe(2);
    expect(server.requests).toContainEqual(expect.objectContaining({ method: 'POST', status: 404 }));

    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');
    expect(server.initializations).toBe(2);
    expect(clientErrors).toEqual([]);
  });

  it('starts a new session by itself when its event stream, reopened after 1 s, finds the session gone', async () => {
    const server = await streamServer({ resumable: false });
    const { client, clientErrors, clock } = await bridgedClient(server.url);
    await listening(server, client);

    await server.dropSessions();
    expect(await nextTimerIn(clock)).toBe(1_000);
    await clock.advance(999);
    expect(gets(server)).toBe(1);
    await clock.advance(1);

    // No request from the client: the reopened stream meets the 404, and a new session starts, with its own stream.
    await expect.poll(() => server.initializations, { timeout: 5_000 }).toBe(2);
    await expect.poll(() => gets(server), { timeout: 5_000 }).toBe(3);
    expect((await client.listTools()).tools.map((tool) => tool.name)).toEqual(['polled']);
    expect(server.initializations).toBe(2);
    expect(clientErrors).toEqual([]);
  });

  it('reopens a dropped event stream with backoff (1 s, 1.5 s, 2.25 s) through 503s, and gets notifications again', async () => {
    const server = await streamServer({ resumable: false });
    const { client, clientErrors, clock, logs } = await bridgedClient(server.url);
    const received = await listening(server, client);

    server.refuse();
    server.closeEventStreams();
    for (const [attempt, delay] of [1_000, 1_500, 2_250].entries()) {
      expect(await nextTimerIn(clock)).toBe(delay);
      await clock.advance(delay - 1);
      expect(gets(server)).toBe(1 + attempt);
      if (attempt === 2) server.open();
      await clock.advance(1);
      await expect.poll(() => gets(server)).toBe(2 + attempt);
    }
    expect(logs.filter((line) => line.includes('could not reopen an event stream'))).toHaveLength(2);

    const before = received();
    await expect
      .poll(
        async () => {
          await server.notify();
          return received();
        },
        { timeout: 5_000 },
      )
      .toBeGreaterThan(before);
    expect(clock.nextTimerAt()).toBeUndefined();
    expect(clientErrors).toEqual([]);
  });

  it("resumes a request's stream from its Last-Event-ID after the server's retry, and delivers the answer", async () => {
    const server = await streamServer({ resumable: true, retryMs: 5_000 });
    const { client, clientErrors, clock } = await bridgedClient(server.url);
    const answer = client.callTool({ name: 'polled' });

    // The server closed the request's stream after numbering it: the bridge waits the server's retry.
    expect(await nextTimerIn(clock)).toBe(5_000);
    server.release();
    await clock.advance(4_999);
    expect(server.requests.filter((request) => request.lastEventId !== undefined)).toEqual([]);
    await clock.advance(1);

    expect(text(await answer)).toBe('done');
    expect(server.requests).toContainEqual({ method: 'GET', lastEventId: expect.any(String) as string });
    expect(clientErrors).toEqual([]);
  });

  it('answers a request whose stream ended without its answer in a live session with ERR_UPSTREAM', async () => {
    const server = await streamServer({ resumable: false });
    const { client, clientErrors } = await bridgedClient(server.url);

    const error = await mcpError(client.callTool({ name: 'vanish' }));
    expect(error.code).toBe(BRIDGE_ERROR_CODE);
    expect((error.data as BridgeErrorData).code).toBe('ERR_UPSTREAM');
    // The session was still there (a ping said so): it is the one still in use.
    const { tools } = await client.listTools();
    expect(tools.map((tool) => tool.name)).toEqual(['polled']);
    expect(server.initializations).toBe(1);
    expect(clientErrors).toEqual([]);
  });

  it('passes on answers written over several lines (a JSON body, an event with several data lines) as one line each', async () => {
    // A hand-written server: the SDK's writes each message on one line, and has GET streams.
    const headers: http.IncomingHttpHeaders[] = [];
    const server = http.createServer((req, res) => {
      headers.push(req.headers);
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        if (req.method !== 'POST') {
          res.writeHead(405).end();
          return;
        }
        const message = JSON.parse(Buffer.concat(chunks).toString()) as { id?: number; method: string };
        if (message.id === undefined) {
          res.writeHead(202).end();
        } else if (message.method === 'initialize') {
          const result = {
            protocolVersion: '2025-06-18',
            capabilities: { tools: {} },
            serverInfo: { name: 'raw', version: '1' },
          };
          res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'mcp-session-id': 'raw-session' });
          res.end(JSON.stringify({ jsonrpc: '2.0', id: message.id, result }, null, 2));
        } else {
          const result = { tools: [{ name: 'spread', inputSchema: { type: 'object' } }] };
          const data = JSON.stringify({ jsonrpc: '2.0', id: message.id, result }, null, 2);
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.end(`${data.replace(/^/gm, 'data: ')}\n\n`);
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    onTestFinished(() => closeServer(server));
    const { client, clientErrors, clock } = await bridgedClient(
      `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`,
    );

    expect((await client.listTools()).tools.map((tool) => tool.name)).toEqual(['spread']);
    expect(clientErrors).toEqual([]);
    // After initialize, every request names the session and the agreed protocol version.
    expect(headers.at(-1)).toMatchObject({ 'mcp-session-id': 'raw-session', 'mcp-protocol-version': '2025-06-18' });
    // The server has no GET stream (405): once it said so (and a round trip later), nothing is scheduled to ask again.
    await expect.poll(() => headers.filter((h) => h.accept === 'text/event-stream')).toHaveLength(1);
    await client.listTools();
    expect(clock.nextTimerAt()).toBeUndefined();
  });

  it("answers a request with tether's explanation when the proxy answers 503, and carries on after", async () => {
    const server = await mcpServer();
    const front = await gate(server.url);
    const { client, logs } = await bridgedClient(front.url);
    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');

    front.refuse({
      status: 503,
      body: {
        error: 'unauthenticated',
        message: 'tether has no valid token for demo: run `tether login demo`, then retry',
      },
    });
    const unauthenticated = await mcpError(client.callTool({ name: 'whoami' }));
    expect(unauthenticated.code).toBe(BRIDGE_ERROR_CODE);
    expect(unauthenticated.message).toContain('tether login demo');
    expect(unauthenticated.data).toEqual({ code: 'ERR_UPSTREAM_UNAVAILABLE', status: 503, reason: 'unauthenticated' });

    front.refuse({
      status: 503,
      headers: { 'retry-after': '30' },
      body: {
        error: 'auth_retrying',
        message: 'tether is still retrying the token refresh for demo; try again in 30 s',
      },
    });
    const retrying = await mcpError(client.listTools());
    expect(retrying.code).toBe(BRIDGE_ERROR_CODE);
    expect(retrying.data).toEqual({
      code: 'ERR_UPSTREAM_UNAVAILABLE',
      status: 503,
      reason: 'auth_retrying',
      retryAfterSeconds: 30,
    });

    front.open();
    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');
    // The same session throughout: a 503 is no reason to start another.
    expect(server.initializations).toBe(1);
    expect(logs.join('\n')).toContain('unauthenticated');
  });

  it('answers with an error saying nothing listens when the endpoint is down', async () => {
    // A port that was just free: nothing listens there.
    const probe = http.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await closeServer(probe);

    const error = await mcpError(bridgedClient(`http://127.0.0.1:${port}/mcp`));
    expect(error.code).toBe(BRIDGE_ERROR_CODE);
    expect((error.data as BridgeErrorData).code).toBe('ERR_UPSTREAM');
    expect(error.message).toContain('ECONNREFUSED');
  });

  it('as a process: answers on stdout only, and ends with exit code 0 when stdin closes, ending its session', async () => {
    const server = await mcpServer();
    const child = spawn(process.execPath, ['--import', 'tsx', CHILD, server.url], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    onTestFinished(async () => {
      child.kill('SIGKILL');
      await exited;
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString('utf8');
    });
    const send = (message: unknown): void => {
      child.stdin.write(`${JSON.stringify(message)}\n`);
    };

    send({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
    });
    // Long: under load, starting node with tsx alone can take seconds.
    await expect.poll(() => stdout, { timeout: 30_000 }).toContain('\n');
    send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    send({ jsonrpc: '2.0', id: 2, method: 'tools/list' });
    await expect.poll(() => stdout.split('\n').length, { timeout: 5_000 }).toBe(3);
    const lines = stdout.split('\n').slice(0, 2);
    const [initialized, listed] = lines.map(
      (line) => JSON.parse(line) as { id: number; result: Record<string, unknown> },
    );
    expect(initialized).toMatchObject({ id: 1, result: { protocolVersion: '2025-06-18' } });
    expect(listed?.id).toBe(2);
    expect(listed?.result['tools']).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'whoami' })]));
    expect(server.initializedNotifications).toBe(1);

    child.stdin.end();
    expect(await exited).toBe(0);
    // The session was ended on the way out (a DELETE), not left to expire.
    await expect.poll(() => server.requests.map((request) => request.method), { timeout: 5_000 }).toContain('DELETE');
  });
});

describe('tether connect: finding the workload from its files', () => {
  async function home(): Promise<string> {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'tether-lookup-'));
    onTestFinished(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }
  const codeOf = (promise: Promise<unknown>): Promise<unknown> =>
    promise.then(
      () => 'resolved',
      (error: unknown) => (error instanceof TetherError ? error.code : error),
    );

  it('a name without a workload: ERR_NO_WORKLOAD; a name no workload can have: ERR_INVALID_WORKLOAD_NAME', async () => {
    const env = { TETHER_HOME: await home() };
    expect(await codeOf(lookUpWorkload(env, 'nope'))).toBe('ERR_NO_WORKLOAD');
    expect(await codeOf(lookUpWorkload(env, '../nope'))).toBe('ERR_INVALID_WORKLOAD_NAME');
  });

  it('a workload that never ran: no status; one whose process died: error', async () => {
    const dir = await home();
    const env = { TETHER_HOME: dir };
    const files = new WorkloadFiles(dir, 'work');
    await mkdir(files.dir, { recursive: true });
    await writeFile(path.join(files.dir, 'metadata.json'), '{}');
    expect(await lookUpWorkload(env, 'work')).toBeUndefined();

    const at = new Date(0).toISOString();
    await writeStatus(files, {
      name: 'work',
      remoteUrl: 'https://mcp.example.com/mcp',
      proxyUrl: 'http://127.0.0.1:1/mcp',
      pid: 2 ** 30, // above any pid Linux hands out
      status: 'running',
      statusReason: 'serving',
      statusSince: at,
      refresh: { state: 'ok' },
      token: {},
      createdAt: at,
      updatedAt: at,
    });
    const status = await lookUpWorkload(env, 'work');
    expect(status).toMatchObject({ status: 'error' });
    expect(status?.pid).toBeUndefined();
  });
});

describe('reading an event stream', () => {
  const parse = (...pieces: string[]): ServerSentEvent[] => {
    const parser = new EventStreamParser();
    return pieces.flatMap((piece) => parser.push(piece));
  };

  it.each<[string, string[], ServerSentEvent[]]>([
    ['one event', ['data: a\n\n'], [{ type: 'message', data: 'a' }]],
    [
      'every field',
      ['event: x\ndata: a\ndata: b\nid: 7\nretry: 100\n\n'],
      [{ type: 'x', data: 'a\nb', id: '7', retry: 100 }],
    ],
    [
      'CRLF and CR line ends',
      ['data: a\r\n\r\ndata: b\r\r'],
      [
        { type: 'message', data: 'a' },
        { type: 'message', data: 'b' },
      ],
    ],
    ['a CR and its LF in two pieces', ['data: a\r', '\n\r', '\n'], [{ type: 'message', data: 'a' }]],
    ['a field split across pieces', ['da', 'ta: a', 'b\n', '\n'], [{ type: 'message', data: 'ab' }]],
    ['only one space after the colon is dropped', ['data:a\ndata:  b\n\n'], [{ type: 'message', data: 'a\n b' }]],
    ['a field without a colon has an empty value', ['data\n\n'], [{ type: 'message', data: '' }]],
    ['a priming event: an id, empty data', ['id: p1\ndata: \n\n'], [{ type: 'message', data: '', id: 'p1' }]],
    ['comments, unknown fields and blank lines alone are no events', [': hi\nfoo: bar\n\n\n'], []],
    ['a BOM at the start is dropped', ['\uFEFFdata: a\n\n'], [{ type: 'message', data: 'a' }]],
    [
      'an invalid retry and an id with NUL are ignored',
      ['retry: 1s\nid: a\0b\ndata: a\n\n'],
      [{ type: 'message', data: 'a' }],
    ],
    ['an event the stream ended in is never returned', ['data: a\n\ndata: b\n'], [{ type: 'message', data: 'a' }]],
  ])('%s', (_name, pieces, events) => {
    expect(parse(...pieces)).toEqual(events);
  });

  it('gives the same events however the stream is split', () => {
    const unit = fc.constantFrom('data', 'id', 'event', 'retry', ':', ' ', 'x', '1', '\r', '\n', '\r\n', '\uFEFF', 'é');
    fc.assert(
      fc.property(fc.array(unit, { maxLength: 60 }), fc.array(fc.nat(), { maxLength: 8 }), (units, cuts) => {
        const stream = units.join('');
        const points = [...new Set(cuts.map((cut) => cut % (stream.length + 1)))].sort((a, b) => a - b);
        const pieces = [0, ...points].map((from, i) => stream.slice(from, [...points, stream.length][i]));
        expect(parse(...pieces)).toEqual(parse(stream));
      }),
    );
  });
});
