import type { Clock } from '../clock.js';

/** Settings of {@link LoginThrottle}; every one finite, see the defaults below. */
export interface ThrottleOptions {
  /** Delay before the refusal of the first failure, ms; doubles with each further one. */
  baseDelayMs: number;
  /** Longest delay, ms. */
  maxDelayMs: number;
  /** The failure count of an IP halves every this many ms without a failure. */
  halfLifeMs: number;
  /** IP addresses tracked at most; the least recently seen idle one is forgotten beyond it. */
  maxTracked: number;
}

export const DEFAULT_THROTTLE: ThrottleOptions = { baseDelayMs: 100, maxDelayMs: 5000, halfLifeMs: 60_000, maxTracked: 10_000 };

interface IpState {
  /** Failures, decayed (halves every halfLifeMs). */
  score: number;
  /** When `score` was last brought up to date. */
  at: number;
  /** The end of this IP's queue of credential checks. */
  tail: Promise<void>;
  /** Checks queued or running. */
  busy: number;
}

/**
 * Slows password guessing per IP address. An IP's credential checks run one at a time (so
 * one peer never holds more than one of the thread pool's scrypt slots), and each failure
 * holds that queue for an exponentially growing delay before its refusal is sent (capped at
 * `maxDelayMs`). Other IPs are never waited for: timers, not blocking. Memory is bounded by
 * `maxTracked` IP entries.
 */
export class LoginThrottle {
  private readonly ips = new Map<string, IpState>();

  constructor(
    private readonly clock: Clock,
    private readonly options: ThrottleOptions = DEFAULT_THROTTLE,
  ) {}

  /** Number of IP addresses tracked now (for tests and metrics). */
  get tracked(): number {
    return this.ips.size;
  }

  /** The decayed failure count of `ip` now. */
  failures(ip: string): number {
    const state = this.ips.get(ip);
    return state ? this.decay(state) : 0;
  }

  /**
   * Runs `check` once every earlier check from `ip` has finished. When it reports a failure
   * (resolves false), the failure is counted and the queue is held for the delay before the
   * returned promise resolves, so the refusal arrives late and the next guess later still.
   * A check resolving undefined was skipped (its client left while queued): not counted.
   */
  run(ip: string, check: () => Promise<boolean | undefined>): Promise<boolean | undefined> {
    const state = this.enter(ip);
    state.busy++;
    const result = state.tail.then(async () => {
      const ok = await check();
      if (ok === false) await this.delay(this.fail(state));
      return ok;
    });
    const done = (): void => {
      state.busy--;
      if (state.busy === 0 && this.decay(state) < 0.05 && this.ips.get(ip) === state) this.ips.delete(ip);
    };
    state.tail = result.then(done, done);
    return result;
  }

  private enter(ip: string): IpState {
    let state = this.ips.get(ip);
    if (state) {
      // Most recently seen last, so eviction takes the stalest.
      this.ips.delete(ip);
      this.ips.set(ip, state);
      return state;
    }
    if (this.ips.size >= this.options.maxTracked) this.evict();
    state = { score: 0, at: this.clock.now(), tail: Promise.resolve(), busy: 0 };
    this.ips.set(ip, state);
    return state;
  }

  /** Forgets the stalest idle IP (or the stalest of all when every one is busy). */
  private evict(): void {
    for (const [ip, state] of this.ips) {
      if (state.busy === 0) {
        this.ips.delete(ip);
        return;
      }
    }
    this.ips.delete(this.ips.keys().next().value!);
  }

  private decay(state: IpState): number {
    const now = this.clock.now();
    if (now > state.at) {
      state.score *= 2 ** (-(now - state.at) / this.options.halfLifeMs);
      state.at = now;
    }
    return state.score;
  }

  /** Counts one failure; returns the delay it earns. */
  private fail(state: IpState): number {
    const score = this.decay(state) + 1;
    state.score = score;
    // Rounded, so the decay during the delays themselves does not shave a step off the next one.
    return Math.min(this.options.maxDelayMs, this.options.baseDelayMs * 2 ** (Math.round(score) - 1));
  }

  private delay(ms: number): Promise<void> {
    return new Promise((resolve) => this.clock.setTimeout(resolve, ms));
  }
}
