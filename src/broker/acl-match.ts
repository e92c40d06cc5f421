/**
 * Filter-against-filter relations the SUBSCRIBE check needs. Deliveries are checked topic by
 * topic with `matchesFilter`; these only decide whether a subscription is worth granting.
 * Both arguments are valid non-shared topic filters.
 */

function leadingWildcard(levels: readonly string[]): boolean {
  return levels[0] === '+' || levels[0] === '#';
}

function dollarLevel(levels: readonly string[]): boolean {
  return levels[0]!.startsWith('$');
}

/**
 * True when some topic name is matched by both filters. A `$` topic is never matched by a
 * leading wildcard [MQTT-4.7.2-1], so `#` and `$SYS/#` share nothing.
 */
export function filtersIntersect(a: string, b: string): boolean {
  const la = a.split('/');
  const lb = b.split('/');
  if ((dollarLevel(la) && leadingWildcard(lb)) || (dollarLevel(lb) && leadingWildcard(la))) return false;
  for (let i = 0; ; i++) {
    const x = la[i];
    const y = lb[i];
    if (x === '#' || y === '#') return true;
    // A trailing `#` on the longer one was handled above (`a/#` also matches `a`).
    if (x === undefined || y === undefined) return x === undefined && y === undefined;
    if (x !== '+' && y !== '+' && x !== y) return false;
  }
}

/** True when every topic `inner` matches is also matched by `outer`. */
export function filterCovers(outer: string, inner: string): boolean {
  const lo = outer.split('/');
  const li = inner.split('/');
  // A leading wildcard of outer does not cover `$` topics a literal `$…` inner names.
  if (leadingWildcard(lo) && dollarLevel(li)) return false;
  for (let i = 0; ; i++) {
    const o = lo[i];
    const n = li[i];
    if (o === '#') return true;
    if (o === undefined || n === undefined) return o === undefined && n === undefined;
    if (n === '#') return false;
    if (o === '+') continue;
    if (n === '+' || o !== n) return false;
  }
}
