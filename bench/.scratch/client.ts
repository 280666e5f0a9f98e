import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
const url = process.argv[2]!;
const c = new Client({ name: 'x', version: '1' });
await c.connect(new StreamableHTTPClientTransport(new URL(url)));
await c.listTools();
for (let b = 0; b < 10; b++) {
  const cpu0 = process.cpuUsage(); const t0 = performance.now();
  for (let i = 0; i < 300; i++) await c.callTool({ name: 'whoami', arguments: {} });
  const cpu = process.cpuUsage(cpu0);
  console.log('batch', b, 'ms/call', ((performance.now() - t0) / 300).toFixed(2), 'client cpu us/call', ((cpu.user + cpu.system) / 300).toFixed(0));
}
await c.close();
