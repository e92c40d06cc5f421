import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { IClientOptions, MqttClient } from 'mqtt';
import { pino } from 'pino';
import { describe, expect, it, onTestFinished, type TestContext } from 'vitest';
import type { Logger } from '../../src/log.js';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { durableProject, recorder, startCli } from '../helpers/durable.js';
import { collect, connect, nextMessage, type Received } from '../helpers/mqtt.js';
import { bridgeState, makeCertificates, makePasswordFile, mosquittoPasswdPeer, mosquittoPeer, opensslPeer, startMosquitto, type Mosquitto } from '../helpers/mosquitto.js';

/**
 * Bridges against a real Mosquitto 2: signalbox (in-process, or the built CLI where a crash
 * matters) connects to it as the `cloud` output, and MQTT.js clients on both sides check what
 * arrives, the way users would. Everything runs on 127.0.0.1; Mosquitto is stopped by PID.
 */

const MQTT5: IClientOptions = { protocolVersion: 5 };
/** Fast reconnects and retries, so outages end within a few ms of the remote coming back. */
const FAST_RECONNECT = { retryMinMs: 50, retryMaxMs: 500 };
const FAST_OUTBOX = { batchSize: 100, retryMinMs: 50, retryMaxMs: 500 };

/** signalbox.yaml with one bridge output named `cloud` with these settings (YAML is a superset of JSON). */
function bridgeConfig(settings: Record<string, unknown>): string {
  const cloud = { type: 'bridge', reconnect: FAST_RECONNECT, outbox: FAST_OUTBOX, ...settings };
  return `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs: ${JSON.stringify({ cloud })}\n`;
}

/** pino JSON lines kept for assertions, with a way to wait for one. */
interface LogCapture {
  log: Logger;
  lines: Array<Record<string, unknown>>;
  /** Resolves once `count` lines (seen so far included) match; rejects with every line after `within` ms. */
  waitFor(match: (line: Record<string, unknown>) => boolean, options?: { count?: number; within?: number }): Promise<Array<Record<string, unknown>>>;
}

function captureLogs(): LogCapture {
  const lines: Array<Record<string, unknown>> = [];
  const listeners = new Set<() => void>();
  const log = pino({ level: 'info' }, {
    write(line: string) {
      lines.push(JSON.parse(line) as Record<string, unknown>);
      for (const l of listeners) l();
    },
  });
  return {
    log,
    lines,
    waitFor(match, { count = 1, within = 5000 } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hits = lines.filter(match);
          if (hits.length < count) return false;
          listeners.delete(check);
          clearTimeout(timer);
          resolve(hits);
          return true;
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`expected ${count} matching log line(s) within ${within} ms; log:\n${lines.map((l) => JSON.stringify(l)).join('\n')}`));
        }, within);
        listeners.add(check);
        check();
      });
    },
  };
}

/** Text of a log line: its message and the remote's error, which is what a user reads. */
function textOf(line: Record<string, unknown>): string {
  return `${String(line.msg)} ${String(line.error ?? '')}`;
}

async function client(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  const c = await connect(url, options);
  onTestFinished(() => {
    c.end(true);
  });
  return c;
}

/** A client that records every message from before its SUBSCRIBE on, so retained ones are not missed. */
interface Watcher {
  client: MqttClient;
  received: Received[];
  /** Resolves with everything received up to the first message `match` accepts (already received ones count). */
  until(match: (m: Received) => boolean, options?: { within?: number }): Promise<Received[]>;
}

async function watch(url: string, filter: string, options: IClientOptions = {}, qos: 0 | 1 | 2 = 1): Promise<Watcher> {
  const c = await client(url, options);
  const received: Received[] = [];
  const listeners = new Set<() => void>();
  c.on('message', (topic, payload, packet) => {
    received.push({ topic, payload, packet });
    for (const l of listeners) l();
  });
  await c.subscribeAsync(filter, { qos });
  return {
    client: c,
    received,
    until(match, { within = 3000 } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const i = received.findIndex(match);
          if (i === -1) return;
          listeners.delete(check);
          clearTimeout(timer);
          resolve(received.slice(0, i + 1));
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`no matching message on ${filter} within ${within} ms; got: ${received.map((m) => `${m.topic}=${m.payload.toString()}`).join(', ') || 'nothing'}`));
        }, within);
        listeners.add(check);
        check();
      });
    },
  };
}

