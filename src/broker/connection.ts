import type { Duplex } from 'node:stream';
import mqttPacket, { type Packet } from 'mqtt-packet';
import type { TimerHandle } from '../clock.js';
import type { BrokerContext } from './context.js';
import type { StreamOrigin } from './listeners/listener.js';
import { decodePublish } from './decode-publish.js';
import { encodePublishHeader } from './encode.js';
import { FrameError, PacketFramer } from './framing.js';
import { dispatch } from './handlers/index.js';
import { PacketWriter } from './packet-writer.js';
import { hardenParser, PacketError } from './parser.js';
import { RC } from './reason-codes.js';
import type { Delivery, Sender, Session } from './session.js';
import type { Message, MessageProperties } from './types.js';

type ProtocolVersion = 3 | 4 | 5;

/** Packets held at most while CONNECT's credentials are checked; more closes the connection. */
const MAX_HELD_PACKETS = 64;

/** First byte of each acknowledgement packet (PUBREL has the reserved flags 0b0010). */
const ACK_TYPES: Partial<Record<string, number>> = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 };

/**
 * One client's network connection: the byte stream, the packet parser, keepalive, and the
 * per-connection MQTT state (protocol version, topic aliases, flow control). Packets are
 * handed to one handler per packet type (see handlers/).
 */
export class Connection implements Sender {
  state: 'new' | 'connected' | 'closed' = 'new';
  protocolVersion: ProtocolVersion = 4;
  clientId = '';
  username: string | undefined;
  session: Session | undefined;
  will: Message | undefined;
  /** MQTT 5 Will Delay Interval in seconds [MQTT-3.1.3-9]. */
  willDelayS = 0;
  /** Set when the client ended with a DISCONNECT that discards the will. */
  discardWill = false;
  /** Set when a newer connection took this one's session over. */
  takenOver = false;
  /**
   * Unacknowledged QoS 1/2 messages we send this client at most: our `maxInflight`, or the
   * client's MQTT 5 Receive Maximum when that is lower.
   */
  receiveMaximum: number;
  maxPacketSizeOut = Number.MAX_SAFE_INTEGER;
  topicAliasMaxOut = 0;
  requestProblemInformation = true;
  /** Topic Alias Maximum we advertised to this client. */
  topicAliasMaxIn = 0;
  /** Inbound topic aliases set by the client [MQTT-3.3.2-12]. */
  readonly aliasesIn = new Map<number, string>();
  /** Outbound topic aliases we assigned, by topic. */
  readonly aliasesOut = new Map<string, number>();
  /** Inbound QoS 1/2 publishes whose PUBACK/PUBREC is still waiting for the publish hook. */
  pendingAcks = 0;
  /** Inbound QoS 2 packet ids whose PUBREC is still waiting for the publish hook. */
  readonly pendingQos2 = new Set<number>();
  keepaliveMs = 0;
  /** Packets that arrived while CONNECT awaits its credential check; replayed once it is done. */
  private held: Packet[] | undefined;
  /** See {@link Sender.congested}: set when the send buffer passes maxSendBufferBytes, cleared when it drains. */
  congested = false;
  private slowTimer: TimerHandle | undefined;
  private readonly maxSendBufferBytes: number;
  private readonly writer: PacketWriter;
  private lastSeen: number;
  private keepaliveTimer: TimerHandle | undefined;
  private connectTimer: TimerHandle | undefined;
  /** `address:port` of the peer, for logs. */
  readonly remote: string;
  private readonly parser: ReturnType<typeof mqttPacket.parser>;
  private readonly framer: PacketFramer;
  private sawFirstByte = false;
  private readonly genOpts: { protocolVersion: ProtocolVersion } = { protocolVersion: 4 };

  constructor(
    private readonly ctx: BrokerContext,
    private readonly stream: Duplex,
    /** The peer and the listener that accepted it (auth, limits and logs read it). */
    readonly origin: StreamOrigin,
  ) {
    this.remote = origin.remote;
    this.lastSeen = ctx.clock.now();
    this.receiveMaximum = ctx.config.limits.maxInflight;
    this.maxSendBufferBytes = ctx.config.limits.maxSendBufferBytes;
    this.writer = new PacketWriter(stream);
    this.parser = mqttPacket.parser({ protocolVersion: 4 });
    hardenParser(this.parser);
    this.framer = new PacketFramer(ctx.config.limits.maxPacketSize);
    this.parser.on('packet', this.onPacket);
    this.parser.on('error', this.onParseError);
    stream.on('data', this.onData);
    stream.on('error', this.onStreamError);
    stream.on('close', this.onStreamClose);
    // [MQTT-3.1.4-1] a connection that sends no CONNECT in time is closed.
    this.connectTimer = ctx.clock.setTimeout(() => {
      if (this.state === 'new') {
        ctx.limitHits.hit('connectTimeouts', this.remote);
        this.destroy();
      }
    }, ctx.config.connectTimeoutMs);
  }

