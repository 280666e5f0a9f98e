import { TetherError } from '../errors.js';
import { formatDuration, parseDuration, quote } from './duration.js';

/**
 * The token keeper's timings (DESIGN §3.2), all durations in milliseconds.
 * Read from the environment by {@link keeperConfigFromEnv}.
 */
export interface KeeperConfig {
  /** Short tier: first wait after a transient failure (then ×1.5, ±50%). */
  initialRetryInterval: number;
  /** Short tier: longest wait between two attempts. */
  maxRetryInterval: number;
  /** Short tier: most attempts before the slow tier takes over (integer ≥ 1). */
  maxTries: number;
  /** Short tier: longest time it keeps trying before the slow tier takes over. */
  maxElapsed: number;
  /** Slow tier: cap of its doubling wait. */
  tickInterval: number;
  /** Wall-clock length of a failure episode after which the keeper gives up; `0` = never. */
  ceiling: number;
  /** Minimum gap before an attempt triggered by a network change or wake. */
  probeMinInterval: number;
  /** How long a request waits for the attempt it triggered while no valid token is left. */
  demandWait: number;
}

/** The defaults: ToolHive's for the short tier and the ceiling, DESIGN §3.2 for the rest. */
export const DEFAULT_KEEPER_CONFIG: Readonly<KeeperConfig> = Object.freeze({
  initialRetryInterval: 10_000,
  maxRetryInterval: 120_000,
  maxTries: 5,
  maxElapsed: 300_000,
  tickInterval: 300_000,
  ceiling: 86_400_000,
  probeMinInterval: 10_000,
  demandWait: 5_000,
});

/** One environment variable of the keeper, as documented in the README. */
export interface KeeperEnvVar {
  readonly key: keyof KeeperConfig;
  /** The tether name; wins over the alias when both are set. */
  readonly name: string;
  /** The ToolHive name, accepted so that its users can carry their settings over. */
  readonly alias: string;
  /** `duration`: Go-style (`500ms`, `1m30s`); `count`: a positive integer. */
  readonly kind: 'duration' | 'count';
  readonly description: string;
}

/**
 * What a value may be. A count is an integer ≥ 1; a duration may be refused
 * when zero, and is capped when it is used as a timer delay, because Node
 * fires a timer with a delay above 2^31-1 ms after 1 ms instead — a "30 days"
 * wait would become a tight loop against the token endpoint.
 */
type Rule =
  | { readonly kind: 'count' }
  | { readonly kind: 'duration'; readonly zero: 'allowed' | 'refused'; readonly timer: boolean };

interface Spec {
  readonly variable: KeeperEnvVar;
  readonly rule: Rule;
}

/** Node's longest timer delay (see {@link Rule}). */
const MAX_TIMER_MS = 2 ** 31 - 1;

function spec(key: keyof KeeperConfig, suffix: string, rule: Rule, description: string): Spec {
  return {
    variable: Object.freeze({
      key,
      name: `TETHER_${suffix}`,
      alias: `TOOLHIVE_${suffix}`,
      kind: rule.kind,
      description,
    }),
    rule,
  };
}

const INITIAL = spec(
  'initialRetryInterval',
  'TOKEN_REFRESH_INITIAL_RETRY_INTERVAL',
  { kind: 'duration', zero: 'refused', timer: true },
  'First wait before retrying a failed refresh (short tier; grows ×1.5).',
);
const MAX_RETRY = spec(
  'maxRetryInterval',
  'TOKEN_REFRESH_MAX_RETRY_INTERVAL',
  { kind: 'duration', zero: 'refused', timer: true },
  'Longest wait between retries in the short tier; at least the initial interval.',
);

const SPECS: readonly Spec[] = [
  INITIAL,
  MAX_RETRY,
  spec(
    'maxTries',
    'TOKEN_REFRESH_MAX_TRIES',
    { kind: 'count' },
    'Most attempts in the short tier before the slow tier takes over.',
  ),
  spec(
    'maxElapsed',
    'TOKEN_REFRESH_MAX_ELAPSED_TIME',
    // Not a timer (a budget compared with elapsed time); zero would leave no
    // short tier, which TOKEN_REFRESH_MAX_TRIES=1 says more clearly.
    { kind: 'duration', zero: 'refused', timer: false },
    'Longest time the short tier keeps retrying before the slow tier takes over.',
  ),
  spec(
    'tickInterval',
    'TOKEN_AUTH_RETRYING_TICK_INTERVAL',
    { kind: 'duration', zero: 'refused', timer: true },
    'Longest wait between attempts in the slow tier.',
  ),
  spec(
    'ceiling',
    'TOKEN_AUTH_RETRYING_MAX_ELAPSED',
    // Compared with wall-clock time, never a timer; 0 = never give up.
    { kind: 'duration', zero: 'allowed', timer: false },
    'How long a failure episode may last before the workload is marked unauthenticated; 0 = never give up.',
  ),
  spec(
    'probeMinInterval',
    'TOKEN_PROBE_MIN_INTERVAL',
    // 0 = react to every network change or wake at once.
    { kind: 'duration', zero: 'allowed', timer: true },
    'Minimum gap before an attempt triggered by a network change or wake from sleep.',
  ),
  spec(
    'demandWait',
    'TOKEN_DEMAND_WAIT',
    // 0 = a request never waits: it gets its 503 at once while the attempt runs.
    { kind: 'duration', zero: 'allowed', timer: true },
    'How long a request waits for the refresh it triggered while no valid token is left.',
  ),
];

