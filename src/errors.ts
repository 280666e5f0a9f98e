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
