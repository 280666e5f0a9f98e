/**
 * The origin bug report's setup, for real (test/chaos.test.ts, opt-in): the
 * authorization server reachable only through a veth pair into a network
 * namespace of its own, where an iptables rule can DROP the packets.
 *
 *   tether (this namespace) ──https──▶ NS_IP:PORT  (veth, the test namespace; iptables INPUT there)
 *                                        │ a TCP relay inside the namespace
 *                                        ▼
 *                                      HOST_IP:PORT (veth, this namespace): the fault proxy, TLS
 *                                        ▼
 *                                      oidc-provider on 127.0.0.1
 *
 * Only addresses created here are touched: a /30 on the veth pair (checked
 * unused first), and the iptables table of the test namespace — never the
 * host's. The MCP server stays on loopback: only the token endpoint is cut.
 * The issuer is https (tether allows plain http on loopback only), with a
 * throwaway certificate for NS_IP that tether trusts through
 * NODE_EXTRA_CA_CERTS and the stand-in user's browser through its own agent.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Agent, fetch as undiciFetch } from 'undici';
import { headlessBrowser, startAuthServer } from '../../src/demo/auth-server.js';
import { selfSignedCertificate, startFaultProxy } from '../../src/demo/fault-proxy.js';
import { startMcpServer } from '../../src/demo/mcp-server.js';
import type { Remote } from '../../src/demo/remote.js';
import type { HttpRequestInit } from '../../src/oauth/http.js';
import { command, IS_ROOT, mustRun, onPath } from './chaos-harness.js';
import { isAlive, waitFor } from './e2e-harness.js';

/** The variable that opts in. */
export const NETNS_OPT_IN = 'TETHER_CHAOS_NETNS';

/**
 * Why the network-namespace test cannot run here, or `undefined` when it can.
 * Opted in (CI as root sets the flag), it still skips — with the reason —
 * where a throwaway namespace cannot be made to hold a veth pair and a DROP
 * rule (a container without CAP_NET_ADMIN, a kernel without veth or
 * netfilter): everything the probe makes lives in that namespace, which is
 * deleted before this returns.
 */
export function netnsSkipReason(): string | undefined {
  if (process.env[NETNS_OPT_IN] !== '1') return `opt-in: set ${NETNS_OPT_IN}=1 (needs root, Linux, ip, iptables)`;
  if (process.platform !== 'linux') return 'network namespaces are Linux-only';
  if (!IS_ROOT) return 'creating a network namespace and a veth pair needs root';
  const missing = ['ip', 'iptables'].filter((tool) => !onPath(tool));
  if (missing.length > 0) return `${missing.join(' and ')} not found on the PATH`;
  const ns = `tether-probe-${String(process.pid % 100_000)}`;
  const created = command('ip', ['netns', 'add', ns]);
  if (!created.ok) return `cannot create a network namespace here: ${created.stderr.trim()}`;
  try {
    const steps: [string, string[]][] = [
      ['a veth pair', ['ip', 'link', 'add', 'tcxprobea', 'type', 'veth', 'peer', 'name', 'tcxprobeb']],
      ['an iptables DROP rule', ['iptables', '-I', 'INPUT', '-p', 'tcp', '--dport', '9', '-j', 'DROP']],
    ];
    for (const [what, args] of steps) {
      const done = command('ip', ['netns', 'exec', ns, ...args]);
      if (!done.ok) return `cannot add ${what} in a network namespace here: ${done.stderr.trim()}`;
    }
    return undefined;
  } finally {
    command('ip', ['netns', 'del', ns]); // takes the veth pair and the rule with it
  }
}

/** A loopback remote whose token endpoint is behind a veth pair and a packet filter. */
export interface NetnsRemote {
  readonly remote: Remote;
  /** The certificate tether must trust (`NODE_EXTRA_CA_CERTS`). */
  readonly caFile: string;
  /** The address tether reaches the authorization server at, inside the namespace. */
  readonly address: string;
  /** Adds the iptables DROP rule for the authorization server's port, in the namespace. */
  block(): void;
  /** Removes it. */
  unblock(): void;
  /** Stops the servers and the relay, deletes the veth pair and the namespace. */
  close(): Promise<void>;
}

/** A TCP relay, run with `node -e` inside the namespace; it exits when its stdin closes (its parent is gone). */
const RELAY = `
const net = require('node:net');
const [listenHost, listenPort, targetHost, targetPort] = process.argv.slice(1);
const server = net.createServer((client) => {
  const upstream = net.connect(Number(targetPort), targetHost);
  const end = () => { client.destroy(); upstream.destroy(); };
  client.on('error', end); upstream.on('error', end); client.on('close', end); upstream.on('close', end);
  client.pipe(upstream).pipe(client);
});
server.listen(Number(listenPort), listenHost, () => console.log('ready'));
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
`;

/** A free 10.254.X.0/30: no address of this host in it, no route for it but the default. */
function freeSubnet(): { host: string; ns: string } {
  const addresses = mustRun('ip', ['-o', '-4', 'addr', 'show']);
  const routes = mustRun('ip', ['-4', 'route', 'show']);
  for (let i = 0; i < 250; i++) {
    const third = ((process.pid + i) % 250) + 1;
    const prefix = `10.254.${String(third)}.`;
    if (addresses.includes(prefix) || routes.includes(prefix) || routes.includes('10.254.0.0/16')) continue;
    return { host: `${prefix}1`, ns: `${prefix}2` };
  }
  throw new Error('no free 10.254.X.0/30 subnet for the veth pair');
}

