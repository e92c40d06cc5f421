import Database from 'better-sqlite3';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, test } from 'vitest';
import type { Broker } from '../../src/broker/broker.js';
import { parseBrokerConfig, type BrokerConfigInput } from '../../src/config/broker.js';
import { ConfigError, type ConfigIssue } from '../../src/config/issues.js';
import { loadProject } from '../../src/config/load.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { startEngine, writeProject, type TestEngine } from '../helpers/engine.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { collect, connect, nextMessage, noMessage, startBroker, type TestBroker } from '../helpers/mqtt.js';
import { openRaw, type RawClient } from '../helpers/raw-client.js';

// Every test gets its own broker; cleanups run last-registered first.
const cleanups: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function broker(config: BrokerConfigInput, clock?: FakeClock): Promise<TestBroker> {
  const tb = await startBroker(config, clock ? { clock } : {});
  cleanups.push(() => tb.close());
  return tb;
}

/** A raw TCP connection from `from` (a loopback address) that has sent nothing yet. */
async function raw(tb: TestBroker, from = '127.0.0.1', protocolVersion: 4 | 5 = 4): Promise<RawClient> {
  const r = await openRaw(tb.port, { localAddress: from, protocolVersion });
  cleanups.push(() => r.destroy());
  return r;
}

/** A raw connection from `from` that completed CONNECT. */
async function connected(tb: TestBroker, from = '127.0.0.1', protocolVersion: 4 | 5 = 4): Promise<RawClient> {
  const r = await raw(tb, from, protocolVersion);
  const connack = await r.connect();
  expect(connack.returnCode ?? connack.reasonCode).toBe(0);
  return r;
}