  get v5(): boolean {
    return this.protocolVersion === 5;
  }

  /** Called by the CONNECT handler once the client is accepted. */
  setProtocol(version: ProtocolVersion): void {
    this.protocolVersion = version;
    this.genOpts.protocolVersion = version;
  }

  connected(): void {
    this.state = 'connected';
    this.ctx.gate.release(this.origin.address);
    if (this.connectTimer) this.ctx.clock.clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this.armKeepalive();
  }

  private readonly onData = (chunk: Buffer): void => {
    this.lastSeen = this.ctx.clock.now();
    if (this.state === 'new' && !this.sawFirstByte && chunk.length > 0) {
      this.sawFirstByte = true;
      // [MQTT-3.1.0-1] anything but CONNECT first is closed at once, before any body is read.
      if (chunk[0]! >> 4 !== 1) {
        this.ctx.stats.protocolErrors++;
        this.ctx.log.debug({ remote: this.remote }, 'first packet is not CONNECT; closing');
        this.destroy();
        return;
      }
    }
    try {
      this.framer.push(chunk, this.onFrame);
    } catch (err) {
      this.onParseError(err as Error);
    }
  };

  /**
   * One complete packet. PUBLISH, the hot path, is decoded here directly; every other packet
   * goes through mqtt-packet's parser, which emits it synchronously to onPacket.
   */
  private readonly onFrame = (frame: Buffer, headerLength: number): boolean => {
    if (this.state === 'closed') return false;
    if (frame[0]! >> 4 === 3 && this.state === 'connected') {
      this.onPacket(decodePublish(frame, headerLength, this.protocolVersion === 5));
    } else {
      this.parser.parse(frame);
    }
    // The handler may have closed the connection.
    return (this.state as Connection['state']) !== 'closed';
  };

  /** CONNECT is waiting for its credential check: hold what the client sends meanwhile. */
  hold(): void {
    this.held = [];
  }

  /** The credential check is done: handles the held packets, in order. */
  release(): void {
    const held = this.held ?? [];
    this.held = undefined;
    for (const packet of held) this.onPacket(packet);
  }

  private readonly onPacket = (packet: Packet): void => {
    if (this.state === 'closed') return;
    if (this.held !== undefined) {
      // Bounded: a client may pipeline a few packets after CONNECT, not flood it.
      if (this.held.length >= MAX_HELD_PACKETS) return this.destroy();
      this.held.push(packet);
      return;
    }
    try {
      dispatch(this.ctx, this, packet);
    } catch (err) {
      this.ctx.log.error({ err, clientId: this.clientId, cmd: packet.cmd }, 'packet handler failed; closing the connection');
      this.protocolError(RC.implementationSpecificError, 'internal error');
    }
  };

  private readonly onParseError = (err: Error): void => {
    if (this.state === 'closed') return;
    const reasonCode = err instanceof PacketError || err instanceof FrameError ? err.reasonCode : RC.malformedPacket;
    if (this.state === 'new' && err.message === 'Invalid protocol version') {
      this.ctx.stats.protocolErrors++;
      // [MQTT-3.1.2-2] an unsupported protocol level gets CONNACK 0x01, then the close.
      this.out(mqttPacket.generate({ cmd: 'connack', sessionPresent: false, returnCode: 1 }, this.genOpts));
      this.ctx.stats.connectionsRejected++;
      return this.end();
    }
    if (reasonCode === RC.packetTooLarge) {
      // Hostile senders repeat this; counted and logged at most once per interval.
      this.ctx.limitHits.hit('packetsTooLarge', this.clientId || this.remote);
    } else {
      this.ctx.log.info({ clientId: this.clientId || undefined, remote: this.remote, reason: err.message }, 'malformed packet; closing the connection');
    }
    this.protocolError(reasonCode, err.message);
  };

