import type { DynamicClient, RegistrationStore } from '../oauth/registration.js';
/**
 * A real authorization server for tests: oidc-provider 8 on 127.0.0.1:0,
 * configured as TESTING.md describes (open dynamic registration, PKCE S256
 * required, resource indicators issuing JWT access tokens whose audience is
 * the resource, refresh-token rotation, refresh tokens for public clients,
 * native clients whose loopback redirect URIs match on any port), with
 * headless interactions, plus {@link loginHeadlessly}: a whole
 * authorization-code + PKCE login without a browser. Optionally with the
 * device authorization grant (RFC 8628) and a headless user who enters the
 * user code ({@link TestAuthServer.enterUserCode}). Optionally with a grace
 * period for reusing a rotated refresh token
 * ({@link AuthServerOptions.refreshTokenReuseGraceSeconds}).
 */
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JSONWebKeySet, JWK as PublicJwk } from 'jose';
import * as oauth from 'oauth4webapi';
import Provider, { type AdapterFactory, type AdapterPayload, type ClientMetadata, type JWK } from 'oidc-provider';
import { systemClock } from '../clock/system.js';
import { assertSecureEndpoint, type HttpClient, oauthRequestOptions } from '../oauth/http.js';
import { loginWithBrowser } from '../oauth/login.js';

/** The one account every headless login signs in as. */
export const TEST_ACCOUNT = 'test-user';
/** The scope the resource server (the MCP server) defines. */
export const MCP_SCOPE = 'mcp';

export interface AuthServerOptions {
  /** The issuer, when the server is reached through a proxy (e.g. a fault proxy's URL). Default: its own URL. */
  readonly issuer?: string;
  /** Lifetime of access tokens, in seconds. Default 300. */
  readonly accessTokenTtlSeconds?: number;
  /** Pre-registered (static) clients. */
  readonly clients?: ClientMetadata[];
  /** Open dynamic registration. Default true. */
  readonly registration?: boolean;
  /** Enables the device authorization grant (oidc-provider's `features.deviceFlow`). Default off. */
  readonly deviceFlow?: DeviceFlowOptions;
  /**
   * Seconds during which a refresh token already rotated may be used again
   * (and is rotated again), as servers with a reuse interval allow (Okta's
   * grace period, Auth0's reuse interval). Default 0: oidc-provider's own
   * behaviour, where reusing a rotated refresh token gets `invalid_grant`
   * and revokes the whole grant. Changeable later through
   * {@link TestAuthServer.refreshTokenReuseGraceSeconds}.
   */
  readonly refreshTokenReuseGraceSeconds?: number;
}

/** The device authorization grant (RFC 8628) on the test server. */
export interface DeviceFlowOptions {
  /** Lifetime of a device code (its `expires_in`), in seconds. Default 600. */
  readonly ttlSeconds?: number;
  /**
   * The polling `interval` the device authorization response states, in
   * seconds. oidc-provider 8 states none (clients then wait 5 s, RFC 8628
   * §3.2); this adds it to the response.
   */
  readonly intervalSeconds?: number;
}

/** What the headless user answers at the consent prompt. */
export type ConsentAnswer = 'grant' | 'deny';

/** One request to the token endpoint, as answered. */
export interface RecordedTokenRequest {
  readonly grantType: string | undefined;
  readonly status: number;
  /** The OAuth `error` of the answer, if any. */
  readonly error?: string;
  /** True when the test server answered `slow_down` in place of oidc-provider's `authorization_pending`. */
  readonly slowedDown?: boolean;
  /**
   * `refresh_token` grants: the refresh token the client presented, and the
   * one the answer carried — test evidence of which token was spent and which
   * was issued (this server is a test peer; its tokens protect nothing).
   */
  readonly presentedRefreshToken?: string;
  readonly issuedRefreshToken?: string;
  /** True when the presented refresh token had been rotated already and was accepted within the reuse grace. */
  readonly reusedWithinGrace?: boolean;
}

