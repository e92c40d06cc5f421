import path from 'node:path';
import type { BrokerConfig } from '../config/broker.js';
import type { ConfigIssue } from '../config/issues.js';
import type { YamlSource } from '../config/source.js';
import { validateTopicFilter } from '../topics/validate.js';
import { insecureListeners } from './auth.js';
import { loadUsersFile, type UserTable } from './auth-users.js';

/**
 * Config-time checks of `broker.auth` and `broker.acl`: reads the users file (relative to
 * the config file's folder `base`), refuses listeners reachable from the network without
 * authentication, and validates every ACL filter. Returns the users (undefined without a
 * users file), or false when a problem was appended to `issues`.
 */
export function checkAuthConfig(source: YamlSource, broker: BrokerConfig, base: string, issues: ConfigIssue[]): UserTable | undefined | false {
  const before = issues.length;
  let users: UserTable | undefined;
  if (broker.auth.users !== undefined) {
    const file = path.resolve(base, broker.auth.users);
    users = loadUsersFile(path.relative(process.cwd(), file) || file, issues);
  }
  for (const insecure of insecureListeners(broker)) {
    issues.push(
      source.issue(['broker', 'listeners', insecure.index, 'host'], 'SB_AUTH_INSECURE_LISTENER', insecure.message, 'set broker.auth.users (see `signalbox passwd`), or anonymous: true on the listener to accept anyone'),
    );
  }
  (broker.acl ?? []).forEach((rule, r) => {
    const lists = { allow: rule.allow, deny: rule.deny };
    for (const [kind, items] of Object.entries(lists)) {
      (items ?? []).forEach((item, i) => {
        for (const action of ['publish', 'subscribe'] as const) {
          const filter = item[action];
          if (filter === undefined) continue;
          // Checked with placeholder values; a real name that would widen it is refused at CONNECT.
          const invalid = validateTopicFilter(filter.replace(/%[uc]/g, 'x'));
          if (invalid) issues.push(source.issue(['broker', 'acl', r, kind, i, action], 'SB_ACL_FILTER', `ACL filter "${filter}": ${invalid}`));
        }
      });
    }
  });
  return issues.length === before ? users : false;
}
