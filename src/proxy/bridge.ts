/**
 * `tether connect NAME` (DESIGN §6): a stdio bridge for MCP clients that only
 * speak stdio. JSON-RPC messages read from stdin (one per line) are forwarded
 * as they are to the workload's local Streamable HTTP endpoint, and every
 * message that comes back is written to stdout. The local proxy adds the
 * tokens; the bridge never sees one.
 *
 * The bridge owns the upstream MCP session, so that the client does not have
 * to notice it ending:
 * - it keeps the client's `initialize` and `notifications/initialized`; when
 *   the endpoint answers `404` for the session (it expired), it starts a new
 *   one with them, swallows the answer to that replayed `initialize`, and
 *   sends the message that failed again;
 * - it reconnects a dropped `GET` event stream (the SDK transport does, with
 *   the backoff below), and starts a new session when that stream's session
 *   has ended;
 * - a request it cannot deliver — tether has no token (`503`), nothing
 *   listens, the session ended while the request was in flight — gets a
 *   JSON-RPC error with the same id, whose message says what to do, instead of
 *   no answer at all.
 *
 * stdout carries only the protocol; diagnostics go to `log` (stderr).
 *
 * @see https://modelcontextprotocol.io/specification/2025-06-18/basic/transports#session-management
 */
import type { Readable, Writable } from 'node:stream';
import {
  StreamableHTTPClientTransport,
  StreamableHTTPError,
  type StreamableHTTPReconnectionOptions,
} from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import {
  InitializeResultSchema,
  isInitializedNotification,
  isInitializeRequest,
  isJSONRPCErrorResponse,
  isJSONRPCNotification,
  isJSONRPCRequest,
  isJSONRPCResultResponse,
  type JSONRPCErrorResponse,
  type JSONRPCMessage,
  type JSONRPCNotification,
  type JSONRPCRequest,
  type JSONRPCResultResponse,
  type RequestId,
} from '@modelcontextprotocol/sdk/types.js';
import type { Clock, TimerHandle } from '../clock/clock.js';
import { systemClock } from '../clock/system.js';
import { quoteUntrusted, TetherError } from '../errors.js';
import { parseRetryAfter } from '../keeper/retry-after.js';

/** What {@link runStdioBridge} needs. */
export interface BridgeOptions {
  /** The workload's local Streamable HTTP endpoint, `http://127.0.0.1:PORT/mcp`. */
  readonly url: URL;
  /** Where the client's messages come from; default `process.stdin`. The bridge ends when it ends. */
  readonly stdin?: Readable;
  /** Where the messages for the client go; default `process.stdout`. Nothing else is written there. */
  readonly stdout?: Writable;
  /** Diagnostics, one line each, without a trailing newline; default: stderr, prefixed `tether connect: `. */
  readonly log?: (line: string) => void;
  /** Bounds the wait for a replayed `initialize` and for the final `DELETE`; default {@link systemClock}. */
  readonly clock?: Clock;
  /** Ends the bridge as if stdin had closed. */
  readonly signal?: AbortSignal;
}

/**
 * The JSON-RPC error code of every error response the bridge itself makes (in
 * the range JSON-RPC 2.0 §5.1 leaves to implementations); `data.code` says
 * which failure it was.
 */
export const BRIDGE_ERROR_CODE = -32050;

/**
 * Why the bridge answered a request itself:
 * - `ERR_UPSTREAM_UNAVAILABLE`: the local proxy answered `503` — tether has no
 *   usable token (`auth_retrying`, `unauthenticated`, …);
 * - `ERR_SESSION_LOST`: the MCP session ended and no new one could be started,
 *   or it ended while the request was in flight (which may or may not have
 *   been carried out);
 * - `ERR_UPSTREAM`: anything else — nothing listens at the URL, an HTTP error.
 */
export type BridgeErrorCode = 'ERR_UPSTREAM_UNAVAILABLE' | 'ERR_SESSION_LOST' | 'ERR_UPSTREAM';

/** The `data` of an error response made by the bridge. */
export interface BridgeErrorData {
  readonly code: BridgeErrorCode;
  /** The HTTP status the local endpoint answered with, when it answered. */
  readonly status?: number;
  /** The `error` of tether's JSON answer, e.g. `auth_retrying` or `unauthenticated`. */
  readonly reason?: string;
  /** From `Retry-After`: seconds until tether tries again. */
  readonly retryAfterSeconds?: number;
}

