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
 * Admissions the bucket holds when nobody has asked for a while: one, so that
 * the first attempt of a catch-up goes at once and the rest follow evenly —
 * a burst of more would only put more into the first second.
 */
export const CATCH_UP_BURST = 1;

/** Tolerance of the bucket's level (fractions of an admission). */
const EPSILON = 1e-9;

/** A keeper waiting for its turn. */
interface Waiter {
  /** Order of arrival in its line, for estimates. */
  readonly ticket: number;
  /** Told when it comes to the head of the line, so that it asks again at the right time. */
  readonly onTurn: () => void;
}

/**
 * Spreads the *catch-up* attempts of the keepers of one process — those that
 * every keeper makes at the same moment: on start (stored tokens already due
 * after a restart), on a wake from sleep and on a network change. Without it,
 * 10,000 keepers send 10,000 token requests in the same second.
 *
 * A token bucket, filled at `max(5, 1% of the keepers registered now)` per
 * second and holding {@link CATCH_UP_BURST}, both evaluated when a keeper asks:
 * no time is reserved ahead, so nothing is left to give back when a keeper
 * stops or starts another attempt, and keepers started one after another are
 * paced at the rate of all of them. A keeper not admitted waits in line —
 * one place per keeper, however often it asks — and asks again when the
 * bucket says; only the head of the line can be admitted, and it is told
 * (`onTurn`) when it gets there, so the others hold no timer for it. Keepers
 * with no valid token to serve stand in a line of their own, ahead of those
 * still serving one. The pacer holds no timers: every keeper waits on its own
 * clock. A lone keeper (the CLI runs one per process) is admitted at once.
 *
 * Urgent attempts — a request waiting (demand), `tether refresh`, a token the
 * resource server rejected — never ask.
 */
export class CatchUpPacer {
  readonly #keepers = new Set<object>();
  /** Keepers with no valid token, then the others; a Map keeps the order of arrival. */
  readonly #urgent = new Map<object, Waiter>();
  readonly #others = new Map<object, Waiter>();
  #tickets = 0;
  #level = CATCH_UP_BURST;
  /** When the level was last brought up to date, on both time lines. */
  #filledAt: { readonly mono: number; readonly wall: number } | undefined;

  /** @param clock the clock of the keepers that share the pacer (times are its monotonic ms). */
  constructor(private readonly clock: Clock) {}

  /** Counts `keeper` among the keepers that share the pacer (from its start to its stop). */
  join(keeper: object): void {
    this.#keepers.add(keeper);
  }

  /** No longer counts `keeper`, and takes it out of line. */
  leave(keeper: object): void {
    this.#keepers.delete(keeper);
    this.withdraw(keeper);
  }

