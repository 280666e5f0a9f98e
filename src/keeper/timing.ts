/**
 * Where a token's life is cut (DESIGN §3.1): when to refresh it early, and
 * when to stop sending it. All times are wall-clock milliseconds.
 */

/** Fraction of the lifetime after which a token is refreshed early. */
export const EARLY_REFRESH_FRACTION = 0.75;
/**
 * Total width of the random spread around the early-refresh point, as a
 * fraction of the lifetime: 65%–85%, so that keepers whose tokens were issued
 * together refresh over a fifth of the lifetime (12 minutes for 1-hour
 * tokens). The latest point, 85%, stays clear of the expired-for-sending
 * point (90% at the earliest), so a failed early refresh always has a valid
 * token to serve while it retries (§3.2 point 4).
 */
export const EARLY_REFRESH_SPREAD = 0.2;
/** A token stops being sent `min(60 s, 10% of its lifetime)` before its real expiry. */
export const SEND_MARGIN_MAX_MS = 60_000;
export const SEND_MARGIN_FRACTION = 0.1;

/** The two points in a token's life that the keeper acts on. */
export interface TokenTimes {
  /** When to start the early refresh (75% of the lifetime, spread ±10%). */
  readonly refreshAt: number;
  /** From this moment on the token counts as expired and is not sent. */
  readonly sendExpiresAt: number;
}

/**
 * Computes the early-refresh and expired-for-sending points of a token issued
 * at `issuedAt` (when its request was sent) that expires at `expiresAt`.
 * A token without an expiry is never refreshed and never expires for sending.
 *
 * @param random a number in [0, 1) that places the refresh point within its spread,
 *   so that many workloads issued together do not refresh together.
 */
export function tokenTimes(issuedAt: number, expiresAt: number | undefined, random: number): TokenTimes {
  if (expiresAt === undefined) return { refreshAt: Infinity, sendExpiresAt: Infinity };
  const lifetime = Math.max(0, expiresAt - issuedAt);
  const sendExpiresAt = expiresAt - Math.min(SEND_MARGIN_MAX_MS, SEND_MARGIN_FRACTION * lifetime);
  const fraction = EARLY_REFRESH_FRACTION + EARLY_REFRESH_SPREAD * (random - 0.5);
  return { refreshAt: Math.min(issuedAt + fraction * lifetime, sendExpiresAt), sendExpiresAt };
}

/** How long before the expired-for-sending point the last attempt with a valid token is placed (§3.2 point 4). */
export function preExpiryLead(issuedAt: number, sendExpiresAt: number): number {
  return Math.min(5_000, (sendExpiresAt - issuedAt) / 10);
}
