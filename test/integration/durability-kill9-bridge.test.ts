import { describe, expect, it } from 'vitest';
import { storedMessages } from '../../src/storage/outbox-codec.js';
import { durableProject, recorder, startCli, withDb, type Recorder } from '../helpers/durable.js';
import { bridgeState, mosquittoPeer, startMosquitto } from '../helpers/mosquitto.js';
import { numberOf, prng, publishNumbers, publishThenKill, untilMessages } from '../helpers/kill9.js';

/**
 * "Acked means stored" through a real remote output: a publisher sends numbered QoS 1
 * messages to signalbox (the built CLI), where a rule writes history and the out mapping of a
 * bridge output queues each message in the bridge's durable outbox for a real Mosquitto. A
 * persistent-session QoS 1 subscriber on Mosquitto records what arrives. signalbox is killed
 * with SIGKILL after a seeded random number of PUBACKs, started again on the same port and
 * database, and the publisher resends everything it has no PUBACK for. Every PUBACKed number
 * must be in history and must reach the Mosquitto subscriber; duplicates there are bounded by
 * the publisher's window plus one outbox batch.
 *
 * Other seeds: `SB_KILL9_SEEDS=7,8,9 npx vitest run test/integration/durability-kill9-bridge.test.ts`.
 */

const TOTAL = 5_000;
/** QoS 1 publishes the publisher keeps unacknowledged at most. */
const WINDOW = 50;
/** outbox.batchSize and maxInflight: messages the bridge has unacknowledged at Mosquitto at once. */
const BATCH_SIZE = 100;
const SEEDS = (process.env.SB_KILL9_SEEDS ?? '1,2,3').split(',').map((s) => Number(s.trim()));
const SINK_ID = 'kill9-bridge-sink';

const RULES = `rules:
  - id: store
    description: history for every numbered message (the bridge's out mapping sends it on)
    on: n/x
    to:
      - history: {}
`;

function outputs(mosquittoUrl: string): string {
  const remote = {
    type: 'bridge',
    url: mosquittoUrl,
    out: [{ local: 'n/#', remote: 'n/#', qos: 1 }],
    maxInflight: BATCH_SIZE,
    outbox: { batchSize: BATCH_SIZE, retryMinMs: 50, retryMaxMs: 500 },
    reconnect: { retryMinMs: 50, retryMaxMs: 500 },
  };
  return `outputs: ${JSON.stringify({ remote })}`;
}




function tally(rec: Recorder): { distinct: Set<number>; copies: number } {
  const distinct = new Set<number>();
  for (const m of rec.received) distinct.add(numberOf(m.payload));
  return { distinct, copies: rec.received.length };
}


/** Resolves once `rec` got nothing for `forMs` ms; rejects if messages keep coming for `within` ms. */
async function quiet(rec: Recorder, forMs: number, within: number): Promise<void> {
  const deadline = Date.now() + within;
  for (;;) {
    const before = rec.received.length;
    await new Promise((resolve) => setTimeout(resolve, forMs));
    if (rec.received.length === before) return;
    if (Date.now() >= deadline) throw new Error(`the subscriber still receives messages after ${within} ms`);
  }
}

describe('acked means stored through a bridge: kill -9 under load', () => {
  it.for(SEEDS)(
    'every message acknowledged before SIGKILL is in history and reaches the Mosquitto subscriber (seed %i)',
    { timeout: 30_000 },
    async (seed, ctx) => {
      mosquittoPeer.require(ctx);
      const random = prng(seed);
      const killAt = 200 + Math.floor(random() * (TOTAL - 400));
      console.info(`kill9-bridge seed ${seed}: SIGKILL after ${killAt} of ${TOTAL} PUBACKs`);

      // Mosquitto's default queue (1000 per client) must not be the thing that drops messages.
      const mosquitto = await startMosquitto({ extra: 'max_queued_messages 100000' });
      const sink = await recorder(mosquitto.url, { clientId: SINK_ID, clean: false });
      await sink.client.subscribeAsync('n/#', { qos: 1 });

      const project = await durableProject({ rules: { 'store.yaml': RULES }, extra: outputs(mosquitto.url) });
      const first = await startCli(project);
      await bridgeState(project.url, 'online', { name: 'remote' });

      const { outcome, acked } = await publishThenKill(project.port, first.child.pid, { total: TOTAL, killAt, topic: 'n/x', clientId: 'kill9-bridge-pub', window: WINDOW });
      expect(outcome, `seed ${seed}: the publisher finished before the kill`).toBe('closed');
      expect((await first.child.exited).signal).toBe('SIGKILL');

      // On the database as the kill left it: every PUBACKed number is in history, and either
      // reached Mosquitto's subscriber already or waits in the bridge's outbox.
      const ackedBeforeKill = [...acked];
      const { stored, waiting } = withDb(
        project.dbPath,
        (db) => ({
          stored: new Set((db.prepare("SELECT payload FROM history WHERE topic = 'n/x'").all() as Array<{ payload: Buffer }>).map((r) => numberOf(r.payload))),
          waiting: new Set(storedMessages(db, 'remote').map((m) => numberOf(m.payload))),
        }),
        { write: true }, // recovers the WAL the killed process left, as signalbox's own open would
      );
      // Messages Mosquitto already took may still be on their way to the subscriber: give them a moment.
      await quiet(sink, 300, 5000);
      const arrivedBeforeRestart = tally(sink).distinct;
      expect(ackedBeforeKill.length).toBeGreaterThanOrEqual(killAt);
      expect(ackedBeforeKill.filter((n) => !stored.has(n)), `seed ${seed}: PUBACKed but not in history`).toEqual([]);
      expect(
        ackedBeforeKill.filter((n) => !arrivedBeforeRestart.has(n) && !waiting.has(n)),
        `seed ${seed}: PUBACKed, not at the remote and not in the outbox`,
      ).toEqual([]);

      // Restart on the same port and database; the publisher resends what it has no PUBACK for.
      const second = await startCli(project);
      const rest = Array.from({ length: TOTAL }, (_, i) => i).filter((n) => !acked.has(n));
      expect(await publishNumbers(project.port, rest, acked, { topic: 'n/x', clientId: 'kill9-bridge-pub', window: WINDOW })).toBe('done');
      expect(acked.size).toBe(TOTAL);

      await untilMessages(
        sink,
        () => tally(sink).distinct.size === TOTAL,
        () => `seed ${seed}: the Mosquitto subscriber has ${tally(sink).distinct.size} of ${TOTAL} distinct messages`,
        15_000,
      );
      expect((await second.stop('SIGTERM')).code).toBe(0);

      const history = withDb(project.dbPath, (db) =>
        (db.prepare("SELECT payload FROM history WHERE topic = 'n/x'").all() as Array<{ payload: Buffer }>).map((r) => numberOf(r.payload)),
      );
      expect(new Set(history).size).toBe(TOTAL);
      // A duplicate row is a message committed whose PUBACK the kill cut off: at most one window.
      expect(history.length - TOTAL).toBeLessThanOrEqual(WINDOW);
      // At the remote: those resends, plus the outbox batch Mosquitto had taken whose rows the kill kept.
      const { copies } = tally(sink);
      console.info(`kill9-bridge seed ${seed}: ${history.length - TOTAL} duplicate history rows, ${copies - TOTAL} duplicates at the remote`);
      expect(copies - TOTAL).toBeLessThanOrEqual(WINDOW + BATCH_SIZE);
    },
  );
});
