/**
 * Local URLs ⇄ remote URLs. Pure; the remote's origin is the only one a
 * request is ever sent to.
 */

/** The local path that stands for the remote MCP endpoint. */
export const LOCAL_MCP_PATH = '/mcp';

/**
 * Where a local request goes: `/mcp` to the remote MCP URL (its path and
 * query, the local query appended), any other path P to the remote's origin
 * + P — the legacy SSE transport posts to the path its `endpoint` event names
 * (`/messages?sessionId=…`). Only the request target's path and query count:
 * an absolute-form target (`GET http://elsewhere/ HTTP/1.1`) never picks the
 * origin.
 */
export function upstreamUrl(remote: URL, requestTarget: string): URL {
  const local = localTarget(requestTarget);
  const target = new URL(remote.href);
  target.hash = '';
  if (local.pathname !== LOCAL_MCP_PATH) {
    target.pathname = local.pathname;
    target.search = local.search;
  } else if (local.search !== '') {
    target.search = target.search === '' ? local.search : `${target.search}&${local.search.slice(1)}`;
  }
  return target;
}

/**
 * A request target read as a local path and query, whatever its form: a
 * target such as `//host/x` is the path `//host/x`, never the host `host`,
 * and a target that parses as nothing is the path `/`… never a throw (a
 * local client must not be able to crash the workload with one request).
 */
export function localTarget(requestTarget: string): URL {
  if (requestTarget.startsWith('/') && URL.canParse(`http://localhost${requestTarget}`)) {
    return new URL(`http://localhost${requestTarget}`);
  }
  const absolute = URL.canParse(requestTarget) ? new URL(requestTarget) : undefined;
  // A URL of another scheme may have a path that is no path (`a:b`, `blob:https://…`).
  const path = absolute?.pathname.startsWith('/') === true ? `${absolute.pathname}${absolute.search}` : '/';
  return new URL(`http://localhost${path}`);
}

/** The local path of a request target, without the query (see {@link localTarget}). */
export function localPath(requestTarget: string): string {
  return requestTarget === LOCAL_MCP_PATH ? LOCAL_MCP_PATH : localTarget(requestTarget).pathname;
}

/**
 * A URL the remote handed out (a legacy SSE `endpoint`, a `Location`) as the
 * client must use it: an absolute URL on the remote's origin moves to
 * `localOrigin` (same path, query and fragment), anything else — relative
 * URLs, other origins — is returned unchanged.
 */
export function localizeUrl(value: string, remote: URL, localOrigin: string): string {
  if (!URL.canParse(value)) return value;
  const url = new URL(value);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return value; // e.g. blob:, whose origin is its inner URL's
  return url.origin === remote.origin ? `${localOrigin}${url.pathname}${url.search}${url.hash}` : value;
}
