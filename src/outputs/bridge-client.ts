import { readFileSync } from 'node:fs';
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import type { Clock, TimerHandle } from '../clock.js';
import type { MessageProperties, QoS } from '../broker/types.js';
import type { Logger } from '../log.js';
import { matchesFilter } from '../topics/match.js';
import type { ResolvedBridgeSettings } from './bridge.js';
import type { TopicMapping } from './bridge-mapping.js';
import { backoffDelay } from './backoff.js';
import { divertAcks } from './bridge-acks.js';
import { BridgeSender, FIRST_ID, mqttjsIdProvider } from './bridge-sender.js';
import { OutputError, type Connector, type OutboxMessage } from './connector.js';

/** MQTT 5 user property counting how many bridges a message crossed; bridges stop forwarding at `maxHops`. */
export const HOPS_PROPERTY = 'signalbox-hops';

/** Publishes into the local broker as if from a client (the bridge's in direction). */
export type LocalPublish = (input: {
  topic: string;
  payload: Buffer;
  qos: QoS;
  retain: boolean;
  properties?: MessageProperties;
  clientId: string;
}) => Promise<void>;

export interface BridgeClientDeps {
  log: Logger;
  clock: Clock;
  publishLocal: LocalPublish | undefined;
  random?: () => number;
}

type State = 'connecting' | 'online' | 'offline' | 'stopped';

/** How long a stop waits for the remote to take the offline status and the DISCONNECT. */
const CLOSE_TIMEOUT_MS = 1000;

/** How long one batch may wait for the remote's acknowledgements before the connection is dropped and it is retried. */
const WRITE_TIMEOUT_MS = 30_000;

/** Batches the drain may hand over before the first is acknowledged. */
const MAX_CONCURRENT_WRITES = 16;

/**
 * One bridge: an MQTT.js connection to the remote broker. Out: the outbox drain hands it
 * batches, which it publishes and confirms once the remote acknowledged them (PUBACK /
 * PUBCOMP; QoS 0 once written). In: remote messages are published into the local broker,
 * and a QoS 1/2 one is acknowledged to the remote only after the local commit. Reconnects
 * with exponential backoff and jitter, and reports its state on both sides.
 */
export class BridgeClient implements Connector {
  /** Batches stream back to back; the sender's window (Receive Maximum) is the real limit. */
  readonly maxConcurrentWrites = MAX_CONCURRENT_WRITES;
  private client: MqttClient | undefined;
  private readonly sender: BridgeSender;
  private state: State = 'connecting';
  private failures = 0;
  private reconnectTimer: TimerHandle | undefined;
  private readonly localClientId: string;

  constructor(
    readonly name: string,
    private readonly settings: ResolvedBridgeSettings,
    private readonly inMappings: readonly TopicMapping[],
    private readonly deps: BridgeClientDeps,
  ) {
    this.localClientId = `$bridge/${name}`;
    this.sender = new BridgeSender(name, HOPS_PROPERTY);
  }

  get connected(): boolean {
    return this.state === 'online';
  }

  start(): void {
    this.connect();
  }

  private options(): IClientOptions {
    const s = this.settings;
    const status = s.status;
    const options: IClientOptions = {
      clientId: s.clientId,
      username: s.username,
      password: s.password,
      protocolVersion: s.protocolVersion,
      keepalive: s.keepalive,
      clean: s.cleanSession,
      reconnectPeriod: 0, // reconnects are ours, with backoff and jitter
      connectTimeout: s.connectTimeoutMs,
      queueQoSZero: false,
      rejectUnauthorized: s.rejectUnauthorized,
      customHandleAcks: this.onRemoteMessage,
      // Identifiers 1..1023 for MQTT.js's own packets; the sender uses the rest.
      messageIdProvider: mqttjsIdProvider(),
      // MQTT.js formats a debug line per packet unless given a logger; ours logs what matters.
      log: () => undefined,
      will: { topic: status.topic, payload: Buffer.from(status.offline), qos: 1, retain: true },
    };
    if (s.protocolVersion === 5) options.properties = { sessionExpiryInterval: s.cleanSession ? 0 : s.sessionExpiryS };
    if (s.ca) options.ca = readFileSync(s.ca);
    if (s.cert) options.cert = readFileSync(s.cert);
    if (s.key) options.key = readFileSync(s.key);
    return options;
  }

