// signalbox's broker from the compiled dist/ (run `npm run build` first; `npm run bench` does),
// with default limits, as a user gets it.
//
// Two knobs for diagnosis, never for the reported figures:
//   BENCH_SIGNALBOX_DIST=/path/to/dist        measure another build (A/B a change)
//   BENCH_SIGNALBOX_LIMITS='{"maxInflight":1000}'   override `limits`
import { pathToFileURL } from 'node:url';

/** Starts signalbox on 127.0.0.1 with an OS-chosen port. */
export async function start() {
  const dist = process.env.BENCH_SIGNALBOX_DIST
    ? pathToFileURL(`${process.env.BENCH_SIGNALBOX_DIST.replace(/\/$/, '')}/`)
    : new URL('../../dist/', import.meta.url);
  const { createBroker } = await import(new URL('broker/broker.js', dist).href);
  const { parseBrokerConfig } = await import(new URL('config/broker.js', dist).href);
  const { silentLogger } = await import(new URL('log.js', dist).href);
  const limits = process.env.BENCH_SIGNALBOX_LIMITS ? JSON.parse(process.env.BENCH_SIGNALBOX_LIMITS) : undefined;
  const config = parseBrokerConfig({ listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }], limits });
  const broker = createBroker(config, { log: silentLogger() });
  const [address] = await broker.listen();
  return { port: address.port, close: () => broker.close() };
}
