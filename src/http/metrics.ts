import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { BrokerStats } from '../broker/context.js';
import { limitCounters, type LimitCounter } from '../broker/limits-log.js';
import type { ProcessorStats } from '../engine/processor.js';
import type { HistoryStats } from '../storage/history.js';
import type { LastValueStats } from './last-values.js';
import type { Handler } from './server.js';

/** What `/metrics` reads of one remote output (see `RemoteOutputs.status()`). */
export interface OutputMetricsSource {
  name: string;
  type: string;
  waiting: number;
  waitingBytes: number;
  delivered: number;
  retries: number;
  deadLettered: number;
  dropped: number;
  state: string;
}

/**
 * The counters `/metrics` reads, each at scrape time: nothing is counted on the message path
 * for metrics' sake.
 */
export interface MetricsSources {
  broker: { readonly stats: Readonly<BrokerStats>; readonly connectionCount: number };
  processor: { readonly stats: Readonly<ProcessorStats> };
  history: { readonly stats: Readonly<HistoryStats> };
  deadLetters: { count(): number; readonly droppedCount: number };
  outputs: { status(): readonly OutputMetricsSource[] };
  lastValues?: { readonly stats: Readonly<LastValueStats>; readonly size: number; readonly heldBytes: number };
}

/** Output drain states, each exported as a 0/1 series so a dashboard can graph them. */
const OUTPUT_STATES = ['idle', 'sending', 'backoff', 'stopped'] as const;

type Labels = Record<string, string>;

/** What a series reads when scraped: one value, or one per label set. */
type Reading = number | Array<[Labels, number]>;

function fill(reading: Reading, put: (labels: Labels, n: number) => void): void {
  if (typeof reading === 'number') put({}, reading);
  else for (const [labels, n] of reading) put(labels, n);
}

/**
 * Builds a Prometheus registry (a value: no global default registry) whose series are read
 * from `sources` when scraped, plus Node's process metrics (`process_*`, `nodejs_*`).
 */
