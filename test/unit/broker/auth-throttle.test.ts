import { describe, expect, test } from 'vitest';
import { LoginThrottle } from '../../../src/broker/auth-throttle.js';
import { FakeClock } from '../../helpers/fake-clock.js';

const OPTIONS = { baseDelayMs: 100, maxDelayMs: 5000, halfLifeMs: 60_000, maxTracked: 3 };

/** Lets every promise callback queued so far run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

/** Runs one check for `ip` and reports when it resolved. */
function attempt(throttle: LoginThrottle, ip: string, ok: boolean): { done: boolean; result: Promise<boolean | undefined> } {
  const state = { done: false, result: undefined as unknown as Promise<boolean | undefined> };
  state.result = throttle.run(ip, () => Promise.resolve(ok)).then((r) => {
    state.done = true;
    return r;
  });
  return state;
}

describe('LoginThrottle', () => {
  test('each failure from an IP is refused after a delay that doubles, up to the cap', async () => {
    const clock = new FakeClock();
    const throttle = new LoginThrottle(clock, OPTIONS);
    const expected = [100, 200, 400, 800, 1600, 3200, 5000, 5000];
    for (const delay of expected) {
      const a = attempt(throttle, '10.0.0.1', false);
      await settle();
      clock.advance(delay - 1);
      await settle();
      expect(a.done, `refused before ${delay} ms`).toBe(false);
      clock.advance(1);
      await settle();
      expect(a.done).toBe(true);
      expect(await a.result).toBe(false);
    }
    // The count decays a little during the 16 s of delays themselves.
    expect(throttle.failures('10.0.0.1')).toBeGreaterThan(expected.length - 2);
  });

  test('checks from one IP run one at a time; another IP is never kept waiting', async () => {
    const clock = new FakeClock();
    const throttle = new LoginThrottle(clock, OPTIONS);
    const first = attempt(throttle, '10.0.0.1', false);
    const queued = attempt(throttle, '10.0.0.1', true);
    const other = attempt(throttle, '10.0.0.2', true);
    await settle();
    expect(other.done).toBe(true);
    expect(first.done).toBe(false);
    expect(queued.done).toBe(false);
    clock.advance(100);
    await settle();
    expect(first.done).toBe(true);
    expect(queued.done).toBe(true);
    expect(await queued.result).toBe(true);
  });

  test('failure counts halve every half-life', async () => {
    const clock = new FakeClock();
    const throttle = new LoginThrottle(clock, OPTIONS);
    for (const delay of [100, 200, 400, 800]) {
      const a = attempt(throttle, 'ip', false);
      await settle();
      clock.advance(delay);
      await settle();
      await a.result;
    }
    expect(throttle.failures('ip')).toBeCloseTo(4, 0);
    const before = throttle.failures('ip');
    clock.advance(60_000);
    expect(throttle.failures('ip')).toBeCloseTo(before / 2, 5);
    clock.advance(120_000);
    expect(throttle.failures('ip')).toBeCloseTo(before / 8, 5);
  });

  test('a skipped check (client gone) is not counted', async () => {
    const clock = new FakeClock();
    const throttle = new LoginThrottle(clock, OPTIONS);
    expect(await throttle.run('ip', () => Promise.resolve(undefined))).toBeUndefined();
    expect(throttle.failures('ip')).toBe(0);
  });

  test('at most maxTracked IPs are remembered', async () => {
    const clock = new FakeClock();
    const throttle = new LoginThrottle(clock, OPTIONS);
    for (let i = 0; i < 50; i++) {
      const a = attempt(throttle, `10.0.${i}.1`, false);
      await settle();
      clock.advance(100);
      await settle();
      await a.result;
      expect(throttle.tracked).toBeLessThanOrEqual(3);
    }
    expect(throttle.failures('10.0.49.1')).toBeCloseTo(1, 2);
    expect(throttle.failures('10.0.0.1')).toBe(0);
  });

  test('an IP whose only checks succeeded is forgotten', async () => {
    const clock = new FakeClock();
    const throttle = new LoginThrottle(clock, OPTIONS);
    await attempt(throttle, 'ip', true).result;
    await settle();
    expect(throttle.tracked).toBe(0);
  });
});
