import { z } from 'zod';
import { parseSize } from './units.js';

/** Default listener: loopback only, so a fresh install is never reachable from the network. */
export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 1883;
export const DEFAULT_MAX_PACKET_SIZE = 256 * 1024;
export const DEFAULT_MAX_QUEUED = 1000;
export const DEFAULT_MAX_INFLIGHT = 100;
export const DEFAULT_MAX_TOPIC_ALIAS = 10;
export const DEFAULT_MAX_KEEPALIVE_S = 65_535;
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_MAX_SESSION_EXPIRY_S = 7 * 24 * 3600;
export const DEFAULT_MAX_CLIENT_ID_LENGTH = 256;
export const DEFAULT_MAX_SUBSCRIPTIONS = 1000;
/** About 9 KiB of memory per idle connection (bench/README.md), so 10,000 take about 90 MiB. */
export const DEFAULT_MAX_CONNECTIONS = 10_000;
export const DEFAULT_MAX_PENDING_CONNECTIONS_PER_IP = 100;
export const DEFAULT_MAX_CONNECT_RATE_PER_IP = 100;
export const DEFAULT_MAX_RETAINED = 100_000;
export const DEFAULT_MAX_RETAINED_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_SEND_BUFFER_BYTES = 4 * 1024 * 1024;
export const DEFAULT_SLOW_CONSUMER_TIMEOUT_MS = 30_000;

const size = (what: string) =>
  z
    .union([z.number(), z.string()])
    .transform((v, ctx) => {
      const bytes = parseSize(v);
      if (bytes === undefined) {
        ctx.addIssue({ code: 'custom', message: `${what} must be a size such as 262144, "256KiB" or "1MiB", got ${JSON.stringify(v)}` });
        return z.NEVER;
      }
      return bytes;
    });

export const port = z.number().int().min(0).max(65_535);

/** Settings every listener type has besides its address. */
export const listenerCommonFields = {
  host: z.string().min(1).default(DEFAULT_HOST).describe(`Address to bind. Default ${DEFAULT_HOST} (loopback only).`),
  anonymous: z
    .boolean()
    .optional()
    .describe('Whether clients may connect without credentials on this listener, overriding broker.auth.anonymous.'),
};

export const mqttListenerSchema = z
  .object({
    type: z.literal('mqtt').describe('MQTT over plain TCP.'),
    ...listenerCommonFields,
    port: port.default(DEFAULT_PORT).describe(`TCP port; 0 lets the OS choose. Default ${DEFAULT_PORT}.`),
  })
  .strict();

export const listenerSchema = z.discriminatedUnion('type', [mqttListenerSchema]);

