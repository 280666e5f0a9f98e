import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseRetryAfter, RETRY_AFTER_CAP_MS } from '../src/keeper/retry-after.js';

// Sun, 05 Jan 2025 12:00:00 GMT — a single-digit day, to exercise asctime's " 5".
const NOW = Date.UTC(2025, 0, 5, 12, 0, 0);
const HOUR = 3_600_000;

describe('parseRetryAfter', () => {
  it.each<[string, string | undefined, number | undefined]>([
    // absent
    ['header absent', undefined, undefined],
    // delta-seconds
    ['zero', '0', 0],
    ['two minutes', '120', 120_000],
    ['leading zeros', '007', 7_000],
    ['exactly the cap', '3600', HOUR],
    ['one second over the cap', '3601', RETRY_AFTER_CAP_MS],
    ['a day', '86400', RETRY_AFTER_CAP_MS],
    ['more digits than a double holds exactly', '9'.repeat(40), RETRY_AFTER_CAP_MS],
    // whitespace
    ['surrounding spaces', '  30  ', 30_000],
    ['surrounding tabs', '\t5\t', 5_000],
    ['whitespace around a date', ' Sun, 05 Jan 2025 12:00:10 GMT ', 10_000],
    // IMF-fixdate
    ['IMF-fixdate two minutes ahead', 'Sun, 05 Jan 2025 12:02:00 GMT', 120_000],
    ['IMF-fixdate now', 'Sun, 05 Jan 2025 12:00:00 GMT', 0],
    ['IMF-fixdate an hour ago', 'Sun, 05 Jan 2025 11:00:00 GMT', 0],
    ['IMF-fixdate in 1994', 'Sun, 06 Nov 1994 08:49:37 GMT', 0],
    ['IMF-fixdate next day (capped)', 'Mon, 06 Jan 2025 12:00:00 GMT', RETRY_AFTER_CAP_MS],
    ['IMF-fixdate exactly an hour ahead', 'Sun, 05 Jan 2025 13:00:00 GMT', HOUR],
    ['IMF-fixdate with a wrong weekday', 'Mon, 05 Jan 2025 12:01:00 GMT', 60_000],
    ['IMF-fixdate leap second', 'Sun, 05 Jan 2025 12:00:60 GMT', 60_000],
    ['IMF-fixdate across a year end', 'Wed, 31 Dec 2025 23:59:59 GMT', RETRY_AFTER_CAP_MS],
    // RFC 850 (obsolete)
    ['RFC 850 one minute ahead', 'Sunday, 05-Jan-25 12:01:00 GMT', 60_000],
    ['RFC 850 in 1994', 'Sunday, 06-Nov-94 08:49:37 GMT', 0],
    ['RFC 850 year 74 is 2074 (< 50 years ahead)', 'Sunday, 05-Jan-74 12:00:00 GMT', RETRY_AFTER_CAP_MS],
    ['RFC 850 year 76 is 1976 (> 50 years ahead)', 'Monday, 05-Jan-76 12:00:00 GMT', 0],
    // asctime (obsolete)
    ['asctime with a space-padded day', 'Sun Jan  5 12:00:45 2025', 45_000],
    ['asctime with a two-digit day', 'Fri Jan 10 12:00:00 2025', RETRY_AFTER_CAP_MS],
    ['asctime in 1994', 'Sun Nov  6 08:49:37 1994', 0],
  ])('%s: %j → %j', (_name, value, expected) => {
    expect(parseRetryAfter(value, NOW)).toBe(expected);
  });

  it.each<[string, string]>([
    ['empty', ''],
    ['only whitespace', '   '],
    ['a word', 'soon'],
    ['negative', '-5'],
    ['explicit plus', '+5'],
    ['fractional', '1.5'],
    ['trailing junk', '10abc'],
    ['two numbers', '5 5'],
    ['exponent', '1e3'],
    ['hex', '0x10'],
    ['Infinity', 'Infinity'],
    ['a unit', '30s'],
    ['ISO 8601', '2025-01-05T12:01:00Z'],
    ['lower-case date (HTTP-date is case-sensitive)', 'sun, 05 jan 2025 12:01:00 gmt'],
    ['UTC instead of GMT', 'Sun, 05 Jan 2025 12:01:00 UTC'],
    ['a numeric zone', 'Sun, 05 Jan 2025 12:01:00 +0000'],
    ['no weekday', '05 Jan 2025 12:01:00 GMT'],
    ['single-digit day in IMF-fixdate', 'Sun, 5 Jan 2025 12:01:00 GMT'],
    ['date with trailing junk', 'Sun, 05 Jan 2025 12:01:00 GMT x'],
    ['31 February', 'Fri, 31 Feb 2025 12:00:00 GMT'],
    ['day zero', 'Sun, 00 Jan 2025 12:00:00 GMT'],
    ['hour 24', 'Sun, 05 Jan 2025 24:00:00 GMT'],
    ['minute 60', 'Sun, 05 Jan 2025 12:60:00 GMT'],
    ['second 61', 'Sun, 05 Jan 2025 12:00:61 GMT'],
    ['unknown month', 'Sun, 05 Foo 2025 12:00:00 GMT'],
    ['RFC 850 with a four-digit year', 'Sunday, 05-Jan-2025 12:01:00 GMT'],
    ['asctime with GMT', 'Sun Jan  5 12:00:45 2025 GMT'],
    ['a newline inside', '5\n5'],
    ['101 characters of digits', '1'.repeat(101)],
    ['a long run of spaces before a number', `${' '.repeat(200)}5`],
    ['a megabyte of junk', 'a'.repeat(1_000_000)],
  ])('rejects %s', (_name, value) => {
    expect(parseRetryAfter(value, NOW)).toBeUndefined();
  });

  it('accepts a value of exactly 100 characters', () => {
    expect(parseRetryAfter(`${'0'.repeat(99)}5`, NOW)).toBe(5_000);
  });

  it('never throws and stays within [0, cap] for any string', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), fc.integer({ min: 0, max: 4_102_444_800_000 }), (value, now) => {
        const result = parseRetryAfter(value, now);
        return result === undefined || (result >= 0 && result <= RETRY_AFTER_CAP_MS);
      }),
    );
  });
});
