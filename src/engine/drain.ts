import type { Clock, TimerHandle } from '../clock.js';
import type { Logger } from '../log.js';
import { backoffDelay } from '../outputs/backoff.js';
import { OutputError, type Connector, type OutboxMessage, type OutboxSettings } from '../outputs/connector.js';
import type { DeadLetter } from '../storage/dead-letters.js';
import type { OutboxStore } from '../storage/outbox.js';

/** While idle, the outbox is re-read this often in case rows arrived without a notify (e.g. dead-letter replay). */
export const IDLE_POLL_MS = 1000;
/** On close, how long writes in flight may take to be confirmed. */
export const STOP_GRACE_MS = 1000;
/** A target's Retry-After is honoured up to this long. */
export const MAX_RETRY_AFTER_MS = 3_600_000;

/** One batch handed to the connector. */
interface Write {
  readonly batch: OutboxMessage[];
  settled: boolean;
  error: unknown;
  /** Called once when it settles (the drain waiting for it). */
  done: (() => void) | undefined;
}

/** Counters of one output's drain, for status output and metrics. */
export interface DrainStats {
  delivered: number;
  retries: number;
  deadLettered: number;
  dropped: number;
  lastError: string | undefined;
  state: 'idle' | 'sending' | 'backoff' | 'stopped';
}

export interface DrainDeps {
  store: OutboxStore;
  deadLetter(letter: DeadLetter): void;
  clock: Clock;
  log: Logger;
  /** Jitter source in [0, 1); injected so tests are deterministic. */
  random?: () => number;
}

/**
 * Delivers one output's outbox in order: reads the oldest committed rows, hands them to the
 * connector as one batch (so at most `batchSize` are in flight), and deletes them only once
 * the connector confirmed. A retryable failure retries the same batch after an exponential
 * backoff with jitter; a permanent failure is narrowed down to the message that caused it,
 * which goes to the dead letters, and the rest carry on in order.
 */
export class OutputDrain {
  readonly stats: DrainStats = { delivered: 0, retries: 0, deadLettered: 0, dropped: 0, lastError: undefined, state: 'idle' };
  private lastSeq = 0;
  private failures = 0;
  /** After a permanent batch failure: send this many rows one at a time to find the culprit. */
  private singles = 0;
  private stopped = false;
  private wake: (() => void) | undefined;
  private timer: TimerHandle | undefined;
  private loop: Promise<void> | undefined;

  constructor(
    readonly name: string,
    private readonly connector: Connector,
    private readonly settings: OutboxSettings,
    private readonly deps: DrainDeps,
  ) {}

  /** Starts the connector and the delivery loop. */
  start(): void {
    if (this.loop) return;
    this.loop = this.run().catch((err: unknown) => {
      this.deps.log.error({ err, output: this.name }, 'output drain stopped by an unexpected error');
    });
  }

  /** New rows were committed: stop waiting. */
  notify(): void {
    this.wake?.();
  }

  /** Stops after the batch in flight (its rows stay in the outbox if unconfirmed). */
  async close(): Promise<void> {
    this.stopped = true;
    this.stats.state = 'stopped';
    this.notify();
    await this.loop;
    await this.connector.close();
  }

  private async run(): Promise<void> {
    const { log } = this.deps;
    try {
      await this.connector.start?.();
    } catch (err) {
      log.warn({ err, output: this.name }, 'output did not start; will keep retrying');
    }
    const maxWrites = Math.max(1, this.connector.maxConcurrentWrites ?? 1);
    /** Writes handed to the connector and not yet settled, oldest first. */
    let inflight: Write[] = [];
    /** Last seq handed to the connector (ahead of lastSeq while writes are in flight). */
    let sentSeq = this.lastSeq;
    let lingered = false;
    while (!this.stopped) {
      // Hand out more while there is room: several writes in flight keep a remote busy
      // instead of waiting a round trip per batch (connectors that allow it, e.g. bridges).
      const room = this.singles > 0 ? inflight.length === 0 : inflight.length < maxWrites;
      if (room) {
        const limit = this.singles > 0 ? 1 : this.settings.batchSize;
        let batch: OutboxMessage[] | undefined;
        try {
          batch = this.deps.store.read(this.name, sentSeq, limit);
        } catch (err) {
          log.error({ err, output: this.name }, 'cannot read the outbox; retrying');
          if (inflight.length === 0) {
            await this.sleep(this.backoff(++this.failures));
            continue;
          }
        }
        if (batch !== undefined && batch.length > 0) {
          if (inflight.length === 0 && batch.length < limit && this.settings.lingerMs > 0 && this.singles === 0 && !lingered) {
            // A flush interval: let a small batch fill up (once) before paying for a write.
            lingered = true;
            await this.sleep(this.settings.lingerMs);
            continue;
          }
          lingered = false;
          this.stats.state = 'sending';
          inflight.push(this.send(batch));
          sentSeq = batch[batch.length - 1]!.seq;
          continue;
        }
      }
      if (inflight.length === 0) {
        this.stats.state = 'idle';
        await this.idle();
        continue;
      }
      const head = inflight[0]!;
      if (!head.settled) {
        // Wait for the oldest write, or for new rows to hand out while it is in flight.
        await this.waitFor(head, room);
        continue;
      }
      inflight.shift();
      if (head.error === undefined) {
        this.confirmed(head.batch);
        continue;
      }
      // Writes after a failed one are abandoned (what they sent may arrive twice); the
      // failed batch and everything after it go again, in order.
      inflight = [];
      let failedBatch = head.batch;
      const delivered = head.error instanceof OutputError ? Math.min(head.error.delivered, failedBatch.length - 1) : 0;
      if (delivered > 0) {
        // The target has the first messages of the batch; only the rest fail.
        this.confirmed(failedBatch.slice(0, delivered));
        failedBatch = failedBatch.slice(delivered);
      }
      sentSeq = this.lastSeq;
      if (this.stopped) return;
      await this.failed(failedBatch, head.error);
    }
    await this.finish(inflight);
  }