/** A client subscribed to `filter` (QoS 2 unless given), SUBACK received. */
async function subscriber(url: string, filter: string | string[], options: IClientOptions = {}, qos: 0 | 1 | 2 = 2): Promise<MqttClient> {
  const c = await client(url, options);
  await c.subscribeAsync(filter, { qos });
  return c;
}

/** A signalbox in this process; `close` is idempotent. */
interface Signalbox extends TestEngine {
  /**
   * Registers closing again, so it runs before cleanups registered since (they run in
   * reverse order): call it after `mosquitto.restart()`, whose new process is otherwise
   * killed first, racing signalbox's shutdown against a vanished remote.
   */
  closeFirst(): void;
}

/** Starts signalbox on this config; closed when the test ends. */
async function startSignalbox(config: string, { rules, log }: { rules?: Record<string, string>; log?: Logger } = {}): Promise<Signalbox> {
  const sb = await startEngine({ config, rules }, { log });
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= sb.close());
  onTestFinished(close);
  return { ...sb, close, closeFirst: () => onTestFinished(close) };
}

interface Bridged {
  sb: Signalbox;
  mosquitto: Mosquitto;
  logs: LogCapture;
}

/**
 * A Mosquitto and a signalbox whose `cloud` bridge points at it; resolves once the bridge is
 * online (connected and subscribed to its in mappings), or fails quoting signalbox's log.
 * Both stop when the test ends.
 */
async function startBridged(
  ctx: TestContext,
  settings: Record<string, unknown>,
  { rules, mosquitto }: { rules?: Record<string, string>; mosquitto?: Mosquitto } = {},
): Promise<Bridged> {
  mosquittoPeer.require(ctx);
  const m = mosquitto ?? (await startMosquitto());
  const logs = captureLogs();
  const sb = await startSignalbox(bridgeConfig({ url: m.url, ...settings }), { rules, log: logs.log });
  await bridgeState(sb.url, 'online').catch((err: Error) => {
    throw new Error(`${err.message}\nsignalbox log:\n${logs.lines.map((l) => JSON.stringify(l)).join('\n')}`);
  });
  return { sb, mosquitto: m, logs };
}

const OUT_TELEMETRY = { out: [{ local: 'telemetry/#', remote: 'site-a/telemetry/#' }] };
const IN_COMMANDS = { in: [{ remote: 'commands/site-a/#', local: 'commands/#', qos: 2 }] };

