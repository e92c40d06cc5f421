import type { MqttClient } from 'mqtt';
import { describe, expect, it, onTestFinished } from 'vitest';
import { ConfigError, type ConfigIssue } from '../../src/config/issues.js';
import { freePort } from '../helpers/durable.js';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import { connect, type Received } from '../helpers/mqtt.js';
import { bridgeState, mosquittoPeer, startMosquitto } from '../helpers/mosquitto.js';

/**
 * Bridges must not storm. Two signalbox instances bridged both ways on the same topics pass a
 * message back and forth only until its `signalbox-hops` marker reaches `maxHops`; a single
 * bridge whose in and out mappings would echo is refused at load unless `allowLoop: true`,
 * and even then No Local and "never back out through the bridge it came in by" stop echoes.
 */

/** Messages on x/… a `#` subscriber saw, with their hop markers. */
interface Tally {
  client: MqttClient;
  seen: Received[];
}

async function tally(url: string): Promise<Tally> {
  const client = await connect(url, { protocolVersion: 5 });
  onTestFinished(() => {
    client.end(true);
  });
  const seen: Received[] = [];
  client.on('message', (topic, payload, packet) => {
    if (topic.startsWith('x/')) seen.push({ topic, payload, packet });
  });
  await client.subscribeAsync('#', { qos: 1 });
  return { client, seen };
}

/**
 * Resolves once no tally has grown for `quietMs` (after at least `atLeast` messages in all);
 * rejects after `within` ms, which is what a storm looks like.
 */
function settled(tallies: Tally[], { atLeast = 1, quietMs = 1000, within = 5000 } = {}): Promise<void> {
  const total = () => tallies.reduce((n, t) => n + t.seen.length, 0);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let last = total();
    let quietSince = Date.now();
    const tick = setInterval(() => {
      const now = total();
      if (now !== last) {
        last = now;
        quietSince = Date.now();
      } else if (now >= atLeast && Date.now() - quietSince >= quietMs) {
        clearInterval(tick);
        resolve();
      }
      if (Date.now() - started > within) {
        clearInterval(tick);
        reject(new Error(`still not quiet after ${within} ms: ${now} message(s) so far`));
      }
    }, 50);
  });
}

function hopsOf(m: Received): string | undefined {
  const v = m.packet.properties?.userProperties?.['signalbox-hops'];
  return Array.isArray(v) ? v[0] : v;
}

/** signalbox.yaml on a fixed 127.0.0.1 port with one bridge `peer` to `peerPort`: out x/# → x/#. */
function peerConfig(port: number, peerPort: number, maxHops: number): string {
  const peer = {
    type: 'bridge',
    url: `mqtt://127.0.0.1:${peerPort}`,
    clientId: `signalbox-${port}`,
    maxHops,
    reconnect: { retryMinMs: 20, retryMaxMs: 200 },
    outbox: { retryMinMs: 20, retryMaxMs: 200 },
    out: [{ local: 'x/#', remote: 'x/#' }],
  };
  return `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: ${port} }]\noutputs: ${JSON.stringify({ peer })}\n`;
}

async function started(config: string): Promise<TestEngine> {
  const sb = await startEngine({ config });
  onTestFinished(() => sb.close());
  return sb;
}

describe('two signalbox instances bridged both ways', () => {
  it.for([{ maxHops: 1 }, { maxHops: 4 }])('pass one publish back and forth at most maxHops times in all (maxHops: $maxHops), then stop', async ({ maxHops }) => {
    const [portA, portB] = [await freePort(), await freePort()];
    const a = await started(peerConfig(portA, portB, maxHops));
    const b = await started(peerConfig(portB, portA, maxHops));
    await Promise.all([bridgeState(a.url, 'online', { name: 'peer' }), bridgeState(b.url, 'online', { name: 'peer' })]);
    const atA = await tally(a.url);
    const atB = await tally(b.url);

    const publisher = await connect(a.url, { protocolVersion: 5 });
    onTestFinished(() => {
      publisher.end(true);
    });
    await publisher.publishAsync('x/ping', 'once', { qos: 1 });
    await settled([atA, atB], { atLeast: 2 });

    const copies = atA.seen.length + atB.seen.length - 1; // the original publish at A is not a copy
    expect(atB.seen.length, 'the message crossed to B').toBeGreaterThanOrEqual(1);
    expect(copies, `copies at A: ${atA.seen.map(hopsOf).join(',')}; at B: ${atB.seen.map(hopsOf).join(',')}`).toBeLessThanOrEqual(maxHops);
    expect(atA.seen.length).toBeLessThanOrEqual(maxHops);
    expect(atB.seen.length).toBeLessThanOrEqual(maxHops);
    // Every copy says how many bridges it crossed: 1, 2, … up to maxHops.
    expect([...atA.seen, ...atB.seen].map(hopsOf).filter((h) => h !== undefined).map(Number).sort()).toEqual(Array.from({ length: copies }, (_, i) => i + 1));
  });
});

