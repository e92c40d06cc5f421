import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import { afterEach, describe, expect, test } from 'vitest';
import { createBroker } from '../../src/broker/broker.js';
import { createMqttListener } from '../../src/broker/listeners/mqtt.js';
import { parseBrokerConfig, type ListenerConfig } from '../../src/config/broker.js';
import { ConfigError, type ConfigIssue } from '../../src/config/issues.js';
import { loadProject } from '../../src/config/load.js';
import { loadUsersFile } from '../../src/broker/auth-users.js';
import { createEngine } from '../../src/engine/engine.js';
import { openDatabase } from '../../src/storage/database.js';
import { MIGRATIONS } from '../../src/storage/migrations.js';
import { silentLogger } from '../../src/log.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { connectFrom, writeUsers } from '../helpers/auth.js';
import { recordingLogger } from '../helpers/durable.js';
import { cli, CLI } from '../helpers/cli.js';
import { loadIssues, writeProject } from '../helpers/engine.js';
import { collect, connect, nextMessage, startBroker, type TestBroker } from '../helpers/mqtt.js';
import { openRaw } from '../helpers/raw-client.js';

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function brokerWithUsers(config: Parameters<typeof startBroker>[0] = {}): Promise<TestBroker> {
  const { users } = await writeUsers({ alice: 'alice-pw', bob: 'bob-pw' });
  const b = await startBroker({ auth: { users: 'users.yaml' }, ...config }, { users });
  cleanups.push(() => b.close());
  return b;
}

describe('passwords', () => {
  test.each([4, 5] as const)('MQTT.js (protocol %i) connects with the right password', async (protocolVersion) => {
    const b = await brokerWithUsers();
    const client = await connect(b.url, { protocolVersion, username: 'alice', password: 'alice-pw' });
    cleanups.push(() => client.endAsync());
    expect(client.connected).toBe(true);
  });

  test.each([
    { name: 'a wrong password', username: 'alice', password: 'nope' },
    { name: 'an unknown user', username: 'mallory', password: 'alice-pw' },
    { name: 'a username without a password', username: 'alice', password: undefined },
  ])('$name is refused: CONNACK 0x86 (MQTT 5) or 4 (3.1.1)', async ({ username, password }) => {
    const b = await brokerWithUsers();
    const pw = password === undefined ? undefined : Buffer.from(password);
    const v5 = await openRaw(b.port, { protocolVersion: 5 });
    expect((await v5.connect({ username, password: pw }, { within: 5000 })).reasonCode).toBe(0x86);
    const v4 = await openRaw(b.port, { protocolVersion: 4 });
    expect((await v4.connect({ username, password: pw }, { within: 5000 })).returnCode).toBe(4);
    await v4.closed();
    expect(b.broker.stats.authFailures).toBe(2);
  });

  test.each([
    { protocolVersion: 5, code: 0x86 },
    { protocolVersion: 4, code: 4 },
  ] as const)('MQTT.js (protocol $protocolVersion) sees a wrong password as an error with code $code', async ({ protocolVersion, code }) => {
    const b = await brokerWithUsers();
    await expect(connect(b.url, { protocolVersion, username: 'alice', password: 'wrong' })).rejects.toMatchObject({ code });
  });

  test('packets sent right after CONNECT wait for the password check and are handled in order', async () => {
    const b = await brokerWithUsers();
    const sub = await connect(b.url, { username: 'bob', password: 'bob-pw' });
    cleanups.push(() => sub.endAsync());
    await sub.subscribeAsync('pipelined/#', { qos: 1 });
    const raw = await openRaw(b.port);
    const got = collect(sub, 2);
    raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'pipeliner', clean: true, keepalive: 0, username: 'alice', password: Buffer.from('alice-pw') });
    raw.send({ cmd: 'publish', topic: 'pipelined/1', payload: Buffer.from('a'), qos: 1, messageId: 1, retain: false, dup: false });
    raw.send({ cmd: 'publish', topic: 'pipelined/2', payload: Buffer.from('b'), qos: 1, messageId: 2, retain: false, dup: false });
    expect((await raw.expectPacket('connack', { within: 5000 })).returnCode).toBe(0);
    expect((await raw.expectPacket('puback')).messageId).toBe(1);
    expect((await raw.expectPacket('puback')).messageId).toBe(2);
    expect((await got).map((m) => m.topic)).toEqual(['pipelined/1', 'pipelined/2']);
    raw.destroy();
  });

  test('a reloaded users file takes effect for new logins', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-reload-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    await writeUsers({ alice: 'old-pw' }, dir);
    const { configFile } = writeProject({ config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n  auth: { users: ${path.join(dir, 'users.yaml')} }\nstorage: { path: ':memory:' }\n` });
    const registry = createOutputRegistry();
    const project = loadProject(configFile, { explicit: true, registry });
    const engine = createEngine(project.config, project.compiled.rules, { log: silentLogger(), registry });
    cleanups.push(() => engine.close());
    const [address] = await engine.broker.listen();
    const url = `mqtt://127.0.0.1:${address!.port}`;
    (await connect(url, { username: 'alice', password: 'old-pw' })).end();
    await writeUsers({ alice: 'new-pw' }, dir);
    await engine.reload(loadProject(configFile, { explicit: true, registry }));
    await expect(connect(url, { protocolVersion: 5, username: 'alice', password: 'old-pw' })).rejects.toMatchObject({ code: 0x86 });
    const client = await connect(url, { username: 'alice', password: 'new-pw' });
    client.end();
  });
});

