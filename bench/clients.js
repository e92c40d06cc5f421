// Sets up the bench's publishers and subscriber on one broker and tears them down again.
import { connectClient, Publisher, Subscriber } from './load.js';

/** Topic filter the subscriber uses; every publisher `i` publishes on `bench/<i>/data`. */
export const FILTER = 'bench/+/data';

const benchTopic = (i) => `bench/${i}/data`;

/**
 * Connects one subscriber (subscribed to `filter`, default {@link FILTER}, at `qos`) and
 * `publishers` publishers, publisher `i` on `topicOf(i)` (default `bench/<i>/data`).
 * `format` / `decode` replace the binary payload (see load.js; the rules job sends JSON);
 * `tls` (node:tls connect options) connects every client over TLS.
 * @returns {Promise<{ subscriber: Subscriber, publishers: Publisher[], close: () => Promise<void> }>}
 */
export async function connectBenchClients(port, { qos, publishers: count, payloadBytes, window, capacity, filter = FILTER, topicOf = benchTopic, format, decode, tls }) {
  const tag = Math.random().toString(36).slice(2, 8);
  const clients = [];
  const close = async () => {
    await Promise.all(clients.map((c) => c.close()));
  };
  try {
    const subClient = await connectClient(port, { clientId: `bench-sub-${tag}`, tls });
    clients.push(subClient);
    await subClient.subscribe(filter, qos);
    const subscriber = new Subscriber(subClient, { publishers: count, capacity, decode });
    const publishers = [];
    for (let i = 0; i < count; i++) {
      const client = await connectClient(port, { clientId: `bench-pub-${i}-${tag}`, tls });
      clients.push(client);
      publishers.push(new Publisher(client, { index: i, topic: topicOf(i), qos, payloadBytes, window, format }));
    }
    return { subscriber, publishers, close };
  } catch (err) {
    for (const c of clients) c.socket.destroy();
    throw err;
  }
}

/**
 * Resolves when the subscriber has all it expects, or — once `sendingDone` is true — when
 * nothing has arrived for `quietMs` (then the shortfall is reported as lost). With
 * `stillWorking` (async, true while the broker still works on what it was sent), a quiet
 * subscriber is waited for as long as the broker is busy: a broker that keeps reading a flood
 * while its subscriber's socket is full (signalbox at QoS 0) delivers nothing for seconds
 * without losing anything. Polls every 50 ms; the caller bounds it with a phase timeout.
 */
export function awaitDelivery(subscriber, { sendingDone, quietMs = 2_000, stopped, stillWorking }) {
  return new Promise((resolve) => {
    let lastCount = -1;
    let quietSince = 0;
    let asking = false;
    const timer = setInterval(() => {
      const now = Date.now();
      if (subscriber.received !== lastCount) {
        lastCount = subscriber.received;
        quietSince = now;
      }
      if (stopped()) return finish();
      if (!sendingDone() || now - quietSince < quietMs || asking) return;
      if (!stillWorking) return finish();
      asking = true;
      stillWorking().then(
        (busy) => {
          asking = false;
          if (busy) quietSince = Date.now();
          else finish();
        },
        () => finish(),
      );
    }, 50);
    const finish = () => {
      clearInterval(timer);
      resolve();
    };
    subscriber.done.then(finish);
  });
}