/** The last page the headless user saw. */
export interface HeadlessPage {
  readonly status: number;
  readonly url: string;
  readonly body: string;
}

export interface TestAuthServer {
  /** Where the server listens (not necessarily the issuer). */
  readonly url: string;
  readonly issuer: string;
  readonly provider: Provider;
  /** The public signing keys, for verifying JWT access tokens. */
  readonly jwks: JSONWebKeySet;
  /**
   * Destroys the grant behind a refresh token: its next use gets a real
   * `invalid_grant`, as after a user revoked the app.
   */
  revokeGrant(refreshToken: string): Promise<void>;
  /**
   * What the headless user answers at the consent prompt, for every login
   * (browser or device) from now on: grant what was asked (default), or deny,
   * which finishes the interaction with `access_denied`.
   */
  consent: ConsentAnswer;
  /** Every request to the token endpoint, in order. */
  readonly tokenRequests: readonly RecordedTokenRequest[];
  /**
   * Device flow: the headless user opens the verification URI, types
   * `userCode`, and on the confirmation page continues (then signs in and
   * answers the consent as {@link consent} says) or aborts (`access_denied`).
   * Resolves with the last page shown.
   */
  enterUserCode(userCode: string, answer?: 'continue' | 'abort'): Promise<HeadlessPage>;
  /**
   * Device flow: the next `count` polls that oidc-provider answers
   * `authorization_pending` are answered `slow_down` instead, as a server does
   * when polled too fast (RFC 8628 §3.5). oidc-provider 8 never sends
   * `slow_down` itself. A pending poll changes nothing on the server, so the
   * substitution hides no state change from the client.
   */
  slowDownNextPolls(count: number): void;
  /** The reuse grace for rotated refresh tokens, in seconds (see {@link AuthServerOptions}); may be changed at any time. */
  refreshTokenReuseGraceSeconds: number;
  close(): Promise<void>;
}

// One signing key per test process: RSA key generation takes a while.
let signingKey: { private: JWK; public: PublicJwk } | undefined;
function testSigningKey(): { private: JWK; public: PublicJwk } {
  if (signingKey === undefined) {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const meta = { kid: 'test-key', use: 'sig', alg: 'RS256' };
    signingKey = {
      private: { ...(privateKey.export({ format: 'jwk' }) as JWK), ...meta },
      public: { ...(publicKey.export({ format: 'jwk' }) as PublicJwk), ...meta },
    };
  }
  return signingKey;
}

