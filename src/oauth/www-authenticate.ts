/** One challenge of a `WWW-Authenticate` header. */
export interface AuthChallenge {
  /** The auth scheme, lower-case (`bearer`, `basic`, …). */
  readonly scheme: string;
  /** Parameters by lower-case name; quoted values unescaped. The first occurrence of a name wins. */
  readonly params: Readonly<Record<string, string>>;
  /** A token68 credential instead of parameters (`Negotiate abc==`). */
  readonly token68?: string;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
// A token68 counts only when it stands alone, up to a comma or the end.
const TOKEN68 = /[A-Za-z0-9\-._~+/]+=*(?=[ \t]*(?:,|$))/y;

/**
 * Parses a `WWW-Authenticate` header value into its challenges, tolerating
 * what servers actually send: several challenges in one header (and header
 * lines joined with commas), quoted strings with backslash escapes and commas
 * inside, a bare scheme with no parameters, unquoted values, stray commas and
 * whitespace. Garbage is skipped up to the next comma; an unterminated quoted
 * string runs to the end. Pure; never throws; linear in the input.
 *
 * @see RFC 9110 §11.6.1 (WWW-Authenticate), §11.2 (auth-param, token68), §5.6.4 (quoted-string)
 * @see RFC 6750 §3 (the Bearer challenge)
 */
export function parseWwwAuthenticate(header: string): AuthChallenge[] {
  const challenges: AuthChallenge[] = [];
  const scanner = new Scanner(header);
  for (;;) {
    scanner.skip(/[\s,]/);
    if (scanner.atEnd()) return challenges;
    const scheme = scanner.token();
    const next = scanner.peek();
    if (scheme === '' || (next !== undefined && !/[\s,]/.test(next))) {
      // Not a scheme (`=value`, `@@@`, `Bearer="x"`): skip to the next element.
      scanner.skipPast(',');
      continue;
    }
    const params: Record<string, string> = Object.create(null) as Record<string, string>;
    let token68: string | undefined;
    if (scanner.skip(/[ \t]/) > 0) {
      token68 = scanner.token68();
      if (token68 === undefined) parseParams(scanner, params);
    }
    challenges.push({ scheme: scheme.toLowerCase(), params, ...(token68 !== undefined && { token68 }) });
  }
}

/**
 * The parameters of the first `Bearer` challenge (`resource_metadata`,
 * `scope`, `error`, …), or `undefined` when there is none. A bare `Bearer`
 * gives an empty record.
 *
 * @see RFC 9728 §5.1 (`resource_metadata`), RFC 6750 §3
 */
export function bearerChallenge(challenges: readonly AuthChallenge[]): Readonly<Record<string, string>> | undefined {
  return challenges.find((challenge) => challenge.scheme === 'bearer')?.params;
}

/** Reads `name = value` pairs until something that is not one: the next challenge's scheme, or the end. */
function parseParams(scanner: Scanner, params: Record<string, string>): void {
  for (;;) {
    scanner.skip(/[\s,]/);
    if (scanner.atEnd()) return;
    const start = scanner.pos;
    const name = scanner.token();
    if (name === '') {
      scanner.skipPast(',');
      continue;
    }
    scanner.skip(/[ \t]/);
    if (!scanner.eat('=')) {
      // A token alone starts the next challenge.
      scanner.pos = start;
      return;
    }
    scanner.skip(/[ \t]/);
    const value = scanner.peek() === '"' ? scanner.quoted() : scanner.until(/[\s,]/);
    const key = name.toLowerCase();
    if (!(key in params)) params[key] = value;
    scanner.skip(/[ \t]/);
    if (!scanner.atEnd() && scanner.peek() !== ',') scanner.skipPast(',');
  }
}

class Scanner {
  pos = 0;

  constructor(readonly text: string) {}

  // A method, not a getter: TypeScript would keep a getter's value narrowed across calls that move `pos`.
  atEnd(): boolean {
    return this.pos >= this.text.length;
  }

  peek(): string | undefined {
    return this.text[this.pos];
  }

  eat(ch: string): boolean {
    if (this.text[this.pos] !== ch) return false;
    this.pos++;
    return true;
  }

  /** Skips characters matching `re`; returns how many. */
  skip(re: RegExp): number {
    const start = this.pos;
    while (!this.atEnd() && re.test(this.text[this.pos] as string)) this.pos++;
    return this.pos - start;
  }

  skipPast(ch: string): void {
    const at = this.text.indexOf(ch, this.pos);
    this.pos = at === -1 ? this.text.length : at + 1;
  }

  token(): string {
    const start = this.pos;
    this.skip(TCHAR);
    return this.text.slice(start, this.pos);
  }

  until(re: RegExp): string {
    const start = this.pos;
    while (!this.atEnd() && !re.test(this.text[this.pos] as string)) this.pos++;
    return this.text.slice(start, this.pos);
  }

  /** A token68 standing alone (followed by the end or a comma); otherwise nothing is consumed. */
  token68(): string | undefined {
    TOKEN68.lastIndex = this.pos;
    const match = TOKEN68.exec(this.text);
    if (match === null) return undefined;
    const start = this.pos;
    this.pos += match[0].length;
    // `realm=, scope="s"` is a parameter with an empty value, not a token68:
    // what follows the comma is another parameter, not another challenge.
    if (match[0].endsWith('=') && this.#paramFollows()) {
      this.pos = start;
      return undefined;
    }
    return match[0];
  }

  #paramFollows(): boolean {
    const start = this.pos;
    this.skip(/[\s,]/);
    const name = this.token();
    this.skip(/[ \t]/);
    const param = name !== '' && this.peek() === '=';
    this.pos = start;
    return param;
  }

  /** A quoted string at the current position (the opening quote included), unescaped. */
  quoted(): string {
    this.pos++;
    let value = '';
    while (!this.atEnd()) {
      const ch = this.text[this.pos++] as string;
      if (ch === '"') return value;
      if (ch !== '\\') value += ch;
      else if (!this.atEnd()) value += this.text[this.pos++] as string;
    }
    return value;
  }
}
