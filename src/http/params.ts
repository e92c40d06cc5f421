import { validateTopicFilter } from '../topics/validate.js';
import { badParameter } from './errors.js';
import { parseTime, TIME_FORMS } from './time.js';

/**
 * The query's parameters as one value each. Throws a 400 naming the first parameter that is
 * not in `allowed` (SB_HTTP_UNKNOWN_PARAMETER) or is given twice (SB_HTTP_DUPLICATE_PARAMETER).
 */
export function readParams(query: URLSearchParams, allowed: readonly string[]): Map<string, string> {
  const params = new Map<string, string>();
  for (const [name, value] of query) {
    if (!allowed.includes(name)) throw badParameter('SB_HTTP_UNKNOWN_PARAMETER', name, `unknown parameter '${name}'; this endpoint takes ${allowed.join(', ')}`);
    if (params.has(name)) throw badParameter('SB_HTTP_DUPLICATE_PARAMETER', name, `parameter '${name}' is given more than once`);
    params.set(name, value);
  }
  return params;
}

/**
 * The required `filter`: an MQTT topic filter (`+` and `#` wildcards, no `$share/`), checked
 * like a subscription's.
 */
export function readFilter(params: Map<string, string>): string {
  const filter = params.get('filter');
  if (filter === undefined || filter === '') throw badParameter('SB_HTTP_MISSING_PARAMETER', 'filter', "parameter 'filter' is required: an MQTT topic filter such as sensors/+/temp or sensors/# (URL-encode + as %2B)");
  const problem = validateTopicFilter(filter);
  if (problem !== undefined) throw badParameter('SB_HTTP_BAD_FILTER', 'filter', `filter '${filter}' is not a valid MQTT topic filter: ${problem}`);
  // An unencoded '+' in a URL query arrives as a space; a level that is a lone space is that.
  if (filter.split('/').includes(' ')) {
    throw badParameter('SB_HTTP_BAD_FILTER', 'filter', `filter '${filter}' has a level that is a single space: in a URL query '+' means a space, so write the wildcard as %2B`);
  }
  return filter;
}

/** An optional time parameter (`from`, `to`), as ms since the epoch. */
export function readTime(params: Map<string, string>, name: string, now: number): number | undefined {
  const value = params.get(name);
  if (value === undefined) return undefined;
  const time = parseTime(value, now);
  if (typeof time === 'number') return time;
  throw badParameter('SB_HTTP_BAD_TIME', name, `'${name}' ${time.error}; accepted: ${TIME_FORMS}`);
}

/** The optional `limit`: a whole number from 1 to `max`, default `fallback`. */
export function readLimit(params: Map<string, string>, fallback: number, max: number): number {
  const value = params.get('limit');
  if (value === undefined) return fallback;
  const n = /^\d{1,9}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= max)) throw badParameter('SB_HTTP_BAD_LIMIT', 'limit', `'limit' must be a whole number from 1 to ${max}, got '${value}'`);
  return n;
}

/** The optional `order`: `desc` (newest first, the default) or `asc`. */
export function readOrder(params: Map<string, string>): 'asc' | 'desc' {
  const value = params.get('order');
  if (value === undefined || value === 'desc') return 'desc';
  if (value === 'asc') return 'asc';
  throw badParameter('SB_HTTP_BAD_ORDER', 'order', `'order' must be asc (oldest first) or desc (newest first, the default), got '${value}'`);
}
