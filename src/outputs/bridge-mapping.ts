import { filtersOverlap } from '../rules/loops.js';
import { validateTopicFilter } from '../topics/validate.js';

/**
 * A topic remapping between two filters of the same shape, such as local `telemetry/#` and
 * remote `site-a/telemetry/#`: the literal levels before the first wildcard are replaced,
 * the rest of the topic is kept. Filters without wildcards map one topic to one topic.
 */
export interface TopicMapping {
  readonly from: string;
  readonly to: string;
  /** The topic on the `to` side for a topic matching `from`. */
  map(topic: string): string;
}

/** The literal levels of a filter before its first wildcard, and what follows. */
function split(filter: string): { prefix: string; rest: string } {
  const levels = filter.split('/');
  const first = levels.findIndex((l) => l === '+' || l === '#');
  if (first === -1) return { prefix: filter, rest: '' };
  return { prefix: levels.slice(0, first).join('/'), rest: levels.slice(first).join('/') };
}

/**
 * Compiles a mapping, or returns the reason it is invalid: both sides must be valid filters
 * and have the same wildcard levels after their literal prefixes (`a/+/x/#` ↔ `b/c/+/x/#`).
 */
export function compileMapping(from: string, to: string): TopicMapping | string {
  const bad = validateTopicFilter(from) ?? validateTopicFilter(to);
  if (bad) return bad;
  const a = split(from);
  const b = split(to);
  if (a.rest !== b.rest) return `"${from}" and "${to}" must have the same levels from the first wildcard on ("${a.rest}" vs "${b.rest}")`;
  if (a.rest === '') return { from, to, map: () => to };
  const fromPrefix = a.prefix;
  const toPrefix = b.prefix;
  return {
    from,
    to,
    map(topic: string): string {
      // `a/#` also matches `a` itself: the prefix alone maps to the prefix alone.
      if (topic.length === fromPrefix.length) return toPrefix;
      const tail = fromPrefix === '' ? topic : topic.slice(fromPrefix.length + 1);
      return toPrefix === '' ? tail : `${toPrefix}/${tail}`;
    },
  };
}

/**
 * True when an `in` mapping and an `out` mapping of one bridge would echo: a message coming
 * in lands on a local topic the out mapping sends back, to a remote topic the in mapping
 * subscribes to.
 */
export function mappingsEcho(inMapping: { remote: string; local: string }, outMapping: { local: string; remote: string }): boolean {
  return filtersOverlap(inMapping.local, outMapping.local) && filtersOverlap(inMapping.remote, outMapping.remote);
}