describe('anonymous clients', () => {
  test('with no config, anonymous clients connect on the loopback listener', async () => {
    const b = await startBroker();
    cleanups.push(() => b.close());
    const client = await connect(b.url);
    client.end();
  });

  test('with a users file, anonymous clients are refused: 0x87 (MQTT 5) or 5 (3.1.1)', async () => {
    const b = await brokerWithUsers();
    expect((await (await openRaw(b.port, { protocolVersion: 5 })).connect()).reasonCode).toBe(0x87);
    expect((await (await openRaw(b.port, { protocolVersion: 4 })).connect()).returnCode).toBe(5);
  });

  test('auth.anonymous: true lets them in beside the users; a listener can still say no', async () => {
    const open = await brokerWithUsers({ auth: { users: 'users.yaml', anonymous: true } });
    expect((await (await openRaw(open.port)).connect()).returnCode).toBe(0);
    const closed = await startBroker({ listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0, anonymous: false }] });
    cleanups.push(() => closed.close());
    expect((await (await openRaw(closed.port)).connect()).returnCode).toBe(5);
  });

  test('without a users file a username is not checked: the client is anonymous', async () => {
    const b = await startBroker();
    cleanups.push(() => b.close());
    const client = await connect(b.url, { username: 'anyone', password: 'anything' });
    client.end();
  });

  test('a non-loopback listener without authentication is a config error with its position and code', async () => {
    const { dir, configFile, cleanup } = writeProject({ config: 'broker:\n  listeners:\n    - { type: mqtt, host: 0.0.0.0, port: 0 }\n' });
    cleanups.push(cleanup);
    expect(() => loadProject(configFile, { explicit: true, registry: createOutputRegistry() })).toThrow(ConfigError);
    const result = await cli(['check', '--config', configFile], dir);
    expect(result.code).not.toBe(0);
    expect(result.stdout + result.stderr).toMatch(/signalbox\.yaml:3:\d+ SB_AUTH_INSECURE_LISTENER listener mqtt on 0\.0\.0\.0:0 /);
  });

  test('createBroker refuses to listen on it too, with a typed error naming the listener', async () => {
    const broker = createBroker(parseBrokerConfig({ listeners: [{ type: 'mqtt', host: '0.0.0.0', port: 0 }] }), { log: silentLogger() });
    await expect(broker.listen()).rejects.toMatchObject({ code: 'SB_ERR_INSECURE_LISTENER', message: expect.stringContaining('listeners[0]') });
    await broker.close();
  });

  test('anonymous: true on a non-loopback listener starts with a warning', async () => {
    const { log, lines } = recordingLogger();
    // The listener is configured for 0.0.0.0 but binds loopback, so the test stays on 127.0.0.1.
    const loopbackOnly = (lc: ListenerConfig) => createMqttListener({ ...lc, host: '127.0.0.1' });
    const broker = createBroker(parseBrokerConfig({ listeners: [{ type: 'mqtt', host: '0.0.0.0', port: 0, anonymous: true }] }), { log, listenerTypes: { mqtt: loopbackOnly } });
    cleanups.push(() => broker.close());
    const [address] = await broker.listen();
    expect(lines.some((l) => l.level === 40 && String(l.msg).includes('anonymous clients may connect to this listener from the network') && l.host === '0.0.0.0')).toBe(true);
    (await connect(`mqtt://127.0.0.1:${address!.port}`)).end();
  });
});

