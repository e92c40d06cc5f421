/**
 * InfluxDB line protocol for planned points: `measurement,tag=v field=1,n=2i,s="x" <time>`.
 * Escaping is the InfluxDB client library's own; the connector calls this for every point it
 * writes, so each part is first tested with one regular expression and only strings that
 * need it go through the (per-character) escaper.
 */
import { escape } from '@influxdata/influxdb-client';
import { MAX_TIME_MS, type FieldValue, type InfluxPoint } from './influx-points.js';

/** Timestamp precisions of the InfluxDB write API. */
export const PRECISIONS = ['ns', 'us', 'ms', 's'] as const;
/** The `precision` of an influx output: the unit of the timestamps it writes. */
export type Precision = (typeof PRECISIONS)[number];

const MEASUREMENT_SPECIAL = /[, \n\r\t]/;
const KEY_SPECIAL = /[, =\n\r\t]/;
const STRING_SPECIAL = /["\\]/;

function measurementText(name: string): string {
  return MEASUREMENT_SPECIAL.test(name) ? escape.measurement(name) : name;
}

function keyText(name: string): string {
  return KEY_SPECIAL.test(name) ? escape.tag(name) : name;
}

function fieldText(value: FieldValue, integer: boolean): string {
  if (typeof value === 'number') return integer ? `${value}i` : String(value);
  if (typeof value === 'boolean') return value ? 'true' : 'false';
  return STRING_SPECIAL.test(value) ? escape.quoted(value) : `"${value}"`;
}

/**
 * The timestamp of `ms` (ms since the epoch, maybe fractional) in `precision` units, as
 * line protocol text. Seconds are truncated; finer units are rounded to the nearest unit, so
 * `payload.ts * 1000` landing a hair below a whole ms still means that ms. Nanoseconds go
 * through BigInt: they pass 2^53 today.
 */
export function timestampText(ms: number, precision: Precision): string {
  switch (precision) {
    case 's':
      return String(Math.floor(ms / 1000));
    case 'ms':
      return String(Math.round(ms));
    case 'us':
      return String(Math.round(ms * 1000));
    case 'ns': {
      const whole = Math.floor(ms);
      const nanos = Math.round((ms - whole) * 1e6);
      return (BigInt(whole) * 1_000_000n + BigInt(nanos)).toString();
    }
  }
}

/**
 * Why `data` (an outbox row's planned points) cannot be written, or undefined when it is an
 * array of well-formed points. Checks the shape only: the values were checked when planned.
 * Rows come from the database, which a replay or an older signalbox may have filled.
 */
export function malformedPoints(data: unknown): string | undefined {
  if (!Array.isArray(data)) return `its data is ${data === undefined ? 'missing' : 'not a list of points'}`;
  // Hot path (every point the drain writes): plain loops, no arrays of entries.
  for (let i = 0; i < data.length; i++) {
    const p = data[i] as Partial<InfluxPoint> | null;
    if (p === null || typeof p !== 'object') return `point ${i} is not an object`;
    if (typeof p.measurement !== 'string' || p.measurement === '') return `point ${i} has no measurement`;
    if (typeof p.time !== 'number' || !Number.isFinite(p.time) || Math.abs(p.time) > MAX_TIME_MS) return `point ${i} has no valid time`;
    const fields = p.fields;
    if (fields === null || typeof fields !== 'object') return `point ${i} has no fields`;
    let any = false;
    for (const k in fields) {
      const v = fields[k];
      if (typeof v === 'number' ? !Number.isFinite(v) : typeof v !== 'boolean' && typeof v !== 'string') return `point ${i} field "${k}" is not a number, boolean or string`;
      any = true;
    }
    if (!any) return `point ${i} has no fields`;
  }
  return undefined;
}

/**
 * One line of line protocol for `point`. Tags are sorted by key, as InfluxDB recommends
 * (it sorts them itself otherwise). Hot path: one string built by concatenation.
 */
export function toLine(point: InfluxPoint, precision: Precision): string {
  let line = measurementText(point.measurement);
  const tags = point.tags;
  if (tags !== undefined) {
    const keys = Object.keys(tags);
    if (keys.length > 1) keys.sort();
    for (const k of keys) line += `,${keyText(k)}=${keyText(tags[k]!)}`;
  }
  const integers = point.integers;
  let sep = ' ';
  for (const k in point.fields) {
    line += `${sep}${keyText(k)}=${fieldText(point.fields[k]!, integers !== undefined && integers.includes(k))}`;
    sep = ',';
  }
  return `${line} ${timestampText(point.time, precision)}`;
}
