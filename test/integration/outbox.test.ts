import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import BetterSqlite3 from 'better-sqlite3';
import type { MqttClient } from 'mqtt';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { Clock } from '../../src/clock.js';
import { ConfigError, type ConfigIssue } from '../../src/config/issues.js';
import { loadProject } from '../../src/config/load.js';
import { createEngine, type Engine } from '../../src/engine/engine.js';
import { silentLogger } from '../../src/log.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { storedMessages } from '../../src/storage/outbox-codec.js';
import { startEngine, writeProject, type TestEngine } from '../helpers/engine.js';
import { FakeClock } from '../helpers/fake-clock.js';
import { connect, waitFor } from '../helpers/mqtt.js';
import { TestTarget, testAction, testConnector } from '../helpers/test-output.js';

/**
 * The durable outbox of a remote output, through a whole signalbox: a rule sends every
 * `data/#` message to the named output `remote` (a TestTarget that can be taken down or
 * made to refuse messages), and MQTT clients publish over real sockets on 127.0.0.1.
 */

const FORWARD_RULES = {
  'forward.yaml': `rules:
  - id: forward
    on: data/#
    to:
      - test: { output: remote }
`,
};

/** signalbox.yaml with one `test` output named `remote` and these `outbox:` settings (YAML flow map). */
function configWith(outbox: string): string {
  return `broker:
  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]
outputs:
  remote:
    type: test
    outbox: ${outbox}
`;
}

/** Fast retries so a repaired target is noticed within a few ms. */
const FAST_RETRY = '{ retryMinMs: 5, retryMaxMs: 20 }';

interface Running {
  sb: TestEngine;
  target: TestTarget;
}

/** Starts a signalbox with the forward rule and the `remote` test output; closed when the test ends. */
async function startWithOutput(outbox = FAST_RETRY, deps: { clock?: Clock } = {}): Promise<Running> {
  const targets: Record<string, TestTarget> = {};
  const sb = await startEngine({ config: configWith(outbox), rules: FORWARD_RULES }, { actions: [testAction], connectors: [testConnector(targets)], clock: deps.clock });
  onTestFinished(() => sb.close());
  return { sb, target: targets['remote']! };
}

async function client(url: string, options: Parameters<typeof connect>[1] = {}): Promise<MqttClient> {
  const c = await connect(url, options);
  onTestFinished(() => {
    c.end(true);
  });
  return c;
}

/** `promise`, or a rejection naming `what` after `ms`. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** Polls `condition` (database state, counters) until it holds; fails with `what` after `within` ms. */
async function until(condition: () => boolean, what: string, { within: ms = 5000 } = {}): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/**
 * A full garbage collection on demand. Node only offers `gc` with --expose-gc; the flag can
 * be set at run time and the function taken from a fresh context.
 */
function exposeGc(): () => Promise<void> {
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  return async () => {
    // V8 frees the memory of dead Buffers on a background thread after a collection; let it
    // finish (a few turns of the event loop) and collect again.
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
    }
  };
}

/** Bytes JavaScript holds: the V8 heap in use plus Buffer memory. */
function heldByJs(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** Lets pending I/O callbacks and promise chains run (after moving a fake clock). */
async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
}

function outboxRows(engine: Engine, output = 'remote'): { n: number; bytes: number } {
  const waiting = storedMessages(engine.db, output);
  return { n: waiting.length, bytes: waiting.reduce((sum, m) => sum + m.payload.length, 0) };
}

function statusOf(engine: Engine, name = 'remote') {
  const s = engine.outputs.status().find((o) => o.name === name);
  if (!s) throw new Error(`no output status for ${name}`);
  return s;
}

/** Payloads that arrived at `target`, as text. */
function texts(target: TestTarget): string[] {
  return target.received.map((m) => m.payload.toString());
}

