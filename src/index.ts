/**
 * mcp-tether's public API. Every export here is public API (STYLE.md §6).
 */
export type { Clock, TimerHandle } from './clock/clock.js';
export { systemClock } from './clock/system.js';
export { TetherError } from './errors.js';
export { parseDuration, formatDuration } from './config/duration.js';
export { DEFAULT_KEEPER_CONFIG, KEEPER_ENV, keeperConfigFromEnv, type KeeperConfig } from './config/keeper-config.js';
export type { Classification, FailureReason, RefreshFailure } from './keeper/failure.js';
export { classifyFailure } from './keeper/classify.js';
export { parseRetryAfter, RETRY_AFTER_CAP_MS } from './keeper/retry-after.js';
export { tokenTimes, type TokenTimes } from './keeper/timing.js';
export { shortTierDelay, slowTierDelay, demandGap } from './keeper/backoff.js';
export { TokenKeeper, TokenUnavailableError, type KeeperOptions } from './keeper/keeper.js';
export type {
  KeeperEvent,
  KeeperSnapshot,
  KeeperStateKind,
  KeeperStatus,
  KeeperStore,
  RefreshFunction,
  RefreshHealth,
  RefreshResult,
  StatusSink,
  TokenResponse,
  TokenSet,
  Trigger,
} from './keeper/types.js';
export { watchNetwork, watchWake, networkFingerprint } from './keeper/detectors.js';
