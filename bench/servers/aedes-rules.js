// The rules job's peer: Aedes 1.2 (in-memory persistence) with the rule written by hand the
// way an Aedes user would: a `published` hook takes every message on sensors/+/temp,
// evaluates the same JSONata transform and publishes the result to out/<id>/temp at the
// message's QoS. Chosen as the fastest fair setup of the ones tried (see bench/README.md):
//
// - `published` rather than `aedes.subscribe('sensors/+/temp', fn)`: both hold the client's
//   packet batch until the callback (Aedes reads no further packets of that client until
//   then; its PUBACK is written on receipt either way) and measured the same within noise;
//   the hook needs no second trie match.
// - Evaluations run one after another (chained), as signalbox's rule processor runs them.
//   With a QoS 0 flood Aedes hands a whole socket read (hundreds of messages) to the hook at
//   once; interleaving hundreds of async JSONata evaluations cost Aedes about twice the CPU
//   per message of running them in turn.
// - `concurrency: 0` (mqemitter unbounded): with the default 100, the emits queued behind a
//   QoS 0 flood are drained by recursion (mqemitter `released` → `_do` → `released` ...),
//   which overflows the stack and wedges the broker.
import net from 'node:net';
import { Aedes } from 'aedes';
import jsonata from 'jsonata';
import { TRANSFORM } from '../rules-spec.js';

/** `sensors/<id>/temp`, exactly three levels (what `sensors/+/temp` matches). */
function matchesInput(topic) {
  if (!topic.startsWith('sensors/') || !topic.endsWith('/temp')) return false;
  return !topic.slice(8, -5).includes('/');
}

/** Starts Aedes + the JSONata rule on 127.0.0.1 with an OS-chosen port. */
export async function start() {
  const expression = jsonata(TRANSFORM);
  const counts = { seen: 0, transformed: 0, ruleErrors: 0 };
  let tail = Promise.resolve();
  let aedes;

  /** One message through the rule; calls `done` once its republish is done (or it failed). */
  const runRule = (packet, done) => {
    let payload;
    try {
      payload = JSON.parse(packet.payload.toString());
    } catch {
      counts.ruleErrors++;
      return done();
    }
    // What the expression uses of the input document signalbox builds.
    const doc = { topic: packet.topic, levels: packet.topic.split('/'), payload, qos: packet.qos, retain: packet.retain };
    return expression.evaluate(doc).then(
      (result) => {
        counts.transformed++;
        const out = { cmd: 'publish', topic: `out/${result.id}/temp`, payload: Buffer.from(JSON.stringify(result)), qos: packet.qos, retain: false, dup: false };
        aedes.publish(out, done);
      },
      () => {
        counts.ruleErrors++;
        done();
      },
    );
  };

  const published = (packet, _client, done) => {
    if (!matchesInput(packet.topic)) return done();
    counts.seen++;
    tail = tail.then(() => runRule(packet, done));
  };
  aedes = await Aedes.createBroker({ published, concurrency: 0 });
  aedes.on('clientError', () => {});
  aedes.on('connectionError', () => {});
  const server = net.createServer(aedes.handle);
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    info: { peer: 'aedes 1.2 + jsonata', concurrency: 0 },
    counters: () => ({
      rules: { ...counts },
      pending: counts.seen - counts.transformed - counts.ruleErrors,
      progress: counts.seen + counts.transformed + counts.ruleErrors,
    }),
    close: () =>
      new Promise((resolve) => {
        server.close();
        aedes.close(() => resolve());
      }),
  };
}
