/**
 * Which headers cross the proxy, each way. Pure functions over header
 * records as Node and undici give them (names lower-case, a repeated header
 * as an array).
 */
import { TetherError } from '../errors.js';
import { bearerChallenge, parseWwwAuthenticate } from '../oauth/www-authenticate.js';

/** Request or response headers: names lower-case, a repeated header as an array. */
export type HeaderRecord = Readonly<Record<string, string | readonly string[] | undefined>>;

/** Headers to send on: names lower-case. */
export type ForwardedHeaders = Record<string, string | string[]>;

/**
 * Meaningful for one connection only, never forwarded (with the headers the
 * `Connection` header names).
 *
 * @see RFC 9110 §7.6.1 (Connection), RFC 7230 §6.1 (the list)
 */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * Client headers that do not go upstream:
 * - `authorization`: the upstream's is always tether's own (DESIGN §6);
 * - `host`: the upstream's is the remote's, from its URL;
 * - `expect`: `100-continue` was answered by this server (and undici refuses it);
 * - `origin`, `referer`: they name a local page or port; a remote checking
 *   `Origin` against DNS rebinding (as the MCP spec asks servers to) would
 *   refuse the request, and tether, not a browser, is the remote's client;
 * - `cookie`: a browser's cookies for a loopback host are shared by every
 *   local port, so they belong to other local apps and must not leave the machine.
 */
const DROPPED_FROM_CLIENT: ReadonlySet<string> = new Set([
  'authorization',
  'host',
  'expect',
  'origin',
  'referer',
  'cookie',
]);

/**
 * Upstream headers that do not reach the client:
 * - `www-authenticate`, on every status: a client that sees a challenge may
 *   start its own authorization against the remote — the SDK's client does so
 *   on a `401`, and on a `403` with `error="insufficient_scope"` (step-up) —
 *   which cannot help, since tether replaces the client's `Authorization`;
 *   the fix is tether's (`tether login` with the wider scope). The `403`
 *   itself, and its body, pass through.
 * - `set-cookie`: it would land in the loopback cookie jar that every local
 *   port shares (see `cookie` above).
 */
const DROPPED_FROM_UPSTREAM: ReadonlySet<string> = new Set(['www-authenticate', 'set-cookie']);

/** The client's request headers to send upstream (before tether's `Authorization` and the `--header`s are added). */
export function upstreamRequestHeaders(client: HeaderRecord): ForwardedHeaders {
  return forward(client, DROPPED_FROM_CLIENT);
}

/** The upstream's response headers to send to the client. */
export function clientResponseHeaders(upstream: HeaderRecord): ForwardedHeaders {
  return forward(upstream, DROPPED_FROM_UPSTREAM);
}

/**
 * The `--header 'K: V'` extras, names lower-cased so that they replace a
 * client's header of the same name.
 *
 * @throws TetherError `ERR_INVALID_HEADER` for `Authorization` (always
 *   tether's own), `Host` or a hop-by-hop header
 */
export function extraUpstreamHeaders(headers: Readonly<Record<string, string>>): Record<string, string> {
  const extra: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    const key = name.toLowerCase();
    if (key === 'authorization' || key === 'host' || HOP_BY_HOP.has(key)) {
      throw new TetherError('ERR_INVALID_HEADER', `the header ${JSON.stringify(name)} cannot be set with --header`);
    }
    extra[key] = value;
  }
  return extra;
}

/**
 * Whether a `401`'s `WWW-Authenticate` says the token was refused, so that a
 * refresh can help: a `Bearer` challenge with `error="invalid_token"` or with
 * no `error` at all (RFC 6750 §3.1: a request that lacked a usable token).
 */
export function rejectsToken(wwwAuthenticate: string | readonly string[] | undefined): boolean {
  if (wwwAuthenticate === undefined) return false;
  const header = typeof wwwAuthenticate === 'string' ? wwwAuthenticate : wwwAuthenticate.join(', ');
  const bearer = bearerChallenge(parseWwwAuthenticate(header));
  return bearer !== undefined && (bearer.error === undefined || bearer.error === 'invalid_token');
}

function forward(headers: HeaderRecord, dropped: ReadonlySet<string>): ForwardedHeaders {
  const listed = connectionOptions(headers['connection']);
  const kept: ForwardedHeaders = {};
  for (const key of Object.keys(headers)) {
    const value = headers[key];
    // `__proto__` is no header anyone sends on purpose, and assigning it would set the copy's prototype.
    if (value === undefined || key === '__proto__' || HOP_BY_HOP.has(key) || dropped.has(key) || listed.includes(key)) {
      continue;
    }
    kept[key] = typeof value === 'string' ? value : [...value];
  }
  return kept;
}

/** The header names listed in `Connection` (RFC 9110 §7.6.1), lower-case. */
function connectionOptions(connection: string | readonly string[] | undefined): readonly string[] {
  if (connection === undefined) return [];
  const list = typeof connection === 'string' ? connection : connection.join(',');
  return list.split(',').map((name) => name.trim().toLowerCase());
}