export const limitsSchema = z
  .object({
    maxPacketSize: size('maxPacketSize')
      .default(DEFAULT_MAX_PACKET_SIZE)
      .describe('Largest MQTT packet accepted, in bytes; larger ones are refused as soon as their header is read. Default 256KiB.'),
    maxQueued: z
      .number().int().min(1)
      .default(DEFAULT_MAX_QUEUED)
      .describe(`QoS 1/2 messages queued per offline or slow client; the oldest overflow is dropped, counted and logged. Default ${DEFAULT_MAX_QUEUED}.`),
    maxInflight: z
      .number().int().min(1).max(65_535)
      .default(DEFAULT_MAX_INFLIGHT)
      .describe(`Unacknowledged QoS 1/2 messages per client in each direction (MQTT 5 Receive Maximum). Default ${DEFAULT_MAX_INFLIGHT}.`),
    maxTopicAlias: z
      .number().int().min(0).max(65_535)
      .default(DEFAULT_MAX_TOPIC_ALIAS)
      .describe(`Topic aliases a MQTT 5 client may set towards the broker (Topic Alias Maximum). Default ${DEFAULT_MAX_TOPIC_ALIAS}.`),
    maxSessionExpiryS: z
      .number().int().min(0).max(0xffff_ffff)
      .default(DEFAULT_MAX_SESSION_EXPIRY_S)
      .describe('Longest a persistent session outlives its connection, in seconds (also applied to MQTT 3.1.1 clean-session=false clients). Default 604800 (7 days).'),
    maxClientIdLength: z
      .number().int().min(23).max(65_535)
      .default(DEFAULT_MAX_CLIENT_ID_LENGTH)
      .describe(`Longest client id accepted, in characters. Default ${DEFAULT_MAX_CLIENT_ID_LENGTH}.`),
    maxSubscriptions: z
      .number().int().min(1)
      .default(DEFAULT_MAX_SUBSCRIPTIONS)
      .describe(`Subscriptions one client may hold; more are refused in SUBACK (MQTT 5: 0x97 Quota exceeded, 3.1.1: 0x80). Default ${DEFAULT_MAX_SUBSCRIPTIONS}.`),
    maxConnections: z
      .number().int().min(1)
      .default(DEFAULT_MAX_CONNECTIONS)
      .describe(`Open client connections at most, over all listeners; more are closed as they are accepted. Default ${DEFAULT_MAX_CONNECTIONS}.`),
    maxPendingConnectionsPerIp: z
      .number().int().min(1)
      .default(DEFAULT_MAX_PENDING_CONNECTIONS_PER_IP)
      .describe(`Connections from one IP address that have not completed CONNECT yet; more from that address are closed as they are accepted. Default ${DEFAULT_MAX_PENDING_CONNECTIONS_PER_IP}.`),
    maxConnectRatePerIp: z
      .number().int().min(1)
      .default(DEFAULT_MAX_CONNECT_RATE_PER_IP)
      .describe(`New connections per second from one IP address (a token bucket holding one second's worth); more are closed as they are accepted. Default ${DEFAULT_MAX_CONNECT_RATE_PER_IP}.`),
    maxRetained: z
      .number().int().min(1)
      .default(DEFAULT_MAX_RETAINED)
      .describe(`Retained messages held at most; a retained publish to a new topic beyond it is delivered but not retained. Default ${DEFAULT_MAX_RETAINED}.`),
    maxRetainedBytes: size('maxRetainedBytes')
      .default(DEFAULT_MAX_RETAINED_BYTES)
      .describe('Bytes of retained messages (payload plus topic) held at most; a retained publish to a new topic beyond it is delivered but not retained. Default 64MiB.'),
    maxSendBufferBytes: size('maxSendBufferBytes')
      .pipe(z.number().min(64 * 1024, 'maxSendBufferBytes must be at least 64KiB'))
      .default(DEFAULT_MAX_SEND_BUFFER_BYTES)
      .describe('Bytes waiting to be sent to one client at most; beyond it QoS 0 messages to that client are dropped and QoS 1/2 wait in its queue until it drains. At least 64KiB. Default 4MiB.'),
    slowConsumerTimeoutMs: z
      .number().int().min(1)
      .default(DEFAULT_SLOW_CONSUMER_TIMEOUT_MS)
      .describe(`A client whose send buffer went over maxSendBufferBytes and is still over it this many milliseconds later is disconnected (MQTT 5: DISCONNECT 0x97). Default ${DEFAULT_SLOW_CONSUMER_TIMEOUT_MS}.`),
  })
  .strict();

export const brokerSchema = z
  .object({
    listeners: z
      .array(listenerSchema)
      .min(1)
      .default([{ type: 'mqtt', host: DEFAULT_HOST, port: DEFAULT_PORT }])
      .describe('Where the broker listens. Default one MQTT listener on 127.0.0.1:1883.'),
    limits: limitsSchema.default(() => limitsSchema.parse({})),
    maxKeepalive: z
      .number().int().min(1).max(65_535)
      .default(DEFAULT_MAX_KEEPALIVE_S)
      .describe('Largest keepalive a client may use, in seconds; MQTT 5 clients asking for more (or for 0) are told this value as Server Keep Alive. Default 65535.'),
    connectTimeoutMs: z
      .number().int().min(1)
      .default(DEFAULT_CONNECT_TIMEOUT_MS)
      .describe(`A new connection must send CONNECT within this many milliseconds. Default ${DEFAULT_CONNECT_TIMEOUT_MS}.`),
  })
  .strict();

/** The `broker:` section of signalbox.yaml as written by the user. */
export type BrokerConfigInput = z.input<typeof brokerSchema>;
/** The `broker:` section after validation, with every default filled in. */
export type BrokerConfig = z.output<typeof brokerSchema>;
export type ListenerConfig = z.output<typeof listenerSchema>;
export type Limits = z.output<typeof limitsSchema>;

/** Validates a `broker:` section (throws zod's error; the config loader reports it with positions). */
export function parseBrokerConfig(input: unknown): BrokerConfig {
  return brokerSchema.parse(input ?? {});
}
