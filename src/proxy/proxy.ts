/**
 * The local MCP proxy (DESIGN §6): an HTTP server on loopback that passes MCP
 * traffic (Streamable HTTP, and the legacy SSE transport) to the remote MCP
 * server with tether's bearer token, and answers for tether when there is no
 * token to send.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { EnvHttpProxyAgent, request, type Dispatcher } from 'undici';
import type { Clock } from '../clock/clock.js';
import { systemClock } from '../clock/system.js';
import { quoteUntrusted } from '../errors.js';
import { TokenUnavailableError } from '../keeper/keeper.js';
import { networkErrorCode } from '../oauth/http.js';
import { clientResponseHeaders, extraUpstreamHeaders, rejectsToken, upstreamRequestHeaders } from './headers.js';
import { allowedHostNames, rebindingRefusal, type RebindingRefusal } from './rebinding.js';
import { endpointRewriter } from './sse.js';
import { localTarget, LOCAL_MCP_PATH, localizeUrl, upstreamUrl } from './urls.js';

/** Where the proxy gets tokens: the workload's `TokenKeeper` satisfies this. */
export interface TokenSource {
  /**
   * Resolves the access token to send; rejects with {@link TokenUnavailableError}
   * codes `ERR_AUTH_RETRYING` (has `retryAfterSeconds`), `ERR_UNAUTHENTICATED`,
   * `ERR_KEEPER_STOPPED`, `ERR_KEEPER_NOT_STARTED`.
   */
  getToken(): Promise<string>;
  /** The upstream answered `401 invalid_token` to `token`: one forced refresh (single flight); resolves when it ends. */
  rejected(token: string): Promise<void>;
}

/** One request the proxy answered, for metrics and the log. Never holds a token. */
export interface ProxyRequestRecord {
  readonly method: string;
  /** The local path, without the query. */
  readonly path: string;
  /** The status the client got; 499 when the client went away before an answer. */
  readonly status: number;
  /** From the request's arrival to the end of the answer (the whole stream, for SSE). */
  readonly durationMs: number;
  /** False when the proxy answered locally (403 host or origin check, 502, 503). */
  readonly upstream: boolean;
}

/** What {@link startProxy} is given. */
export interface ProxyOptions {
  /** The remote MCP endpoint, e.g. `https://mcp.example.com/v1/mcp`. */
  readonly remoteUrl: URL;
  readonly tokens: TokenSource;
  /** Named in the answers' messages: `tether login NAME`. */
  readonly workloadName: string;
  /** Bind address. Default `127.0.0.1`. */
  readonly host?: string;
  /** Default 0 (any free port). */
  readonly port?: number;
  /** Extra upstream headers (`--header 'K: V'`); never `Authorization`, `Host` or a hop-by-hop header. */
  readonly headers?: Readonly<Record<string, string>>;
  /** Called once per request when its answer ends; never gets tokens. */
  readonly onRequest?: (record: ProxyRequestRecord) => void;
  /** Measures {@link ProxyRequestRecord.durationMs}. Default the system clock. */
  readonly clock?: Clock;
}

/** A listening proxy. */
export interface RunningProxy {
  /** `http://127.0.0.1:PORT/mcp`: what the MCP client is pointed at. */
  readonly url: string;
  readonly port: number;
  /** Stops listening and ends every open request and stream. */
  close(): Promise<void>;
}

/** Request bodies up to this size are buffered, so that a request can be replayed after a `401`; MCP POSTs are small. */
export const MAX_REPLAY_BODY_BYTES = 1024 * 1024;

/** How long the upstream may take to answer with headers. There is no body timeout: SSE streams idle for long. */
export const UPSTREAM_HEADERS_TIMEOUT_MS = 60_000;

/** The status recorded when the client went away before the answer (nginx's "client closed request"). */
const CLIENT_CLOSED = 499;

/** One request in flight. */
interface Exchange {
  /** Aborted when the client goes away (or the answer ends). */
  readonly abort: AbortController;
  /** True once the upstream's answer is being passed back. */
  upstream: boolean;
}

/** A JSON error answer: `error` is stable, `message` says what to do next. */
interface ErrorAnswer {
  readonly status: number;
  readonly error: string;
  readonly message: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly fields?: Readonly<Record<string, string | number>>;
}

