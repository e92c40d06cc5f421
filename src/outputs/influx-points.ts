/**
 * Time-series points as an `influx` rule action plans them: plain JSON values, stored in the
 * outbox row's `data` and serialised to line protocol only when the output writes them.
 *
 * Field types. JSON cannot tell 20 from 20.0, so a number is a float unless the action says
 * otherwise, as Telegraf does: a field that is sometimes 20 and sometimes 20.5 then never
 * hits InfluxDB's field type conflict. A field can name its type (`type: integer`); booleans
 * and strings are written as themselves.
 */

/** The field types of line protocol that signalbox writes. */
export const FIELD_TYPES = ['float', 'integer', 'boolean', 'string'] as const;
/** A field's `type:` in an influx action. */
export type FieldType = (typeof FIELD_TYPES)[number];

/** A value of a field as stored in a point: integers are numbers listed in `integers`. */
export type FieldValue = number | boolean | string;

/** One point, as planned by the rule action and kept (as JSON) in the outbox. */
export interface InfluxPoint {
  readonly measurement: string;
  /** Tag key → value; absent when the point has no tags. */
  readonly tags?: Readonly<Record<string, string>>;
  readonly fields: Readonly<Record<string, FieldValue>>;
  /** Names of the number fields written as integers (`20i`); absent when none. */
  readonly integers?: readonly string[];
  /** Milliseconds since the epoch; may carry a fraction for us/ns precision. */
  readonly time: number;
}

/**
 * Largest |time| in ms a point may have: line protocol timestamps are signed 64-bit
 * nanoseconds, so about ±292 years around 1970.
 */
export const MAX_TIME_MS = 9_223_372_036_854;

/** The code of a point a rule could not build; documented in the README. */
export const POINT_ERROR_CODE = 'SB_ERR_INFLUX_POINT';

/**
 * A point the `influx` action could not build for one message (no fields, a value of the
 * wrong type, a non-finite number, a bad measurement or timestamp). Thrown while the rule
 * plans, so the message goes to the dead letters for that rule; never retryable.
 */
export class PointError extends Error {
  override readonly name = 'PointError';
  readonly code = POINT_ERROR_CODE;
  readonly retryable = false;
  constructor(
    readonly ruleId: string,
    /** The setting at fault: `measurement`, `timestamp`, `fields`, `fields.<name>`, `tags.<name>`. */
    readonly setting: string,
    detail: string,
  ) {
    super(`rule "${ruleId}": influx ${setting}: ${detail}`);
  }
}

/** Short text for a value in an error message. */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  if (typeof value === 'object') return 'an object';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  return String(value);
}

/**
 * Turns an expression's value into a field value of `type` (or, with no type, the type the
 * value implies). Returns undefined for a missing value (undefined, null), which leaves the
 * field out; throws a PointError for a value that cannot be that type.
 */
export function toFieldValue(value: unknown, type: FieldType | undefined, ruleId: string, setting: string): FieldValue | undefined {
  if (value === undefined || value === null) return undefined;
  switch (type) {
    case undefined:
      if (typeof value === 'number') return finite(value, ruleId, setting);
      if (typeof value === 'boolean' || typeof value === 'string') return value;
      throw new PointError(ruleId, setting, `is ${describeValue(value)}; a field must be a number, boolean or string`);
    case 'float':
      if (typeof value === 'number') return finite(value, ruleId, setting);
      throw new PointError(ruleId, setting, `must be a number (type: float), got ${describeValue(value)}`);
    case 'integer':
      if (typeof value === 'number' && Number.isSafeInteger(value)) return value;
      throw new PointError(ruleId, setting, `must be a whole number within ±2^53 (type: integer), got ${describeValue(value)}`);
    case 'boolean':
      if (typeof value === 'boolean') return value;
      throw new PointError(ruleId, setting, `must be true or false (type: boolean), got ${describeValue(value)}`);
    case 'string':
      if (typeof value === 'string') return value;
      if (typeof value === 'number' || typeof value === 'boolean') return String(value);
      throw new PointError(ruleId, setting, `must be a string, number or boolean (type: string), got ${describeValue(value)}`);
  }
}

function finite(value: number, ruleId: string, setting: string): number {
  if (Number.isFinite(value)) return value;
  throw new PointError(ruleId, setting, `is ${value}; line protocol has no NaN or infinity`);
}

/** A tag value: strings as they are, numbers and booleans as text; undefined (tag left out) for missing or empty. */
export function toTagValue(value: unknown, ruleId: string, setting: string): string | undefined {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value === 'string') return value;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  throw new PointError(ruleId, setting, `is ${describeValue(value)}; a tag must be a string, number or boolean`);
}

/**
 * Why `name` cannot be a measurement, tag key or field key, or undefined when it can.
 * InfluxDB reserves names starting with `_` and the key `time`; line protocol cannot carry
 * line breaks.
 */
export function badName(name: string, what: 'measurement' | 'key'): string | undefined {
  if (name === '') return 'is empty';
  if (name.startsWith('_')) return `"${name}" starts with "_", which InfluxDB reserves`;
  if (/[\n\r]/.test(name)) return `${JSON.stringify(name)} contains a line break`;
  if (what === 'key' && name === 'time') return '"time" is reserved by InfluxDB';
  return undefined;
}

/** A timestamp expression's value in ms: a number is ms since the epoch, a string an RFC 3339 date. */
export function toTime(value: unknown, ruleId: string): number {
  let ms: number;
  if (typeof value === 'number') ms = value;
  else if (typeof value === 'string') ms = Date.parse(value);
  else throw new PointError(ruleId, 'timestamp', `must be ms since the epoch or an RFC 3339 date, got ${describeValue(value)}`);
  if (!Number.isFinite(ms)) throw new PointError(ruleId, 'timestamp', `must be ms since the epoch or an RFC 3339 date, got ${describeValue(value)}`);
  if (Math.abs(ms) > MAX_TIME_MS) throw new PointError(ruleId, 'timestamp', `${ms} ms is outside the years 1677-2262 that line protocol can carry`);
  return ms;
}