/** Starts the authorization server on 127.0.0.1:0. */
export async function startAuthServer(options: AuthServerOptions = {}): Promise<TestAuthServer> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const issuer = options.issuer ?? url;
  const ttl = options.accessTokenTtlSeconds ?? 300;
  const key = testSigningKey();
  const device = options.deviceFlow;
  let consent: ConsentAnswer = 'grant';
  let slowDowns = 0;
  const tokenRequests: RecordedTokenRequest[] = [];
  const reuse = { graceSeconds: options.refreshTokenReuseGraceSeconds ?? 0, withinGrace: new Set<string>() };

  const provider = new Provider(issuer, {
    adapter: memoryAdapter(reuse),
    clients: options.clients ?? [],
    clientDefaults: {
      application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    cookies: { keys: ['tether-test-cookie-key'] },
    jwks: { keys: [key.private] },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: options.registration ?? true, initialAccessToken: false },
      revocation: { enabled: true },
      ...(device !== undefined && {
        deviceFlow: {
          enabled: true,
          // Plain pages instead of the defaults, which warn that they should be changed.
          userCodeInputSource: (ctx, form, _out, err) => {
            ctx.body = page('Sign-in', `${err === undefined ? '' : `<p class="error">${err.name}</p>`}${form}`);
          },
          userCodeConfirmSource: (ctx, form, _client, _deviceInfo, userCode) => {
            ctx.body = page('Confirm device', `<p>Code <code>${userCode}</code></p>${form}`);
          },
          successSource: (ctx) => {
            ctx.body = page('Sign-in success', '<p>Signed in; you can close this page.</p>');
          },
        },
      }),
      resourceIndicators: {
        enabled: true,
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => ({
          scope: MCP_SCOPE,
          audience: resource,
          accessTokenFormat: 'jwt',
          accessTokenTTL: ttl,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    pkce: { methods: ['S256'], required: () => true },
    rotateRefreshToken: () => true,
    // The default issues refresh tokens only with `offline_access`.
    issueRefreshToken: (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    scopes: ['openid', 'offline_access', MCP_SCOPE],
    ttl: {
      AccessToken: ttl,
      AuthorizationCode: 60,
      ClientCredentials: ttl,
      DeviceCode: device?.ttlSeconds ?? 600,
      BackchannelAuthenticationRequest: 600,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Interaction: 600,
      Session: 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    findAccount: (_ctx, accountId) => ({ accountId, claims: () => ({ sub: accountId }) }),
    renderError: (ctx, out) => {
      ctx.type = 'json';
      ctx.body = out;
    },
  });
  // Behind a TLS-terminating proxy, X-Forwarded-Proto tells it the scheme.
  provider.proxy = true;
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method !== 'POST') return;
    if (ctx.path === '/device/auth' && ctx.status === 200 && device?.intervalSeconds !== undefined) {
      ctx.body = { ...(ctx.body as object), interval: device.intervalSeconds };
    }
    if (ctx.path !== '/token') return;
    const body = ctx.body as { error?: unknown } | undefined;
    const error = typeof body?.error === 'string' ? body.error : undefined;
    const params = (ctx.oidc as { params?: { grant_type?: unknown; refresh_token?: unknown } } | undefined)?.params;
    const grantType = params?.grant_type;
    const presented = typeof params?.refresh_token === 'string' ? params.refresh_token : undefined;
    const issued = (body as { refresh_token?: unknown } | undefined)?.refresh_token;
    const slowedDown = error === 'authorization_pending' && slowDowns > 0;
    if (slowedDown) {
      slowDowns--;
      ctx.body = { error: 'slow_down', error_description: 'you are polling too quickly' };
    }
    tokenRequests.push({
      grantType: typeof grantType === 'string' ? grantType : undefined,
      status: ctx.status,
      ...(error !== undefined && { error: slowedDown ? 'slow_down' : error }),
      ...(slowedDown && { slowedDown }),
      ...(presented !== undefined && { presentedRefreshToken: presented }),
      ...(typeof issued === 'string' && { issuedRefreshToken: issued }),
      ...(presented !== undefined &&
        ctx.status === 200 &&
        reuse.withinGrace.has(presented) && { reusedWithinGrace: true }),
    });
  });

  const callback = provider.callback();
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.url?.startsWith('/interaction/') === true) {
      finishInteraction(provider, req, res, consent).catch((error: unknown) => {
        res.statusCode = 500;
        res.end(String(error));
      });
      return;
    }
    void callback(req, res);
  });

  return {
    url,
    issuer,
    provider,
    jwks: { keys: [key.public] },
    async revokeGrant(refreshToken) {
      const token = await provider.RefreshToken.find(refreshToken);
      if (token?.grantId === undefined) throw new Error('no such refresh token');
      const grant = await provider.Grant.find(token.grantId);
      await grant?.destroy();
    },
    get consent() {
      return consent;
    },
    set consent(answer: ConsentAnswer) {
      consent = answer;
    },
    tokenRequests,
    enterUserCode: (userCode, answer = 'continue') => {
      if (device === undefined) throw new Error('the device flow is not enabled on this server');
      return enterUserCode(url, userCode, answer);
    },
    slowDownNextPolls(count) {
      slowDowns = count;
    },
    get refreshTokenReuseGraceSeconds() {
      return reuse.graceSeconds;
    },
    set refreshTokenReuseGraceSeconds(seconds: number) {
      reuse.graceSeconds = seconds;
    },
    close: () => closeServer(server),
  };
}

