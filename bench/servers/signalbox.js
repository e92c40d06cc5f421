// signalbox's broker from the compiled dist/ (run `npm run build` first; `npm run bench` does),
// with default limits, as a user gets it.
import { createBroker } from '../../dist/broker/broker.js';
import { parseBrokerConfig } from '../../dist/config/broker.js';
import { silentLogger } from '../../dist/log.js';

/** Starts signalbox on 127.0.0.1 with an OS-chosen port. */
export async function start() {
  const config = parseBrokerConfig({ listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }] });
  const broker = createBroker(config, { log: silentLogger() });
  const [address] = await broker.listen();
  return { port: address.port, close: () => broker.close() };
}
