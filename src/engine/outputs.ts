import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { ConnectorDeps, ConnectorRegistry, OutboxSettings } from '../outputs/connector.js';
import type { Effect } from '../outputs/types.js';
import type { DeadLetterStore } from '../storage/dead-letters.js';
import { StorageError } from '../storage/errors.js';
import type { OutboxStore } from '../storage/outbox.js';
import { OutputDrain, type DrainStats } from './drain.js';

/** A named output from `outputs:` after validation. */
export interface NamedOutput {
  readonly type: string;
  readonly settings: unknown;
  readonly outbox: OutboxSettings;
}

/** How often the age of an output's oldest message is looked up for the maxAge cap. */
const AGE_CHECK_INTERVAL_MS = 1000;
/** A storm of drops or blocks logs once per this many ms, with counts. */
const CAP_LOG_INTERVAL_MS = 10_000;

/** MQTT 5 reason code for a publish refused because an outbox is full: Quota exceeded. */
export const QUOTA_EXCEEDED = 0x97;

interface Running {
  readonly name: string;
  readonly type: string;
  /** The settings it runs with, to tell a changed output on reload. */
  readonly config: string;
  readonly outbox: OutboxSettings;
  readonly drain: OutputDrain;
  notifyPending: boolean;
  oldest: number | undefined;
  oldestCheckedAt: number;
  blocked: number;
  dropped: number;
  lastCapLog: number;
}

/** One output's state, for `signalbox` status output, logs and metrics. */
export interface OutputStatus extends DrainStats {
  name: string;
  type: string;
  waiting: number;
  waitingBytes: number;
  blocked: number;
}

export interface RemoteOutputsDeps {
  store: OutboxStore;
  /** Publishes into the local broker (bridges' in direction). */
  publishLocal?: ConnectorDeps['publishLocal'];
  /** The config file's folder, for relative paths in output settings. */
  baseDir?: string;
  deadLetters: Pick<DeadLetterStore, 'add'>;
  clock: Clock;
  log: Logger;
}

/**
 * The remote outputs of a running signalbox: each named output's connector, its durable
 * outbox and the drain that delivers it. Rule effects for a remote output are enqueued
 * here; the caps (bytes, age) and the overflow policy are applied here, and nowhere else is
 * anything dropped.
 */
export class RemoteOutputs {
  private readonly running = new Map<string, Running>();

  private started = false;

  constructor(
    outputs: Readonly<Record<string, NamedOutput>>,
    private readonly connectors: ConnectorRegistry,
    private readonly deps: RemoteOutputsDeps,
  ) {
    for (const [name, output] of Object.entries(outputs)) this.running.set(name, this.create(name, output));
  }

  private create(name: string, output: NamedOutput): Running {
    const deps = this.deps;
    const type = this.connectors.get(output.type);
    if (!type) throw new Error(`output "${name}": unknown type "${output.type}"`);
    const connector = type.create(name, output.settings, { log: deps.log.child({ output: name }), clock: deps.clock, publishLocal: deps.publishLocal, baseDir: deps.baseDir });
    const drain = new OutputDrain(name, connector, output.outbox, {
      store: deps.store,
      deadLetter: (letter) => deps.deadLetters.add(letter),
      clock: deps.clock,
      log: deps.log,
    });
    return { name, type: output.type, config: JSON.stringify(output), outbox: output.outbox, drain, notifyPending: false, oldest: undefined, oldestCheckedAt: -Infinity, blocked: 0, dropped: 0, lastCapLog: -Infinity };
  }

  start(): void {
    this.started = true;
    for (const r of this.running.values()) r.drain.start();
  }

  /**
   * Applies a reloaded `outputs:` section without touching outputs whose settings did not
   * change: removed ones stop, new ones start, changed ones restart with the new settings.
   * What waits in an outbox stays on disk throughout.
   */
  async reconcile(outputs: Readonly<Record<string, NamedOutput>>): Promise<void> {
    const log = this.deps.log;
    for (const [name, r] of [...this.running]) {
      const next = outputs[name];
      if (next && JSON.stringify(next) === r.config) continue;
      this.running.delete(name);
      await r.drain.close();
      const waiting = this.deps.store.depth(name).count;
      if (!next) log.info({ output: name, waiting }, waiting > 0 ? 'output removed; its undelivered messages stay in the outbox until it is configured again' : 'output removed');
    }
    for (const [name, output] of Object.entries(outputs)) {
      if (this.running.has(name)) continue;
      const r = this.create(name, output);
      this.running.set(name, r);
      if (this.started) r.drain.start();
      log.info({ output: name, type: output.type }, 'output started');
    }
  }