function page(title: string, content: string): string {
  return `<!doctype html><meta charset="utf-8"><title>${title}</title><h1>${title}</h1>${content}`;
}

/**
 * Storage for one server: oidc-provider's own in-memory adapter is shared by
 * every server in the process, evicts past 1,000 entries and warns on start.
 *
 * It also emulates a reuse grace for rotated refresh tokens, which
 * oidc-provider does not have: its refresh grant refuses a token whose
 * payload is `consumed` (and revokes the grant), so within the grace a
 * consumed refresh token is handed out without that mark, and is rotated
 * again; its id is noted in `withinGrace`.
 */
function memoryAdapter(reuse: { readonly graceSeconds: number; readonly withinGrace: Set<string> }): AdapterFactory {
  const entries = new Map<string, AdapterPayload>();
  /** When each refresh token was first consumed (ms), for the grace. */
  const consumedAt = new Map<string, number>();
  const byGrant = new Map<string, string[]>();
  const byUid = new Map<string, string>();
  const byUserCode = new Map<string, string>();
  return (model) => {
    const key = (id: string): string => `${model}:${id}`;
    return {
      upsert(id, payload) {
        entries.set(key(id), payload);
        if (payload.grantId !== undefined)
          byGrant.set(payload.grantId, [...(byGrant.get(payload.grantId) ?? []), key(id)]);
        if (payload.uid !== undefined) byUid.set(payload.uid, id);
        if (payload.userCode !== undefined) byUserCode.set(payload.userCode, id);
        return Promise.resolve();
      },
      find: (id) => {
        const entry = entries.get(key(id));
        const since = consumedAt.get(key(id));
        if (model === 'RefreshToken' && entry?.consumed !== undefined && since !== undefined) {
          if (Date.now() - since < reuse.graceSeconds * 1000) {
            reuse.withinGrace.add(id);
            const unconsumed: AdapterPayload = { ...entry };
            delete unconsumed.consumed;
            return Promise.resolve(unconsumed);
          }
        }
        return Promise.resolve(entry);
      },
      findByUid: (uid) => Promise.resolve(entries.get(key(byUid.get(uid) ?? ''))),
      findByUserCode: (userCode) => Promise.resolve(entries.get(key(byUserCode.get(userCode) ?? ''))),
      consume(id) {
        const entry = entries.get(key(id));
        if (entry !== undefined) entry.consumed = Math.floor(Date.now() / 1000);
        if (!consumedAt.has(key(id))) consumedAt.set(key(id), Date.now());
        return Promise.resolve();
      },
      destroy(id) {
        entries.delete(key(id));
        return Promise.resolve();
      },
      revokeByGrantId(grantId) {
        for (const entry of byGrant.get(grantId) ?? []) entries.delete(entry);
        byGrant.delete(grantId);
        return Promise.resolve();
      },
    };
  };
}

/**
 * Completes a login prompt with {@link TEST_ACCOUNT} and a consent prompt by
 * granting what was asked, or, when `consent` is `deny`, by refusing it.
 */
async function finishInteraction(
  provider: Provider,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  consent: ConsentAnswer = 'grant',
) {
  const interaction = await provider.interactionDetails(req, res);
  const { prompt, params } = interaction;
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: TEST_ACCOUNT } });
    return;
  }
  if (consent === 'deny') {
    await provider.interactionFinished(
      req,
      res,
      { error: 'access_denied', error_description: 'the user denied the request' },
      { mergeWithLastSubmission: false },
    );
    return;
  }
  const details = prompt.details as {
    missingOIDCScope?: string[];
    missingOIDCClaims?: string[];
    missingResourceScopes?: Record<string, string[]>;
  };
  const grant =
    (interaction.grantId === undefined ? undefined : await provider.Grant.find(interaction.grantId)) ??
    new provider.Grant({ accountId: TEST_ACCOUNT, clientId: String(params.client_id) });
  if (details.missingOIDCScope !== undefined) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims !== undefined) grant.addOIDCClaims(details.missingOIDCClaims);
  for (const [resource, scopes] of Object.entries(details.missingResourceScopes ?? {})) {
    grant.addResourceScope(resource, scopes.join(' '));
  }
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

