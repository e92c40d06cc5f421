// Sets up the bench's publishers and subscriber on one broker and tears them down again.
import { connectClient, Publisher, Subscriber } from './load.js';

/** Topic filter the subscriber uses; every publisher `i` publishes on `bench/<i>/data`. */
export const FILTER = 'bench/+/data';

/**
 * Connects one subscriber (subscribed to {@link FILTER} at `qos`) and `publishers` publishers.
 * @returns {Promise<{ subscriber: Subscriber, publishers: Publisher[], close: () => Promise<void> }>}
 */
export async function connectBenchClients(port, { qos, publishers: count, payloadBytes, window, capacity }) {
  const tag = Math.random().toString(36).slice(2, 8);
  const clients = [];
  const close = async () => {
    await Promise.all(clients.map((c) => c.close()));
  };
  try {
    const subClient = await connectClient(port, { clientId: `bench-sub-${tag}` });
    clients.push(subClient);
    await subClient.subscribe(FILTER, qos);
    const subscriber = new Subscriber(subClient, { publishers: count, capacity });
    const publishers = [];
    for (let i = 0; i < count; i++) {
      const client = await connectClient(port, { clientId: `bench-pub-${i}-${tag}` });
      clients.push(client);
      publishers.push(new Publisher(client, { index: i, topic: `bench/${i}/data`, qos, payloadBytes, window }));
    }
    return { subscriber, publishers, close };
  } catch (err) {
    for (const c of clients) c.socket.destroy();
    throw err;
  }
}

/**
 * Resolves when the subscriber has all it expects, or — once `sendingDone` is true — when
 * nothing has arrived for `quietMs` (then the shortfall is reported as lost).
 * Polls every 50 ms; the caller bounds it with a phase timeout.
 */
export function awaitDelivery(subscriber, { sendingDone, quietMs = 2_000, stopped }) {
  return new Promise((resolve) => {
    let lastCount = -1;
    let quietSince = 0;
    const timer = setInterval(() => {
      const now = Date.now();
      if (subscriber.received !== lastCount) {
        lastCount = subscriber.received;
        quietSince = now;
      }
      if (stopped() || (sendingDone() && now - quietSince >= quietMs)) finish();
    }, 50);
    const finish = () => {
      clearInterval(timer);
      resolve();
    };
    subscriber.done.then(finish);
  });
}
