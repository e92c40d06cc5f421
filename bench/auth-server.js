// signalbox's broker with authentication, for the `auth` phase (bench/auth-connect.js):
// a users file of BENCH users with real scrypt hashes (the default cost), an ACL that
// substitutes %u, and the credential cache on or off. Hosted by bench/servers/child.js as
// kind `signalbox-auth`; its start() options: { users, credentialCache }.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { signalboxDist } from './servers/dist.js';

/** The password of bench user i. */
export function benchPassword(i) {
  return `bench-password-${i}`;
}

/** Starts signalbox on 127.0.0.1 with an OS-chosen port and `users` users (bench-user-0 …). */
export async function start({ users: userCount = 4, credentialCache = 1000 } = {}) {
  const dist = signalboxDist();
  const { createBroker } = await import(new URL('broker/broker.js', dist).href);
  const { parseBrokerConfig } = await import(new URL('config/broker.js', dist).href);
  const { silentLogger } = await import(new URL('log.js', dist).href);
  const { hashPassword } = await import(new URL('broker/auth-hash.js', dist).href);
  const { loadUsersFile } = await import(new URL('broker/auth-users.js', dist).href);
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-bench-auth-'));
  const lines = ['users:'];
  for (let i = 0; i < userCount; i++) lines.push(`  bench-user-${i}: { password: "${await hashPassword(benchPassword(i))}" }`);
  const file = path.join(dir, 'users.yaml');
  writeFileSync(file, `${lines.join('\n')}\n`, { mode: 0o600 });
  const issues = [];
  const users = loadUsersFile(file, issues);
  if (!users) throw new Error(`bench users file did not load: ${JSON.stringify(issues)}`);
  const config = parseBrokerConfig({
    listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }],
    // Every bench connection comes from 127.0.0.1: connection caps above what the run opens,
    // as in the idle phase (defaults: 10,000 in all, 100 per second and 100 pending per IP).
    limits: { maxConnections: 100_000, maxPendingConnectionsPerIp: 100_000, maxConnectRatePerIp: 1_000_000 },
    auth: { users: file, credentialCache },
    acl: [{ user: '*', allow: [{ subscribe: 'bench/%u/#' }, { publish: 'bench/%u/#' }] }],
  });
  // Failed logins are not part of this measurement; the throttle never engages.
  const broker = createBroker(config, { log: silentLogger(), users });
  const [address] = await broker.listen();
  return {
    port: address.port,
    info: { users: userCount, credentialCache },
    counters: () => ({ broker: { ...broker.stats } }),
    close: async () => {
      await broker.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
