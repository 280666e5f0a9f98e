/**
 * `tether connect` (DESIGN §6): the stdio bridge in a real child process
 * (test/support/bridge-child.ts), driven by the SDK's own `Client` over
 * `StdioClientTransport`, in front of a real SDK MCP server over Streamable
 * HTTP (src/demo/mcp-server.ts without the bearer check: what tether's local
 * proxy looks like from the bridge). Where the proxy's own answers matter
 * (503 without a usable token), a gate that can refuse stands in between.
 */
import { spawn } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { describe, expect, it, onTestFinished } from 'vitest';
import { closeServer } from '../src/demo/auth-server.js';
import { startMcpServer, type TestMcpServer } from '../src/demo/mcp-server.js';
import { BRIDGE_ERROR_CODE, type BridgeErrorData } from '../src/proxy/bridge.js';
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
  /** What the bridge wrote to stderr so far. */
  readonly stderr: () => string;
}

/** An SDK client whose server is `tether connect` (the child) bridging to `url`; closed with the test. */
async function bridgedClient(url: string): Promise<Bridged> {
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: ['--import', 'tsx', CHILD, url],
    cwd: ROOT,
    stderr: 'pipe',
  });
  let stderr = '';
  transport.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const client = new Client({ name: 'bridge-test', version: '1.0.0' });
  const clientErrors: Error[] = [];
  client.onerror = (error) => {
    clientErrors.push(error);
  };
  onTestFinished(() => client.close());
  await client.connect(transport);
  return { client, clientErrors, stderr: () => stderr };
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

describe('tether connect: the stdio bridge', { timeout: 60_000 }, () => {
  it('forwards requests and answers both ways: tools/list and tools/call', async () => {
    const server = await mcpServer();
    const { client, clientErrors } = await bridgedClient(server.url);

    const { tools } = await client.listTools();
    expect(tools.map((tool) => tool.name)).toContain('whoami');
    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');

    expect(client.getServerVersion()?.name).toBe('tether-test-mcp');
    expect(server.initializations).toBe(1);
    // The client's notifications/initialized went through too.
    await expect.poll(() => server.initializedNotifications, { timeout: 5_000 }).toBe(1);
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

  it('starts a new session when its event stream finds the session gone, answering a request lost with it', async () => {
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

    await server.dropSessions();
    // No request from the client: the bridge's GET stream (reconnecting, or still being opened) meets the 404.
    const error = await mcpError(lost);
    expect(error.code).toBe(BRIDGE_ERROR_CODE);
    expect((error.data as BridgeErrorData).code).toBe('ERR_SESSION_LOST');
    await expect.poll(() => server.initializations, { timeout: 5_000 }).toBe(2);
    expect(server.requests).toContainEqual(expect.objectContaining({ method: 'GET', status: 404 }));

    expect(text(await client.callTool({ name: 'whoami' }))).toBe('anonymous');
    expect(server.initializations).toBe(2);
    expect(clientErrors).toEqual([]);
  });

  it("answers a request with tether's explanation when the proxy answers 503, and carries on after", async () => {
    const server = await mcpServer();
    const front = await gate(server.url);
    const { client, stderr } = await bridgedClient(front.url);
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
    expect(stderr()).toContain('unauthenticated');
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

  it('ends with exit code 0 when stdin closes, ending its session', async () => {
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
    expect(JSON.parse(stdout.split('\n')[0] ?? '')).toMatchObject({ id: 1, result: { protocolVersion: '2025-06-18' } });
    send({ jsonrpc: '2.0', method: 'notifications/initialized' });
    await expect.poll(() => server.initializedNotifications, { timeout: 5_000 }).toBe(1);

    child.stdin.end();
    expect(await exited).toBe(0);
    // The session was ended on the way out (a DELETE), not left to expire.
    await expect.poll(() => server.requests.map((request) => request.method), { timeout: 5_000 }).toContain('DELETE');
  });
});
