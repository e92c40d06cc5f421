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
  /**
   * The topic on the `to` side for a topic matching `from`; undefined when there is none
   * (`x/#` → `#` maps `x` itself to the empty topic, which is not a topic).
   */
  map(topic: string): string | undefined;
}

/** The literal levels of a filter before its first wildcard (how many), and what follows. */
function split(filter: string): { prefix: string; levels: number; rest: string } {
  const levels = filter.split('/');
  const first = levels.findIndex((l) => l === '+' || l === '#');
  if (first === -1) return { prefix: filter, levels: levels.length, rest: '' };
  return { prefix: levels.slice(0, first).join('/'), levels: first, rest: levels.slice(first).join('/') };
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
  // Prefixes counted in levels: `/#` has one (empty) literal level, `#` has none.
  const fromLevels = a.levels;
  const fromPrefix = a.prefix;
  const toPrefix = b.levels === 0 ? undefined : b.prefix;
  return {
    from,
    to,
    map(topic: string): string | undefined {
      let tail: string | undefined;
      if (fromLevels === 0) tail = topic;
      else if (topic.length === fromPrefix.length) tail = undefined; // `a/#` also matches `a` itself
      else tail = topic.slice(fromPrefix.length + 1);
      if (tail === undefined) return toPrefix;
      const out = toPrefix === undefined ? tail : `${toPrefix}/${tail}`;
      return out === '' ? undefined : out;
    },
  };
}

/**
 * True when an `in` mapping and an `out` mapping of one bridge would echo: a message coming
 * in lands on a local topic the out mapping sends back, to a remote topic the in mapping
 * subscribes to. Computed on the filters; where the shapes do not line up it errs on the
 * side of reporting an echo.
 */
export function mappingsEcho(inMapping: { remote: string; local: string }, outMapping: { local: string; remote: string }): boolean {
  // Where remote messages land locally, and whether the out mapping takes them.
  const landed = inMapping.local;
  if (!filtersOverlap(landed, outMapping.local)) return false;
  const out = compileMapping(outMapping.local, outMapping.remote);
  const a = split(outMapping.local);
  if (typeof out !== 'string' && (a.levels === 0 || landed === a.prefix || landed.startsWith(`${a.prefix}/`))) {
    // The out mapping rewrites filters the way it rewrites topics.
    const sentBack = out.map(landed);
    return sentBack === undefined || filtersOverlap(sentBack, inMapping.remote);
  }
  return filtersOverlap(inMapping.remote, outMapping.remote);
}
