import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from 'mqtt';
import { createBroker, type Broker, type BrokerDeps } from '../../src/broker/broker.js';
import { parseBrokerConfig, type BrokerConfigInput } from '../../src/config/broker.js';
import { silentLogger } from '../../src/log.js';

export interface TestBroker {
  broker: Broker;
  port: number;
  /** mqtt://127.0.0.1:<port> */
  url: string;
  close(): Promise<void>;
}

/**
 * Starts a real broker on 127.0.0.1 with an OS-chosen port. `config` overrides the `broker:`
 * section (listeners default to one mqtt listener on port 0).
 */
export async function startBroker(config: BrokerConfigInput = {}, deps: Partial<BrokerDeps> = {}): Promise<TestBroker> {
  const parsed = parseBrokerConfig({ listeners: [{ type: 'mqtt', host: '127.0.0.1', port: 0 }], ...config });
  const broker = createBroker(parsed, { log: silentLogger(), ...deps });
  const addresses = await broker.listen();
  const port = addresses[0]!.port;
  return { broker, port, url: `mqtt://127.0.0.1:${port}`, close: () => broker.close() };
}

/** Connects an MQTT.js client (protocolVersion 4 unless given) and waits for CONNACK. */
export async function connect(url: string, options: IClientOptions = {}): Promise<MqttClient> {
  return mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options });
}

export interface Received {
  topic: string;
  payload: Buffer;
  packet: IPublishPacket;
}

/**
 * Marks a promise as handled without changing what it resolves or rejects with: tests start
 * waiting before they publish and await later, so a rejection in between must not count as
 * unhandled.
 */
export function quiet<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}

/** Resolves with the next message the client receives, or rejects after `within` ms. */
export function nextMessage(client: MqttClient, { within = 2000 }: { within?: number } = {}): Promise<Received> {
  return quiet(collect(client, 1, { within }).then((all) => all[0]!));
}

/** Resolves with the next `count` messages the client receives, or rejects after `within` ms. */
export function collect(client: MqttClient, count: number, { within = 2000 }: { within?: number } = {}): Promise<Received[]> {
  return quiet(new Promise((resolve, reject) => {
    const got: Received[] = [];
    const onMessage = (topic: string, payload: Buffer, packet: IPublishPacket) => {
      got.push({ topic, payload, packet });
      if (got.length >= count) finish();
    };
    const timer = setTimeout(() => {
      client.off('message', onMessage);
      reject(new Error(`expected ${count} message(s) within ${within} ms, got ${got.length}: ${got.map((m) => m.topic).join(', ')}`));
    }, within);
    const finish = () => {
      clearTimeout(timer);
      client.off('message', onMessage);
      resolve(got);
    };
    client.on('message', onMessage);
  }));
}

/** Resolves when no message arrives for `forMs` ms; rejects with the message if one does. */
export function noMessage(client: MqttClient, { forMs = 300 }: { forMs?: number } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (topic: string) => {
      clearTimeout(timer);
      client.off('message', onMessage);
      reject(new Error(`expected no message, got one on ${topic}`));
    };
    const timer = setTimeout(() => {
      client.off('message', onMessage);
      resolve();
    }, forMs);
    client.on('message', onMessage);
  });
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Listener = (...args: any[]) => void;

/** Waits for an event with a deadline (any emitter with once/off: EventEmitter, MqttClient, sockets). */
export function waitFor<T = unknown>(emitter: { once(event: string, fn: Listener): unknown; off(event: string, fn: Listener): unknown }, event: string, { within = 2000 } = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, on);
      reject(new Error(`no '${event}' within ${within} ms`));
    }, within);
    const on = (value: T) => {
      clearTimeout(timer);
      resolve(value);
    };
    emitter.once(event, on);
  });
}
