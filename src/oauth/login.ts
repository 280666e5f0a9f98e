import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oauth from 'oauth4webapi';
import type { Clock } from '../clock/clock.js';
import { quoteUntrusted, TetherError } from '../errors.js';
import type { TokenSet } from '../keeper/types.js';
import { openBrowser } from './browser.js';
import type { OAuthTransportOptions } from './http.js';
import { clientAuthentication, type ClientRegistration } from './registration.js';

/**
 * The client that logs in: a registration's id and, for a confidential
 * client, its secret and how to send it (default: none without a secret,
 * `client_secret_basic` with one).
 */
export type LoginClient = Pick<ClientRegistration, 'clientId' | 'clientSecret'> &
  Partial<Pick<ClientRegistration, 'tokenEndpointAuthMethod'>>;

/** What the user is shown while a login waits for them. */
export type LoginPrompt =
  | { readonly kind: 'browser'; readonly url: string; readonly opened: boolean; readonly timeoutMs: number }
  | {
      readonly kind: 'device';
      readonly userCode: string;
      readonly verificationUri: string;
      readonly verificationUriComplete?: string;
      readonly expiresInMs: number;
    };

/** Everything both login flows need. */
export interface LoginOptions {
  readonly as: oauth.AuthorizationServer;
  readonly client: LoginClient;
  /** The MCP server's URL, sent as the RFC 8707 `resource`. */
  readonly resource: string;
  /** Scopes to ask for; `offline_access` is added when the server lists it, so that a refresh token is issued. */
  readonly scopes?: readonly string[];
  readonly clock: Clock;
  /** Tells the user what to do (print the URL, the code, "waiting for you…"). */
  readonly prompt: (prompt: LoginPrompt) => void;
  /** tether's transport for the token endpoint (`oauthRequestOptions` in `http.ts`). */
  readonly requestOptions?: OAuthTransportOptions;
  readonly signal?: AbortSignal;
}

/** Options of the browser login. */
export interface BrowserLoginOptions extends LoginOptions {
  /** Port of the loopback redirect listener; 0 (default) picks a free one. */
  readonly callbackPort?: number;
  /** false (`--no-browser`): only print the URL. */
  readonly openBrowser?: boolean;
  /** How long to wait for the user (default 5 minutes). */
  readonly timeoutMs?: number;
  /** Opens the browser; replaceable in tests. Resolves whether a browser was started. */
  readonly launch?: (url: string) => Promise<boolean>;
}

/** Default wait for the user to finish in the browser or on the device page. */
export const LOGIN_TIMEOUT_MS = 5 * 60_000;

const CALLBACK_PATH = '/callback';

/**
 * The scopes to request: the caller's, plus `offline_access` when the server
 * lists it (without it many servers issue no refresh token to public clients).
 */
export function requestedScopes(as: oauth.AuthorizationServer, scopes: readonly string[] = []): string {
  const wanted = new Set(scopes);
  if (as.scopes_supported?.includes('offline_access') === true) wanted.add('offline_access');
  return [...wanted].join(' ');
}

/**
 * Logs in with the authorization code grant, PKCE S256, `state` and the RFC
 * 8707 `resource`, through a loopback redirect on 127.0.0.1 (RFC 8252 §7.3).
 * The browser is opened through `$BROWSER` or the system opener unless told
 * not to; the URL is always handed to `prompt` so it can be printed.
 * RFC 9207 `iss` is checked when the server advertises it.
 *
 * Errors (`TetherError`): `ERR_LOGIN_DENIED` (the server or the user said no),
 * `ERR_LOGIN_STATE` (a callback that does not belong to this login),
 * `ERR_LOGIN_TIMEOUT`, `ERR_LOGIN_EXCHANGE` (the code could not be exchanged),
 * `ERR_LOGIN_PORT` (the callback port is taken).
 *
 * @see RFC 6749 §4.1, RFC 7636, RFC 8252, RFC 8707, RFC 9207
 */
export async function loginWithBrowser(options: BrowserLoginOptions): Promise<TokenSet> {
  const { as, clock } = options;
  const client: oauth.Client = { client_id: options.client.clientId };
  const timeoutMs = options.timeoutMs ?? LOGIN_TIMEOUT_MS;
  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const listener = await listen(options.callbackPort ?? 0);
  try {
    const redirectUri = `http://127.0.0.1:${String(listener.port)}${CALLBACK_PATH}`;
    const authorizationUrl = new URL(requireEndpoint(as.authorization_endpoint, 'authorization_endpoint'));
    const params = authorizationUrl.searchParams;
    params.set('response_type', 'code');
    params.set('client_id', client.client_id);
    params.set('redirect_uri', redirectUri);
    params.set('code_challenge', await oauth.calculatePKCECodeChallenge(verifier));
    params.set('code_challenge_method', 'S256');
    params.set('state', state);
    params.set('resource', options.resource);
    const scope = requestedScopes(as, options.scopes);
    if (scope !== '') params.set('scope', scope);

    const url = authorizationUrl.href;
    const opened = options.openBrowser === false ? false : await (options.launch ?? openBrowser)(url);
    options.prompt({ kind: 'browser', url, opened, timeoutMs });

    const callback = await withTimeout(listener.callback, clock, timeoutMs, options.signal, () => {
      return new TetherError(
        'ERR_LOGIN_TIMEOUT',
        `the login was not finished in the browser within ${String(Math.round(timeoutMs / 1000))}s; run the command again`,
      );
    });
    const parameters = checkCallback(as, client, callback, state);
    const sentAt = clock.now();
    const tokens = await exchange(options.signal, async () => {
      const response = await oauth.authorizationCodeGrantRequest(
        as,
        client,
        clientAuth(options.client),
        parameters,
        redirectUri,
        verifier,
        {
          ...options.requestOptions,
          additionalParameters: { resource: options.resource },
          ...signalOption(options.signal),
        },
      );
      return oauth.processAuthorizationCodeResponse(as, client, response);
    });
    return tokenSetFrom(tokens, sentAt);
  } finally {
    listener.close();
  }
}