/** Every environment variable the keeper reads (DESIGN §3.4), in documentation order. */
export const KEEPER_ENV: readonly KeeperEnvVar[] = Object.freeze(SPECS.map((s) => s.variable));

/** The variable actually read (the tether name, else the alias) and its raw value. */
interface Setting {
  readonly name: string;
  readonly raw: string;
}

function read(env: Readonly<Record<string, string | undefined>>, v: KeeperEnvVar): Setting | undefined {
  for (const name of [v.name, v.alias]) {
    const raw = env[name];
    // Empty counts as unset, as in ToolHive's `os.Getenv(...) == ""` and shells' `VAR= cmd`.
    if (raw !== undefined && raw !== '') return { name, raw };
  }
  return undefined;
}

function example(v: KeeperEnvVar): string {
  const value = DEFAULT_KEEPER_CONFIG[v.key];
  if (v.kind === 'count') return String(value);
  return v.key === 'ceiling' ? `${formatDuration(value)}, or 0 to never give up` : formatDuration(value);
}

function parse({ variable, rule }: Spec, { name, raw }: Setting): number {
  const problem = (what: string, cause?: unknown): TetherError =>
    new TetherError(
      'ERR_CONFIG',
      `${name}=${what}; expected e.g. ${example(variable)}`,
      cause === undefined ? undefined : { cause },
    );

  if (rule.kind === 'count') {
    const value = Number(raw);
    if (!/^\d+$/.test(raw) || !Number.isSafeInteger(value) || value < 1)
      throw problem(`${quote(raw)} is not a positive integer`);
    return value;
  }

  let value: number;
  try {
    value = parseDuration(raw);
  } catch (error) {
    if (!(error instanceof TetherError)) throw error;
    // parseDuration's message starts with the quoted value: NAME="value" is not a valid duration (why).
    throw problem(error.message, error);
  }
  if (value === 0 && rule.zero === 'refused') throw problem(`${quote(raw)} must be greater than 0`);
  if (rule.timer && value > MAX_TIMER_MS) {
    throw problem(
      `${quote(raw)} is longer than ${formatDuration(MAX_TIMER_MS)}, the longest timer delay Node supports`,
    );
  }
  return value;
}

/**
 * Reads the keeper's timings from the environment (DESIGN §3.4). For each
 * entry of {@link KEEPER_ENV} the `TETHER_` name is read, else its
 * `TOOLHIVE_` alias, else the default applies; an empty value counts as
 * unset. Other `TETHER_TOKEN_*` variables are ignored.
 *
 * Unlike ToolHive, which logs a bad value and falls back to the default, a bad
 * value is an error: a setting that silently does not apply is worse than a
 * workload that refuses to start and says why.
 *
 * @throws {TetherError} `ERR_CONFIG` naming the variable read, its value
 *   (JSON-encoded, truncated) and an example of a valid one; also when the
 *   maximum retry interval is below the initial one (naming both variables).
 */
export function keeperConfigFromEnv(env: Readonly<Record<string, string | undefined>> = process.env): KeeperConfig {
  const config: KeeperConfig = { ...DEFAULT_KEEPER_CONFIG };
  const settings = new Map<Spec, Setting>();
  for (const s of SPECS) {
    const setting = read(env, s.variable);
    if (setting === undefined) continue;
    settings.set(s, setting);
    config[s.variable.key] = parse(s, setting);
  }

  if (config.maxRetryInterval < config.initialRetryInterval) {
    const describe = (s: Spec): string => {
      const setting = settings.get(s);
      return setting === undefined
        ? `${s.variable.name} (default ${formatDuration(DEFAULT_KEEPER_CONFIG[s.variable.key])})`
        : `${setting.name}=${quote(setting.raw)}`;
    };
    throw new TetherError(
      'ERR_CONFIG',
      `${describe(MAX_RETRY)} is less than ${describe(INITIAL)}; the maximum retry interval must be at least the initial one`,
    );
  }
  return config;
}
