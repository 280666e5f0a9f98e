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
 * - it reconnects a dropped `GET` event stream with the backoff below (and
 *   resumes a request's dropped answer stream from its `Last-Event-ID` when
 *   the server numbers its events), and starts a new session when a stream's
 *   session has ended;
 * - a request it cannot deliver — tether has no token (`503`), nothing
 *   listens, the session ended while the request was in flight, the server
 *   ended the request's stream without answering — gets a JSON-RPC error with
 *   the same id, whose message says what to do, instead of no answer at all.
 *
 * stdout carries only the protocol; diagnostics go to `log` (stderr).
 *
 * It is a program's first moments (a stdio client waits for them) and sits
 * on every call, so it is lean: messages are checked for the few fields it
 * routes by and forwarded as the text they came as; HTTP is Node's own client
 * with a keep-alive agent (undici's import alone would cost more than the
 * whole start-up budget).
 *
 * @see https://modelcontextprotocol.io/specification/2025-06-18/basic/transports#streamable-http
 */
import http from 'node:http';
import type { Readable, Writable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import type { Clock, TimerHandle } from '../clock/clock.js';
import { systemClock } from '../clock/system.js';
import { quoteUntrusted, TetherError } from '../errors.js';
import { parseRetryAfter } from '../keeper/retry-after.js';
import { EventStreamParser, type ServerSentEvent } from './event-stream.js';

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
  /** Times the event streams' reconnections and bounds the bridge's own requests and the final `DELETE`; default {@link systemClock}. */
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
 * - `ERR_UPSTREAM`: anything else — nothing listens at the URL, an HTTP error,
 *   the server ended the request's stream without answering it.
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
 * Reopening an event stream: 1 s after it ended (or the server's `retry`),
 * growing ×1.5 per failed attempt to 30 s, for 250 attempts — about two
 * hours, long enough to ride out an outage of the token refresh (the proxy
 * answers `503` meanwhile), bounded so that a server that keeps refusing is
 * not asked forever.
 */
const RECONNECT = { firstMs: 1_000, growth: 1.5, maxMs: 30_000, attempts: 250 } as const;
/** The bridge's own requests (a replayed `initialize`, a `ping`): nobody else would time them out. */
const OWN_REQUEST_TIMEOUT_MS = 30_000;
/** The `DELETE` that ends the session when stdin closes is a courtesy; exiting must not wait on it for long. */
const TERMINATE_TIMEOUT_MS = 2_000;
/** How much of an error answer's body is read for its explanation. */
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

type RequestId = string | number;
type JsonObject = Record<string, unknown>;

/**
 * A JSON-RPC 2.0 message, with what the bridge routes it by, and its JSON
 * text (forwarded as it came, without serialising it again).
 */
type Message =
  | {
      readonly kind: 'request';
      readonly id: RequestId;
      readonly method: string;
      readonly json: JsonObject;
      readonly text: string;
    }
  | { readonly kind: 'notification'; readonly method: string; readonly json: JsonObject; readonly text: string }
  /** A result or an error; an error about an unreadable request may come without an id. */
  | { readonly kind: 'response'; readonly id: RequestId | undefined; readonly json: JsonObject; readonly text: string };

type Request = Extract<Message, { kind: 'request' }>;
type Response = Extract<Message, { kind: 'response' }>;

/** `value` as a JSON-RPC 2.0 message, or `undefined` when it is not one; `text` is its JSON. */
function messageOf(value: unknown, text: string): Message | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const json = value as JsonObject;
  if (json['jsonrpc'] !== '2.0') return undefined;
  const { id, method } = json;
  const hasId = typeof id === 'string' || typeof id === 'number';
  if (typeof method === 'string') {
    if (hasId) return { kind: 'request', id, method, json, text };
    return id === undefined ? { kind: 'notification', method, json, text } : undefined;
  }
  if ('result' in json && hasId) return { kind: 'response', id, json, text };
  if (typeof json['error'] === 'object' && json['error'] !== null && (hasId || id === undefined || id === null)) {
    return { kind: 'response', id: hasId ? id : undefined, json, text };
  }
  return undefined;
}

/** A message from JSON text, or `undefined` when it is not JSON or not a JSON-RPC 2.0 message. */
function parseMessage(text: string): Message | undefined {
  try {
    return messageOf(JSON.parse(text), text);
  } catch {
    return undefined;
  }
}

function isInitialize(message: Message): message is Request {
  return message.kind === 'request' && message.method === 'initialize';
}

/** The protocol version an `initialize` result agreed on. */
function protocolVersionOf(response: Response): string | undefined {
  const result = response.json['result'];
  if (typeof result !== 'object' || result === null) return undefined;
  const version = (result as JsonObject)['protocolVersion'];
  return typeof version === 'string' ? version : undefined;
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

/** One upstream MCP session. */
class Session {
  /** `Mcp-Session-Id`, once the server has given one. */
  id: string | undefined;
  /** Sent as `MCP-Protocol-Version` once `initialize` agreed on one (as the SDK's client does). */
  protocolVersion: string | undefined;
  /**
   * The server has shown that it knows this session — it opened a `GET`
   * event stream, or accepted a message of the client's in it — so a `404` to
   * a `GET` means that the session ended.
   */
  known = false;
  /** Its `GET` event stream has been opened (once per session). */
  listening = false;
  /** Replaced or closed: what it still delivers, or fails to, no longer concerns the client. */
  retired = false;
  /** Its HTTP requests not yet finished (waiting POSTs, event streams): destroyed when it is retired. */
  readonly requests = new Set<http.ClientRequest>();
  /** Its pending reconnection timers. */
  readonly timers = new Set<TimerHandle>();
}

/** An event stream being read: the session's own (`GET`), or a request's answer stream. */
interface EventStream {
  /** The request whose answer the stream brings; `undefined` for the session's `GET` stream. */
  readonly awaiting: RequestId | undefined;
  answered: boolean;
  /** For `Last-Event-ID` when the stream is reopened. */
  lastEventId: string | undefined;
  /** The server's `retry`, in ms. */
  retryMs: number | undefined;
}

/** A client request forwarded upstream and not yet answered. */
interface InFlight {
  readonly session: Session;
  /** Its `POST` was accepted: if the session ends now, its answer is lost. */
  sent: boolean;
}

/** The bridge's own request waiting for its answer. */
interface Waiter {
  readonly resolve: (response: Response) => void;
  readonly reject: (error: Error) => void;
  readonly timer: TimerHandle;
}

class StdioBridge {
  readonly #url: URL;
  readonly #stdin: Readable;
  readonly #stdout: Writable;
  readonly #log: (line: string) => void;
  readonly #clock: Clock;
  readonly #signal: AbortSignal | undefined;
  /** Keeps connections to the local endpoint open between requests. */
  readonly #agent = new http.Agent({ keepAlive: true });
  /** Every session not yet retired. */
  readonly #sessions = new Set<Session>();
  /** Sessions being ended (their `DELETE`s), awaited before the bridge ends. */
  readonly #closings = new Set<Promise<void>>();
  readonly #inFlight = new Map<RequestId, InFlight>();
  readonly #waiters = new Map<RequestId, Waiter>();
  /** The session messages go to; `undefined` before the first message and after a failed renewal. */
  #session: Session | undefined;
  #renewal: Promise<Session> | undefined;
  /** The client's `initialize`, replayed to start a new session. */
  #initialize: Request | undefined;
  #initialized: Message | undefined;
  /** The id of the client's `initialize` while its answer is awaited. */
  #initializeId: RequestId | undefined;
  #ownRequests = 0;
  #closing = false;

  constructor(options: BridgeOptions) {
    this.#url = options.url;
    this.#stdin = options.stdin ?? process.stdin;
    this.#stdout = options.stdout ?? process.stdout;
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
    const decoder = new StringDecoder('utf8');
    let pending = '';
    const onData = (chunk: Buffer | string): void => {
      pending += typeof chunk === 'string' ? chunk : decoder.write(chunk);
      let start = 0;
      for (let newline = pending.indexOf('\n'); newline !== -1; newline = pending.indexOf('\n', start)) {
        this.#fromClient(pending.slice(start, newline));
        start = newline + 1;
      }
      pending = pending.slice(start);
    };
    const onError = (what: string) => (error: Error) => {
      this.#log(`${what} failed (${quoteUntrusted(error.message, 200)}); stopping`);
      end();
    };
    const onStdinError = onError('stdin');
    const onStdoutError = onError('stdout');
    this.#stdin.on('data', onData);
    this.#stdin.once('end', end);
    this.#stdin.once('close', end);
    this.#stdin.on('error', onStdinError);
    this.#stdout.on('error', onStdoutError);
    this.#signal?.addEventListener('abort', end, { once: true });
    if (this.#signal?.aborted === true || this.#stdin.readableEnded || this.#stdin.destroyed) end();
    await ended;
    this.#stdin.off('data', onData);
    this.#stdin.pause();
    await this.#shutdown();
    this.#stdin.off('end', end);
    this.#stdin.off('close', end);
    this.#stdin.off('error', onStdinError);
    this.#stdout.off('error', onStdoutError);
    this.#signal?.removeEventListener('abort', end);
  }

  #fromClient(line: string): void {
    const text = line.endsWith('\r') ? line.slice(0, -1) : line;
    if (this.#closing || text.trim() === '') return;
    const message = parseMessage(text);
    if (message === undefined) {
      this.#log('could not read a message from stdin: a line that is not a JSON-RPC 2.0 message; skipped');
      return;
    }
    void this.#forward(message);
  }

  /** Sends one message from the client upstream; a request that cannot be delivered is answered with an error. */
  async #forward(message: Message): Promise<void> {
    // A cancelled request gets no answer from the server (nor, then, an error from the bridge).
    if (message.kind === 'notification' && message.method === 'notifications/cancelled') {
      const params = message.json['params'];
      const id = typeof params === 'object' && params !== null ? (params as JsonObject)['requestId'] : undefined;
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

  async #sessionFor(message: Message): Promise<Session> {
    if (isInitialize(message)) {
      // The client starts (over): a new session, whatever there was before.
      await this.#renewal?.catch(() => undefined);
      this.#initialize = message;
      this.#initialized = undefined;
      this.#initializeId = message.id;
      if (this.#session !== undefined) this.#retire(this.#session, true);
      return this.#open();
    }
    if (message.kind === 'notification' && message.method === 'notifications/initialized') this.#initialized = message;
    if (this.#renewal !== undefined) return this.#renewal;
    if (this.#session !== undefined) return this.#session;
    // After a failed renewal: try again now. Before any initialize: pass the message on, the server answers it.
    if (this.#initialize !== undefined) return this.#renew(undefined, 'the last attempt to start one failed');
    return this.#open();
  }

  /** POSTs one message in `session`; the answer to a request comes to the client (or a waiter) when it arrives. */
  async #deliver(session: Session, message: Message): Promise<void> {
    const fromClient = message.kind === 'request' && !this.#waiters.has(message.id);
    if (fromClient) this.#inFlight.set(message.id, { session, sent: false });
    const response = await this.#http(session, 'POST', message.text);
    session.known = true;
    if (message.kind !== 'request') {
      response.resume();
      if (message.kind === 'notification' && message.method === 'notifications/initialized') void this.#listen(session);
      return;
    }
    await this.#readAnswers(session, message.id, response);
    const entry = fromClient ? this.#inFlight.get(message.id) : undefined;
    if (entry?.session === session) entry.sent = true;
  }

  /** Reads a request's answer: a JSON body is read now; an event stream as it comes, after this returns. */
  async #readAnswers(session: Session, id: RequestId, response: http.IncomingMessage): Promise<void> {
    const type = (response.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
    if (type === 'text/event-stream') {
      void this.#readAnswerStream(session, id, response);
      return;
    }
    if (type !== 'application/json') {
      response.resume();
      throw new BridgeFailure(
        { code: 'ERR_UPSTREAM', status: response.statusCode ?? 0 },
        `the server answered with ${quoteUntrusted(type, 100)}, neither JSON nor an event stream`,
      );
    }
    const chunks: Buffer[] = [];
    for await (const chunk of response as AsyncIterable<Buffer>) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString('utf8');
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      throw new BridgeFailure({ code: 'ERR_UPSTREAM' }, 'the server answered with JSON that could not be parsed');
    }
    for (const item of Array.isArray(value) ? (value as unknown[]) : [value]) {
      const message = messageOf(item, item === value ? text : JSON.stringify(item));
      if (message === undefined) this.#log('the server answered something that is not a JSON-RPC message; skipped');
      else this.#fromUpstream(session, message);
    }
  }

  /**
   * A request's answer stream, to its end; one that ends without the answer
   * is resumed from its last event id, else looked into ({@link #unanswered}).
   */
  async #readAnswerStream(session: Session, id: RequestId, response: http.IncomingMessage): Promise<void> {
    const stream: EventStream = { awaiting: id, answered: false, lastEventId: undefined, retryMs: undefined };
    await this.#read(session, response, stream, false);
    if (stream.lastEventId !== undefined) await this.#follow(session, stream);
    await this.#unanswered(session, stream);
  }

  /**
   * A client's request whose stream ended without its answer: a `ping` tells
   * whether the session still exists. If it does not, a new one is started
   * and the request is answered `ERR_SESSION_LOST` (as for any request lost
   * with its session); if it does, the answer is not coming: `ERR_UPSTREAM`.
   */
  async #unanswered(session: Session, stream: EventStream): Promise<void> {
    const id = stream.awaiting;
    const waiting = (): boolean =>
      id !== undefined && !stream.answered && !this.#closing && this.#inFlight.get(id)?.session === session;
    if (!waiting()) return;
    try {
      await this.#call(session, this.#ownRequest('ping', undefined));
    } catch (error) {
      if (isSessionExpiry(error)) {
        await this.#renew(session, 'the server answered 404 for it').catch((renewError: unknown) => {
          this.#report(renewError);
        });
      }
    }
    if (!waiting() || id === undefined) return;
    this.#inFlight.delete(id);
    this.#answerWithError(
      id,
      new BridgeFailure(
        { code: 'ERR_UPSTREAM' },
        'the server ended the response stream without answering; the request may or may not have been carried out',
      ),
    );
  }

  /** Opens the session's `GET` event stream, once: how the server sends requests and notifications of its own. */
  async #listen(session: Session): Promise<void> {
    if (session.listening) return;
    session.listening = true;
    await this.#follow(session, { awaiting: undefined, answered: false, lastEventId: undefined, retryMs: undefined });
  }

  /**
   * Reads an event stream with `GET` until it is no longer wanted: the
   * session's own (opened at once) or a request's answer stream that dropped
   * (reopened from its `Last-Event-ID` after a wait). A stream that ends or
   * cannot be opened is reopened with {@link RECONNECT}'s backoff; `405` means
   * the server has none, `404` that the session ended.
   */
  async #follow(session: Session, stream: EventStream): Promise<void> {
    let failures = 0;
    let delay = stream.awaiting === undefined ? 0 : reconnectDelay(0, stream.retryMs);
    for (;;) {
      if (delay > 0) await this.#sleep(session, delay);
      if (!this.#wanted(session, stream)) return;
      try {
        const response = await this.#http(session, 'GET', undefined, stream.lastEventId);
        session.known = true;
        failures = 0;
        await this.#read(session, response, stream, true);
        delay = reconnectDelay(0, stream.retryMs);
      } catch (error) {
        if (!this.#wanted(session, stream) || (error instanceof BridgeFailure && error.data.status === 405)) return;
        if (isSessionExpiry(error)) {
          // Only for a session the server knew: one that refuses the stream of every brand-new session
          // would otherwise be sent one new session after another.
          if (session.known) {
            this.#renew(session, 'its event stream answered 404').catch((renewError: unknown) => {
              this.#report(renewError);
            });
          }
          return;
        }
        failures += 1;
        const reason = asBridgeFailure(error, this.#url).message;
        if (failures > RECONNECT.attempts) {
          this.#log(`gave up reopening an event stream after ${RECONNECT.attempts} attempts: ${reason}`);
          return;
        }
        delay = reconnectDelay(failures, stream.retryMs);
        this.#log(`could not reopen an event stream (${reason}); trying again in ${Math.round(delay / 1000)} s`);
      }
    }
  }

  /** An event stream is read while its session is in use and, for an answer stream, the answer is awaited. */
  #wanted(session: Session, stream: EventStream): boolean {
    if (this.#closing || session.retired || stream.answered) return false;
    const id = stream.awaiting;
    return id === undefined || this.#inFlight.get(id)?.session === session || this.#waiters.has(id);
  }

  /**
   * Reads an event stream to its end (or until it drops), passing on its
   * messages; `untilAnswered`: only until the awaited answer has come (a
   * resumed stream need not stay open; a `POST`'s is read to its end, which
   * comes right after, so that its connection is kept for the next).
   */
  async #read(
    session: Session,
    response: http.IncomingMessage,
    stream: EventStream,
    untilAnswered: boolean,
  ): Promise<void> {
    const parser = new EventStreamParser();
    response.setEncoding('utf8');
    try {
      for await (const text of response as AsyncIterable<string>) {
        for (const event of parser.push(text)) this.#onEvent(session, event, stream);
        if (untilAnswered && stream.answered) break;
      }
    } catch {
      // Dropped: whoever reads it decides whether to reopen it.
    }
  }

  #onEvent(session: Session, event: ServerSentEvent, stream: EventStream): void {
    if (event.id !== undefined && event.id !== '') stream.lastEventId = event.id;
    if (event.retry !== undefined) stream.retryMs = event.retry;
    // Events without data (a priming event, say) only carry the id.
    if (event.data === '' || event.type !== 'message') return;
    const message = parseMessage(event.data);
    if (message === undefined) {
      this.#log('the server sent something that is not a JSON-RPC message; skipped');
      return;
    }
    if (message.kind === 'response' && message.id !== undefined && message.id === stream.awaiting) {
      stream.answered = true;
    }
    this.#fromUpstream(session, message);
  }

  /**
   * A message whose session ended under it is sent once more in a new one —
   * unless it is a response to the server (the new session never asked) or
   * an `initialize` (nothing to replay yet).
   */
  #mayResend(message: Message, session: Session, error: unknown): boolean {
    if (this.#closing || this.#initialize === undefined || isInitialize(message)) return false;
    if (message.kind === 'response') return false;
    // Retired: a renewal ended the session while the message was on its way.
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

  async #reinitialize(initialize: Request, failed: Session | undefined, why: string): Promise<Session> {
    this.#log(`the MCP session ended (${why}); starting a new one`);
    if (failed !== undefined) this.#retire(failed, false);
    const session = this.#open();
    try {
      // An id of the bridge's own, so that its answer is told apart from the client's and swallowed.
      const answer = await this.#call(session, this.#ownRequest('initialize', initialize.json));
      const error = answer.json['error'];
      if (error !== undefined) {
        const text = typeof error === 'object' && error !== null ? (error as JsonObject)['message'] : undefined;
        throw new BridgeFailure(
          { code: 'ERR_SESSION_LOST' },
          `the MCP session ended and the server refused a new one: ${quoteUntrusted(typeof text === 'string' ? text : JSON.stringify(error), 300)}`,
        );
      }
      session.protocolVersion = protocolVersionOf(answer);
      // Also what opens the new session's GET stream.
      if (this.#initialized !== undefined) await this.#deliver(session, this.#initialized);
      this.#log('started a new MCP session');
      return session;
    } catch (error) {
      this.#retire(session, true);
      throw error;
    }
  }

  /** A request of the bridge's own, `method` with `like`'s params (a replayed `initialize`) or none. */
  #ownRequest(method: string, like: JsonObject | undefined): Request {
    this.#ownRequests += 1;
    const id = `tether-${method}-${this.#ownRequests}`;
    const json = { ...(like ?? { jsonrpc: '2.0', method }), id };
    return { kind: 'request', id, method, json, text: JSON.stringify(json) };
  }

  /** Sends the bridge's own request and waits (bounded) for its answer, which the client never sees. */
  async #call(session: Session, request: Request): Promise<Response> {
    const answer = new Promise<Response>((resolve, reject) => {
      const timer = this.#clock.setTimeout(() => {
        this.#waiters.delete(request.id);
        reject(
          new BridgeFailure(
            { code: 'ERR_SESSION_LOST' },
            `the server did not answer the bridge's ${request.method} within ${OWN_REQUEST_TIMEOUT_MS / 1000} s`,
          ),
        );
      }, OWN_REQUEST_TIMEOUT_MS);
      this.#waiters.set(request.id, { resolve, reject, timer });
    });
    try {
      const [, response] = await Promise.all([this.#deliver(session, request), answer]);
      return response;
    } finally {
      const waiter = this.#waiters.get(request.id);
      if (waiter !== undefined) this.#clock.clearTimeout(waiter.timer);
      this.#waiters.delete(request.id);
    }
  }

  #open(): Session {
    const session = new Session();
    this.#sessions.add(session);
    this.#session = session;
    return session;
  }

  /**
   * Takes a session out of use: its streams and waiting requests are cut,
   * and with `terminate` it is ended upstream (a `DELETE`). Requests whose
   * answer could only have come in it are answered with `ERR_SESSION_LOST`:
   * the server dropped them with the session.
   */
  #retire(session: Session, terminate: boolean): void {
    if (session.retired) return;
    session.retired = true;
    if (this.#session === session) this.#session = undefined;
    this.#sessions.delete(session);
    for (const timer of session.timers) this.#clock.clearTimeout(timer);
    session.timers.clear();
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
    for (const request of session.requests) request.destroy();
    if (!terminate || session.id === undefined) return;
    const closing = this.#terminate(session);
    this.#closings.add(closing);
    void closing.finally(() => this.#closings.delete(closing));
  }

  /** Ends the session upstream with a `DELETE`, waiting for it no longer than {@link TERMINATE_TIMEOUT_MS}. */
  async #terminate(session: Session): Promise<void> {
    const deleted = this.#http(session, 'DELETE').then(
      (response) => {
        response.resume();
      },
      () => undefined,
    );
    await within(this.#clock, deleted, TERMINATE_TIMEOUT_MS);
    for (const request of session.requests) request.destroy();
  }

  #fromUpstream(session: Session, message: Message): void {
    if (session.retired || this.#closing) return;
    if (message.kind === 'response' && message.id !== undefined) {
      const waiter = this.#waiters.get(message.id);
      if (waiter !== undefined) {
        waiter.resolve(message);
        return;
      }
      this.#inFlight.delete(message.id);
      if (message.id === this.#initializeId) {
        this.#initializeId = undefined;
        session.protocolVersion = protocolVersionOf(message);
      }
    }
    this.#toClient(message);
  }

  /** One line on stdout: the message's text as it came, unless it spans lines (an event's data may). */
  #toClient(message: Message): void {
    const line = message.text.includes('\n') ? JSON.stringify(message.json) : message.text;
    this.#stdout.write(`${line}\n`);
  }

  /** A message that could not be delivered: a request is answered with an error, anything else is logged. */
  #fail(message: Message, error: unknown): void {
    if (this.#closing) return;
    if (message.kind === 'request') {
      this.#inFlight.delete(message.id);
      this.#report(error);
      this.#answerWithError(message.id, asBridgeFailure(error, this.#url));
      return;
    }
    const what = message.kind === 'notification' ? `notification ${quoteUntrusted(message.method, 100)}` : 'response';
    this.#log(`could not forward a ${what}: ${asBridgeFailure(error, this.#url).message}`);
  }

  #answerWithError(id: RequestId, failure: BridgeFailure): void {
    const json = {
      jsonrpc: '2.0',
      id,
      error: { code: BRIDGE_ERROR_CODE, message: `tether: ${failure.message}`, data: failure.data },
    };
    this.#toClient({ kind: 'response', id, json, text: JSON.stringify(json) });
  }

  /** Logs a failure; a `404` is left to the renewal's own line. */
  #report(error: unknown): void {
    if (!isSessionExpiry(error)) this.#log(asBridgeFailure(error, this.#url).message);
  }

  /**
   * One request to the local endpoint in `session`, resolved with the
   * response once its status is a success. tether's `502`/`503` and any
   * other status become a {@link BridgeFailure} with their explanation, and a
   * `404` for the session the sign that it ended.
   */
  async #http(
    session: Session,
    method: 'GET' | 'POST' | 'DELETE',
    body?: string,
    lastEventId?: string,
  ): Promise<http.IncomingMessage> {
    const headers: http.OutgoingHttpHeaders = {};
    if (method === 'POST') {
      headers['content-type'] = 'application/json';
      headers['accept'] = 'application/json, text/event-stream';
    } else if (method === 'GET') {
      headers['accept'] = 'text/event-stream';
    }
    const sessionId = session.id;
    if (sessionId !== undefined) headers['mcp-session-id'] = sessionId;
    if (session.protocolVersion !== undefined) headers['mcp-protocol-version'] = session.protocolVersion;
    if (lastEventId !== undefined) headers['last-event-id'] = lastEventId;
    const response = await new Promise<http.IncomingMessage>((resolve, reject) => {
      const request = http.request(this.#url, { method, headers, agent: this.#agent });
      session.requests.add(request);
      request.on('close', () => session.requests.delete(request));
      request.on('response', resolve);
      request.on('error', reject);
      request.end(body);
    });
    const newId = response.headers['mcp-session-id'];
    if (typeof newId === 'string' && newId !== '') session.id = newId;
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return response;
    if (status === 404 && sessionId !== undefined) {
      response.resume();
      throw new BridgeFailure({ code: 'ERR_SESSION_LOST', status }, 'the MCP session ended (HTTP 404)');
    }
    throw await httpFailure(response, this.#clock.now());
  }

  /** Waits `ms` unless the session is retired first (then it never resolves, and whoever waited is done). */
  #sleep(session: Session, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = this.#clock.setTimeout(() => {
        session.timers.delete(timer);
        resolve();
      }, ms);
      session.timers.add(timer);
    });
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
    this.#agent.destroy();
  }
}

