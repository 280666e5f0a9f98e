import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../src/clock/system.js';
import { classifyFailure } from '../src/keeper/classify.js';
import { discoverAuthorizationServer } from '../src/oauth/discovery.js';
import { HttpClient } from '../src/oauth/http.js';
import { createRefreshFunction } from '../src/oauth/refresh.js';
import { staticClient } from '../src/oauth/registration.js';
import { loginHeadlessly, startAuthServer, type TestAuthServer } from '../src/demo/auth-server.js';
import { selfSignedCertificate, startFaultProxy } from '../src/demo/fault-proxy.js';
import { type ForwardProxy, startForwardProxy } from './support/forward-proxy.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const REDIRECT_URI = 'http://127.0.0.1/callback';
const RESOURCE = 'http://127.0.0.1:1/mcp';
const STATIC_CLIENT = { client_id: 'tether-static', redirect_uris: [REDIRECT_URI] };
const PROXY_VARIABLES = ['HTTP_PROXY', 'http_proxy', 'HTTPS_PROXY', 'https_proxy', 'NO_PROXY', 'no_proxy'];

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Sets proxy variables for this test only, clearing the others. */
function proxyEnvironment(values: Record<string, string>): void {
  const saved = PROXY_VARIABLES.map((name) => [name, process.env[name]] as const);
  for (const name of PROXY_VARIABLES) Reflect.deleteProperty(process.env, name);
  Object.assign(process.env, values);
  cleanups.push(() => {
    for (const [name, value] of saved) {
      if (value === undefined) Reflect.deleteProperty(process.env, name);
      else process.env[name] = value;
    }
    return Promise.resolve();
  });
}

function port(url: string): string {
  return new URL(url).port;
}

describe('a refresh through a forward proxy (corporate networks)', () => {
  let as: TestAuthServer;
  let forward: ForwardProxy;

  async function start(): Promise<{ refreshToken: string; direct: HttpClient }> {
    as = await startAuthServer({ clients: [STATIC_CLIENT] });
    forward = await startForwardProxy();
    cleanups.push(
      () => as.close(),
      () => forward.close(),
    );
    const direct = new HttpClient({ clock: systemClock, proxy: { noProxy: '*' } });
    cleanups.push(() => direct.close());
    const metadata = await discoverAuthorizationServer(as.issuer, { http: direct });
    const login = await loginHeadlessly({
      http: direct,
      authorizationServer: metadata,
      clientId: STATIC_CLIENT.client_id,
      resource: RESOURCE,
    });
    return { refreshToken: login.refreshToken, direct };
  }

  /** A refresh function over a fresh HttpClient that reads the given proxy environment. */
  async function proxiedRefresh(
    direct: HttpClient,
    env: Record<string, string>,
  ): Promise<{ http: HttpClient; refresh: ReturnType<typeof createRefreshFunction> }> {
    const metadata = await discoverAuthorizationServer(as.issuer, { http: direct });
    proxyEnvironment(env);
    const http = new HttpClient({ clock: systemClock });
    cleanups.push(() => http.close());
    const client = staticClient(metadata, { clientId: STATIC_CLIENT.client_id });
    return {
      http,
      refresh: createRefreshFunction({ http, authorizationServer: metadata, client, resource: RESOURCE }),
    };
  }

  it('honours HTTP_PROXY with NO_PROXY empty, and goes direct again after resetTransport once it is unset', async () => {
    const { refreshToken, direct } = await start();
    const { http, refresh } = await proxiedRefresh(direct, { HTTP_PROXY: forward.url, NO_PROXY: '' });

    const first = await refresh(refreshToken, new AbortController().signal);
    if (!first.ok) throw new Error(JSON.stringify(first.failure));
    expect(forward.seen).toEqual([`CONNECT 127.0.0.1:${port(as.url)}`]);

    Reflect.deleteProperty(process.env, 'HTTP_PROXY');
    http.resetTransport();
    const second = await refresh(first.tokens.refreshToken ?? '', new AbortController().signal);
    expect(second.ok).toBe(true);
    expect(forward.seen).toHaveLength(1);
  });

  it('goes direct for hosts in NO_PROXY', async () => {
    const { refreshToken, direct } = await start();
    const { refresh } = await proxiedRefresh(direct, { HTTP_PROXY: forward.url, NO_PROXY: 'localhost,127.0.0.1' });
    expect((await refresh(refreshToken, new AbortController().signal)).ok).toBe(true);
    expect(forward.seen).toEqual([]);
  });
});