export interface HeadlessLoginOptions {
  /** The transport: the same one tether would use (proxies, CA store). */
  readonly http: HttpClient;
  readonly authorizationServer: oauth.AuthorizationServer;
  readonly clientId: string;
  readonly clientSecret?: string;
  /** The RFC 8707 resource indicator (the MCP URL). */
  readonly resource: string;
  /** Default {@link MCP_SCOPE}. */
  readonly scope?: string;
}

/** What a login yields. */
export interface LoginTokens {
  readonly accessToken: string;
  readonly refreshToken: string;
  readonly expiresIn?: number;
  readonly scope?: string;
}

/**
 * A whole login without a person: tether's own `loginWithBrowser` (PKCE S256,
 * `state`, `iss`, `resource`), with the {@link headlessBrowser} following the
 * server's redirects through the headless interactions to the callback.
 */
export async function loginHeadlessly(options: HeadlessLoginOptions): Promise<LoginTokens> {
  const as = options.authorizationServer;
  const tokens = await loginWithBrowser({
    as,
    client: {
      clientId: options.clientId,
      ...(options.clientSecret !== undefined && { clientSecret: options.clientSecret }),
    },
    resource: options.resource,
    scopes: [options.scope ?? MCP_SCOPE],
    clock: systemClock,
    prompt: () => undefined,
    requestOptions: oauthRequestOptions(
      options.http,
      assertSecureEndpoint(String(as.token_endpoint), 'token_endpoint'),
    ),
    launch: headlessBrowser(options.http),
  });
  if (tokens.refreshToken === undefined) throw new Error('the login issued no refresh token');
  return {
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    ...(tokens.expiresAt !== undefined && { expiresIn: Math.round((tokens.expiresAt - tokens.issuedAt) / 1000) }),
    ...(tokens.scope !== undefined && { scope: tokens.scope }),
  };
}

/** Hooks of {@link headlessBrowser}. */
export interface HeadlessBrowserOptions {
  /** Changes the callback URL before it is requested (e.g. a mix-up attacker's `iss`). */
  readonly rewriteCallback?: (callback: URL) => URL;
  /** Sees the callback URL requested and the page the loopback listener answered with. */
  readonly onCallback?: (callback: URL, page: { readonly status: number; readonly body: string }) => void;
}

/**
 * A stand-in for the user's browser, for `loginWithBrowser`'s `launch`: it
 * follows the authorization URL through the headless interactions (with
 * cookies) and then requests the loopback callback, delivering the code to
 * the login's listener.
 */
export function headlessBrowser(
  httpClient: Pick<HttpClient, 'fetch'>,
  hooks: HeadlessBrowserOptions = {},
): (url: string) => Promise<boolean> {
  return async (url) => {
    const reached = await followRedirects(
      httpClient,
      new URL(url),
      (next) => next.pathname === '/callback' && next.searchParams.has('state'),
    );
    const callback = hooks.rewriteCallback?.(new URL(reached)) ?? reached;
    const response = await httpClient.fetch(callback.href, { method: 'GET' });
    const body = await response.text();
    hooks.onCallback?.(callback, { status: response.status, body });
    return true;
  };
}

/** A user at the device verification page: types the code, then continues or aborts. */
async function enterUserCode(origin: string, userCode: string, answer: 'continue' | 'abort'): Promise<HeadlessPage> {
  const jar = new Map<string, string>();
  const input = await browse(jar, new URL('/device', origin));
  const confirm = await browse(jar, new URL('/device', origin), {
    xsrf: hiddenInput(input.body, 'xsrf'),
    user_code: userCode,
  });
  return browse(jar, new URL('/device', origin), {
    xsrf: hiddenInput(confirm.body, 'xsrf'),
    user_code: hiddenInput(confirm.body, 'user_code'),
    ...(answer === 'continue' ? { confirm: 'yes' } : { abort: 'yes' }),
  });
}

