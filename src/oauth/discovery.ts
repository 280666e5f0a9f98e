import * as oauth from 'oauth4webapi';
import { quoteUntrusted, TetherError } from '../errors.js';
import { assertSecureEndpoint, type HttpClient } from './http.js';
import { bearerChallenge, parseWwwAuthenticate } from './www-authenticate.js';

/**
 * RFC 9728 protected-resource metadata, validated: `resource` matches the MCP
 * URL and `authorization_servers` lists at least one server. Other members are
 * kept as the server sent them.
 *
 * @see RFC 9728 §2
 */
export interface ProtectedResourceMetadata {
  readonly resource: string;
  readonly authorization_servers: readonly string[];
  readonly scopes_supported?: readonly string[];
  readonly [member: string]: unknown;
}

/** One request made during discovery and what came of it, for the error report. */
export interface DiscoveryAttempt {
  readonly step: 'probe' | 'protected_resource' | 'authorization_server';
  readonly method: 'GET' | 'POST';
  readonly url: string;
  /** `ok`, or the code of what went wrong (`ERR_METADATA_NOT_JSON`, `ERR_TIMEOUT`, …). */
  readonly outcome: string;
  readonly status?: number;
  readonly contentType?: string;
  /** A short note of ours (peer values in it are JSON-encoded). */
  readonly note?: string;
}

/**
 * Everything discovery found: what login, registration and refresh need, and
 * what the store keeps as "discovered metadata" (DESIGN §5). Plain JSON.
 */
export interface Discovery {
  /** The MCP server's URL, without fragment. */
  readonly mcpUrl: string;
  /** The RFC 8707 resource indicator to send: the metadata's `resource`, else the MCP URL. */
  readonly resource: string;
  /** Absent when the server publishes none and its origin served as the authorization server. */
  readonly protectedResource?: ProtectedResourceMetadata;
  /** RFC 8414 / OpenID metadata whose `issuer` was checked against the URL it came from. */
  readonly authorizationServer: oauth.AuthorizationServer;
  /** The `scope` of the server's `401` challenge: what to ask for at login. */
  readonly challengeScope?: string;
  readonly attempts: readonly DiscoveryAttempt[];
}

/** Options of {@link discover}. */
export interface DiscoverOptions {
  readonly http: HttpClient;
  readonly signal?: AbortSignal;
  /** Use this authorization server instead of the one the MCP server names (`--issuer`). */
  readonly issuer?: string;
  /** Send this resource indicator instead of the discovered one (`--resource`). */
  readonly resource?: string;
}

/**
 * Discovery failed: nothing usable was found. `attempts` lists every request
 * in order and what came back; the message says the same for people.
 */
export class DiscoveryError extends TetherError {
  readonly attempts: readonly DiscoveryAttempt[];

  /** @param target - the MCP URL or issuer discovery started from */
  constructor(target: string, attempts: readonly DiscoveryAttempt[]) {
    super(
      'ERR_DISCOVERY',
      `could not discover the authorization server for ${quoteUntrusted(target, VALUE_MAX)}; ${describeAttempts(attempts)}`,
    );
    this.attempts = attempts;
  }
}

// Codes after which discovery stops at once instead of trying the next URL:
// a document that names another resource or issuer is a misconfiguration or a
// mix-up attack, and an endpoint on plain http would expose credentials.
const HARD_FAILURES: ReadonlySet<string> = new Set([
  'ERR_RESOURCE_MISMATCH',
  'ERR_ISSUER_MISMATCH',
  'ERR_INSECURE_ENDPOINT',
]);

// Endpoints that receive credentials or start a login: https, or loopback http.
const CREDENTIAL_ENDPOINTS = [
  'authorization_endpoint',
  'token_endpoint',
  'registration_endpoint',
  'device_authorization_endpoint',
  'revocation_endpoint',
  'pushed_authorization_request_endpoint',
] as const;

const VALUE_MAX = 200;
const CONTENT_TYPE_MAX = 64;

// The first request an MCP client sends; a protected server answers it 401.
const PROBE_BODY = JSON.stringify({
  jsonrpc: '2.0',
  id: 0,
  method: 'initialize',
  params: {
    protocolVersion: '2025-06-18',
    capabilities: {},
    clientInfo: { name: 'mcp-tether', version: '0' },
  },
});

