/**
 * Reading `text/event-stream` (server-sent events) incrementally, for the
 * stdio bridge: text in as it arrives, whole events out.
 *
 * @see https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 */

/** One event: what the fields between two blank lines said. */
export interface ServerSentEvent {
  /** The `event` field; `message` when there was none. */
  readonly type: string;
  /** The `data` fields joined with `\n`; empty for an event without data (a priming event, say). */
  readonly data: string;
  /** The `id` field, when the event had one. */
  readonly id?: string;
  /** The `retry` field in ms, when the event had a valid one. */
  readonly retry?: number;
}

/**
 * An incremental parser: {@link EventStreamParser.push} takes the next piece
 * of text (split anywhere, even between a CR and its LF) and returns the
 * events it completed. Lines end in CRLF, LF or CR; a leading BOM, comments
 * and unknown fields are ignored; an event still open when the stream ends
 * is never returned, as the standard says.
 */
export class EventStreamParser {
  /** The text after the last line end. */
  #pending = '';
  #started = false;
  /** The last piece ended in CR: a LF at the start of the next one belongs to it. */
  #skipLf = false;
  /** The event being collected; `undefined` while no field of it has been seen. */
  #event: { type: string; data: string[]; id?: string; retry?: number } | undefined;

  push(piece: string): ServerSentEvent[] {
    let text = this.#skipLf && piece.startsWith('\n') ? piece.slice(1) : piece;
    if (text === '') return [];
    this.#skipLf = false;
    if (!this.#started) {
      this.#started = true;
      if (text.startsWith('\uFEFF')) text = text.slice(1);
    }
    const events: ServerSentEvent[] = [];
    const scanned = this.#pending.length; // holds no line end: only the new text needs scanning
    text = this.#pending + text;
    const lineEnd = /\r\n|\r|\n/g;
    lineEnd.lastIndex = scanned;
    let start = 0;
    for (let end = lineEnd.exec(text); end !== null; end = lineEnd.exec(text)) {
      this.#line(text.slice(start, end.index), events);
      start = end.index + end[0].length;
      if (end[0] === '\r' && start === text.length) this.#skipLf = true;
    }
    this.#pending = text.slice(start);
    return events;
  }

  #line(line: string, events: ServerSentEvent[]): void {
    if (line === '') {
      const event = this.#event;
      this.#event = undefined;
      if (event !== undefined) {
        events.push({
          type: event.type === '' ? 'message' : event.type,
          data: event.data.join('\n'),
          ...(event.id !== undefined && { id: event.id }),
          ...(event.retry !== undefined && { retry: event.retry }),
        });
      }
      return;
    }
    const colon = line.indexOf(':');
    if (colon === 0) return; // a comment
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field !== 'event' && field !== 'data' && field !== 'id' && field !== 'retry') return;
    const event = (this.#event ??= { type: '', data: [] });
    if (field === 'event') event.type = value;
    else if (field === 'data') event.data.push(value);
    else if (field === 'id' && !value.includes('\0')) event.id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) event.retry = Number(value);
  }
}
