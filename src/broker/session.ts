import type { TimerHandle } from '../clock.js';
import type { ClientAcl } from './acl.js';
import type { BrokerPersistence, StoredDelivery } from './persistence.js';
import type { Message, PublisherInfo, QoS } from './types.js';

/** One subscription of one session. Shared subscriptions carry their group. */
export interface Subscription {
  readonly session: Session;
  /** The filter exactly as subscribed, `$share/g/...` included; the session's key for it. */
  readonly filter: string;
  /** The filter that is matched against topics (the part after `$share/g/`). */
  readonly topicFilter: string;
  readonly group: string | undefined;
  readonly qos: QoS;
  readonly noLocal: boolean;
  readonly retainAsPublished: boolean;
  readonly retainHandling: 0 | 1 | 2;
  readonly subscriptionId: number | undefined;
}

/** A message waiting for, or in, delivery to one session. */
export interface Delivery {
  readonly message: Message;
  readonly qos: QoS;
  readonly retain: boolean;
  readonly subscriptionIds: readonly number[] | undefined;
}

/** A QoS 1/2 delivery this session owes its client; `seq` is its key in storage (0 when not stored). */
interface Owed extends Delivery {
  readonly seq: number;
}

/** An outbound QoS 1/2 message sent and not yet fully acknowledged. */
export interface Inflight extends Owed {
  readonly packetId: number;
  /** 'publish': waiting for PUBACK/PUBREC; 'pubrel': PUBREL sent, waiting for PUBCOMP. */
  state: 'publish' | 'pubrel';
}

/**
 * The sending side of a live connection, as a session sees it. The connection encodes and
 * writes; the session decides what to send and keeps what is unacknowledged.
 */
export interface Sender {
  /** How many unacknowledged QoS 1/2 messages the client accepts (its Receive Maximum). */
  readonly receiveMaximum: number;
  /**
   * True while more than `maxSendBufferBytes` wait to be sent to the client: QoS 0 messages
   * are dropped and QoS 1/2 stay queued until the connection drains and calls {@link Session.pump}.
   */
  readonly congested: boolean;
  /** Writes a PUBLISH. Returns false when the packet exceeds the client's Maximum Packet Size and was not sent. */
  sendPublish(delivery: Delivery, packetId: number, dup: boolean): boolean;
  sendPubrel(packetId: number): void;
  /** Ends the connection (MQTT 5: DISCONNECT with this reason code first), e.g. on session takeover. */
  disconnect(reasonCode: number): void;
}

/** What the session reports to the broker, for counters and logs. */
export interface SessionEvents {
  dropped(session: Session, reason: 'queue-full' | 'send-buffer' | 'expired' | 'too-large' | 'denied', delivery: Delivery): void;
}

/**
 * The state MQTT keeps per client id: subscriptions, queued and in-flight outbound messages,
 * inbound QoS 2 packet ids awaiting PUBREL, and expiry. It outlives its connection when the
 * client asked for a persistent session; then every change to what it owes the client is
 * written through the broker's persistence, so it also outlives the process.
 */
export class Session {
  readonly subscriptions = new Map<string, Subscription>();
  /** QoS 1/2 deliveries waiting for a connection or for a free in-flight slot (FIFO). */
  private queue: Owed[] = [];
  private queueHead = 0;
  readonly inflight = new Map<number, Inflight>();
  /** Inbound QoS 2 packet ids: PUBREC sent, PUBREL not yet received [MQTT-4.3.3]. */
  readonly inboundQos2 = new Set<number>();
  /** Session Expiry Interval in seconds; 0 = ends with the connection (and is never stored). */
  expiryS = 0;
  /**
   * True while the session has a row in storage: every change to what it owes is written
   * then, and never otherwise (a row written for a session that has none would break the
   * batch it is in).
   */
  stored = false;
  sender: Sender | undefined;
  /** A will waiting for its Will Delay Interval [MQTT-3.1.3-9]; published when that passes or the session ends. */
  pendingWill: { message: Message; publisher: PublisherInfo; timer: TimerHandle; publishAt: number } | undefined;
  /** Fires when an offline session's expiry interval has passed. */
  expiryTimer: TimerHandle | undefined;
  /** The user who owns the session (undefined: anonymous); only they may resume or take it over. */
  username: string | undefined;
  /** False for a restored session stored before owners were recorded. */
  ownerKnown = true;
  /** What the owner may read; undefined when no ACL is configured (everything is readable). */
  acl: ClientAcl | undefined;
  /** Scratch fields used by the router while it dedupes one message's matches (see SubscriptionIndex). */
  routeGen = 0;
  routeQos: QoS = 0;
  routeRetainAsPublished = false;
  routeSubIds: number[] | undefined;
  private lastPacketId = 0;
  private lastSeq = 0;