describe('client certificates', () => {
  test('the certificate identity is the username, whatever CONNECT says', async () => {
    const withCertificate = (lc: ListenerConfig) => {
      const inner = createMqttListener(lc);
      return { start: (onStream: Parameters<typeof inner.start>[0]) => inner.start((stream, peer) => onStream(stream, { ...peer, certificateUsername: 'alice' })), stop: () => inner.stop() };
    };
    const { users } = await writeUsers({ bob: 'bob-pw' });
    const acl = [{ user: '*', allow: [{ subscribe: 'sensors/%u/#' }] }];
    const b = await startBroker({ auth: { users: 'users.yaml' }, acl }, { users, listenerTypes: { mqtt: withCertificate } });
    cleanups.push(() => b.close());
    const client = await connect(b.url, { protocolVersion: 5, username: 'bob', password: 'wrong' });
    cleanups.push(() => client.endAsync());
    expect((await client.subscribeAsync('sensors/alice/#', { qos: 0 }))[0]!.qos).toBe(0);
    await expect(client.subscribeAsync('sensors/bob/#', { qos: 0 })).rejects.toThrow(/Not authorized/);
  });
});

describe('failed logins are slowed per IP', () => {
  test('1,000 wrong passwords from one IP are slowed down; the right one from another IP connects at once', async () => {
    const b = await brokerWithUsers();
    const attempts = Array.from({ length: 1000 }, () => connectFrom(b.port, '127.0.0.1', { username: 'alice', password: Buffer.from('guess') }));
    cleanups.push(() => attempts.forEach((a) => a.socket.destroy()));
    let refused = 0;
    for (const a of attempts) void a.connack.then((c) => c && refused++);
    // Give the guesses a head start so they are all queued.
    await new Promise<void>((resolve) => attempts[999]!.socket.once('connect', () => resolve()));
    const started = Date.now();
    const good = connectFrom(b.port, '127.0.0.2', { username: 'alice', password: Buffer.from('alice-pw') });
    cleanups.push(() => {
      good.socket.destroy();
    });
    expect((await good.connack)?.returnCode).toBe(0);
    const tookMs = Date.now() - started;
    expect(tookMs).toBeLessThan(2000);
    // Delays of 100, 200, 400, 800 ms … before each refusal: only a handful can be answered yet.
    const first = await attempts[0]!.connack;
    expect(first?.returnCode).toBe(4);
    expect(refused).toBeLessThan(10);
    expect(b.broker.stats.connectionsAccepted).toBe(1);
  });
});