/**
 * Starts the proxy. Every upstream request carries `Authorization: Bearer`
 * with a token from `tokens`; a `401` that says the token was refused makes
 * one forced refresh and one replay (bodies up to {@link MAX_REPLAY_BODY_BYTES}).
 * The local endpoint never answers `401` nor sends `WWW-Authenticate`:
 * clients would start their own OAuth against tether.
 *
 * @throws TetherError `ERR_INVALID_HEADER` for a forbidden extra header
 * @see DESIGN §6
 */
export async function startProxy(options: ProxyOptions): Promise<RunningProxy> {
  const extra = extraUpstreamHeaders(options.headers ?? {});
  const clock = options.clock ?? systemClock;
  const bindHost = options.host ?? '127.0.0.1';
  const names = allowedHostNames(bindHost);
  const remote = options.remoteUrl;
  const name = options.workloadName;
  const agent = new EnvHttpProxyAgent({ headersTimeout: UPSTREAM_HEADERS_TIMEOUT_MS, bodyTimeout: 0 });
  const server = http.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, bindHost, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;

  const url = `http://${bindHost.includes(':') ? `[${bindHost}]` : bindHost}:${port}${LOCAL_MCP_PATH}`;

  /** Passes one request on; `exchange.upstream` turns true when the upstream's answer starts going back. */
  async function proxy(req: http.IncomingMessage, res: http.ServerResponse, exchange: Exchange): Promise<void> {
    const refusal = rebindingRefusal(req.headers, names, port);
    if (refusal !== undefined) {
      answer(res, refusalAnswer(refusal, req.headers, url));
      return;
    }
    const target = upstreamUrl(remote, req.url ?? '/');
    const headers = { ...upstreamRequestHeaders(req.headers), ...extra };
    const body = await readBody(req);
    const send = (token: string): Promise<Dispatcher.ResponseData> =>
      request(target, {
        method: req.method as Dispatcher.HttpMethod,
        headers: { ...headers, authorization: `Bearer ${token}` },
        body: Buffer.isBuffer(body) && body.length === 0 ? null : body,
        signal: exchange.abort.signal,
        dispatcher: agent,
      });

    const token = await options.tokens.getToken();
    let response = await send(token);
    if (response.statusCode === 401 && rejectsToken(response.headers['www-authenticate'])) {
      await response.body.dump();
      // The keeper reports its own failures; getToken() below says what they came to.
      await options.tokens.rejected(token).catch(() => undefined);
      const fresh = await options.tokens.getToken();
      if (!Buffer.isBuffer(body) || fresh === token) {
        answer(res, rejectedToken(name));
        return;
      }
      response = await send(fresh);
    }
    if (response.statusCode === 401) {
      await response.body.dump();
      answer(res, rejectedToken(name));
      return;
    }

    const localOrigin = `http://${req.headers.host ?? ''}`;
    const responseHeaders = clientResponseHeaders(response.headers);
    const location = responseHeaders['location'];
    if (typeof location === 'string') responseHeaders['location'] = localizeUrl(location, remote, localOrigin);
    const rewrite = isPlainEventStream(response.headers);
    if (rewrite) delete responseHeaders['content-length'];
    exchange.upstream = true;
    res.writeHead(response.statusCode, responseHeaders);
    // The headers go out now, not with the first chunk: an event stream may send none for long.
    res.flushHeaders();
    if (rewrite) {
      await pipeline(
        response.body,
        endpointRewriter((url) => localizeUrl(url, remote, localOrigin)),
        res,
      );
    } else {
      await pipeline(response.body, res);
    }
  }

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const started = clock.monotonic();
    const exchange: Exchange = { abort: new AbortController(), upstream: false };
    res.on('close', () => {
      // A client that went away takes its upstream request with it.
      exchange.abort.abort();
      options.onRequest?.({
        method: req.method ?? '',
        path: localTarget(req.url ?? '/').pathname,
        status: res.headersSent ? res.statusCode : CLIENT_CLOSED,
        durationMs: clock.monotonic() - started,
        upstream: exchange.upstream,
      });
    });
    proxy(req, res, exchange).catch((error: unknown) => {
      if (res.headersSent || exchange.abort.signal.aborted) res.destroy();
      else answer(res, failureAnswer(error, name, remote));
    });
  });

  return {
    url,
    port,
    async close() {
      const closed = new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
      server.closeAllConnections();
      await closed;
      await agent.destroy();
    },
  };
}

