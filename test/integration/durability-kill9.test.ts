import { describe, expect, it } from 'vitest';
import { durableProject, recorder, startCli, withDb, type Recorder } from '../helpers/durable.js';
import { openRaw } from '../helpers/raw-client.js';

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

/** mulberry32: a small seeded PRNG, so a failing kill point can be reproduced. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

function numberOf(payload: Buffer | string): number {
  return (JSON.parse(payload.toString()) as { n: number }).n;
}

/**
 * Publishes `numbers` as QoS 1 `{"n": i}` to load/in over one raw 3.1.1 connection with at most
 * WINDOW unacknowledged, adding each PUBACKed number to `acked` and calling `onAck` after it.
 * Resolves 'done' when all are acked, or 'closed' when the connection drops first (the
 * PUBACKs that arrived before the drop are counted). Bounded: a silent broker fails it.
 */
async function publishNumbers(port: number, numbers: readonly number[], acked: Set<number>, onAck: () => void = () => {}): Promise<'done' | 'closed'> {
  const r = await openRaw(port, { within: 5000 });
  try {
    const connack = await r.connect({ clientId: 'kill9-pub', clean: true }, { within: 5000 });
    expect(connack.returnCode).toBe(0);
    const inflight = new Map<number, number>();
    let next = 0;
    let packetId = 0;
    const fill = () => {
      while (inflight.size < WINDOW && next < numbers.length) {
        const n = numbers[next++]!;
        do packetId = packetId >= 65_535 ? 1 : packetId + 1;
        while (inflight.has(packetId));
        inflight.set(packetId, n);
        r.send({ cmd: 'publish', topic: 'load/in', payload: Buffer.from(JSON.stringify({ n })), qos: 1, messageId: packetId, retain: false, dup: acked.size > 0 });
      }
    };
    fill();
    while (inflight.size > 0) {
      let packet;
      try {
        packet = await r.nextPacket({ within: 10_000 });
      } catch (err) {
        if (r.isClosed) return 'closed';
        throw err;
      }
      if (packet.cmd !== 'puback') throw new Error(`publisher got ${packet.cmd}, expected only PUBACKs`);
      const n = inflight.get(packet.messageId!);
      if (n === undefined) throw new Error(`PUBACK for unknown packet id ${packet.messageId}`);
      inflight.delete(packet.messageId!);
      acked.add(n);
      onAck();
      fill();
    }
    return 'done';
  } finally {
    r.destroy();
  }
}

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

/** Resolves once `ready()` holds, checked at each message the recorder gets; rejects after `within` ms. */
function untilMessages(rec: Recorder, ready: () => boolean, what: () => string, within: number): Promise<void> {
  return new Promise((resolve, reject) => {
    if (ready()) return resolve();
    const onMessage = () => {
      if (!ready()) return;
      clearTimeout(timer);
      rec.client.off('message', onMessage);
      resolve();
    };
    const timer = setTimeout(() => {
      rec.client.off('message', onMessage);
      reject(new Error(`${what()} after ${within} ms`));
    }, within);
    rec.client.on('message', onMessage);
  });
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

      const all = Array.from({ length: TOTAL }, (_, i) => i);
      const acked = new Set<number>();
      let killed = false;
      const outcome = await publishNumbers(project.port, all, acked, () => {
        if (killed || acked.size < killAt) return;
        killed = true;
        process.kill(first.child.pid, 'SIGKILL');
      });
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
      const rest = all.filter((n) => !acked.has(n));
      expect(await publishNumbers(project.port, rest, acked)).toBe('done');
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
