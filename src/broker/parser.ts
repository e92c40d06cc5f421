import type mqttPacket from 'mqtt-packet';
import { RC } from './reason-codes.js';

/** The parts of mqtt-packet's Parser we reach into; its typings do not declare them. */
interface ParserInternals {
  packet: { length: number };
  error: Error | null;
  _list: { length: number; toString(enc: string, start: number, end: number): string; slice(start: number, end: number): Buffer };
  _pos: number;
  _parseNum(): number;
  _parseString(): string | null;
  _emitError(err: Error): void;
}

/** A parse failure that maps to a specific MQTT 5 reason code. */
export class PacketError extends Error {
  constructor(message: string, readonly reasonCode: number) {
    super(message);
  }
}

// ignoreBOM: a leading U+FEFF is part of the string, never stripped [MQTT-1.5.4-3].
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Makes mqtt-packet's parser (used for every packet but PUBLISH) insist on well-formed UTF-8
 * without U+0000 in every string [MQTT-1.5.4-1, MQTT-1.5.4-2].
 */
export function hardenParser(parser: ReturnType<typeof mqttPacket.parser>): void {
  const p = parser as unknown as ParserInternals;
  p._parseString = function (this: ParserInternals) {
    const length = this._parseNum();
    const end = length + this._pos;
    if (length === -1 || end > this._list.length || end > this.packet.length) return null;
    const result = this._list.toString('utf8', this._pos, end);
    // Fast path: a string decoded without replacement characters was valid UTF-8; only the
    // rare string containing U+FFFD is decoded again strictly.
    if (result.includes('\uFFFD')) {
      try {
        utf8.decode(this._list.slice(this._pos, end));
      } catch {
        this._emitError(new PacketError('string is not valid UTF-8', RC.malformedPacket));
        return null;
      }
    }
    if (result.includes('\u0000')) {
      this._emitError(new PacketError('string contains U+0000', RC.malformedPacket));
      return null;
    }
    this._pos += length;
    return result;
  };
}
