// Benchmark settings: defaults, each overridable by an environment variable.

/** Phase names that stand for several phases. */
export const PHASE_GROUPS = {
  broker: ['throughput', 'latency', 'idle'],
  rules: ['rules-throughput', 'rules-scale', 'rules-history', 'rules-puback'],
  bridge: ['bridge'],
  tls: ['tls'],
  auth: ['auth'],
  influx: ['influx'],
  history: ['history'],
};
const ALL_PHASES = Object.values(PHASE_GROUPS).flat();

/** Every knob, its environment variable, default and meaning (printed by `node bench/run.js --help`). */
export const OPTIONS = [
  ['brokers', 'BENCH_BROKERS', 'aedes,signalbox', 'brokers to measure, comma-separated (aedes, signalbox; in the rules job aedes is the Aedes + JSONata peer)'],
  ['phases', 'BENCH_PHASES', 'broker,rules,bridge,history,influx,tls,auth', `phases to run, comma-separated: ${Object.keys(PHASE_GROUPS).map((g) => `${g} (= ${PHASE_GROUPS[g].join(', ')})`).join(', ')}, or single phases`],
  ['ceiling', 'BENCH_CEILING', 1, '1 = also run the throughput load against the null broker (load generator ceiling)'],
  ['publishers', 'BENCH_PUBLISHERS', 4, 'publishing connections, each on its own topic'],
  ['qos0Messages', 'BENCH_QOS0_MESSAGES', 100_000, 'messages in the QoS 0 throughput run'],
  ['qos1Messages', 'BENCH_QOS1_MESSAGES', 50_000, 'messages in the QoS 1 throughput run'],
  ['rounds', 'BENCH_ROUNDS', 3, 'measured throughput rounds per broker and QoS; the median is reported'],
  ['warmupMessages', 'BENCH_WARMUP_MESSAGES', 10_000, 'messages sent (and not measured) before each throughput run'],
  ['payloadBytes', 'BENCH_PAYLOAD_BYTES', 64, 'payload size, bytes (at least 14)'],
  ['window', 'BENCH_WINDOW', 100, 'QoS 1: unacked messages each publisher may have in flight'],
  ['batch', 'BENCH_BATCH', 64, 'QoS 0 throughput: PUBLISH packets per socket write'],
  ['rate', 'BENCH_RATE', 5_000, 'latency phase: messages per second, all publishers together'],
  ['rateSeconds', 'BENCH_RATE_SECONDS', 5, 'latency phase: measured seconds per QoS'],
  ['rateWarmupSeconds', 'BENCH_RATE_WARMUP_SECONDS', 1, 'latency phase: unmeasured seconds first'],
  ['idleConnections', 'BENCH_IDLE_CONNECTIONS', 10_000, 'idle phase: connections to open'],
  ['idleConcurrency', 'BENCH_IDLE_CONCURRENCY', 100, 'idle phase: CONNECTs in flight at once'],
  ['idleKeepaliveS', 'BENCH_IDLE_KEEPALIVE_S', 600, 'idle phase: keepalive the clients ask for, seconds'],
  ['authUncachedConnections', 'BENCH_AUTH_UNCACHED_CONNECTIONS', 300, 'auth phase: authenticated connections opened with the credential cache off (one scrypt each); the cached run opens BENCH_IDLE_CONNECTIONS'],
  ['phaseTimeoutMs', 'BENCH_PHASE_TIMEOUT_MS', 40_000, 'a phase against one broker fails after this long (rules job: also the longest a broker may take to start)'],
  ['rulesQos0Messages', 'BENCH_RULES_QOS0_MESSAGES', 20_000, 'rules job: messages per measured QoS 0 round'],
  ['rulesQos1Messages', 'BENCH_RULES_QOS1_MESSAGES', 20_000, 'rules job: messages per measured QoS 1 round'],
  ['rulesWarmupMessages', 'BENCH_RULES_WARMUP_MESSAGES', 10_000, 'rules job: messages sent (and not measured) before the rounds'],
  ['rulesFew', 'BENCH_RULES_FEW', 10, 'rules job: rules loaded in the base case (the bench rule + fillers that never match)'],
  ['rulesMany', 'BENCH_RULES_MANY', 10_000, 'rules job, rules-scale: rules loaded (the bench rule + fillers)'],
  ['bridgeContenders', 'BENCH_BRIDGE_CONTENDERS', 'signalbox,mosquitto', 'bridge job: bridges to measure, comma-separated (signalbox, mosquitto); BENCH_CEILING=1 adds a run without a bridge'],
  ['bridgeMessages', 'BENCH_BRIDGE_MESSAGES', 100_000, 'bridge job: QoS 1 messages per measured round'],
  ['bridgeWarmupMessages', 'BENCH_BRIDGE_WARMUP_MESSAGES', 20_000, 'bridge job: messages sent (and not measured) before the rounds'],
  ['bridgeRate', 'BENCH_BRIDGE_RATE', 2_000, 'bridge job, steady latency: messages per second, all publishers together'],
  ['influxMessages', 'BENCH_INFLUX_MESSAGES', 100_000, 'influx job: QoS 1 messages (one point each) per measured round'],
  ['influxWarmupMessages', 'BENCH_INFLUX_WARMUP_MESSAGES', 20_000, 'influx job: messages sent (and not measured) before the rounds'],
  ['historyMessages', 'BENCH_HISTORY_MESSAGES', 100_000, 'history job: QoS 1 messages (= history rows) per measured round'],
  ['historyWarmupMessages', 'BENCH_HISTORY_WARMUP_MESSAGES', 20_000, 'history job: messages sent (and not measured) before the rounds'],
  ['historyWindow', 'BENCH_HISTORY_WINDOW', 500, 'history job: unacked messages each publisher may have in flight'],
];