/** Publishes at QoS 1: undefined when acknowledged, the reason code when refused (MQTT 5 PUBACK >= 0x80). */
async function publishRefusal(c: MqttClient, topic: string, payload: string | Buffer): Promise<number | undefined> {
  try {
    await within(c.publishAsync(topic, payload, { qos: 1 }), 3000, `PUBACK for ${topic}`);
    return undefined;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code !== 'number') throw err;
    return code;
  }
}

describe('remote outputs deliver through a durable outbox', () => {
  it('acknowledges everything published while the output is down, and delivers all of it in order per topic once it is back', async () => {
    const { sb, target } = await startWithOutput();
    target.mode = 'down';
    const pub = await client(sb.url, { clientId: 'burst' });
    const topics = ['data/a', 'data/b', 'data/c'];
    const acks: Promise<unknown>[] = [];
    for (let i = 0; i < 2000; i++) for (const t of topics) acks.push(pub.publishAsync(t, String(i), { qos: 1 }));
    // Acked means stored in the outbox: every PUBACK arrives while the output is still down.
    await within(Promise.all(acks), 8000, '6,000 PUBACKs');
    expect(target.received).toHaveLength(0);
    expect(outboxRows(sb.engine).n).toBe(6000);
    // A long outage, in retries: the drain has failed many times over.
    await until(() => target.failures >= 20, 'twenty failed delivery attempts');
    expect(target.received).toHaveLength(0);

    target.mode = 'up';
    await target.waitFor(6000, { within: 5000 });
    for (const t of topics) {
      const got = target.received.filter((m) => m.topic === t).map((m) => Number(m.payload.toString()));
      expect(got, `order on ${t}`).toEqual(Array.from({ length: 2000 }, (_, i) => i));
    }
    expect(target.received).toHaveLength(6000);
    await until(() => outboxRows(sb.engine).n === 0, 'delivered rows deleted from the outbox');
    expect(statusOf(sb.engine)).toMatchObject({ waiting: 0, waitingBytes: 0, delivered: 6000 });
  });

  it('keeps waiting messages in the database, not in memory: 20,000 messages of 2 KiB leave memory nearly flat', async () => {
    const { sb, target } = await startWithOutput('{ retryMinMs: 50, retryMaxMs: 200 }');
    target.mode = 'down';
    const pub = await client(sb.url, { clientId: 'bulk' });
    const SIZE = 2048;
    const payload = (i: number) => Buffer.concat([Buffer.from(`${String(i).padStart(6, '0')}:`), Buffer.alloc(SIZE - 7, 0x61)]);
    const publishRange = async (from: number, to: number) => {
      // A window of 1,000 in flight: the test client itself must not hold the whole load in memory.
      for (let start = from; start < to; start += 1000) {
        const acks: Promise<unknown>[] = [];
        for (let i = start; i < Math.min(to, start + 1000); i++) acks.push(pub.publishAsync(`data/bulk/${i % 4}`, payload(i), { qos: 1 }));
        await Promise.all(acks);
      }
    };
    const gc = exposeGc();
    // Warm-up with the same traffic: the allocator and V8's heap grow to the high-water mark
    // of passing 2 KiB messages through a client, the broker and SQLite (its page cache is
    // 16 MiB), and reuse that memory afterwards. Without it, RSS grows by tens of MiB even
    // when no rule stores anything.
    const WARM_UP = 10_000;
    await within(publishRange(0, WARM_UP), 5000, 'warm-up publishes');
    const rssBefore = process.memoryUsage().rss;
    await gc();
    const heapBefore = heldByJs();
    const COUNT = 20_000;
    await within(publishRange(WARM_UP, WARM_UP + COUNT), 8000, '20,000 PUBACKs');
    await gc();
    const rssGrowth = process.memoryUsage().rss - rssBefore;
    const heapGrowth = heldByJs() - heapBefore;

    const rows = outboxRows(sb.engine);
    expect(rows).toEqual({ n: WARM_UP + COUNT, bytes: (WARM_UP + COUNT) * SIZE });
    expect(statusOf(sb.engine)).toMatchObject({ waiting: WARM_UP + COUNT, waitingBytes: (WARM_UP + COUNT) * SIZE });
    expect(target.received).toHaveLength(0);
    // An outbox held in memory would keep all 40,960,000 bytes of payload reachable.
    const total = COUNT * SIZE;
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    // What JavaScript holds after a full collection (heap plus Buffers): the precise check.
    // Only the newest rows stay in memory for the drain (at most TAIL_MAX_BYTES, 2 MiB, of
    // payload). The bound is a tenth of the payload.
    expect(heapGrowth, `JS heap and Buffers grew by ${mib(heapGrowth)} for ${mib(total)} of payload`).toBeLessThan(total / 10);
    // The process as the OS sees it, from before the collection (garbage included) to after
    // it. Measured: it shrinks by 15-30 MiB. The bound, half the payload, is generous for
    // allocator slack and SQLite's page cache filling up, and still below what keeping the
    // payloads would cost.
    expect(rssGrowth, `rss grew by ${mib(rssGrowth)} for ${mib(total)} of payload`).toBeLessThan(total / 2);
  });

  it('moves a message the output refuses for good to the dead letters, with rule, output, error code and attempts, and delivers the rest in order', async () => {
    const { sb, target } = await startWithOutput();
    target.mode = 'down';
    const pub = await client(sb.url, { clientId: 'poisoner' });
    const payloads = ['m0', 'm1', 'm2', 'm3', 'poison-4', 'm5', 'm6', 'm7', 'm8', 'm9'];
    for (const p of payloads) await pub.publishAsync('data/p', p, { qos: 1 });
    await until(() => target.failures >= 2, 'failed attempts while down');
    target.mode = 'up';
    await target.waitFor(9);
    expect(texts(target)).toEqual(['m0', 'm1', 'm2', 'm3', 'm5', 'm6', 'm7', 'm8', 'm9']);

    await until(() => sb.engine.deadLetters.count() === 1, 'one dead letter');
    const [letter] = sb.engine.deadLetters.list();
    expect(letter).toMatchObject({ ruleId: 'forward', output: 'remote', topic: 'data/p', qos: 1, retain: false, clientId: 'poisoner' });
    expect(letter!.payload.toString()).toBe('poison-4');
    expect(letter!.error).toContain('SB_ERR_TEST_POISON');
    // It was tried while the output was down (each failed attempt counts) and once more when refused.
    expect(letter!.attempts).toBeGreaterThanOrEqual(2);
    expect(letter!.attempts).toBeLessThanOrEqual(target.writes);
    expect(statusOf(sb.engine).deadLettered).toBe(1);
    await until(() => outboxRows(sb.engine).n === 0, 'outbox empty');
  });

  it('passes MQTT 5 properties on to the output unchanged, binary correlation data included', async () => {
    const { sb, target } = await startWithOutput();
    const pub = await client(sb.url, { clientId: 'props', protocolVersion: 5 });
    const correlationData = Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]);
    await pub.publishAsync('data/props', Buffer.from([1, 2, 3]), {
      qos: 1,
      properties: { contentType: 'application/octet-stream', responseTopic: 'reply/here', correlationData, userProperties: { site: 'a' }, payloadFormatIndicator: false },
    });
    await target.waitFor(1);
    const [m] = target.received;
    expect(m!.payload).toEqual(Buffer.from([1, 2, 3]));
    expect(m!.properties).toMatchObject({ contentType: 'application/octet-stream', responseTopic: 'reply/here', userProperties: { site: 'a' } });
    expect(m!.properties?.correlationData, 'correlation data bytes').toEqual(correlationData);
  });

  it('retries a failing output with exponential backoff and jitter between retryMinMs and retryMaxMs, and delivers on the next retry once it is back', async () => {
    const clock = new FakeClock();
    const { sb, target } = await startWithOutput('{ retryMinMs: 100, retryMaxMs: 800 }', { clock });
    target.mode = 'down';
    const pub = await client(sb.url, { clientId: 'retry' });
    await pub.publishAsync('data/r', 'one', { qos: 1 });
    pub.end(true);
    await until(() => target.writes === 1, 'the first delivery attempt');

    // Walk the fake clock in 10 ms steps and note when each attempt happens.
    const STEP = 10;
    const attempts = [clock.now()];
    while (attempts.length < 16) {
      const before = target.writes;
      clock.advance(STEP);
      await settle();
      expect(target.writes - before, 'at most one attempt per step').toBeLessThanOrEqual(1);
      if (target.writes > before) attempts.push(clock.now());
      expect(clock.now() - attempts[attempts.length - 1]!, 'no retry later than retryMaxMs').toBeLessThanOrEqual(800);
    }
    const delays = attempts.slice(1).map((t, i) => t - attempts[i]!);
    // The first retry waits exactly retryMinMs; the n-th at most retryMinMs * 2^(n-1), capped at retryMaxMs.
    expect(delays[0]).toBe(100);
    delays.forEach((d, i) => {
      expect(d, `delay ${i + 1}`).toBeGreaterThanOrEqual(100);
      expect(d, `delay ${i + 1}`).toBeLessThanOrEqual(Math.min(800, 100 * 2 ** i));
    });
    // Backing off, not hammering: once capped, the jittered delays average (100 + 800) / 2;
    // staying near retryMinMs over 12 retries has a chance of the order of 1e-5.
    const capped = delays.slice(3);
    expect(capped.reduce((a, b) => a + b, 0) / capped.length).toBeGreaterThan(200);
    // Every failed attempt is recorded on disk.
    expect(storedMessages(sb.engine.db, 'remote')[0]!.attempts).toBe(target.failures);

    target.mode = 'up';
    clock.advance(800);
    await settle();
    expect(texts(target)).toEqual(['one']);
  });

  it('with overflow block, refuses new messages over maxBytes (MQTT 5 PUBACK 0x97, MQTT 3.1.1 disconnected) until the output drained', async () => {
    const { sb, target } = await startWithOutput('{ maxBytes: 1000, overflow: block, retryMinMs: 5, retryMaxMs: 20 }');
    target.mode = 'down';
    const v5 = await client(sb.url, { clientId: 'block-5', protocolVersion: 5 });
    const hundred = (tag: string) => tag.padEnd(100, '.');
    // Exactly maxBytes fits.
    for (let i = 0; i < 10; i++) await v5.publishAsync('data/b', hundred(`fits-${i}`), { qos: 1 });
    expect(statusOf(sb.engine)).toMatchObject({ waiting: 10, waitingBytes: 1000 });

    expect(await publishRefusal(v5, 'data/b', hundred('over-5'))).toBe(0x97);

    const v4 = await client(sb.url, { clientId: 'block-4', protocolVersion: 4 });
    const closed = waitFor(v4, 'close', { within: 3000 });
    v4.publish('data/b', hundred('over-4'), { qos: 1 }, () => undefined);
    await closed;

    expect(statusOf(sb.engine).blocked).toBeGreaterThanOrEqual(2);
    expect(outboxRows(sb.engine)).toEqual({ n: 10, bytes: 1000 });

    target.mode = 'up';
    await target.waitFor(10);
    await until(() => statusOf(sb.engine).waiting === 0, 'outbox drained');
    expect(await publishRefusal(v5, 'data/b', hundred('after-5'))).toBeUndefined();
    const again = await client(sb.url, { clientId: 'block-4b', protocolVersion: 4 });
    await within(again.publishAsync('data/b', hundred('after-4'), { qos: 1 }), 3000, 'PUBACK after the drain');
    await target.waitFor(12);
    expect(texts(target).map((t) => t.replace(/\.+$/, ''))).toEqual([...Array.from({ length: 10 }, (_, i) => `fits-${i}`), 'after-5', 'after-4']);
  });

  it('with overflow block, an MQTT 3.1.1 publisher that was disconnected resends after reconnecting and its message is delivered once there is room', async () => {
    const { sb, target } = await startWithOutput('{ maxBytes: 300, overflow: block, retryMinMs: 5, retryMaxMs: 20 }');
    target.mode = 'down';
    const filler = await client(sb.url, { clientId: 'filler' });
    for (let i = 0; i < 3; i++) await filler.publishAsync('data/r', `fill-${i}`.padEnd(100, '.'), { qos: 1 });

    const pub = await client(sb.url, { clientId: 'resender', clean: false, reconnectPeriod: 50 });
    const accepted = pub.publishAsync('data/r', 'resent'.padEnd(100, '.'), { qos: 1 });
    await waitFor(pub, 'close', { within: 3000 });
    target.mode = 'up';
    await within(accepted, 5000, 'PUBACK of the resent message');
    await target.waitFor(4);
    expect(texts(target).map((t) => t.replace(/\.+$/, ''))).toEqual(['fill-0', 'fill-1', 'fill-2', 'resent']);
  });

  it('with overflow drop-oldest, drops the oldest waiting messages to stay within maxBytes, counts them, and delivers the newest', async () => {
    const { sb, target } = await startWithOutput('{ maxBytes: 1000, overflow: drop-oldest, retryMinMs: 5, retryMaxMs: 20 }');
    target.mode = 'down';
    const pub = await client(sb.url, { clientId: 'dropper', protocolVersion: 5 });
    // drop-oldest never refuses a message.
    for (let i = 0; i < 30; i++) expect(await publishRefusal(pub, 'data/d', `d-${String(i).padStart(2, '0')}`.padEnd(100, '.'))).toBeUndefined();

    await until(() => outboxRows(sb.engine).n <= 10, 'dropped rows deleted');
    expect(outboxRows(sb.engine)).toEqual({ n: 10, bytes: 1000 });
    expect(statusOf(sb.engine)).toMatchObject({ waiting: 10, waitingBytes: 1000, dropped: 20, blocked: 0 });

    target.mode = 'up';
    await target.waitFor(10);
    await until(() => statusOf(sb.engine).waiting === 0, 'outbox drained');
    expect(texts(target).map((t) => t.replace(/\.+$/, ''))).toEqual(Array.from({ length: 10 }, (_, i) => `d-${20 + i}`));
  });

  it('with overflow drop-oldest, stays within maxBytes when a burst of messages arrives at once', async () => {
    const { sb, target } = await startWithOutput('{ maxBytes: 1000, overflow: drop-oldest, retryMinMs: 5, retryMaxMs: 20 }');
    target.mode = 'down';
    const pub = await client(sb.url, { clientId: 'burst-dropper', protocolVersion: 5 });
    // Sent without waiting for each PUBACK, as a busy publisher does: they reach the outbox in one commit.
    const acks = Array.from({ length: 30 }, (_, i) => pub.publishAsync('data/d', `d-${String(i).padStart(2, '0')}`.padEnd(100, '.'), { qos: 1 }));
    await within(Promise.all(acks), 5000, '30 PUBACKs');

    expect(outboxRows(sb.engine), 'rows waiting on disk').toEqual({ n: 10, bytes: 1000 });
    expect(statusOf(sb.engine)).toMatchObject({ waiting: 10, waitingBytes: 1000, dropped: 20 });
    target.mode = 'up';
    await target.waitFor(10);
    await until(() => statusOf(sb.engine).waiting === 0, 'outbox drained');
    expect(texts(target).map((t) => t.replace(/\.+$/, ''))).toEqual(Array.from({ length: 10 }, (_, i) => `d-${20 + i}`));
  });

  it('with overflow block, refuses new messages while the oldest waiting one is older than maxAge, and accepts them again once it is delivered', async () => {
    const clock = new FakeClock();
    const { sb, target } = await startWithOutput('{ maxAge: 2s, overflow: block, retryMinMs: 100, retryMaxMs: 100 }', { clock });
    target.mode = 'down';
    const pub = await client(sb.url, { clientId: 'aged', protocolVersion: 5, keepalive: 0 });
    await pub.publishAsync('data/age', 'old', { qos: 1 });
    clock.advance(1500);
    await settle();
    // 1.5 s old: within maxAge.
    expect(await publishRefusal(pub, 'data/age', 'young')).toBeUndefined();
    clock.advance(1000);
    await settle();
    // 2.5 s old now.
    expect(await publishRefusal(pub, 'data/age', 'refused')).toBe(0x97);
    expect(statusOf(sb.engine).blocked).toBe(1);

    target.mode = 'up';
    clock.advance(100);
    await settle();
    await until(() => statusOf(sb.engine).waiting === 0, 'outbox drained');
    expect(texts(target)).toEqual(['old', 'young']);
    // Drained: new messages are accepted at once, also several arriving together.
    expect(await Promise.all(['next-1', 'next-2', 'next-3'].map((p) => publishRefusal(pub, 'data/age', p)))).toEqual([undefined, undefined, undefined]);
    await target.waitFor(5);
    expect(texts(target)).toEqual(['old', 'young', 'next-1', 'next-2', 'next-3']);
  });

  it('with overflow drop-oldest, drops messages older than maxAge, counts them, and delivers the rest', async () => {
    const clock = new FakeClock();
    const { sb, target } = await startWithOutput('{ maxAge: 2s, overflow: drop-oldest, retryMinMs: 100, retryMaxMs: 100 }', { clock });
    target.mode = 'down';
    const pub = await client(sb.url, { clientId: 'aged-drop', protocolVersion: 5, keepalive: 0 });
    await pub.publishAsync('data/age', 'stale-1', { qos: 1 });
    await pub.publishAsync('data/age', 'stale-2', { qos: 1 });
    clock.advance(2500);
    await settle();
    expect(await publishRefusal(pub, 'data/age', 'fresh')).toBeUndefined();
    expect(statusOf(sb.engine)).toMatchObject({ dropped: 2, waiting: 1 });

    target.mode = 'up';
    clock.advance(100);
    await settle();
    await until(() => statusOf(sb.engine).waiting === 0, 'outbox drained');
    expect(texts(target)).toEqual(['fresh']);
  });
});

