import type { Message, MessageProperties, QoS } from '../broker/types.js';

/**
 * The document every JSONata expression of a rule sees: the message as users think of it.
 * `payload` is the parsed JSON when the bytes parse, else the text; the original bytes stay
 * under a symbol key (unseen by JSONata) so an untransformed message is passed on byte for byte.
 */
export interface RuleInput {
  topic: string;
  levels: string[];
  payload: unknown;
  qos: QoS;
  retain: boolean;
  clientId: string;
  /** ms since the epoch, when the broker accepted the message. */
  timestamp: number;
  properties: RuleProperties;
  /** Rule hops that produced this message. */
  hops: number;
}

/** MQTT 5 properties as JSONata sees them (correlationData as text when it is UTF-8). */
export interface RuleProperties {
  userProperties?: Record<string, string | string[]>;
  contentType?: string;
  responseTopic?: string;
  correlationData?: string;
  messageExpiryInterval?: number;
  payloadFormatIndicator?: boolean;
}

const RAW = Symbol('raw');
const PROPERTIES = Symbol('properties');

type Tagged = RuleInput & { [RAW]?: Buffer; [PROPERTIES]?: MessageProperties };

/** Parses a payload: JSON when it parses, else UTF-8 text. */
export function parsePayload(payload: Buffer): unknown {
  const text = payload.toString('utf8');
  const first = text.charCodeAt(0);
  // Only attempt JSON for text that can start a JSON value; avoids a throw per plain-text message.
  if (first === 0x7b || first === 0x5b || first === 0x22 || first === 0x2d || (first >= 0x30 && first <= 0x39) || text === 'true' || text === 'false' || text === 'null') {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/** Builds the rule input document for a broker message. */
export function toRuleInput(message: Message): RuleInput {
  const input: Tagged = {
    topic: message.topic,
    levels: message.topic.split('/'),
    payload: parsePayload(message.payload),
    qos: message.qos,
    retain: message.retain,
    clientId: message.clientId,
    timestamp: message.timestamp,
    properties: toRuleProperties(message.properties),
    hops: message.hops,
    // Hot path: symbol keys in the literal, not Object.defineProperty (several times slower
    // per message). Symbol keys are invisible to JSONata, Object.keys and JSON.stringify.
    [RAW]: message.payload,
    // The original properties, so outputs pass on bytes (correlation data) JSONata only sees as text.
    [PROPERTIES]: message.properties,
  };
  return input;
}

/**
 * The input document for rules that never read the payload or the levels (`rawOnly`
 * compiled rules, such as a bridge's out mappings): the same fields, with `payload` and `levels` worked out only if
 * something asks (they live on the prototype, so JSONata must never see this document).
 */
class RawRuleInput {
  readonly [RAW]: Buffer;
  readonly [PROPERTIES]: MessageProperties | undefined;

  constructor(
    readonly topic: string,
    readonly qos: QoS,
    readonly retain: boolean,
    readonly clientId: string,
    readonly timestamp: number,
    readonly properties: RuleProperties,
    readonly hops: number,
    raw: Buffer,
    original: MessageProperties | undefined,
  ) {
    this[RAW] = raw;
    this[PROPERTIES] = original;
  }

  get payload(): unknown {
    return parsePayload(this[RAW]);
  }

  get levels(): string[] {
    return this.topic.split('/');
  }
}

/** Builds the input document for rules that all read only raw fields (see {@link RawRuleInput}). */
export function toRawRuleInput(message: Message): RuleInput {
  return new RawRuleInput(message.topic, message.qos, message.retain, message.clientId, message.timestamp, toRuleProperties(message.properties), message.hops, message.payload, message.properties);
}

function toRuleProperties(p: MessageProperties | undefined): RuleProperties {
  if (!p) return {};
  const out: RuleProperties = {};
  if (p.userProperties) out.userProperties = p.userProperties as Record<string, string | string[]>;
  if (p.contentType !== undefined) out.contentType = p.contentType;
  if (p.responseTopic !== undefined) out.responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) out.correlationData = p.correlationData.toString('utf8');
  if (p.messageExpiryInterval !== undefined) out.messageExpiryInterval = p.messageExpiryInterval;
  if (p.payloadFormatIndicator !== undefined) out.payloadFormatIndicator = p.payloadFormatIndicator;
  return out;
}

/** The input after a transform: same message, new payload. */
export function withPayload(input: RuleInput, payload: unknown): RuleInput {
  // The spread carries PROPERTIES over; RAW, the bytes of the old payload, must not be.
  return { ...input, payload, [RAW]: undefined } as Tagged;
}

/**
 * The bytes to send for the input's payload: the original bytes when no transform changed it
 * (no re-serialisation on the hot path), else strings as UTF-8 and anything else as JSON.
 */
export function payloadBytes(input: RuleInput): Buffer {
  const tagged = input as Tagged;
  if (tagged[RAW]) return tagged[RAW];
  // Encoded once per transform result, however many outputs send it (republish + history).
  const bytes = encodePayload(input.payload);
  tagged[RAW] = bytes;
  return bytes;
}

/** Encodes a JSONata result as a payload: strings as UTF-8, undefined as empty, anything else as JSON. */
export function encodePayload(value: unknown): Buffer {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value === undefined) return Buffer.alloc(0);
  if (Buffer.isBuffer(value)) return value;
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** The input's MQTT 5 properties back in broker form (correlation data as bytes); undefined when there are none. */
export function messageProperties(input: RuleInput): MessageProperties | undefined {
  const tagged = input as Tagged;
  if (PROPERTIES in tagged) return tagged[PROPERTIES];
  const p = input.properties;
  if (!p || Object.keys(p).length === 0) return undefined;
  const { correlationData, ...rest } = p;
  return correlationData === undefined ? rest : { ...rest, correlationData: Buffer.from(correlationData, 'utf8') };
}