describe('an https authorization server through HTTPS_PROXY, trusted through NODE_EXTRA_CA_CERTS', () => {
  it('logs in and refreshes in a process started with the variables, through a CONNECT tunnel', async () => {
    const tls = selfSignedCertificate();
    const dir = await mkdtemp(join(tmpdir(), 'tether-ca-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const caFile = join(dir, 'ca.pem');
    await writeFile(caFile, tls.cert);
    const front = await startFaultProxy({ tls });
    const as = await startAuthServer({ issuer: front.url, clients: [STATIC_CLIENT] });
    front.setTarget(as.url);
    const forward = await startForwardProxy();
    cleanups.push(
      () => front.close(),
      () => as.close(),
      () => forward.close(),
    );

    const output = await runChild(
      `
      const root = ${JSON.stringify(pathToFileURL(ROOT).href)};
      const { systemClock } = await import(root + 'src/clock/system.ts');
      const { HttpClient } = await import(root + 'src/oauth/http.ts');
      const { discoverAuthorizationServer } = await import(root + 'src/oauth/discovery.ts');
      const { createRefreshFunction } = await import(root + 'src/oauth/refresh.ts');
      const { staticClient } = await import(root + 'src/oauth/registration.ts');
      const { loginHeadlessly } = await import(root + 'src/demo/auth-server.ts');
      const http = new HttpClient({ clock: systemClock, totalTimeoutMs: 10000 });
      const as = await discoverAuthorizationServer(${JSON.stringify(front.url)}, { http });
      const login = await loginHeadlessly({ http, authorizationServer: as, clientId: 'tether-static',
        resource: ${JSON.stringify(RESOURCE)} });
      const refresh = createRefreshFunction({ http, authorizationServer: as, resource: ${JSON.stringify(RESOURCE)},
        client: staticClient(as, { clientId: 'tether-static' }) });
      const result = await refresh(login.refreshToken, new AbortController().signal);
      await http.close();
      console.log(JSON.stringify({ ok: result.ok, rotated: result.ok && result.tokens.refreshToken !== login.refreshToken,
        failure: result.ok ? undefined : result.failure }));
      `,
      { HTTPS_PROXY: forward.url, NO_PROXY: '', NODE_EXTRA_CA_CERTS: caFile },
    );
    expect(JSON.parse(output)).toEqual({ ok: true, rotated: true });
    expect(forward.seen.length).toBeGreaterThan(0);
    expect(new Set(forward.seen)).toEqual(new Set([`CONNECT 127.0.0.1:${port(front.url)}`]));
    expect(front.tokenRequests.map((r) => [r.grantType, r.answer, r.status])).toEqual([
      ['authorization_code', 'forwarded', 200],
      ['refresh_token', 'forwarded', 200],
    ]);
  }, 30_000); // a second Node process that loads TypeScript through tsx

  it('without the CA, the refresh fails with a TLS code the classifier calls tls, transient', async () => {
    const front = await startFaultProxy({ tls: selfSignedCertificate() });
    cleanups.push(() => front.close());
    const http = new HttpClient({ clock: systemClock, proxy: { noProxy: '*' } });
    cleanups.push(() => http.close());
    const refresh = createRefreshFunction({
      http,
      authorizationServer: { issuer: front.url, token_endpoint: `${front.url}/token` },
      client: { kind: 'static', issuer: front.url, clientId: 'c', tokenEndpointAuthMethod: 'none' },
    });
    const result = await refresh('rt', new AbortController().signal);
    if (result.ok) throw new Error('expected a failure');
    expect(classifyFailure(result.failure, Date.now())).toMatchObject({ class: 'transient', reason: 'tls' });
    expect(front.tokenRequests).toEqual([]);
  });
});

/** Runs `script` as an ES module in a fresh Node process (with tsx) and returns its stdout. */
function runChild(script: string, env: Record<string, string>): Promise<string> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([name]) => !PROXY_VARIABLES.includes(name)));
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', '--input-type=module', '-e', script],
      { cwd: ROOT, env: { ...base, ...env }, timeout: 30_000 },
      (error, stdout, stderr) => {
        if (error !== null) reject(new Error(`${error.message}\n${stderr}`));
        else resolve(stdout.trim().split('\n').at(-1) ?? '');
      },
    );
  });
}