/**
 * Reads the settings from `env`; collects every bad value and throws once, naming them all.
 * @param {NodeJS.ProcessEnv} env
 */
export function readOptions(env) {
  const options = {};
  const problems = [];
  for (const [key, name, fallback] of OPTIONS) {
    const raw = env[name];
    if (raw === undefined || raw === '') {
      options[key] = fallback;
    } else if (typeof fallback === 'number') {
      const n = Number(raw.replaceAll('_', ''));
      if (!Number.isFinite(n) || n < 0) problems.push(`${name} must be a non-negative number, got ${JSON.stringify(raw)}`);
      else options[key] = n;
    } else {
      options[key] = raw;
    }
  }
  for (const key of ['brokers', 'phases']) options[key] = String(options[key]).split(',').map((s) => s.trim()).filter(Boolean);
  options.phases = [...new Set(options.phases.flatMap((p) => PHASE_GROUPS[p] ?? [p]))];
  const unknownBroker = options.brokers.filter((b) => !['aedes', 'signalbox'].includes(b));
  if (unknownBroker.length) problems.push(`BENCH_BROKERS: unknown ${unknownBroker.join(', ')}; accepted: aedes, signalbox`);
  const unknownPhase = options.phases.filter((p) => !ALL_PHASES.includes(p));
  if (unknownPhase.length) problems.push(`BENCH_PHASES: unknown ${unknownPhase.join(', ')}; accepted: ${[...Object.keys(PHASE_GROUPS), ...ALL_PHASES].join(', ')}`);
  if (options.rulesFew < 1 || options.rulesMany < 1) problems.push('BENCH_RULES_FEW and BENCH_RULES_MANY must be at least 1 (the bench rule itself)');
  if (options.payloadBytes < 14) problems.push(`BENCH_PAYLOAD_BYTES must be at least 14 (timestamp, publisher, sequence), got ${options.payloadBytes}`);
  if (options.publishers < 1 || options.publishers > 1000) problems.push(`BENCH_PUBLISHERS must be 1..1000, got ${options.publishers}`);
  if (options.window < 1 || options.window > 65_535) problems.push(`BENCH_WINDOW must be 1..65535, got ${options.window}`);
  if (options.idleConnections > 18_000) problems.push(`BENCH_IDLE_CONNECTIONS must be at most 18000 (fd limit 20000 per process), got ${options.idleConnections}`);
  if (problems.length) throw new Error(`bad benchmark settings:\n  ${problems.join('\n  ')}`);
  return options;
}