  /**
   * Stopping: gives the writes in flight a moment to be confirmed, so what the target
   * already has is not sent again by the next drain of this outbox (after a reload).
   */
  private async finish(inflight: Write[]): Promise<void> {
    const deadline = this.deps.clock.now() + STOP_GRACE_MS;
    for (const write of inflight) {
      if (!write.settled) {
        const left = deadline - this.deps.clock.now();
        if (left <= 0) return;
        await new Promise<void>((resolve) => {
          const timer = this.deps.clock.setTimeout(resolve, left);
          write.done = () => {
            this.deps.clock.clearTimeout(timer);
            resolve();
          };
        });
        if (!write.settled) return;
      }
      if (write.error !== undefined) return;
      this.confirmed(write.batch);
    }
  }

  private send(batch: OutboxMessage[]): Write {
    const write: Write = { batch, settled: false, error: undefined, done: undefined };
    const settle = (failed: boolean, error: unknown) => {
      write.settled = true;
      if (failed) write.error = error ?? new Error('write failed');
      write.done?.();
    };
    try {
      this.connector.write(batch).then(
        () => settle(false, undefined),
        (err: unknown) => settle(true, err),
      );
    } catch (err) {
      settle(true, err);
    }
    return write;
  }

  private confirmed(batch: OutboxMessage[]): void {
    const last = batch[batch.length - 1]!;
    this.lastSeq = last.seq;
    this.failures = 0;
    if (this.singles > 0) this.singles--;
    this.stats.delivered += batch.length;
    void this.deps.store.removeUpTo(this.name, last.seq).catch((err: unknown) => this.deps.log.warn({ err, output: this.name }, 'delivered rows not yet deleted; they may be sent again after a restart'));
  }

  /** Resolves when `write` settles, or (when more may be sent) new rows were committed, or close(). */
  private waitFor(write: Write, wakeOnNotify: boolean): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        write.done = undefined;
        this.wake = undefined;
        resolve();
      };
      write.done = done;
      this.wake = () => {
        if (wakeOnNotify || this.stopped) done();
      };
    });
  }

  private async failed(batch: OutboxMessage[], err: unknown): Promise<void> {
    const { store, log } = this.deps;
    const message = err instanceof Error ? err.message : String(err);
    this.stats.lastError = message;
    const retryable = !(err instanceof OutputError) || err.retryable;
    if (retryable) {
      this.failures++;
      this.stats.retries++;
      this.stats.state = 'backoff';
      store.recordAttempt(this.name, batch[0]!.seq, batch[batch.length - 1]!.seq);
      const asked = err instanceof OutputError ? err.retryAfterMs : undefined;
      const delay = Math.max(this.backoff(this.failures), Math.min(asked ?? 0, MAX_RETRY_AFTER_MS));
      log.warn({ output: this.name, error: message, attempt: this.failures, retryInMs: delay, waiting: store.depth(this.name).count }, 'output unavailable; retrying with backoff');
      await this.sleep(delay);
      return;
    }
    store.recordAttempt(this.name, batch[0]!.seq, batch[batch.length - 1]!.seq);
    if (batch.length > 1) {
      // Which message did the target refuse? Resend this batch one message at a time.
      this.singles = batch.length;
      return;
    }
    const m = batch[0]!;
    this.stats.deadLettered++;
    if (this.singles > 0) this.singles--;
    log.warn({ output: this.name, rule: m.ruleId, topic: m.topic, error: message }, 'output refused a message permanently; it went to the dead letters');
    this.deps.deadLetter({
      time: m.time,
      ruleId: m.ruleId,
      output: this.name,
      error: (err as { code?: string }).code ? `${(err as { code: string }).code}: ${message}` : message,
      topic: m.topic,
      payload: m.payload,
      qos: m.qos,
      retain: m.retain,
      clientId: m.clientId,
      attempts: m.attempts + 1,
      data: m.data,
    });
    this.lastSeq = m.seq;
    void store.removeOne(this.name, m.seq).catch(() => undefined);
  }

  private backoff(failures: number): number {
    return backoffDelay(failures, this.settings.retryMinMs, this.settings.retryMaxMs, this.deps.random);
  }

  /** Waits until new rows arrive (notify) or IDLE_POLL_MS passed. */
  private idle(): Promise<void> {
    return this.wait(IDLE_POLL_MS, true);
  }

  /** Waits `ms`; new rows (notify) do not cut a backoff short, close() does. */
  private sleep(ms: number): Promise<void> {
    return this.wait(ms, false);
  }

  private wait(ms: number, wakeOnNotify: boolean): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        if (this.timer) this.deps.clock.clearTimeout(this.timer);
        this.timer = undefined;
        this.wake = undefined;
        resolve();
      };
      this.wake = () => {
        if (wakeOnNotify || this.stopped) done();
      };
      this.timer = this.deps.clock.setTimeout(done, ms);
    });
  }
}
