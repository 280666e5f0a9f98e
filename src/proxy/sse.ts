/**
 * The legacy SSE transport's `endpoint` event, made to point at the proxy.
 *
 * @see MCP specification 2024-11-05, Transports, "HTTP with SSE"
 */
import { Transform, type TransformCallback } from 'node:stream';

/** How much of a stream's start may be held back while looking for the first event. */
export const ENDPOINT_SCAN_LIMIT_BYTES = 64 * 1024;

// A blank line ends an event; a line ends in CRLF, LF or CR (WHATWG HTML §9.2.6).
const EVENT_END = /(?:\r\n|\r(?!\n)|\n)(?:\r\n|\r|\n)/;
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
 * is passed on as it is.
 */
export function endpointRewriter(localize: (url: string) => string): Transform {
  let pending = Buffer.alloc(0);
  let scanning = true;
  return new Transform({
    transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) {
      if (!scanning) {
        callback(null, chunk);
        return;
      }
      pending = Buffer.concat([pending, chunk]);
      while (scanning) {
        // latin1 maps bytes to characters one to one: the match's index is a byte offset.
        const end = EVENT_END.exec(pending.toString('latin1'));
        if (end === null) break;
        const cut = end.index + end[0].length;
        const event = rewriteEvent(pending.subarray(0, cut), localize);
        this.push(event.bytes);
        scanning = !event.dispatched;
        pending = pending.subarray(cut);
      }
      if (!scanning || pending.length > ENDPOINT_SCAN_LIMIT_BYTES) {
        scanning = false;
        if (pending.length > 0) this.push(pending);
        pending = Buffer.alloc(0);
      }
      callback();
    },
    flush(callback: TransformCallback) {
      callback(null, pending.length > 0 ? pending : undefined);
    },
  });
}

/** One whole event: an `endpoint` event's data localized; whether a client dispatches it (it has data). */
function rewriteEvent(
  bytes: Buffer,
  localize: (url: string) => string,
): { readonly bytes: Buffer; readonly dispatched: boolean } {
  const text = bytes.toString('utf8');
  const { type, hasData } = describeEvent(text);
  if (type !== 'endpoint' || !hasData) return { bytes, dispatched: hasData };
  const rewritten = text.replace(DATA_LINE, (_line, space: string, url: string) => `data:${space}${localize(url)}`);
  return { bytes: Buffer.from(rewritten), dispatched: true };
}

/** An event's type and whether it has data (only then is it dispatched). */
function describeEvent(event: string): { readonly type: string; readonly hasData: boolean } {
  let type = 'message';
  let hasData = false;
  for (const line of event.split(LINE_END)) {
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    if (field === 'data') hasData = true;
    if (field === 'event') type = line.slice(colon + 1).replace(/^ /, '');
  }
  return { type, hasData };
}
