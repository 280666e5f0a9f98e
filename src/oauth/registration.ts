import * as oauth from 'oauth4webapi';
import type { Clock } from '../clock/clock.js';
import { quoteUntrusted, TetherError } from '../errors.js';
import { assertSecureEndpoint, type HttpClient, isLoopback, oauthRequestOptions } from './http.js';

/** The token-endpoint client authentication methods tether implements. @see RFC 7591 §2 */
export type TokenEndpointAuthMethod = 'none' | 'client_secret_basic' | 'client_secret_post';

/** What every client registration has, static or dynamic. */
interface ClientBase {
  /** The authorization server the client belongs to. */
  readonly issuer: string;
  readonly clientId: string;
  /** A secret: the store keeps it encrypted; it never enters a message or a log. */
  readonly clientSecret?: string;
  readonly tokenEndpointAuthMethod: TokenEndpointAuthMethod;
}

/** A client the user registered by hand (`--client-id`, secret from a file or `TETHER_CLIENT_SECRET`). */
export interface StaticClient extends ClientBase {
  readonly kind: 'static';
}

/**
 * A client tether registered itself (RFC 7591), cached per authorization
 * server and reused. Plain JSON.
 */
export interface DynamicClient extends ClientBase {
  readonly kind: 'dynamic';
  readonly redirectUris: readonly string[];
  readonly grantTypes: readonly string[];
  /** Wall-clock ms of the registration. */
  readonly registeredAt: number;
  /** Wall-clock ms after which the secret is void; absent when it never expires. */
  readonly clientSecretExpiresAt?: number;
}

/** A client to use at the token and authorization endpoints. */
export type ClientRegistration = StaticClient | DynamicClient;

/**
 * Where dynamic registrations are cached, by issuer (the store component
 * implements it; secrets in it are its to protect).
 */
export interface RegistrationStore {
  get(issuer: string): Promise<DynamicClient | undefined>;
  put(issuer: string, registration: DynamicClient): Promise<void>;
}

/** The grants a tether client needs: a login, then refreshes. @see RFC 7591 §2 */
export const DEFAULT_GRANT_TYPES: readonly string[] = ['authorization_code', 'refresh_token'];

/** The `client_name` tether registers with; the consent screen shows it. */
const CLIENT_NAME = 'mcp-tether';

const VALUE_MAX = 200;

/** Client metadata as sent in a registration request. @see RFC 7591 §2 */
export type ClientMetadata = Partial<oauth.OmitSymbolProperties<oauth.Client>>;

/**
 * A client supplied by the user. Without a secret it is public (`none`);
 * with one it authenticates with `client_secret_basic`, or
 * `client_secret_post` when the server lists only that.
 *
 * @throws TetherError `ERR_INVALID_CLIENT` for an empty client id
 * @see RFC 6749 §2.3.1 (client password), RFC 8414 §2 (`token_endpoint_auth_methods_supported`)
 */
export function staticClient(
  authorizationServer: oauth.AuthorizationServer,
  options: { readonly clientId: string; readonly clientSecret?: string },
): StaticClient {
  if (options.clientId.trim() === '') throw new TetherError('ERR_INVALID_CLIENT', 'the client id is empty');
  const { clientSecret } = options;
  if (clientSecret === undefined || clientSecret === '') {
    return {
      kind: 'static',
      issuer: authorizationServer.issuer,
      clientId: options.clientId,
      tokenEndpointAuthMethod: 'none',
    };
  }
  const supported = authorizationServer.token_endpoint_auth_methods_supported;
  const postOnly =
    supported !== undefined && !supported.includes('client_secret_basic') && supported.includes('client_secret_post');
  return {
    kind: 'static',
    issuer: authorizationServer.issuer,
    clientId: options.clientId,
    clientSecret,
    tokenEndpointAuthMethod: postOnly ? 'client_secret_post' : 'client_secret_basic',
  };
}

/** Options of {@link registerClient} and {@link ensureClient}. */
export interface RegisterOptions {
  readonly http: HttpClient;
  readonly clock: Clock;
  /** Loopback `http://` redirect URIs (RFC 8252 §7.3); login decides the port. */
  readonly redirectUris: readonly string[];
  /** Defaults to {@link DEFAULT_GRANT_TYPES}; device login adds its grant. */
  readonly grantTypes?: readonly string[];
  readonly signal?: AbortSignal;
}

/**
 * Reuses the cached registration for this authorization server when it
 * covers the redirect URIs and grants asked for and its secret has not
 * expired; otherwise — or always, with `reregister` — registers anew and
 * caches the result. A failed registration stores nothing and leaves the
 * cached one in place.
 *
 * @see RFC 7591 §3; DESIGN §4 (cached and reused; re-registration on demand)
 */