/**
 * Finds the authorization server of an MCP server the way MCP clients do:
 * probe the MCP URL for its `401` + `WWW-Authenticate` (`resource_metadata`,
 * `scope`); fetch RFC 9728 protected-resource metadata from that URL, then the
 * path-aware well-known URL, then the root one; check that its `resource`
 * matches the MCP URL; then fetch each listed authorization server's metadata
 * (RFC 8414, then OpenID Connect discovery) and check its `issuer` (mix-up
 * protection). A server that publishes no resource metadata gets its origin
 * tried as the authorization server (MCP 2025-03-26).
 *
 * A document that is HTML, truncated, too large, slow or missing is recorded
 * and the next URL tried. Throws `ERR_RESOURCE_MISMATCH`,
 * `ERR_ISSUER_MISMATCH` or `ERR_INSECURE_ENDPOINT` at once; a
 * {@link DiscoveryError} (`ERR_DISCOVERY`) when nothing worked;
 * `ERR_INVALID_URL` for an MCP URL that is not http(s).
 *
 * @see RFC 9728 §3 (path-aware well-known URL), §3.3 (`resource` validation), §5.1 (`resource_metadata`)
 * @see RFC 8414 §3 (well-known URL with path insertion), §3.3 (`issuer` validation)
 * @see OpenID Connect Discovery 1.0 §4
 * @see MCP specification 2025-06-18, Authorization, "Authorization Server Discovery"
 */
export async function discover(mcpUrl: string, options: DiscoverOptions): Promise<Discovery> {
  const mcp = parseMcpUrl(mcpUrl);
  const attempts: DiscoveryAttempt[] = [];
  const resourceOverride = options.resource === undefined ? {} : { resource: options.resource };

  if (options.issuer !== undefined) {
    const authorizationServer = await findAuthorizationServer([options.issuer], mcp.href, attempts, options);
    return { mcpUrl: mcp.href, resource: mcp.href, authorizationServer, attempts, ...resourceOverride };
  }

  const challenge = await probe(mcp, attempts, options);
  let protectedResource: ProtectedResourceMetadata | undefined;
  for (const url of protectedResourceMetadataUrls(mcp, challenge?.resource_metadata)) {
    protectedResource = await attempt('protected_resource', url, attempts, options, (response) =>
      processProtectedResourceMetadataResponse(mcp, response),
    );
    if (protectedResource !== undefined) break;
  }
  const issuers = protectedResource?.authorization_servers ?? [mcp.origin];
  const authorizationServer = await findAuthorizationServer(issuers, mcp.href, attempts, options);
  return {
    mcpUrl: mcp.href,
    resource: protectedResource?.resource ?? mcp.href,
    ...(protectedResource !== undefined && { protectedResource }),
    authorizationServer,
    ...(challenge?.scope !== undefined && { challengeScope: challenge.scope }),
    attempts,
    ...resourceOverride,
  };
}

/**
 * The scopes to ask for at login, as the MCP specification selects them: the
 * `scope` of the server's `401` challenge, else every scope its
 * protected-resource metadata lists, else none (the server's default).
 *
 * @see MCP specification 2025-11-25, Authorization, "Scope Selection Strategy"; RFC 6750 §3 (`scope`)
 */
export function discoveredScopes(discovery: Discovery): string[] {
  const fromChallenge = discovery.challengeScope?.split(' ').filter((scope) => scope !== '');
  if (fromChallenge !== undefined && fromChallenge.length > 0) return fromChallenge;
  return [...(discovery.protectedResource?.scopes_supported ?? [])];
}

/**
 * Fetches and validates one authorization server's metadata (RFC 8414, then
 * OpenID Connect discovery), for a known issuer (`--issuer`, or a cached one).
 *
 * @see RFC 8414 §3, §3.3; OpenID Connect Discovery 1.0 §4
 */
export async function discoverAuthorizationServer(
  issuer: string,
  options: Pick<DiscoverOptions, 'http' | 'signal'>,
): Promise<oauth.AuthorizationServer> {
  return findAuthorizationServer([issuer], issuer, [], options);
}

