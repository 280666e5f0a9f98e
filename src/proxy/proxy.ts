/**
 * The local MCP proxy (DESIGN §6): an HTTP server on loopback that passes MCP
 * traffic (Streamable HTTP, and the legacy SSE transport) to the remote MCP
 * server with tether's bearer token, and answers for tether when there is no
 * token to send.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { Agent, EnvHttpProxyAgent, type Dispatcher } from 'undici';
import type { Clock, TimerHandle } from '../clock/clock.js';
import { systemClock } from '../clock/system.js';
import { quoteUntrusted } from '../errors.js';
import { TokenUnavailableError } from '../keeper/keeper.js';
import { networkErrorCode } from '../oauth/http.js';
import {
  clientResponseHeaders,
  extraUpstreamHeaders,
  type HeaderRecord,
  rejectsToken,
  upstreamRequestHeaders,
} from './headers.js';
import { allowedHostNames, rebindingRefusal, type RebindingRefusal } from './rebinding.js';
import { endpointRewriter } from './sse.js';
import { LOCAL_MCP_PATH, localizeUrl, localPath, upstreamUrl } from './urls.js';

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
  /** Measures {@link ProxyRequestRecord.durationMs}, times {@link HEADERS_HOLD_MS}. Default the system clock. */
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

/**
 * How long an answer's headers wait for its first chunk, so that both go out
 * in one packet: a server often sends its headers first and the body a moment
 * later. Event streams opened with GET, which may stay silent for long, get
 * theirs at once.
 */
export const HEADERS_HOLD_MS = 50;

/** How much of a `401`'s body is read (and dropped) before its request is cut off. */
const MAX_DROPPED_BODY_BYTES = 64 * 1024;

/** The status recorded when the client went away before the answer (nginx's "client closed request"). */
const CLIENT_CLOSED = 499;

/** What became of one upstream request: its answer is going to the client, or it was a `401`. */
type Outcome = 'relayed' | 'token_refused' | 'unauthorized';

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
  const dispatcher = upstreamDispatcher();
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
  // The target of nearly every request, mapped once.
  const mcpTarget = dispatchTarget(upstreamUrl(remote, LOCAL_MCP_PATH));

  /** Passes one request on, and its answer back. */
  async function proxy(exchange: Exchange): Promise<void> {
    const { req, res } = exchange;
    const refusal = rebindingRefusal(req.headers, names, port);
    if (refusal !== undefined) {
      answer(res, refusalAnswer(refusal, req.headers, url));
      return;
    }
    const target = req.url === LOCAL_MCP_PATH ? mcpTarget : dispatchTarget(upstreamUrl(remote, req.url ?? '/'));
    const headers = upstreamRequestHeaders(req.headers);
    Object.assign(headers, extra);
    const body = await readBody(req);
    const request: Dispatcher.DispatchOptions = {
      origin: target.origin,
      path: target.path,
      method: req.method as Dispatcher.HttpMethod,
      headers,
      body: Buffer.isBuffer(body) && body.length === 0 ? null : body,
    };
    const send = (token: string): Promise<Outcome> => {
      headers['authorization'] = `Bearer ${token}`;
      return exchange.send(dispatcher, request);
    };

    const token = await options.tokens.getToken();
    let outcome = await send(token);
    if (outcome === 'token_refused') {
      // The keeper reports its own failures; getToken() below says what they came to.
      await options.tokens.rejected(token).catch(() => undefined);
      const fresh = await options.tokens.getToken();
      if (Buffer.isBuffer(body) && fresh !== token) outcome = await send(fresh);
    }
    if (outcome !== 'relayed') answer(res, rejectedToken(name));
  }

  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    const started = clock.monotonic();
    const exchange = new Exchange(req, res, remote, clock);
    res.on('close', () => {
      // A client that went away before the whole answer takes its upstream request with it.
      if (!res.writableEnded) exchange.abandon();
      options.onRequest?.({
        method: req.method ?? '',
        path: localPath(req.url ?? '/'),
        status: res.headersSent ? res.statusCode : CLIENT_CLOSED,
        durationMs: clock.monotonic() - started,
        upstream: exchange.upstream,
      });
    });
    proxy(exchange).catch((error: unknown) => {
      if (res.headersSent || exchange.abandoned) res.destroy();
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
      await dispatcher.destroy();
    },
  };
}

/** A URL as undici's dispatch takes it. */
function dispatchTarget(url: URL): { readonly origin: string; readonly path: string } {
  return { origin: url.origin, path: `${url.pathname}${url.search}` };
}

const DISPATCHER_OPTIONS = { headersTimeout: UPSTREAM_HEADERS_TIMEOUT_MS, bodyTimeout: 0 } as const;

/**
 * undici's `EnvHttpProxyAgent` when the environment names a forward proxy
 * (it reads the variables the same way), else a plain `Agent`: the former
 * reads `NO_PROXY` from the environment again on every request.
 */
function upstreamDispatcher(): Dispatcher {
  const env = process.env;
  const forwardProxy = (env['http_proxy'] ?? env['HTTP_PROXY']) || (env['https_proxy'] ?? env['HTTPS_PROXY']);
  return forwardProxy ? new EnvHttpProxyAgent(DISPATCHER_OPTIONS) : new Agent(DISPATCHER_OPTIONS);
}

/**
 * One client request and its upstream requests (a second one replays the
 * first after a refused token), as undici's dispatch handler: the answer is
 * written to the client as it arrives (its headers held for the first chunk,
 * see {@link HEADERS_HOLD_MS}), the upstream paused while the client reads
 * slower than it sends; a `401`'s body is dropped.
 */
