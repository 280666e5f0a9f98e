/**
 * The project's one error class: a stable `code` for programs and tests, a
 * message for people. Messages never contain secrets; values that came from
 * the network are JSON-encoded before they enter one.
 */
export class TetherError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TetherError';
    this.code = code;
  }
}

// JSON.stringify escapes C0 controls but leaves these raw: DEL and C1 controls
// (U+009B starts a terminal escape sequence), line/paragraph separators, and
// bidi marks and overrides that can make a log line read differently.
const UNESCAPED_BY_JSON = /[\u007f-\u009f\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

/**
 * A value from outside (the network, the environment) made safe for a message
 * or a log line: cut to `max` characters and JSON-encoded, with the characters
 * JSON leaves raw escaped too — the result is still valid JSON.
 */
export function quoteUntrusted(value: string, max: number): string {
  const short = value.length > max ? `${value.slice(0, max)}…` : value;
  return JSON.stringify(short).replace(
    UNESCAPED_BY_JSON,
    (ch) => `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}
