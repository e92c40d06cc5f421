import type BetterSqlite3 from 'better-sqlite3';
import type { BrokerPersistence, StoredDelivery, StoredSession, StoredSubscription } from '../broker/persistence.js';
import type { Message, MessageProperties, PublisherInfo, QoS } from '../broker/types.js';
import type { WriteBatcher } from './batcher.js';

/** MQTT 5 properties as stored: JSON, with correlation data as base64. */
export function encodeProperties(p: MessageProperties | undefined): string | null {
  if (!p) return null;
  const { correlationData, ...rest } = p;
  return JSON.stringify(correlationData === undefined ? rest : { ...rest, correlationData: correlationData.toString('base64') });
}

export function decodeProperties(text: string | null): MessageProperties | undefined {
  if (text === null) return undefined;
  const p = JSON.parse(text) as MessageProperties & { correlationData?: string | Buffer };
  if (typeof p.correlationData === 'string') p.correlationData = Buffer.from(p.correlationData, 'base64');
  return p as MessageProperties;
}

interface RetainedRow {
  topic: string;
  payload: Buffer;
  qos: number;
  properties: string | null;
  client_id: string;
  timestamp: number;
  expires_at: number | null;
}

interface SessionRow {
  client_id: string;
  expiry_s: number;
  disconnected_at: number | null;
  username: string | null;
  owner_known: number;
}

interface SubscriptionRow {
  client_id: string;
  filter: string;
  qos: number;
  no_local: number;
  retain_as_published: number;
  retain_handling: number;
  subscription_id: number | null;
}

interface DeliveryRow {
  client_id: string;
  seq: number;
  state: string;
  packet_id: number;
  qos: number;
  retain: number;
  subscription_ids: string | null;
  topic: string;
  payload: Buffer;
  message_qos: number;
  message_retain: number;
  properties: string | null;
  origin_client_id: string;
  timestamp: number;
  expires_at: number | null;
  hops: number;
}

/** The columns a stored message has in every table that keeps one. */
export interface MessageColumns {
  topic: string;
  payload: Buffer;
  qos: number;
  retain: number;
  properties: string | null;
}

interface WillRow extends MessageColumns {
  client_id: string;
  username: string | null;
  protocol_version: number;
  publish_at: number;
}

type Key = { clientId: string; n: number };

/**
 * Broker state in SQLite: retained messages and persistent sessions. Every write joins the
 * shared group-commit batch (see WriteBatcher), so a message's retained update and its
 * deliveries to persistent sessions commit with its history and outbox rows, before PUBACK.
 * Hot path: statements are prepared once and bound positionally; each write is a bound
 * function and one argument, no closure per message.
 */
export class SqliteBrokerPersistence implements BrokerPersistence {
  private readonly upsertRetained: (m: Message) => void;
  private readonly upsertSession: (a: [string, number, number | null, string | null]) => void;
  private readonly removeSession: (clientId: string) => void;
  private readonly upsertSubscription: (a: [string, StoredSubscription]) => void;
  private readonly removeSubscription: (a: [string, string]) => void;
  private readonly upsertDelivery: (a: [string, StoredDelivery]) => void;
  private readonly removeDelivery: (k: Key) => void;
  private readonly insertQos2: (k: Key) => void;
  private readonly removeQos2: (k: Key) => void;
  private readonly upsertWill: (a: [string, { message: Message; publisher: PublisherInfo; publishAt: number }]) => void;
  private readonly removeWill: (clientId: string) => void;

