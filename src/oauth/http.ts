import * as oauth from 'oauth4webapi';
import { EnvHttpProxyAgent, fetch as undiciFetch, type Dispatcher } from 'undici';
import type { Clock } from '../clock/clock.js';
import { quoteUntrusted, TetherError } from '../errors.js';

/** How long establishing a connection (TCP and TLS) may take. @see DESIGN §4 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** How long a whole request may take, from sending to the last byte of the body. @see DESIGN §4 */
export const DEFAULT_TOTAL_TIMEOUT_MS = 15_000;
/** Responses longer than this are cut off: no OAuth document comes close. @see DESIGN §4 */
export const DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024;

// Peer-supplied values (URLs, content types, error messages) are cut to this
// length before they enter a message.
const MESSAGE_VALUE_MAX = 200;
// How much of a cut-off body is kept for reports (RefreshFailure keeps 2 KB).
const TOO_LARGE_PREFIX_BYTES = 2048;

/**
 * Forward-proxy settings. Each one left out is read from the environment as
 * curl and undici read it (`HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`,
 * `NO_PROXY`/`no_proxy`); `https://` URLs use the HTTPS proxy, `http://` ones
 * the HTTP proxy.
 */
export interface ProxySettings {
  readonly httpProxy?: string;
  readonly httpsProxy?: string;
  readonly noProxy?: string;
}

/** Options of an {@link HttpClient}; every limit has a production default. */
export interface HttpClientOptions {
  /** Drives the total timeout (STYLE §1: no global timers in production code). */
  readonly clock: Clock;
  readonly connectTimeoutMs?: number;
  readonly totalTimeoutMs?: number;
  readonly maxResponseBytes?: number;
  readonly proxy?: ProxySettings;
}

/**
 * One request. The shape is a subset of `fetch`'s, and wide enough that
 * {@link HttpClient.fetch} can be oauth4webapi's `customFetch`.
 */
export interface HttpRequestInit {
  readonly method: string;
  readonly headers?: Readonly<Record<string, string>> | undefined;
  readonly body?: string | URLSearchParams | undefined;
  /** `manual` (the default) reports a 3xx as it is; token endpoints must not redirect. */
  readonly redirect?: 'manual' | 'follow' | undefined;
  /** Aborts the request; the abort reason is thrown as it is. */
  readonly signal?: AbortSignal | undefined;
  /** Only status and headers are wanted: the body is dropped unread (it may be an endless event stream). */
  readonly discardBody?: boolean | undefined;
}

/**
 * A response over the size cap. Its status and lower-cased headers are kept,
 * and the first 2 KB of the body, non-enumerable so that the error never
 * carries a body into a log by accident.
 */
export class ResponseTooLargeError extends TetherError {
  readonly status: number;
  readonly headers: Readonly<Record<string, string>>;
  declare readonly bodyPrefix: string;

  constructor(
    url: string,
    maxBytes: number,
    status: number,
    headers: Readonly<Record<string, string>>,
    prefix: string,
  ) {
    super(
      'ERR_RESPONSE_TOO_LARGE',
      `the response from ${quoteUntrusted(url, MESSAGE_VALUE_MAX)} (HTTP ${status}) is longer than ${maxBytes} bytes; it was cut off`,
    );
    this.status = status;
    this.headers = headers;
    Object.defineProperty(this, 'bodyPrefix', { value: prefix, enumerable: false });
  }
}

/**
 * The HTTP transport of one credential: an undici dispatcher that honours
 * `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY` and Node's CA store (so
 * `NODE_EXTRA_CA_CERTS` works as it does for Node itself), a connect timeout, a
 * total timeout and a response-size cap on every request.
 *
 * Errors are {@link TetherError}s: `ERR_TIMEOUT` (total timeout),
 * `ERR_NETWORK` (no response; the undici/Node error is the `cause`, see
 * {@link networkErrorCode}), `ERR_RESPONSE_TOO_LARGE`
 * ({@link ResponseTooLargeError}). A caller's own abort is passed through.
 *
 * @see DESIGN §3.2 point 7 (recreate the pool on network change), §4
 */
export class HttpClient {
  readonly #clock: Clock;
  readonly #connectTimeoutMs: number;
  readonly #totalTimeoutMs: number;
  readonly #maxResponseBytes: number;
  readonly #proxy: ProxySettings;
  #dispatcher: Dispatcher;

