import { systemClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import { TestTarget, testConnector } from '../helpers/test-output.js';
import { describeOutputContract } from './output-contract.js';

/**
 * The `test` output (test/helpers/test-output.ts), which the outbox and dead-letter tests
 * stand on, keeps the same contract as every real output.
 */
describeOutputContract('test output', async () => {
  const targets: Record<string, TestTarget> = {};
  const type = testConnector(targets);
  const connector = type.create('contract', type.schema.parse({}), { log: silentLogger(), clock: systemClock });
  const target = targets['contract']!;
  return {
    connector,
    received: async () => [...target.received],
    breakTarget: async () => {
      target.mode = 'down';
    },
    repairTarget: async () => {
      target.mode = 'up';
    },
    close: async () => undefined,
    poison: (m) => ({ ...m, payload: Buffer.from('poison') }),
  };
});
