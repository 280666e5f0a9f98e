import { describe, expect, it, vi } from 'vitest';
import {
  DEFAULT_KEEPER_CONFIG,
  KEEPER_ENV,
  keeperConfigFromEnv,
  type KeeperConfig,
} from '../src/config/keeper-config.js';
import { TetherError } from '../src/errors.js';

function configError(env: Record<string, string>): TetherError {
  try {
    keeperConfigFromEnv(env);
  } catch (error) {
    if (error instanceof TetherError) return error;
    throw error;
  }
  throw new Error('expected keeperConfigFromEnv to throw');
}

const byKey = (key: keyof KeeperConfig) => {
  const variable = KEEPER_ENV.find((v) => v.key === key);
  if (variable === undefined) throw new Error(`no variable for ${key}`);
  return variable;
};

describe('keeperConfigFromEnv', () => {
  it('has the documented defaults', () => {
    expect(keeperConfigFromEnv({})).toEqual({
      initialRetryInterval: 10_000,
      maxRetryInterval: 120_000,
      maxTries: 5,
      maxElapsed: 300_000,
      tickInterval: 300_000,
      ceiling: 86_400_000,
      probeMinInterval: 10_000,
      demandWait: 5_000,
    });
    expect(keeperConfigFromEnv({})).toEqual(DEFAULT_KEEPER_CONFIG);
  });

  it('returns a fresh object, not the frozen defaults', () => {
    const config = keeperConfigFromEnv({});
    config.maxTries = 9;
    expect(DEFAULT_KEEPER_CONFIG.maxTries).toBe(5);
  });

  it('covers every field with one variable, named TETHER_ with a TOOLHIVE_ alias of the same suffix', () => {
    expect(KEEPER_ENV.map((v) => v.key).sort()).toEqual(Object.keys(DEFAULT_KEEPER_CONFIG).sort());
    for (const v of KEEPER_ENV) {
      expect(v.name).toMatch(/^TETHER_TOKEN_/);
      expect(v.alias).toBe(v.name.replace(/^TETHER_/, 'TOOLHIVE_'));
    }
  });

  it.each<[string, string, Partial<KeeperConfig>]>([
    ['TETHER_TOKEN_REFRESH_INITIAL_RETRY_INTERVAL', '1.5s', { initialRetryInterval: 1500 }],
    ['TETHER_TOKEN_REFRESH_MAX_RETRY_INTERVAL', '10m', { maxRetryInterval: 600_000 }],
    ['TETHER_TOKEN_REFRESH_MAX_TRIES', '10', { maxTries: 10 }],
    ['TETHER_TOKEN_REFRESH_MAX_TRIES', '1', { maxTries: 1 }],
    ['TETHER_TOKEN_REFRESH_MAX_ELAPSED_TIME', '1m30s', { maxElapsed: 90_000 }],
    ['TETHER_TOKEN_AUTH_RETRYING_TICK_INTERVAL', '30m', { tickInterval: 1_800_000 }],
    ['TETHER_TOKEN_AUTH_RETRYING_MAX_ELAPSED', '48h', { ceiling: 172_800_000 }],
    ['TETHER_TOKEN_AUTH_RETRYING_MAX_ELAPSED', '0', { ceiling: 0 }],
    ['TETHER_TOKEN_AUTH_RETRYING_MAX_ELAPSED', '2000h', { ceiling: 7_200_000_000 }],
    ['TETHER_TOKEN_PROBE_MIN_INTERVAL', '500ms', { probeMinInterval: 500 }],
    ['TETHER_TOKEN_PROBE_MIN_INTERVAL', '0s', { probeMinInterval: 0 }],
    ['TETHER_TOKEN_DEMAND_WAIT', '2s', { demandWait: 2000 }],
    ['TETHER_TOKEN_DEMAND_WAIT', '0', { demandWait: 0 }],
  ])('reads %s=%j', (name, value, expected) => {
    expect(keeperConfigFromEnv({ [name]: value })).toEqual({ ...DEFAULT_KEEPER_CONFIG, ...expected });
  });

  it.each(KEEPER_ENV.map((v) => [v.alias, v] as const))('reads the alias %s', (alias, v) => {
    // 1m lies between the default initial (10s) and maximum (2m) retry intervals.
    const value = v.kind === 'count' ? '7' : '1m';
    expect(keeperConfigFromEnv({ [alias]: value })[v.key]).toBe(v.kind === 'count' ? 7 : 60_000);
  });

  it('prefers the TETHER_ name over the alias when both are set', () => {
    const config = keeperConfigFromEnv({ TETHER_TOKEN_REFRESH_MAX_TRIES: '3', TOOLHIVE_TOKEN_REFRESH_MAX_TRIES: '9' });
    expect(config.maxTries).toBe(3);
  });

  it('does not validate the alias when the TETHER_ name is set', () => {
    const config = keeperConfigFromEnv({
      TETHER_TOKEN_REFRESH_MAX_TRIES: '3',
      TOOLHIVE_TOKEN_REFRESH_MAX_TRIES: 'abc',
    });
    expect(config.maxTries).toBe(3);
  });

  it('treats an empty value as unset, falling back to the alias, then the default', () => {
    expect(keeperConfigFromEnv({ TETHER_TOKEN_DEMAND_WAIT: '' }).demandWait).toBe(5000);
    expect(keeperConfigFromEnv({ TETHER_TOKEN_DEMAND_WAIT: '', TOOLHIVE_TOKEN_DEMAND_WAIT: '1s' }).demandWait).toBe(
      1000,
    );
  });

  it('ignores unknown TETHER_TOKEN_ variables', () => {
    expect(keeperConfigFromEnv({ TETHER_TOKEN_SOMETHING_ELSE: 'abc' })).toEqual(DEFAULT_KEEPER_CONFIG);
  });

  it.each<[keyof KeeperConfig, string]>([
    ['initialRetryInterval', '10'],
    ['initialRetryInterval', 'abc'],
    ['initialRetryInterval', '0'],
    ['initialRetryInterval', '-1s'],
    ['initialRetryInterval', ' 10s'],
    ['maxRetryInterval', '0s'],
    ['maxRetryInterval', '1d'],
    ['maxTries', 'abc'],
    ['maxTries', '0'],
    ['maxTries', '-1'],
    ['maxTries', '2.5'],
    ['maxTries', '5.0'],
    ['maxTries', '+5'],
    ['maxTries', ' 5'],
    ['maxTries', '1e3'],
    ['maxTries', '0x10'],
    ['maxTries', '99999999999999999999'],
    ['maxElapsed', '0'],
    ['maxElapsed', '5'],
    ['tickInterval', '0s'],
    ['tickInterval', '30d'],
    // Longer than Node's longest timer (2^31-1 ms): would fire after 1 ms.
    ['tickInterval', '597h'],
    ['demandWait', '597h'],
    ['probeMinInterval', '597h'],
    ['ceiling', '-1h'],
    ['ceiling', 'never'],
    ['probeMinInterval', '-0'],
    ['demandWait', 'soon'],
  ])('rejects %s=%j with ERR_CONFIG naming the variable', (key, value) => {
    for (const name of [byKey(key).name, byKey(key).alias]) {
      const error = configError({ [name]: value });
      expect(error.code).toBe('ERR_CONFIG');
      expect(error.message.startsWith(`${name}=`)).toBe(true);
    }
  });

  it('keeps the value out of the message raw: JSON-encoded and truncated', () => {
    const error = configError({ TETHER_TOKEN_REFRESH_MAX_TRIES: `5\n{"level":"info"}${'x'.repeat(500)}` });
    expect(error.message).not.toContain('\n');
    expect(error.message.length).toBeLessThan(200);
  });

  it('keeps the duration parser error as the cause', () => {
    const error = configError({ TETHER_TOKEN_DEMAND_WAIT: 'soon' });
    expect(error.cause).toMatchObject({ code: 'ERR_CONFIG_DURATION' });
  });

  it('accepts a maximum retry interval equal to the initial one', () => {
    const config = keeperConfigFromEnv({
      TETHER_TOKEN_REFRESH_INITIAL_RETRY_INTERVAL: '30s',
      TETHER_TOKEN_REFRESH_MAX_RETRY_INTERVAL: '30s',
    });
    expect(config).toMatchObject({ initialRetryInterval: 30_000, maxRetryInterval: 30_000 });
  });

  it.each<[Record<string, string>]>([
    [{ TETHER_TOKEN_REFRESH_INITIAL_RETRY_INTERVAL: '30s', TOOLHIVE_TOKEN_REFRESH_MAX_RETRY_INTERVAL: '20s' }],
    [{ TETHER_TOKEN_REFRESH_INITIAL_RETRY_INTERVAL: '5m' }],
    [{ TETHER_TOKEN_REFRESH_MAX_RETRY_INTERVAL: '5s' }],
  ])('rejects a maximum retry interval below the initial one, naming both variables (%j)', (env) => {
    const error = configError(env);
    expect(error.code).toBe('ERR_CONFIG');
    const initial = byKey('initialRetryInterval');
    const max = byKey('maxRetryInterval');
    expect(error.message).toMatch(new RegExp(`${initial.name}|${initial.alias}`));
    expect(error.message).toMatch(new RegExp(`${max.name}|${max.alias}`));
  });

  it('reads process.env by default', () => {
    vi.stubEnv('TETHER_TOKEN_DEMAND_WAIT', '1234ms');
    try {
      expect(keeperConfigFromEnv().demandWait).toBe(1234);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});