/** The wait before reopening an event stream after `failures` failed attempts in a row ({@link RECONNECT}). */
function reconnectDelay(failures: number, serverRetryMs: number | undefined): number {
  const backoff = Math.min(RECONNECT.firstMs * RECONNECT.growth ** failures, RECONNECT.maxMs);
  if (serverRetryMs === undefined) return backoff;
  // The server's retry after a stream that ended; never less than the backoff after failures.
  return failures === 0 ? serverRetryMs : Math.max(serverRetryMs, backoff);
}

function isSessionExpiry(error: unknown): boolean {
  return error instanceof BridgeFailure && error.data.code === 'ERR_SESSION_LOST' && error.data.status === 404;
}

/** Describes any failure for the client; values from the network are quoted. */
function asBridgeFailure(error: unknown, url: URL): BridgeFailure {
  if (error instanceof BridgeFailure) return error;
  const systemCode =
    typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string'
      ? error.code
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
 * An answer that is not a success, as a failure: tether's own — `503`
 * without a usable token, `502` without the remote server — say in their JSON
 * `message` what to do, and `Retry-After` when tether tries again; any other
 * is described by its status and the start of its body.
 */
async function httpFailure(response: http.IncomingMessage, nowMs: number): Promise<BridgeFailure> {
  const status = response.statusCode ?? 0;
  const text = await boundedText(response, BODY_LIMIT_BYTES);
  const body = jsonObject(text);
  const reason = typeof body?.['error'] === 'string' ? body['error'] : undefined;
  const explanation = typeof body?.['message'] === 'string' ? body['message'] : text.trim();
  const retryAfter = response.headers['retry-after'];
  const retryAfterMs = parseRetryAfter(retryAfter, nowMs);
  const retryAfterSeconds = retryAfterMs === undefined ? undefined : Math.ceil(retryAfterMs / 1000);
  const data: BridgeErrorData = {
    code: status === 503 ? 'ERR_UPSTREAM_UNAVAILABLE' : 'ERR_UPSTREAM',
    status,
    ...(reason !== undefined && { reason: reason.slice(0, 100) }),
    ...(retryAfterSeconds !== undefined && { retryAfterSeconds }),
  };
  let message = `the local proxy answered ${status}`;
  if (reason !== undefined) message += ` ${quoteUntrusted(reason, 100)}`;
  if (explanation !== '') message += `: ${quoteUntrusted(explanation, 500)}`;
  if (retryAfterSeconds !== undefined) message += ` (Retry-After: ${retryAfterSeconds} s)`;
  return new BridgeFailure(data, message);
}

/** Up to `limit` bytes of a body, as text; the rest is not read. */
async function boundedText(response: http.IncomingMessage, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of response as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.byteLength;
      if (size >= limit) break;
    }
  } catch {
    // What arrived is explanation enough.
  }
  return Buffer.concat(chunks).subarray(0, limit).toString('utf8');
}

function jsonObject(text: string): JsonObject | undefined {
  try {
    const value: unknown = JSON.parse(text);
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : undefined;
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
