/**
 * The legacy SSE transport's `endpoint` event, made to point at the proxy.
 *
 * @see MCP specification 2024-11-05, Transports, "HTTP with SSE"
 */
import { Transform, type TransformCallback } from 'node:stream';

/** How much of a stream's start may be held back while looking for the first event. */
export const ENDPOINT_SCAN_LIMIT_BYTES = 64 * 1024;

const CR = 0x0d;
const LF = 0x0a;
const LINE_END = /\r\n|\r|\n/;
const DATA_LINE = /^data:( ?)(.*)$/gm;

/**
 * An event stream passed through byte for byte, except that the `data` of an
 * `event: endpoint` is replaced by `localize(data)`. A legacy server sends
 * that event first, so only the stream's first event (the first one with
 * data; comments and `retry:` before it are passed on) is looked at, and is
 * held back only until its blank line (a client cannot dispatch it earlier
 * anyway); from then on every chunk is passed on as it arrives. A stream
 * whose first event is still unfinished after {@link ENDPOINT_SCAN_LIMIT_BYTES}
 * is passed on as it is. Each byte is scanned once.
 */
export function endpointRewriter(localize: (url: string) => string): Transform {
  const boundaries = new EventBoundaries();
  /** The unfinished event's bytes from earlier chunks. */
  let held: Buffer[] = [];
  let heldBytes = 0;
  let scanning = true;
  let streamStart = true;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      if (!scanning) {
        callback(null, chunk);
        return;
      }
      let start = 0;
      while (scanning) {
        const end = boundaries.next(chunk, start);
        if (end < 0) break;
        const part = chunk.subarray(start, end);
        const event = rewriteEvent(heldBytes === 0 ? part : Buffer.concat([...held, part]), localize, streamStart);
        held = [];
        heldBytes = 0;
        streamStart = false;
        scanning = !event.dispatched;
        this.push(event.bytes);
        start = end;
      }
      const rest = chunk.subarray(start);
      held.push(rest);
      heldBytes += rest.length;
      if (!scanning || heldBytes > ENDPOINT_SCAN_LIMIT_BYTES) {
        scanning = false;
        if (heldBytes > 0) this.push(Buffer.concat(held, heldBytes));
        held = [];
        heldBytes = 0;
      }
      callback();
    },
    flush(callback: TransformCallback) {
      callback(null, heldBytes > 0 ? Buffer.concat(held, heldBytes) : undefined);
    },
  });
}

/**
 * Where events end in a stream read in chunks: just after each blank line. A
 * line ends in CRLF, LF or CR (WHATWG HTML §9.2.6); the state carries over
 * from chunk to chunk, so that every byte is looked at once.
 */
class EventBoundaries {
  /** No byte of the current line seen yet: a line end now ends an event. */
  #lineEmpty = true;
  /** The last byte was a CR: a LF now belongs to its line end. */
  #afterCr = false;

  /** The offset just after the next blank line in `chunk` at or after `from`, or -1 when there is none. */
  next(chunk: Buffer, from: number): number {
    for (let i = from; i < chunk.length; i++) {
      const byte = chunk[i];
      if (byte === LF && this.#afterCr) {
        this.#afterCr = false;
      } else if (byte === LF || byte === CR) {
        this.#afterCr = byte === CR;
        const blank = this.#lineEmpty;
        this.#lineEmpty = true;
        if (blank) return i + 1;
      } else {
        this.#afterCr = false;
        this.#lineEmpty = false;
      }
    }
    return -1;
  }
}

/**
 * One whole event: an `endpoint` event's data localized; whether a client
 * dispatches it (it has data). At the stream's start, a byte order mark is
 * kept but not read, as a client's UTF-8 decoder drops it.
 */
function rewriteEvent(
  bytes: Buffer,
  localize: (url: string) => string,
  streamStart: boolean,
): { readonly bytes: Buffer; readonly dispatched: boolean } {
  const text = bytes.toString('utf8');
  const bom = streamStart && text.startsWith('\uFEFF') ? '\uFEFF' : '';
  const fields = text.slice(bom.length);
  const { type, hasData } = describeEvent(fields);
  if (type !== 'endpoint' || !hasData) return { bytes, dispatched: hasData };
  const rewritten = fields.replace(DATA_LINE, (_line, space: string, url: string) => `data:${space}${localize(url)}`);
  return { bytes: Buffer.from(`${bom}${rewritten}`), dispatched: true };
}

/** An event's type and whether it has data (only then is it dispatched). */
function describeEvent(event: string): { readonly type: string; readonly hasData: boolean } {
  let type = 'message';
  let hasData = false;
  for (const line of event.split(LINE_END)) {
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    if (field === 'data') hasData = true;
    if (field === 'event') type = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
  }
  return { type, hasData };
}
