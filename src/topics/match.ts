/**
 * Matching one topic name against one topic filter (MQTT 3.1.1 / 5.0 section 4.7).
 *
 * Hot path: called for every (message, filter) pair the rule router checks. It walks both
 * strings by index with `charCodeAt`: no split, no regex, no closure, no allocation.
 * To match one topic against many filters, use {@link TopicTrie} instead.
 */

const SLASH = 0x2f; // '/'
const PLUS = 0x2b; // '+'
const HASH = 0x23; // '#'
const DOLLAR = 0x24; // '$'

/**
 * Returns true when `topic` matches `filter`: `+` matches exactly one level, `#` matches the
 * rest of the topic including its parent level (`a/#` matches `a`), empty levels are levels
 * (`/+` matches `/a` but not `a`), and a topic starting with `$` is not matched by a filter
 * whose first level is `+` or `#` [MQTT-4.7.2-1].
 *
 * `filter` should be valid per `validateTopicFilter` and `topic` per `validateTopicName`.
 * For other input this never throws; a `+` or `#` that is not a valid wildcard is compared
 * as a literal character.
 */
export function matchesFilter(filter: string, topic: string): boolean {
  const fl = filter.length;
  const tl = topic.length;

  // [MQTT-4.7.2-1] '$' topics are not matched by a leading wildcard level
  if (tl > 0 && topic.charCodeAt(0) === DOLLAR && fl > 0) {
    const f0 = filter.charCodeAt(0);
    if ((f0 === PLUS || f0 === HASH) && (fl === 1 || filter.charCodeAt(1) === SLASH)) return false;
  }

  let fi = 0;
  let ti = 0;
  // Invariant at the top of the loop: fi and ti are each at the start of a level.
  for (;;) {
    const fc = fi < fl ? filter.charCodeAt(fi) : -1;
    // [MQTT-4.7.1-2] '#' as the last level matches this level and every level below it
    if (fc === HASH && fi + 1 === fl) return true;
    if (fc === PLUS && (fi + 1 === fl || filter.charCodeAt(fi + 1) === SLASH)) {
      // [MQTT-4.7.1-3] '+' matches exactly one level, whatever it holds (even nothing)
      fi++;
      while (ti < tl && topic.charCodeAt(ti) !== SLASH) ti++;
    } else {
      while (fi < fl && ti < tl) {
        const c = filter.charCodeAt(fi);
        if (c === SLASH || c !== topic.charCodeAt(ti)) break;
        fi++;
        ti++;
      }
      // Both levels must end here for the literal levels to be equal.
      if (fi < fl && filter.charCodeAt(fi) !== SLASH) return false;
      if (ti < tl && topic.charCodeAt(ti) !== SLASH) return false;
    }
    // Both are at a '/' or at their end.
    if (ti === tl) {
      if (fi === fl) return true;
      // The topic ended first: only a trailing '/#' still matches (it covers the parent level).
      return fi + 2 === fl && filter.charCodeAt(fi + 1) === HASH;
    }
    if (fi === fl) return false;
    fi++;
    ti++;
  }
}