/**
 * Sets up the namespace, the veth pair, the relay and the remote. Everything
 * already made is undone if a later step fails.
 */
export async function startNetnsRemote(options: { ttlSeconds: number }): Promise<NetnsRemote> {
  const id = String(process.pid % 100_000);
  const ns = `tether-chaos-${id}`;
  const hostIf = `tcx${id}h`;
  const nsIf = `tcx${id}n`;
  const undo: (() => Promise<void> | void)[] = [];
  const close = async (): Promise<void> => {
    const problems: string[] = [];
    for (const step of undo.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        problems.push(String(error));
      }
    }
    if (problems.length > 0) throw new Error(`netns cleanup: ${problems.join('; ')}`);
  };
  try {
    const subnet = freeSubnet();
    mustRun('ip', ['netns', 'add', ns]);
    undo.push(() => {
      mustRun('ip', ['netns', 'del', ns]);
    });
    mustRun('ip', ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
    // Deleting the namespace takes its end of the pair, but only once the kernel gets to it.
    undo.push(() => {
      command('ip', ['link', 'del', hostIf]);
    });
    mustRun('ip', ['link', 'set', nsIf, 'netns', ns]);
    mustRun('ip', ['addr', 'add', `${subnet.host}/30`, 'dev', hostIf]);
    mustRun('ip', ['link', 'set', hostIf, 'up']);
    mustRun('ip', ['netns', 'exec', ns, 'ip', 'addr', 'add', `${subnet.ns}/30`, 'dev', nsIf]);
    mustRun('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', nsIf, 'up']);
    mustRun('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);

    const tls = selfSignedCertificate([subnet.ns]);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'tether-chaos-netns-'));
    undo.push(() => rm(dir, { recursive: true, force: true }));
    const caFile = path.join(dir, 'ca.pem');
    await writeFile(caFile, tls.cert);
    const faults = await startFaultProxy({ tls, host: subnet.host });
    undo.push(() => faults.close());
    const port = new URL(faults.url).port;

    const relay = spawn(
      'ip',
      ['netns', 'exec', ns, process.execPath, '-e', RELAY, subnet.ns, port, subnet.host, port],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    undo.push(() => stopRelay(relay));
    await relayReady(relay);

    const auth = await startAuthServer({
      issuer: `https://${subnet.ns}:${port}`,
      accessTokenTtlSeconds: options.ttlSeconds,
    });
    undo.push(() => auth.close());
    faults.setTarget(auth.url);
    const mcp = await startMcpServer({ issuer: auth.issuer, jwks: auth.jwks });
    undo.push(() => mcp.close());

    // The stand-in user's browser trusts the throwaway certificate; tether gets it through NODE_EXTRA_CA_CERTS.
    const agent = new Agent({ connect: { ca: tls.cert } });
    undo.push(() => agent.close());
    const browser = headlessBrowser({
      fetch: async (url: string, init: HttpRequestInit) => {
        const answer = await undiciFetch(url, {
          method: init.method,
          redirect: 'manual',
          dispatcher: agent,
          ...(init.headers !== undefined && { headers: init.headers }),
          ...(init.body !== undefined && { body: init.body }),
        });
        // As the standard Response tether's HttpClient returns (body read), not undici's own class.
        const body = [101, 204, 205, 304].includes(answer.status) ? null : await answer.arrayBuffer();
        return new Response(body, { status: answer.status, headers: [...answer.headers] });
      },
    });

    const rule = ['-p', 'tcp', '--dport', port, '-j', 'DROP'];
    const iptables = (action: '-I' | '-D'): void => {
      mustRun('ip', ['netns', 'exec', ns, 'iptables', action, 'INPUT', ...rule]);
    };
    const remote: Remote = {
      mcpUrl: mcp.url,
      auth,
      faults,
      mcp,
      async completeLogin(url) {
        await browser(url);
      },
      close,
    };
    return {
      remote,
      caFile,
      address: subnet.ns,
      block: () => {
        iptables('-I');
      },
      unblock: () => {
        iptables('-D');
      },
      close,
    };
  } catch (error) {
    await close().catch(() => undefined);
    throw error;
  }
}

function relayReady(relay: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let output = '';
    relay.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
      if (output.includes('ready')) resolve();
    });
    relay.stderr?.on('data', (chunk: Buffer) => {
      output += chunk.toString('utf8');
    });
    relay.once('exit', (code) => {
      reject(new Error(`the relay exited (${String(code)}) before it listened: ${output}`));
    });
    relay.once('error', reject);
  });
}

/** Ends the relay this module started, by its pid, and waits until it is gone. */
async function stopRelay(relay: ChildProcess): Promise<void> {
  const pid = relay.pid;
  relay.stdin?.end();
  if (pid === undefined) return;
  await waitFor(`the relay (pid ${String(pid)}) to exit`, () => Promise.resolve(isAlive(pid) ? undefined : true), {
    timeoutMs: 3_000,
  }).catch(() => {
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  });
}
