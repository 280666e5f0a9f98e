import { quoteUntrusted } from '../errors.js';
import type { Classification, FailureReason, RefreshFailure } from './failure.js';
import { parseRetryAfter } from './retry-after.js';

// Codes Node gives a failed TLS connection: OpenSSL's X.509 verification
// results (node/src/crypto/crypto_common.cc) plus the handshake-level EPROTO.
// They are told apart from other network failures because a captive portal or
// an intercepting proxy is the usual cause, which the user may want to know.
const TLS_CODES: ReadonlySet<string> = new Set([
  'EPROTO',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_CRL',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECRYPT_CRL_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'CERT_SIGNATURE_FAILURE',
  'CRL_SIGNATURE_FAILURE',
  'CERT_NOT_YET_VALID',
  'CERT_HAS_EXPIRED',
  'CRL_NOT_YET_VALID',
  'CRL_HAS_EXPIRED',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERROR_IN_CRL_LAST_UPDATE_FIELD',
  'ERROR_IN_CRL_NEXT_UPDATE_FIELD',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_CHAIN_TOO_LONG',
  'CERT_REVOKED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
]);
// Node's own TLS errors (ERR_TLS_CERT_ALTNAME_INVALID, ERR_TLS_HANDSHAKE_TIMEOUT,
// …) and OpenSSL's SSL-layer ones (ERR_SSL_WRONG_VERSION_NUMBER, …).
const TLS_CODE_PREFIXES = ['ERR_TLS_', 'ERR_SSL_'];

// The server asks for a retry with these. RFC 6749 defines them for the
// authorization endpoint (§4.1.2.1), where a 5xx cannot be redirected; servers
// send them from the token endpoint too, and they are no verdict there either.
const TRANSIENT_OAUTH_ERRORS: ReadonlySet<string> = new Set(['server_error', 'temporarily_unavailable']);

// RFC 6749 §5.2 allows any printable ASCII in `error`, but every code in the
// IANA "OAuth Extensions Error" registry is lower-case snake_case. Only such a
// code counts as the server's verdict: a gateway's own JSON error page
// (Spring's `{"error":"Forbidden"}`, `{"error":"Access Denied"}`) is no OAuth
// verdict, and calling it permanent would recreate the bug this project fixes.
// The length limit is ours: no real code is long.
const OAUTH_ERROR_TOKEN = /^[a-z][a-z0-9_]{0,63}$/;

// A body shaped like `key=value&key=value` with no markup or whitespace: form
// encoding even when Content-Type is missing or wrong. `&` is excluded from
// values so the pattern is unambiguous and matches in linear time.
const FORM_SHAPED = /^[\w.~%+-]+=[^<>\s&]*(?:&[\w.~%+-]+=[^<>\s&]*)*$/;

// Anything a peer controls is cut to this many characters before it enters
// `detail`, which goes to logs and the status file.
const DETAIL_VALUE_MAX = 64;
// Node and undici codes look like this and are shown bare; anything else in
// the `code` slot is treated as untrusted text.
const PLAIN_CODE = /^[A-Z][A-Z0-9_]{0,63}$/;

/**
 * Decides whether a failed token refresh is worth retrying (`transient`) or is
 * the OAuth server's verdict on the credential (`permanent`).
 *
 * Only a 4xx response carrying an RFC 6749 `error` code other than
 * `server_error` / `temporarily_unavailable` is permanent — whatever its status
 * (a 403 with `invalid_grant` is still a verdict). Everything else (no
 * response, TLS failure, 5xx, 429, 408, a 4xx page from a WAF or proxy, a 2xx
 * that was not a token response) gave no verdict and is transient.
 *
 * `oauthError` is set exactly when the reason is `oauth_error` or
 * `oauth_transient`. `retryAfterMs` is set on transient HTTP outcomes whose
 * `Retry-After` parses: a server asking for a pause is honoured whatever the
 * status. `detail` holds no body content except the OAuth `error` code, and
 * every value from the peer in it is JSON-encoded and length-limited.
 *
 * Pure; never throws.
 *
 * @param failure - what the token request produced
 * @param nowMs - current wall-clock time (for `Retry-After` HTTP-dates)
 * @see DESIGN §3.3 (the classification table)
 * @see RFC 6749 §5.2 (Error Response)
 * @see RFC 9110 §15.5 (4xx), §15.6 (5xx), §15.5.9 (408)
 * @see RFC 6585 §4 (429 Too Many Requests)
 */