describe('sessions belong to their user', () => {
  test('another user cannot take over a client id; the owner keeps the session and its queue', async () => {
    const b = await brokerWithUsers();
    const alice = await connect(b.url, { clientId: 'shared-id', clean: false, username: 'alice', password: 'alice-pw' });
    await alice.subscribeAsync('inbox/#', { qos: 1 });
    await alice.endAsync();
    const bob = await connect(b.url, { username: 'bob', password: 'bob-pw' });
    cleanups.push(() => bob.endAsync());
    await bob.publishAsync('inbox/1', 'queued while away', { qos: 1 });

    const thief = await openRaw(b.port, { protocolVersion: 5 });
    const refused = await thief.connect({ clientId: 'shared-id', clean: true, username: 'bob', password: Buffer.from('bob-pw') }, { within: 5000 });
    expect(refused.reasonCode).toBe(0x87);
    const thief4 = await openRaw(b.port);
    expect((await thief4.connect({ clientId: 'shared-id', clean: false, username: 'bob', password: Buffer.from('bob-pw') })).returnCode).toBe(5);

    // Listening before CONNACK: the queued message follows it at once.
    const back = mqtt.connect(b.url, { clientId: 'shared-id', clean: false, username: 'alice', password: 'alice-pw', protocolVersion: 4, reconnectPeriod: 0 });
    const got = await nextMessage(back, { within: 5000 });
    expect(got.topic).toBe('inbox/1');
    expect(got.payload.toString()).toBe('queued while away');
    await back.endAsync();
  });

  test('an online owner is not disconnected by another user trying its client id', async () => {
    const b = await brokerWithUsers();
    const alice = await connect(b.url, { clientId: 'taken', username: 'alice', password: 'alice-pw' });
    cleanups.push(() => alice.endAsync());
    await alice.subscribeAsync('still/here', { qos: 0 });
    const thief = await openRaw(b.port);
    expect((await thief.connect({ clientId: 'taken', username: 'bob', password: Buffer.from('bob-pw') })).returnCode).toBe(5);
    const got = nextMessage(alice);
    await b.broker.publish({ topic: 'still/here', payload: 'yes' });
    expect((await got).topic).toBe('still/here');
  });

  test('the owner of a persistent session is stored and survives a restart', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-owner-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    await writeUsers({ alice: 'alice-pw', bob: 'bob-pw' }, dir);
    const configFile = path.join(dir, 'signalbox.yaml');
    writeFileSync(configFile, 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n  auth: { users: users.yaml }\nstorage: { path: state.db }\n');
    mkdirSync(path.join(dir, 'rules'));
    const registry = createOutputRegistry();
    const start = async () => {
      const project = loadProject(configFile, { explicit: true, registry });
      const engine = createEngine(project.config, project.compiled.rules, { log: silentLogger(), registry });
      const [address] = await engine.broker.listen();
      return { engine, url: `mqtt://127.0.0.1:${address!.port}`, port: address!.port };
    };
    const first = await start();
    const alice = await connect(first.url, { clientId: 'kept', clean: false, username: 'alice', password: 'alice-pw' });
    await alice.subscribeAsync('kept/#', { qos: 1 });
    await alice.endAsync();
    await first.engine.close();

    const second = await start();
    cleanups.push(() => second.engine.close());
    const thief = await openRaw(second.port);
    expect((await thief.connect({ clientId: 'kept', clean: false, username: 'bob', password: Buffer.from('bob-pw') })).returnCode).toBe(5);
    const owner = await openRaw(second.port);
    const connack = await owner.connect({ clientId: 'kept', clean: false, username: 'alice', password: Buffer.from('alice-pw') });
    expect(connack.returnCode).toBe(0);
    expect(connack.sessionPresent).toBe(true);
    owner.destroy();
  });
});

