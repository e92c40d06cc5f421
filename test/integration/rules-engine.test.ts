import type { IClientOptions, MqttClient } from 'mqtt';
import { afterEach, describe, expect, test } from 'vitest';
import * as helpers from '../helpers/mqtt.js';
import { connect, type Received } from '../helpers/mqtt.js';
import { startEngine, type ProjectFiles, type TestEngine } from '../helpers/engine.js';

/** Marks a wait started early as handled: its rejection still fails the test where it is awaited. */
const { nextMessage, quiet } = helpers;
const { collect } = helpers;

// Every test gets its own engine (broker, database, rules), so retained messages never leak.
const cleanups: Array<() => Promise<unknown> | unknown> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function engine(files: ProjectFiles): Promise<TestEngine> {
  const te = await startEngine(files);
  cleanups.push(() => te.close());
  return te;
}

async function client(te: TestEngine, options: IClientOptions = {}): Promise<MqttClient> {
  const c = await connect(te.url, options);
  cleanups.push(() => c.endAsync(true));
  return c;
}

/**
 * Every message the client receives up to and including the first one on `topic`. The broker
 * delivers to one connection in order, so a marker published after the messages under test
 * shows exactly what arrived before it: "nothing else" without waiting for a quiet period.
 */
function receiveUntil(c: MqttClient, topic: string, { within = 2000 } = {}): Promise<Received[]> {
  return quiet(
    new Promise((resolve, reject) => {
      const got: Received[] = [];
      const onMessage = (t: string, payload: Buffer, packet: Received['packet']) => {
        got.push({ topic: t, payload, packet });
        if (t !== topic) return;
        clearTimeout(timer);
        c.off('message', onMessage);
        resolve(got);
      };
      const timer = setTimeout(() => {
        c.off('message', onMessage);
        reject(new Error(`no message on ${topic} within ${within} ms; got: ${got.map((m) => m.topic).join(', ')}`));
      }, within);
      c.on('message', onMessage);
    }),
  );
}

const json = (m: Received): unknown => JSON.parse(m.payload.toString('utf8'));

const FAHRENHEIT = `
rules:
  - id: to-fahrenheit
    on: sensors/+/temp
    transform: '{ "room": levels[1], "f": payload.c * 9 / 5 + 32 }'
    to:
      - republish: { topic: "out/\${payload.room}/f" }
`;

