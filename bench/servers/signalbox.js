// signalbox's broker from the compiled dist/ (run `npm run build` first; `npm run bench` does).
//
// Limits: Aedes bounds neither what it keeps in flight to a subscriber nor what it queues
// for it, so for a like-for-like comparison signalbox runs with the same unbounded
// behaviour: maxInflight 65535 and maxQueued 1,000,000. With the defaults (100 in flight,
// 1,000 queued per client, like Mosquitto's) a QoS 1 subscriber slower than four
// publishers has its oldest queued messages dropped and counted, by design. Likewise Aedes
// buffers without bound what a subscriber has not read yet and limits no connections, so
// the QoS 0 send buffer cap (4 MiB by default) and the connection caps (10,000 in all; per
// IP 100 pending and 100 new per second, which the idle phase's 10,000 connects from
// 127.0.0.1 would hit) are raised too.
//
// Two knobs for diagnosis, never for the reported figures:
//   BENCH_SIGNALBOX_DIST=/path/to/dist        measure another build (A/B a change)
//   BENCH_SIGNALBOX_LIMITS='{"maxInflight":1000}'   override `limits`
import { limitsOverride, signalboxDist } from './dist.js';

/**
 * Starts signalbox on 127.0.0.1 with an OS-chosen port; `listener` replaces the plain mqtt
 * listener (the tls job passes an mqtts one with its certificate files).
 */
export async function start({ listener } = {}) {
  const dist = signalboxDist();
  const { createBroker } = await import(new URL('broker/broker.js', dist).href);
  const { parseBrokerConfig } = await import(new URL('config/broker.js', dist).href);
  const { silentLogger } = await import(new URL('log.js', dist).href);
  const limits = limitsOverride() ?? {
    maxInflight: 65_535,
    maxQueued: 1_000_000,
    maxSendBufferBytes: '1GiB',
    maxConnections: 100_000,
    maxPendingConnectionsPerIp: 100_000,
    maxConnectRatePerIp: 1_000_000,
  };
  const config = parseBrokerConfig({ listeners: [{ type: 'mqtt', ...listener, host: '127.0.0.1', port: 0 }], limits });
  const broker = createBroker(config, { log: silentLogger() });
  const [address] = await broker.listen();
  return { port: address.port, counters: () => ({ broker: { ...broker.stats } }), close: () => broker.close() };
}
