import mqtt, { type MqttClient } from 'mqtt';
import { describe, expect, it, onTestFinished } from 'vitest';
import { durableProject, eventually, startCli } from '../helpers/durable.js';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { connect } from '../helpers/mqtt.js';
import { bridgeState, mosquittoPeer, startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';

/**
 * A bridge's out direction across a remote outage: numbered QoS 1 messages published to
 * signalbox go out through the durable outbox to Mosquitto, which is stopped (SIGTERM by PID)
 * in the middle and started again on the same port. Mosquitto keeps the remote reader's
 * persistent session in its persistence file, so what it accepted before stopping is still
 * delivered after. Every message must arrive, in order; what the bridge sends twice is bounded
 * by the in-flight window (maxInflight: what the outage cut short).
 */

/** outbox.batchSize and maxInflight: the bridge's in-flight window towards Mosquitto. */
const BATCH_SIZE = 100;
/** QoS 1 publishes the local publisher keeps unacknowledged. */
const WINDOW = 50;

/** Persistent sessions and queued messages survive a restart; the reader's queue holds everything. */
const MOSQUITTO_EXTRA = 'persistence true\nmax_queued_messages 20000';

function bridgeOutputs(url: string): string {
  const cloud = {
    type: 'bridge',
    url,
    reconnect: { retryMinMs: 50, retryMaxMs: 500 },
    maxInflight: BATCH_SIZE,
    outbox: { batchSize: BATCH_SIZE, retryMinMs: 50, retryMaxMs: 500 },
    out: [{ local: 'telemetry/#', remote: 'site-a/telemetry/#' }],
  };
  return `outputs: ${JSON.stringify({ cloud })}`;
}

/** The remote reader: a 3.1.1 persistent session (clean=false, fixed client id) that reconnects by itself. */
interface Reader {
  /** Every number received, duplicates included, in arrival order. */
  numbers: number[];
  /**
   * How many times a number arrived again without the DUP flag: sent to Mosquitto again by the
   * bridge. (Repeats with DUP set are Mosquitto redelivering to the reader after its restart.)
   */
  resentByBridge(): number;
  /** Distinct numbers received. */
  distinct: Set<number>;
  /** Resolves once `count` distinct numbers arrived; rejects after `within` ms saying how many did. */
  waitForDistinct(count: number, within: number): Promise<void>;
}

async function startReader(mosquitto: Mosquitto): Promise<Reader> {
  const client = mqtt.connect(mosquitto.url, { clientId: 'site-a-reader', clean: false, protocolVersion: 4, reconnectPeriod: 50, connectTimeout: 2000, keepalive: 0 });
  onTestFinished(() => {
    client.end(true);
  });
  client.on('error', () => undefined); // refused while Mosquitto is down; it reconnects
  const numbers: number[] = [];
  const distinct = new Set<number>();
  let resent = 0;
  const listeners = new Set<() => void>();
  client.on('message', (_topic, payload, packet) => {
    const n = Number(payload.toString());
    numbers.push(n);
    if (distinct.has(n) && !packet.dup) resent++;
    distinct.add(n);
    for (const l of listeners) l();
  });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    setTimeout(() => reject(new Error('reader did not connect within 2000 ms')), 2000);
  });
  await client.subscribeAsync('site-a/telemetry/#', { qos: 1 });
  return {
    numbers,
    distinct,
    resentByBridge: () => resent,
    waitForDistinct(count, within) {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (distinct.size < count) return;
          listeners.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`expected ${count} distinct numbers within ${within} ms, got ${distinct.size} (${numbers.length} messages)`));
        }, within);
        listeners.add(check);
        check();
      });
    },
  };
}

/**
 * Publishes `from`…`to - 1` as QoS 1 payloads on telemetry/seq, at most WINDOW unacknowledged,
 * in order. `before[n]`, when given, is awaited before publishing n.
 */