/**
 * Reconnecting a dropped `GET` stream: 1 s growing ×1.5 to 30 s, for about
 * two hours — long enough to ride out an outage of the token refresh (the
 * proxy answers `503` meanwhile), bounded so that a server that keeps
 * dropping the stream at once is not hammered forever.
 */
const RECONNECTION: StreamableHTTPReconnectionOptions = {
  initialReconnectionDelay: 1_000,
  maxReconnectionDelay: 30_000,
  reconnectionDelayGrowFactor: 1.5,
  maxRetries: 250,
};
/** The replayed `initialize` is the bridge's own request: nobody else would time it out. */
const REINITIALIZE_TIMEOUT_MS = 30_000;
/** The `DELETE` that ends the session when stdin closes is a courtesy; exiting must not wait on it for long. */
const TERMINATE_TIMEOUT_MS = 2_000;
/** How much of a `502`/`503` body is read for its explanation. */
const BODY_LIMIT_BYTES = 4_096;

/**
 * Runs the bridge between stdin/stdout and `options.url` until stdin ends (or
 * `options.signal` aborts); then ends the upstream session (a `DELETE`,
 * bounded) and resolves. It does not reject: failures are answered to the
 * client as JSON-RPC errors ({@link BRIDGE_ERROR_CODE}) and logged.
 */
export async function runStdioBridge(options: BridgeOptions): Promise<void> {
  await new StdioBridge(options).run();
}

/** A failure the bridge explains to the client; `data` goes into the error response. */
class BridgeFailure extends TetherError {
  readonly data: BridgeErrorData;

  constructor(data: BridgeErrorData, message: string, options?: { cause?: unknown }) {
    super(data.code, message, options);
    this.name = 'BridgeFailure';
    this.data = data;
  }
}

/** One upstream MCP session: its own transport (and so its own `Mcp-Session-Id`). */
class Session {
  readonly transport: StreamableHTTPClientTransport;
  /**
   * The server has shown that it knows this session — it opened a `GET`
   * event stream, or accepted a message of the client's in it — so a `404` to
   * a `GET` means that the session ended.
   */
  known = false;
  /** Replaced or closed: what it still delivers, or fails to, no longer concerns the client. */
  retired = false;

  constructor(url: URL, fetchFor: (session: Session) => FetchLike) {
    this.transport = new StreamableHTTPClientTransport(url, {
      fetch: fetchFor(this),
      reconnectionOptions: RECONNECTION,
    });
  }
}

/** A client request forwarded upstream and not yet answered. */
interface InFlight {
  readonly session: Session;
  /** Its `POST` was accepted: if the session ends now, its answer is lost. */
  sent: boolean;
}

type RpcResponse = JSONRPCResultResponse | JSONRPCErrorResponse;

/** The bridge's own request (a replayed `initialize`) waiting for its answer. */
interface Waiter {
  readonly resolve: (response: RpcResponse) => void;
  readonly reject: (error: Error) => void;
  readonly timer: TimerHandle;
}

class StdioBridge {
  readonly #url: URL;
  readonly #stdin: Readable;
  readonly #stdout: Writable;
  readonly #stdio: StdioServerTransport;
  readonly #log: (line: string) => void;
  readonly #clock: Clock;
  readonly #signal: AbortSignal | undefined;
  /** Every session whose transport is open. */
  readonly #sessions = new Set<Session>();
  /** Closing transports (and their `DELETE`s), awaited before the bridge ends. */
  readonly #closings = new Set<Promise<void>>();
  readonly #inFlight = new Map<RequestId, InFlight>();
  readonly #waiters = new Map<RequestId, Waiter>();
  /** Errors already logged: the SDK transport reports some errors twice. */
  readonly #reported = new WeakSet<object>();
  /** The session messages go to; `undefined` before the first message and after a failed renewal. */
  #session: Session | undefined;
  #renewal: Promise<Session> | undefined;
  /** The client's `initialize`, replayed to start a new session. */
  #initialize: JSONRPCRequest | undefined;
  #initialized: JSONRPCNotification | undefined;
  /** The id of the client's `initialize` while its answer is awaited. */
  #initializeId: RequestId | undefined;
  #replays = 0;
  #closing = false;

