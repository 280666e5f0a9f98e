/** An opaque handle returned by {@link Clock.setTimeout}. */
export type TimerHandle = { readonly __timer: unique symbol } | object;

/**
 * The one source of time for production code (STYLE.md §1).
 *
 * Two time lines are kept apart on purpose: `now()` is wall-clock time (it
 * jumps forward when a laptop wakes from sleep, and token expiry is stated in
 * it), `monotonic()` never jumps and drives timers — like Node's own timers,
 * it does not advance while the machine is suspended.
 */
export interface Clock {
  /** Wall-clock time in milliseconds since the Unix epoch. */
  now(): number;
  /** Monotonic time in milliseconds from an arbitrary origin. */
  monotonic(): number;
  /**
   * Calls `callback` once, `delayMs` of monotonic time from now. A real
   * clock's timer does not keep the process alive unless `keepAlive` is set
   * (a command waiting for something has nothing else to keep it alive).
   */
  setTimeout(callback: () => void, delayMs: number, options?: { readonly keepAlive?: boolean }): TimerHandle;
  /** Cancels a timer; cancelling a fired or cancelled timer does nothing. */
  clearTimeout(handle: TimerHandle): void;
}

/**
 * The longest delay a timer can take. Node fires a timer with a longer delay
 * after 1 ms instead — a token valid for a year would otherwise be refreshed
 * in a tight loop — so clocks cap delays here, and callers re-arm when a timer
 * fires before what it waits for is due.
 */
export const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;
