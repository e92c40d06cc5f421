// One-off check behind a design choice in load.js: can MQTT.js itself generate load faster
// than the brokers take it? Floods the null broker (no broker work at all) with MQTT.js
// publishers and subscriber and prints the rate and the client process's CPU.
// Run: node bench/mqttjs-check.js   (not part of `npm run bench`)
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import { startBroker } from './broker-process.js';
import { withTimeout } from './stats.js';

const PUBLISHERS = 4;
const TIMEOUT_MS = 60_000;

async function flood(port, qos, total) {
  const url = `mqtt://127.0.0.1:${port}`;
  const sub = await mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 });
  await sub.subscribeAsync('bench/+/data', { qos });
  const pubs = await Promise.all(Array.from({ length: PUBLISHERS }, () => mqtt.connectAsync(url, { protocolVersion: 4, reconnectPeriod: 0 })));
  let received = 0;
  const done = new Promise((resolve) => sub.on('message', () => ++received === total && resolve()));
  const payload = Buffer.alloc(64);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  await Promise.all(pubs.map(async (c, i) => {
    const window = [];
    for (let k = 0; k < total / PUBLISHERS; k++) {
      // QoS 1: at most 100 unacked per publisher, as in the bench's own load.
      window.push(c.publishAsync(`bench/${i}/data`, payload, { qos }));
      if (window.length >= 100 || qos === 0) await window.shift();
    }
    await Promise.all(window);
  }));
  await withTimeout(done, TIMEOUT_MS, `MQTT.js QoS ${qos}`, () => `received ${received} of ${total}`);
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  await Promise.all([sub, ...pubs].map((c) => c.endAsync()));
  return { msgPerSec: Math.round((total / ms) * 1000), clientCpuShare: +((cpu.user + cpu.system) / 1000 / ms).toFixed(2) };
}

const broker = await startBroker('null');
try {
  for (const qos of [0, 1]) console.log(`MQTT.js QoS ${qos} against the null broker:`, await flood(broker.port, qos, qos ? 50_000 : 100_000));
} finally {
  await broker.stop();
}