  private connect(): void {
    if (this.state === 'stopped') return;
    this.setState('connecting');
    let client: MqttClient;
    try {
      client = mqtt.connect(this.settings.url, { ...this.options(), manualConnect: true });
      // The remote's acknowledgements of what the sender wrote go straight to it, not through MQTT.js.
      divertAcks(client, FIRST_ID, {
        onAck: (type, id, reasonCode) => {
          if (this.client === client) this.sender.onAck(type, id, reasonCode);
        },
        onMalformed: (reason) => this.deps.log.warn({ bridge: this.name, url: this.settings.url, error: reason }, 'the remote broker sent a malformed packet; reconnecting'),
      }, () => this.deps.clock.now());
      this.client = client;
      client.connect();
    } catch (err) {
      this.deps.log.error({ err, bridge: this.name }, 'bridge cannot connect: bad settings');
      this.scheduleReconnect();
      return;
    }
    client.on('connect', (connack) => {
      const props = (connack as { properties?: { receiveMaximum?: number; maximumPacketSize?: number } }).properties;
      const window = Math.max(1, Math.min(this.settings.maxInflight, props?.receiveMaximum ?? 65_535));
      this.sender.attach(client.stream, { window, maxPacketSize: props?.maximumPacketSize ?? Infinity }, this.settings.protocolVersion === 5, connack.sessionPresent === true);
      void this.onConnect(client);
    });
    if (this.settings.protocolVersion === 5) {
      // QoS 1/2 arrive through customHandleAcks (acknowledged after the local commit).
      client.on('message', (_topic, _payload, packet) => {
        if (packet.qos === 0) this.forwardIn(packet).catch(() => undefined);
      });
    } else {
      // MQTT.js offers customHandleAcks to MQTT 5 only; for 3.1.1 it sends PUBACK (and
      // PUBCOMP) when handleMessage calls back, so that waits for the local commit instead.
      // A QoS 2 PUBREC still goes out on receipt there.
      client.handleMessage = (packet, callback) => {
        this.forwardIn(packet).then(
          () => callback(),
          (err: unknown) => {
            this.deps.log.warn({ err, bridge: this.name, topic: packet.topic }, 'remote message not stored locally; not acknowledged (the remote resends it)');
            callback(err instanceof Error ? err : new Error(String(err)));
            client.stream.destroy();
          },
        );
      };
    }
    client.on('error', (err) => {
      const e = err as Error & { code?: string | number };
      // A refused CONNACK, a TLS failure, an unreachable host: each says why.
      this.deps.log.warn({ bridge: this.name, url: this.settings.url, error: e.message, code: e.code }, describeError(e));
    });
    client.on('close', () => {
      if (this.client !== client) return;
      this.sender.detach('lost its connection during a write');
      if (this.state === 'online') this.deps.log.warn({ bridge: this.name, url: this.settings.url }, 'bridge disconnected from the remote broker');
      this.setState('offline');
      this.scheduleReconnect();
    });
  }

  private async onConnect(client: MqttClient): Promise<void> {
    this.failures = 0;
    this.deps.log.info({ bridge: this.name, url: this.settings.url }, 'bridge connected');
    const status = this.settings.status;
    client.publish(status.topic, status.online, { qos: 1, retain: true });
    const subs = this.inMappings.map((m, i) => ({ topic: m.from, qos: this.settings.in[i]!.qos }));
    if (subs.length > 0) {
      try {
        // MQTT 5: No Local, so our own out-publishes on this connection never come back in
        // [MQTT-3.8.3-3], and Retain As Published. MQTT 3.1.1 has neither (its subscription
        // options byte must carry the QoS alone).
        const v5 = this.settings.protocolVersion === 5;
        await client.subscribeAsync(Object.fromEntries(subs.map((s) => [s.topic, v5 ? { qos: s.qos as QoS, nl: true, rap: true } : { qos: s.qos as QoS }])));
      } catch (err) {
        this.deps.log.warn({ err, bridge: this.name }, 'bridge could not subscribe to its in mappings');
      }
    }
    if (this.client === client) this.setState('online');
  }

  private setState(state: State): void {
    if (this.state === state || this.state === 'stopped') return;
    this.state = state;
    this.deps.publishLocal?.({ topic: `$SYS/signalbox/bridges/${this.name}/state`, payload: Buffer.from(state), qos: 0, retain: true, clientId: this.localClientId }).catch(() => undefined);
  }

