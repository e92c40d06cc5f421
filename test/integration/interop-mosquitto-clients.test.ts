import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connect, nextMessage, type TestBroker, startBroker } from '../helpers/mqtt.js';
import { PEERS_INSTALL_HINT, type Child, expectCleanExit, requireCommand, requirePeers, runProcess, startProcess } from '../helpers/peers.js';

// Real mosquitto_pub / mosquitto_sub (Debian mosquitto-clients 2.0.x) against our broker.
// mosquitto_sub always runs with -C (exit after n messages) and -W (exit after n seconds),
// so it ends by itself; the process deadline and the end of each test kill it regardless.

const mosquittoSub = requireCommand('mosquitto_sub', PEERS_INSTALL_HINT);
const mosquittoPub = requireCommand('mosquitto_pub', PEERS_INSTALL_HINT);

type Version = 'mqttv311' | 'mqttv5';
type QoS = 0 | 1 | 2;

/** One line of `mosquitto_sub -F %j`. */
interface SubJson {
  topic: string;
  qos: number;
  retain: number;
  payload: string;
  properties?: Record<string, unknown>;
}

/** mosquitto exits 27 when -W expires before -C messages arrived. */
const EXIT_TIMED_OUT = 27;
const SUB_WAIT_S = 8;

let server: TestBroker;

beforeAll(async () => {
  server = await startBroker();
});

afterAll(async () => {
  await server?.close();
});

beforeEach((ctx) => requirePeers(ctx, mosquittoSub, mosquittoPub));

/** A topic no other test uses, so retained messages and subscriptions never cross tests. */
function freshTopic(what: string): string {
  return `interop/mosquitto/${what}/${randomUUID()}`;
}

interface Subscriber {
  child: Child;
  /** The QoS granted in SUBACK, as mosquitto_sub -d reports it. */
  grantedQos: number;
  /** Waits for mosquitto_sub to exit by itself and returns the message lines it printed. */
  lines(): Promise<string[]>;
  /** Like {@link lines}, parsed; for the default `-F %j` format. */
  messages(): Promise<SubJson[]>;
}

/**
 * Starts `mosquitto_sub -d -F %j` and resolves once the broker has acknowledged the
 * subscription (the "Subscribed (mid: n): q" debug line), so a publish after this is seen.
 * Debug lines start with "Client" or "Subscribed"; message lines are the JSON objects.
 */
async function subscribe(topic: string, { version, qos, count, extra = [], format = '%j' }: {
  version: Version;
  qos: QoS;
  count: number;
  extra?: string[];
  format?: string;
}): Promise<Subscriber> {
  const args = ['-h', '127.0.0.1', '-p', String(server.port), '-V', version, '-t', topic, '-q', String(qos),
    '-C', String(count), '-W', String(SUB_WAIT_S), '-d', '-F', format, ...extra];
  // stdbuf (coreutils): mosquitto_sub block-buffers its -d lines on a pipe, so we would never see "Subscribed".
  const child = startProcess('stdbuf', ['-oL', 'mosquitto_sub', ...args], { deadlineMs: (SUB_WAIT_S + 4) * 1000 });
  const subscribed = await child.waitForLine(/^Subscribed \(mid: \d+\): \d+/, { within: 5000 });
  const grantedQos = Number(/\): (\d+)/.exec(subscribed)![1]);
  const lines = async () => messageLines(expectCleanExit(await child.exited).stdout);
  return { child, grantedQos, lines, messages: async () => (await lines()).map(parseJson) };
}

/** The lines of mosquitto_sub's stdout that are messages, not -d debug output. */
function messageLines(stdout: string): string[] {
  return stdout.split('\n').filter((line) => line !== '' && !/^(Client |Subscribed )/.test(line));
}

function parseJson(line: string): SubJson {
  return JSON.parse(line) as SubJson;
}

/** Runs mosquitto_pub to completion; for QoS 1/2 it exits 0 only after PUBACK / PUBCOMP. */
async function publish(topic: string, { version, qos, message, extra = [] }: {
  version: Version;
  qos: QoS;
  message?: string;
  extra?: string[];
}): Promise<void> {
  const body = message === undefined ? [] : ['-m', message];
  const args = ['-h', '127.0.0.1', '-p', String(server.port), '-V', version, '-t', topic, '-q', String(qos), '-d', ...body, ...extra];
  expectCleanExit(await runProcess('mosquitto_pub', args, { deadlineMs: 10_000 }));
}