  /** Catch-up attempts admitted per second, now. */
  get rate(): number {
    return Math.max(CATCH_UP_MIN_RATE, CATCH_UP_SHARE * this.#keepers.size);
  }

  /** Keepers waiting in line. */
  get waiting(): number {
    return this.#urgent.size + this.#others.size;
  }

  /**
   * Asks to start `keeper`'s catch-up attempt now. Returns
   * 0 when admitted (it is then out of line); otherwise the estimated wait in
   * ms, and the keeper is in line — unless that estimate reaches `giveUpAt`
   * (monotonic: its own next attempt comes first), when it does not take a place. A
   * keeper already in line keeps its place, moving to the urgent line when
   * `urgent` (no valid token) has become true.
   */
  admit(keeper: object, urgent: boolean, onTurn: () => void, giveUpAt = Infinity): number {
    this.#fill();
    const now = this.clock.monotonic();
    let waiter = this.#waiterOf(keeper);
    if (waiter !== undefined && urgent && this.#others.has(keeper)) {
      this.#others.delete(keeper);
      waiter = { ticket: this.#tickets++, onTurn: waiter.onTurn };
      this.#urgent.set(keeper, waiter);
    }
    const ahead = waiter === undefined ? this.#urgent.size + (urgent ? 0 : this.#others.size) : this.#ahead(keeper);
    // A keeper that asks when the bucket says must find it full, whatever rounding did to the times.
    if (this.#level + EPSILON >= ahead + 1) {
      this.#level = Math.max(0, this.#level - 1);
      this.withdraw(keeper);
      return 0;
    }
    const wait = this.#waitFor(ahead);
    if (waiter === undefined && now + wait < giveUpAt) {
      (urgent ? this.#urgent : this.#others).set(keeper, { ticket: this.#tickets++, onTurn });
    }
    return wait;
  }

  /** Takes `keeper` out of line (it started another attempt, or needs none); the next in line is told. */
  withdraw(keeper: object): void {
    const head = this.#head();
    if (!this.#urgent.delete(keeper) && !this.#others.delete(keeper)) return;
    if (head !== keeper) return;
    const next = this.#head();
    if (next !== undefined) this.#waiterOf(next)?.onTurn();
  }

  /**
   * Ms until `keeper` may ask again with a chance of admission:
   * for the head of the line, until the bucket holds an admission; for the
   * others, `Infinity` (they are told when their turn comes); `undefined`
   * when it is not in line. Changes nothing.
   */
  turnIn(keeper: object): number | undefined {
    if (this.#waiterOf(keeper) === undefined) return undefined;
    if (this.#head() !== keeper) return Infinity;
    return Math.max(0, this.#waitFor(0, this.#levelAt()));
  }

  /** Estimated ms until `keeper` is admitted (to report it), `undefined` when it is not in line. */
  estimate(keeper: object): number | undefined {
    if (this.#waiterOf(keeper) === undefined) return undefined;
    return Math.max(0, this.#waitFor(this.#ahead(keeper), this.#levelAt()));
  }

  #waiterOf(keeper: object): Waiter | undefined {
    return this.#urgent.get(keeper) ?? this.#others.get(keeper);
  }

  #head(): object | undefined {
    for (const keeper of this.#urgent.keys()) return keeper;
    for (const keeper of this.#others.keys()) return keeper;
    return undefined;
  }

  /**
   * Keepers ahead of `keeper` in line: exact for the head, else from tickets
   * (keepers that left the middle of the line still count — an estimate).
   */
  #ahead(keeper: object): number {
    if (this.#head() === keeper) return 0;
    const inUrgent = this.#urgent.get(keeper);
    const line = inUrgent === undefined ? this.#others : this.#urgent;
    const waiter = inUrgent ?? this.#others.get(keeper);
    let first: Waiter | undefined;
    for (const w of line.values()) {
      first = w;
      break;
    }
    const inLine = Math.min(line.size - 1, (waiter?.ticket ?? 0) - (first?.ticket ?? 0));
    return (inUrgent === undefined ? this.#urgent.size : 0) + Math.max(inLine, 0);
  }

  /** Ms until the bucket has admitted `ahead` keepers and holds one more admission. */
  #waitFor(ahead: number, level = this.#level): number {
    return ((ahead + 1 - level) / this.rate) * 1000;
  }

  /**
   * The bucket's level now. Elapsed time is the larger of wall and monotonic
   * time, as for the keeper's own gaps: a machine asleep (monotonic time
   * stands still) sent nothing meanwhile, so it wakes with a full bucket.
   */
  #levelAt(): number {
    const filled = this.#filledAt;
    const since =
      filled === undefined
        ? Infinity
        : Math.max(0, this.clock.monotonic() - filled.mono, this.clock.now() - filled.wall);
    return Math.min(CATCH_UP_BURST, this.#level + (since * this.rate) / 1000);
  }

  #fill(): void {
    this.#level = this.#levelAt();
    this.#filledAt = { mono: this.clock.monotonic(), wall: this.clock.now() };
  }
}

const pacers = new WeakMap<Clock, CatchUpPacer>();

/**
 * The pacer of the keepers that share `clock`: one per process in production
 * (the system clock), one per fake clock in tests, so each test runs alone and
 * the same way every time. Times are monotonic, so only keepers on the same
 * clock can share it.
 */
export function sharedPacer(clock: Clock): CatchUpPacer {
  let pacer = pacers.get(clock);
  if (pacer === undefined) {
    pacer = new CatchUpPacer(clock);
    pacers.set(clock, pacer);
  }
  return pacer;
}