/**
 * Logs in with the device authorization grant, for machines with no browser
 * (SSH, containers): shows the code and the URL through `prompt`, then polls
 * the token endpoint as the server asks (`interval`, `slow_down` adds 5 s,
 * `authorization_pending` waits) until the user approves, refuses, or the
 * code expires.
 *
 * Errors: `ERR_LOGIN_UNSUPPORTED` (the server has no device endpoint),
 * `ERR_LOGIN_DENIED`, `ERR_LOGIN_TIMEOUT` (the code expired), `ERR_LOGIN_EXCHANGE`.
 *
 * @see RFC 8628
 */
export async function loginWithDeviceCode(options: LoginOptions): Promise<TokenSet> {
  const { as, clock } = options;
  if (as.device_authorization_endpoint === undefined) {
    throw new TetherError(
      'ERR_LOGIN_UNSUPPORTED',
      'this authorization server offers no device authorization (RFC 8628); log in with the browser instead (drop --device-code)',
    );
  }
  const client: oauth.Client = { client_id: options.client.clientId };
  const auth = clientAuth(options.client);
  const scope = requestedScopes(as, options.scopes);
  const parameters: Record<string, string> = { resource: options.resource, ...(scope !== '' && { scope }) };
  const authorization = await exchange(options.signal, async () =>
    oauth.processDeviceAuthorizationResponse(
      as,
      client,
      await oauth.deviceAuthorizationRequest(as, client, auth, parameters, {
        ...options.requestOptions,
        ...signalOption(options.signal),
      }),
    ),
  );
  const expiresInMs = authorization.expires_in * 1000;
  options.prompt({
    kind: 'device',
    userCode: authorization.user_code,
    verificationUri: authorization.verification_uri,
    ...(authorization.verification_uri_complete !== undefined && {
      verificationUriComplete: authorization.verification_uri_complete,
    }),
    expiresInMs,
  });
  const deadline = clock.monotonic() + expiresInMs;
  let intervalMs = (authorization.interval ?? 5) * 1000;
  for (;;) {
    await sleep(clock, intervalMs, options.signal);
    if (clock.monotonic() >= deadline) {
      throw new TetherError(
        'ERR_LOGIN_TIMEOUT',
        'the device code expired before it was approved; run the command again',
      );
    }
    const sentAt = clock.now();
    try {
      const response = await oauth.deviceCodeGrantRequest(as, client, auth, authorization.device_code, {
        ...options.requestOptions,
        additionalParameters: { resource: options.resource },
        ...signalOption(options.signal),
      });
      return tokenSetFrom(await oauth.processDeviceCodeResponse(as, client, response), sentAt);
    } catch (error) {
      if (error instanceof oauth.ResponseBodyError && error.error === 'authorization_pending') continue;
      if (error instanceof oauth.ResponseBodyError && error.error === 'slow_down') {
        intervalMs += 5000; // RFC 8628 §3.5
        continue;
      }
      if (error instanceof oauth.ResponseBodyError && error.error === 'expired_token') {
        throw new TetherError(
          'ERR_LOGIN_TIMEOUT',
          'the device code expired before it was approved; run the command again',
        );
      }
      throw exchangeError(error, options.signal);
    }
  }
}

// ---- the loopback listener ----------------------------------------------------

interface Listener {
  readonly port: number;
  /** The first request to the callback path, as a URL. */
  readonly callback: Promise<URL>;
  close(): void;
}

const PAGE_DONE =
  '<!doctype html><meta charset="utf-8"><title>tether</title><p>Signed in. You can close this tab and return to the terminal.</p>';
const PAGE_FAILED =
  '<!doctype html><meta charset="utf-8"><title>tether</title><p>The sign-in did not complete. Return to the terminal to see why.</p>';