export async function ensureClient(
  authorizationServer: oauth.AuthorizationServer,
  options: RegisterOptions & { readonly store: RegistrationStore; readonly reregister?: boolean },
): Promise<DynamicClient> {
  const { issuer } = authorizationServer;
  if (options.reregister !== true) {
    const cached = await options.store.get(issuer);
    if (cached !== undefined && covers(cached, options, options.clock.now())) return cached;
  }
  const registration = await registerClient(authorizationServer, options);
  await options.store.put(issuer, registration);
  return registration;
}

/**
 * Registers a public native client: `token_endpoint_auth_method` `none`,
 * grants `authorization_code` and `refresh_token`, `application_type`
 * `native`, loopback redirect URIs.
 *
 * @throws TetherError `ERR_REGISTRATION_UNSUPPORTED` (no registration endpoint),
 *   `ERR_INVALID_REDIRECT_URI`, `ERR_INSECURE_ENDPOINT`, those of
 *   {@link processRegistrationResponse}, and the transport's
 * @see RFC 7591 §2, §3.1; RFC 8252 §7.3, §8.4
 */
export async function registerClient(
  authorizationServer: oauth.AuthorizationServer,
  options: RegisterOptions,
): Promise<DynamicClient> {
  const endpoint = authorizationServer.registration_endpoint;
  if (endpoint === undefined) {
    throw new TetherError(
      'ERR_REGISTRATION_UNSUPPORTED',
      `the authorization server ${quoteUntrusted(authorizationServer.issuer, VALUE_MAX)} offers no dynamic client registration; register a client there and pass its id (--client-id)`,
    );
  }
  const metadata = clientMetadata(options.redirectUris, options.grantTypes ?? DEFAULT_GRANT_TYPES);
  const response = await registrationRequest(options.http, authorizationServer, metadata, options.signal);
  return processRegistrationResponse(authorizationServer.issuer, response, metadata, options.clock.now());
}

/**
 * The client metadata tether registers with.
 *
 * @throws TetherError `ERR_INVALID_REDIRECT_URI` for a redirect URI that is not loopback `http://`
 * @see RFC 7591 §2; RFC 8252 §7.3 (loopback redirect), §8.4 (native clients are public)
 */
export function clientMetadata(redirectUris: readonly string[], grantTypes: readonly string[]): ClientMetadata {
  if (redirectUris.length === 0) throw new TetherError('ERR_INVALID_REDIRECT_URI', 'no redirect URI given');
  for (const uri of redirectUris) {
    if (!URL.canParse(uri) || new URL(uri).protocol !== 'http:' || !isLoopback(new URL(uri))) {
      throw new TetherError(
        'ERR_INVALID_REDIRECT_URI',
        `not a loopback http:// redirect URI: ${quoteUntrusted(uri, VALUE_MAX)}`,
      );
    }
  }
  return {
    client_name: CLIENT_NAME,
    application_type: 'native',
    token_endpoint_auth_method: 'none',
    grant_types: [...grantTypes],
    response_types: grantTypes.includes('authorization_code') ? ['code'] : [],
    redirect_uris: [...redirectUris],
  };
}

/**
 * Sends a registration request; returns the raw response.
 *
 * @see RFC 7591 §3.1
 */
export async function registrationRequest(
  http: HttpClient,
  authorizationServer: oauth.AuthorizationServer,
  metadata: ClientMetadata,
  signal?: AbortSignal,
): Promise<Response> {
  const endpoint = assertSecureEndpoint(String(authorizationServer.registration_endpoint), 'registration_endpoint');
  return oauth.dynamicClientRegistrationRequest(
    authorizationServer,
    metadata,
    oauthRequestOptions(http, endpoint, signal),
  );
}

/**
 * Validates a registration response (with oauth4webapi) and makes the
 * registration record. A `200` is taken like the `201` RFC 7591 asks for:
 * servers send both.
 *
 * @param requested - the metadata that was sent, for members the server does not echo
 * @param now - wall-clock ms, recorded as `registeredAt`
 * @throws TetherError `ERR_REGISTRATION_REFUSED` (an error response, or a status other than 200/201),
 *   `ERR_REGISTRATION_INVALID` (no `client_id`, not JSON, an authentication method tether cannot do)
 * @see RFC 7591 §3.2.1 (response), §3.2.2 (error response)
 */
