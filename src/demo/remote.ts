/**
 * The remote side of the demo and the end-to-end tests, all on loopback: a
 * real authorization server (oidc-provider) behind a fault proxy (faults
 * only where a test or the demo switches them on), and a real MCP server
 * (the SDK's) that accepts its tokens.
 */
import { systemClock } from '../clock/system.js';
import { HttpClient } from '../oauth/http.js';
import { headlessBrowser, startAuthServer, type TestAuthServer } from './auth-server.js';
import { type FaultProxy, startFaultProxy } from './fault-proxy.js';
import { startMcpServer, type TestMcpServer } from './mcp-server.js';

/** Options of {@link startRemote}. */
export interface RemoteOptions {
  /** Lifetime of access tokens, in seconds (default 300). */
  readonly accessTokenTtlSeconds?: number;
}

/** A running remote. */
export interface Remote {
  /** The MCP endpoint to give `tether run`. */
  readonly mcpUrl: string;
  readonly auth: TestAuthServer;
  /** In front of the authorization server: switch faults on its token endpoint here. */
  readonly faults: FaultProxy;
  readonly mcp: TestMcpServer;
  /** Plays the user in the browser: follows a login URL through consent to tether's loopback callback. */
  completeLogin(url: string): Promise<void>;
  close(): Promise<void>;
}

/** Starts the remote on 127.0.0.1, on free ports. */
export async function startRemote(options: RemoteOptions = {}): Promise<Remote> {
  const faults = await startFaultProxy();
  const auth = await startAuthServer({
    issuer: faults.url,
    ...(options.accessTokenTtlSeconds !== undefined && { accessTokenTtlSeconds: options.accessTokenTtlSeconds }),
  });
  faults.setTarget(auth.url);
  const mcp = await startMcpServer({ issuer: auth.issuer, jwks: auth.jwks });
  const http = new HttpClient({ clock: systemClock });
  const browser = headlessBrowser(http);
  return {
    mcpUrl: mcp.url,
    auth,
    faults,
    mcp,
    async completeLogin(url) {
      await browser(url);
    },
    async close() {
      await mcp.close();
      await auth.close();
      await faults.close();
      await http.close();
    },
  };
}
