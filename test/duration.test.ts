import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../src/config/duration.js';
import { TetherError } from '../src/errors.js';

const S = 1000;
const M = 60 * S;
const H = 60 * M;

describe('parseDuration', () => {
  // Go's own ParseDuration test table (time_test.go), minus the negative cases, in ms.
  it.each<[string, number]>([
    ['0', 0],
    ['+0', 0],
    ['5s', 5 * S],
    ['30s', 30 * S],
    ['1478s', 1478 * S],
    ['+5s', 5 * S],
    ['5.0s', 5 * S],
    ['5.6s', 5.6 * S],
    ['5.s', 5 * S],
    ['.5s', 500],
    ['1.0s', S],
    ['1.00s', S],
    ['1.004s', 1004],
    ['1.0040s', 1004],
    ['100.00100s', 100_001],
    ['13ms', 13],
    ['14s', 14 * S],
    ['15m', 15 * M],
    ['16h', 16 * H],
    ['3h30m', 3 * H + 30 * M],
    ['10.5s4m', 4 * M + 10.5 * S],
    ['39h9m14.425s', 39 * H + 9 * M + 14_425],
    ['0.3333333333333333333h', 20 * M],
    ['0.100000000000000000000h', 6 * M],
    ['1h1h', 2 * H],
    ['1s1h', H + S],
    ['1.5h', 1.5 * H],
    ['1m30s', 90 * S],
    ['1h2m3.5s', H + 2 * M + 3500],
    ['500ms', 500],
    ['24h', 24 * H],
    ['0s', 0],
    ['0.0h', 0],
  ])('%j → %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  // Sub-millisecond parts round up, so that a non-zero value never becomes 0 ("never" for the ceiling).
  it.each<[string, number]>([
    ['1ns', 1],
    ['10ns', 1],
    ['11us', 1],
    ['12µs', 1],
    ['12μs', 1],
    ['999999ns', 1],
    ['1000000ns', 1],
    ['1000001ns', 2],
    ['1500us', 2],
    ['1h2m3s4ms5us6ns', H + 2 * M + 3 * S + 5],
    ['52763797000ns', 52_764],
    ['9007199254740993ns', 9_007_199_255],
    ['0.830103483285477580700h', 49 * M + 48 * S + 373],
    ['9223372036854775807ns', 9_223_372_036_855],
    ['9223372036854775.807us', 9_223_372_036_855],
  ])('%j rounds up to %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each([
    '',
    '3',
    '00',
    '1.5',
    '1h1',
    '-',
    's',
    '.',
    '-.',
    '.s',
    '+.s',
    '+',
    '1d',
    '1S',
    '1H',
    '1sec',
    '1e3s',
    ' 1s',
    '1s ',
    '1 s',
    '1,5s',
    '\x85\x85',
    '\xffff',
    'hello \xffff world',
    // Negative values: valid in Go, refused here.
    '-5s',
    '-0',
    '-0s',
    '-2m3.4s',
    '-9223372036854775808ns',
    // Beyond Go's int64 nanoseconds.
    '9223372036854775808ns',
    '9223372036854775810ns',
    '9223372036854775.808us',
    '3000000h',
    '2562047h48m',
  ])('rejects %j', (text) => {
    expect(() => parseDuration(text)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_DURATION' }));
  });

  it('throws a TetherError whose message carries the value JSON-encoded', () => {
    let caught: unknown;
    try {
      parseDuration('1x\n');
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(TetherError);
    expect((caught as TetherError).message).not.toContain('\n');
  });
});

describe('formatDuration', () => {
  it.each<[number, string]>([
    [0, '0s'],
    [1, '1ms'],
    [500, '500ms'],
    [999, '999ms'],
    [1000, '1s'],
    [1500, '1.5s'],
    [1050, '1.05s'],
    [10 * S, '10s'],
    [90 * S, '1m30s'],
    [5 * M, '5m'],
    [H, '1h'],
    [H + S, '1h1s'],
    [24 * H, '24h'],
    [H + 2 * M + 3004, '1h2m3.004s'],
    [2 ** 31 - 1, '596h31m23.647s'],
    [0.4, '0s'],
    [499.6, '500ms'],
    [-0, '0s'],
    [-90 * S, '-1m30s'],
  ])('%d ms → %j', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it.each([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY])('refuses %d', (ms) => {
    expect(() => formatDuration(ms)).toThrow(RangeError);
  });

  it('is read back by parseDuration to the same value', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 9_223_372_036_854 }), (ms) => {
        expect(parseDuration(formatDuration(ms))).toBe(ms);
      }),
    );
  });
});
