// The rules job: N publishers on sensors/<i>/temp → a JSONata rule → republish to
// out/<id>/temp → one subscriber on out/+/temp. The same throughput and steady-rate phases as
// the broker benchmark (broker-throughput.js, broker-latency.js), with the rules job's topics
// and JSON payloads, against:
//   signalbox   the whole engine from a project folder (servers/signalbox-rules.js), in variants
//   aedes       Aedes 1.2 + the same JSONata expression in a `published` hook (servers/aedes-rules.js)
import { runSteadyRate } from './broker-latency.js';
import { runThroughput } from './broker-throughput.js';
import { OUTPUT_FILTER, decodeRulesOutput, inputTopic, jsonPayload } from './rules-spec.js';

/** Child kind of each contender in the rules job. */
const KINDS = { signalbox: 'signalbox-rules', aedes: 'aedes-rules' };

/**
 * What the load generator needs to speak the rules job (see clients.js); and a quiet
 * subscriber is waited for while the broker still makes progress (under a QoS 0 flood
 * signalbox can deliver nothing for seconds while it works, see README "Longest delivery gap").
 */
const RULES_LOAD = { filter: OUTPUT_FILTER, topicOf: inputTopic, format: jsonPayload, decode: decodeRulesOutput, waitWhileBusy: true };

/**
 * signalbox variants, each started in its own fresh child:
 *   base     the bench rule + fillers (BENCH_RULES_FEW rules in all)                      (a)
 *   scale    the bench rule + fillers (BENCH_RULES_MANY rules in all)                     (b)
 *   history  base, with `- history: {}` after the republish (storage.durability: normal)  (c)
 */
function variants(options) {
  return {
    base: { fillerRules: options.rulesFew - 1, history: false },
    scale: { fillerRules: options.rulesMany - 1, history: false },
    history: { fillerRules: options.rulesFew - 1, history: true },
  };
}

/**
 * The rules job's steps, in run order: for each QoS the base case of each contender back to
 * back, then signalbox's variants, so machine noise drifts over all of them alike. Returns
 * `{ job, contender, kind, phase, startOptions, run }` like the broker steps.
 */
export function planRules(options) {
  const wanted = (phase) => options.phases.includes(phase);
  const sb = options.brokers.includes('signalbox');
  const ae = options.brokers.includes('aedes');
  const v = variants(options);
  const steps = [];
  const add = (contender, phase, startOptions, run) =>
    steps.push({ job: 'rules', contender, kind: KINDS[contender], phase, startOptions, run, startTimeoutMs: options.phaseTimeoutMs });

  for (const qos of [0, 1]) {
    const messages = qos === 0 ? options.rulesQos0Messages : options.rulesQos1Messages;
    const run = (broker) =>
      runThroughput(broker, { ...options, ...RULES_LOAD, qos, messages, warmupMessages: options.rulesWarmupMessages, timeoutMs: options.phaseTimeoutMs });
    // The variants are reported against signalbox's base case, so it runs whenever they do.
    const base = wanted('rules-throughput') || (sb && (wanted('rules-scale') || wanted('rules-history')));
    if (base && sb) add('signalbox', `qos${qos}`, v.base, run);
    if (wanted('rules-throughput') && ae) add('aedes', `qos${qos}`, undefined, run);
    if (wanted('rules-scale') && sb) add('signalbox', `scaleQos${qos}`, v.scale, run);
    if (wanted('rules-history') && sb) add('signalbox', `historyQos${qos}`, v.history, run);
  }
  if (wanted('rules-puback')) {
    // Steady rate at QoS 1: publish → PUBACK at the publishers (and → delivery at the subscriber).
    const run = (broker) => runSteadyRate(broker, { ...options, ...RULES_LOAD, qos: 1, timeoutMs: options.phaseTimeoutMs });
    if (sb) add('signalbox', 'puback', v.history, run);
    if (ae) add('aedes', 'puback', undefined, run);
  }
  return steps;
}

/** The settings of the rules job, for the JSON (what the figures were measured with). */
export function rulesSettings(options) {
  return {
    publishers: options.publishers,
    qos0Messages: options.rulesQos0Messages,
    qos1Messages: options.rulesQos1Messages,
    warmupMessages: options.rulesWarmupMessages,
    rounds: options.rounds,
    window: options.window,
    batch: options.batch,
    rate: options.rate,
    rateSeconds: options.rateSeconds,
    variants: variants(options),
  };
}
