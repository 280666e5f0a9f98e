/**
 * DNS-rebinding protection for the local endpoint: a web page on an attacker's
 * name that resolves to 127.0.0.1 reaches the proxy with its own name in
 * `Host` (and in `Origin`), so both must be loopback names.
 *
 * @see MCP specification, Transports, "Security Warning" (validate `Origin`, bind to localhost)
 */

/** Why a request was refused, as the JSON `error` of the `403`. */
export type RebindingRefusal = 'forbidden_host' | 'forbidden_origin';

const LOOPBACK_NAMES = ['127.0.0.1', 'localhost', '[::1]'];

// A host name or bracketed IPv6 literal, and an optional port: nothing else (no user info, no path).
const HOST_HEADER = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::(\d{1,5}))?$/i;

/** The names `Host` and `Origin` may carry: the loopback names and the bound host (IPv6 bracketed), lower-case. */
export function allowedHostNames(boundHost: string): ReadonlySet<string> {
  const bound = boundHost.includes(':') ? `[${boundHost}]` : boundHost;
  return new Set([...LOOPBACK_NAMES, bound.toLowerCase()]);
}

/**
 * Checks a request's `Host` (an allowed name, with no port or the proxy's own)
 * and `Origin` (when present: `http(s)://` and an allowed name, any port — a
 * local web client may be served from another port).
 *
 * @returns the refusal, or `undefined` when the request may pass
 */
export function rebindingRefusal(
  headers: { readonly host?: string | undefined; readonly origin?: string | undefined },
  names: ReadonlySet<string>,
  port: number,
): RebindingRefusal | undefined {
  const host = HOST_HEADER.exec(headers.host ?? '');
  const hostOk =
    host !== null && names.has((host[1] ?? '').toLowerCase()) && (host[2] === undefined || Number(host[2]) === port);
  if (!hostOk) return 'forbidden_host';
  if (headers.origin === undefined) return undefined;
  const origin = URL.canParse(headers.origin) ? new URL(headers.origin) : undefined;
  const originOk = origin !== undefined && /^https?:$/.test(origin.protocol) && names.has(origin.hostname);
  return originOk ? undefined : 'forbidden_origin';
}