describe('a bridge to Mosquitto moves messages', () => {
  it('sends local telemetry/# messages to the remote under site-a/telemetry/#', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, OUT_TELEMETRY);
    const remote = await subscriber(mosquitto.url, 'site-a/#', MQTT5);
    const local = await client(sb.url);

    const arriving = collect(remote, 2, { within: 3000 });
    await local.publishAsync('telemetry/boiler/temp', '71.5', { qos: 1 });
    await local.publishAsync('telemetry', 'root', { qos: 1 });
    const got = await arriving;

    expect(got.map((m) => [m.topic, m.payload.toString()])).toEqual([
      ['site-a/telemetry/boiler/temp', '71.5'],
      ['site-a/telemetry', 'root'],
    ]);
  });

  it('does not send local messages outside the out mappings', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, OUT_TELEMETRY);
    const remote = await watch(mosquitto.url, '#', MQTT5);
    const local = await client(sb.url);

    await local.publishAsync('alarms/boiler', 'hot', { qos: 1 });
    await local.publishAsync('telemetry/marker', 'after', { qos: 1 });
    const got = await remote.until((m) => m.topic === 'site-a/telemetry/marker');

    // The bridge's retained status message is all else the remote holds.
    expect(got.filter((m) => !m.packet.retain).map((m) => m.topic)).toEqual(['site-a/telemetry/marker']);
  });

  it('brings remote commands/site-a/# messages in as local commands/#', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, IN_COMMANDS);
    const local = await subscriber(sb.url, 'commands/#');
    const remote = await client(mosquitto.url, MQTT5);

    const arriving = collect(local, 2, { within: 3000 });
    await remote.publishAsync('commands/site-a/valve/3', 'open', { qos: 1 });
    await remote.publishAsync('commands/site-b/valve/3', 'not ours', { qos: 1 });
    await remote.publishAsync('commands/site-a/pump', 'stop', { qos: 1 });
    const got = await arriving;

    expect(got.map((m) => [m.topic, m.payload.toString()])).toEqual([
      ['commands/valve/3', 'open'],
      ['commands/pump', 'stop'],
    ]);
  });

  it('carries both directions at once on one bridge', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, { ...OUT_TELEMETRY, ...IN_COMMANDS });
    const localSub = await subscriber(sb.url, 'commands/#');
    const remoteSub = await subscriber(mosquitto.url, 'site-a/telemetry/#', MQTT5);
    const local = await client(sb.url);
    const remote = await client(mosquitto.url, MQTT5);

    const outbound = nextMessage(remoteSub, { within: 3000 });
    const inbound = nextMessage(localSub, { within: 3000 });
    await Promise.all([local.publishAsync('telemetry/flow', '12', { qos: 1 }), remote.publishAsync('commands/site-a/flow', 'set 10', { qos: 1 })]);

    expect([(await outbound).topic, (await outbound).payload.toString()]).toEqual(['site-a/telemetry/flow', '12']);
    expect([(await inbound).topic, (await inbound).payload.toString()]).toEqual(['commands/flow', 'set 10']);
    expect(mosquitto.lines().filter((l) => /New client connected .* as signalbox-cloud /.test(l)), 'one connection').toHaveLength(1);
  });

  it('sends what a rule action bridge: { output, topic } plans to the templated remote topic', async (ctx) => {
    const rules = {
      'alerts.yaml': `rules:
  - id: alerts-to-cloud
    on: alerts/#
    transform: '{ "alert": payload, "from": levels[1] }'
    to:
      - bridge: { output: cloud, topic: "x/\${topic}" }
`,
    };
    const { sb, mosquitto } = await startBridged(ctx, {}, { rules });
    const remote = await subscriber(mosquitto.url, 'x/#', MQTT5);
    const local = await client(sb.url);

    const arriving = nextMessage(remote, { within: 3000 });
    await local.publishAsync('alerts/kitchen', '"smoke"', { qos: 1 });
    const got = await arriving;

    expect(got.topic).toBe('x/alerts/kitchen');
    expect(JSON.parse(got.payload.toString())).toEqual({ alert: 'smoke', from: 'kitchen' });
  });
});

