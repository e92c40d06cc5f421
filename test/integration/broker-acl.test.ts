import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { afterEach, describe, expect, test } from 'vitest';
import type { AclRule } from '../../src/config/broker.js';
import { loadProject } from '../../src/config/load.js';
import { createEngine } from '../../src/engine/engine.js';
import { silentLogger } from '../../src/log.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { writeUsers } from '../helpers/auth.js';
import { loadIssues, writeProject } from '../helpers/engine.js';
import { connect, noMessage, startBroker, type Received, type TestBroker } from '../helpers/mqtt.js';
import { openRaw } from '../helpers/raw-client.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Everyone reads and writes their own `sensors/<user>/…`; admin everything. */
const ACL: AclRule[] = [
  // `#` does not match $-topics [MQTT-4.7.2-1], in ACLs as in subscriptions.
  { user: 'admin', allow: [{ publish: '#', subscribe: '#' }, { subscribe: '$SYS/#' }] },
  { user: '*', allow: [{ subscribe: 'sensors/%u/#' }, { publish: 'sensors/%u/#' }, { subscribe: 'clients/%c/#' }] },
];

const PASSWORDS = { u: 'u-pw', v: 'v-pw', admin: 'admin-pw', '#': 'hash-pw', '+': 'plus-pw', 'a/#': 'slash-pw' };

async function aclBroker(acl: AclRule[] = ACL): Promise<TestBroker> {
  const { users } = await writeUsers(PASSWORDS);
  const b = await startBroker({ auth: { users: 'users.yaml' }, acl }, { users });
  cleanups.push(() => b.close());
  return b;
}

async function login(b: TestBroker, user: keyof typeof PASSWORDS, options: Parameters<typeof connect>[1] = {}): Promise<MqttClient> {
  const client = await connect(b.url, { username: user, password: PASSWORDS[user], ...options });
  cleanups.push(() => client.endAsync(true));
  return client;
}

/** Every message `client` receives until one arrives on `last` (inclusive). */
function receiveUntil(client: MqttClient, last: string, { within = 3000 } = {}): Promise<Received[]> {
  return new Promise((resolve, reject) => {
    const got: Received[] = [];
    const timer = setTimeout(() => {
      client.off('message', on);
      reject(new Error(`no message on ${last} within ${within} ms; got ${got.map((m) => m.topic).join(', ')}`));
    }, within);
    const on = (topic: string, payload: Buffer, packet: Received['packet']) => {
      got.push({ topic, payload, packet });
      if (topic !== last) return;
      clearTimeout(timer);
      client.off('message', on);
      resolve(got);
    };
    client.on('message', on);
  });
}

