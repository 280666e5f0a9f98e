import * as oauth from 'oauth4webapi';
import { TetherError } from '../errors.js';
import type { RefreshFailure } from '../keeper/failure.js';
import type { RefreshFunction, RefreshResult } from '../keeper/types.js';
import {
  assertSecureEndpoint,
  headerRecord,
  type HttpClient,
  innermostMessage,
  networkErrorCode,
  oauthRequestOptions,
  ResponseTooLargeError,
} from './http.js';
import { clientAuthentication, type ClientRegistration, oauthClient } from './registration.js';

/** How much of a failed response's body a {@link RefreshFailure} keeps. */
export const FAILURE_BODY_MAX = 2048;

/** Options of {@link createRefreshFunction}. */
export interface RefreshOptions {
  /** The credential's own transport; the keeper resets it on network change. */
  readonly http: HttpClient;
  readonly authorizationServer: oauth.AuthorizationServer;
  readonly client: ClientRegistration;
  /** The RFC 8707 resource indicator (the discovered `resource`). */
  readonly resource?: string;
}

/**
 * The keeper's refresh function for one credential: one refresh-token grant
 * per call, with the resource indicator, through the credential's transport.
 * It never throws and never opens a browser: a token set comes back as
 * `{ ok: true }`, anything else as a {@link RefreshFailure} with what the
 * classifier needs — the network error code (undici's, Node's, TLS's), or the
 * status, lower-cased headers (with `Retry-After`) and up to 2 KB of body. A
 * 2xx that is not a valid token response is an `http` failure with its status.
 * Aborting `signal` (the keeper stopping) ends the request at once.
 *
 * @throws TetherError at creation: `ERR_METADATA_INVALID` (no token endpoint),
 *   `ERR_INSECURE_ENDPOINT` (plain http away from loopback)
 * @see RFC 6749 §6 (refreshing an access token), §5.1, §5.2; RFC 8707 §2.2 (`resource` at the token endpoint)
 * @see DESIGN §3.3 (what the classifier needs), §4
 */
export function createRefreshFunction(options: RefreshOptions): RefreshFunction {
  const { http, authorizationServer, client } = options;
  if (typeof authorizationServer.token_endpoint !== 'string') {
    throw new TetherError('ERR_METADATA_INVALID', 'the authorization server has no token_endpoint');
  }
  const endpoint = assertSecureEndpoint(authorizationServer.token_endpoint, 'token_endpoint');
  const oauthClientValue = oauthClient(client);
  const auth = clientAuthentication(client);
  const additionalParameters = options.resource === undefined ? undefined : { resource: options.resource };

  return async (refreshToken: string, signal: AbortSignal): Promise<RefreshResult> => {
    let response: Response;
    try {
      response = await oauth.refreshTokenGrantRequest(authorizationServer, oauthClientValue, auth, refreshToken, {
        ...oauthRequestOptions(http, endpoint, signal),
        ...(additionalParameters !== undefined && { additionalParameters }),
      });
    } catch (error) {
      return { ok: false, failure: refreshFailureFromError(error, signal) };
    }
    return processRefreshResponse(authorizationServer, oauthClientValue, response);
  };
}

/**
 * Turns a token endpoint's response into the keeper's result: a token set
 * when oauth4webapi accepts it as a token response, else an `http` failure
 * that keeps status, headers and the first 2 KB of the body (tokens in it
 * redacted). Pure apart from reading the body.
 *
 * @see RFC 6749 §5.1 (successful response), §5.2 (error response)
 */
export async function processRefreshResponse(
  authorizationServer: oauth.AuthorizationServer,
  client: oauth.Client,
  response: Response,
): Promise<RefreshResult> {
  const body = await response.text().catch(() => '');
  const headers = headerRecord(response.headers);
  const failure = (): RefreshResult => ({
    ok: false,
    failure: { kind: 'http', status: response.status, headers, body: failureBody(body) },
  });
  if (response.status < 200 || response.status > 299) return failure();
  let tokens: oauth.TokenEndpointResponse;
  try {
    const copy = new Response(body, { status: response.status, headers: response.headers });
    tokens = await oauth.processRefreshTokenResponse(authorizationServer, client, copy);
  } catch {
    return failure();
  }
  return {
    ok: true,
    tokens: {
      accessToken: tokens.access_token,
      ...(tokens.refresh_token !== undefined && { refreshToken: tokens.refresh_token }),
      ...(tokens.expires_in !== undefined && { expiresIn: tokens.expires_in }),
      ...(tokens.scope !== undefined && { scope: tokens.scope }),
      tokenType: tokens.token_type,
    },
  };
}

/**
 * What a token request that produced no usable response becomes: a response
 * cut off at the size cap keeps its status and headers (`http`); everything
 * else is `network`, with the innermost error code (`ECONNRESET`,
 * `UND_ERR_SOCKET`, `CERT_HAS_EXPIRED`, …; `ERR_TIMEOUT` for the total
 * timeout, `ABORT_ERR` when `signal` aborted).
 */
export function refreshFailureFromError(error: unknown, signal?: AbortSignal): RefreshFailure {
  if (signal?.aborted === true) return { kind: 'network', code: 'ABORT_ERR', message: 'the refresh was aborted' };
  if (error instanceof ResponseTooLargeError) {
    return { kind: 'http', status: error.status, headers: error.headers, body: failureBody(error.bodyPrefix) };
  }
  if (error instanceof TetherError && error.code !== 'ERR_NETWORK') {
    return { kind: 'network', code: error.code, message: error.message };
  }
  const fallback = error instanceof TetherError ? error.code : error instanceof Error ? error.name : undefined;
  const code = networkErrorCode(error) ?? fallback;
  const message = innermostMessage(error);
  return { kind: 'network', ...(code !== undefined && { code }), ...(message !== undefined && { message }) };
}

// A member or parameter carrying a token, up to its end or the end of a cut-off body.
const JSON_TOKEN = /"(access_token|refresh_token|id_token)"(\s*:\s*)"(?:[^"\\]|\\.)*"?/g;
const FORM_TOKEN = /(^|&)(access_token|refresh_token|id_token)=[^&]*/g;

/**
 * The body as a failure keeps it: tokens redacted (a 2xx that failed
 * validation may still carry some), then cut to {@link FAILURE_BODY_MAX}.
 */
export function failureBody(body: string): string {
  return body
    .replace(JSON_TOKEN, '"$1"$2"[redacted]"')
    .replace(FORM_TOKEN, '$1$2=[redacted]')
    .slice(0, FAILURE_BODY_MAX);
}