describe('a bridge keeps what the message says', () => {
  it('keeps QoS 0, 1 and 2 on the way out', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, OUT_TELEMETRY);
    const remote = await subscriber(mosquitto.url, 'site-a/telemetry/#', MQTT5, 2);
    const local = await client(sb.url, MQTT5);

    const arriving = collect(remote, 3, { within: 3000 });
    for (const qos of [0, 1, 2] as const) await local.publishAsync(`telemetry/q${qos}`, `qos ${qos}`, { qos });
    const got = await arriving;

    expect(got.map((m) => [m.topic, m.packet.qos])).toEqual([
      ['site-a/telemetry/q0', 0],
      ['site-a/telemetry/q1', 1],
      ['site-a/telemetry/q2', 2],
    ]);
  });

  it('keeps QoS 0, 1 and 2 on the way in', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, IN_COMMANDS);
    const local = await subscriber(sb.url, 'commands/#', MQTT5, 2);
    const remote = await client(mosquitto.url, MQTT5);

    const arriving = collect(local, 3, { within: 3000 });
    for (const qos of [0, 1, 2] as const) await remote.publishAsync(`commands/site-a/q${qos}`, `qos ${qos}`, { qos });
    const got = await arriving;

    expect(got.map((m) => [m.topic, m.packet.qos]).sort()).toEqual([
      ['commands/q0', 0],
      ['commands/q1', 1],
      ['commands/q2', 2],
    ]);
  });

  it('sends a retained local message as retained (retain: keep), so a later remote subscriber gets it', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, OUT_TELEMETRY);
    const early = await subscriber(mosquitto.url, 'site-a/telemetry/#', MQTT5);
    const local = await client(sb.url);

    const live = nextMessage(early, { within: 3000 });
    await local.publishAsync('telemetry/setpoint', '21', { qos: 1, retain: true });
    await live;
    const late = await client(mosquitto.url, MQTT5);
    const retained = nextMessage(late, { within: 3000 });
    await late.subscribeAsync('site-a/telemetry/#', { qos: 1 });
    const got = await retained;

    expect([got.topic, got.payload.toString(), got.packet.retain]).toEqual(['site-a/telemetry/setpoint', '21', true]);
  });

  it('stores a retained remote message locally, so a later local subscriber gets it as retained', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, IN_COMMANDS);
    const early = await subscriber(sb.url, 'commands/#');
    const remote = await client(mosquitto.url, MQTT5);

    const live = nextMessage(early, { within: 3000 });
    await remote.publishAsync('commands/site-a/mode', 'eco', { qos: 1, retain: true });
    await live;
    const late = await client(sb.url);
    const retained = nextMessage(late, { within: 3000 });
    await late.subscribeAsync('commands/#', { qos: 1 });
    const got = await retained;

    expect([got.topic, got.payload.toString(), got.packet.retain]).toEqual(['commands/mode', 'eco', true]);
  });

  it('also sends a retained message the remote already held when the bridge subscribed', async (ctx) => {
    mosquittoPeer.require(ctx);
    const mosquitto = await startMosquitto();
    const remote = await client(mosquitto.url, MQTT5);
    await remote.publishAsync('commands/site-a/mode', 'away', { qos: 1, retain: true });
    const { sb } = await startBridged(ctx, IN_COMMANDS, { mosquitto });

    const late = await client(sb.url);
    const retained = nextMessage(late, { within: 3000 });
    await late.subscribeAsync('commands/#', { qos: 1 });
    const got = await retained;

    expect([got.topic, got.payload.toString(), got.packet.retain]).toEqual(['commands/mode', 'away', true]);
  });

  const PROPS = {
    userProperties: { site: 'a', tag: ['x', 'y'] },
    contentType: 'application/json',
    // Correlation data is binary (MQTT 5 §3.3.2.3.6): bytes that are not UTF-8 must survive.
    correlationData: Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41]),
  };

  it('carries MQTT 5 user properties, content type and correlation data out, adding the hop marker', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, OUT_TELEMETRY);
    const remote = await subscriber(mosquitto.url, 'site-a/telemetry/#', MQTT5);
    const local = await client(sb.url, MQTT5);

    const arriving = nextMessage(remote, { within: 3000 });
    await local.publishAsync('telemetry/props', '{"v":1}', { qos: 1, properties: PROPS });
    const p = (await arriving).packet.properties ?? {};

    expect(p.userProperties).toEqual({ site: 'a', tag: ['x', 'y'], 'signalbox-hops': '1' });
    expect(p.contentType).toBe('application/json');
    expect(Buffer.from(p.correlationData ?? []).toString('hex')).toBe(PROPS.correlationData.toString('hex'));
  });

  it('carries MQTT 5 user properties, content type and correlation data in', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, IN_COMMANDS);
    const local = await subscriber(sb.url, 'commands/#', MQTT5);
    const remote = await client(mosquitto.url, MQTT5);

    const arriving = nextMessage(local, { within: 3000 });
    await remote.publishAsync('commands/site-a/props', '{"v":1}', { qos: 1, properties: PROPS });
    const p = (await arriving).packet.properties ?? {};

    expect(p.userProperties).toEqual({ site: 'a', tag: ['x', 'y'] });
    expect(p.contentType).toBe('application/json');
    expect(Buffer.from(p.correlationData ?? []).toString('hex')).toBe(PROPS.correlationData.toString('hex'));
  });

  it('works both ways with an MQTT 3.1.1 remote (protocolVersion: 4)', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, { protocolVersion: 4, ...OUT_TELEMETRY, ...IN_COMMANDS });
    const localSub = await subscriber(sb.url, 'commands/#');
    const remoteSub = await subscriber(mosquitto.url, 'site-a/telemetry/#', { protocolVersion: 4 });
    const local = await client(sb.url);
    const remote = await client(mosquitto.url, { protocolVersion: 4 });

    const outbound = collect(remoteSub, 2, { within: 3000 });
    const inbound = collect(localSub, 2, { within: 3000 });
    await local.publishAsync('telemetry/a', 'out 1', { qos: 1 });
    await local.publishAsync('telemetry/b', 'out 2', { qos: 2 });
    await remote.publishAsync('commands/site-a/a', 'in 1', { qos: 1 });
    await remote.publishAsync('commands/site-a/b', 'in 2', { qos: 2 });

    const named = (what: string) => (err: Error) => {
      throw new Error(`${what}: ${err.message}`);
    };
    expect((await outbound.catch(named('out (local → remote)'))).map((m) => [m.topic, m.payload.toString(), m.packet.qos])).toEqual([
      ['site-a/telemetry/a', 'out 1', 1],
      ['site-a/telemetry/b', 'out 2', 2],
    ]);
    expect((await inbound.catch(named('in (remote → local)'))).map((m) => [m.topic, m.payload.toString(), m.packet.qos])).toEqual([
      ['commands/a', 'in 1', 1],
      ['commands/b', 'in 2', 2],
    ]);
    // Mosquitto logs each connection's protocol: the bridge really spoke 3.1.1.
    await mosquitto.waitForLine(/New client connected .* as signalbox-cloud \(p2,/, { within: 1000 });
  });
});

