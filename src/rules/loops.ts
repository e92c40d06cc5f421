/**
 * Load-time loop detection: a rule that republishes to a topic its own filters match would
 * feed itself forever. These helpers over-approximate where a topic template can publish and
 * decide whether two filters share a topic, so the rule compiler can reject such a rule
 * before it runs. (The run-time hop count stays the safety net for what this cannot see.)
 */
import jsonata from 'jsonata';
import type { CompiledTemplate } from './template.js';

/**
 * Input fields whose values contain `/` by nature: the topic itself, the MQTT 5 response
 * topic, and the content type (`application/json`). An expression naming one of them may
 * render several levels.
 */
const MULTI_LEVEL_NAMES: ReadonlySet<string> = new Set(['topic', 'responseTopic', 'contentType']);

/**
 * A filter covering every topic the template can render to, under this rule:
 * - a level holding an expression (alone or with text, `room-${payload.n}`) becomes `+`;
 * - an expression that may render a `/` makes its level and everything after it `#`.
 *
 * An expression "may render a `/`" when its syntax tree has any of: a name in
 * {@link MULTI_LEVEL_NAMES} (`topic`, `payload.topic`, `properties.responseTopic`), as a
 * path step or a string (`$lookup($, "topic")`); a string literal containing `/`
 * (`$join(levels, "/")`); the context `$` / root `$$`, `*` or `**`, which can reach the
 * whole message including its topic; or a call to `$eval`. Everything else, notably
 * `payload.room` and `levels[1]`, counts as one level: payload fields used in a topic are
 * meant as level names, and `levels` are split on `/`. This is what makes
 * `greenhouse/${payload.room}/fahrenheit` distinguishable from `greenhouse/+/temperature`.
 *
 * A rendered topic starting with `$` is not covered when the first level is an expression:
 * `$` topics are reserved for the broker [MQTT-4.7.2-1], so a rule cannot publish there.
 * The template's literal text is copied as is; validating it is the caller's job.
 */
export function templateToFilter(template: CompiledTemplate): string {
  const levels: string[] = [];
  let level = '';
  let levelHasExpression = false;
  for (const part of template.parts) {
    if ('text' in part) {
      const pieces = part.text.split('/');
      for (let i = 0; i < pieces.length; i++) {
        if (i > 0) {
          levels.push(levelHasExpression ? '+' : level);
          level = '';
          levelHasExpression = false;
        }
        level += pieces[i];
      }
    } else {
      if (mayRenderSlash(part.expression)) {
        levels.push('#');
        return levels.join('/');
      }
      levelHasExpression = true;
    }
  }
  levels.push(levelHasExpression ? '+' : level);
  return levels.join('/');
}

/** See {@link templateToFilter} for the rule. Load time only: parses the expression again. */
function mayRenderSlash(expression: string): boolean {
  let ast: unknown;
  try {
    ast = jsonata(expression).ast();
  } catch {
    return true; // cannot happen for a compiled template; be conservative if it does
  }
  const seen = new Set<object>();
  const visit = (node: unknown): boolean => {
    if (node === null || typeof node !== 'object' || seen.has(node)) return false;
    seen.add(node);
    if (Array.isArray(node)) return node.some(visit);
    const { type, value, procedure } = node as { type?: unknown; value?: unknown; procedure?: { type?: unknown; value?: unknown } };
    if ((type === 'name' || type === 'string') && typeof value === 'string') {
      if (MULTI_LEVEL_NAMES.has(value)) return true;
      if (type === 'string' && value.includes('/')) return true;
    }
    if (type === 'variable' && (value === '' || value === '$')) return true;
    if (type === 'wildcard' || type === 'descendant') return true;
    if (type === 'function' && procedure?.type === 'variable' && procedure.value === 'eval') return true;
    return Object.values(node).some(visit);
  };
  return visit(ast);
}

/**
 * True when some topic name matches both filters, with MQTT wildcard semantics: `+` is
 * exactly one level (possibly empty), `#` is the rest including the parent level (`a/#`
 * covers `a`), a filter whose first level is `+` or `#` matches no topic starting with `$`
 * [MQTT-4.7.2-1], and the empty string is not a topic (`+` and `/#` share none). Both
 * filters should be valid per `validateTopicFilter` and not shared (`$share/…`): strip the
 * share prefix first. Symmetric in its arguments. Load time only: it splits both strings.
 */
export function filtersOverlap(a: string, b: string): boolean {
  const al = a.split('/');
  const bl = b.split('/');
  // [MQTT-4.7.2-1] a leading wildcard cannot match a '$' topic, so the other filter's literal
  // first level must not start with '$' (two wildcards agree on a topic like "x").
  if (isWildcard(al[0]!) && bl[0]!.startsWith('$') && !isWildcard(bl[0]!)) return false;
  if (isWildcard(bl[0]!) && al[0]!.startsWith('$') && !isWildcard(al[0]!)) return false;
  // [MQTT-4.7.3-1] a topic is at least one character long, so a one-level witness must not
  // be the empty level that a filter starting with '/' forces.
  const firstLevelEmpty = al[0] === '' || bl[0] === '';
  for (let i = 0; ; i++) {
    const x = al[i];
    const y = bl[i];
    const ended = x === undefined || y === undefined;
    // [MQTT-4.7.1-2] '#' takes whatever the other filter still requires, or nothing; when the
    // other has ended, the topic is exactly the i levels matched so far (`a/#` covers `a`).
    if (x === '#' || y === '#') return !(ended && i === 1 && firstLevelEmpty);
    // One filter ended: only a trailing '#' in the other (above) still matches this topic.
    if (ended) return x === undefined && y === undefined && !(i === 1 && firstLevelEmpty);
    // [MQTT-4.7.1-3] '+' takes any single level, including the other filter's literal.
    if (x !== '+' && y !== '+' && x !== y) return false;
  }
}

function isWildcard(level: string): boolean {
  return level === '+' || level === '#';
}