describe('the outbox survives a restart', () => {
  /** One signalbox on a project folder that outlives it (startEngine removes its folder on close). */
  async function open(configFile: string, targets: Record<string, TestTarget>): Promise<{ engine: Engine; url: string; close(): Promise<void> }> {
    const registry = createOutputRegistry([testAction]);
    const connectors = new Map([['test', testConnector(targets)]]);
    const project = loadProject(configFile, { explicit: true, registry, connectors });
    const engine = createEngine(project.config, project.compiled.rules, { log: silentLogger(), registry, connectors });
    let closing: Promise<void> | undefined;
    const close = () => (closing ??= engine.close());
    onTestFinished(close);
    const [address] = await engine.broker.listen();
    return { engine, url: `mqtt://127.0.0.1:${address!.port}`, close };
  }

  it('delivers what was waiting when signalbox stopped after it starts again on the same database', async () => {
    const project = writeProject({ config: `${configWith(FAST_RETRY)}storage: { path: data/signalbox.db }\n`, rules: FORWARD_RULES });
    onTestFinished(project.cleanup);

    const before: Record<string, TestTarget> = { remote: new TestTarget() };
    before['remote']!.mode = 'down';
    const first = await open(project.configFile, before);
    const pub = await connect(first.url, { clientId: 'restart' });
    for (let i = 0; i < 50; i++) await pub.publishAsync(`data/t${i % 2}`, `r-${i}`, { qos: 1 });
    pub.end(true);
    await first.close();
    expect(before['remote']!.received).toHaveLength(0);
    const onDisk = new BetterSqlite3(path.join(project.dir, 'data', 'signalbox.db'), { readonly: true });
    try {
      expect(storedMessages(onDisk, 'remote')).toHaveLength(50);
    } finally {
      onDisk.close();
    }

    const after: Record<string, TestTarget> = {};
    const second = await open(project.configFile, after);
    await after['remote']!.waitFor(50);
    expect(texts(after['remote']!)).toEqual(Array.from({ length: 50 }, (_, i) => `r-${i}`));
    await until(() => outboxRows(second.engine).n === 0, 'outbox empty after delivery');
  });
});