describe('a bridge reports its state', () => {
  it('publishes online on the local $SYS/signalbox/bridges/<name>/state, and offline when the remote stops', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, OUT_TELEMETRY);
    const state = await watch(sb.url, '$SYS/signalbox/bridges/cloud/state', {}, 0);
    const [first] = await state.until(() => true);
    expect([first!.payload.toString(), first!.packet.retain]).toEqual(['online', true]);

    await mosquitto.stop();
    await state.until((m) => m.payload.toString() === 'offline');

    await mosquitto.restart();
    sb.closeFirst();
    const seen = state.received.length;
    await state.until((m) => state.received.indexOf(m) >= seen && m.payload.toString() === 'online', { within: 5000 });
  });

  it('holds a retained online at the remote, and the will offline there once signalbox is killed (SIGKILL)', async (ctx) => {
    mosquittoPeer.require(ctx);
    const mosquitto = await startMosquitto();
    const project = await durableProject({
      extra: `outputs: ${JSON.stringify({ cloud: { type: 'bridge', url: mosquitto.url, clientId: 'sb-site-a', reconnect: FAST_RECONNECT, ...OUT_TELEMETRY } })}`,
    });
    const cli = await startCli(project);
    await bridgeState(project.url, 'online');

    const before = await recorder(mosquitto.url, { protocolVersion: 5, clientId: 'status-before' });
    await before.client.subscribeAsync('signalbox/sb-site-a/status', { qos: 1 });
    const [birth] = await before.waitForCount(1, { within: 3000 });
    expect([birth!.payload, birth!.packet.retain]).toEqual(['online', true]);

    await cli.stop('SIGKILL');
    const [, will] = await before.waitForCount(2, { within: 3000 });
    expect(will!.payload).toBe('offline');

    const after = await recorder(mosquitto.url, { protocolVersion: 5, clientId: 'status-after' });
    await after.client.subscribeAsync('signalbox/sb-site-a/status', { qos: 1 });
    const [held] = await after.waitForCount(1, { within: 3000 });
    expect([held!.payload, held!.packet.retain]).toEqual(['offline', true]);
  });

  it('uses signalbox/<clientId>/status at the remote by default, clientId defaulting to signalbox-<name>', async (ctx) => {
    const { mosquitto } = await startBridged(ctx, OUT_TELEMETRY);
    const remote = await watch(mosquitto.url, 'signalbox/+/status', MQTT5);
    const [got] = await remote.until(() => true);

    expect([got!.topic, got!.payload.toString(), got!.packet.retain]).toEqual(['signalbox/signalbox-cloud/status', 'online', true]);
  });
});

describe('a bridge shuts down', () => {
  it('lets signalbox close within 5 s when the remote stops answering (Mosquitto frozen with SIGSTOP)', async (ctx) => {
    const { sb, mosquitto } = await startBridged(ctx, OUT_TELEMETRY);
    const pid = mosquitto.pid;
    process.kill(pid, 'SIGSTOP');
    // Registered after signalbox's close, so it runs first: a hung close can then finish.
    onTestFinished(() => {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone already
      }
    });

    const closed = await settlesWithin(sb.close(), 5000);

    expect(closed, 'signalbox.close() still pending 5 s after the remote froze').toBe(true);
  });
});

