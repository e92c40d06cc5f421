import type { AclRule } from '../config/broker.js';
import { matchesFilter } from '../topics/match.js';
import { filterCovers, filtersIntersect } from './acl-match.js';

/**
 * Access control lists: ordered allow/deny rules, each for a user (or any authenticated
 * user) and optionally a client id, listing topic filters for publishing and for reading.
 * The first item whose filter matches decides; nothing matching means deny.
 *
 * `%u` and `%c` in a filter are replaced by the client's username and client id once, at
 * CONNECT. A value containing `+`, `#` or `/` would widen the filter beyond the literal
 * name, so a filter needing such a substitution applies to nobody (and a `%u` filter never
 * applies to an anonymous client).
 */

/** One compiled decision: this filter allows or denies. */
interface Entry {
  readonly filter: string;
  readonly allow: boolean;
}

/**
 * What one client may do, with every substitution done. Shared by all the clients whose
 * substituted rules are identical, so rules without `%u`/`%c` cost no memory per client.
 */
export class ClientAcl {
  constructor(
    private readonly publish: readonly Entry[],
    private readonly read: readonly Entry[],
  ) {}

  /** May the client publish to `topic` (a topic name)? */
  canPublish(topic: string): boolean {
    return decide(this.publish, topic);
  }

  /**
   * May the client receive a message on `topic`? Hot path: called for every delivery to a
   * client while ACLs are configured; a scan of this client's few read filters with the
   * allocation-free topic matcher.
   */
  canRead(topic: string): boolean {
    return decide(this.read, topic);
  }

  /**
   * May the client subscribe to `filter`? Granted when some topic the filter can match is
   * readable: the first read filter that shares a topic with it decides, except that a deny
   * which does not cover all of it lets later items grant the rest. Each delivery is then
   * still checked with {@link canRead}, so `#` receives only what the client may read.
   */
  canSubscribe(filter: string): boolean {
    for (const e of this.read) {
      if (!filtersIntersect(e.filter, filter)) continue;
      if (e.allow) return true;
      if (filterCovers(e.filter, filter)) return false;
    }
    return false;
  }
}

function decide(entries: readonly Entry[], topic: string): boolean {
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    if (matchesFilter(e.filter, topic)) return e.allow;
  }
  return false;
}

/** Shared ClientAcl objects kept at most; beyond it they are rebuilt (only sharing is lost). */
const MAX_SHARED = 10_000;

const WIDENING = /[+#/]/;

/**
 * `pattern` with `%u` and `%c` replaced, or undefined when a value is missing (anonymous
 * `%u`) or contains `+`, `#` or `/`, which would let a name match more than itself.
 */
export function substitute(pattern: string, username: string | undefined, clientId: string): string | undefined {
  if (!pattern.includes('%')) return pattern;
  let failed = false;
  const out = pattern.replace(/%[uc]/g, (m) => {
    const value = m === '%u' ? username : clientId;
    if (value === undefined || WIDENING.test(value)) failed = true;
    return value ?? '';
  });
  return failed ? undefined : out;
}

/** True when the rule's `user` and `clientId` select this client. */
function selects(rule: AclRule, username: string | undefined, clientId: string): boolean {
  if (rule.user !== undefined) {
    if (username === undefined) return false;
    if (rule.user !== '*' && rule.user !== username) return false;
  }
  const id = rule.clientId;
  if (id !== undefined) {
    if (id.endsWith('*') ? !clientId.startsWith(id.slice(0, -1)) : id !== clientId) return false;
  }
  return true;
}

/** The configured ACL rules, compiled per client on demand. */
export class AccessControl {
  private readonly shared = new Map<string, ClientAcl>();

  constructor(private readonly rules: readonly AclRule[]) {}

  /** The rules as they apply to this client (called once per CONNECT and per restored session). */
  forClient(username: string | undefined, clientId: string): ClientAcl {
    const publish: Entry[] = [];
    const read: Entry[] = [];
    for (const rule of this.rules) {
      if (!selects(rule, username, clientId)) continue;
      const allow = rule.allow !== undefined;
      for (const item of rule.allow ?? rule.deny ?? []) {
        if (item.publish !== undefined) {
          const filter = substitute(item.publish, username, clientId);
          if (filter !== undefined) publish.push({ filter, allow });
        }
        if (item.subscribe !== undefined) {
          const filter = substitute(item.subscribe, username, clientId);
          if (filter !== undefined) read.push({ filter, allow });
        }
      }
    }
    const key = `${publish.map(encode).join('\u0000')}\u0001${read.map(encode).join('\u0000')}`;
    let acl = this.shared.get(key);
    if (acl) return acl;
    acl = new ClientAcl(publish, read);
    if (this.shared.size >= MAX_SHARED) this.shared.delete(this.shared.keys().next().value!);
    this.shared.set(key, acl);
    return acl;
  }
}

function encode(e: Entry): string {
  return `${e.allow ? '+' : '-'}${e.filter}`;
}
