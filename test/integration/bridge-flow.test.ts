import type { MqttClient } from 'mqtt';
import { describe, expect, it, onTestFinished } from 'vitest';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { collect, connect, startBroker, type TestBroker } from '../helpers/mqtt.js';

/**
 * Flow control towards the remote: a signalbox broker as the remote, because it enforces
 * what MQTT 5 lets a server ask for (Receive Maximum, Maximum Packet Size) and disconnects
 * a client that ignores it.
 */

async function remote(limits: { maxInflight?: number; maxPacketSize?: number }, deps: Parameters<typeof startBroker>[1] = {}): Promise<TestBroker> {
  const r = await startBroker({ limits }, deps);
  onTestFinished(() => r.close());
  return r;
}

async function bridgeTo(url: string, settings: Record<string, unknown> = {}): Promise<TestEngine> {
  const cloud = { type: 'bridge', url, out: [{ local: 'telemetry/#', remote: 'site/telemetry/#', qos: 1 }], reconnect: { retryMinMs: 50, retryMaxMs: 500 }, outbox: { retryMinMs: 50, retryMaxMs: 500 }, ...settings };
  const sb = await startEngine({ config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs: ${JSON.stringify({ cloud })}\n` });
  onTestFinished(() => sb.close());
  return sb;
}

async function client(url: string, options: Parameters<typeof connect>[1] = {}): Promise<MqttClient> {
  const c = await connect(url, { protocolVersion: 5, ...options });
  onTestFinished(() => {
    c.end(true);
  });
  return c;
}

async function until(condition: () => boolean, what: string, within = 5000): Promise<void> {
  const deadline = Date.now() + within;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`not within ${within} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Publishes payloads 0..count-1 at QoS 1, 50 at a time (within the local broker's Receive Maximum). */
async function publishAll(pub: MqttClient, count: number, topic: (i: number) => string): Promise<void> {
  for (let start = 0; start < count; start += 50) {
    await Promise.all(Array.from({ length: Math.min(50, count - start) }, (_, k) => pub.publishAsync(topic(start + k), String(start + k), { qos: 1 })));
  }
}

describe('a bridge respects what the remote allows', () => {
  it('never has more unacknowledged messages out than the remote\'s Receive Maximum: 600 arrive once each, in order', async () => {
    const r = await remote({ maxInflight: 3 });
    const sub = await client(r.url);
    await sub.subscribeAsync('site/telemetry/#', { qos: 1 });
    const sb = await bridgeTo(r.url);
    await until(() => sb.engine.outputs.status()[0]?.state === 'idle' && r.broker.connectionCount === 2, 'the bridge connected');
    const pub = await client(sb.url);
    const COUNT = 600;
    const arriving = collect(sub, COUNT, { within: 15_000 });
    await publishAll(pub, COUNT, (i) => `telemetry/${i % 3}`);
    const got = await arriving;
    // A remote that saw more than 3 in flight would have disconnected the bridge (0x93), and
    // the resend would show as duplicates or a gap in the order.
    for (const topic of ['0', '1', '2']) {
      const seq = got.filter((m) => m.topic === `site/telemetry/${topic}`).map((m) => Number(m.payload.toString()));
      expect(seq).toEqual([...seq].sort((a, b) => a - b));
    }
    expect(new Set(got.map((m) => m.payload.toString())).size).toBe(COUNT);
    await until(() => sb.engine.outputs.status()[0]!.delivered === COUNT, 'every message confirmed');
    expect(sb.engine.outputs.status()[0]).toMatchObject({ retries: 0, delivered: COUNT });
  });

  it('dead-letters a message larger than the remote\'s Maximum Packet Size and delivers the rest in order', async () => {
    const r = await remote({ maxPacketSize: 1024 });
    const sub = await client(r.url);
    await sub.subscribeAsync('site/telemetry/#', { qos: 1 });
    const sb = await bridgeTo(r.url);
    await until(() => sb.engine.outputs.status()[0]?.state === 'idle' && r.broker.connectionCount === 2, 'the bridge connected');
    const pub = await client(sb.url);
    const arriving = collect(sub, 2, { within: 5000 });
    await pub.publishAsync('telemetry/a', 'before', { qos: 1 });
    await pub.publishAsync('telemetry/a', Buffer.alloc(2000, 120), { qos: 1 });
    await pub.publishAsync('telemetry/a', 'after', { qos: 1 });
    const got = await arriving;
    expect(got.map((m) => m.payload.toString())).toEqual(['before', 'after']);
    await until(() => sb.engine.deadLetters.list().length === 1, 'one dead letter');
    const [letter] = sb.engine.deadLetters.list();
    expect(letter).toMatchObject({ output: 'cloud', topic: 'site/telemetry/a' });
    expect(letter!.error).toMatch(/SB_ERR_OUTPUT_REJECTED: .*maximum packet size 1024/);
  });

  it('keeps at most maxInflight unacknowledged when the remote allows more, and still delivers everything in order', async () => {
    // The remote acknowledges each message 2 ms after it arrived, and counts how many wait.
    let waiting = 0;
    let most = 0;
    const r = await remote({ maxInflight: 1000 }, {
      onPublish: (message) => {
        if (!message.topic.startsWith('site/')) return undefined;
        most = Math.max(most, ++waiting);
        return new Promise<void>((resolve) => setTimeout(() => {
          waiting--;
          resolve();
        }, 2));
      },
    });
    const sub = await client(r.url);
    await sub.subscribeAsync('site/telemetry/#', { qos: 1 });
    const sb = await bridgeTo(r.url, { maxInflight: 4 });
    await until(() => sb.engine.outputs.status()[0]?.state === 'idle' && r.broker.connectionCount === 2, 'the bridge connected');
    const pub = await client(sb.url);
    const arriving = collect(sub, 200, { within: 10_000 });
    await publishAll(pub, 200, () => 'telemetry/x');
    const got = await arriving;
    expect(got.map((m) => Number(m.payload.toString()))).toEqual(Array.from({ length: 200 }, (_, i) => i));
    expect(most).toBe(4);
  });
});