describe('sessions stored before owners were recorded', () => {
  test('are discarded, not handed over, when a user connects with their client id', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-legacy-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // A database as the previous schema left it, with one stored session and a queued message.
    const old = openDatabase(path.join(dir, 'state.db'), { log: silentLogger(), durability: 'normal', migrations: MIGRATIONS.filter((m) => m.id <= 3) });
    old.prepare('INSERT INTO sessions (client_id, expiry_s, disconnected_at) VALUES (?, ?, ?)').run('legacy', 3600, Date.now());
    old.prepare('INSERT INTO subscriptions (client_id, filter, qos, no_local, retain_as_published, retain_handling, subscription_id) VALUES (?, ?, 1, 0, 0, 0, NULL)').run('legacy', 'old/#');
    old.close();
    await writeUsers({ alice: 'alice-pw' }, dir);
    writeFileSync(path.join(dir, 'signalbox.yaml'), 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n  auth: { users: users.yaml }\nstorage: { path: state.db }\n');
    mkdirSync(path.join(dir, 'rules'));
    const registry = createOutputRegistry();
    const project = loadProject(path.join(dir, 'signalbox.yaml'), { explicit: true, registry });
    const engine = createEngine(project.config, project.compiled.rules, { log: silentLogger(), registry });
    cleanups.push(() => engine.close());
    const [address] = await engine.broker.listen();
    const raw = await openRaw(address!.port);
    const connack = await raw.connect({ clientId: 'legacy', clean: false, username: 'alice', password: Buffer.from('alice-pw') });
    expect(connack).toMatchObject({ returnCode: 0, sessionPresent: false });
    raw.destroy();
  });
});

describe('signalbox passwd', () => {
  function passwd(args: string[], input: string, cwd: string): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, 'passwd', ...args], { cwd, stdio: ['pipe', 'pipe', 'pipe'], timeout: 15_000 });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stderr }));
      child.stdin.end(input);
    });
  }

  test('creates a 0600 file holding only a scrypt hash, which the broker accepts', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-passwd-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const result = await passwd(['users.yaml', 'carol'], 'Tr0ub4dor&3\n', dir);
    expect(result).toMatchObject({ code: 0 });
    const file = path.join(dir, 'users.yaml');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = readFileSync(file, 'utf8');
    expect(text).toMatch(/carol:\n\s+password: scrypt\$16384\$8\$1\$/);
    expect(text).not.toContain('Tr0ub4dor');

    const issues: ConfigIssue[] = [];
    const users = loadUsersFile(file, issues)!;
    expect(issues).toEqual([]);
    const b = await startBroker({ auth: { users: 'users.yaml' } }, { users });
    cleanups.push(() => b.close());
    (await connect(b.url, { username: 'carol', password: 'Tr0ub4dor&3' })).end();
  });

  test.skipIf(!existsSync('/usr/bin/script'))('on a terminal it prompts twice without echoing the password', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-passwd-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    // script(1) runs the command on a pseudo-terminal, so stdin is a TTY as for a user.
    const child = spawn('/usr/bin/script', ['-qec', `"${process.execPath}" "${CLI}" passwd users.yaml tty-user`, '/dev/null'], { cwd: dir, stdio: ['pipe', 'pipe', 'pipe'], timeout: 15_000 });
    let output = '';
    const answered = new Set<string>();
    child.stdout.on('data', (d: Buffer) => {
      output += d.toString();
      for (const prompt of ['Password: ', 'Repeat password: ']) {
        if (output.includes(prompt) && !answered.has(prompt)) {
          answered.add(prompt);
          child.stdin.write('s3cret-tty\r');
        }
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(code).toBe(0);
    expect([...answered]).toEqual(['Password: ', 'Repeat password: ']);
    expect(output).not.toContain('s3cret-tty');
    expect(readFileSync(path.join(dir, 'users.yaml'), 'utf8')).toMatch(/tty-user:\n\s+password: scrypt\$/);
  });

  test('changes one password, keeps the other users, and --delete removes a user', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-passwd-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    await passwd(['users.yaml', 'a'], 'one\n', dir);
    await passwd(['users.yaml', 'b'], 'two\n', dir);
    const before = readFileSync(path.join(dir, 'users.yaml'), 'utf8');
    await passwd(['users.yaml', 'a'], 'three\n', dir);
    const after = readFileSync(path.join(dir, 'users.yaml'), 'utf8');
    expect(after).not.toBe(before);
    expect(after.match(/ b:\n\s+password: (\S+)/)![1]).toBe(before.match(/ b:\n\s+password: (\S+)/)![1]);
    expect(await passwd(['users.yaml', 'a', '--delete'], '', dir)).toMatchObject({ code: 0 });
    const left = readFileSync(path.join(dir, 'users.yaml'), 'utf8');
    expect(left).not.toMatch(/\ba:/);
    expect(left).toMatch(/\bb:/);
    expect(statSync(path.join(dir, 'users.yaml')).mode & 0o777).toBe(0o600);
    expect((await passwd(['users.yaml', 'nobody', '--delete'], '', dir)).code).toBe(1);
  });

  test('refuses control characters in usernames, an empty password, and a file that is not a users file', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-passwd-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const control = await passwd(['users.yaml', 'evil\u001b[31m'], 'pw\n', dir);
    expect(control.code).toBe(2);
    expect(control.stderr).toContain('control characters');
    expect((await passwd(['users.yaml', 'x'], '\n', dir)).stderr).toContain('must not be empty');
    writeFileSync(path.join(dir, 'other.yaml'), '- not\n- users\n');
    const wrong = await passwd(['other.yaml', 'x'], 'pw\n', dir);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('SB_AUTH_USERS');
    expect(readFileSync(path.join(dir, 'other.yaml'), 'utf8')).toBe('- not\n- users\n');
    mkdirSync(path.join(dir, 'folder.yaml'));
    expect(await passwd(['folder.yaml', 'x'], 'pw\n', dir)).toMatchObject({ code: 1, stderr: expect.stringContaining('cannot read folder.yaml: EISDIR') });
    expect(await passwd(['missing/users.yaml', 'x'], 'pw\n', dir)).toMatchObject({ code: 1, stderr: expect.stringContaining('cannot write missing/users.yaml: ENOENT') });
  });
});