  constructor(
    private readonly db: BetterSqlite3.Database,
    private readonly batcher: WriteBatcher,
  ) {
    const setRetained = db.prepare(
      'INSERT INTO retained (topic, payload, qos, properties, client_id, timestamp, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?) ' +
        'ON CONFLICT (topic) DO UPDATE SET payload = excluded.payload, qos = excluded.qos, properties = excluded.properties, ' +
        'client_id = excluded.client_id, timestamp = excluded.timestamp, expires_at = excluded.expires_at',
    );
    const clearRetained = db.prepare('DELETE FROM retained WHERE topic = ?');
    this.upsertRetained = (m) => {
      if (m.payload.length === 0) clearRetained.run(m.topic);
      else setRetained.run(m.topic, m.payload, m.qos, encodeProperties(m.properties), m.clientId, m.timestamp, m.expiresAt ?? null);
    };
    const saveSession = db.prepare(
      'INSERT INTO sessions (client_id, expiry_s, disconnected_at, username, owner_known) VALUES (?, ?, ?, ?, 1) ' +
        'ON CONFLICT (client_id) DO UPDATE SET expiry_s = excluded.expiry_s, disconnected_at = excluded.disconnected_at, username = excluded.username, owner_known = 1',
    );
    this.upsertSession = ([id, expiry, at, user]) => saveSession.run(id, expiry, at, user);
    const deleteSession = db.prepare('DELETE FROM sessions WHERE client_id = ?');
    this.removeSession = (id) => deleteSession.run(id);
    const saveSub = db.prepare(
      'INSERT OR REPLACE INTO subscriptions (client_id, filter, qos, no_local, retain_as_published, retain_handling, subscription_id) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    this.upsertSubscription = ([id, s]) =>
      saveSub.run(id, s.filter, s.qos, s.noLocal ? 1 : 0, s.retainAsPublished ? 1 : 0, s.retainHandling, s.subscriptionId ?? null);
    const deleteSub = db.prepare('DELETE FROM subscriptions WHERE client_id = ? AND filter = ?');
    this.removeSubscription = ([id, filter]) => deleteSub.run(id, filter);
    const saveDelivery = db.prepare(
      'INSERT INTO session_messages (client_id, seq, state, packet_id, qos, retain, subscription_ids, topic, payload, message_qos, message_retain, properties, origin_client_id, timestamp, expires_at, hops) ' +
        'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ' +
        'ON CONFLICT (client_id, seq) DO UPDATE SET state = excluded.state, packet_id = excluded.packet_id',
    );
    this.upsertDelivery = ([id, d]) => {
      const m = d.message;
      saveDelivery.run(
        id, d.seq, d.state, d.packetId, d.qos, d.retain ? 1 : 0, d.subscriptionIds ? JSON.stringify(d.subscriptionIds) : null,
        m.topic, m.payload, m.qos, m.retain ? 1 : 0, encodeProperties(m.properties), m.clientId, m.timestamp, m.expiresAt ?? null, m.hops,
      );
    };
    const deleteDelivery = db.prepare('DELETE FROM session_messages WHERE client_id = ? AND seq = ?');
    this.removeDelivery = (k) => deleteDelivery.run(k.clientId, k.n);
    const addQos2 = db.prepare('INSERT OR IGNORE INTO inbound_qos2 (client_id, packet_id) VALUES (?, ?)');
    this.insertQos2 = (k) => addQos2.run(k.clientId, k.n);
    const deleteQos2 = db.prepare('DELETE FROM inbound_qos2 WHERE client_id = ? AND packet_id = ?');
    this.removeQos2 = (k) => deleteQos2.run(k.clientId, k.n);
    const saveWill = db.prepare(
      'INSERT OR REPLACE INTO wills (client_id, topic, payload, qos, retain, properties, username, protocol_version, publish_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.upsertWill = ([id, w]) =>
      saveWill.run(id, w.message.topic, w.message.payload, w.message.qos, w.message.retain ? 1 : 0, encodeProperties(w.message.properties), w.publisher.username ?? null, w.publisher.protocolVersion, w.publishAt);
    const deleteWill = db.prepare('DELETE FROM wills WHERE client_id = ?');
    this.removeWill = (id) => deleteWill.run(id);
  }

  load(): { retained: Message[]; sessions: StoredSession[] } {
    const retained = (this.db.prepare('SELECT * FROM retained').all() as RetainedRow[]).map(
      (r): Message => ({
        topic: r.topic,
        payload: r.payload,
        qos: r.qos as QoS,
        retain: true,
        properties: decodeProperties(r.properties),
        clientId: r.client_id,
        timestamp: r.timestamp,
        expiresAt: r.expires_at ?? undefined,
        hops: 0,
      }),
    );
    const sessions = new Map<string, StoredSession>();
    for (const r of this.db.prepare('SELECT * FROM sessions').all() as SessionRow[]) {
      sessions.set(r.client_id, {
        clientId: r.client_id,
        username: r.username ?? undefined,
        ownerKnown: r.owner_known !== 0,
        expiryS: r.expiry_s,
        disconnectedAt: r.disconnected_at ?? undefined,
        subscriptions: [],
        deliveries: [],
        inboundQos2: [],
        will: undefined,
      });
    }
    for (const r of this.db.prepare('SELECT * FROM subscriptions').all() as SubscriptionRow[]) {
      sessions.get(r.client_id)?.subscriptions.push({
        filter: r.filter,
        qos: r.qos as QoS,
        noLocal: r.no_local !== 0,
        retainAsPublished: r.retain_as_published !== 0,
        retainHandling: r.retain_handling as 0 | 1 | 2,
        subscriptionId: r.subscription_id ?? undefined,
      });
    }
    for (const r of this.db.prepare('SELECT * FROM session_messages ORDER BY client_id, seq').all() as DeliveryRow[]) {
      sessions.get(r.client_id)?.deliveries.push({
        seq: r.seq,
        state: r.state as StoredDelivery['state'],
        packetId: r.packet_id,
        qos: r.qos as QoS,
        retain: r.retain !== 0,
        subscriptionIds: r.subscription_ids === null ? undefined : (JSON.parse(r.subscription_ids) as number[]),
        message: {
          topic: r.topic,
          payload: r.payload,
          qos: r.message_qos as QoS,
          retain: r.message_retain !== 0,
          properties: decodeProperties(r.properties),
          clientId: r.origin_client_id,
          timestamp: r.timestamp,
          expiresAt: r.expires_at ?? undefined,
          hops: r.hops,
        },
      });
    }
    for (const r of this.db.prepare('SELECT client_id, packet_id FROM inbound_qos2').all() as { client_id: string; packet_id: number }[]) {
      sessions.get(r.client_id)?.inboundQos2.push(r.packet_id);
    }
    for (const r of this.db.prepare('SELECT * FROM wills').all() as WillRow[]) {
      const s = sessions.get(r.client_id);
      if (!s) continue;
      s.will = {
        message: { topic: r.topic, payload: r.payload, qos: r.qos as QoS, retain: r.retain !== 0, properties: decodeProperties(r.properties), clientId: r.client_id, timestamp: 0, hops: 0 },
        publisher: { clientId: r.client_id, username: r.username ?? undefined, protocolVersion: r.protocol_version as 3 | 4 | 5 },
        publishAt: r.publish_at,
      };
    }
    return { retained, sessions: [...sessions.values()] };
  }

  setRetained(message: Message): void {
    void this.batcher.write(this.upsertRetained, message);
  }

  saveSession(clientId: string, expiryS: number, disconnectedAt: number | undefined, username: string | undefined): void {
    void this.batcher.write(this.upsertSession, [clientId, expiryS, disconnectedAt ?? null, username ?? null]);
  }

  deleteSession(clientId: string): void {
    void this.batcher.write(this.removeSession, clientId);
  }

  saveSubscription(clientId: string, sub: StoredSubscription): void {
    // Only the stored fields: the live Subscription also references its session.
    const { filter, qos, noLocal, retainAsPublished, retainHandling, subscriptionId } = sub;
    void this.batcher.write(this.upsertSubscription, [clientId, { filter, qos, noLocal, retainAsPublished, retainHandling, subscriptionId }]);
  }

  deleteSubscription(clientId: string, filter: string): void {
    void this.batcher.write(this.removeSubscription, [clientId, filter]);
  }

  saveDelivery(clientId: string, delivery: StoredDelivery): void {
    // The session mutates its in-flight entry (state); store a snapshot of it now.
    void this.batcher.write(this.upsertDelivery, [clientId, { ...delivery }]);
  }

  deleteDelivery(clientId: string, seq: number): void {
    void this.batcher.write(this.removeDelivery, { clientId, n: seq });
  }

  addInboundQos2(clientId: string, packetId: number): void {
    void this.batcher.write(this.insertQos2, { clientId, n: packetId });
  }

  deleteInboundQos2(clientId: string, packetId: number): void {
    void this.batcher.write(this.removeQos2, { clientId, n: packetId });
  }

  saveWill(clientId: string, will: { message: Message; publisher: PublisherInfo; publishAt: number }): void {
    void this.batcher.write(this.upsertWill, [clientId, will]);
  }

  deleteWill(clientId: string): void {
    void this.batcher.write(this.removeWill, clientId);
  }

  pending(): Promise<void> | undefined {
    return this.batcher.pending();
  }
}
