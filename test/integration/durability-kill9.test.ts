import { describe, expect, it } from 'vitest';
import { durableProject, recorder, startCli, withDb, type Recorder } from '../helpers/durable.js';
import { numberOf, prng, publishNumbers, publishThenKill, untilMessages } from '../helpers/kill9.js';

/**
 * The "acked means stored" proof: a publisher sends numbered QoS 1 messages to a rule that
 * writes history and republishes to a topic a persistent-session subscriber holds (the
 * stand-in for a remote output until the outbox lands). signalbox, the built CLI, is killed
 * with SIGKILL at a random point, started again on the same port and database, and the
 * publisher resends everything it has no PUBACK for. Every message whose PUBACK arrived must
 * be in history and must reach the subscriber; duplicates are bounded by the windows.
 *
 * The kill points come from a seeded PRNG; a failure names its seed. Run other seeds with
 * `SB_KILL9_SEEDS=7,8,9 npx vitest run test/integration/durability-kill9.test.ts`.
 */

const TOTAL = 10_000;
/** QoS 1 publishes the publisher keeps unacknowledged at most. */
const WINDOW = 50;
/** broker.limits.maxInflight: QoS 1 messages signalbox keeps unacknowledged towards the subscriber. */
const MAX_INFLIGHT = 50;
const SEEDS = (process.env.SB_KILL9_SEEDS ?? '1,2,3').split(',').map((s) => Number(s.trim()));

const RULES = `rules:
  - id: load
    description: history and a republish to the persistent subscriber (the remote-output stand-in)
    on: load/in
    to:
      - history: {}
      - republish: { topic: load/out, qos: 1 }
`;




/** Every number the subscriber received, with how many copies. */
function tally(recorders: Recorder[]): { distinct: Set<number>; copies: number } {
  const distinct = new Set<number>();
  let copies = 0;
  for (const rec of recorders) {
    for (const m of rec.received) {
      distinct.add(numberOf(m.payload));
      copies++;
    }
  }
  return { distinct, copies };
}


describe('acked means stored: kill -9 under load', () => {
  it.each(SEEDS)(
    'every message acknowledged before SIGKILL is in history and reaches the persistent subscriber (seed %i)',
    async (seed) => {
      const random = prng(seed);
      const killAt = 200 + Math.floor(random() * (TOTAL - 400));
      console.info(`kill9 seed ${seed}: SIGKILL after ${killAt} of ${TOTAL} PUBACKs`);
      const project = await durableProject({ rules: { 'load.yaml': RULES }, broker: `limits: { maxInflight: ${MAX_INFLIGHT}, maxQueued: ${TOTAL * 2} }` });
      const first = await startCli(project);

      const sinkOptions = { clientId: 'kill9-sink', clean: false } as const;
      const sink = await recorder(project.url, sinkOptions);
      await sink.client.subscribeAsync('load/out', { qos: 1 });
      await sink.barrier();

      const { outcome, acked } = await publishThenKill(project.port, first.child.pid, { total: TOTAL, killAt, topic: 'load/in', clientId: 'kill9-pub', window: WINDOW });
      expect(outcome, `seed ${seed}: the publisher finished before the kill`).toBe('closed');
      expect((await first.child.exited).signal).toBe('SIGKILL');

      // The proof, on the database as the kill left it: every PUBACKed number is stored, and
      // the subscriber either had it already or it is owed to its session.
      const ackedBeforeKill = [...acked];
      const receivedBeforeKill = tally([sink]).distinct;
      const { stored, owed } = withDb(
        project.dbPath,
        (db) => ({
          stored: new Set((db.prepare("SELECT payload FROM history WHERE topic = 'load/in'").all() as Array<{ payload: Buffer }>).map((r) => numberOf(r.payload))),
          owed: new Set((db.prepare("SELECT payload FROM session_messages WHERE client_id = 'kill9-sink'").all() as Array<{ payload: Buffer }>).map((r) => numberOf(r.payload))),
        }),
        { write: true }, // recovers the WAL the killed process left, as signalbox's own open would
      );
      expect(ackedBeforeKill.length).toBeGreaterThanOrEqual(killAt);
      expect(ackedBeforeKill.filter((n) => !stored.has(n)), `seed ${seed}: PUBACKed but not in history`).toEqual([]);
      expect(
        ackedBeforeKill.filter((n) => !receivedBeforeKill.has(n) && !owed.has(n)),
        `seed ${seed}: PUBACKed, never delivered and not owed to the subscriber`,
      ).toEqual([]);

      // Restart on the same port and database; the subscriber comes back, the publisher resends what it has no PUBACK for.
      const second = await startCli(project);
      const sinkAgain = await recorder(project.url, sinkOptions);
      expect(sinkAgain.connack.sessionPresent).toBe(true);
      const rest = Array.from({ length: TOTAL }, (_, i) => i).filter((n) => !acked.has(n));
      expect(await publishNumbers(project.port, rest, acked, { topic: 'load/in', clientId: 'kill9-pub', window: WINDOW })).toBe('done');
      expect(acked.size).toBe(TOTAL);

      await untilMessages(
        sinkAgain,
        () => tally([sink, sinkAgain]).distinct.size === TOTAL,
        () => `seed ${seed}: the subscriber has ${tally([sink, sinkAgain]).distinct.size} of ${TOTAL} distinct messages`,
        15_000,
      );
      expect((await second.stop('SIGTERM')).code).toBe(0);

      const history = withDb(project.dbPath, (db) =>
        (db.prepare("SELECT payload FROM history WHERE topic = 'load/in'").all() as Array<{ payload: Buffer }>).map((r) => numberOf(r.payload)),
      );
      expect(new Set(history).size).toBe(TOTAL);
      // A duplicate row is a message committed whose PUBACK the kill cut off: at most one window.
      expect(history.length - TOTAL).toBeLessThanOrEqual(WINDOW);
      // The subscriber also sees what it had received but whose PUBACK was not committed yet,
      // and what was in flight to it: at most two of its windows, plus the publisher's resends.
      const { copies } = tally([sink, sinkAgain]);
      expect(copies - TOTAL).toBeLessThanOrEqual(WINDOW + 2 * MAX_INFLIGHT);
    },
    30_000,
  );
});