  constructor(options: HttpClientOptions) {
    this.#clock = options.clock;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#totalTimeoutMs = options.totalTimeoutMs ?? DEFAULT_TOTAL_TIMEOUT_MS;
    this.#maxResponseBytes = options.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.#proxy = options.proxy ?? {};
    this.#dispatcher = this.#createDispatcher();
  }

  /**
   * Sends one request and returns the response with its body read (up to the
   * cap) into memory, as a standard `Response`. A bound function, usable as
   * oauth4webapi's `customFetch`.
   */
  readonly fetch = async (url: string, init: HttpRequestInit): Promise<Response> => {
    const timeout = new AbortController();
    const timer = this.#clock.setTimeout(() => {
      timeout.abort();
    }, this.#totalTimeoutMs);
    const signal = init.signal === undefined ? timeout.signal : AbortSignal.any([init.signal, timeout.signal]);
    try {
      const response = await undiciFetch(url, {
        method: init.method,
        ...(init.headers !== undefined && { headers: { ...init.headers } }),
        ...(init.body !== undefined && { body: init.body }),
        redirect: init.redirect ?? 'manual',
        signal,
        dispatcher: this.#dispatcher,
      });
      const headers = [...response.headers];
      if (init.discardBody === true) {
        await response.body?.cancel();
        return rebuild(response.status, response.statusText, headers, null);
      }
      const { bytes, truncated } = await readCapped(response.body, this.#maxResponseBytes);
      if (truncated) {
        const prefix = new TextDecoder().decode(bytes.subarray(0, TOO_LARGE_PREFIX_BYTES));
        throw new ResponseTooLargeError(url, this.#maxResponseBytes, response.status, headerRecord(headers), prefix);
      }
      return rebuild(response.status, response.statusText, headers, bytes);
    } catch (error) {
      if (init.signal?.aborted === true) throw error;
      if (error instanceof TetherError) throw error;
      const where = quoteUntrusted(url, MESSAGE_VALUE_MAX);
      if (timeout.signal.aborted) {
        throw new TetherError('ERR_TIMEOUT', `no complete response from ${where} within ${this.#totalTimeoutMs} ms`, {
          cause: error,
        });
      }
      const code = networkErrorCode(error) ?? 'no error code';
      throw new TetherError('ERR_NETWORK', `request to ${where} failed: ${quoteUntrusted(code, 64)}`, {
        cause: error,
      });
    } finally {
      this.#clock.clearTimeout(timer);
    }
  };

  /**
   * Replaces the connection pool with a new one and destroys the old one: after
   * a network change or a wake from sleep, pooled sockets are dead and a
   * request on one would hang until the timeout. The environment's proxy
   * settings are read again. A request still in flight on the old pool fails
   * as a network error, which the keeper retries.
   *
   * @see DESIGN §3.2 point 7
   */
  resetTransport(): void {
    const old = this.#dispatcher;
    this.#dispatcher = this.#createDispatcher();
    old.destroy().catch(() => undefined);
  }

  /** Closes every connection; requests in flight fail. */
  async close(): Promise<void> {
    await this.#dispatcher.destroy();
  }

  #createDispatcher(): Dispatcher {
    const timeout = this.#connectTimeoutMs;
    return new EnvHttpProxyAgent({
      ...this.#proxy,
      connect: { timeout },
      // Through a proxy, undici connects with these instead of `connect`.
      proxyTls: { timeout },
      requestTls: { timeout },
      // Belt and braces: undici's own timers, never shorter than ours.
      headersTimeout: this.#totalTimeoutMs,
      bodyTimeout: this.#totalTimeoutMs,
    });
  }
}

/** What {@link oauthRequestOptions} returns: the transport and TLS policy for oauth4webapi. */
export interface OAuthTransportOptions {
  readonly [oauth.customFetch]: HttpClient['fetch'];
  // eslint-disable-next-line @typescript-eslint/no-deprecated -- see oauthRequestOptions
  readonly [oauth.allowInsecureRequests]: boolean;
  readonly signal?: AbortSignal;
}

/**
 * Options for an oauth4webapi request to `endpoint` through `http`.
 * Call only after {@link assertSecureEndpoint}: plain `http://` is let
 * through here because it was already limited to loopback.
 */