  private readonly onStreamError = (err: Error): void => {
    this.ctx.log.debug({ err, clientId: this.clientId, remote: this.remote }, 'connection error');
    this.destroy();
  };

  private readonly onStreamClose = (): void => {
    this.destroy();
  };

  /**
   * Keepalive: the connection is closed when nothing arrived for 1.5 times the keepalive
   * [MQTT-3.1.2-24]. One timer per connection, re-armed for the remaining time when it
   * fires, instead of a new timer per packet.
   */
  private armKeepalive(): void {
    if (this.keepaliveMs === 0 || this.state === 'closed') return;
    const limit = this.keepaliveMs * 1.5;
    const due = this.lastSeen + limit - this.ctx.clock.now();
    this.keepaliveTimer = this.ctx.clock.setTimeout(() => {
      this.keepaliveTimer = undefined;
      if (this.state === 'closed') return;
      if (this.ctx.clock.now() - this.lastSeen >= limit) {
        this.ctx.log.info({ clientId: this.clientId }, 'keepalive timeout; closing the connection');
        this.disconnect(RC.keepAliveTimeout);
      } else {
        this.armKeepalive();
      }
    }, Math.max(due, 1));
  }

  /** Writes `buf` (then `payload`, not copied) after everything written before; see {@link PacketWriter}. */
  private out(buf: Buffer, payload?: Buffer): void {
    this.writer.write(buf, payload);
    if (!this.congested && this.stream.writableLength > this.maxSendBufferBytes) this.becameCongested();
  }

  /**
   * The client is not reading as fast as messages come: until the stream drains, QoS 0 is
   * dropped and QoS 1/2 waits in the session queue (see Session.deliver). If its buffer is
   * still over the cap after slowConsumerTimeoutMs, the client is disconnected (MQTT 5:
   * 0x97), so a stalled reader holds at most maxSendBufferBytes (plus what is in flight) for
   * that long.
   */
  private becameCongested(): void {
    this.congested = true;
    this.stream.once('drain', this.onDrain);
    this.slowTimer = this.ctx.clock.setTimeout(() => {
      this.slowTimer = undefined;
      if (this.state === 'closed' || !this.congested) return;
      // Read down below the cap without emptying (so no 'drain' yet): slow, not stalled.
      if (this.stream.writableLength <= this.maxSendBufferBytes) return this.onDrain();
      this.ctx.limitHits.hit('slowConsumersDisconnected', this.clientId || this.remote);
      this.disconnect(RC.quotaExceeded, 'send buffer did not drain in time');
    }, this.ctx.config.limits.slowConsumerTimeoutMs);
  }

  /** The send buffer drained: sending resumes, starting with what the session queued meanwhile. */
  private readonly onDrain = (): void => {
    this.congested = false;
    this.stream.off('drain', this.onDrain);
    if (this.slowTimer) this.ctx.clock.clearTimeout(this.slowTimer);
    this.slowTimer = undefined;
    if (this.state === 'connected' && this.session?.sender === this) this.session.pump();
  };

  /** Writes one packet (no-op once closed). */
  write(packet: Packet): void {
    if (this.state === 'closed') return;
    const ack = ACK_TYPES[packet.cmd];
    if (ack !== undefined && !(packet as { reasonCode?: number }).reasonCode && !(packet as { properties?: object }).properties) {
      // Hot path (every QoS 1/2 PUBLISH in): a successful acknowledgement.
      this.writer.writeAck(ack, (packet as { messageId: number }).messageId);
      return;
    }
    this.out(mqttPacket.generate(packet, this.genOpts));
  }

