import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import {
  durableProject,
  fingerprint,
  launchCli,
  recorder,
  recordingLogger,
  startInProcess,
  withDb,
  type DurableProject,
} from '../helpers/durable.js';
import { requireCommand } from '../helpers/peers.js';
import { openRaw, type RawClient } from '../helpers/raw-client.js';

/**
 * Bad storage: signalbox never starts on a database it cannot trust, never recreates it, and
 * never acknowledges a message it could not store; once storage works again nothing that was
 * acknowledged is missing.
 */

const KEEP_RULE = `rules:
  - id: keep
    on: "keep/#"
    to:
      - history: {}
`;

const RUNNING_AS_ROOT = process.getuid?.() === 0;
/** As root, file permissions do not stop writes; the read-only tests run the CLI as uid 65534 through setpriv. */
const setpriv = requireCommand('setpriv', 'apt-get install -y util-linux');

/** A database with some history in it, closed cleanly (its WAL checkpointed into the file). */
async function realDatabase(project: DurableProject): Promise<void> {
  const sb = await startInProcess(project);
  const pub = await recorder(project.url, { clientId: 'filler' });
  for (let i = 0; i < 60; i++) await pub.client.publishAsync(`keep/${i}`, `row ${i} `.repeat(200), { qos: 1 });
  await pub.end();
  await sb.close();
  expect(existsSync(`${project.dbPath}-wal`)).toBe(false);
}

async function raw(port: number, protocolVersion: 4 | 5): Promise<RawClient> {
  const r = await openRaw(port, { protocolVersion });
  onTestFinished(() => r.destroy());
  const connack = await r.connect({ clientId: `raw-${protocolVersion}-${Math.random().toString(36).slice(2, 8)}` });
  expect(connack.returnCode ?? connack.reasonCode ?? 0).toBe(0);
  return r;
}

/** A payload of `size` bytes that starts with a readable label. */
function labelled(label: string, size = 64 * 1024): Buffer {
  return Buffer.concat([Buffer.from(`${label}:`), Buffer.alloc(size, 'x')]);
}

function labelOf(payload: Buffer | string): string {
  return payload.toString().split(':')[0]!;
}

function historyLabels(dbPath: string): string[] {
  return withDb(dbPath, (db) => (db.prepare("SELECT payload FROM history WHERE topic LIKE 'keep/%' ORDER BY id").all() as Array<{ payload: Buffer }>).map((r) => labelOf(r.payload)));
}