export function createMetricsRegistry(sources: MetricsSources): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // Every series is read from its source when scraped: reset, then filled from `read`.
  const counter = (name: string, help: string, read: () => Reading, labelNames: string[] = []): void => {
    new Counter({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(read(), (labels, n) => this.inc(labels, n));
      },
    });
  };
  const gauge = (name: string, help: string, read: () => Reading, labelNames: string[] = []): void => {
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        this.reset();
        fill(read(), (labels, n) => this.set(labels, n));
      },
    });
  };
  const b = () => sources.broker.stats;
  const p = () => sources.processor.stats;
  const h = () => sources.history.stats;

  gauge('signalbox_connections', 'Open MQTT client connections.', () => sources.broker.connectionCount);
  counter('signalbox_connections_accepted_total', 'MQTT connections accepted (CONNACK success).', () => b().connectionsAccepted);
  counter('signalbox_connections_rejected_total', 'MQTT connections refused.', () => b().connectionsRejected);
  counter('signalbox_protocol_errors_total', 'Connections closed for a protocol error or malformed packet.', () => b().protocolErrors);
  counter('signalbox_messages_received_total', 'PUBLISH messages accepted from clients, bridges and rules (messages in).', () => b().messagesReceived);
  counter('signalbox_messages_delivered_total', 'Messages routed to subscribers (messages out, one per subscriber).', () => b().messagesRouted);
  counter('signalbox_messages_dropped_total', 'Messages not delivered to a subscriber, by reason.', () => [
    [{ reason: 'queue_full' }, b().droppedQueueFull],
    [{ reason: 'send_buffer' }, b().droppedSendBuffer],
    [{ reason: 'expired' }, b().droppedExpired],
    [{ reason: 'too_large' }, b().droppedTooLarge],
    [{ reason: 'denied' }, b().deliveriesDenied],
  ], ['reason']);
  counter('signalbox_limit_hits_total', 'Times a configured broker limit was hit, by the counter in broker.stats (see the README, Limits).', () =>
    (Object.keys(limitCounters()) as LimitCounter[]).map((limit): [Labels, number] => [{ limit }, b()[limit]]), ['limit']);
  counter('signalbox_auth_failures_total', 'CONNECTs refused for credentials, anonymous access, a will topic or a foreign session.', () => b().authFailures);
  counter('signalbox_acl_denied_total', 'Publishes and subscriptions the ACL refused.', () => [
    [{ action: 'publish' }, b().publishDenied],
    [{ action: 'subscribe' }, b().subscribeDenied],
  ], ['action']);
  counter('signalbox_publish_hook_errors_total', 'Messages whose rule work failed to be stored (not acknowledged).', () => b().publishHookErrors);

  counter('signalbox_rule_messages_total', 'Messages that matched at least one rule.', () => p().messagesMatched);
  counter('signalbox_rule_evaluations_total', 'Rule evaluations, by result: run (outputs planned), skipped (a when was false), error.', () => [
    [{ result: 'run' }, p().rulesRun],
    [{ result: 'skipped' }, p().rulesSkipped],
    [{ result: 'error' }, p().ruleErrors],
  ], ['result']);
  counter('signalbox_rule_errors_total', 'Rule failures for a message (each one a dead letter).', () => p().ruleErrors);
  counter('signalbox_output_effect_errors_total', 'Outputs that failed for a message (dead-lettered).', () => p().effectErrors);
  counter('signalbox_rule_hop_limit_drops_total', 'Messages not given to rules because they passed engine.maxHops.', () => p().hopLimitDrops);

  counter('signalbox_history_rows_written_total', 'History rows committed.', () => h().rowsWritten);
  counter('signalbox_history_commits_total', 'Commits that stored history rows.', () => h().commits);
  counter('signalbox_history_rows_deleted_total', 'History rows deleted, by reason: retention (history.retention) or max_rows (history.maxRows).', () => [
    [{ reason: 'retention' }, h().deletedByRetention],
    [{ reason: 'max_rows' }, h().deletedByCap],
  ], ['reason']);

  gauge('signalbox_dead_letters', 'Dead letters stored now.', () => sources.deadLetters.count());
  counter('signalbox_dead_letters_dropped_total', 'Dead letters deleted to stay within the dead-letter cap.', () => sources.deadLetters.droppedCount);

  // One status() call per scrape (all series are collected within the same millisecond or
  // two), shared by the output series.
  let outputs: readonly OutputMetricsSource[] = [];
  let readAt = Number.NEGATIVE_INFINITY;
  const statuses = (): readonly OutputMetricsSource[] => {
    const now = Date.now();
    if (now - readAt > 1) {
      outputs = sources.outputs.status();
      readAt = now;
    }
    return outputs;
  };
  const perOutput = (read: (o: OutputMetricsSource) => number) => () => statuses().map((o): [Labels, number] => [{ output: o.name, type: o.type }, read(o)]);
  gauge('signalbox_output_waiting', 'Messages waiting in an output\'s outbox.', perOutput((o) => o.waiting), ['output', 'type']);
  gauge('signalbox_output_waiting_bytes', 'Payload bytes waiting in an output\'s outbox.', perOutput((o) => o.waitingBytes), ['output', 'type']);
  counter('signalbox_output_delivered_total', 'Messages an output delivered (since start).', perOutput((o) => o.delivered), ['output', 'type']);
  counter('signalbox_output_retries_total', 'Batches an output retried after a transient failure.', perOutput((o) => o.retries), ['output', 'type']);
  counter('signalbox_output_dead_lettered_total', 'Messages an output refused for good (moved to the dead letters).', perOutput((o) => o.deadLettered), ['output', 'type']);
  counter('signalbox_output_dropped_total', 'Messages dropped from an outbox at its cap (overflow: drop-oldest).', perOutput((o) => o.dropped), ['output', 'type']);
  gauge('signalbox_output_state', 'The state of an output\'s drain: 1 for the current state, 0 for the others.', () =>
    statuses().flatMap((o) => OUTPUT_STATES.map((state): [Labels, number] => [{ output: o.name, type: o.type, state }, o.state === state ? 1 : 0])),
  ['output', 'type', 'state']);

  const lv = sources.lastValues;
  if (lv) {
    gauge('signalbox_last_values_topics', 'Topics in the last-value cache (GET /api/last).', () => lv.size);
    gauge('signalbox_last_values_bytes', 'Approximate bytes held by the last-value cache.', () => lv.heldBytes);
    counter('signalbox_last_values_evicted_total', 'Topics evicted from the last-value cache at its maxTopics or maxBytes.', () => lv.stats.evicted);
  }
  return registry;
}

/** `GET /metrics`: the registry in the Prometheus text format. */
export function metricsHandler(registry: Registry): Handler {
  return async () => ({ status: 200, text: await registry.metrics(), contentType: registry.contentType });
}
