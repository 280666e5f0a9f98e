import type { KeeperConfig } from '../config/keeper-config.js';

/**
 * The two retry tiers of DESIGN §3.2 as pure functions of the failure count,
 * so that the keeper's schedule can be computed, logged and tested without
 * running it.
 */

/** Multiplier of the short tier (ToolHive's default, cenkalti/backoff semantics). */
export const SHORT_TIER_MULTIPLIER = 1.5;
/** Randomisation of the short tier: each delay is spread ±50% around its base. */
export const SHORT_TIER_RANDOMIZATION = 0.5;
/** First delay of the slow tier; it doubles up to the tick interval. */
export const SLOW_TIER_INITIAL_MS = 30_000;
/** Jitter of the slow tier: ±20%, never past the tick interval. */
export const SLOW_TIER_JITTER = 0.2;

/**
 * Delay before the short tier's retry number `retry` (0 for the retry after
 * the first failure): `initial × 1.5^retry`, capped at the max interval, then
 * spread ±50%.
 */
export function shortTierDelay(retry: number, config: KeeperConfig, random: number): number {
  const base = Math.min(config.initialRetryInterval * SHORT_TIER_MULTIPLIER ** retry, config.maxRetryInterval);
  return base * (1 + SHORT_TIER_RANDOMIZATION * (2 * random - 1));
}

/**
 * Whether the short tier may wait `delay` for one more try after `failures`
 * failed tries, `elapsed` ms into the failure episode. It stops at the try
 * limit, or when the next try would fall past the max elapsed time.
 */
export function shortTierAllows(failures: number, elapsed: number, delay: number, config: KeeperConfig): boolean {
  return failures < config.maxTries && elapsed + delay <= config.maxElapsed;
}

/**
 * Delay before the slow tier's attempt number `step` (0 first): 30 s doubling,
 * jittered ±20% and never longer than the tick interval — so that, idle, a
 * recovered upstream is noticed within one tick.
 */
export function slowTierDelay(step: number, config: KeeperConfig, random: number): number {
  const base = Math.min(SLOW_TIER_INITIAL_MS * 2 ** Math.min(step, 40), config.tickInterval);
  return Math.min(base * (1 + SLOW_TIER_JITTER * (2 * random - 1)), config.tickInterval);
}

/**
 * Minimum gap between a demand-triggered attempt and the previous attempt:
 * `max(probe minimum, 10% of the episode so far)`, capped at the tick
 * interval. Recovery after an outage of length T takes at most ~T/10 for an
 * active user, while a client hammering the proxy adds almost no load.
 */
export function demandGap(episodeElapsed: number, config: KeeperConfig): number {
  return Math.min(Math.max(config.probeMinInterval, episodeElapsed / 10), config.tickInterval);
}

/** First wait before a failed save of a token set is tried again; it doubles up to {@link SAVE_RETRY_MAX_MS}. */
export const SAVE_RETRY_INITIAL_MS = 1000;
export const SAVE_RETRY_MAX_MS = 60_000;

/**
 * Delay before the next try of a save that has failed `failures` times: 1 s
 * doubling, capped at a minute — a full or read-only disk is often fixed by
 * hand, and until a save lands the only copy of a rotated refresh token is in
 * memory.
 */
export function saveRetryDelay(failures: number): number {
  return Math.min(SAVE_RETRY_INITIAL_MS * 2 ** Math.min(failures - 1, 40), SAVE_RETRY_MAX_MS);
}