/**
 * The URLs to try for RFC 9728 metadata, in order, without repeats: the one
 * from the `401` challenge, the path-aware well-known URL, the root one.
 *
 * @see RFC 9728 §3.1 (well-known URI inserted between host and path)
 */
export function protectedResourceMetadataUrls(mcpUrl: URL, fromChallenge?: string): URL[] {
  const urls: URL[] = [];
  if (fromChallenge !== undefined && URL.canParse(fromChallenge)) urls.push(new URL(fromChallenge));
  urls.push(wellKnown(mcpUrl, 'oauth-protected-resource', 'insert'), wellKnown(mcpUrl, 'oauth-protected-resource'));
  return dedupe(urls);
}

/**
 * The URLs to try for an authorization server's metadata, in the order of the
 * MCP specification: for an issuer with a path, RFC 8414 with path insertion,
 * OpenID with path insertion, OpenID with the path appended; for one
 * without, RFC 8414 then OpenID.
 *
 * @see RFC 8414 §3.1, §5 (compatibility notes); OpenID Connect Discovery 1.0 §4.1
 */
export function authorizationServerMetadataUrls(issuer: URL): URL[] {
  return dedupe([
    wellKnown(issuer, 'oauth-authorization-server', 'insert'),
    wellKnown(issuer, 'openid-configuration', 'insert'),
    wellKnown(issuer, 'openid-configuration', 'append'),
  ]);
}

/**
 * Validates an RFC 9728 metadata response for `mcpUrl`. The `resource` must
 * be the MCP URL or, as the MCP SDK accepts, a same-origin prefix of its path
 * (a server publishing one document for several endpoints).
 *
 * @throws TetherError `ERR_METADATA_STATUS`, `ERR_METADATA_NOT_JSON`, `ERR_METADATA_INVALID`, `ERR_RESOURCE_MISMATCH`
 * @see RFC 9728 §3.2 (response), §3.3 (validation)
 */
export async function processProtectedResourceMetadataResponse(
  mcpUrl: URL,
  response: Response,
): Promise<ProtectedResourceMetadata> {
  const json = await jsonObjectBody(response);
  const { resource, authorization_servers: servers, scopes_supported: scopes } = json;
  if (typeof resource !== 'string' || !URL.canParse(resource)) {
    throw new TetherError('ERR_METADATA_INVALID', 'protected-resource metadata without a valid "resource"');
  }
  if (!resourceMatches(mcpUrl, new URL(resource))) {
    throw new TetherError(
      'ERR_RESOURCE_MISMATCH',
      `the protected-resource metadata is for ${quoteUntrusted(resource, VALUE_MAX)}, not for ${quoteUntrusted(mcpUrl.href, VALUE_MAX)}`,
    );
  }
  if (!isStringArray(servers) || servers.length === 0) {
    throw new TetherError('ERR_METADATA_INVALID', 'protected-resource metadata without "authorization_servers"');
  }
  if (scopes !== undefined && !isStringArray(scopes)) {
    throw new TetherError('ERR_METADATA_INVALID', 'protected-resource metadata with an invalid "scopes_supported"');
  }
  return { ...json, resource, authorization_servers: servers };
}

/**
 * Validates authorization-server metadata with oauth4webapi (status, JSON,
 * `issuer` equal to `issuer`), then requires the endpoints tether uses and
 * refuses any credential endpoint on plain http away from loopback.
 *
 * @throws TetherError `ERR_METADATA_STATUS`, `ERR_METADATA_NOT_JSON`, `ERR_METADATA_INVALID`,
 *   `ERR_ISSUER_MISMATCH`, `ERR_INSECURE_ENDPOINT`
 * @see RFC 8414 §3.2, §3.3 (the `issuer` must be identical); RFC 9207 (mix-up)
 */
export async function processAuthorizationServerMetadataResponse(
  issuer: URL,
  response: Response,
): Promise<oauth.AuthorizationServer> {
  let metadata: oauth.AuthorizationServer;
  try {
    metadata = await oauth.processDiscoveryResponse(issuer, response);
  } catch (error) {
    throw metadataError(error, issuer);
  }
  for (const name of ['authorization_endpoint', 'token_endpoint'] as const) {
    if (typeof metadata[name] !== 'string') {
      throw new TetherError('ERR_METADATA_INVALID', `authorization-server metadata without "${name}"`);
    }
  }
  for (const name of CREDENTIAL_ENDPOINTS) {
    const value: unknown = metadata[name];
    if (value === undefined) continue;
    if (typeof value !== 'string') throw new TetherError('ERR_METADATA_INVALID', `"${name}" is not a string`);
    assertSecureEndpoint(value, name);
  }
  return metadata;
}