  /**
   * Queues one effect in its output's outbox, in the current group-commit batch. Over the
   * output's cap: `block` rejects with a retryable SB_ERR_OUTBOX_FULL (the message is not
   * acknowledged), `drop-oldest` deletes the oldest waiting messages, counted and logged.
   */
  enqueue(effect: Effect): Promise<void> {
    const r = this.running.get(effect.output ?? '');
    if (!r) return Promise.reject(new Error(`no output named "${effect.output}"`));
    if (this.overCap(r, effect.payload.length)) {
      if (r.outbox.overflow === 'block') {
        r.blocked++;
        this.capLog(r, 'outbox full: not accepting new messages for this output until it drains');
        const err = new StorageError('SB_ERR_OUTBOX_FULL', `outbox of output "${r.name}" is full`, { file: r.name, retryable: true });
        (err as StorageError & { reasonCode?: number }).reasonCode = QUOTA_EXCEEDED;
        return Promise.reject(err);
      }
      this.dropOldest(r, effect.payload.length);
    }
    const committed = this.deps.store.enqueue(r.name, effect);
    if (!r.notifyPending) {
      r.notifyPending = true;
      const wake = () => {
        r.notifyPending = false;
        r.drain.notify();
      };
      committed.then(wake, wake);
    }
    return committed;
  }

  private overCap(r: Running, incoming: number): boolean {
    const depth = this.deps.store.depth(r.name);
    if (depth.count === 0) {
      // The message being queued is the oldest now: no need to look it up (the drain often
      // empties the outbox between batches, and a lookup per refill would cost a query).
      r.oldest = r.oldestCheckedAt = this.deps.clock.now();
      return false;
    }
    if (depth.bytes + incoming > r.outbox.maxBytes) return true;
    const now = this.deps.clock.now();
    if (now - r.oldestCheckedAt >= AGE_CHECK_INTERVAL_MS) {
      r.oldest = this.deps.store.oldestTime(r.name);
      r.oldestCheckedAt = now;
    }
    return r.oldest !== undefined && now - r.oldest > r.outbox.maxAge;
  }

  private dropOldest(r: Running, incoming: number): void {
    const store = this.deps.store;
    const now = this.deps.clock.now();
    // Rows of the open batch are not visible yet; commit them so they can be dropped too.
    store.flush();
    let dropped = 0;
    let after = 0;
    for (let round = 0; round < 100; round++) {
      const page = store.read(r.name, after, 100);
      if (page.length === 0) break;
      let done = false;
      for (const m of page) {
        after = m.seq;
        const depth = store.depth(r.name);
        const tooBig = depth.bytes + incoming > r.outbox.maxBytes;
        const tooOld = now - m.time > r.outbox.maxAge;
        if (!tooBig && !tooOld) {
          done = true;
          break;
        }
        void store.removeOne(r.name, m.seq).catch(() => undefined);
        dropped++;
      }
      if (done) break;
    }
    r.oldestCheckedAt = -Infinity;
    if (dropped > 0) {
      r.dropped += dropped;
      this.capLog(r, `outbox full: dropped the ${dropped} oldest message(s) (overflow: drop-oldest)`);
    }
  }

  private capLog(r: Running, msg: string): void {
    const now = this.deps.clock.now();
    if (now - r.lastCapLog < CAP_LOG_INTERVAL_MS) return;
    r.lastCapLog = now;
    const depth = this.deps.store.depth(r.name);
    this.deps.log.warn({ output: r.name, waiting: depth.count, waitingBytes: depth.bytes, maxBytes: r.outbox.maxBytes, dropped: r.dropped, blocked: r.blocked }, msg);
  }

  /** Every output's state. */
  status(): OutputStatus[] {
    return [...this.running.values()].map((r) => {
      const depth = this.deps.store.depth(r.name);
      return { name: r.name, type: r.type, waiting: depth.count, waitingBytes: depth.bytes, blocked: r.blocked, ...r.drain.stats, dropped: r.dropped + r.drain.stats.dropped };
    });
  }

  /** Stops every drain and closes every connector; what is not delivered stays on disk. */
  async close(): Promise<void> {
    await Promise.all([...this.running.values()].map((r) => r.drain.close()));
  }
}
