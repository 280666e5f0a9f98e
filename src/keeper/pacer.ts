import type { Clock } from '../clock/clock.js';

/** Catch-up attempts admitted per second whatever the number of keepers: a lone keeper is never held back. */
export const CATCH_UP_MIN_RATE = 5;
/**
 * Share of the registered keepers whose catch-up attempts are admitted per
 * second: 1%, so that a catch-up of every keeper of a process takes about
 * 100 s and no second carries more than ~1% of them (issue 5's target: 5%).
 */
export const CATCH_UP_SHARE = 0.01;

/**
 * Spreads the *catch-up* attempts of the keepers of one process — those that
 * every keeper makes at the same moment: on start (stored tokens already due
 * after a restart), on a wake from sleep and on a network change. Without it,
 * 10,000 keepers send 10,000 token requests in the same second.
 *
 * It hands out slots at `max(5, 1% of the registered keepers)` per second and
 * holds no timers: the keeper waits for its slot on its own clock. A lone
 * keeper (the CLI runs one per process) always finds a slot free at once.
 * Urgent attempts — a request waiting (demand), `tether refresh`, a token the
 * resource server rejected — never ask for a slot.
 */
export class CatchUpPacer {
  readonly #keepers = new Set<object>();
  /** Monotonic time of the next free slot. */
  #nextSlot = -Infinity;

  /** Counts `keeper` among the keepers that share the pacer (from its start to its stop). */
  join(keeper: object): void {
    this.#keepers.add(keeper);
  }

  leave(keeper: object): void {
    this.#keepers.delete(keeper);
  }

  /** Reserves the first free slot at or after `now` (monotonic ms); returns the wait until it, 0 if free now. */
  reserve(now: number): number {
    const interval = 1000 / Math.max(CATCH_UP_MIN_RATE, CATCH_UP_SHARE * this.#keepers.size);
    const slot = Math.max(now, this.#nextSlot);
    this.#nextSlot = slot + interval;
    return slot - now;
  }
}

const pacers = new WeakMap<Clock, CatchUpPacer>();

/**
 * The pacer of the keepers that share `clock`: one per process in production
 * (the system clock), one per fake clock in tests, so each test runs alone and
 * the same way every time. Slots are monotonic times, so only keepers on the
 * same clock can share them.
 */
export function sharedPacer(clock: Clock): CatchUpPacer {
  let pacer = pacers.get(clock);
  if (pacer === undefined) {
    pacer = new CatchUpPacer();
    pacers.set(clock, pacer);
  }
  return pacer;
}
