import { z } from 'zod';
import { OutputError, type ConnectorType, type OutboxMessage } from '../../src/outputs/connector.js';
import { remoteActionFields, remoteActionType } from '../../src/outputs/remote.js';

/**
 * A remote output for tests: records what it was given, and fails on command. `mode`
 * `down` throws retryable errors (the target is unreachable); messages `refuses` matches
 * (by default, payloads containing `poison`) are refused with a permanent error.
 */
export class TestTarget {
  readonly received: OutboxMessage[] = [];
  mode: 'up' | 'down' = 'up';
  /** Which messages the target refuses for good. Default: payloads containing `poison`. */
  refuses: (message: OutboxMessage) => boolean = (m) => m.payload.includes('poison');
  writes = 0;
  failures = 0;
  private waiters: { count: number; resolve: () => void }[] = [];

  async write(batch: readonly OutboxMessage[]): Promise<void> {
    this.writes++;
    if (this.mode === 'down') {
      this.failures++;
      throw new OutputError('test target is down', { retryable: true });
    }
    if (batch.some((m) => this.refuses(m))) {
      this.failures++;
      throw new OutputError('test target refuses poison', { retryable: false, code: 'SB_ERR_TEST_POISON' });
    }
    this.received.push(...batch);
    this.waiters = this.waiters.filter((w) => {
      if (this.received.length < w.count) return true;
      w.resolve();
      return false;
    });
  }

  /** Resolves once `count` messages arrived in total, or rejects after `within` ms. */
  waitFor(count: number, { within = 5000 } = {}): Promise<void> {
    if (this.received.length >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`expected ${count} messages within ${within} ms, got ${this.received.length}`)), within);
      this.waiters.push({ count, resolve: () => (clearTimeout(timer), resolve()) });
    });
  }
}

/**
 * The `test` connector type (outputs.<name>.type: test) delivering to `targets[name]`
 * (created on first use). A connector refuses writes after `close()` with a retryable
 * OutputError, as the output contract asks; `close()` may be called more than once.
 */
export function testConnector(targets: Record<string, TestTarget>): ConnectorType {
  return {
    type: 'test',
    description: 'A test target that records and fails on command.',
    schema: z.object({}).strict(),
    create(name) {
      const target = (targets[name] ??= new TestTarget());
      let closed = false;
      return {
        write: (batch) => (closed ? Promise.reject(new OutputError(`test output "${name}" is closed`, { retryable: true })) : target.write(batch)),
        close: async () => {
          closed = true;
        },
      };
    },
  };
}

/** The `- test: { output: name }` rule action. */
export const testAction = remoteActionType({
  name: 'test',
  connectorType: 'test',
  description: 'Send to a test output.',
  schema: z.object(remoteActionFields).strict(),
});
