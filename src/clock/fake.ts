import { MAX_TIMER_DELAY_MS, type Clock, type TimerHandle } from './clock.js';

interface FakeTimer {
  readonly due: number;
  readonly seq: number;
  readonly callback: () => void;
  cancelled: boolean;
}

/** Lets pending promise callbacks run (one macrotask turn drains all microtasks). */
const settle = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/**
 * A clock for tests and simulations: time moves only when told to, and due
 * timers fire in order of due time (ties in order of creation), with pending
 * promise callbacks allowed to run after each one, so a 24-hour scenario runs
 * in milliseconds and the same way every time.
 *
 * Delays are capped at {@link MAX_TIMER_DELAY_MS}, as the system clock caps them.
 *
 * `sleep()` models a suspended machine: wall time jumps, monotonic time and
 * timers stand still.
 */
export class FakeClock implements Clock {
  #wall: number;
  #mono = 0;
  #seq = 0;
  readonly #heap: FakeTimer[] = [];

  constructor(startWallMs = Date.UTC(2026, 0, 1)) {
    this.#wall = startWallMs;
  }

  now(): number {
    return this.#wall;
  }

  monotonic(): number {
    return this.#mono;
  }

  setTimeout(callback: () => void, delayMs: number): TimerHandle {
    const timer: FakeTimer = {
      due: this.#mono + Math.min(Math.max(0, delayMs), MAX_TIMER_DELAY_MS),
      seq: this.#seq++,
      callback,
      cancelled: false,
    };
    this.#push(timer);
    return timer;
  }

  clearTimeout(handle: TimerHandle): void {
    (handle as FakeTimer).cancelled = true;
  }

  /** Number of timers still waiting to fire. */
  get pendingTimers(): number {
    return this.#heap.filter((t) => !t.cancelled).length;
  }

  /** Monotonic time at which the next live timer fires, if any. */
  nextTimerAt(): number | undefined {
    this.#dropCancelled();
    return this.#heap[0]?.due;
  }

  /** Moves both time lines forward by `ms`, firing every timer that falls due on the way. */
  async advance(ms: number): Promise<void> {
    await this.advanceTo(this.#mono + ms);
  }

  /** Moves both time lines to monotonic time `target`, firing due timers in order. */
  async advanceTo(target: number): Promise<void> {
    await settle();
    for (;;) {
      this.#dropCancelled();
      const next = this.#heap[0];
      if (next === undefined || next.due > target) break;
      this.#pop();
      this.#moveTo(next.due);
      next.callback();
      await settle();
    }
    this.#moveTo(Math.max(target, this.#mono));
    await settle();
  }

  /** Simulates a suspended machine: wall time jumps by `ms`, monotonic time and timers do not move. */
  sleep(ms: number): void {
    this.#wall += ms;
  }

  /** Lets pending promise callbacks run without moving time. */
  flush(): Promise<void> {
    return settle();
  }

  #moveTo(mono: number): void {
    this.#wall += mono - this.#mono;
    this.#mono = mono;
  }

  #dropCancelled(): void {
    while (this.#heap[0]?.cancelled === true) this.#pop();
  }

  #less(a: FakeTimer, b: FakeTimer): boolean {
    return a.due < b.due || (a.due === b.due && a.seq < b.seq);
  }

  #push(timer: FakeTimer): void {
    const heap = this.#heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = heap[parent] as FakeTimer;
      if (!this.#less(timer, p)) break;
      heap[i] = p;
      i = parent;
    }
    heap[i] = timer;
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && this.#less(heap[right] as FakeTimer, heap[left] as FakeTimer) ? right : left;
      const c = heap[child] as FakeTimer;
      if (!this.#less(c, last)) break;
      heap[i] = c;
      i = child;
    }
    heap[i] = last;
  }
}