/** Whether metadata for `resource` may be used for `mcpUrl` (see {@link processProtectedResourceMetadataResponse}). */
function resourceMatches(mcpUrl: URL, resource: URL): boolean {
  if (resource.href === mcpUrl.href) return true;
  if (resource.origin !== mcpUrl.origin || resource.search !== '' || resource.hash !== '') return false;
  const slashed = (path: string): string => (path.endsWith('/') ? path : `${path}/`);
  return slashed(mcpUrl.pathname).startsWith(slashed(resource.pathname));
}

async function findAuthorizationServer(
  issuers: readonly string[],
  target: string,
  attempts: DiscoveryAttempt[],
  options: Pick<DiscoverOptions, 'http' | 'signal'>,
): Promise<oauth.AuthorizationServer> {
  for (const issuer of issuers) {
    const issuerUrl = assertSecureEndpoint(issuer, 'the authorization server');
    for (const url of authorizationServerMetadataUrls(issuerUrl)) {
      const metadata = await attempt('authorization_server', url, attempts, options, (response) =>
        processAuthorizationServerMetadataResponse(issuerUrl, response),
      );
      if (metadata !== undefined) return metadata;
    }
  }
  throw new DiscoveryError(target, attempts);
}

/** One GET of a metadata document; its outcome is recorded; hard failures are thrown. */
async function attempt<T>(
  step: DiscoveryAttempt['step'],
  url: URL,
  attempts: DiscoveryAttempt[],
  options: Pick<DiscoverOptions, 'http' | 'signal'>,
  process: (response: Response) => Promise<T>,
): Promise<T | undefined> {
  let response: Response;
  try {
    response = await options.http.fetch(url.href, {
      method: 'GET',
      headers: { accept: 'application/json' },
      // Metadata may move; what it says is validated, wherever it came from.
      redirect: 'follow',
      signal: options.signal,
    });
  } catch (error) {
    attempts.push({ step, method: 'GET', url: url.href, outcome: failureCode(error, options.signal) });
    return undefined;
  }
  const seen = { step, method: 'GET' as const, url: url.href, ...responseFacts(response) };
  try {
    const result = await process(response);
    attempts.push({ ...seen, outcome: 'ok' });
    return result;
  } catch (error) {
    const outcome = failureCode(error, options.signal);
    attempts.push({ ...seen, outcome });
    if (HARD_FAILURES.has(outcome)) throw error;
    return undefined;
  }
}

/** POSTs an MCP `initialize` without a token and reads the challenge of the answer. */
async function probe(
  mcp: URL,
  attempts: DiscoveryAttempt[],
  options: Pick<DiscoverOptions, 'http' | 'signal'>,
): Promise<Readonly<Record<string, string>> | undefined> {
  const base = { step: 'probe' as const, method: 'POST' as const, url: mcp.href };
  let response: Response;
  try {
    response = await options.http.fetch(mcp.href, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: PROBE_BODY,
      signal: options.signal,
      discardBody: true,
    });
  } catch (error) {
    attempts.push({ ...base, outcome: failureCode(error, options.signal) });
    return undefined;
  }
  const header = response.headers.get('www-authenticate');
  const challenge = header === null ? undefined : bearerChallenge(parseWwwAuthenticate(header));
  let note: string;
  if (challenge === undefined) note = 'no Bearer challenge';
  else if (challenge.resource_metadata === undefined) note = 'Bearer challenge without resource_metadata';
  else note = `resource_metadata ${quoteUntrusted(challenge.resource_metadata, VALUE_MAX)}`;
  attempts.push({ ...base, ...responseFacts(response), outcome: 'ok', note });
  return challenge;
}