/** Resolves once `ready()` holds, checked every 5 ms; rejects after `within` ms with `what()`. */
async function until(ready: () => boolean, what: () => string, within = 2000): Promise<void> {
  const deadline = Date.now() + within;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`${what()} after ${within} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The broker closed `r` as it was accepted: no packet, just the close. */
async function expectClosedAtAccept(r: RawClient): Promise<void> {
  await r.closed();
  await expect(r.nextPacket()).rejects.toThrow(/closed/);
}

const open = (b: Broker, n: number) => until(() => b.connectionCount === n, () => `broker has ${b.connectionCount} connections, expected ${n}`);

describe('connection caps', () => {
  test('with maxConnections 3, a fourth connection is closed at accept and counted; once one leaves, a new one gets in', async () => {
    const tb = await broker({ limits: { maxConnections: 3 } });
    const first = await connected(tb);
    await connected(tb);
    // A connection that has not sent CONNECT yet counts too.
    await raw(tb, '127.0.0.2');
    await open(tb.broker, 3);

    await expectClosedAtAccept(await raw(tb, '127.0.0.3'));
    expect(tb.broker.stats.connectionsRefusedMax).toBe(1);

    first.destroy();
    await open(tb.broker, 2);
    await connected(tb);
    expect(tb.broker.stats.connectionsRefusedMax).toBe(1);
  });

  test('with maxPendingConnectionsPerIp 2, a third connection from one address before CONNECT is closed; other addresses and connected clients are not affected', async () => {
    const tb = await broker({ limits: { maxPendingConnectionsPerIp: 2 } });
    const a = await raw(tb, '127.0.0.1');
    await raw(tb, '127.0.0.1');
    await open(tb.broker, 2);

    await expectClosedAtAccept(await raw(tb, '127.0.0.1'));
    expect(tb.broker.stats.connectionsRefusedPendingPerIp).toBe(1);

    // Another address has its own allowance.
    await connected(tb, '127.0.0.2');
    await raw(tb, '127.0.0.2');

    // Once one of the two completes CONNECT it no longer counts: one more may wait.
    expect((await a.connect()).returnCode).toBe(0);
    const c = await raw(tb, '127.0.0.1');
    expect((await c.connect()).returnCode).toBe(0);
    // And one that closes before CONNECT frees its place too.
    const d = await raw(tb, '127.0.0.1');
    await open(tb.broker, 6);
    await expectClosedAtAccept(await raw(tb, '127.0.0.1'));
    d.destroy();
    await open(tb.broker, 5);
    await raw(tb, '127.0.0.1');
    await open(tb.broker, 6);
    expect(tb.broker.stats.connectionsRefusedPendingPerIp).toBe(2);
  });

  test('with maxConnectRatePerIp 3, the fourth connection from one address within a second is closed at accept; another address, and the same one a second later, get in', async () => {
    const clock = new FakeClock();
    const tb = await broker({ limits: { maxConnectRatePerIp: 3 } }, clock);
    for (let i = 0; i < 3; i++) (await connected(tb, '127.0.0.1')).destroy();
    await expectClosedAtAccept(await raw(tb, '127.0.0.1'));
    expect(tb.broker.stats.connectionsRefusedRate).toBe(1);

    await connected(tb, '127.0.0.2');

    // Half a second refills half the bucket: one and a half connections' worth.
    clock.advance(500);
    await connected(tb, '127.0.0.1');
    await expectClosedAtAccept(await raw(tb, '127.0.0.1'));
    clock.advance(500);
    for (let i = 0; i < 2; i++) await connected(tb, '127.0.0.1');
    expect(tb.broker.stats.connectionsRefusedRate).toBe(2);
  });

  test('a connection that sends no CONNECT within connectTimeoutMs is closed and counted', async () => {
    const clock = new FakeClock();
    const tb = await broker({ connectTimeoutMs: 500 }, clock);
    const r = await raw(tb);
    await open(tb.broker, 1);
    clock.advance(499);
    expect(r.isClosed).toBe(false);
    clock.advance(1);
    await expectClosedAtAccept(r);
    expect(tb.broker.stats.connectTimeouts).toBe(1);
  });
});

describe('subscriptions per client', () => {
  test.each([
    { version: 5 as const, refused: 0x97, hex: '0x97 Quota exceeded' },
    { version: 4 as const, refused: 0x80, hex: '0x80 Failure' },
  ])('with maxSubscriptions 2, an MQTT v$version client gets $hex for a third filter, counted; re-subscribing a held filter still works', async ({ version, refused }) => {
    const tb = await broker({ limits: { maxSubscriptions: 2 } });
    const r = await connected(tb, '127.0.0.1', version);
    r.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/1', qos: 1 }, { topic: 'a/2', qos: 0 }, { topic: 'a/3', qos: 1 }] });
    expect((await r.expectPacket('suback')).granted).toEqual([1, 0, refused]);
    expect(tb.broker.stats.subscriptionsRefused).toBe(1);

    r.send({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: 'a/1', qos: 0 }, { topic: 'b/#', qos: 0 }] });
    expect((await r.expectPacket('suback')).granted).toEqual([0, refused]);
    expect(tb.broker.stats.subscriptionsRefused).toBe(2);

    // The refused filter delivers nothing; the held ones do.
    const pub = await connect(tb.url);
    cleanups.push(() => pub.endAsync(true));
    await pub.publishAsync('a/3', 'no', { qos: 1 });
    await pub.publishAsync('a/2', 'yes', { qos: 1 });
    expect((await r.expectPacket('publish')).topic).toBe('a/2');
  });
});

describe('retained messages', () => {
  /** A whole signalbox (with storage) and an MQTT 5 publisher and `#` watcher on it. */
  async function scene(limits: BrokerConfigInput['limits']): Promise<{ te: TestEngine; pub: MqttClient; watcher: MqttClient; stored: () => Record<string, string> }> {
    const te = await startEngine({ config: `broker: ${JSON.stringify({ listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }], limits })}\n` });
    cleanups.push(() => te.close());
    const pub = await connect(te.url, { protocolVersion: 5, clientId: 'pub' });
    cleanups.push(() => pub.endAsync(true));
    const watcher = await connect(te.url, { protocolVersion: 5, clientId: 'watcher' });
    cleanups.push(() => watcher.endAsync(true));
    await watcher.subscribeAsync('r/#', { qos: 1 });
    const stored = () => {
      const db = new Database(te.project.config.storage.path, { readonly: true });
      try {
        const rows = db.prepare('SELECT topic, payload FROM retained ORDER BY topic').all() as { topic: string; payload: Buffer }[];
        return Object.fromEntries(rows.map((r) => [r.topic, r.payload.toString()]));
      } finally {
        db.close();
      }
    };
    return { te, pub, watcher, stored };
  }

  /** What a new subscriber to `r/#` gets as retained messages, topic → payload. */
  async function retainedSeen(te: TestEngine, count: number): Promise<Record<string, string>> {
    const c = await connect(te.url, { protocolVersion: 5 });
    cleanups.push(() => c.endAsync(true));
    const got = collect(c, count);
    await c.subscribeAsync('r/#', { qos: 1 });
    const messages = await got;
    await noMessage(c, { forMs: 100 });
    return Object.fromEntries(messages.map((m) => [m.topic, m.payload.toString()]));
  }

  test('with maxRetained 2, a retained publish to a third topic is delivered live and acknowledged but not retained, and counted; replacing and clearing always work', async () => {
    const { te, pub, watcher, stored } = await scene({ maxRetained: 2 });
    await pub.publishAsync('r/1', 'one', { qos: 1, retain: true });
    await pub.publishAsync('r/2', 'two', { qos: 1, retain: true });

    const live = nextMessage(watcher);
    // MQTT 5: reason 0 (the message was accepted and routed; only its retained copy was not kept).
    const ack = (await pub.publishAsync('r/3', 'three', { qos: 1, retain: true })) as { reasonCode?: number } | undefined;
    expect(ack?.reasonCode ?? 0).toBe(0);
    expect((await live).topic).toBe('r/3');
    expect(te.engine.broker.stats.retainedRefused).toBe(1);
    expect(stored()).toEqual({ 'r/1': 'one', 'r/2': 'two' });
    expect(await retainedSeen(te, 2)).toEqual({ 'r/1': 'one', 'r/2': 'two' });

    // Replacing a retained topic is never refused, even with a larger payload.
    await pub.publishAsync('r/1', 'one, replaced with more bytes', { qos: 1, retain: true });
    // Clearing one makes room for a new topic.
    await pub.publishAsync('r/2', '', { qos: 1, retain: true });
    await pub.publishAsync('r/3', 'three', { qos: 1, retain: true });
    expect(te.engine.broker.stats.retainedRefused).toBe(1);
    expect(stored()).toEqual({ 'r/1': 'one, replaced with more bytes', 'r/3': 'three' });
    expect(await retainedSeen(te, 2)).toEqual({ 'r/1': 'one, replaced with more bytes', 'r/3': 'three' });
  });

  test('with maxRetainedBytes 100, a retained message to a new topic that would pass 100 bytes (payload plus topic) is not retained, and counted', async () => {
    const { te, pub, stored } = await scene({ maxRetainedBytes: 100 });
    await pub.publishAsync('r/a', 'x'.repeat(57), { qos: 1, retain: true }); // 60 bytes
    await pub.publishAsync('r/b', 'x'.repeat(41), { qos: 1, retain: true }); // 44 bytes: 104 > 100
    expect(te.engine.broker.stats.retainedRefused).toBe(1);
    await pub.publishAsync('r/c', 'x'.repeat(37), { qos: 1, retain: true }); // 40 bytes: exactly 100
    expect(te.engine.broker.stats.retainedRefused).toBe(1);
    expect(Object.keys(stored())).toEqual(['r/a', 'r/c']);
    await pub.publishAsync('r/d', 'x', { qos: 1, retain: true });
    expect(te.engine.broker.stats.retainedRefused).toBe(2);
    expect(Object.keys(await retainedSeen(te, 2)).sort()).toEqual(['r/a', 'r/c']);
  });
});