export async function processRegistrationResponse(
  issuer: string,
  response: Response,
  requested: ClientMetadata,
  now: number,
): Promise<DynamicClient> {
  const conforming =
    response.status === 200 ? new Response(response.body, { status: 201, headers: response.headers }) : response;
  let json: oauth.OmitSymbolProperties<oauth.Client>;
  try {
    json = await oauth.processDynamicClientRegistrationResponse(conforming);
  } catch (error) {
    throw registrationError(error, response.status);
  }
  const secret = typeof json.client_secret === 'string' && json.client_secret !== '' ? json.client_secret : undefined;
  // RFC 7591 §2: absent means `client_secret_basic`; a server that omits it
  // and issues no secret has registered a public client.
  const echoed: unknown = json.token_endpoint_auth_method;
  const method = typeof echoed === 'string' ? echoed : secret === undefined ? 'none' : 'client_secret_basic';
  if (!isAuthMethod(method) || (method !== 'none' && secret === undefined)) {
    throw new TetherError(
      'ERR_REGISTRATION_INVALID',
      `the server registered the client for token_endpoint_auth_method ${quoteUntrusted(method, 64)}, which tether cannot use`,
    );
  }
  // A value too large for a date (it would overflow to Infinity in ms) means no expiry, as 0 does.
  const expiresAt =
    typeof json.client_secret_expires_at === 'number' && Number.isFinite(json.client_secret_expires_at * 1000)
      ? json.client_secret_expires_at
      : 0;
  return {
    kind: 'dynamic',
    issuer,
    clientId: json.client_id,
    ...(secret !== undefined && { clientSecret: secret }),
    ...(secret !== undefined && expiresAt > 0 && { clientSecretExpiresAt: expiresAt * 1000 }),
    tokenEndpointAuthMethod: method,
    redirectUris: stringArray(json.redirect_uris) ?? stringArray(requested.redirect_uris) ?? [],
    grantTypes: stringArray(json.grant_types) ?? stringArray(requested.grant_types) ?? [],
    registeredAt: now,
  };
}

/** The oauth4webapi client for a registration. */
export function oauthClient(registration: ClientRegistration): oauth.Client {
  return { client_id: registration.clientId, token_endpoint_auth_method: registration.tokenEndpointAuthMethod };
}

/**
 * The oauth4webapi client authentication for a registration.
 *
 * @see RFC 6749 §2.3.1
 */
export function clientAuthentication(
  registration: Pick<ClientRegistration, 'clientSecret' | 'tokenEndpointAuthMethod'>,
): oauth.ClientAuth {
  const secret = registration.clientSecret ?? '';
  switch (registration.tokenEndpointAuthMethod) {
    case 'none':
      return oauth.None();
    case 'client_secret_basic':
      return oauth.ClientSecretBasic(secret);
    case 'client_secret_post':
      return oauth.ClientSecretPost(secret);
  }
}

function covers(cached: DynamicClient, wanted: RegisterOptions, now: number): boolean {
  if (cached.clientSecretExpiresAt !== undefined && cached.clientSecretExpiresAt <= now) return false;
  const grants = wanted.grantTypes ?? DEFAULT_GRANT_TYPES;
  return (
    wanted.redirectUris.every((uri) => cached.redirectUris.includes(uri)) &&
    grants.every((grant) => cached.grantTypes.includes(grant))
  );
}

function registrationError(error: unknown, status: number): TetherError {
  if (error instanceof oauth.ResponseBodyError) {
    const description =
      error.error_description === undefined ? '' : `: ${quoteUntrusted(error.error_description, VALUE_MAX)}`;
    return new TetherError(
      'ERR_REGISTRATION_REFUSED',
      `the server refused the registration (HTTP ${status}, ${quoteUntrusted(error.error, 64)}${description})`,
    );
  }
  if (error instanceof oauth.WWWAuthenticateChallengeError) {
    return new TetherError(
      'ERR_REGISTRATION_REFUSED',
      `the server wants authorization to register a client (HTTP ${status}); register a client there and pass its id (--client-id)`,
    );
  }
  if (status !== 200 && status !== 201) {
    return new TetherError('ERR_REGISTRATION_REFUSED', `the registration endpoint answered HTTP ${status}`);
  }
  // Not JSON, not an object, no `client_id`, a secret without its expiry. The
  // cause is left out: oauth4webapi's carries the body, which may hold a secret.
  return new TetherError('ERR_REGISTRATION_INVALID', 'the registration response is not a valid client registration');
}

function isAuthMethod(value: string): value is TokenEndpointAuthMethod {
  return value === 'none' || value === 'client_secret_basic' || value === 'client_secret_post';
}

function stringArray(value: unknown): string[] | undefined {
  return Array.isArray(value) && value.every((item) => typeof item === 'string') ? value : undefined;
}
