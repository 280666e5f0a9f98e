/**
 * Upper bound on any wait taken from `Retry-After`: a misconfigured or hostile
 * server must not be able to park the keeper for days (DESIGN §3.2 rule 8).
 */
export const RETRY_AFTER_CAP_MS = 3_600_000;

// No valid value comes close (an IMF-fixdate is 29 characters); refusing long
// input up front keeps the work per header bounded whatever the server sends.
const MAX_VALUE_LENGTH = 100;

const DELTA_SECONDS = /^\d+$/;

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = `(?<month>${MONTHS.join('|')})`;
const TIME = '(?<hour>\\d{2}):(?<minute>\\d{2}):(?<second>\\d{2})';

// The three HTTP-date forms of RFC 9110 §5.6.7, matched by hand rather than
// with `Date.parse`: that one accepts "1.5" or "-5" as dates and reads the
// asctime form in the local time zone. HTTP-date is case-sensitive.
const IMF_FIXDATE = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (?<day>\\d{2}) ${MONTH} (?<year>\\d{4}) ${TIME} GMT$`,
);
const RFC850_DATE = new RegExp(
  `^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (?<day>\\d{2})-${MONTH}-(?<year>\\d{2}) ${TIME} GMT$`,
);
const ASCTIME_DATE = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ${MONTH} (?<day>\\d{2}| \\d) ${TIME} (?<year>\\d{4})$`,
);

/**
 * Reads a `Retry-After` field value as a wait in milliseconds from `nowMs`.
 *
 * Accepts delta-seconds (digits only) and all three HTTP-date forms
 * (IMF-fixdate, RFC 850, asctime), with optional surrounding whitespace.
 * A date in the past gives 0; any wait is capped at
 * {@link RETRY_AFTER_CAP_MS}. Anything else — empty, negative, fractional,
 * trailing junk, an impossible date, over 100 characters — gives `undefined`,
 * so that a garbled header never delays a retry. Pure; never throws.
 *
 * The day-of-week is not checked against the date: it carries no information
 * the date does not, and a wrong one is no reason to ignore the server's wish.
 *
 * @param value - the raw field value, or `undefined` when the header is absent
 * @param nowMs - current wall-clock time, ms since the Unix epoch
 * @returns the wait in ms, in `[0, RETRY_AFTER_CAP_MS]`, or `undefined`
 * @see RFC 9110 §10.2.3 (Retry-After)
 * @see RFC 9110 §5.6.7 (Date/Time Formats)
 */
export function parseRetryAfter(value: string | undefined, nowMs: number): number | undefined {
  if (value === undefined || value.length > MAX_VALUE_LENGTH) return undefined;
  const text = value.trim();
  if (DELTA_SECONDS.test(text)) {
    return Math.min(Number(text) * 1000, RETRY_AFTER_CAP_MS);
  }
  const dateMs = parseHttpDate(text, nowMs);
  if (dateMs === undefined) return undefined;
  return Math.min(Math.max(dateMs - nowMs, 0), RETRY_AFTER_CAP_MS);
}

/** An HTTP-date as ms since the epoch, or `undefined` if it is not one. */
function parseHttpDate(text: string, nowMs: number): number | undefined {
  const fullYear = IMF_FIXDATE.exec(text)?.groups ?? ASCTIME_DATE.exec(text)?.groups;
  if (fullYear !== undefined) return toEpochMs(fullYear, Number(fullYear.year));
  const rfc850 = RFC850_DATE.exec(text)?.groups;
  if (rfc850 === undefined) return undefined;
  return toEpochMs(rfc850, expandTwoDigitYear(Number(rfc850.year), nowMs));
}

/**
 * RFC 9110 §5.6.7: a two-digit year that would be more than 50 years in the
 * future means the most recent past year with the same last two digits.
 */
function expandTwoDigitYear(twoDigits: number, nowMs: number): number {
  const thisYear = new Date(nowMs).getUTCFullYear();
  const year = thisYear - (thisYear % 100) + twoDigits;
  return year > thisYear + 50 ? year - 100 : year;
}

function toEpochMs(parts: Record<string, string | undefined>, year: number): number | undefined {
  const month = MONTHS.indexOf(parts.month ?? '');
  const day = Number(parts.day);
  const hour = Number(parts.hour);
  const minute = Number(parts.minute);
  const second = Number(parts.second);
  // 60 admits a leap second, as the grammar does (RFC 9110 §5.6.7).
  if (hour > 23 || minute > 59 || second > 60) return undefined;
  // Date.UTC rolls "31 Feb" over into March; such a date is not a date.
  const midnight = new Date(Date.UTC(year, month, day));
  if (midnight.getUTCMonth() !== month || midnight.getUTCDate() !== day) return undefined;
  return midnight.getTime() + ((hour * 60 + minute) * 60 + second) * 1000;
}
