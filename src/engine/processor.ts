import type { Message, PublisherInfo } from '../broker/types.js';
import type { Logger } from '../log.js';
import type { OutputRegistry } from '../outputs/registry.js';
import type { Effect, EffectSink, SinkDeps } from '../outputs/types.js';
import type { CompiledRule } from '../rules/compile.js';
import type { DeadLetterStore } from '../storage/dead-letters.js';
import { StorageError } from '../storage/errors.js';
import { toRawRuleInput, toRuleInput, type RuleInput } from './message.js';
import { runRule, type RuleOutcome } from './pipeline.js';
import { RuleRouter } from './router.js';

/** Default for `engine.maxHops`: how many rule-to-rule republishes one message may cause. */
export const DEFAULT_MAX_HOPS = 8;

/** Counters of the rule engine, for logs and metrics. */
export interface ProcessorStats {
  messagesMatched: number;
  rulesRun: number;
  rulesSkipped: number;
  ruleErrors: number;
  effectErrors: number;
  hopLimitDrops: number;
}

export interface ProcessorDeps extends SinkDeps {
  readonly registry: OutputRegistry;
  readonly deadLetters: Pick<DeadLetterStore, 'add'> | undefined;
  readonly log: Logger;
}

const noop = (): void => undefined;

/** What to wait for before acknowledging: nothing, the one effect, or all of them. */
function settle(pending: Promise<void>[]): Promise<void> | undefined {
  if (pending.length === 0) return undefined;
  if (pending.length === 1) return pending[0];
  return Promise.all(pending).then(noop);
}

/** `CODE: message` when the error carries a code (SB_EXPR_TIMEOUT, ...), else the message. */
function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? `${code}: ${err.message}` : err.message;
}

/**
 * Runs rules on broker messages. Installed as the broker's publish hook: the promise it
 * returns resolves when everything the message caused is done (history committed,
 * republished messages stored), so the broker sends PUBACK only then.
 *
 * Order: messages are evaluated and their effects dispatched in the order they arrived, so
 * each output sees a topic's messages in order.
 */
export class RuleProcessor {
  readonly stats: ProcessorStats = { messagesMatched: 0, rulesRun: 0, rulesSkipped: 0, ruleErrors: 0, effectErrors: 0, hopLimitDrops: 0 };
  private router: RuleRouter;
  private readonly sinks = new Map<string, EffectSink>();
  private tail: Promise<void> = Promise.resolve();
  /** Messages chained on `tail` whose effects are not dispatched yet. */
  private queued = 0;

  constructor(
    rules: readonly CompiledRule[],
    private readonly maxHops: number,
    private readonly deps: ProcessorDeps,
  ) {
    this.router = new RuleRouter(rules);
    for (const [name, type] of deps.registry) this.sinks.set(name, type.createSink(deps));
  }

  get rules(): readonly CompiledRule[] {
    return this.router.rules;
  }

  /** Swaps in a new rule set at once; messages already being processed finish on the old one. */
  setRules(rules: readonly CompiledRule[]): void {
    this.router = new RuleRouter(rules);
  }

  /** The broker's publish hook. Returns undefined when no rule matches, so QoS 1 is acked at once. */
  readonly onPublish = (message: Message, _publisher: PublisherInfo): Promise<void> | undefined => {
    const rules = this.router.match(message.topic);
    if (rules.length === 0) return undefined;
    if (message.hops > this.maxHops) {
      // Rules republishing into each other would otherwise cycle for ever.
      this.stats.hopLimitDrops++;
      this.deps.log.warn({ topic: message.topic, hops: message.hops, maxHops: this.maxHops }, 'hop limit reached: rules not run for this message (a republish cycle?)');
      return undefined;
    }
    this.stats.messagesMatched++;
    return this.process(message, rules);
  };

  /**
   * Runs one rule again on a message from the dead letters (`signalbox dead-letters
   * replay`). Resolves when its effects are done; a new failure is a new dead letter.
   */
  replay(ruleId: string, message: Message): Promise<void> {
    const rule = this.router.rules.find((r) => r.id === ruleId);
    if (!rule) return Promise.reject(new Error(`rule "${ruleId}" is not loaded`));
    return this.process(message, [rule]) ?? Promise.resolve();
  }

