import type { Clock, TimerHandle } from '../clock.js';
import type { Logger } from '../log.js';
import { backoffDelay } from '../outputs/backoff.js';
import { OutputError, type Connector, type OutboxMessage, type OutboxSettings } from '../outputs/connector.js';
import type { DeadLetter } from '../storage/dead-letters.js';
import type { OutboxStore } from '../storage/outbox.js';

/** While idle, the outbox is re-read this often in case rows arrived without a notify (e.g. dead-letter replay). */
export const IDLE_POLL_MS = 1000;
/** A target's Retry-After is honoured up to this long. */
export const MAX_RETRY_AFTER_MS = 3_600_000;

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
    const { store, log } = this.deps;
    try {
      await this.connector.start?.();
    } catch (err) {
      log.warn({ err, output: this.name }, 'output did not start; will keep retrying');
    }
    let lingered = false;
    while (!this.stopped) {
      const limit = this.singles > 0 ? 1 : this.settings.batchSize;
      let batch: OutboxMessage[];
      try {
        batch = store.read(this.name, this.lastSeq, limit);
      } catch (err) {
        log.error({ err, output: this.name }, 'cannot read the outbox; retrying');
        await this.sleep(this.backoff(++this.failures));
        continue;
      }
      if (batch.length === 0) {
        this.stats.state = 'idle';
        await this.idle();
        continue;
      }
      if (batch.length < limit && this.settings.lingerMs > 0 && this.singles === 0 && !lingered) {
        // A flush interval: let a small batch fill up (once) before paying for a write.
        lingered = true;
        await this.sleep(this.settings.lingerMs);
        if (this.stopped) return;
        continue;
      }
      this.stats.state = 'sending';
      lingered = false;
      try {
        await this.connector.write(batch);
      } catch (err) {
        if (this.stopped) return;
        await this.failed(batch, err);
        continue;
      }
      const last = batch[batch.length - 1]!;
      this.lastSeq = last.seq;
      this.failures = 0;
      if (this.singles > 0) this.singles--;
      this.stats.delivered += batch.length;
      void store.removeUpTo(this.name, last.seq).catch((err: unknown) => log.warn({ err, output: this.name }, 'delivered rows not yet deleted; they may be sent again after a restart'));
    }
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