  /** Sends a PUBLISH to the client; see {@link Sender.sendPublish}. */
  sendPublish(delivery: Delivery, packetId: number, dup: boolean): boolean {
    if (this.state === 'closed') return true;
    const m = delivery.message;
    const v5 = this.protocolVersion === 5;
    if (!v5 || (m.properties === undefined && m.expiresAt === undefined && delivery.subscriptionIds === undefined && this.topicAliasMaxOut === 0)) {
      // Fast path: no properties to send.
      const { header, size } = encodePublishHeader(m.topic, delivery.qos, delivery.retain, dup, packetId, m.payload.length, v5);
      // [MQTT-3.1.2-24] never send a packet larger than the client's Maximum Packet Size.
      if (size > this.maxPacketSizeOut) return false;
      this.out(header, m.payload.length > 0 ? m.payload : undefined);
      return true;
    }
    let topic = m.topic;
    let newAlias = 0;
    const properties: MessageProperties & { topicAlias?: number; subscriptionIdentifier?: number | number[] } = m.properties ? { ...m.properties } : {};
    if (m.expiresAt !== undefined) {
      // [MQTT-3.3.2-6] forwarded with the time it has left.
      properties.messageExpiryInterval = Math.max(0, Math.ceil((m.expiresAt - this.ctx.clock.now()) / 1000));
    }
    const ids = delivery.subscriptionIds;
    if (ids) properties.subscriptionIdentifier = ids.length === 1 ? ids[0]! : (ids as number[]);
    if (this.topicAliasMaxOut > 0) {
      const alias = this.aliasesOut.get(topic);
      if (alias !== undefined) {
        properties.topicAlias = alias;
        topic = '';
      } else if (this.aliasesOut.size < this.topicAliasMaxOut) {
        newAlias = this.aliasesOut.size + 1;
        properties.topicAlias = newAlias;
      }
    }
    let buf: Buffer;
    try {
      buf = mqttPacket.generate(
        { cmd: 'publish', topic, payload: m.payload, qos: delivery.qos, retain: delivery.retain, dup, messageId: packetId, properties },
        this.genOpts,
      );
    } catch (err) {
      // One message that cannot be encoded for this client must not fail the publisher's packet.
      this.ctx.log.warn({ err, clientId: this.clientId, topic: m.topic }, 'could not encode a message for this client; skipped');
      return false;
    }
    // [MQTT-3.1.2-24] never send a packet larger than the client's Maximum Packet Size.
    if (buf.length > this.maxPacketSizeOut) return false;
    if (newAlias) this.aliasesOut.set(m.topic, newAlias);
    this.out(buf);
    return true;
  }

  sendPubrel(packetId: number): void {
    this.write({ cmd: 'pubrel', messageId: packetId, reasonCode: 0 });
  }

  /**
   * Ends the connection on our side: MQTT 5 clients get DISCONNECT with the reason first
   * [MQTT-4.13.1-1]; the will is published unless the client disconnected normally.
   */
  disconnect(reasonCode: number, reasonString?: string): void {
    if (this.state === 'closed') return;
    if (this.v5 && this.state === 'connected') {
      const properties = reasonString && this.requestProblemInformation ? { reasonString } : undefined;
      this.write({ cmd: 'disconnect', reasonCode, properties });
    }
    this.end();
  }

  /** A protocol violation by the client: counted, then {@link disconnect}. */
  protocolError(reasonCode: number, reason: string): void {
    this.ctx.stats.protocolErrors++;
    this.ctx.log.debug({ clientId: this.clientId, remote: this.remote, reasonCode, reason }, 'protocol error');
    this.disconnect(reasonCode, reason);
    // Read nothing more while the DISCONNECT flushes: a client streaming garbage (a 250 MB
    // body, say) would otherwise be read and thrown away at full speed until the close.
    this.stream.pause();
  }

  /** Flushes what was written, then closes. */
  end(): void {
    if (this.state === 'closed') return;
    this.writer.flush();
    this.stream.end();
    // A peer that never reads would keep a half-closed socket open; destroy shortly after.
    const t = this.ctx.clock.setTimeout(() => this.stream.destroy(), 1000);
    this.stream.once('close', () => this.ctx.clock.clearTimeout(t));
    this.destroy();
  }

  /** Closes at once and runs the end-of-connection steps exactly once. */
  destroy(): void {
    if (this.state === 'closed') return;
    const wasConnected = this.state === 'connected';
    if (this.state === 'new') this.ctx.gate.release(this.origin.address);
    this.state = 'closed';
    if (this.connectTimer) this.ctx.clock.clearTimeout(this.connectTimer);
    if (this.keepaliveTimer) this.ctx.clock.clearTimeout(this.keepaliveTimer);
    if (this.slowTimer) this.ctx.clock.clearTimeout(this.slowTimer);
    this.connectTimer = this.keepaliveTimer = this.slowTimer = undefined;
    this.stream.off('drain', this.onDrain);
    this.parser.removeAllListeners('packet');
    this.stream.off('data', this.onData);
    if (!this.stream.writableEnded) this.stream.destroy();
    this.ctx.connections.delete(this);
    if (wasConnected) this.ctx.connectionEnded(this);
  }
}