describe('limits in signalbox.yaml', () => {
  /** Loads a config whose `broker.limits` is `limits` (YAML flow text); returns the issues, or throws if it loads. */
  function issuesOf(limits: string): { issues: ConfigIssue[]; text: string; file: string } {
    const text = `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n  limits: ${limits}\n`;
    const project = writeProject({ config: text });
    try {
      loadProject(project.configFile, { explicit: true, registry: createOutputRegistry(), env: {} });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      return { issues: err.issues, text, file: project.configFile };
    } finally {
      project.cleanup();
    }
    throw new Error(`limits ${limits} were accepted`);
  }

  test.each([
    { limits: '{ maxConnections: 0 }', value: '0 }', message: /maxConnections|>=1|too small/i },
    { limits: '{ maxPendingConnectionsPerIp: 1.5 }', value: '1.5', message: /int/i },
    { limits: '{ maxConnectRatePerIp: "fast" }', value: '"fast"', message: /number/i },
    { limits: '{ maxRetained: -1 }', value: '-1', message: /too small|>=1/i },
    { limits: '{ maxRetainedBytes: lots }', value: 'lots', message: /maxRetainedBytes must be a size/ },
    { limits: '{ maxSendBufferBytes: 1KiB }', value: '1KiB', message: /at least 64KiB/ },
    { limits: '{ slowConsumerTimeoutMs: 0 }', value: '0 }', message: /too small|>=1/i },
    { limits: '{ maxConections: 10 }', value: 'maxConections', message: /maxConections/ },
  ])('$limits is SB_CONFIG_SCHEMA at the value', ({ limits, value, message }) => {
    const { issues, text, file } = issuesOf(limits);
    expect(issues, issues.map((i) => `${i.line}:${i.col} ${i.code} ${i.message}`).join('\n')).toHaveLength(1);
    const at = text.indexOf(value, text.indexOf('limits:'));
    const line = text.slice(0, at).split('\n').length;
    const col = at - text.lastIndexOf('\n', at - 1);
    expect(issues[0]).toMatchObject({ code: 'SB_CONFIG_SCHEMA', line, col });
    expect(issues[0]!.file).toContain(file.split('/').pop());
    expect(issues[0]!.message).toMatch(message);
  });

  test('every limit has a finite default', () => {
    const limits = parseBrokerConfig({}).limits;
    for (const [name, value] of Object.entries(limits)) expect(Number.isFinite(value), name).toBe(true);
    expect(limits).toMatchObject({ maxConnections: 10_000, maxPendingConnectionsPerIp: 100, maxConnectRatePerIp: 100, maxRetained: 100_000, maxRetainedBytes: 64 * 1024 * 1024, maxSendBufferBytes: 4 * 1024 * 1024, slowConsumerTimeoutMs: 30_000 });
  });
});