class Exchange implements Dispatcher.DispatchHandler {
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  readonly #remote: URL;
  readonly #clock: Clock;
  /** True once the upstream's answer is being passed back. */
  upstream = false;
  /** True once the client went away before the whole answer. */
  abandoned = false;
  #controller: Dispatcher.DispatchController | undefined;
  /** The current upstream request's: what its `401` means, once one came. */
  #unauthorized: Outcome | undefined;
  #dropped = 0;
  /** Where the answer's body goes once it is passed on: `res`, or the endpoint rewriter in front of it. */
  #sink: Writable | undefined;
  /** The timer that sends the headers if no chunk comes within {@link HEADERS_HOLD_MS}. */
  #headersHeld: TimerHandle | undefined;
  #settle: { resolve(outcome: Outcome): void; reject(error: unknown): void } | undefined;

  constructor(req: http.IncomingMessage, res: http.ServerResponse, remote: URL, clock: Clock) {
    this.req = req;
    this.res = res;
    this.#remote = remote;
    this.#clock = clock;
  }

  /** Sends one upstream request; resolves once its answer is being passed on, or once its `401` has been read. */
  send(dispatcher: Dispatcher, request: Dispatcher.DispatchOptions): Promise<Outcome> {
    this.#unauthorized = undefined;
    this.#dropped = 0;
    return new Promise((resolve, reject) => {
      this.#settle = { resolve, reject };
      dispatcher.dispatch(request, this);
    });
  }

  /** The client went away: the upstream request in flight (or the next one) is aborted. */
  abandon(): void {
    this.abandoned = true;
    this.#controller?.abort(new ClientClosedError());
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.abandoned) controller.abort(new ClientClosedError());
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: HeaderRecord): void {
    if (statusCode < 200) return; // informational: the real answer follows
    if (statusCode === 401) {
      this.#unauthorized = rejectsToken(headers['www-authenticate']) ? 'token_refused' : 'unauthorized';
      return;
    }
    try {
      this.#sink = this.#begin(statusCode, headers);
    } catch (error) {
      controller.abort(error instanceof Error ? error : new Error(String(error)));
      return;
    }
    this.#sink.on('drain', () => {
      controller.resume();
    });
    this.#settled('relayed');
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#sink === undefined) {
      this.#dropped += chunk.length;
      if (this.#dropped > MAX_DROPPED_BODY_BYTES) controller.abort(new Error('401 body too large'));
      return;
    }
    this.#releaseHeaders();
    if (!this.#sink.write(chunk)) controller.pause();
  }

  onResponseEnd(): void {
    this.#releaseHeaders();
    if (this.#sink === undefined) this.#settled(this.#unauthorized ?? 'unauthorized');
    else this.#sink.end();
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    this.#releaseHeaders();
    if (this.#sink !== undefined) this.res.destroy();
    else if (this.#unauthorized !== undefined) this.#settled(this.#unauthorized);
    else {
      this.#settle?.reject(error);
      this.#settle = undefined;
    }
  }

  /** The headers are held no longer: they go out with the next write (or no more, on an error). */
  #releaseHeaders(): void {
    if (this.#headersHeld === undefined) return;
    this.#clock.clearTimeout(this.#headersHeld);
    this.#headersHeld = undefined;
  }

  #settled(outcome: Outcome): void {
    this.#settle?.resolve(outcome);
    this.#settle = undefined;
  }

  /** Writes the answer's head; returns where its body goes. */
  #begin(statusCode: number, upstreamHeaders: HeaderRecord): Writable {
    const headers = clientResponseHeaders(upstreamHeaders);
    const location = headers['location'];
    if (typeof location === 'string') headers['location'] = this.#localize(location);
    // An event stream opened with GET may stay silent for long; a legacy SSE stream is one, its first event maybe the
    // `endpoint`. (A POST may be answered with an event stream too: its events answer the request.)
    const stream = this.req.method === 'GET' && isPlainEventStream(upstreamHeaders);
    if (stream) delete headers['content-length'];
    this.res.writeHead(statusCode, headers);
    this.upstream = true;
    if (!stream) {
      this.#headersHeld = this.#clock.setTimeout(() => {
        this.#headersHeld = undefined;
        this.res.flushHeaders();
      }, HEADERS_HOLD_MS);
      return this.res;
    }
    this.res.flushHeaders();
    const rewriter = endpointRewriter((url) => this.#localize(url));
    rewriter.pipe(this.res);
    return rewriter;
  }

  #localize(url: string): string {
    return localizeUrl(url, this.#remote, `http://${this.req.headers.host ?? ''}`);
  }
}

/** Why an upstream request was aborted: its client went away. */
class ClientClosedError extends Error {
  override readonly name = 'ClientClosedError';
}

/** The request body: buffered when it is at most {@link MAX_REPLAY_BODY_BYTES}, else `req` itself, to be streamed (and not replayable). */
function readBody(req: http.IncomingMessage): Promise<Buffer | Readable> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const settle = (body: Buffer | Readable): void => {
      req.off('data', onData).off('end', onEnd).off('error', reject);
      resolve(body);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (size <= MAX_REPLAY_BODY_BYTES) return;
      req.pause();
      req.unshift(Buffer.concat(chunks, size));
      settle(req);
    };
    const onEnd = (): void => {
      settle(Buffer.concat(chunks, size));
    };
    req.on('data', onData).on('end', onEnd).on('error', reject);
  });
}

/** An uncompressed event stream: the legacy SSE `endpoint` event can be read and rewritten in it. */
function isPlainEventStream(headers: HeaderRecord): boolean {
  const type = headers['content-type'];
  const encoding = headers['content-encoding'];
  return (
    typeof type === 'string' &&
    type.split(';')[0]?.trim().toLowerCase() === 'text/event-stream' &&
    (encoding === undefined || (typeof encoding === 'string' && encoding.toLowerCase() === 'identity'))
  );
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
