import { performance } from 'node:perf_hooks';
import { MAX_TIMER_DELAY_MS, type Clock, type TimerHandle } from './clock.js';

/**
 * The real clock. Timers are unref'd unless asked to keep the process alive:
 * a timer alone never keeps it alive (a workload is kept alive by its server,
 * a test by its own awaits).
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout: (callback, delayMs, options) => {
    const timer = setTimeout(callback, Math.min(Math.max(0, delayMs), MAX_TIMER_DELAY_MS));
    return options?.keepAlive === true ? timer : timer.unref();
  },
  clearTimeout: (handle: TimerHandle) => {
    clearTimeout(handle as NodeJS.Timeout);
  },
};