/** The request body: buffered when it is at most {@link MAX_REPLAY_BODY_BYTES}, else streamed (and not replayable). */
async function readBody(req: http.IncomingMessage): Promise<Buffer | Readable> {
  const chunks: Buffer[] = [];
  let size = 0;
  const iterator = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  for (;;) {
    const next = await iterator.next();
    if (next.done === true) return Buffer.concat(chunks, size);
    chunks.push(next.value);
    size += next.value.length;
    if (size > MAX_REPLAY_BODY_BYTES) return Readable.from(rest(chunks, iterator));
  }
}

async function* rest(head: readonly Buffer[], tail: AsyncIterator<Buffer>): AsyncIterable<Buffer> {
  yield* head;
  for (let next = await tail.next(); next.done !== true; next = await tail.next()) yield next.value;
}

/** An uncompressed event stream: the legacy SSE `endpoint` event can be read and rewritten in it. */
function isPlainEventStream(headers: http.IncomingHttpHeaders): boolean {
  const type = headers['content-type']?.split(';')[0]?.trim().toLowerCase();
  const encoding = headers['content-encoding'];
  return type === 'text/event-stream' && (encoding === undefined || encoding.toLowerCase() === 'identity');
}

function answer(res: http.ServerResponse, error: ErrorAnswer): void {
  res
    .writeHead(error.status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...error.headers })
    .end(JSON.stringify({ error: error.error, message: error.message, ...error.fields }));
}

function refusalAnswer(refusal: RebindingRefusal, headers: http.IncomingHttpHeaders, where: string): ErrorAnswer {
  return refusal === 'forbidden_host'
    ? {
        status: 403,
        error: refusal,
        message: `the Host ${quoteUntrusted(headers.host ?? '', 100)} is not a loopback name (DNS-rebinding protection); connect to ${where}`,
      }
    : {
        status: 403,
        error: refusal,
        message: `requests from the web origin ${quoteUntrusted(headers.origin ?? '', 100)} are refused (DNS-rebinding protection); use a local MCP client, or serve the page from localhost`,
      };
}

function rejectedToken(name: string): ErrorAnswer {
  return {
    status: 503,
    error: 'upstream_rejected_token',
    message: `the remote MCP server rejected tether's access token for ${name} (HTTP 401); retry the request, and if it keeps failing see \`tether status ${name}\` or run \`tether login ${name}\``,
  };
}

/** What a failed request is answered with: no token (503), or no upstream (502). */
function failureAnswer(error: unknown, name: string, remote: URL): ErrorAnswer {
  if (error instanceof TokenUnavailableError) {
    switch (error.code) {
      case 'ERR_AUTH_RETRYING': {
        const seconds = Math.max(1, Math.ceil(error.retryAfterSeconds ?? 1));
        return {
          status: 503,
          error: 'auth_retrying',
          message: `tether is still retrying the token refresh for ${name}; try again in ${seconds} s; see \`tether status ${name}\``,
          headers: { 'retry-after': String(seconds) },
          fields: { retryAfterSeconds: seconds },
        };
      }
      case 'ERR_UNAUTHENTICATED':
        return {
          status: 503,
          error: 'unauthenticated',
          message: `tether has no valid token for ${name}: run \`tether login ${name}\`, then retry`,
        };
      default:
        return {
          status: 503,
          error: 'unavailable',
          message: `tether's token keeper for ${name} is not running; see \`tether status ${name}\` or run \`tether restart ${name}\``,
        };
    }
  }
  const code = networkErrorCode(error) ?? 'no error code';
  return {
    status: 502,
    error: 'upstream_unreachable',
    message: `could not reach the remote MCP server ${remote.origin} (${code}); check the network and HTTPS_PROXY/NO_PROXY, then retry`,
    fields: { code },
  };
}