  constructor(options: BridgeOptions) {
    this.#url = options.url;
    this.#stdin = options.stdin ?? process.stdin;
    this.#stdout = options.stdout ?? process.stdout;
    this.#stdio = new StdioServerTransport(this.#stdin, this.#stdout);
    this.#log =
      options.log ??
      ((line) => {
        process.stderr.write(`tether connect: ${line}\n`);
      });
    this.#clock = options.clock ?? systemClock;
    this.#signal = options.signal;
  }

  async run(): Promise<void> {
    let end = (): void => undefined;
    const ended = new Promise<void>((resolve) => {
      end = resolve;
    });
    const onStdoutError = (error: Error): void => {
      this.#log(`stdout failed (${quoteUntrusted(error.message, 200)}); stopping`);
      end();
    };
    this.#stdin.once('end', end);
    this.#stdin.once('close', end);
    this.#stdout.once('error', onStdoutError);
    this.#signal?.addEventListener('abort', end, { once: true });
    if (this.#signal?.aborted === true || this.#stdin.readableEnded || this.#stdin.destroyed) end();
    this.#stdio.onmessage = (message) => {
      if (!this.#closing) void this.#forward(message);
    };
    this.#stdio.onerror = (error) => {
      this.#log(`could not read a message from stdin: ${quoteUntrusted(error.message, 200)}`);
    };
    await this.#stdio.start();
    await ended;
    await this.#shutdown();
    this.#stdin.off('end', end);
    this.#stdin.off('close', end);
    this.#stdout.off('error', onStdoutError);
    this.#signal?.removeEventListener('abort', end);
  }