  private scheduleReconnect(): void {
    if (this.state === 'stopped' || this.reconnectTimer) return;
    this.failures++;
    const { retryMinMs, retryMaxMs } = this.settings.reconnect;
    const delay = backoffDelay(this.failures, retryMinMs, retryMaxMs, this.deps.random);
    this.reconnectTimer = this.deps.clock.setTimeout(() => {
      this.reconnectTimer = undefined;
      const old = this.client;
      this.client = undefined;
      old?.removeAllListeners();
      old?.on('error', () => undefined);
      old?.end(true);
      this.connect();
    }, delay);
  }

  /** QoS 1/2 from the remote: publish locally; the remote gets PUBACK/PUBREC after the local commit. */
  private readonly onRemoteMessage = (_topic: string, _payload: Buffer, packet: IPublishPacket, done: (error: Error | number, code?: number) => void): void => {
    this.forwardIn(packet).then(
      () => done(0),
      (err: unknown) => {
        this.deps.log.warn({ err, bridge: this.name, topic: packet.topic }, 'remote message not stored locally; not acknowledged (the remote resends it)');
        done(err instanceof Error ? err : new Error(String(err)));
        this.client?.stream.destroy();
      },
    );
  };

  private forwardIn(packet: IPublishPacket): Promise<void> {
    const mapping = this.inMappings.find((m) => matchesFilter(m.from, packet.topic));
    const topic = mapping?.map(packet.topic);
    if (topic === undefined || !this.deps.publishLocal) {
      this.deps.log.debug({ bridge: this.name, topic: packet.topic }, 'remote message maps to no local topic; skipped');
      return Promise.resolve();
    }
    const { topicAlias: _a, subscriptionIdentifier: _s, ...properties } = packet.properties ?? {};
    return this.deps.publishLocal({
      topic,
      payload: packet.payload as Buffer,
      qos: packet.qos,
      retain: packet.retain,
      properties: Object.keys(properties).length > 0 ? (properties as MessageProperties) : undefined,
      clientId: this.localClientId,
    });
  }

  async write(batch: readonly OutboxMessage[]): Promise<void> {
    const client = this.client;
    if (!client || this.state !== 'online') {
      throw new OutputError(`bridge "${this.name}" is not connected to ${this.settings.url}`, { retryable: true });
    }
    let timer: TimerHandle | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = this.deps.clock.setTimeout(() => {
        // A remote that stops acknowledging: start over on a new connection.
        reject(new OutputError(`bridge "${this.name}": no acknowledgement within ${WRITE_TIMEOUT_MS} ms`, { retryable: true }));
        if (this.client === client) client.stream.destroy();
      }, WRITE_TIMEOUT_MS);
    });
    try {
      await Promise.race([this.sender.send(batch), timeout]);
    } finally {
      if (timer) this.deps.clock.clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    const client = this.client;
    this.state = 'stopped';
    if (this.reconnectTimer) this.deps.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = undefined;
    this.client = undefined;
    this.sender.detach('stopped');
    if (!client) return;
    // Bounded: a remote that stopped answering must not hold up shutdown or a reload.
    const deadline = <T>(p: Promise<T>) => Promise.race([p, new Promise<void>((resolve) => setTimeout(resolve, CLOSE_TIMEOUT_MS).unref())]);
    if (client.connected) {
      // A clean stop says offline itself (the will covers a crash).
      await deadline(new Promise<void>((resolve) => client.publish(this.settings.status.topic, this.settings.status.offline, { qos: 1, retain: true }, () => resolve())));
    }
    await deadline(client.endAsync().catch(() => undefined));
    client.end(true);
    this.deps.publishLocal?.({ topic: `$SYS/signalbox/bridges/${this.name}/state`, payload: Buffer.from('stopped'), qos: 0, retain: true, clientId: this.localClientId }).catch(() => undefined);
  }
}

function describeError(e: Error & { code?: string | number }): string {
  if (typeof e.code === 'number') return `bridge connection refused by the remote broker (CONNACK code ${e.code}): check username, password and client id`;
  if (e.code === 'ECONNREFUSED') return 'bridge cannot reach the remote broker (connection refused); retrying';
  if (e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN') return 'bridge cannot resolve the remote host; retrying';
  if (typeof e.code === 'string' && /TLS|SSL|CERT|SIGNATURE|UNABLE_TO_(GET|VERIFY)/.test(e.code)) return 'bridge TLS handshake failed: check ca, cert, key and the server name';
  return 'bridge connection error; retrying';
}