describe('publish → rule → subscriber', () => {
  const combos = ([4, 5] as const).flatMap((protocolVersion) => ([0, 1, 2] as const).map((qos) => ({ protocolVersion, qos })));

  test.each(combos)('a QoS $qos message from an MQTT v$protocolVersion client reaches the subscriber transformed, at QoS $qos', async ({ protocolVersion, qos }) => {
    const te = await engine({ rules: { 'f.yaml': FAHRENHEIT } });
    const sub = await client(te, { protocolVersion });
    const pub = await client(te, { protocolVersion });
    await sub.subscribeAsync('out/#', { qos: 2 });

    const got = nextMessage(sub);
    await pub.publishAsync('sensors/kitchen/temp', JSON.stringify({ c: 20 }), { qos });
    const m = await got;

    expect(m.topic).toBe('out/kitchen/f');
    expect(json(m)).toEqual({ room: 'kitchen', f: 68 });
    expect(m.packet.qos).toBe(qos);
    expect(m.packet.retain).toBe(false);
  });

  test('a message for which `when` is false is not republished, and the next true one is', async () => {
    const te = await engine({
      rules: {
        'w.yaml': `
rules:
  - id: hot-only
    on: w/in
    when: payload.c > 30
    to:
      - republish: { topic: w/out }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('w/out', { qos: 1 });

    const got = receiveUntil(sub, 'w/out');
    await pub.publishAsync('w/in', JSON.stringify({ c: 10 }), { qos: 1 });
    await pub.publishAsync('w/in', JSON.stringify({ c: 40 }), { qos: 1 });

    // Per-topic order: had the first been republished, it would arrive before the second.
    expect((await got).map(json)).toEqual([{ c: 40 }]);
    expect(te.engine.processor.stats.rulesSkipped).toBe(1);
    expect(te.engine.processor.stats.rulesRun).toBe(1);
  });

  test('a rule on a list of filters runs for a message matching any of them', async () => {
    const te = await engine({
      rules: {
        'l.yaml': `
rules:
  - id: doors
    on: [home/+/door, office/#]
    transform: '{ "from": topic }'
    to:
      - republish: { topic: alerts/door }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('alerts/door', { qos: 1 });

    const got = collect(sub, 2);
    await pub.publishAsync('home/garage/door', 'open', { qos: 1 });
    await pub.publishAsync('garden/gate', 'open', { qos: 1 }); // matches neither filter
    await pub.publishAsync('office/lobby/door', 'open', { qos: 1 });

    expect((await got).map(json)).toEqual([{ from: 'home/garage/door' }, { from: 'office/lobby/door' }]);
  });

  test('a `${…}` topic template is rendered from the transformed message', async () => {
    const te = await engine({
      rules: {
        't.yaml': `
rules:
  - id: templated
    on: raw/+/+
    transform: '{ "site": $uppercase(levels[1]), "kind": levels[2], "n": payload.n }'
    to:
      - republish: { topic: "cooked/\${payload.site}/\${payload.kind}/n\${payload.n + 1}" }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('cooked/#', { qos: 1 });

    const got = nextMessage(sub);
    await pub.publishAsync('raw/north/humidity', JSON.stringify({ n: 41 }), { qos: 1 });

    expect((await got).topic).toBe('cooked/NORTH/humidity/n42');
  });

  test('republish `qos` and `retain` are used, and the retained result reaches a later subscriber', async () => {
    const te = await engine({
      rules: {
        'r.yaml': `
rules:
  - id: latest
    on: status/+/raw
    transform: '{ "state": payload }'
    to:
      - republish: { topic: "status/\${levels[1]}/latest", qos: 2, retain: true }
`,
      },
    });
    const live = await client(te);
    const pub = await client(te);
    await live.subscribeAsync('status/+/latest', { qos: 2 });

    const got = nextMessage(live);
    // QoS 0 and not retained in: the rule's settings, not the incoming message's, decide.
    await pub.publishAsync('status/pump/raw', 'running', { qos: 0 });
    const m = await got;
    expect(m.topic).toBe('status/pump/latest');
    expect(m.packet.qos).toBe(2);

    const later = await client(te);
    const retained = nextMessage(later);
    await later.subscribeAsync('status/+/latest', { qos: 2 });
    const r = await retained;
    expect(r.topic).toBe('status/pump/latest');
    expect(json(r)).toEqual({ state: 'running' });
    expect(r.packet.retain).toBe(true);
    expect(r.packet.qos).toBe(2);
  });
});

describe('MQTT 5 properties', () => {
  const RULES = `
rules:
  - id: pass-through
    on: props/in
    transform: '{ "wrapped": payload }'
    to:
      - republish: { topic: props/passed }
  - id: override
    on: props/in
    to:
      - republish:
          topic: props/overridden
          properties:
            contentType: application/json
            userProperties: { site: "b", from: "\${clientId}" }
`;

  test('are passed through by default and overridden key by key when the rule gives them', async () => {
    const te = await engine({ rules: { 'p.yaml': RULES } });
    const sub = await client(te, { protocolVersion: 5 });
    const pub = await client(te, { protocolVersion: 5, clientId: 'props-publisher' });
    await sub.subscribeAsync('props/+', { qos: 1 });

    const got = collect(sub, 3);
    await pub.publishAsync('props/in', 'hello', {
      qos: 1,
      properties: {
        contentType: 'text/plain',
        responseTopic: 'reply/here',
        correlationData: Buffer.from('req-7'),
        userProperties: { site: 'a', unit: 'c' },
      },
    });
    const byTopic = new Map((await got).map((m) => [m.topic, m]));

    const original = byTopic.get('props/in')!;
    expect(original.packet.properties?.contentType).toBe('text/plain');

    const passed = byTopic.get('props/passed')!;
    expect(passed.payload.toString()).toBe('{"wrapped":"hello"}');
    expect(passed.packet.properties).toMatchObject({
      contentType: 'text/plain',
      responseTopic: 'reply/here',
      userProperties: { site: 'a', unit: 'c' },
    });
    expect(passed.packet.properties?.correlationData?.toString()).toBe('req-7');

    const overridden = byTopic.get('props/overridden')!;
    expect(overridden.payload.toString()).toBe('hello');
    expect(overridden.packet.properties).toMatchObject({
      contentType: 'application/json',
      responseTopic: 'reply/here',
      userProperties: { site: 'b', unit: 'c', from: 'props-publisher' },
    });
    expect(overridden.packet.properties?.correlationData?.toString()).toBe('req-7');
  });
});

describe('payloads that are not JSON', () => {
  test('a plain-text payload reaches JSONata as a string', async () => {
    const te = await engine({
      rules: {
        'x.yaml': `
rules:
  - id: shout
    on: text/in
    when: $type(payload) = "string"
    transform: $uppercase(payload) & "!"
    to:
      - republish: { topic: text/out }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('text/out', { qos: 1 });

    const got = nextMessage(sub);
    await pub.publishAsync('text/in', 'door open', { qos: 1 });
    expect((await got).payload.toString()).toBe('DOOR OPEN!');
  });

  test('a binary payload passes through an untransformed rule byte for byte, to subscribers and history', async () => {
    const te = await engine({
      rules: {
        'b.yaml': `
rules:
  - id: relay-binary
    on: bin/in
    when: $type(payload) = "string"
    to:
      - republish: { topic: bin/out }
      - history: {}
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('bin/out', { qos: 1 });
    // Invalid UTF-8, a NUL, a '{' that starts no JSON, and every byte value once.
    const bytes = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00, 0x80, 0x7b, 0xc3]), Buffer.from(Array.from({ length: 256 }, (_, i) => i))]);

    const got = nextMessage(sub);
    await pub.publishAsync('bin/in', bytes, { qos: 1 });

    expect((await got).payload.equals(bytes)).toBe(true);
    const [row] = te.engine.history.query({ filter: 'bin/in' });
    expect(row?.payload.equals(bytes)).toBe(true);
  });
});

describe('the JSONata input document', () => {
  test('has topic, levels, payload, qos, retain, clientId, timestamp and properties.userProperties', async () => {
    const te = await engine({
      rules: {
        'd.yaml': `
rules:
  - id: echo-document
    on: doc/#
    transform: |
      {
        "topic": topic,
        "levels": levels,
        "payload": payload,
        "qos": qos,
        "retain": retain,
        "clientId": clientId,
        "timestamp": timestamp,
        "userProperties": properties.userProperties
      }
    to:
      - republish: { topic: doc-out }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te, { protocolVersion: 5, clientId: 'doc-publisher' });
    await sub.subscribeAsync('doc-out', { qos: 1 });

    const got = nextMessage(sub);
    const before = Date.now();
    await pub.publishAsync('doc/a/b', JSON.stringify({ n: 1, s: 'x' }), {
      qos: 1,
      retain: true,
      properties: { userProperties: { k: 'v', multi: ['x', 'y'] } },
    });
    const after = Date.now();
    const doc = json(await got) as Record<string, unknown>;

    expect(doc).toEqual({
      topic: 'doc/a/b',
      levels: ['doc', 'a', 'b'],
      payload: { n: 1, s: 'x' },
      qos: 1,
      retain: true,
      clientId: 'doc-publisher',
      timestamp: expect.any(Number),
      userProperties: { k: 'v', multi: ['x', 'y'] },
    });
    expect(doc.timestamp).toBeGreaterThanOrEqual(before);
    expect(doc.timestamp).toBeLessThanOrEqual(after);
  });
});

describe('rules working together', () => {
  test('a rule matches what another rule republished (chained rules)', async () => {
    const te = await engine({
      rules: {
        'a.yaml': `
rules:
  - id: step-one
    on: chain/in
    transform: '{ "n": payload.n + 1 }'
    to:
      - republish: { topic: chain/mid }
`,
        'b.yaml': `
rules:
  - id: step-two
    on: chain/mid
    transform: '{ "n": payload.n * 10 }'
    to:
      - republish: { topic: chain/out }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('chain/+', { qos: 1 });

    const got = receiveUntil(sub, 'chain/out');
    await pub.publishAsync('chain/in', JSON.stringify({ n: 1 }), { qos: 1 });

    expect((await got).map((m) => [m.topic, json(m)])).toEqual([
      ['chain/in', { n: 1 }],
      ['chain/mid', { n: 2 }],
      ['chain/out', { n: 20 }],
    ]);
  });

  test('two rules matching one message both run', async () => {
    const te = await engine({
      rules: {
        'two.yaml': `
rules:
  - id: first
    on: both/#
    transform: '"first saw " & payload'
    to:
      - republish: { topic: both-out/first }
  - id: second
    on: both/+
    transform: '"second saw " & payload'
    to:
      - republish: { topic: both-out/second }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('both-out/+', { qos: 1 });

    const got = collect(sub, 2);
    await pub.publishAsync('both/x', 'hi', { qos: 1 });

    const seen = (await got).map((m) => `${m.topic}: ${m.payload.toString()}`).sort();
    expect(seen).toEqual(['both-out/first: first saw hi', 'both-out/second: second saw hi']);
  });

  test('a disabled rule never runs', async () => {
    const te = await engine({
      rules: {
        'd.yaml': `
rules:
  - id: switched-off
    enabled: false
    on: dis/in
    to:
      - republish: { topic: dis-out/disabled }
      - history: {}
  - id: switched-on
    on: dis/in
    to:
      - republish: { topic: dis-out/enabled }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('dis-out/+', { qos: 1 });

    const got = receiveUntil(sub, 'dis-out/marker');
    await pub.publishAsync('dis/in', 'x', { qos: 1 });
    await pub.publishAsync('dis/in', 'y', { qos: 1 });
    // The PUBACKs came after all the rules' republishes were routed, so the marker is last.
    await pub.publishAsync('dis-out/marker', 'end', { qos: 1 });

    expect((await got).map((m) => m.topic)).toEqual(['dis-out/enabled', 'dis-out/enabled', 'dis-out/marker']);
    expect(te.engine.history.query({ filter: '#' })).toEqual([]);
    expect(te.engine.processor.stats.rulesRun).toBe(2);
  });

  test('per-topic order is kept for 500 messages through a transform to a subscriber', async () => {
    const te = await engine({
      // The order test must not depend on the host's CPU: with the 100 ms default, a loaded host
      // can fail every in-flight evaluation at once (see the stall test in rules-errors.test.ts).
      config: 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\nengine: { expressionTimeoutMs: 5000 }\n',
      rules: {
        'o.yaml': `
rules:
  - id: ordered
    on: order/+
    transform: '{ "n": payload.n, "square": payload.n * payload.n }'
    to:
      - republish: { topic: "order-out/\${levels[1]}" }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('order-out/+', { qos: 1 });

    const total = 500;
    const got = collect(sub, total, { within: 4000 });
    // Two topics interleaved, all in flight at once: order is promised per topic.
    const acks: Promise<unknown>[] = [];
    for (let n = 0; n < total; n++) acks.push(pub.publishAsync(`order/${n % 2 === 0 ? 'even' : 'odd'}`, JSON.stringify({ n }), { qos: 1 }));
    await Promise.all(acks);
    const messages = await got.catch((err: Error) => {
      const [letter] = te.engine.deadLetters.list({ limit: 1 });
      throw new Error(`${err.message}\nrule errors: ${te.engine.processor.stats.ruleErrors}; a dead letter: ${letter?.error ?? 'none'}`);
    });

    const seq = (topic: string) => messages.filter((m) => m.topic === topic).map((m) => (json(m) as { n: number }).n);
    expect(seq('order-out/even')).toEqual(Array.from({ length: total / 2 }, (_, i) => i * 2));
    expect(seq('order-out/odd')).toEqual(Array.from({ length: total / 2 }, (_, i) => i * 2 + 1));
    expect(messages.every((m) => { const p = json(m) as { n: number; square: number }; return p.square === p.n * p.n; })).toBe(true);
  });
});

describe('history', () => {
  const HISTORY = `
rules:
  - id: keep-readings
    on: x/+/reading
    transform: '{ "v": payload.v * 2, "room": levels[1] }'
    to:
      - history: {}
`;

  test('rows hold the transformed payload, the topic, the rule id and the client id, and are queryable by filter', async () => {
    const te = await engine({ rules: { 'h.yaml': HISTORY } });
    const pub = await client(te, { clientId: 'hist-publisher' });

    await pub.publishAsync('x/kitchen/reading', JSON.stringify({ v: 1 }), { qos: 1 });
    await pub.publishAsync('x/hall/reading', JSON.stringify({ v: 5 }), { qos: 1 });
    await pub.publishAsync('y/hall/reading', JSON.stringify({ v: 9 }), { qos: 1 }); // no rule matches

    const rows = te.engine.history.query({ filter: 'x/#', order: 'asc' });
    expect(rows.map((r) => ({ ...r, payload: JSON.parse(r.payload.toString()) }))).toEqual([
      { time: expect.any(Number), topic: 'x/kitchen/reading', payload: { v: 2, room: 'kitchen' }, qos: 1, retain: false, ruleId: 'keep-readings', clientId: 'hist-publisher' },
      { time: expect.any(Number), topic: 'x/hall/reading', payload: { v: 10, room: 'hall' }, qos: 1, retain: false, ruleId: 'keep-readings', clientId: 'hist-publisher' },
    ]);
    expect(te.engine.history.query({ filter: 'x/hall/+' })).toHaveLength(1);
    expect(te.engine.history.query({ filter: 'y/#' })).toEqual([]);
  });

  test('a QoS 1 PUBACK comes only after the history row is committed', async () => {
    const te = await engine({ rules: { 'h.yaml': HISTORY } });
    const pub = await client(te);

    for (let i = 1; i <= 30; i++) {
      await pub.publishAsync('x/acked/reading', JSON.stringify({ v: i }), { qos: 1 });
      // Queried the moment publishAsync resolved on PUBACK: the row must already be there.
      const [newest] = te.engine.history.query({ filter: 'x/acked/reading', limit: 1 });
      expect(JSON.parse(newest?.payload.toString() ?? 'null')).toEqual({ v: i * 2, room: 'acked' });
    }
    expect(te.engine.history.query({ filter: 'x/acked/reading', limit: 1000 })).toHaveLength(30);
  });
});