describe('a wildcard subscription receives only what its user may read', () => {
  test.each([5, 4] as const)('live, retained and queued messages (MQTT %i)', async (protocolVersion) => {
    const b = await aclBroker();
    const admin = await login(b, 'admin');
    const v = await login(b, 'v');
    // Retained, before U subscribes: one U may read, the others not.
    await admin.publishAsync('sensors/u/retained', 'mine', { qos: 1, retain: true });
    await v.publishAsync('sensors/v/retained', 'v', { qos: 1, retain: true });
    await admin.publishAsync('other/retained', 'x', { qos: 1, retain: true });
    await b.broker.publish({ topic: '$SYS/retained', payload: 'sys', retain: true, qos: 1 });

    const u = await login(b, 'u', { protocolVersion, clientId: `u-${protocolVersion}`, clean: false, ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 300 } } : {}) });
    const retained = receiveUntil(u, 'sensors/u/retained');
    const granted: number[] = [];
    for (const filter of ['#', '+/#', 'sensors/#', '$SYS/#']) {
      try {
        granted.push((await u.subscribeAsync(filter, { qos: 1 }))[0]!.qos);
      } catch {
        granted.push(-1); // MQTT.js rejects a subscribe whose SUBACK failed
      }
    }
    expect(granted).toEqual([1, 1, 1, -1]);
    const denied = await openRaw(b.port, { protocolVersion });
    await denied.connect({ username: 'u', password: Buffer.from('u-pw') });
    denied.send({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: '$SYS/#', qos: 1 }, { topic: 'sensors/v/#', qos: 0 }, { topic: 'sensors/u/+', qos: 0 }] });
    const suback = await denied.expectPacket('suback');
    expect(suback.granted).toEqual(protocolVersion === 5 ? [0x87, 0x87, 0] : [0x80, 0x80, 0]);
    denied.destroy();
    for (const m of await retained) expect(m.topic).toBe('sensors/u/retained');

    // Live: other users and signalbox itself publish around U's topic; U gets its own only.
    const live = receiveUntil(u, 'sensors/u/live');
    await v.publishAsync('sensors/v/live', 'v', { qos: 1 });
    await admin.publishAsync('other/live', 'x', { qos: 1 });
    await admin.publishAsync('sensors/v/live2', 'x', { qos: 1 });
    await admin.publishAsync('sensors/uu/live', 'x', { qos: 1 });
    await b.broker.publish({ topic: '$SYS/live', payload: 'sys' });
    await b.broker.publish({ topic: 'sensors/v/internal', payload: 'rule output', qos: 1 });
    await admin.publishAsync('sensors/u/live', 'mine', { qos: 1 });
    expect((await live).map((m) => m.topic)).toEqual(['sensors/u/live']);

    // Queued while offline, delivered on resume: again only U's own.
    await u.endAsync();
    await admin.publishAsync('sensors/v/queued', 'x', { qos: 1 });
    await admin.publishAsync('other/queued', 'x', { qos: 1 });
    await admin.publishAsync('sensors/u/queued', 'mine', { qos: 1 });
    // Listening before CONNACK: the queued messages follow it at once.
    const back = mqtt.connect(b.url, { username: 'u', password: 'u-pw', protocolVersion, clientId: `u-${protocolVersion}`, clean: false, reconnectPeriod: 0, ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 300 } } : {}) });
    cleanups.push(() => back.endAsync(true));
    const queued = receiveUntil(back, 'sensors/u/queued');
    expect((await queued).map((m) => m.topic)).toEqual(['sensors/u/queued']);
    await noMessage(back, { forMs: 200 });
    expect(b.broker.stats.deliveriesDenied).toBeGreaterThan(0);
  });

  test('shared subscriptions are filtered too', async () => {
    const b = await aclBroker();
    const u = await login(b, 'u', { protocolVersion: 5 });
    await u.subscribeAsync('$share/g/#', { qos: 0 });
    const admin = await login(b, 'admin');
    const got = receiveUntil(u, 'sensors/u/x');
    await admin.publishAsync('sensors/v/x', 'no', { qos: 1 });
    await admin.publishAsync('sensors/u/x', 'yes', { qos: 1 });
    expect((await got).map((m) => m.topic)).toEqual(['sensors/u/x']);
  });
});

