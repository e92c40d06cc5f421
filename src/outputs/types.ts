import type { z } from 'zod';
import type { MessageProperties, QoS } from '../broker/types.js';
import type { ExpressionLimits } from '../rules/expression.js';
import type { CompiledTemplate } from '../rules/template.js';
import type { RuleInput } from '../engine/message.js';
import type { PublishInput } from '../broker/broker.js';
import type { HistoryStore } from '../storage/history.js';
import type { Logger } from '../log.js';

/**
 * What one rule action decided to do with one message: a plain value, so `signalbox test`
 * and `signalbox trace` can show it without doing it, and the engine can execute it.
 */
export interface Effect {
  /** The output type (`republish`, `history`, ...). */
  readonly type: string;
  /** The named output from `outputs:` for remote outputs; undefined for built-in local ones. */
  readonly output?: string;
  readonly ruleId: string;
  readonly topic: string;
  readonly payload: Buffer;
  readonly qos: QoS;
  readonly retain: boolean;
  readonly properties?: MessageProperties;
  /**
   * Output-specific data the action planned (e.g. time-series points); stored as JSON in the
   * outbox. Plain JSON values only, never changed after planning: the drain may hand this very
   * object to the connector.
   */
  readonly data?: unknown;
  /** The message that caused it. */
  readonly source: { readonly clientId: string; readonly timestamp: number; readonly hops: number };
}

/** What an action's compile step may use. */
export interface CompileContext {
  readonly limits: ExpressionLimits;
  /** Named outputs from the config (`outputs:`), by name → type. */
  readonly namedOutputs: ReadonlyMap<string, string>;
  /** Their validated settings, by name, for actions that plan with them (a webhook's URL template). */
  readonly outputSettings?: ReadonlyMap<string, unknown>;
}

/** One compiled entry of a rule's `to:` list. */
export interface CompiledAction {
  readonly type: string;
  /** The local topic(s) this action republishes to, for the load-time loop check. */
  readonly republishTopic?: CompiledTemplate;
  /** Evaluates the action for one message (after the rule's steps). Pure: no side effects. */
  plan(input: RuleInput, ruleId: string): Promise<Effect[]> | Effect[];
}

/**
 * A problem in one action's settings, found at compile time; `path` is relative to the
 * action's settings object, so the loader can point at the line.
 */
export class ActionConfigError extends Error {
  constructor(
    message: string,
    readonly path: readonly (string | number)[] = [],
    readonly code: 'SB_RULE_EXPRESSION' | 'SB_RULE_OUTPUT' = 'SB_RULE_EXPRESSION',
    /** Character offset inside the string at `path`, for expression syntax errors. */
    readonly offset?: number,
  ) {
    super(message);
  }
}

/** Where effects go at run time. Each output type supplies one. */
export interface EffectSink {
  /**
   * Executes one effect. Resolves when it is done to the level the output promises (the
   * history row committed, the republished message stored and routed); the engine gates the
   * original message's PUBACK on it. Rejects with a retryable or permanent error.
   */
  execute(effect: Effect): Promise<void> | void;
  /** Finishes pending work (flushes batches) on shutdown. */
  close?(): Promise<void>;
}

/**
 * An output type: its `to:` key, the schema of its settings, how to compile them, and how
 * to build the sink that executes its effects. Registered explicitly in a registry value.
 */
export interface OutputType<S extends z.ZodType = z.ZodType> {
  readonly name: string;
  /** One line for `--help`-style listings and the README. */
  readonly description: string;
  readonly schema: S;
  compile(settings: z.output<S>, ctx: CompileContext): CompiledAction;
  createSink(deps: SinkDeps): EffectSink;
}

/** What sinks are built from: the running broker and storage. */
export interface SinkDeps {
  /** Publishes into the local broker as if from a client (rules see it too). */
  publish(input: PublishInput): Promise<void>;
  readonly history: HistoryStore | undefined;
  /** Queues an effect in its named output's durable outbox; resolves when committed. */
  readonly outbox?: { enqueue(effect: Effect): Promise<void> };
  readonly log: Logger;
}
