import type { Clock, TimerHandle } from '../clock.js';
import type { Message } from '../broker/types.js';
import type { Logger } from '../log.js';
import type { DeadLetter, DeadLetterStore } from '../storage/dead-letters.js';
import type { RemoteOutputs } from './outputs.js';
import type { RuleProcessor } from './processor.js';

/** How often the server looks for dead letters marked for replay. */
export const REDRIVE_INTERVAL_MS = 1000;
/** Letters redriven per look. */
const REDRIVE_BATCH = 100;

export interface RedriverDeps {
  deadLetters: DeadLetterStore;
  processor: RuleProcessor;
  outputs: RemoteOutputs;
  clock: Clock;
  log: Logger;
}

/**
 * Redrives dead letters that `signalbox dead-letters replay` marked: a letter of an output
 * goes back into that output's outbox; a letter of a rule runs through that rule again.
 * The letter is deleted once that worked; failing again makes a new letter.
 */
export class Redriver {
  private timer: TimerHandle | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(private readonly deps: RedriverDeps) {}

  start(): void {
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = this.deps.clock.setTimeout(() => {
      this.running = this.tick().finally(() => {
        this.running = undefined;
        this.schedule();
      });
    }, REDRIVE_INTERVAL_MS);
  }

  /** Redrives what is marked now; resolves when done. */
  async tick(): Promise<number> {
    const { deadLetters, log } = this.deps;
    let letters: DeadLetter[];
    try {
      letters = deadLetters.takeReplays(REDRIVE_BATCH);
    } catch (err) {
      log.warn({ err }, 'cannot read dead letters to replay');
      return 0;
    }
    let done = 0;
    for (const letter of letters) {
      try {
        await this.redrive(letter);
        deadLetters.remove([letter.id!]);
        done++;
      } catch (err) {
        log.warn({ err, id: letter.id, rule: letter.ruleId, output: letter.output }, 'dead letter not replayed; it stays in the dead letters');
        deadLetters.clearReplay(letter.id!);
      }
    }
    if (done > 0) log.info({ replayed: done }, 'replayed dead letters');
    return done;
  }

  private redrive(letter: DeadLetter): Promise<void> {
    if (letter.output !== undefined) {
      return this.deps.outputs.enqueue({
        type: 'replay',
        output: letter.output,
        ruleId: letter.ruleId,
        topic: letter.topic,
        payload: letter.payload,
        qos: letter.qos,
        retain: letter.retain,
        data: letter.data,
        source: { clientId: letter.clientId, timestamp: letter.time, hops: 0 },
      });
    }
    const message: Message = { topic: letter.topic, payload: letter.payload, qos: letter.qos, retain: letter.retain, clientId: letter.clientId, timestamp: letter.time, hops: 0 };
    return this.deps.processor.replay(letter.ruleId, message);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) this.deps.clock.clearTimeout(this.timer);
    await this.running;
  }
}