const versions: Version[] = ['mqttv311', 'mqttv5'];
const matrix = versions.flatMap((version) => ([0, 1, 2] as const).map((qos) => [version, qos, qos] as const));

describe('mosquitto_pub and mosquitto_sub against signalbox', () => {
  it.each(matrix)('mosquitto_sub (-V %s) receives at QoS %s what mosquitto_pub publishes at QoS %s', async (version, qos) => {
    const topic = freshTopic(`q${qos}`);
    const sub = await subscribe(topic, { version, qos, count: 1 });
    expect(sub.grantedQos).toBe(qos);

    await publish(topic, { version, qos, message: `héllo wörld at QoS ${qos}` });

    const [message, ...rest] = await sub.messages();
    expect(rest).toEqual([]);
    expect(message).toMatchObject({ topic, qos, retain: 0, payload: `héllo wörld at QoS ${qos}` });
  });

  it.each(versions)('several messages from one mosquitto_pub -l arrive in order at QoS 1 (-V %s)', async (version) => {
    const topic = freshTopic('ordered');
    const sub = await subscribe(topic, { version, qos: 1, count: 5 });
    const lines = ['one', 'two', 'three', 'four', 'five'];

    expectCleanExit(await runProcess('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(server.port), '-V', version, '-t', topic, '-q', '1', '-l'], {
      input: lines.join('\n') + '\n',
      deadlineMs: 10_000,
    }));

    expect((await sub.messages()).map((m) => m.payload)).toEqual(lines);
  });

  it.each(versions)('a message is delivered at the lower of the publish and subscription QoS (-V %s)', async (version) => {
    const topic = freshTopic('downgrade');
    const sub = await subscribe(topic, { version, qos: 1, count: 2 });

    await publish(topic, { version, qos: 2, message: 'sent at 2' });
    await publish(topic, { version, qos: 0, message: 'sent at 0' });

    const got = await sub.messages();
    expect(got.map((m) => [m.payload, m.qos])).toEqual([['sent at 2', 1], ['sent at 0', 0]]);
  });

  it.each(versions)('a retained message is received by a mosquitto_sub that subscribes later (-V %s)', async (version) => {
    const topic = freshTopic('retained');
    await publish(topic, { version, qos: 1, message: 'last known value', extra: ['-r'] });

    const got = await runProcess('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(server.port), '-V', version, '-t', topic,
      '-q', '1', '-C', '1', '-W', '5', '-F', '%j'], { deadlineMs: 10_000 });

    const [message] = messageLines(expectCleanExit(got).stdout).map(parseJson);
    expect(message).toMatchObject({ topic, retain: 1, qos: 1, payload: 'last known value' });
  });

  it('a retained message cleared with mosquitto_pub -r -n is no longer sent to new subscribers', async () => {
    const topic = freshTopic('cleared');
    await publish(topic, { version: 'mqttv311', qos: 1, message: 'stale', extra: ['-r'] });
    await publish(topic, { version: 'mqttv311', qos: 1, extra: ['-r', '-n'] });

    const got = await runProcess('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(server.port), '-t', topic,
      '-C', '1', '-W', '1', '-F', '%j'], { deadlineMs: 6000 });

    expect({ code: got.code, stdout: got.stdout }).toEqual({ code: EXIT_TIMED_OUT, stdout: '' });
  });

  it('a wildcard subscription of mosquitto_sub receives messages on every matching topic and no others', async () => {
    const base = freshTopic('wildcard');
    const sub = await subscribe(`${base}/+/temperature`, { version: 'mqttv5', qos: 1, count: 2 });

    await publish(`${base}/kitchen/temperature`, { version: 'mqttv311', qos: 1, message: '21.5' });
    await publish(`${base}/kitchen/humidity`, { version: 'mqttv311', qos: 1, message: '40' });
    await publish(`${base}/cellar/temperature`, { version: 'mqttv5', qos: 0, message: '12.0' });

    const got = await sub.messages();
    expect(got.map((m) => [m.topic, m.payload])).toEqual([
      [`${base}/kitchen/temperature`, '21.5'],
      [`${base}/cellar/temperature`, '12.0'],
    ]);
  });

  it('a user property set with mosquitto_pub -D reaches an MQTT 5 mosquitto_sub unchanged and in order', async () => {
    const topic = freshTopic('user-property');
    const sub = await subscribe(topic, { version: 'mqttv5', qos: 1, count: 1, format: '%P' });

    await publish(topic, {
      version: 'mqttv5', qos: 1, message: 'with properties',
      extra: ['-D', 'publish', 'user-property', 'k', 'v', '-D', 'publish', 'user-property', 'k', 'v2', '-D', 'publish', 'user-property', 'site', 'north wing'],
    });

    expect(await sub.lines()).toEqual(['k:v k:v2 site:north wing']);
  });

  it('a user property set with mosquitto_pub -D reaches an MQTT.js 5 subscriber', async () => {
    const topic = freshTopic('user-property-mqttjs');
    const client = await connect(server.url, { protocolVersion: 5 });
    try {
      await client.subscribeAsync(topic, { qos: 1 });
      const arrives = nextMessage(client, { within: 5000 });

      await publish(topic, { version: 'mqttv5', qos: 1, message: 'to mqtt.js', extra: ['-D', 'publish', 'user-property', 'k', 'v'] });

      const { payload, packet } = await arrives;
      expect(payload.toString()).toBe('to mqtt.js');
      expect(packet.properties?.userProperties).toEqual({ k: 'v' });
    } finally {
      await client.endAsync();
    }
  });

  it('content type, response topic, correlation data and payload format set by mosquitto_pub are forwarded untouched', async () => {
    const topic = freshTopic('properties');
    const sub = await subscribe(topic, { version: 'mqttv5', qos: 1, count: 1 });

    await publish(topic, {
      version: 'mqttv5', qos: 1, message: '{"t":21.5}',
      extra: ['-D', 'publish', 'content-type', 'application/json', '-D', 'publish', 'response-topic', `${topic}/reply`,
        '-D', 'publish', 'correlation-data', 'req-42', '-D', 'publish', 'payload-format-indicator', '1',
        '-D', 'publish', 'message-expiry-interval', '600'],
    });

    const [message] = await sub.messages();
    expect(message!.properties).toMatchObject({
      'content-type': 'application/json',
      'response-topic': `${topic}/reply`,
      'correlation-data': 'req-42',
      'payload-format-indicator': 1,
    });
    // Forwarded with the remaining lifetime: at most what was set, and only a moment less.
    expect(message!.properties!['message-expiry-interval']).toBeGreaterThanOrEqual(595);
    expect(message!.properties!['message-expiry-interval']).toBeLessThanOrEqual(600);
  });

  it('a message an MQTT.js 5 client publishes with user properties reaches mosquitto_sub', async () => {
    const topic = freshTopic('from-mqttjs');
    const sub = await subscribe(topic, { version: 'mqttv5', qos: 2, count: 1 });
    const client = await connect(server.url, { protocolVersion: 5 });
    try {
      await client.publishAsync(topic, 'from mqtt.js', { qos: 2, properties: { userProperties: { origin: 'mqtt.js' } } });
    } finally {
      await client.endAsync();
    }

    const [message] = await sub.messages();
    expect(message).toMatchObject({ topic, qos: 2, payload: 'from mqtt.js', properties: { 'user-properties': { origin: 'mqtt.js' } } });
  });

  it('a message mosquitto_pub sends as MQTT 3.1.1 reaches an MQTT 5 mosquitto_sub without properties', async () => {
    const topic = freshTopic('cross-version');
    const sub = await subscribe(topic, { version: 'mqttv5', qos: 1, count: 1 });

    await publish(topic, { version: 'mqttv311', qos: 1, message: 'from 3.1.1' });

    const [message] = await sub.messages();
    expect(message).toMatchObject({ topic, qos: 1, payload: 'from 3.1.1' });
    expect(message!.properties?.['user-properties']).toBeUndefined();
  });
});
