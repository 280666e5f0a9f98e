import { quoteUntrusted, TetherError } from '../errors.js';

/** Nanoseconds per unit, exactly Go's `time` units (both spellings of micro: U+00B5 and U+03BC). */
const UNIT_NS: ReadonlyMap<string, bigint> = new Map([
  ['ns', 1n],
  ['us', 1_000n],
  ['\u00b5s', 1_000n],
  ['\u03bcs', 1_000n],
  ['ms', 1_000_000n],
  ['s', 1_000_000_000n],
  ['m', 60_000_000_000n],
  ['h', 3_600_000_000_000n],
]);

const NS_PER_MS = 1_000_000n;

/** Go's `time.Duration` is an int64 of nanoseconds (~292 years); anything Go rejects is rejected here too. */
const MAX_NS = 2n ** 63n - 1n;

/** Values in messages are JSON-encoded (no control characters or fake log lines) and kept short. */
const MAX_QUOTED = 40;

/** A configured value as it may appear in an error message. */
export function quote(text: string): string {
  return quoteUntrusted(text, MAX_QUOTED);
}

/**
 * Parses a Go-style duration (`500ms`, `10s`, `1m30s`, `1.5h`, `1h2m3.5s`) into
 * milliseconds, accepting exactly what Go's `time.ParseDuration` accepts —
 * units `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, decimals, concatenated
 * components, a leading `+`, and `0` without a unit — so settings carry over
 * from ToolHive unchanged. Two deliberate differences:
 *
 * - Negative durations (any leading `-`, even `-0`) are rejected: no timing
 *   here has a meaning below zero.
 * - The result is rounded **up** to a whole millisecond, so a non-zero
 *   duration never becomes `0` (for the ceiling, `0` means "never give up",
 *   and `1ns` must not turn into that).
 *
 * No trimming: like Go, `" 5s"` is invalid (the JSON-encoded value in the
 * message makes a stray space visible).
 *
 * @throws {TetherError} `ERR_CONFIG_DURATION`; the message starts with the
 *   JSON-encoded input, then says what is wrong.
 * @see https://pkg.go.dev/time#ParseDuration
 */
export function parseDuration(text: string): number {
  const fail = (why: string): never => {
    throw new TetherError('ERR_CONFIG_DURATION', `${quote(text)} is not a valid duration (${why})`);
  };
  let rest = text;
  if (rest.startsWith('-')) fail('negative durations are not allowed');
  if (rest.startsWith('+')) rest = rest.slice(1);
  if (rest === '0') return 0;
  if (rest === '') fail('expected a number followed by a unit, e.g. 10s');

  // One component: digits, optional fraction, then the unit — everything up to
  // the next digit or dot, as Go reads it. Nothing is mandatory, so it always
  // matches; an empty number is caught below, which also ends the loop.
  const component = /(\d*)(?:\.(\d*))?([^\d.]*)/y;
  let totalNs = 0n;
  while (component.lastIndex < rest.length) {
    const at = component.lastIndex;
    const [, whole = '', fraction = '', unit = ''] = component.exec(rest) ?? [];
    if (whole === '' && fraction === '') fail(`expected a number at ${quote(rest.slice(at))}`);
    if (unit === '')
      fail(`missing unit after ${quote(rest.slice(at, component.lastIndex))}; use ns, us, ms, s, m or h`);
    const unitNs = UNIT_NS.get(unit) ?? fail(`unknown unit ${quote(unit)}; use ns, us, ms, s, m or h`);
    // Fractional nanoseconds are truncated, as Go does.
    totalNs += BigInt(whole || '0') * unitNs + (BigInt(fraction || '0') * unitNs) / 10n ** BigInt(fraction.length);
    if (totalNs > MAX_NS) fail('too large; the maximum is about 2562047h');
  }
  return Number((totalNs + NS_PER_MS - 1n) / NS_PER_MS);
}

/**
 * Formats milliseconds as short Go-style text that {@link parseDuration}
 * reads back to the same value: `0s`, `500ms`, `1.5s`, `1m30s`, `5m`, `1h`,
 * `24h`, `1h2m3.004s`. Unlike Go's `Duration.String()` (`1h0m0s`), zero
 * components are left out, because the text is for people (messages, docs).
 * Fractions of a millisecond are rounded to the nearest; negative values get
 * a leading `-` (readable in a message, though `parseDuration` refuses them).
 *
 * @throws {RangeError} if `ms` is not a finite number (a programming error).
 */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms))
    throw new RangeError(`formatDuration: ${String(ms)} is not a finite number of milliseconds`);
  const total = Math.round(Math.abs(ms));
  if (total === 0) return '0s';
  const sign = ms < 0 ? '-' : '';
  if (total < 1000) return `${sign}${total}ms`;
  const hours = Math.floor(total / 3_600_000);
  const minutes = Math.floor((total % 3_600_000) / 60_000);
  const seconds = Math.floor((total % 60_000) / 1000);
  const millis = total % 1000;
  let text = sign;
  if (hours > 0) text += `${hours}h`;
  if (minutes > 0) text += `${minutes}m`;
  if (millis > 0) text += `${seconds}.${String(millis).padStart(3, '0').replace(/0+$/, '')}s`;
  else if (seconds > 0) text += `${seconds}s`;
  return text;
}
