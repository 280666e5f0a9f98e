import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';
import type { Clock, TimerHandle } from '../clock/clock.js';

/** A running detector; `stop()` cancels its pending poll and may be called any number of times. */
export interface Watcher {
  stop(): void;
}

/**
 * Calls `tick` every `pollMs` of monotonic time. The next poll is armed
 * before `tick` runs, so a tick that throws does not end polling, and a
 * `stop()` from inside `tick` cancels the poll just armed.
 */
function poll(clock: Clock, pollMs: number, tick: () => void): Watcher {
  // A zero or negative period would re-arm without ever letting time move.
  if (!(pollMs > 0)) throw new RangeError(`poll interval must be positive, got ${String(pollMs)}`);
  let handle: TimerHandle | undefined;
  const arm = (): void => {
    handle = clock.setTimeout(() => {
      arm();
      tick();
    }, pollMs);
  };
  arm();
  return {
    stop: () => {
      if (handle !== undefined) clock.clearTimeout(handle);
      handle = undefined;
    },
  };
}

/**
 * Link-local addresses (`fe80::/10`, `169.254.0.0/16`) never reach a token
 * endpoint, so they cannot change whether a refresh can succeed — and the
 * IPv6 ones churn on their own (macOS brings `awdl0`/`llw0` up and down,
 * every VPN tunnel gets one), which would make every such blip a trigger.
 */
function isLinkLocal(info: NetworkInterfaceInfo): boolean {
  return info.family === 'IPv6' ? /^fe[89ab]/i.test(info.address) : info.address.startsWith('169.254.');
}

/**
 * A fingerprint of the machine's network attachment: the sorted set of
 * non-internal, non-link-local addresses (`IPv4 192.0.2.2,IPv6 2001:db8::1`).
 * Interface names and netmasks are left out: what changes reachability —
 * joining a VPN, switching Wi-Fi, docking — changes an address. Pure, for tests.
 *
 * IPv6 temporary (privacy) addresses rotate about daily and count as a change;
 * the cost is at most one early attempt, spaced by the probe minimum.
 */
export function networkFingerprint(interfaces: NodeJS.Dict<NetworkInterfaceInfo[]>): string {
  const addresses = new Set<string>();
  for (const infos of Object.values(interfaces)) {
    for (const info of infos ?? []) {
      if (!info.internal && !isLinkLocal(info)) addresses.add(`${info.family} ${info.address}`);
    }
  }
  return [...addresses].sort().join(',');
}

/** Options of {@link watchNetwork}. */
export interface WatchNetworkOptions {
  readonly clock: Clock;
  /** Called with the new fingerprint each time it differs from the previous one (not for the first read). */
  readonly onChange: (fingerprint: string) => void;
  /** Poll period in ms of monotonic time; default 5000. */
  readonly pollMs?: number;
  /** The address source; default `os.networkInterfaces`. */
  readonly interfaces?: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
}

/**
 * Detects network changes (DESIGN §3.2 trigger *network change*) by polling
 * the interface list — a few microseconds per poll, and no platform-specific
 * notification API. A source that throws (libuv can fail to list interfaces
 * in some sandboxes) is treated as "no change", so a flaky read never
 * triggers anything; if the very first read fails, the first good one becomes
 * the baseline.
 */
export function watchNetwork(options: WatchNetworkOptions): Watcher {
  const { clock, onChange, pollMs = 5000, interfaces = networkInterfaces } = options;
  const read = (): string | undefined => {
    try {
      return networkFingerprint(interfaces());
    } catch {
      return undefined;
    }
  };
  let last = read();
  return poll(clock, pollMs, () => {
    const current = read();
    if (current === undefined || current === last) return;
    const previous = last;
    last = current;
    if (previous !== undefined) onChange(current);
  });
}

/** Options of {@link watchWake}. */
export interface WatchWakeOptions {
  readonly clock: Clock;
  /** Called with how far wall time ran ahead of monotonic time (≈ how long the machine slept). */
  readonly onWake: (sleptMs: number) => void;
  /** Poll period in ms of monotonic time; default 5000. */
  readonly pollMs?: number;
  /** Smallest lead of wall over monotonic time that counts as a wake; default 10000. */
  readonly thresholdMs?: number;
}

/**
 * Detects a wake from sleep (DESIGN §3.2 trigger *wake*): while a machine is
 * suspended, monotonic time and timers stand still but wall time moves on, so
 * at the first poll after waking, wall time has run ahead of monotonic time by
 * about the time slept. A late timer (busy event loop) moves both alike and is
 * not a wake; the threshold absorbs NTP slews and small steps; a wall clock
 * stepped backwards is never a wake. Where the monotonic clock keeps counting
 * through suspend, no lead is seen — but there the keeper's own timers have
 * kept counting too and fire on waking without help.
 */
export function watchWake(options: WatchWakeOptions): Watcher {
  const { clock, onWake, pollMs = 5000, thresholdMs = 10_000 } = options;
  let lastWall = clock.now();
  let lastMono = clock.monotonic();
  return poll(clock, pollMs, () => {
    const wall = clock.now();
    const mono = clock.monotonic();
    const wallAhead = wall - lastWall - (mono - lastMono);
    lastWall = wall;
    lastMono = mono;
    if (wallAhead > thresholdMs) onWake(wallAhead);
  });
}