describe('a bridge whose in and out mappings would echo', () => {
  /** signalbox.yaml with a bridge to 127.0.0.1:`port` (nothing has to listen there) and these mappings, block YAML. */
  function echoConfig(port: number, mappings: { in: [string, string]; out: [string, string] }, allowLoop?: boolean): string {
    return [
      'broker:',
      '  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]',
      'outputs:',
      '  cloud:',
      '    type: bridge',
      `    url: mqtt://127.0.0.1:${port}`,
      '    reconnect: { retryMinMs: 20, retryMaxMs: 200 }',
      ...(allowLoop === undefined ? [] : [`    allowLoop: ${allowLoop}`]),
      '    in:',
      `      - { remote: "${mappings.in[0]}", local: "${mappings.in[1]}" }`,
      '    out:',
      `      - { local: "${mappings.out[0]}", remote: "${mappings.out[1]}" }`,
      '',
    ].join('\n');
  }

  async function loadIssues(config: string): Promise<ConfigIssue[]> {
    try {
      const sb = await startEngine({ config });
      await sb.close();
    } catch (err) {
      if (err instanceof ConfigError) return err.issues;
      throw err;
    }
    return [];
  }

  it.for([
    { case: 'the same topics both ways', in: ['x/#', 'x/#'], out: ['x/#', 'x/#'] },
    { case: 'prefixes that map back onto each other', in: ['cloud/cmd/#', 'cmd/#'], out: ['cmd/#', 'cloud/cmd/#'] },
  ] as const)('is refused at load, naming both mappings and allowLoop, for $case', async (m) => {
    const port = await freePort();
    const config = echoConfig(port, { in: [...m.in], out: [...m.out] });
    const issues = await loadIssues(config);

    expect(issues).toHaveLength(1);
    const [issue] = issues;
    expect(issue!.file).toMatch(/signalbox\.yaml$/);
    expect(issue!.line, 'points at the in mapping').toBe(config.split('\n').findIndex((l) => l.includes(`remote: "${m.in[0]}"`)) + 1);
    expect(issue!.message).toContain(`${m.in[0]} → ${m.in[1]}`);
    expect(issue!.message).toContain(`${m.out[0]} → ${m.out[1]}`);
    expect(issue!.message).toMatch(/echo/);
    expect(issue!.message).toContain('allowLoop: true');
  });

  it('loads with allowLoop: true', async () => {
    const issues = await loadIssues(echoConfig(await freePort(), { in: ['x/#', 'x/#'], out: ['x/#', 'x/#'] }, true));
    expect(issues).toEqual([]);
  });

  it('loads without allowLoop when the mappings do not meet (in lands under from-cloud/)', async () => {
    const issues = await loadIssues(echoConfig(await freePort(), { in: ['x/#', 'from-cloud/x/#'], out: ['x/#', 'x/#'] }));
    expect(issues).toEqual([]);
  });

  it('with allowLoop: true still sends nothing back the way it came, to Mosquitto', async (ctx) => {
    mosquittoPeer.require(ctx);
    const mosquitto = await startMosquitto();
    const sb = await started(
      `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs: ${JSON.stringify({
        cloud: { type: 'bridge', url: mosquitto.url, allowLoop: true, reconnect: { retryMinMs: 20, retryMaxMs: 200 }, in: [{ remote: 'x/#', local: 'x/#' }], out: [{ local: 'x/#', remote: 'x/#' }] },
      })}\n`,
    );
    await bridgeState(sb.url, 'online');
    const local = await tally(sb.url);
    const remote = await tally(mosquitto.url);

    await remote.client.publishAsync('x/from-remote', 'r', { qos: 1 });
    await local.client.publishAsync('x/from-local', 'l', { qos: 1 });
    await settled([local, remote], { atLeast: 4, quietMs: 1000 });

    const topics = (t: Tally) => t.seen.map((m) => m.topic).sort();
    expect(topics(local)).toEqual(['x/from-local', 'x/from-remote']);
    expect(topics(remote)).toEqual(['x/from-local', 'x/from-remote']);
  });
});
