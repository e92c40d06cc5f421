import { existsSync } from 'node:fs';
import mqtt from 'mqtt';
import Database from 'better-sqlite3';
import type { Config } from '../config/load.js';
import { storedDepths } from '../storage/outbox-codec.js';

/** How long `status` listens for the retained bridge states after subscribing. */
const LISTEN_MS = 300;

export interface StatusReport {
  broker: { url: string; reachable: boolean };
  bridges: Record<string, string>;
  outboxes: Record<string, { waiting: number; bytes: number; oldest: string | null }>;
  deadLetters: number;
  sessions: number;
  retained: number;
}

/**
 * `signalbox status`: what a running signalbox is doing, from the outside. Bridge states come
 * from the broker's retained `$SYS/signalbox/bridges/<name>/state` topics (read over MQTT
 * from the first plain mqtt listener, else ws, else the first); outbox depth, dead letters, stored sessions and
 * retained messages from the database (read-only). Returns the exit code: 0, or 1 when the
 * broker cannot be reached.
 */
export async function statusCommand(config: Config, options: { json?: boolean }, out: NodeJS.WritableStream): Promise<number> {
  // A plain listener first: a TLS one needs its server certificate trusted (NODE_EXTRA_CA_CERTS).
  const listeners = config.broker.listeners;
  const listener = listeners.find((l) => l.type === 'mqtt') ?? listeners.find((l) => l.type === 'ws') ?? listeners[0]!;
  const host = listener.host === '0.0.0.0' ? '127.0.0.1' : listener.host === '::' ? '::1' : listener.host;
  const path = listener.type === 'ws' || listener.type === 'wss' ? listener.path : '';
  const url = `${listener.type}://${host.includes(':') ? `[${host}]` : host}:${listener.port}${path}`;
  const report: StatusReport = { broker: { url, reachable: false }, bridges: {}, outboxes: {}, deadLetters: 0, sessions: 0, retained: 0 };

  try {
    const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 2000, clientId: `signalbox-status-${process.pid}`, clean: true });
    report.broker.reachable = true;
    client.on('message', (topic, payload) => {
      const name = topic.split('/')[3];
      if (name) report.bridges[name] = payload.toString();
    });
    await client.subscribeAsync('$SYS/signalbox/bridges/+/state', { qos: 0 });
    await new Promise((resolve) => setTimeout(resolve, LISTEN_MS));
    await client.endAsync();
  } catch {
    // Reported below: the broker is not running, or not at this address.
  }

  if (existsSync(config.storage.path)) {
    const db = new Database(config.storage.path, { readonly: true, fileMustExist: true });
    try {
      const count = (sql: string) => (db.prepare(sql).pluck().get() as number | undefined) ?? 0;
      const tables = new Set((db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").pluck().all() as string[]));
      if (tables.has('outbox_batches')) {
        for (const [output, d] of storedDepths(db)) {
          report.outboxes[output] = { waiting: d.count, bytes: d.bytes, oldest: d.oldest === null ? null : new Date(d.oldest).toISOString() };
        }
      } else if (tables.has('outbox')) {
        // A database signalbox has not opened since it was upgraded: one row per message.
        for (const r of db.prepare('SELECT output, count(*) AS n, coalesce(sum(length(payload)), 0) AS bytes, min(time) AS oldest FROM outbox GROUP BY output').all() as { output: string; n: number; bytes: number; oldest: number | null }[]) {
          report.outboxes[r.output] = { waiting: r.n, bytes: r.bytes, oldest: r.oldest === null ? null : new Date(r.oldest).toISOString() };
        }
      }
      if (tables.has('dead_letters')) report.deadLetters = count('SELECT count(*) FROM dead_letters');
      if (tables.has('sessions')) report.sessions = count('SELECT count(*) FROM sessions');
      if (tables.has('retained')) report.retained = count('SELECT count(*) FROM retained');
    } finally {
      db.close();
    }
  }
  for (const name of Object.keys(config.outputs)) report.outboxes[name] ??= { waiting: 0, bytes: 0, oldest: null };

  if (options.json) {
    out.write(`${JSON.stringify(report)}\n`);
  } else {
    out.write(`broker     ${url}  ${report.broker.reachable ? 'running' : 'NOT REACHABLE'}\n`);
    for (const [name, state] of Object.entries(report.bridges)) out.write(`bridge     ${name}  ${state}\n`);
    for (const [name, o] of Object.entries(report.outboxes)) {
      out.write(`outbox     ${name}  ${o.waiting} waiting (${o.bytes} bytes)${o.oldest ? `, oldest ${o.oldest}` : ''}\n`);
    }
    out.write(`stored     ${report.sessions} persistent session(s), ${report.retained} retained message(s), ${report.deadLetters} dead letter(s)\n`);
  }
  return report.broker.reachable ? 0 : 1;
}