  constructor(
    readonly clientId: string,
    private readonly maxQueued: number,
    private readonly events: SessionEvents,
    private readonly now: () => number,
    private readonly store: BrokerPersistence | undefined,
  ) {}

  get queued(): number {
    return this.queue.length - this.queueHead;
  }

  /** True when this session's state is written to storage. */
  get persistent(): boolean {
    return this.expiryS > 0 && this.store !== undefined;
  }

  /**
   * Delivers one message to this session: sent at once when connected and the client has
   * room, queued otherwise (QoS 1/2 only), dropped when it expired. A QoS 0 message to a
   * client that is not reading (congested) is dropped: a slow consumer never holds up the
   * others nor grows memory beyond its send buffer cap.
   */
  deliver(delivery: Delivery): void {
    // Hot path: without ACLs this is one branch. Live, retained and queued deliveries all
    // pass here, so a wildcard subscription never receives a topic its owner may not read.
    const acl = this.acl;
    if (acl !== undefined && !acl.canRead(delivery.message.topic)) {
      this.events.dropped(this, 'denied', delivery);
      return;
    }
    const sender = this.sender;
    if (delivery.qos === 0) {
      // QoS 0 is never queued for an offline client (as Mosquitto's default).
      if (sender && !this.isExpired(delivery)) {
        if (sender.congested) this.events.dropped(this, 'send-buffer', delivery);
        else if (!sender.sendPublish(delivery, 0, false)) this.events.dropped(this, 'too-large', delivery);
      }
      return;
    }
    const owed: Owed = this.stored
      ? { message: delivery.message, qos: delivery.qos, retain: delivery.retain, subscriptionIds: delivery.subscriptionIds, seq: ++this.lastSeq }
      : (delivery as Owed);
    if (sender && this.queued === 0 && this.inflight.size < sender.receiveMaximum && !sender.congested) {
      this.sendNew(sender, owed);
      return;
    }
    this.enqueue(owed);
  }

  private enqueue(owed: Owed): void {
    if (this.queued >= this.maxQueued) {
      const oldest = this.shift()!;
      this.forget(oldest);
      this.events.dropped(this, 'queue-full', oldest);
    }
    this.queue.push(owed);
    if (owed.seq && this.stored) this.store!.saveDelivery(this.clientId, { ...owed, state: 'queued', packetId: 0 });
  }

