// The rules job, defined once for both contenders: the topics, the JSONata transform, the
// rule files signalbox loads, and the JSON payloads the load generator writes and reads.
import { performance } from 'node:perf_hooks';

/** Publisher `i` publishes on `sensors/<i>/temp`; the rule listens on this filter. */
export const INPUT_FILTER = 'sensors/+/temp';
/** The subscriber's filter: where the rule republishes. */
export const OUTPUT_FILTER = 'out/+/temp';
export const inputTopic = (i) => `sensors/${i}/temp`;
/** The rule's transform, evaluated by signalbox's rule engine and by the Aedes peer alike. */
export const TRANSFORM = '{"id": levels[1], "c": payload.value, "f": payload.value*9/5+32, "ts": payload.ts}';
/** signalbox's republish topic template (the peer builds the same topic by concatenation). */
export const OUTPUT_TOPIC = 'out/${payload.id}/temp';
export const RULE_ID = 'bench-temperature';

/**
 * Broker limits for the rules job. Aedes queues without bound; with signalbox's defaults
 * (maxInflight 100, maxQueued 1000 per client) a subscriber slower than four flooding
 * publishers gets its oldest queued messages dropped by design, and its QoS 0 messages once
 * 4 MiB wait in its send buffer (maxSendBufferBytes). Raised so both sides run without
 * drops and throughput compares like with like.
 */
export const RULES_LIMITS = { maxInflight: 65_535, maxQueued: 1_000_000, maxSendBufferBytes: '1GiB' };

/** Rules per file: the loader refuses files over 1 MiB, and 10,000 rules do not fit in one. */
const RULES_PER_FILE = 1_000;

/**
 * A filler rule's filter: distinct for every k and matching no bench topic. Half share the
 * `sensors/` first level with the bench topics (and, for small k, the `sensors/<i>/` prefix),
 * so the topic trie walk really passes through them; half sit under `other/`.
 */
export function fillerFilter(k) {
  return k % 2 === 0 ? `other/${k}/#` : `sensors/${k}/humidity`;
}

/**
 * The rule files of one signalbox variant: the bench rule (republish, plus `history` when
 * asked) and `fillerRules` rules that never match a bench topic.
 * @param {{ fillerRules: number, history: boolean }} variant
 * @returns {Record<string, string>} file name → YAML text
 */
export function ruleFiles({ fillerRules, history }) {
  const to = [`      - republish: { topic: "${OUTPUT_TOPIC}" }`];
  if (history) to.push('      - history: {}');
  const files = {
    'bench.yaml': [
      'rules:',
      `  - id: ${RULE_ID}`,
      `    on: ${INPUT_FILTER}`,
      `    transform: '${TRANSFORM}'`,
      '    to:',
      ...to,
      '',
    ].join('\n'),
  };
  for (let start = 0; start < fillerRules; start += RULES_PER_FILE) {
    const lines = ['rules:'];
    for (let k = start; k < Math.min(fillerRules, start + RULES_PER_FILE); k++) {
      lines.push(`  - { id: filler-${k}, on: "${fillerFilter(k)}", to: [{ republish: { topic: "filler-out/${k}" } }] }`);
    }
    files[`filler-${String(start / RULES_PER_FILE).padStart(3, '0')}.yaml`] = `${lines.join('\n')}\n`;
  }
  return files;
}

// Payload in: `{"value":<10>,"ts":<18>}`, numbers right-aligned in fixed-width fields padded
// with spaces (JSON allows whitespace before a number; leading zeros it does not). `value` is
// the publisher's sequence number, `ts` the send time in ms since the epoch with µs decimals.
const HEAD = '{"value":';
const MID = ',"ts":';
const VALUE_WIDTH = 10;
const TS_WIDTH = 18;
const VALUE_END = HEAD.length + VALUE_WIDTH;
const TS_END = VALUE_END + MID.length + TS_WIDTH;

/** The payload format the rules job publishes: a template and a stamp (load.js Publisher `format`). */
export const jsonPayload = {
  template: Buffer.from(`${HEAD}${' '.repeat(VALUE_WIDTH)}${MID}${' '.repeat(TS_WIDTH)}}`),
  /**
   * Hot path: writes the digits straight into the packet, no string per message.
   * @param {Buffer} buf @param {number} p payload offset @param {number} now performance.now()
   * @param {number} _index publisher (carried by the topic) @param {number} seq
   */
  stamp(buf, p, now, _index, seq) {
    writeDigits(buf, p + VALUE_END, seq, VALUE_WIDTH);
    const us = Math.round((performance.timeOrigin + now) * 1000);
    const ms = Math.floor(us / 1000);
    let frac = us - ms * 1000;
    const end = p + TS_END;
    for (let i = 1; i <= 3; i++, frac = Math.floor(frac / 10)) buf[end - i] = 48 + (frac % 10);
    buf[end - 4] = 0x2e; // '.'
    writeDigits(buf, end - 4, ms, TS_WIDTH - 4);
  },
};

/** Writes `n` right-aligned so it ends just before `end`, spaces in front, in `width` bytes. */
function writeDigits(buf, end, n, width) {
  let p = end;
  do {
    buf[--p] = 48 + (n % 10);
    n = Math.floor(n / 10);
  } while (n > 0 && p > end - width);
  while (p > end - width) buf[--p] = 0x20;
}

/**
 * Reads one delivered message of the rules job (load.js Subscriber `decode`): the rule's
 * output `{"id", "c", "f", "ts"}` on `out/<id>/temp`. Fills `out` with [sent at
 * (performance.now() time), publisher, sequence]; false when the message is not what the rule
 * should have produced (wrong topic, wrong Fahrenheit, not JSON), which the subscriber counts.
 * @param {{ topic: string, payload: Buffer }} packet
 * @param {Float64Array} out
 */
export function decodeRulesOutput(packet, out) {
  let doc;
  try {
    doc = JSON.parse(packet.payload.toString());
  } catch {
    return false;
  }
  const pub = Number(doc.id);
  if (typeof doc.c !== 'number' || doc.f !== (doc.c * 9) / 5 + 32 || typeof doc.ts !== 'number' || packet.topic !== `out/${doc.id}/temp`) return false;
  out[0] = doc.ts - performance.timeOrigin;
  out[1] = pub;
  out[2] = doc.c;
  return true;
}