function hiddenInput(html: string, name: string): string {
  const value = new RegExp(`<input type="hidden" name="${name}" value="([^"]*)"`).exec(html)?.[1];
  if (value === undefined) throw new Error(`no ${name} on the page: ${html}`);
  return value;
}

/** GETs `url` (or POSTs `form` to it) and follows redirects with a cookie jar to the page at the end. */
async function browse(jar: Map<string, string>, start: URL, form?: Record<string, string>): Promise<HeadlessPage> {
  let url = start;
  let body = form === undefined ? undefined : new URLSearchParams(form).toString();
  for (let hop = 0; hop < 20; hop++) {
    const cookie = [...jar].map(([name, value]) => `${name}=${value}`).join('; ');
    const response = await fetch(url, {
      method: body === undefined ? 'GET' : 'POST',
      redirect: 'manual',
      headers: {
        accept: 'text/html',
        ...(cookie !== '' && { cookie }),
        ...(body !== undefined && { 'content-type': 'application/x-www-form-urlencoded' }),
      },
      ...(body !== undefined && { body }),
    });
    keepCookies(jar, response);
    const location = response.headers.get('location');
    if (response.status < 300 || response.status > 399 || location === null) {
      return { status: response.status, url: url.href, body: await response.text() };
    }
    await response.body?.cancel();
    url = new URL(location, url);
    body = undefined;
  }
  throw new Error('the device verification redirected too many times');
}

function keepCookies(jar: Map<string, string>, response: Response): void {
  for (const line of response.headers.getSetCookie()) {
    const [pair = '', ...attributes] = line.split(';');
    const at = pair.indexOf('=');
    const name = pair.slice(0, at).trim();
    const value = pair.slice(at + 1).trim();
    const expired = attributes.some((a) => /^\s*max-age\s*=\s*0\s*$/i.test(a)) || value === '';
    if (expired) jar.delete(name);
    else jar.set(name, value);
  }
}

/** GETs `start` and follows redirects, with a cookie jar, until one points at a URL `isTarget` accepts. */
async function followRedirects(
  httpClient: Pick<HttpClient, 'fetch'>,
  start: URL,
  isTarget: (url: URL) => boolean,
): Promise<URL> {
  const jar = new Map<string, string>();
  let url = start;
  for (let hop = 0; hop < 20; hop++) {
    const cookie = [...jar].map(([name, value]) => `${name}=${value}`).join('; ');
    const response = await httpClient.fetch(url.href, {
      method: 'GET',
      headers: cookie === '' ? {} : { cookie },
    });
    keepCookies(jar, response);
    const location = response.headers.get('location');
    if (response.status < 300 || response.status > 399 || location === null) {
      throw new Error(`the login stopped at HTTP ${response.status} ${url.href}: ${await response.text()}`);
    }
    url = new URL(location, url);
    if (isTarget(url)) return url;
  }
  throw new Error('the login redirected too many times');
}

/** Closes a server and every connection to it, hung ones included. */
export async function closeServer(server: http.Server): Promise<void> {
  const closed = new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  });
  server.closeAllConnections();
  await closed;
}

/** A registration cache in memory (the credential store's `registrations()` in production); counts its writes. */
export class MemoryRegistrations implements RegistrationStore {
  readonly entries = new Map<string, DynamicClient>();
  puts = 0;
  get(issuer: string): Promise<DynamicClient | undefined> {
    return Promise.resolve(this.entries.get(issuer));
  }
  put(issuer: string, registration: DynamicClient): Promise<void> {
    this.puts++;
    this.entries.set(issuer, registration);
    return Promise.resolve();
  }
}