describe('users file errors', () => {
  function problems(usersYaml: string): ConfigIssue[] {
    const { dir, configFile, cleanup } = writeProject({ config: 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n  auth: { users: users.yaml }\n' });
    cleanups.push(cleanup);
    if (usersYaml === 'a folder') mkdirSync(path.join(dir, 'users.yaml'));
    else if (usersYaml) writeFileSync(path.join(dir, 'users.yaml'), usersYaml);
    return loadIssues(configFile);
  }

  test.each([
    { name: 'a missing file', yaml: '', code: 'SB_CONFIG_NOT_FOUND', line: 1, text: 'file not found' },
    { name: 'an unreadable file', yaml: 'a folder', code: 'SB_AUTH_USERS', line: 1, text: 'cannot read the users file: EISDIR' },
    { name: 'bad YAML', yaml: 'users: { a: [\n', code: 'SB_CONFIG_YAML', line: 2, text: '' },
    { name: 'a plain-text password', yaml: 'users:\n  alice:\n    password: hunter2\n', code: 'SB_AUTH_USERS', line: 3, text: 'looks like plain text' },
    { name: 'a bad hash', yaml: 'users:\n  alice:\n    password: scrypt$3$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==\n', code: 'SB_AUTH_USERS', line: 3, text: 'not a power of two' },
    { name: 'a wrong shape', yaml: 'alice: x\n', code: 'SB_AUTH_USERS', line: 1, text: 'one key, `users:`' },
    { name: 'an entry without a password', yaml: 'users:\n  alice: {}\n', code: 'SB_AUTH_USERS', line: 2, text: 'expected { password' },
  ])('$name is a config error in users.yaml', ({ yaml, code, line, text }) => {
    const found = problems(yaml);
    expect(found.length).toBeGreaterThanOrEqual(1);
    expect(found[0]).toMatchObject({ file: expect.stringMatching(/users\.yaml$/), code, line });
    expect(found[0]!.message).toContain(text);
    expect(found[0]!.message).not.toContain('hunter2');
  });
});