describe('publishing', () => {
  test('a denied publish gets PUBACK 0x87 (MQTT 5), is dropped and counted', async () => {
    const b = await aclBroker();
    const admin = await login(b, 'admin');
    await admin.subscribeAsync('#', { qos: 1 });
    const raw = await openRaw(b.port, { protocolVersion: 5 });
    await raw.connect({ username: 'u', password: Buffer.from('u-pw') });
    raw.send({ cmd: 'publish', topic: 'sensors/v/x', payload: Buffer.from('forged'), qos: 1, messageId: 1, retain: false, dup: false });
    expect(await raw.expectPacket('puback')).toMatchObject({ messageId: 1, reasonCode: 0x87 });
    raw.send({ cmd: 'publish', topic: 'sensors/v/x', payload: Buffer.from('forged'), qos: 2, messageId: 2, retain: false, dup: false });
    expect(await raw.expectPacket('pubrec')).toMatchObject({ messageId: 2, reasonCode: 0x87 });
    raw.send({ cmd: 'publish', topic: 'sensors/v/x', payload: Buffer.from('forged'), qos: 0, retain: false, dup: false });
    await noMessage(admin, { forMs: 200 });
    expect(b.broker.stats.publishDenied).toBe(3);
    raw.destroy();
  });

  test('MQTT 3.1.1 has no negative PUBACK: the publish is acknowledged and dropped (as Mosquitto does)', async () => {
    const b = await aclBroker();
    const admin = await login(b, 'admin');
    await admin.subscribeAsync('#', { qos: 1 });
    const raw = await openRaw(b.port, { protocolVersion: 4 });
    await raw.connect({ username: 'u', password: Buffer.from('u-pw') });
    raw.send({ cmd: 'publish', topic: 'sensors/v/x', payload: Buffer.from('forged'), qos: 1, messageId: 1, retain: true, dup: false });
    expect(await raw.expectPacket('puback')).toMatchObject({ messageId: 1 });
    raw.send({ cmd: 'publish', topic: 'sensors/v/y', payload: Buffer.from('forged'), qos: 2, messageId: 2, retain: false, dup: false });
    await raw.expectPacket('pubrec');
    raw.send({ cmd: 'pubrel', messageId: 2 });
    await raw.expectPacket('pubcomp');
    await noMessage(admin, { forMs: 200 });
    // Not retained either.
    const late = await login(b, 'admin', { clientId: 'late' });
    await late.subscribeAsync('sensors/#', { qos: 0 });
    await noMessage(late, { forMs: 200 });
    expect(raw.isClosed).toBe(false);
    raw.destroy();
  });

  test('publishing to a $-topic is refused, even for a user allowed everything', async () => {
    const b = await aclBroker();
    const watcher = await login(b, 'admin', { clientId: 'watcher' });
    await watcher.subscribeAsync('$SYS/#', { qos: 1 });
    const raw = await openRaw(b.port, { protocolVersion: 5 });
    await raw.connect({ username: 'admin', password: Buffer.from('admin-pw') });
    raw.send({ cmd: 'publish', topic: '$SYS/forged', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false });
    expect(await raw.expectPacket('puback')).toMatchObject({ reasonCode: 0x87 });
    await noMessage(watcher, { forMs: 200 });
    raw.destroy();
  });

  test('a will on a topic the client may not publish to refuses the CONNECT', async () => {
    const b = await aclBroker();
    const will = { topic: 'sensors/v/will', payload: Buffer.from('gone'), qos: 0 as const, retain: false };
    expect((await (await openRaw(b.port, { protocolVersion: 5 })).connect({ username: 'u', password: Buffer.from('u-pw'), will })).reasonCode).toBe(0x87);
    expect((await (await openRaw(b.port, { protocolVersion: 4 })).connect({ username: 'u', password: Buffer.from('u-pw'), will })).returnCode).toBe(5);
    const allowed = await openRaw(b.port, { protocolVersion: 4 });
    expect((await allowed.connect({ username: 'u', password: Buffer.from('u-pw'), will: { ...will, topic: 'sensors/u/will' } })).returnCode).toBe(0);
    allowed.destroy();
  });
});

