/**
 * A real authorization server for tests: oidc-provider 8 on 127.0.0.1:0,
 * configured as TESTING.md describes (open dynamic registration, PKCE S256
 * required, resource indicators issuing JWT access tokens whose audience is
 * the resource, refresh-token rotation, refresh tokens for public clients,
 * native clients whose loopback redirect URIs match on any port), with
 * headless interactions, plus {@link loginHeadlessly}: a whole
 * authorization-code + PKCE login without a browser.
 */
import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { JSONWebKeySet, JWK as PublicJwk } from 'jose';
import * as oauth from 'oauth4webapi';
import Provider, { type AdapterFactory, type AdapterPayload, type ClientMetadata, type JWK } from 'oidc-provider';
import { assertSecureEndpoint, type HttpClient, oauthRequestOptions } from '../../src/oauth/http.js';

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

  const provider = new Provider(issuer, {
    adapter: memoryAdapter(),
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
      DeviceCode: 600,
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

  const callback = provider.callback();
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (req.url?.startsWith('/interaction/') === true) {
      finishInteraction(provider, req, res).catch((error: unknown) => {
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
    close: () => closeServer(server),
  };
}

/**
 * Storage for one server: oidc-provider's own in-memory adapter is shared by
 * every server in the process, evicts past 1,000 entries and warns on start.
 */
function memoryAdapter(): AdapterFactory {
  const entries = new Map<string, AdapterPayload>();
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
      find: (id) => Promise.resolve(entries.get(key(id))),
      findByUid: (uid) => Promise.resolve(entries.get(key(byUid.get(uid) ?? ''))),
      findByUserCode: (userCode) => Promise.resolve(entries.get(key(byUserCode.get(userCode) ?? ''))),
      consume(id) {
        const entry = entries.get(key(id));
        if (entry !== undefined) entry.consumed = Math.floor(Date.now() / 1000);
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

/** Completes a login prompt with {@link TEST_ACCOUNT} and a consent prompt by granting what was asked. */
async function finishInteraction(provider: Provider, req: http.IncomingMessage, res: http.ServerResponse) {
  const interaction = await provider.interactionDetails(req, res);
  const { prompt, params } = interaction;
  if (prompt.name === 'login') {
    await provider.interactionFinished(req, res, { login: { accountId: TEST_ACCOUNT } });
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
  /** Must be registered for the client; nothing listens on it: the redirect to it is caught. */
  readonly redirectUri: string;
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
 * Performs an authorization-code + PKCE S256 login without a browser:
 * follows the authorization server's redirects (keeping its cookies) through
 * the headless interactions to the redirect URI, checks `state` and `iss`
 * there, and exchanges the code (with `resource`) at the token endpoint.
 */
export async function loginHeadlessly(options: HeadlessLoginOptions): Promise<LoginTokens> {
  const as = options.authorizationServer;
  const client: oauth.Client = {
    client_id: options.clientId,
    token_endpoint_auth_method: options.clientSecret === undefined ? 'none' : 'client_secret_basic',
  };
  const clientAuth = options.clientSecret === undefined ? oauth.None() : oauth.ClientSecretBasic(options.clientSecret);
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const authorize = new URL(String(as.authorization_endpoint));
  authorize.search = new URLSearchParams({
    response_type: 'code',
    client_id: options.clientId,
    redirect_uri: options.redirectUri,
    scope: options.scope ?? MCP_SCOPE,
    resource: options.resource,
    state,
    code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
  }).toString();

  const callback = await followRedirects(options.http, authorize, (url) => url.href.startsWith(options.redirectUri));
  const params = oauth.validateAuthResponse(as, client, callback, state);
  const tokenEndpoint = assertSecureEndpoint(String(as.token_endpoint), 'token_endpoint');
  const response = await oauth.authorizationCodeGrantRequest(
    as,
    client,
    clientAuth,
    params,
    options.redirectUri,
    verifier,
    { ...oauthRequestOptions(options.http, tokenEndpoint), additionalParameters: { resource: options.resource } },
  );
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, response);
  if (tokens.refresh_token === undefined) throw new Error('the login issued no refresh token');
  return {
    accessToken: tokens.access_token,
    refreshToken: tokens.refresh_token,
    ...(tokens.expires_in !== undefined && { expiresIn: tokens.expires_in }),
    ...(tokens.scope !== undefined && { scope: tokens.scope }),
  };
}

/**
 * A stand-in for the user's browser, for `loginWithBrowser`'s `launch`: it
 * follows the authorization URL through the headless interactions (with
 * cookies) and then requests the loopback callback, delivering the code to
 * the login's listener.
 */
export function headlessBrowser(httpClient: HttpClient): (url: string) => Promise<boolean> {
  return async (url) => {
    const callback = await followRedirects(
      httpClient,
      new URL(url),
      (next) => next.pathname === '/callback' && next.searchParams.has('state'),
    );
    await (await httpClient.fetch(callback.href, { method: 'GET' })).text();
    return true;
  };
}

/** GETs `start` and follows redirects, with a cookie jar, until one points at a URL `isTarget` accepts. */
async function followRedirects(httpClient: HttpClient, start: URL, isTarget: (url: URL) => boolean): Promise<URL> {
  const jar = new Map<string, string>();
  let url = start;
  for (let hop = 0; hop < 20; hop++) {
    const cookie = [...jar].map(([name, value]) => `${name}=${value}`).join('; ');
    const response = await httpClient.fetch(url.href, {
      method: 'GET',
      headers: cookie === '' ? {} : { cookie },
    });
    for (const line of response.headers.getSetCookie()) {
      const [pair = '', ...attributes] = line.split(';');
      const at = pair.indexOf('=');
      const name = pair.slice(0, at).trim();
      const value = pair.slice(at + 1).trim();
      const expired = attributes.some((a) => /^\s*max-age\s*=\s*0\s*$/i.test(a)) || value === '';
      if (expired) jar.delete(name);
      else jar.set(name, value);
    }
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