describe('a bridge acknowledges remote messages after storing them', () => {
  it('has a remote QoS 1 message in a local persistent session queue once it acknowledged it, across a SIGKILL', async (ctx) => {
    mosquittoPeer.require(ctx);
    // log_type debug: Mosquitto logs the bridge's PUBACK, the moment the remote forgets the message.
    const mosquitto = await startMosquitto({ extra: 'log_type debug' });
    const project = await durableProject({
      extra: `outputs: ${JSON.stringify({ cloud: { type: 'bridge', url: mosquitto.url, reconnect: FAST_RECONNECT, in: [{ remote: 'commands/site-a/#', local: 'commands/#', qos: 1 }] } })}`,
    });
    const cli = await startCli(project);
    await bridgeState(project.url, 'online');
    const listener = await recorder(project.url, { clientId: 'valve-3', clean: false });
    await listener.client.subscribeAsync('commands/#', { qos: 1 });
    await listener.end();

    const remote = await client(mosquitto.url, MQTT5);
    await remote.publishAsync('commands/site-a/valve/3', 'open', { qos: 1 });
    await mosquitto.waitForLine(/Received PUBACK from signalbox-cloud/, { within: 3000 });
    await cli.stop('SIGKILL');
    // The remote has forgotten the message: from here on only signalbox's database has it.
    await mosquitto.stop();

    await startCli(project);
    const back = await recorder(project.url, { clientId: 'valve-3', clean: false });
    const [got] = await back.waitForCount(1, { within: 3000 });

    expect([got!.topic, got!.payload, got!.packet.qos]).toEqual(['commands/valve/3', 'open', 1]);
  });
});

describe('a bridge over TLS', () => {
  it('connects to an mqtts:// remote whose certificate the ca: file vouches for', async (ctx) => {
    requireTlsPeers(ctx);
    const certs = makeCertificates();
    const mosquitto = await startMosquitto({ tls: certs });
    const { sb } = await startBridged(ctx, { ca: certs.ca, ...OUT_TELEMETRY }, { mosquitto });
    const remote = await subscriber(mosquitto.url, 'site-a/#', { ...MQTT5, ca: readFileSync(certs.ca) });
    const local = await client(sb.url);

    const arriving = nextMessage(remote, { within: 3000 });
    await local.publishAsync('telemetry/tls', 'sealed', { qos: 1 });

    expect((await arriving).payload.toString()).toBe('sealed');
  });

  it('resolves a relative ca: path against the config file folder', async (ctx) => {
    requireTlsPeers(ctx);
    const certs = makeCertificates();
    const mosquitto = await startMosquitto({ tls: certs });
    // Both temp folders share the OS temp dir, so this is right from any project folder in it.
    const relativeCa = path.join('..', path.basename(certs.dir), 'ca.crt');
    const { sb } = await startBridged(ctx, { ca: relativeCa, ...OUT_TELEMETRY }, { mosquitto });
    const remote = await subscriber(mosquitto.url, 'site-a/#', { ...MQTT5, ca: readFileSync(certs.ca) });
    const local = await client(sb.url);

    const arriving = nextMessage(remote, { within: 3000 });
    await local.publishAsync('telemetry/tls', 'sealed', { qos: 1 });

    expect((await arriving).payload.toString()).toBe('sealed');
  });

  // OpenSSL servers send the chain they can build from their own CA file: with the signing CA
  // there, the client sees a foreign root (SELF_SIGNED_CERT_IN_CHAIN); without it, only the leaf
  // (UNABLE_TO_VERIFY_LEAF_SIGNATURE). Both are TLS failures to a user.
  it.for([
    { chain: 'its chain up to the root', serverCaFile: 'ca' as const },
    { chain: 'only its own certificate', serverCaFile: 'otherCa' as const },
  ])('refuses a server certificate from another CA (the server sends $chain): logs a TLS failure, delivers nothing, keeps retrying', async ({ serverCaFile }, ctx) => {
    requireTlsPeers(ctx);
    const certs = makeCertificates();
    const mosquitto = await startMosquitto({ tls: { cert: certs.cert, key: certs.key, ca: certs[serverCaFile] } });
    const logs = captureLogs();
    const sb = await startSignalbox(bridgeConfig({ url: mosquitto.url, ca: certs.otherCa, ...OUT_TELEMETRY }), { log: logs.log });
    const local = await client(sb.url);
    await local.publishAsync('telemetry/tls', 'must not arrive', { qos: 1 });

    const attempts = await logs.waitFor((l) => l.bridge === 'cloud' && l.level === 40, { count: 2, within: 5000 });

    for (const line of attempts) expect(String(line.msg), JSON.stringify(line)).toMatch(/\bTLS\b/);
    expect(mosquitto.lines().filter((l) => /New client connected/.test(l))).toEqual([]);
    expect(sb.engine.outputs.status()[0]).toMatchObject({ name: 'cloud', waiting: 1, delivered: 0 });
  });
});

