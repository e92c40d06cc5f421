import { Writable } from 'node:stream';
import { pino } from 'pino';
import { describe, expect, test } from 'vitest';
import { ConnectionGate } from '../../../src/broker/limits.js';
import { LIMIT_LOG_INTERVAL_MS, LimitLog, limitCounters } from '../../../src/broker/limits-log.js';
import { FakeClock } from '../../helpers/fake-clock.js';

const limits = { maxConnections: 1000, maxPendingConnectionsPerIp: 2, maxConnectRatePerIp: 4 };

describe('ConnectionGate', () => {
  test('refuses beyond maxConnections whatever the address', () => {
    const gate = new ConnectionGate(limits, () => 0);
    expect(gate.admit('10.0.0.1', 999)).toBeUndefined();
    expect(gate.admit('10.0.0.2', 1000)).toBe('connectionsRefusedMax');
  });

  test('counts connections before CONNECT per address, and a released one makes room', () => {
    const gate = new ConnectionGate(limits, () => 0);
    expect(gate.admit('10.0.0.1', 0)).toBeUndefined();
    expect(gate.admit('10.0.0.1', 1)).toBeUndefined();
    expect(gate.admit('10.0.0.1', 2)).toBe('connectionsRefusedPendingPerIp');
    expect(gate.admit('10.0.0.2', 2)).toBeUndefined();
    gate.release('10.0.0.1');
    expect(gate.admit('10.0.0.1', 3)).toBeUndefined();
  });

  test('a token bucket per address allows maxConnectRatePerIp a second, refilling continuously; a refusal costs no token', () => {
    const clock = new FakeClock();
    const gate = new ConnectionGate(limits, () => clock.now());
    for (let i = 0; i < 4; i++) {
      expect(gate.admit('10.0.0.1', 0)).toBeUndefined();
      gate.release('10.0.0.1');
    }
    expect(gate.admit('10.0.0.1', 0)).toBe('connectionsRefusedRate');
    expect(gate.admit('10.0.0.1', 0)).toBe('connectionsRefusedRate');
    clock.advance(250); // one token back
    expect(gate.admit('10.0.0.1', 0)).toBeUndefined();
    expect(gate.admit('10.0.0.1', 0)).toBe('connectionsRefusedRate');
    clock.advance(10_000); // never more than a second's worth
    gate.release('10.0.0.1');
    for (let i = 0; i < 4; i++) {
      expect(gate.admit('10.0.0.1', 0)).toBeUndefined();
      gate.release('10.0.0.1');
    }
    expect(gate.admit('10.0.0.1', 0)).toBe('connectionsRefusedRate');
  });

  test('forgets idle addresses, so 100,000 addresses that each connect once leave nothing behind; pending ones are kept', () => {
    const clock = new FakeClock();
    const gate = new ConnectionGate({ ...limits, maxConnectRatePerIp: 100 }, () => clock.now());
    for (let i = 0; i < 100_000; i++) {
      const address = `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;
      gate.admit(address, 0);
      gate.release(address);
    }
    gate.admit('192.168.0.1', 0); // still before CONNECT
    expect(gate.trackedAddresses).toBe(100_001);
    clock.advance(1000);
    gate.admit('192.168.0.2', 1); // the sweep runs on an accept
    expect(gate.trackedAddresses).toBe(2);
  });
});

/** A logger whose JSON lines are collected in `lines`. */
function capture(): { log: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

/** pino writes through a stream; let it deliver what was logged. */
const flushed = () => new Promise((resolve) => setImmediate(resolve));

describe('LimitLog', () => {
  test('counts every hit, logs the first at once and the rest as one line per interval with counts', async () => {
    const clock = new FakeClock();
    const { log, lines } = capture();
    const counters = limitCounters();
    const limitLog = new LimitLog(counters, log, clock);

    limitLog.hit('droppedSendBuffer', 'slow-client');
    for (let i = 0; i < 999; i++) limitLog.hit('droppedSendBuffer', 'slow-client');
    limitLog.hit('connectTimeouts', '10.0.0.1:5000');
    await flushed();
    expect(counters.droppedSendBuffer).toBe(1000);
    expect(counters.connectTimeouts).toBe(1);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 40, limit: 'droppedSendBuffer', client: 'slow-client' });

    clock.advance(LIMIT_LOG_INTERVAL_MS);
    await flushed();
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ level: 40, limitsHit: { droppedSendBuffer: 999, connectTimeouts: 1 } });

    // A quiet interval logs nothing, and the next hit is logged at once again.
    clock.advance(LIMIT_LOG_INTERVAL_MS);
    clock.advance(LIMIT_LOG_INTERVAL_MS);
    await flushed();
    expect(lines).toHaveLength(2);
    limitLog.hit('retainedRefused', 'pub');
    await flushed();
    expect(lines).toHaveLength(3);
    expect(lines[2]).toMatchObject({ limit: 'retainedRefused', client: 'pub' });

    limitLog.hit('retainedRefused', 'pub');
    limitLog.close();
    await flushed();
    expect(lines[3]).toMatchObject({ limitsHit: { retainedRefused: 1 } });
    expect(clock.pending).toBe(0);
  });
});