  /** Sends one message from the client upstream; a request that cannot be delivered is answered with an error. */
  async #forward(message: JSONRPCMessage): Promise<void> {
    // A cancelled request gets no answer from the server (nor, then, an ERR_SESSION_LOST from the bridge).
    if (isJSONRPCNotification(message) && message.method === 'notifications/cancelled') {
      const id = message.params?.requestId;
      if (typeof id === 'string' || typeof id === 'number') this.#inFlight.delete(id);
    }
    let session: Session | undefined;
    try {
      session = await this.#sessionFor(message);
      await this.#deliver(session, message);
      return;
    } catch (error) {
      if (session === undefined || !this.#mayResend(message, session, error)) {
        this.#fail(message, error);
        return;
      }
    }
    try {
      await this.#deliver(await this.#renew(session, 'the server answered 404 for it'), message);
    } catch (error) {
      this.#fail(message, error);
    }
  }

  async #sessionFor(message: JSONRPCMessage): Promise<Session> {
    if (isInitialize(message)) {
      // The client starts (over): a new session, whatever there was before.
      await this.#renewal?.catch(() => undefined);
      this.#initialize = message;
      this.#initialized = undefined;
      this.#initializeId = message.id;
      if (this.#session !== undefined) this.#retire(this.#session, true);
      return this.#open();
    }
    if (isInitializedNotification(message)) this.#initialized = message;
    if (this.#renewal !== undefined) return this.#renewal;
    if (this.#session !== undefined) return this.#session;
    // After a failed renewal: try again now. Before any initialize: pass the message on, the server answers it.
    if (this.#initialize !== undefined) return this.#renew(undefined, 'the last attempt to start one failed');
    return this.#open();
  }

  async #deliver(session: Session, message: JSONRPCMessage): Promise<void> {
    if (isJSONRPCRequest(message)) this.#inFlight.set(message.id, { session, sent: false });
    await session.transport.send(message);
    session.known = true;
    if (isJSONRPCRequest(message)) {
      const entry = this.#inFlight.get(message.id);
      if (entry?.session === session) entry.sent = true;
    }
  }

  /**
   * A message whose session ended under it is sent once more in a new one —
   * unless it is a response to the server (the new session never asked) or
   * an `initialize` (nothing to replay yet).
   */
  #mayResend(message: JSONRPCMessage, session: Session, error: unknown): boolean {
    if (this.#closing || this.#initialize === undefined || isInitialize(message)) return false;
    if (isJSONRPCResultResponse(message) || isJSONRPCErrorResponse(message)) return false;
    // Retired: a renewal closed its transport while the message was on its way.
    return isSessionExpiry(error) || session.retired;
  }

  /** Single flight: every message that finds `failed` ended waits for the same new session. */
  #renew(failed: Session | undefined, why: string): Promise<Session> {
    if (this.#renewal !== undefined) return this.#renewal;
    if (this.#session !== undefined && this.#session !== failed) return Promise.resolve(this.#session);
    const initialize = this.#initialize;
    if (this.#closing || initialize === undefined) {
      return Promise.reject(new BridgeFailure({ code: 'ERR_SESSION_LOST' }, 'the MCP session ended'));
    }
    const renewal = this.#reinitialize(initialize, failed, why);
    this.#renewal = renewal;
    const settle = (): void => {
      if (this.#renewal === renewal) this.#renewal = undefined;
    };
    renewal.then(settle, settle);
    return renewal;
  }

  async #reinitialize(initialize: JSONRPCRequest, failed: Session | undefined, why: string): Promise<Session> {
    this.#log(`the MCP session ended (${why}); starting a new one`);
    if (failed !== undefined) this.#retire(failed, false);
    const session = this.#open();
    try {
      this.#replays += 1;
      // An id of the bridge's own, so that its answer is told apart from the client's and swallowed.
      const answer = await this.#call(session, { ...initialize, id: `tether-reinitialize-${this.#replays}` });
      if (isJSONRPCErrorResponse(answer)) {
        throw new BridgeFailure(
          { code: 'ERR_SESSION_LOST' },
          `the MCP session ended and the server refused a new one: ${quoteUntrusted(answer.error.message, 300)}`,
        );
      }
      const result = InitializeResultSchema.safeParse(answer.result);
      if (result.success) session.transport.setProtocolVersion(result.data.protocolVersion);
      // Also what makes the transport open the new session's GET stream.
      if (this.#initialized !== undefined) await session.transport.send(this.#initialized);
      this.#log('started a new MCP session');
      return session;
    } catch (error) {
      this.#retire(session, true);
      throw error;
    }
  }

  /** Sends the bridge's own request and waits (bounded) for its answer, which the client never sees. */
  async #call(session: Session, request: JSONRPCRequest): Promise<RpcResponse> {
    const answer = new Promise<RpcResponse>((resolve, reject) => {
      const timer = this.#clock.setTimeout(() => {
        this.#waiters.delete(request.id);
        reject(
          new BridgeFailure(
            { code: 'ERR_SESSION_LOST' },
            `the MCP session ended and the server did not answer a new initialize within ${REINITIALIZE_TIMEOUT_MS / 1000} s`,
          ),
        );
      }, REINITIALIZE_TIMEOUT_MS);
      this.#waiters.set(request.id, { resolve, reject, timer });
    });
    try {
      const [, response] = await Promise.all([session.transport.send(request), answer]);
      return response;
    } finally {
      const waiter = this.#waiters.get(request.id);
      if (waiter !== undefined) this.#clock.clearTimeout(waiter.timer);
      this.#waiters.delete(request.id);
    }
  }

  #open(): Session {
    const session = new Session(this.#url, (owner) => this.#fetchFor(owner));
    const { transport } = session;
    transport.onmessage = (message) => {
      this.#fromUpstream(session, message);
    };
    transport.onerror = (error) => {
      // A BridgeFailure comes from #fetchFor and is thrown on to whoever sent: they say what failed.
      if (!session.retired && !this.#closing && !(error instanceof BridgeFailure)) this.#report(error);
    };
    this.#sessions.add(session);
    this.#session = session;
    transport.start().catch((error: unknown) => {
      this.#report(error);
    });
    return session;
  }

  /**
   * Takes a session out of use and closes its transport (with a `DELETE` when
   * `terminate`). Requests whose answer could only have come on it are
   * answered with `ERR_SESSION_LOST`: the server dropped them with the session.
   */
  #retire(session: Session, terminate: boolean): void {
    if (session.retired) return;
    session.retired = true;
    if (this.#session === session) this.#session = undefined;
    this.#sessions.delete(session);
    if (!this.#closing) {
      for (const [id, entry] of this.#inFlight) {
        if (entry.session !== session || !entry.sent) continue;
        this.#inFlight.delete(id);
        this.#answerWithError(
          id,
          new BridgeFailure(
            { code: 'ERR_SESSION_LOST' },
            'the MCP session ended before the server answered; the request may or may not have been carried out',
          ),
        );
      }
    }
    const closing = this.#close(session.transport, terminate);
    this.#closings.add(closing);
    void closing.finally(() => this.#closings.delete(closing));
  }

  async #close(transport: StreamableHTTPClientTransport, terminate: boolean): Promise<void> {
    if (terminate && transport.sessionId !== undefined) {
      await within(this.#clock, transport.terminateSession(), TERMINATE_TIMEOUT_MS).catch(() => undefined);
    }
    await transport.close().catch(() => undefined);
  }

  #fromUpstream(session: Session, message: JSONRPCMessage): void {
    if (session.retired || this.#closing) return;
    if (isJSONRPCResultResponse(message) || isJSONRPCErrorResponse(message)) {
      const id = message.id;
      const waiter = id === undefined ? undefined : this.#waiters.get(id);
      if (waiter !== undefined) {
        waiter.resolve(message);
        return;
      }
      if (id !== undefined) this.#inFlight.delete(id);
      if (id !== undefined && id === this.#initializeId) {
        this.#initializeId = undefined;
        // What the SDK's Client does after initialize: later requests carry MCP-Protocol-Version.
        const result = isJSONRPCResultResponse(message) ? InitializeResultSchema.safeParse(message.result) : undefined;
        if (result?.success === true) session.transport.setProtocolVersion(result.data.protocolVersion);
      }
    }
    this.#toClient(message);
  }

  #toClient(message: JSONRPCMessage): void {
    void this.#stdio.send(message);
  }

  /** A message that could not be delivered: a request is answered with an error, anything else is logged. */
  #fail(message: JSONRPCMessage, error: unknown): void {
    if (this.#closing) return;
    if (isJSONRPCRequest(message)) {
      this.#inFlight.delete(message.id);
      const failure = asBridgeFailure(error, this.#url);
      this.#report(error);
      this.#answerWithError(message.id, failure);
      return;
    }
    const what = 'method' in message ? `notification ${quoteUntrusted(message.method, 100)}` : 'response';
    this.#log(`could not forward a ${what}: ${asBridgeFailure(error, this.#url).message}`);
  }

  #answerWithError(id: RequestId, failure: BridgeFailure): void {
    this.#toClient({
      jsonrpc: '2.0',
      id,
      error: { code: BRIDGE_ERROR_CODE, message: `tether: ${failure.message}`, data: failure.data },
    });
  }

  /** Logs an error once (the SDK transport reports some twice); a `404` is left to the renewal's own line. */
  #report(error: unknown): void {
    if (typeof error === 'object' && error !== null) {
      if (this.#reported.has(error)) return;
      this.#reported.add(error);
    }
    if (isSessionExpiry(error)) return;
    this.#log(asBridgeFailure(error, this.#url).message);
  }

  /**
   * The transport's fetch: turns tether's `502`/`503` answers into their
   * explanation, and a `404` for the session into the signal to start a new
   * one.
   */
  #fetchFor(session: Session): FetchLike {
    return async (url, init) => {
      const response = await fetch(url, init);
      const method = init?.method ?? 'GET';
      if (response.status === 502 || response.status === 503) {
        throw await proxyFailure(response, this.#clock.now());
      }
      if (response.status === 404 && new Headers(init?.headers).has('mcp-session-id')) {
        await response.body?.cancel();
        if (method !== 'GET') {
          throw new BridgeFailure({ code: 'ERR_SESSION_LOST', status: 404 }, 'the MCP session ended (HTTP 404)');
        }
        // Only for a session the server knew: one that refuses the stream of every brand-new session
        // would otherwise be sent one new session after another.
        if (session.known && !session.retired) {
          this.#renew(session, 'its event stream answered 404').catch((error: unknown) => {
            this.#report(error);
          });
        }
        // 405 is how a server says it has no event stream: the SDK transport then stops reconnecting
        // it, as it should for a session that has ended.
        return new Response(null, { status: 405, statusText: 'Method Not Allowed' });
      }
      if (method === 'GET' && response.ok) session.known = true;
      return response;
    };
  }

  async #shutdown(): Promise<void> {
    this.#closing = true;
    for (const waiter of this.#waiters.values()) {
      this.#clock.clearTimeout(waiter.timer);
      waiter.reject(new BridgeFailure({ code: 'ERR_SESSION_LOST' }, 'the bridge is closing'));
    }
    this.#waiters.clear();
    for (const session of [...this.#sessions]) this.#retire(session, true);
    await Promise.all([...this.#closings]);
    await this.#stdio.close();
  }
}

/** A JSON-RPC `initialize` request (with its id: the SDK's `isInitializeRequest` alone does not say so). */
function isInitialize(message: JSONRPCMessage): message is JSONRPCRequest {
  return isJSONRPCRequest(message) && isInitializeRequest(message);
}

function isSessionExpiry(error: unknown): boolean {
  return error instanceof BridgeFailure && error.data.code === 'ERR_SESSION_LOST' && error.data.status === 404;
}

/** Describes any failure for the client; values from the network are quoted. */
function asBridgeFailure(error: unknown, url: URL): BridgeFailure {
  if (error instanceof BridgeFailure) return error;
  if (error instanceof StreamableHTTPError) {
    const status = error.code !== undefined && error.code > 0 ? error.code : undefined;
    return new BridgeFailure(
      { code: 'ERR_UPSTREAM', ...(status !== undefined && { status }) },
      `the request to ${url.href} failed: ${quoteUntrusted(error.message, 300)}`,
      { cause: error },
    );
  }
  const cause: unknown = error instanceof Error ? error.cause : undefined;
  const systemCode =
    typeof cause === 'object' && cause !== null && 'code' in cause && typeof cause.code === 'string'
      ? cause.code
      : undefined;
  if (systemCode === 'ECONNREFUSED') {
    return new BridgeFailure(
      { code: 'ERR_UPSTREAM' },
      `nothing answers at ${url.href} (ECONNREFUSED); is the workload running? See \`tether list\``,
      { cause: error },
    );
  }
  const text = error instanceof Error ? error.message : String(error);
  return new BridgeFailure(
    { code: 'ERR_UPSTREAM' },
    `the request to ${url.href} failed: ${quoteUntrusted(text, 300)}${systemCode === undefined ? '' : ` (${quoteUntrusted(systemCode, 40)})`}`,
    { cause: error },
  );
}

/**
 * tether's own answer — `503` without a usable token, `502` without the
 * remote server — as a failure: its JSON `message` says what to do, and
 * `Retry-After` when tether tries again.
 */
async function proxyFailure(response: Response, nowMs: number): Promise<BridgeFailure> {
  const text = await boundedText(response, BODY_LIMIT_BYTES);
  const body = jsonObject(text);
  const reason = typeof body?.error === 'string' ? body.error : undefined;
  const explanation = typeof body?.message === 'string' ? body.message : body === undefined ? text.trim() : '';
  const retryAfterMs = parseRetryAfter(response.headers.get('retry-after') ?? undefined, nowMs);
  const retryAfterSeconds = retryAfterMs === undefined ? undefined : Math.ceil(retryAfterMs / 1000);
  const data: BridgeErrorData = {
    code: response.status === 503 ? 'ERR_UPSTREAM_UNAVAILABLE' : 'ERR_UPSTREAM',
    status: response.status,
    ...(reason !== undefined && { reason: reason.slice(0, 100) }),
    ...(retryAfterSeconds !== undefined && { retryAfterSeconds }),
  };
  let message = `the local proxy answered ${response.status}`;
  if (reason !== undefined) message += ` ${quoteUntrusted(reason, 100)}`;
  if (explanation !== '') message += `: ${quoteUntrusted(explanation, 500)}`;
  if (retryAfterSeconds !== undefined) message += ` (Retry-After: ${retryAfterSeconds} s)`;
  return new BridgeFailure(data, message);
}

async function boundedText(response: Response, limit: number): Promise<string> {
  if (response.body === null) return '';
  const reader: ReadableStreamDefaultReader<Uint8Array> = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < limit) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
    }
  } catch {
    // What arrived is explanation enough.
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return Buffer.concat(chunks).subarray(0, limit).toString('utf8');
}

function jsonObject(text: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

/** `promise`, or `undefined` once `ms` have passed. */
async function within<T>(clock: Clock, promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: TimerHandle | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = clock.setTimeout(() => {
      resolve(undefined);
    }, ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    if (timer !== undefined) clock.clearTimeout(timer);
  }
}