export function oauthRequestOptions(http: HttpClient, endpoint: URL, signal?: AbortSignal): OAuthTransportOptions {
  return {
    [oauth.customFetch]: http.fetch,
    // eslint-disable-next-line @typescript-eslint/no-deprecated -- deprecated to discourage blanket use; ours is limited to loopback by assertSecureEndpoint
    [oauth.allowInsecureRequests]: endpoint.protocol === 'http:',
    ...(signal !== undefined && { signal }),
  };
}

/**
 * Whether `url` points at this machine: `localhost`, `127.0.0.0/8` or `[::1]`.
 *
 * @see RFC 8252 §7.3 (loopback), §8.3 (`localhost` vs. IP literals)
 */
export function isLoopback(url: URL): boolean {
  const host = url.hostname.toLowerCase();
  return host === 'localhost' || host === '[::1]' || /^127(?:\.\d{1,3}){3}$/.test(host);
}

/**
 * Parses an endpoint URL and refuses anything but `https://`, or plain
 * `http://` on loopback (a local test server, a local gateway): tokens and
 * credentials sent in clear anywhere else could be read on the way.
 *
 * @param what - names the endpoint in the error (`token_endpoint`, …)
 * @throws TetherError `ERR_INSECURE_ENDPOINT`, or `ERR_INVALID_URL` for something that is no URL
 * @see RFC 6749 §3.1, §3.2 (TLS required), RFC 8252 §8.3
 */
export function assertSecureEndpoint(value: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TetherError('ERR_INVALID_URL', `${what} is not a URL: ${quoteUntrusted(value, MESSAGE_VALUE_MAX)}`);
  }
  if (url.protocol === 'https:' || (url.protocol === 'http:' && isLoopback(url))) return url;
  throw new TetherError(
    'ERR_INSECURE_ENDPOINT',
    `${what} ${quoteUntrusted(value, MESSAGE_VALUE_MAX)} is not https:// (plain http:// is allowed on loopback only)`,
  );
}

/**
 * The most specific Node/undici error code in an error's `cause` chain
 * (`ECONNREFUSED`, `UND_ERR_CONNECT_TIMEOUT`, `DEPTH_ZERO_SELF_SIGNED_CERT`, …):
 * `fetch` wraps the socket's error in a bare `TypeError('fetch failed')`.
 */
export function networkErrorCode(error: unknown): string | undefined {
  let found: string | undefined;
  let current: unknown = error;
  // The depth limit guards against a cause cycle.
  for (let depth = 0; depth < 8 && typeof current === 'object' && current !== null; depth++) {
    if ('code' in current && typeof current.code === 'string' && !(current instanceof TetherError)) {
      found = current.code;
    }
    current = 'cause' in current ? current.cause : undefined;
  }
  return found;
}

/** The innermost error message in a `cause` chain: the socket's, not `fetch failed`. */
export function innermostMessage(error: unknown): string | undefined {
  let message: string | undefined;
  let current: unknown = error;
  for (let depth = 0; depth < 8 && current instanceof Error; depth++) {
    if (current.message !== '') message = current.message;
    current = current.cause;
  }
  return message;
}

/** Response headers as a record, names lower-case (as `Headers` iterates them). */
export function headerRecord(entries: Iterable<[string, string]>): Record<string, string> {
  const record: Record<string, string> = {};
  for (const [name, value] of entries) record[name.toLowerCase()] = value;
  return record;
}

function rebuild(status: number, statusText: string, headers: [string, string][], body: Uint8Array | null): Response {
  // `Response` refuses a body, even an empty one, with these statuses.
  const nullBody = status === 204 || status === 205 || status === 304 || body?.byteLength === 0;
  return new Response(nullBody ? null : body, { status, statusText, headers });
}

async function readCapped(
  body: ReadableStream<Uint8Array> | null,
  maxBytes: number,
): Promise<{ bytes: Uint8Array; truncated: boolean }> {
  if (body === null) return { bytes: new Uint8Array(0), truncated: false };
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return { bytes: concat(chunks, total), truncated: false };
    if (total + value.byteLength > maxBytes) {
      chunks.push(value.subarray(0, maxBytes - total));
      await reader.cancel();
      return { bytes: concat(chunks, maxBytes), truncated: true };
    }
    chunks.push(value);
    total += value.byteLength;
  }
}

function concat(chunks: readonly Uint8Array[], length: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}