function parseMcpUrl(value: string): URL {
  if (!URL.canParse(value)) throw new TetherError('ERR_INVALID_URL', `not a URL: ${quoteUntrusted(value, VALUE_MAX)}`);
  const url = new URL(value);
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new TetherError('ERR_INVALID_URL', `not an http(s) URL: ${quoteUntrusted(value, VALUE_MAX)}`);
  }
  url.hash = '';
  return url;
}

/**
 * `origin/.well-known/<name>` plus the URL's path: inserted after it
 * (`insert`, RFC 8414 / RFC 9728), appended before it (`append`, OpenID), or
 * left out (the default). A trailing slash of the path is dropped first.
 */
function wellKnown(url: URL, name: string, path?: 'insert' | 'append'): URL {
  const pathname = url.pathname.replace(/\/$/, '');
  const result = new URL(url.origin);
  if (path === 'append') result.pathname = `${pathname}/.well-known/${name}`;
  else if (path === 'insert') result.pathname = `/.well-known/${name}${pathname}`;
  else result.pathname = `/.well-known/${name}`;
  return result;
}

function dedupe(urls: readonly URL[]): URL[] {
  const seen = new Set<string>();
  return urls.filter((url) => !seen.has(url.href) && Boolean(seen.add(url.href)));
}

async function jsonObjectBody(response: Response): Promise<Record<string, unknown>> {
  if (response.status !== 200) {
    throw new TetherError('ERR_METADATA_STATUS', `metadata answered HTTP ${response.status}, not 200`);
  }
  let value: unknown;
  try {
    value = JSON.parse(await response.text());
  } catch {
    throw new TetherError('ERR_METADATA_NOT_JSON', 'metadata is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TetherError('ERR_METADATA_INVALID', 'metadata is not a JSON object');
  }
  return value as Record<string, unknown>;
}

/** Maps oauth4webapi's processing errors to our codes. */
function metadataError(error: unknown, issuer: URL): TetherError {
  if (!(error instanceof oauth.OperationProcessingError)) {
    // oauth4webapi throws a TypeError for an `issuer` that is no URL.
    return new TetherError('ERR_METADATA_INVALID', 'authorization-server metadata with an invalid "issuer"', {
      cause: error,
    });
  }
  switch (error.code) {
    case oauth.RESPONSE_IS_NOT_CONFORM:
      return new TetherError('ERR_METADATA_STATUS', 'metadata answered a status other than 200', { cause: error });
    case oauth.RESPONSE_IS_NOT_JSON:
    case oauth.PARSE_ERROR:
      return new TetherError('ERR_METADATA_NOT_JSON', 'metadata is not JSON', { cause: error });
    case oauth.JSON_ATTRIBUTE_COMPARISON: {
      const claimed = (error.cause as { body?: { issuer?: unknown } } | undefined)?.body?.issuer;
      return new TetherError(
        'ERR_ISSUER_MISMATCH',
        `the metadata of ${quoteUntrusted(issuer.href, VALUE_MAX)} names another issuer: ${quoteUntrusted(String(claimed), VALUE_MAX)}`,
      );
    }
    default:
      return new TetherError(
        'ERR_METADATA_INVALID',
        `invalid authorization-server metadata (${error.code ?? 'no code'})`,
        {
          cause: error,
        },
      );
  }
}

function failureCode(error: unknown, signal: AbortSignal | undefined): string {
  if (signal?.aborted === true) throw error; // the caller gave up: no report wanted
  return error instanceof TetherError ? error.code : 'ERR_UNEXPECTED';
}

function responseFacts(response: Response): { status: number; contentType?: string } {
  const contentType = response.headers.get('content-type');
  return { status: response.status, ...(contentType !== null && { contentType }) };
}

function describeAttempts(attempts: readonly DiscoveryAttempt[]): string {
  if (attempts.length === 0) return 'nothing was tried';
  const lines = attempts.map((a, i) => {
    const facts = [
      a.status === undefined ? undefined : `HTTP ${a.status}`,
      a.contentType === undefined ? undefined : quoteUntrusted(a.contentType, CONTENT_TYPE_MAX),
      a.outcome,
      a.note,
    ].filter((fact) => fact !== undefined);
    return `${i + 1}. ${a.step} ${a.method} ${quoteUntrusted(a.url, VALUE_MAX)} → ${facts.join(', ')}`;
  });
  return `tried, in order: ${lines.join('; ')}`;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}
