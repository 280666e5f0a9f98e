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

// Credentials at rest (DESIGN §5).
export { CredentialStore, StoreCorruptError, STORE_ENV, type StoreOptions } from './store/store.js';
export type { KeySource, Keychain } from './store/key.js';
export { stateDir, assertWorkloadName, WORKLOAD_NAME_PATTERN } from './store/paths.js';

// OAuth (DESIGN §4).
export { HttpClient, type HttpClientOptions, type OAuthTransportOptions, oauthRequestOptions } from './oauth/http.js';
export {
  discover,
  discoverAuthorizationServer,
  discoveredScopes,
  DiscoveryError,
  type Discovery,
} from './oauth/discovery.js';
export {
  ensureClient,
  staticClient,
  type ClientRegistration,
  type DynamicClient,
  type StaticClient,
  type RegistrationStore,
} from './oauth/registration.js';
export { createRefreshFunction, type RefreshOptions } from './oauth/refresh.js';
export { readClientSecret, CLIENT_SECRET_ENV } from './oauth/client-secret.js';
export {
  loginWithBrowser,
  loginWithDeviceCode,
  LOGIN_TIMEOUT_MS,
  type BrowserLoginOptions,
  type LoginOptions,
  type LoginPrompt,
} from './oauth/login.js';
export { parseWwwAuthenticate, type AuthChallenge } from './oauth/www-authenticate.js';
