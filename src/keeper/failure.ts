/**
 * What happened to a token request that did not yield a token set — everything
 * the classifier needs, nothing secret. Produced by the injected refresh
 * function (the oauth component), consumed by {@link classifyFailure}.
 */
export type RefreshFailure =
  | {
      /** No HTTP response: DNS, connect, reset, timeout, TLS. */
      readonly kind: 'network';
      /** Node/undici error code (`ECONNREFUSED`, `UND_ERR_CONNECT_TIMEOUT`, `CERT_HAS_EXPIRED`, …). */
      readonly code?: string;
      /** The error's message, for reports (never contains secrets). */
      readonly message?: string;
    }
  | {
      /** An HTTP response that was not a valid token response. */
      readonly kind: 'http';
      readonly status: number;
      /** Response headers, names lower-case. */
      readonly headers: Readonly<Record<string, string>>;
      /** Up to 2 KB of the response body. */
      readonly body: string;
    };

/** Why a refresh failed, as a stable code (see DESIGN §3.3). */
export type FailureReason =
  | 'network' // no response: DNS, refused, reset, unreachable, timeout, hang-up
  | 'tls' // certificate or handshake failure
  | 'server_error_status' // 5xx
  | 'rate_limited' // 429
  | 'request_timeout' // 408
  | 'no_oauth_error' // 4xx without an RFC 6749 `error` (WAF/CDN/proxy page)
  | 'invalid_token_response' // 2xx that is not a valid token response
  | 'oauth_transient' // 4xx with `error` = server_error | temporarily_unavailable
  | 'oauth_error' // 4xx with any other RFC 6749 `error`: the server's verdict
  | 'unexpected_status' // 1xx/3xx or anything else that gave no verdict
  // The keeper's own, never the classifier's:
  | 'attempt_timeout' // no outcome within the attempt's deadline (lock, endpoint or store hung)
  | 'store_unavailable'; // the store could not be re-read, so nothing was sent

/** The classifier's verdict on a failed refresh. */
export interface Classification {
  readonly class: 'transient' | 'permanent';
  readonly reason: FailureReason;
  /** Short human-readable detail: an error code, a status, an OAuth `error` (JSON-encoded if from the network). */
  readonly detail: string;
  /** The RFC 6749 `error` code, when the server gave one. */
  readonly oauthError?: string;
  /** Lower bound for the next attempt from `Retry-After`, in ms (capped at 1 h). */
  readonly retryAfterMs?: number;
}
