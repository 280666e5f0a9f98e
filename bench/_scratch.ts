import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { startRemote } from '../src/demo/remote.js';

const remote = await startRemote({ accessTokenTtlSeconds: 3600 });
const root = await mkdtemp(path.join(os.tmpdir(), 'scratch-'));
const env = { PATH: process.env.PATH ?? '', HOME: root, MCP_REMOTE_CONFIG_DIR: path.join(root, 'mr'), BROWSER: '/bin/true' };
for (let i = 0; i < 2; i++) {
  const t = new StdioClientTransport({ command: process.execPath, args: ['node_modules/mcp-remote/dist/proxy.js', remote.mcpUrl, '--host', '127.0.0.1'], env, stderr: 'pipe' });
  let err = '';
  let done = false;
  t.stderr?.on('data', (c: Buffer) => {
    err += c.toString();
    const m = /Please authorize this client by visiting:\s*(\S+)/.exec(err);
    if (m?.[1] && !done) { done = true; console.log('login url seen'); remote.completeLogin(m[1]).then(() => console.log('login done'), (e: unknown) => console.log('login failed', e)); }
  });
  const c = new Client({ name: 'x', version: '1' });
  const t0 = performance.now();
  await c.connect(t);
  const tools = await c.listTools();
  console.log(i, 'startup', performance.now() - t0, tools.tools.map((x) => x.name));
  console.log(await c.callTool({ name: 'whoami', arguments: {} }));
  const t1 = performance.now();
  await c.close();
  console.log('close took', performance.now() - t1);
  console.log(err.slice(0, 3000));
}
await remote.close();