describe('a bridge that cannot connect says why and retries', () => {
  it('delivers with the right password, and logs refused credentials with a wrong one', async (ctx) => {
    mosquittoPeer.require(ctx);
    mosquittoPasswdPeer.require(ctx);
    const passwords = makePasswordFile('site-a', 'right horse');
    const mosquitto = await startMosquitto({ extra: `allow_anonymous false\npassword_file ${passwords}` });

    const good = await startBridged(ctx, { username: 'site-a', password: 'right horse', ...OUT_TELEMETRY }, { mosquitto });
    const remote = await subscriber(mosquitto.url, 'site-a/#', { ...MQTT5, username: 'site-a', password: 'right horse' });
    const local = await client(good.sb.url);
    const arriving = nextMessage(remote, { within: 3000 });
    await local.publishAsync('telemetry/auth', 'welcome', { qos: 1 });
    expect((await arriving).payload.toString()).toBe('welcome');

    const logs = captureLogs();
    await startSignalbox(bridgeConfig({ url: mosquitto.url, clientId: 'sb-bad', username: 'site-a', password: 'wrong', ...OUT_TELEMETRY }), { log: logs.log });
    const refusals = await logs.waitFor((l) => l.bridge === 'cloud' && /refused/i.test(textOf(l)), { count: 2, within: 5000 });

    expect(textOf(refusals[0]!)).toMatch(/refused/i);
    expect(textOf(refusals[0]!)).toMatch(/credentials|username|password/i);
  });

  it('logs an unreachable remote, retries, and delivers the queued messages once Mosquitto starts on that port', async (ctx) => {
    mosquittoPeer.require(ctx);
    // A first Mosquitto holds a persistent session for the remote subscriber, then stops: the port is closed.
    const mosquitto = await startMosquitto({ extra: 'persistence true' });
    const early = await recorder(mosquitto.url, { clientId: 'site-a-reader', clean: false });
    await early.client.subscribeAsync('site-a/#', { qos: 1 });
    await early.end();
    await mosquitto.stop();

    const logs = captureLogs();
    const sb = await startSignalbox(bridgeConfig({ url: mosquitto.url, ...OUT_TELEMETRY }), { log: logs.log });
    const local = await client(sb.url);
    for (let i = 1; i <= 3; i++) await local.publishAsync(`telemetry/n${i}`, String(i), { qos: 1 });
    const unreachable = await logs.waitFor((l) => l.bridge === 'cloud' && /cannot reach|ECONNREFUSED/i.test(textOf(l)), { count: 2, within: 5000 });
    expect(textOf(unreachable[0]!)).toMatch(/retrying/);
    expect(sb.engine.outputs.status()[0]).toMatchObject({ waiting: 3, delivered: 0 });

    await mosquitto.restart();
    sb.closeFirst();
    const reader = await recorder(mosquitto.url, { clientId: 'site-a-reader', clean: false });
    const got = await reader.waitForCount(3, { within: 5000 });

    expect(got.map((m) => [m.topic, m.payload])).toEqual([
      ['site-a/telemetry/n1', '1'],
      ['site-a/telemetry/n2', '2'],
      ['site-a/telemetry/n3', '3'],
    ]);
  });
});

/** True when `promise` settles within `ms`, false when it is still pending then. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

function requireTlsPeers(ctx: TestContext): void {
  mosquittoPeer.require(ctx);
  opensslPeer.require(ctx);
}