describe('hostile names', () => {
  test.each(['#', '+', 'a/#'] as const)('user "%s" gets nothing through a %%u filter', async (name) => {
    const b = await aclBroker();
    const client = await login(b, name, { protocolVersion: 5, clientId: 'c1' });
    await expect(client.subscribeAsync('sensors/#', { qos: 0 })).rejects.toThrow(/Not authorized/);
    // `#` is granted (its clients/c1/# is readable), but carries nothing from sensors/.
    await client.subscribeAsync('#', { qos: 0 });
    const admin = await login(b, 'admin');
    const got = receiveUntil(client, 'clients/c1/x');
    for (const topic of ['sensors/#/x', 'sensors/+/x', 'sensors/a/#/x', 'sensors/u/x', 'sensors/a']) await admin.publishAsync(topic.replace(/[+#]/g, '_'), 'x', { qos: 1 });
    await admin.publishAsync('clients/c1/x', 'mine', { qos: 1 });
    expect((await got).map((m) => m.topic)).toEqual(['clients/c1/x']);
    const raw = await openRaw(b.port, { protocolVersion: 5 });
    await raw.connect({ username: name, password: Buffer.from(PASSWORDS[name]) });
    raw.send({ cmd: 'publish', topic: 'sensors/u/x', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false });
    expect(await raw.expectPacket('puback')).toMatchObject({ reasonCode: 0x87 });
    raw.destroy();
  });

  test.each(['#', '+', 'a/#', 'clients/+'])('client id "%s" gets nothing through a %%c filter', async (clientId) => {
    const b = await aclBroker();
    const client = await login(b, 'u', { protocolVersion: 5, clientId });
    await expect(client.subscribeAsync('clients/#', { qos: 0 })).rejects.toThrow(/Not authorized/);
    const sub = await client.subscribeAsync('sensors/u/#', { qos: 0 });
    expect(sub[0]!.qos).toBe(0);
  });

  test('a 65,000-character username or client id is refused without harm', async () => {
    const b = await aclBroker();
    const long = 'x'.repeat(65_000);
    const byName = await openRaw(b.port, { protocolVersion: 5 });
    expect((await byName.connect({ username: long, password: Buffer.from('pw') }, { within: 5000 })).reasonCode).toBe(0x86);
    const byId = await openRaw(b.port, { protocolVersion: 5 });
    expect((await byId.connect({ clientId: long, username: 'u', password: Buffer.from('u-pw') })).reasonCode).toBe(0x85);
    const u = await login(b, 'u');
    expect((await u.subscribeAsync('sensors/u/#', { qos: 0 }))[0]!.qos).toBe(0);
  });
});

describe('reload', () => {
  test('a reloaded ACL applies to the next delivery of connected clients', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-acl-reload-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    await writeUsers(PASSWORDS, dir);
    mkdirSync(path.join(dir, 'rules'));
    const configFile = path.join(dir, 'signalbox.yaml');
    const config = (readable: string) =>
      `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n  auth: { users: users.yaml }\n  acl:\n    - { user: admin, allow: [ { publish: "#" } ] }\n    - { user: u, allow: [ { subscribe: "${readable}" } ] }\nstorage: { path: ':memory:' }\n`;
    writeFileSync(configFile, config('#'));
    const registry = createOutputRegistry();
    const project = loadProject(configFile, { explicit: true, registry });
    const engine = createEngine(project.config, project.compiled.rules, { log: silentLogger(), registry });
    cleanups.push(() => engine.close());
    const [address] = await engine.broker.listen();
    const url = `mqtt://127.0.0.1:${address!.port}`;
    const u = await connect(url, { username: 'u', password: 'u-pw' });
    cleanups.push(() => u.endAsync(true));
    await u.subscribeAsync('#', { qos: 1 });
    const admin = await connect(url, { username: 'admin', password: 'admin-pw' });
    cleanups.push(() => admin.endAsync(true));
    const before = receiveUntil(u, 'secret/1');
    await admin.publishAsync('secret/1', 'x', { qos: 1 });
    await before;

    writeFileSync(configFile, config('public/#'));
    await engine.reload(loadProject(configFile, { explicit: true, registry }));
    const after = receiveUntil(u, 'public/1');
    await admin.publishAsync('secret/2', 'x', { qos: 1 });
    await admin.publishAsync('public/1', 'x', { qos: 1 });
    expect((await after).map((m) => m.topic)).toEqual(['public/1']);
  });
});

describe('ACL configuration', () => {
  function problems(config: string) {
    const { configFile, cleanup } = writeProject({ config });
    cleanups.push(cleanup);
    return loadIssues(configFile);
  }

  test('a bad filter is reported at its position with SB_ACL_FILTER', () => {
    const found = problems('broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n  acl:\n    - user: "*"\n      allow:\n        - { subscribe: "a/#/b" }\n');
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ code: 'SB_ACL_FILTER', line: 6 });
    expect(found[0]!.message).toContain('a/#/b');
  });

  test('a rule with both allow and deny, or an item with neither action, is a schema error', () => {
    const both = problems('broker:\n  acl:\n    - { allow: [ { publish: a } ], deny: [ { publish: b } ] }\n');
    expect(both[0]).toMatchObject({ code: 'SB_CONFIG_SCHEMA', line: 3 });
    expect(both[0]!.message).toContain('exactly one of');
    const empty = problems('broker:\n  acl:\n    - { allow: [ {} ] }\n');
    expect(empty[0]!.message).toContain('needs `publish:` or `subscribe:`');
  });

  test('without an ACL every authenticated client may publish and subscribe to anything', async () => {
    const { users } = await writeUsers(PASSWORDS);
    const b = await startBroker({ auth: { users: 'users.yaml' } }, { users });
    cleanups.push(() => b.close());
    const u = await login(b, 'u');
    await u.subscribeAsync('#', { qos: 1 });
    const got = receiveUntil(u, 'sensors/v/x');
    await u.publishAsync('sensors/v/x', 'ok', { qos: 1 });
    expect((await got).map((m) => m.topic)).toEqual(['sensors/v/x']);
  });
});