export function classifyFailure(failure: RefreshFailure, nowMs: number): Classification {
  if (failure.kind === 'network') {
    const { code, message } = failure;
    const reason = code !== undefined && isTlsCode(code) ? 'tls' : 'network';
    return { class: 'transient', reason, detail: networkDetail(code, message) };
  }

  const { status, headers, body } = failure;
  const httpStatus = `HTTP ${status}`;
  const transient = (reason: FailureReason, detail = httpStatus): Classification => {
    const retryAfterMs = parseRetryAfter(headers['retry-after'], nowMs);
    return { class: 'transient', reason, detail, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) };
  };

  if (!Number.isInteger(status)) return transient('unexpected_status');
  if (status >= 200 && status <= 299) return transient('invalid_token_response');
  // Checked before the body: 429 and 408 say "not now" even if a body also
  // carries an `error` code (RFC 6585 §4, RFC 9110 §15.5.9).
  if (status === 429) return transient('rate_limited');
  if (status === 408) return transient('request_timeout');
  if (status >= 500 && status <= 599) return transient('server_error_status');
  if (status < 400 || status > 499) return transient('unexpected_status');

  const oauthError = extractOAuthError(body, headers['content-type']);
  if (oauthError === undefined) return transient('no_oauth_error');
  const detail = `${httpStatus} ${quote(oauthError)}`;
  if (TRANSIENT_OAUTH_ERRORS.has(oauthError)) {
    return { ...transient('oauth_transient', detail), oauthError };
  }
  return { class: 'permanent', reason: 'oauth_error', detail, oauthError };
}

function isTlsCode(code: string): boolean {
  return TLS_CODES.has(code) || TLS_CODE_PREFIXES.some((prefix) => code.startsWith(prefix));
}

function networkDetail(code: string | undefined, message: string | undefined): string {
  if (code !== undefined) return PLAIN_CODE.test(code) ? code : quote(code);
  // A message may quote the peer (a certificate's altnames, say), so it is
  // encoded like any network-supplied value.
  if (message !== undefined) return quote(message);
  return 'network error';
}

/** JSON-encodes a peer-supplied value, cut to a short length first. */
function quote(value: string): string {
  return quoteUntrusted(value, DETAIL_VALUE_MAX);
}

/**
 * The RFC 6749 `error` code of an error response body, or `undefined` when
 * there is none. JSON is recognised by its content (a `{`), because servers
 * label it inconsistently; form encoding by Content-Type or by shape (older
 * servers answer in the encoding of the request).
 */
function extractOAuthError(body: string, contentType: string | undefined): string | undefined {
  const text = body.trim();
  let error: string | undefined;
  if (text.startsWith('{')) {
    error = jsonError(text);
  } else if (isFormContentType(contentType) || FORM_SHAPED.test(text)) {
    error = new URLSearchParams(text).get('error') ?? undefined;
  }
  return error !== undefined && OAUTH_ERROR_TOKEN.test(error) ? error : undefined;
}

function jsonError(text: string): string | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || !Object.hasOwn(value, 'error')) return undefined;
  const error: unknown = (value as { error: unknown }).error;
  return typeof error === 'string' ? error : undefined;
}

function isFormContentType(contentType: string | undefined): boolean {
  const mediaType = contentType?.split(';', 1)[0]?.trim().toLowerCase();
  return mediaType === 'application/x-www-form-urlencoded';
}