async function publishNumbers(client: MqttClient, from: number, to: number, before: Record<number, () => Promise<void>> = {}): Promise<void> {
  const inflight = new Set<Promise<unknown>>();
  for (let n = from; n < to; n++) {
    await before[n]?.();
    const p = client.publishAsync('telemetry/seq', String(n), { qos: 1 }).finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= WINDOW) await Promise.race(inflight);
  }
  await Promise.all(inflight);
}

/**
 * Checks what the reader got against 0…total-1: all of them, in order, meaning no number
 * arrives before every smaller one has (a resent stretch repeats numbers already seen, it
 * never skips ahead).
 */
function checkInOrder(numbers: readonly number[], total: number): void {
  let next = 0; // the smallest number not received yet
  for (const [i, n] of numbers.entries()) {
    if (n > next) throw new Error(`message ${i} is ${n}, but ${next} has not arrived yet: out of order or lost`);
    if (n === next) next++;
  }
  expect(next, 'every number arrived').toBe(total);
}

describe('a bridge across a remote outage', () => {
  it('delivers all 5,000 QoS 1 messages in order when Mosquitto stops mid-stream and starts again', async (ctx) => {
    mosquittoPeer.require(ctx);
    const TOTAL = 5000;
    const mosquitto = await startMosquitto({ extra: MOSQUITTO_EXTRA });
    const reader = await startReader(mosquitto);
    const sb: TestEngine = await startEngine({ config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n${bridgeOutputs(mosquitto.url)}\n` });
    let closing: Promise<void> | undefined;
    const close = () => (closing ??= sb.close());
    onTestFinished(close);
    await bridgeState(sb.url, 'online');
    const publisher = await connect(sb.url);
    onTestFinished(() => {
      publisher.end(true);
    });

    // Half way through, once the reader has 1,000, Mosquitto stops while publishing carries on.
    let stopping: Promise<void> | undefined;
    const startOutage = async () => {
      await reader.waitForDistinct(1000, 10_000);
      stopping = mosquitto.stop();
    };
    await publishNumbers(publisher, 0, TOTAL, { [TOTAL / 2]: startOutage });
    await stopping;

    // Every message was acknowledged: each is in the outbox or already at the remote.
    await eventually(() => sb.engine.outputs.status()[0]!.retries > 0, 'the drain retries against the stopped remote', { within: 3000 });
    expect(sb.engine.outputs.status()[0]!.waiting, 'messages wait in the outbox during the outage').toBeGreaterThan(0);

    await mosquitto.restart();
    onTestFinished(close); // before the new Mosquitto process is killed
    await reader.waitForDistinct(TOTAL, 10_000);

    checkInOrder(reader.numbers, TOTAL);
    // Only the batch the outage cut short is sent again (whole).
    expect(reader.resentByBridge()).toBeLessThanOrEqual(BATCH_SIZE);
  });

  it('delivers every acknowledged message after Mosquitto is down and signalbox is killed with SIGKILL, once both are back', async (ctx) => {
    mosquittoPeer.require(ctx);
    const BEFORE = 1000;
    const TOTAL = 3000;
    const mosquitto = await startMosquitto({ extra: MOSQUITTO_EXTRA });
    const reader = await startReader(mosquitto);
    const project = await durableProject({ extra: bridgeOutputs(mosquitto.url) });
    const first = await startCli(project);
    await bridgeState(project.url, 'online');

    const publisher = await connect(project.url);
    await publishNumbers(publisher, 0, BEFORE);
    await reader.waitForDistinct(BEFORE, 5000);

    await mosquitto.stop();
    await publishNumbers(publisher, BEFORE, TOTAL); // acknowledged: in signalbox's outbox on disk
    publisher.end(true);
    await first.stop('SIGKILL');

    await mosquitto.restart();
    await startCli(project);
    await reader.waitForDistinct(TOTAL, 10_000);

    checkInOrder(reader.numbers, TOTAL);
    expect(reader.resentByBridge()).toBeLessThanOrEqual(BATCH_SIZE);
  });
});