describe('remote output configuration errors', () => {
  /** The ConfigError that starting on these files throws. */
  async function loadError(files: { config: string; rules?: Record<string, string> }): Promise<ConfigIssue[]> {
    try {
      const sb = await startEngine({ config: files.config, rules: files.rules ?? FORWARD_RULES }, { actions: [testAction], connectors: [testConnector({})] });
      await sb.close();
    } catch (err) {
      if (err instanceof ConfigError) return err.issues;
      throw err;
    }
    throw new Error('expected the project to be refused');
  }

  /** 1-based line and column of the first `needle` in `text`. */
  function positionOf(text: string, needle: string): { line: number; col: number } {
    const at = text.indexOf(needle);
    if (at < 0) throw new Error(`${needle} not in text`);
    const lines = text.slice(0, at).split('\n');
    return { line: lines.length, col: lines[lines.length - 1]!.length + 1 };
  }

  it('refuses a rule that sends to an output not defined under outputs:, with SB_RULE_OUTPUT at its output: line', async () => {
    const rule = `rules:
  - id: forward
    on: data/#
    to:
      - test: { output: nowhere }
`;
    const issues = await loadError({ config: configWith(FAST_RETRY), rules: { 'forward.yaml': rule } });
    expect(issues).toHaveLength(1);
    const [issue] = issues;
    expect(issue).toMatchObject({ code: 'SB_RULE_OUTPUT', ...positionOf(rule, 'nowhere') });
    expect(issue!.file).toMatch(/forward\.yaml$/);
    expect(issue!.message).toContain('"nowhere"');
    expect(issue!.message).toContain('test outputs: remote');
  });

  it('refuses an output whose type: is unknown, with SB_CONFIG_SCHEMA at its type: line', async () => {
    const config = `broker:
  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]
outputs:
  remote:
    type: carrier-pigeon
`;
    const issues = await loadError({ config });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ code: 'SB_CONFIG_SCHEMA', ...positionOf(config, 'carrier-pigeon') });
    expect(issues[0]!.message).toContain('"carrier-pigeon"');
    expect(issues[0]!.hint).toContain('test');
  });

  it('reports every bad outbox setting at its own line, naming the value and what is accepted', async () => {
    const config = `broker:
  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]
outputs:
  remote:
    type: test
    outbox:
      maxBytes: lots
      maxAge: forever
      overflow: sometimes
      batchSize: 0
`;
    const issues = await loadError({ config });
    const byLine = Object.fromEntries(issues.map((i) => [i.line, i]));
    expect(issues.map((i) => i.code)).toEqual(['SB_CONFIG_SCHEMA', 'SB_CONFIG_SCHEMA', 'SB_CONFIG_SCHEMA', 'SB_CONFIG_SCHEMA']);
    const maxBytes = byLine[positionOf(config, 'lots').line]!;
    expect(maxBytes.message).toContain('maxBytes');
    expect(maxBytes.message).toContain('"lots"');
    expect(maxBytes.message).toContain('256MiB');
    const maxAge = byLine[positionOf(config, 'forever').line]!;
    expect(maxAge.message).toContain('"forever"');
    const overflow = byLine[positionOf(config, 'sometimes').line]!;
    expect(overflow.message).toContain('overflow');
    expect(overflow.message).toContain('block');
    expect(overflow.message).toContain('drop-oldest');
    const batchSize = byLine[positionOf(config, 'batchSize').line]!;
    expect(batchSize.message).toContain('batchSize');
  });

  it('refuses an unknown key under outbox:', async () => {
    const config = `broker:
  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]
outputs:
  remote:
    type: test
    outbox:
      maxByte: 1MiB
`;
    const issues = await loadError({ config });
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ code: 'SB_CONFIG_SCHEMA', line: positionOf(config, 'maxByte').line });
    expect(issues[0]!.message).toContain('maxByte');
  });
});
