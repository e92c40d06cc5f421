import { TextDecoder } from 'node:util';

/** How a payload is written in JSON: parsed JSON, UTF-8 text, or base64 for other bytes. */
export type PayloadEncoding = 'json' | 'utf8' | 'base64';

/**
 * A stored payload as JSON can carry it, as `signalbox history --json` prints it: the parsed
 * value when the bytes are JSON, the text when they are UTF-8, else base64; `payloadEncoding`
 * says which.
 */
export function describePayload(payload: Buffer, decoder: TextDecoder = new TextDecoder('utf-8', { fatal: true })): { payload: unknown; payloadEncoding: PayloadEncoding } {
  let text: string;
  try {
    text = decoder.decode(payload);
  } catch {
    return { payload: payload.toString('base64'), payloadEncoding: 'base64' };
  }
  try {
    return { payload: JSON.parse(text) as unknown, payloadEncoding: 'json' };
  } catch {
    return { payload: text, payloadEncoding: 'utf8' };
  }
}

/** A stored message as the HTTP API answers it. */
export interface MessageJson {
  topic: string;
  /** ISO 8601, UTC. */
  time: string;
  /** ms since the epoch. */
  timeMs: number;
  qos: 0 | 1 | 2;
  retain: boolean;
  ruleId: string;
  clientId: string;
  payload: unknown;
  payloadEncoding: PayloadEncoding;
}

/** Turns a stored row into {@link MessageJson}. */
export function messageJson(row: { time: number; topic: string; payload: Buffer; qos: 0 | 1 | 2; retain: boolean; ruleId: string; clientId: string }, decoder?: TextDecoder): MessageJson {
  const { payload, payloadEncoding } = describePayload(row.payload, decoder);
  return { topic: row.topic, time: new Date(row.time).toISOString(), timeMs: row.time, qos: row.qos, retain: row.retain, ruleId: row.ruleId, clientId: row.clientId, payload, payloadEncoding };
}
