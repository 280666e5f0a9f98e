import { startMcpServer } from '../../src/demo/mcp-server.js';
const s = await startMcpServer({ auth: false });
console.log(s.url);
setInterval(() => { const u = process.cpuUsage(); console.error('server cpu ms', ((u.user + u.system) / 1000).toFixed(0), 'rss', (process.memoryUsage().rss/2**20).toFixed(0)); }, 5000);