  private process(message: Message, rules: readonly CompiledRule[]): Promise<void> | undefined {
    // Hot path: with no message queued ahead (`queued` is 0) the rules run at once; when they
    // all stay in the synchronous fast path, their effects are dispatched at once too, with
    // no promise per step. Order holds: nothing earlier is still waiting to be dispatched.
    if (this.queued === 0) {
      try {
        const input = inputFor(message, rules);
        const outcomes = rules.map((rule) => runRule(rule, input));
        if (!outcomes.some((o) => o instanceof Promise)) return settle(this.dispatch(message, outcomes as RuleOutcome[]));
        return this.enqueue(message, Promise.all(outcomes));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    // Messages are evaluated one after another, chained on `tail`: evaluation is CPU-bound, so
    // running them concurrently gains nothing, and an expression's time limit (wall clock)
    // would then also count the time spent on every other message in flight: one process
    // stall would time out all of them instead of one.
    return this.enqueue(
      message,
      this.tail.then(() => {
        const input = inputFor(message, rules);
        const outcomes = rules.map((rule) => runRule(rule, input));
        // Rules in the synchronous fast path need no Promise.all.
        return outcomes.some((o) => o instanceof Promise) ? Promise.all(outcomes) : (outcomes as RuleOutcome[]);
      }),
    );
  }

  /** Dispatches `message` once `evaluated` settles, after every message queued before it. */
  private enqueue(message: Message, evaluated: Promise<RuleOutcome[]>): Promise<void> {
    this.queued++;
    const dispatched = evaluated.then((outcomes) => this.dispatch(message, outcomes));
    const done = (): void => {
      this.queued--;
    };
    dispatched.then(done, done);
    this.tail = dispatched.then(noop, noop);
    return dispatched.then((pending) => settle(pending) ?? undefined);
  }

  /** Starts every effect of one message; returns what to wait for before acknowledging it. */
  private dispatch(message: Message, outcomes: RuleOutcome[]): Promise<void>[] {
    const pending: Promise<void>[] = [];
    for (const outcome of outcomes) {
      if (outcome.status === 'skipped') {
        this.stats.rulesSkipped++;
        continue;
      }
      if (outcome.status === 'error') {
        this.ruleFailed(outcome.rule.id, message, `${outcome.stage}: ${describeError(outcome.error)}`);
        continue;
      }
      this.stats.rulesRun++;
      for (const effect of outcome.effects) {
        try {
          const p = this.sinks.get(effect.type)!.execute(effect);
          if (p) pending.push(p.catch((err: unknown) => this.effectFailed(effect, message, err)));
        } catch (err) {
          const p = this.effectFailed(effect, message, err);
          if (p) pending.push(p);
        }
      }
    }
    return pending;
  }

  private ruleFailed(ruleId: string, message: Message, error: string, output?: string): void {
    this.stats.ruleErrors++;
    this.deps.log.warn({ rule: ruleId, topic: message.topic, error, output }, 'rule failed for a message; it went to the dead letters');
    this.deps.deadLetters?.add({
      time: message.timestamp,
      ruleId,
      output,
      error,
      topic: message.topic,
      payload: message.payload,
      qos: message.qos,
      retain: message.retain,
      clientId: message.clientId,
    });
  }

  /**
   * A storage failure (disk full, read-only) is passed up so the message is not acknowledged
   * and the client resends; any other failure of one effect is a dead letter.
   */
  private effectFailed(effect: Effect, message: Message, err: unknown): Promise<void> | undefined {
    if (err instanceof StorageError && err.retryable) return Promise.reject(err);
    this.stats.effectErrors++;
    this.ruleFailed(effect.ruleId, message, describeError(err), effect.type);
    return undefined;
  }

  /** Waits for dispatched work and flushes sinks. */
  async close(): Promise<void> {
    await this.tail;
    for (const sink of this.sinks.values()) await sink.close?.();
  }
}

/** The input document for `rules`: without parsing the payload when none of them reads it. */
function inputFor(message: Message, rules: readonly CompiledRule[]): RuleInput {
  for (let i = 0; i < rules.length; i++) if (rules[i]!.rawOnly !== true) return toRuleInput(message);
  return toRawRuleInput(message);
}