/** Listens on 127.0.0.1 for the one redirect back from the authorization server. */
async function listen(port: number): Promise<Listener> {
  let deliver: (url: URL) => void = () => undefined;
  const callback = new Promise<URL>((resolve) => {
    deliver = resolve;
  });
  let answered = false;
  const server: Server = createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== CALLBACK_PATH) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    const ok = url.searchParams.has('code') && !url.searchParams.has('error');
    response
      .writeHead(ok ? 200 : 400, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
      .end(ok && !answered ? PAGE_DONE : PAGE_FAILED);
    if (!answered) {
      answered = true;
      deliver(url);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        new TetherError(
          'ERR_LOGIN_PORT',
          error.code === 'EADDRINUSE'
            ? `callback port ${String(port)} on 127.0.0.1 is in use; free it or choose another with --callback-port`
            : `cannot listen for the login callback on 127.0.0.1:${String(port)} (${error.code ?? 'error'})`,
          { cause: error },
        ),
      );
    });
    server.listen(port, '127.0.0.1', () => {
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    callback,
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/** Validates the callback (state, RFC 9207 `iss`, an `error` from the server) and returns its parameters. */
function checkCallback(
  as: oauth.AuthorizationServer,
  client: oauth.Client,
  callback: URL,
  state: string,
): URLSearchParams {
  try {
    return oauth.validateAuthResponse(as, client, callback, state);
  } catch (error) {
    if (error instanceof oauth.AuthorizationResponseError) {
      const description =
        error.error_description === undefined ? '' : `: ${quoteUntrusted(error.error_description, 200)}`;
      throw new TetherError(
        'ERR_LOGIN_DENIED',
        `the authorization server refused the login (${quoteUntrusted(error.error, 64)}${description}); run the command again, or check the account and the client`,
      );
    }
    throw new TetherError(
      'ERR_LOGIN_STATE',
      'the login callback did not match this login (wrong state or issuer); run the command again and finish in the browser tab it opens',
      { cause: error },
    );
  }
}

// ---- helpers --------------------------------------------------------------------

function clientAuth(client: LoginClient): oauth.ClientAuth {
  const method = client.tokenEndpointAuthMethod ?? (client.clientSecret === undefined ? 'none' : 'client_secret_basic');
  return clientAuthentication({
    tokenEndpointAuthMethod: method,
    ...(client.clientSecret !== undefined && { clientSecret: client.clientSecret }),
  });
}

function requireEndpoint(value: string | undefined, name: string): string {
  if (value === undefined) throw new TetherError('ERR_DISCOVERY', `the authorization server metadata has no ${name}`);
  return value;
}

function signalOption(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal === undefined ? {} : { signal };
}

/**
 * Runs a request and its processing, and turns failures into
 * `ERR_LOGIN_ABORTED` (cancelled), `ERR_LOGIN_DENIED` or `ERR_LOGIN_EXCHANGE`.
 */
async function exchange<T>(signal: AbortSignal | undefined, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw exchangeError(error, signal);
  }
}

function exchangeError(error: unknown, signal: AbortSignal | undefined): TetherError {
  if (signal?.aborted === true) return aborted();
  if (error instanceof TetherError) return error;
  if (error instanceof oauth.ResponseBodyError && error.error === 'access_denied') {
    return new TetherError('ERR_LOGIN_DENIED', 'the login was refused (access_denied); run the command again');
  }
  const code = error instanceof oauth.ResponseBodyError ? ` (${quoteUntrusted(error.error, 64)})` : '';
  return new TetherError(
    'ERR_LOGIN_EXCHANGE',
    `the authorization server did not issue tokens${code}; run the command again`,
    { cause: error },
  );
}

function aborted(): TetherError {
  return new TetherError('ERR_LOGIN_ABORTED', 'the login was cancelled');
}

/** The keeper's token set from a token response; the lifetime counts from when the request was sent. */
function tokenSetFrom(response: oauth.TokenEndpointResponse, sentAt: number): TokenSet {
  return {
    accessToken: response.access_token,
    ...(response.refresh_token !== undefined && { refreshToken: response.refresh_token }),
    issuedAt: sentAt,
    ...(response.expires_in !== undefined && { expiresAt: sentAt + response.expires_in * 1000 }),
    ...(response.scope !== undefined && { scope: response.scope }),
    tokenType: response.token_type,
  };
}

/** Waits for `promise`, at most `ms` on the clock; an abort ends the wait too. */
function withTimeout<T>(
  promise: Promise<T>,
  clock: Clock,
  ms: number,
  signal: AbortSignal | undefined,
  timeoutError: () => Error,
): Promise<T> {
  if (signal?.aborted === true) return Promise.reject(aborted()); // an aborted signal never fires again
  return new Promise<T>((resolve, reject) => {
    const timer = clock.setTimeout(() => {
      reject(timeoutError());
    }, ms);
    const onAbort = (): void => {
      clock.clearTimeout(timer);
      reject(aborted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error: unknown) => {
        clock.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(error instanceof Error ? error : new Error(String(error)));
      },
    );
  });
}

function sleep(clock: Clock, ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted === true) return Promise.reject(aborted());
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clock.clearTimeout(timer);
      reject(aborted());
    };
    const timer = clock.setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