  private shift(): Owed | undefined {
    if (this.queueHead >= this.queue.length) return undefined;
    const d = this.queue[this.queueHead]!;
    this.queue[this.queueHead++] = undefined as unknown as Owed;
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.queueHead);
      this.queueHead = 0;
    }
    return d;
  }

  private forget(owed: Owed): void {
    if (owed.seq && this.stored) this.store!.deleteDelivery(this.clientId, owed.seq);
  }

  private isExpired(delivery: Delivery): boolean {
    const at = delivery.message.expiresAt;
    if (at !== undefined && at <= this.now()) {
      this.events.dropped(this, 'expired', delivery);
      return true;
    }
    return false;
  }

  private sendNew(sender: Sender, owed: Owed): void {
    if (this.isExpired(owed)) {
      this.forget(owed);
      return;
    }
    const packetId = this.allocatePacketId();
    const entry: Inflight = { message: owed.message, qos: owed.qos, retain: owed.retain, subscriptionIds: owed.subscriptionIds, seq: owed.seq, packetId, state: 'publish' };
    if (!sender.sendPublish(entry, packetId, false)) {
      // [MQTT-3.1.2-25] too large for this client: discarded as if delivered.
      this.forget(owed);
      this.events.dropped(this, 'too-large', owed);
      return;
    }
    this.inflight.set(packetId, entry);
    if (entry.seq && this.stored) this.store!.saveDelivery(this.clientId, entry);
  }

  /** Moves queued messages into flight while the client has room (and its send buffer too). */
  pump(): void {
    const sender = this.sender;
    if (!sender) return;
    while (this.inflight.size < sender.receiveMaximum && !sender.congested) {
      const next = this.shift();
      if (!next) break;
      this.sendNew(sender, next);
    }
  }

  /**
   * Attaches a live connection. Unacknowledged messages are sent again first, PUBLISH with
   * DUP set and PUBREL as is [MQTT-4.4.0-1], then the queue drains.
   */
  attach(sender: Sender): void {
    this.sender = sender;
    if (this.acl !== undefined) this.dropUnreadable(this.acl);
    for (const entry of this.inflight.values()) {
      if (entry.state === 'pubrel') sender.sendPubrel(entry.packetId);
      else if (!sender.sendPublish(entry, entry.packetId, true)) {
        this.inflight.delete(entry.packetId);
        this.forget(entry);
      }
    }
    this.pump();
  }

  /**
   * Drops what this session owes but its owner may no longer read: messages queued or
   * restored under other rules (a reload, a restart) are checked again before they go out.
   */
  private dropUnreadable(acl: ClientAcl): void {
    for (const entry of this.inflight.values()) {
      if (entry.state === 'publish' && !acl.canRead(entry.message.topic)) {
        this.inflight.delete(entry.packetId);
        this.forget(entry);
        this.events.dropped(this, 'denied', entry);
      }
    }
    const kept: Owed[] = [];
    for (let i = this.queueHead; i < this.queue.length; i++) {
      const owed = this.queue[i]!;
      if (acl.canRead(owed.message.topic)) kept.push(owed);
      else {
        this.forget(owed);
        this.events.dropped(this, 'denied', owed);
      }
    }
    this.queue = kept;
    this.queueHead = 0;
  }

  detach(): void {
    this.sender = undefined;
  }

  /** PUBACK, or PUBCOMP: the message is delivered. Returns false for an unknown packet id. */
  complete(packetId: number): boolean {
    const entry = this.inflight.get(packetId);
    if (!entry) return false;
    this.inflight.delete(packetId);
    this.forget(entry);
    this.pump();
    return true;
  }

  /** PUBREC: the client has the QoS 2 message; the next step is PUBREL. */
  received(packetId: number): boolean {
    const entry = this.inflight.get(packetId);
    if (!entry) return false;
    entry.state = 'pubrel';
    if (entry.seq && this.stored) this.store!.saveDelivery(this.clientId, entry);
    return true;
  }

  /** Records an inbound QoS 2 packet id awaiting PUBREL. */
  addInboundQos2(packetId: number): void {
    this.inboundQos2.add(packetId);
    if (this.stored) this.store!.addInboundQos2(this.clientId, packetId);
  }

  /** PUBREL: releases an inbound QoS 2 packet id. Returns false when it was unknown. */
  releaseInboundQos2(packetId: number): boolean {
    if (!this.inboundQos2.delete(packetId)) return false;
    if (this.stored) this.store!.deleteInboundQos2(this.clientId, packetId);
    return true;
  }

  private allocatePacketId(): number {
    // Packet ids are unique among this session's unacknowledged packets [MQTT-2.2.1-3].
    for (let i = 0; i < 65_535; i++) {
      this.lastPacketId = this.lastPacketId >= 65_535 ? 1 : this.lastPacketId + 1;
      if (!this.inflight.has(this.lastPacketId)) return this.lastPacketId;
    }
    throw new Error(`session ${this.clientId}: no free packet id`);
  }

  /** Restores what a stored session owed its client (at startup, before any connection). */
  restore(deliveries: readonly StoredDelivery[], inboundQos2: readonly number[]): void {
    for (const d of deliveries) {
      const owed: Owed = { message: d.message, qos: d.qos, retain: d.retain, subscriptionIds: d.subscriptionIds, seq: d.seq };
      if (d.state === 'queued') this.queue.push(owed);
      else this.inflight.set(d.packetId, { ...owed, packetId: d.packetId, state: d.state });
      if (d.seq > this.lastSeq) this.lastSeq = d.seq;
      if (d.packetId > this.lastPacketId) this.lastPacketId = d.packetId;
    }
    for (const id of inboundQos2) this.inboundQos2.add(id);
  }

  /** Forgets everything queued and in flight (the session is ending). */
  clear(): void {
    this.queue = [];
    this.queueHead = 0;
    this.inflight.clear();
    this.inboundQos2.clear();
  }
}
