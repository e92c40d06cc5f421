import { writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { loadProject } from '../../src/config/load.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { startEngine } from '../helpers/engine.js';
import { bridgeState, mosquittoPeer, startMosquitto } from '../helpers/mosquitto.js';
import { collect, connect, noMessage } from '../helpers/mqtt.js';

/** signalbox.yaml with one bridge per entry: name → remote URL and out prefix. */
function config(bridges: Record<string, { url: string; remote: string }>): string {
  const outputs = Object.fromEntries(
    Object.entries(bridges).map(([name, b]) => [name, { type: 'bridge', url: b.url, out: [{ local: 't/#', remote: `${b.remote}/t/#`, qos: 1 }], reconnect: { retryMinMs: 50, retryMaxMs: 200 } }]),
  );
  return `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs: ${JSON.stringify(outputs)}\n`;
}

describe('reloading bridges', () => {
  it('adds, changes and removes bridges on reload without touching the one that did not change', async (ctx) => {
    mosquittoPeer.require(ctx);
    const a = await startMosquitto();
    const b = await startMosquitto();
    const te = await startEngine({ config: config({ keep: { url: a.url, remote: 'a' } }) });
    ctx.onTestFinished(() => te.close());
    await bridgeState(te.url, 'online', { name: 'keep' });
    const subA = await connect(a.url);
    await subA.subscribeAsync('a/#', { qos: 1 });
    const subB = await connect(b.url);
    await subB.subscribeAsync(['b1/#', 'b2/#'], { qos: 1 });
    const pub = await connect(te.url);
    const reload = async (bridges: Parameters<typeof config>[0]) => {
      writeFileSync(te.configFile, config(bridges));
      await te.engine.reload(loadProject(te.configFile, { explicit: true, registry: createOutputRegistry() }));
    };
    const connectionsToA = () => a.lines().filter((l) => /New client connected .* as signalbox-keep/.test(l)).length;
    const before = connectionsToA();

    // Add a bridge to B.
    await reload({ keep: { url: a.url, remote: 'a' }, added: { url: b.url, remote: 'b1' } });
    await bridgeState(te.url, 'online', { name: 'added' });
    let atA = collect(subA, 1, { within: 3000 });
    let atB = collect(subB, 1, { within: 3000 });
    await pub.publishAsync('t/x', 'one', { qos: 1 });
    expect((await atA)[0]!.topic).toBe('a/t/x');
    expect((await atB)[0]!.topic).toBe('b1/t/x');

    // Change the added bridge's mapping; the unchanged one keeps its connection.
    await reload({ keep: { url: a.url, remote: 'a' }, added: { url: b.url, remote: 'b2' } });
    await bridgeState(te.url, 'online', { name: 'added' });
    atA = collect(subA, 1, { within: 3000 });
    atB = collect(subB, 1, { within: 3000 });
    await pub.publishAsync('t/x', 'two', { qos: 1 });
    expect((await atB)[0]!.topic).toBe('b2/t/x');
    expect((await atA)[0]!.payload.toString()).toBe('two');
    expect(connectionsToA()).toBe(before);

    // Remove it: nothing more reaches B, A still gets everything.
    await reload({ keep: { url: a.url, remote: 'a' } });
    atA = collect(subA, 1, { within: 3000 });
    await pub.publishAsync('t/x', 'three', { qos: 1 });
    expect((await atA)[0]!.payload.toString()).toBe('three');
    await noMessage(subB, { forMs: 300 });
    expect(connectionsToA()).toBe(before);
    await Promise.all([subA.endAsync(), subB.endAsync(), pub.endAsync()]);
  });
});