describe('a damaged database file', () => {
  it('signalbox run refuses a file of random bytes: exits non-zero, names the file and leaves it untouched', async () => {
    const project = await durableProject();
    mkdirSync(path.dirname(project.dbPath), { recursive: true });
    writeFileSync(project.dbPath, randomBytes(16 * 1024));
    const before = fingerprint(project.dbPath);

    const { exit } = await launchCli(project);

    expect(exit, 'signalbox started on a file of random bytes').toBeDefined();
    expect(exit!.code).not.toBe(0);
    expect(exit!.stdout + exit!.stderr).toContain(project.dbPath);
    expect(fingerprint(project.dbPath)).toEqual(before);
  });

  it('signalbox run refuses a truncated database: exits non-zero, names the file and leaves it untouched', async () => {
    const project = await durableProject({ rules: { 'keep.yaml': KEEP_RULE } });
    await realDatabase(project);
    const { size } = fingerprint(project.dbPath);
    truncateSync(project.dbPath, Math.floor(size / 2 / 4096) * 4096);
    const before = fingerprint(project.dbPath);

    const { exit } = await launchCli(project);

    expect(exit, 'signalbox started on a truncated database').toBeDefined();
    expect(exit!.code).not.toBe(0);
    expect(exit!.stdout + exit!.stderr).toContain(project.dbPath);
    expect(fingerprint(project.dbPath)).toEqual(before);
  });

  it('the refusal names the error code SB_ERR_STORAGE_CORRUPT and is a message, not a stack trace', async () => {
    const project = await durableProject();
    mkdirSync(path.dirname(project.dbPath), { recursive: true });
    writeFileSync(project.dbPath, randomBytes(16 * 1024));

    const { exit } = await launchCli(project);

    const output = exit!.stdout + exit!.stderr;
    expect(output).toContain('SB_ERR_STORAGE_CORRUPT');
    expect(output).not.toMatch(/^\s+at .*\(file:\/\//m);
  });
});

describe('a full disk (PRAGMA max_page_count on the engine\'s own connection)', () => {
  it('MQTT 5: a publish that cannot be stored gets a failure reason code, the error is logged, and once space returns it is stored with nothing acknowledged lost', async () => {
    const project = await durableProject({ rules: { 'keep.yaml': KEEP_RULE } });
    const { log, lines } = recordingLogger();
    const sb = await startInProcess(project, { log });
    // An offline persistent subscriber: everything acknowledged is also owed to it.
    const sub = await recorder(project.url, { clientId: 'full-sub', clean: false });
    await sub.client.subscribeAsync('keep/#', { qos: 1 });
    await sub.end();

    const pub = await raw(project.port, 5);
    const acked: string[] = [];
    const publish = (label: string, messageId: number, qos: 1 | 2 = 1) =>
      pub.send({ cmd: 'publish', topic: `keep/${label}`, payload: labelled(label), qos, messageId, retain: false, dup: false });

    publish('before', 1);
    expect((await pub.expectPacket('puback')).reasonCode ?? 0).toBe(0);
    acked.push('before');

    const pages = sb.engine.db.pragma('page_count', { simple: true }) as number;
    sb.engine.db.pragma(`max_page_count = ${pages}`);
    // 64 KiB payloads need new pages at once; the loop is bounded in case some free space is left.
    let refused: { label: string; messageId: number; reasonCode: number } | undefined;
    for (let i = 0; i < 20 && !refused; i++) {
      const label = `full-${i}`;
      publish(label, 10 + i);
      const ack = await pub.expectPacket('puback');
      if ((ack.reasonCode ?? 0) === 0) acked.push(label);
      else refused = { label, messageId: 10 + i, reasonCode: ack.reasonCode! };
    }
    expect(refused, 'no publish was refused with max_page_count at the database size').toBeDefined();
    expect(refused!.reasonCode).toBeGreaterThanOrEqual(0x80);
    // QoS 2 is refused the same way, at PUBREC.
    publish('full-qos2', 100, 2);
    expect((await pub.expectPacket('pubrec')).reasonCode).toBeGreaterThanOrEqual(0x80);

    const logged = lines.find((l) => l.code === 'SB_ERR_STORAGE_FULL' && (l.level as number) >= 50);
    expect(logged, `no error logged with code SB_ERR_STORAGE_FULL; logged: ${lines.map((l) => l.msg).join(' | ')}`).toBeDefined();
    expect(JSON.stringify(logged)).toContain(project.dbPath);

    sb.engine.db.pragma('max_page_count = 4294967294');
    // The client sends the refused messages again; now they are stored.
    publish(refused!.label, refused!.messageId);
    expect((await pub.expectPacket('puback')).reasonCode ?? 0).toBe(0);
    acked.push(refused!.label);
    publish('full-qos2', 100, 2);
    expect((await pub.expectPacket('pubrec')).reasonCode ?? 0).toBe(0);
    pub.send({ cmd: 'pubrel', messageId: 100 });
    expect((await pub.expectPacket('pubcomp')).reasonCode ?? 0).toBe(0);
    acked.push('full-qos2');
    publish('after', 200);
    expect((await pub.expectPacket('puback')).reasonCode ?? 0).toBe(0);
    acked.push('after');
    pub.destroy();

    expect(historyLabels(project.dbPath)).toEqual(acked);
    // After a restart the subscriber gets exactly what was acknowledged, in order.
    await sb.close();
    await startInProcess(project);
    const again = await recorder(project.url, { clientId: 'full-sub', clean: false });
    expect(again.connack.sessionPresent).toBe(true);
    await again.waitForCount(acked.length);
    await again.nothingMore();
    expect(again.received.map((m) => labelOf(m.payload))).toEqual(acked);
  });

  it('a retained message refused while the disk is full does not replace the stored one, neither live nor after a restart', async () => {
    const project = await durableProject();
    const sb = await startInProcess(project);
    const pub = await raw(project.port, 5);
    const publish = (label: string, messageId: number) =>
      pub.send({ cmd: 'publish', topic: 'ret/r', payload: labelled(label), qos: 1, messageId, retain: true, dup: false });

    publish('stored', 1);
    expect((await pub.expectPacket('puback')).reasonCode ?? 0).toBe(0);
    let lastAcked = 'stored';
    sb.engine.db.pragma(`max_page_count = ${sb.engine.db.pragma('page_count', { simple: true }) as number}`);
    let refused: string | undefined;
    for (let i = 0; i < 20 && !refused; i++) {
      publish(`new-${i}`, 10 + i);
      if (((await pub.expectPacket('puback')).reasonCode ?? 0) === 0) lastAcked = `new-${i}`;
      else refused = `new-${i}`;
    }
    expect(refused, 'no publish was refused with max_page_count at the database size').toBeDefined();

    const live = await recorder(project.url, { clientId: 'ret-live' });
    await live.client.subscribeAsync('ret/r', { qos: 1 });
    const [servedLive] = await live.waitForCount(1);
    await sb.close();
    await startInProcess(project);
    const later = await recorder(project.url, { clientId: 'ret-later' });
    await later.client.subscribeAsync('ret/r', { qos: 1 });
    const [servedLater] = await later.waitForCount(1);
    expect({ live: labelOf(servedLive!.payload), afterRestart: labelOf(servedLater!.payload) }).toEqual({ live: lastAcked, afterRestart: lastAcked });
  });

  it('MQTT 3.1.1: a QoS 1 publish that cannot be stored closes the connection without PUBACK, and the resend is stored once space returns', async () => {
    const project = await durableProject({ rules: { 'keep.yaml': KEEP_RULE } });
    const { log, lines } = recordingLogger();
    const sb = await startInProcess(project, { log });
    const acked: string[] = [];
    const publish = (r: RawClient, label: string, messageId: number) =>
      r.send({ cmd: 'publish', topic: `keep/${label}`, payload: labelled(label), qos: 1, messageId, retain: false, dup: false });

    const pub = await raw(project.port, 4);
    publish(pub, 'before', 1);
    await pub.expectPacket('puback');
    acked.push('before');

    sb.engine.db.pragma(`max_page_count = ${sb.engine.db.pragma('page_count', { simple: true }) as number}`);
    let refused: string | undefined;
    for (let i = 0; i < 20 && !refused; i++) {
      const label = `full-${i}`;
      publish(pub, label, 10 + i);
      const answer = await pub.nextPacket({ within: 5000 }).catch((err: Error) => err);
      if (answer instanceof Error) {
        expect(pub.isClosed, answer.message).toBe(true);
        refused = label;
      } else {
        expect(answer.cmd).toBe('puback');
        acked.push(label);
      }
    }
    expect(refused, 'no publish was refused with max_page_count at the database size').toBeDefined();
    expect(lines.some((l) => l.code === 'SB_ERR_STORAGE_FULL' && (l.level as number) >= 50)).toBe(true);

    sb.engine.db.pragma('max_page_count = 4294967294');
    const again = await raw(project.port, 4);
    publish(again, refused!, 1);
    await again.expectPacket('puback');
    acked.push(refused!);
    again.destroy();

    expect(historyLabels(project.dbPath)).toEqual(acked);
  });
});

describe('a database that cannot be written', () => {
  it('becoming read-only while signalbox runs: QoS 1 publishes are not acknowledged, SB_ERR_STORAGE_READONLY is logged, and writes work again once it is writable', async () => {
    const project = await durableProject({ rules: { 'keep.yaml': KEEP_RULE } });
    const { log, lines } = recordingLogger();
    const sb = await startInProcess(project, { log });
    const pub = await raw(project.port, 5);
    const publish = (label: string, messageId: number, retain = false) =>
      pub.send({ cmd: 'publish', topic: `keep/${label}`, payload: labelled(label, 10), qos: 1, messageId, retain, dup: false });

    publish('before', 1);
    expect((await pub.expectPacket('puback')).reasonCode ?? 0).toBe(0);
    // What a file system remounted read-only looks like to SQLite: writes fail with SQLITE_READONLY.
    sb.engine.db.pragma('query_only = ON');
    publish('history-row', 2);
    expect((await pub.expectPacket('puback')).reasonCode).toBeGreaterThanOrEqual(0x80);
    pub.send({ cmd: 'publish', topic: 'no-rule/retained', payload: Buffer.from('r'), qos: 1, messageId: 3, retain: true, dup: false });
    expect((await pub.expectPacket('puback')).reasonCode).toBeGreaterThanOrEqual(0x80);
    const logged = lines.find((l) => l.code === 'SB_ERR_STORAGE_READONLY' && (l.level as number) >= 50);
    expect(logged, `no error logged with code SB_ERR_STORAGE_READONLY; logged: ${lines.map((l) => l.msg).join(' | ')}`).toBeDefined();

    sb.engine.db.pragma('query_only = OFF');
    publish('history-row', 2);
    expect((await pub.expectPacket('puback')).reasonCode ?? 0).toBe(0);
    pub.destroy();
    expect(historyLabels(project.dbPath)).toEqual(['before', 'history-row']);
  });

  it('signalbox run refuses a database whose file and folder are read-only: exits non-zero, names the file and leaves it untouched', async (ctx) => {
    if (RUNNING_AS_ROOT) setpriv.require(ctx);
    const project = await durableProject({ rules: { 'keep.yaml': KEEP_RULE } });
    await realDatabase(project);
    const dataDir = path.dirname(project.dbPath);
    chmodSync(project.dir, 0o755);
    chmodSync(project.dbPath, 0o444);
    chmodSync(dataDir, 0o555);
    try {
      const before = fingerprint(project.dbPath);
      const { exit, cli } = await launchCli(project, { unprivileged: true });
      if (cli) await cli.stop('SIGKILL');
      expect(exit, 'signalbox started on a database it cannot write').toBeDefined();
      expect(exit!.code).not.toBe(0);
      const output = exit!.stdout + exit!.stderr;
      expect(output).toContain(project.dbPath);
      expect(output).toMatch(/read-?only|cannot be written/i);
      expect(fingerprint(project.dbPath)).toEqual(before);
    } finally {
      chmodSync(dataDir, 0o755);
    }
  });

  it('a read-only database file in a writable folder: signalbox refuses to start, or acknowledges no QoS 1 publish and logs SB_ERR_STORAGE_READONLY', async (ctx) => {
    if (RUNNING_AS_ROOT) setpriv.require(ctx);
    const project = await durableProject({ rules: { 'keep.yaml': KEEP_RULE } });
    await realDatabase(project);
    const dataDir = path.dirname(project.dbPath);
    chmodSync(project.dir, 0o755);
    chmodSync(project.dbPath, 0o444);
    if (RUNNING_AS_ROOT) chownSync(dataDir, 65_534, 65_534); // the folder is the unprivileged user's, the file is not
    const before = fingerprint(project.dbPath);

    const { exit, cli } = await launchCli(project, { unprivileged: true });
    if (exit) {
      expect(exit.code).not.toBe(0);
      expect(exit.stdout + exit.stderr).toContain(project.dbPath);
    } else {
      const pub = await raw(project.port, 5);
      pub.send({ cmd: 'publish', topic: 'keep/ro', payload: Buffer.from('{"n":1}'), qos: 1, messageId: 1, retain: false, dup: false });
      expect((await pub.expectPacket('puback')).reasonCode, 'a publish with a history rule was acknowledged').toBeGreaterThanOrEqual(0x80);
      pub.send({ cmd: 'publish', topic: 'no-rule/ro', payload: Buffer.from('r'), qos: 1, messageId: 2, retain: true, dup: false });
      expect((await pub.expectPacket('puback')).reasonCode, 'a retained publish was acknowledged').toBeGreaterThanOrEqual(0x80);
      const line = await cli.child.waitForLine(/"code":"SB_ERR_STORAGE_READONLY"/);
      expect(line).toContain(project.dbPath);
      pub.destroy();
      expect((await cli.stop('SIGTERM')).code).toBe(0);
    }
    const after = fingerprint(project.dbPath);
    expect([after.size, after.sha256, after.mtimeMs]).toEqual([before.size, before.sha256, before.mtimeMs]);
  });
});
