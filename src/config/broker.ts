import path from 'node:path';
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

/** Default ports of the TLS and WebSocket listeners (IANA's 8883 for MQTT over TLS; 8080/8081 by custom). */
export const DEFAULT_MQTTS_PORT = 8883;
export const DEFAULT_WS_PORT = 8080;
export const DEFAULT_WSS_PORT = 8081;
/** The HTTP path MQTT clients conventionally upgrade on. */
export const DEFAULT_WS_PATH = '/mqtt';
export const DEFAULT_TLS_MIN_VERSION = 'TLSv1.2';
export const DEFAULT_CERTIFICATE_USERNAME = 'CN';

/** TLS versions a listener may require at least; TLS 1.0 and 1.1 are never offered. */
export const TLS_VERSIONS = ['TLSv1.2', 'TLSv1.3'] as const;

/**
 * TLS settings of `mqtts` and `wss`. File paths are relative to the config file's folder
 * (the loader resolves them and checks the files at config time).
 */
export const tlsListenerFields = {
  cert: z.string().min(1).describe('PEM server certificate file (intermediate certificates may follow it), relative to the config file. Required.'),
  key: z.string().min(1).describe('PEM private key file of `cert`, relative to the config file. Required.'),
  passphrase: z.string().optional().describe('Passphrase of an encrypted `key`; write it as ${env:NAME}. Default none.'),
  ca: z
    .string().min(1).optional()
    .describe('PEM file of the CA certificate(s) that sign client certificates, relative to the config file. Required with requireCertificate. Default none.'),
  requireCertificate: z
    .boolean()
    .default(false)
    .describe('Ask every client for a certificate signed by `ca` and refuse the connection without a valid one (before any MQTT byte is read). Default false.'),
  certificateUsername: z
    .enum(['CN', 'none'])
    .default(DEFAULT_CERTIFICATE_USERNAME)
    .describe('With requireCertificate: the client certificate field that becomes the connection\'s certificate username: CN (subject common name) or none. Default CN.'),
  minVersion: z
    .enum(TLS_VERSIONS, { error: () => `must be ${TLS_VERSIONS.join(' or ')} (TLS 1.0 and 1.1 are not supported)` })
    .default(DEFAULT_TLS_MIN_VERSION)
    .describe(`Oldest TLS version accepted: TLSv1.2 or TLSv1.3. Default ${DEFAULT_TLS_MIN_VERSION}.`),
  ciphers: z
    .string().min(1).optional()
    .describe("OpenSSL cipher list for TLS 1.2 (TLS 1.3 suites are OpenSSL's defaults). Default Node.js's default list."),
};

/** Settings of the WebSocket listeners. */
export const wsListenerFields = {
  path: z
    .string()
    .regex(/^\/[^\s?#]*$/, 'must start with / and contain no spaces, ? or #')
    .default(DEFAULT_WS_PATH)
    .describe(`HTTP path the WebSocket upgrade must request; any other path gets 404. Default ${DEFAULT_WS_PATH}.`),
};

/** `requireCertificate` checks client certificates against `ca`, so it needs one. */
const caForClientCertificates = (l: { requireCertificate: boolean; ca?: string | undefined }, ctx: z.RefinementCtx) => {
  if (l.requireCertificate && l.ca === undefined) {
    ctx.addIssue({ code: 'custom', path: ['requireCertificate'], message: 'requireCertificate needs `ca`, the CA file that signs the client certificates' });
  }
};

export const mqttListenerSchema = z
  .object({
    type: z.literal('mqtt').describe('MQTT over plain TCP.'),
    ...listenerCommonFields,
    port: port.default(DEFAULT_PORT).describe(`TCP port; 0 lets the OS choose. Default ${DEFAULT_PORT}.`),
  })
  .strict();

/** `type: mqtts`: MQTT over TLS. */
export const mqttsListenerSchema = z
  .object({
    type: z.literal('mqtts').describe('MQTT over TLS.'),
    ...listenerCommonFields,
    port: port.default(DEFAULT_MQTTS_PORT).describe(`TCP port; 0 lets the OS choose. Default ${DEFAULT_MQTTS_PORT}.`),
    ...tlsListenerFields,
  })
  .strict()
  .superRefine(caForClientCertificates);

/** `type: ws`: MQTT over WebSocket. */
export const wsListenerSchema = z
  .object({
    type: z.literal('ws').describe('MQTT over WebSocket (plain HTTP).'),
    ...listenerCommonFields,
    port: port.default(DEFAULT_WS_PORT).describe(`TCP port; 0 lets the OS choose. Default ${DEFAULT_WS_PORT}.`),
    ...wsListenerFields,
  })
  .strict();

/** `type: wss`: MQTT over WebSocket over TLS. */
export const wssListenerSchema = z
  .object({
    type: z.literal('wss').describe('MQTT over WebSocket over TLS (HTTPS).'),
    ...listenerCommonFields,
    port: port.default(DEFAULT_WSS_PORT).describe(`TCP port; 0 lets the OS choose. Default ${DEFAULT_WSS_PORT}.`),
    ...wsListenerFields,
    ...tlsListenerFields,
  })
  .strict()
  .superRefine(caForClientCertificates);

/** The listener types, by `type`. */
export const LISTENER_TYPES = ['mqtt', 'mqtts', 'ws', 'wss'] as const;

export const listenerSchema = z.discriminatedUnion('type', [mqttListenerSchema, mqttsListenerSchema, wsListenerSchema, wssListenerSchema], {
  error: (issue) => (issue.code === 'invalid_union' ? `listener type must be one of ${LISTENER_TYPES.join(', ')}` : undefined),
});

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

/** Verified passwords remembered per process so a reconnect skips scrypt; see README "Authentication and ACLs". */
export const DEFAULT_CREDENTIAL_CACHE = 1000;

export const authSchema = z
  .object({
    users: z
      .string().min(1)
      .optional()
      .describe('Users file (YAML, scrypt password hashes, written by `signalbox passwd`), relative to the config file. Default none.'),
    anonymous: z
      .boolean()
      .optional()
      .describe('Whether clients may connect without credentials; a listener\'s own `anonymous` overrides it. Default: only on loopback listeners, and only without a users file.'),
    credentialCache: z
      .number().int().min(0).max(1_000_000)
      .default(DEFAULT_CREDENTIAL_CACHE)
      .describe(`Verified username/password pairs kept in memory (as keyed HMACs) so a reconnect skips scrypt; 0 turns it off. Default ${DEFAULT_CREDENTIAL_CACHE}.`),
  })
  .strict();

const aclFilter = z.string().min(1).max(65_535);
/** One item of an ACL rule: the topic filters it covers for publishing and/or reading. */
export const aclItemSchema = z
  .object({
    publish: aclFilter.optional().describe('Topic filter (with %u and %c) the client may (allow) or may not (deny) publish to.'),
    subscribe: aclFilter.optional().describe('Topic filter (with %u and %c) the client may (allow) or may not (deny) subscribe to and receive.'),
  })
  .strict()
  .refine((i) => i.publish !== undefined || i.subscribe !== undefined, { message: 'an ACL item needs `publish:` or `subscribe:` (or both)' });

/** One ACL rule: whom it applies to, and the filters it allows or denies. */
export const aclRuleSchema = z
  .object({
    user: z.string().optional().describe('The authenticated username it applies to, or "*" for any authenticated user. Default: every client, anonymous ones included.'),
    clientId: z.string().optional().describe('The client id it applies to; a trailing "*" matches any id with that prefix. Default: any.'),
    allow: z.array(aclItemSchema).optional().describe('Filters this rule allows.'),
    deny: z.array(aclItemSchema).optional().describe('Filters this rule denies.'),
  })
  .strict()
  .refine((r) => (r.allow === undefined) !== (r.deny === undefined), { message: 'an ACL rule has exactly one of `allow:` or `deny:`' });

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
    auth: authSchema.default(() => authSchema.parse({})).describe('Who may connect. Default: no users file; anonymous on loopback listeners only.'),
    acl: z
      .array(aclRuleSchema)
      .optional()
      .describe('Ordered allow/deny rules for publishing and receiving; the first matching item decides, and anything unmatched is denied. Default: none (every client may publish and subscribe to anything).'),
  })
  .strict();

/** The `broker:` section of signalbox.yaml as written by the user. */
export type BrokerConfigInput = z.input<typeof brokerSchema>;
/** The `broker:` section after validation, with every default filled in. */
export type BrokerConfig = z.output<typeof brokerSchema>;
export type ListenerConfig = z.output<typeof listenerSchema>;
/** A listener that speaks TLS (`mqtts`, `wss`). */
export type TlsListenerConfig = Extract<ListenerConfig, { type: 'mqtts' | 'wss' }>;
export type Limits = z.output<typeof limitsSchema>;
export type AuthConfig = z.output<typeof authSchema>;
export type AclRule = z.output<typeof aclRuleSchema>;

/** Validates a `broker:` section (throws zod's error; the config loader reports it with positions). */
export function parseBrokerConfig(input: unknown): BrokerConfig {
  return brokerSchema.parse(input ?? {});
}

/**
 * A listener with its certificate, key and CA paths made absolute against `baseDir` (the
 * config file's folder); other listener types come back unchanged.
 */
export function resolveListenerPaths(listener: ListenerConfig, baseDir: string): ListenerConfig {
  if (listener.type !== 'mqtts' && listener.type !== 'wss') return listener;
  const resolve = (p: string) => path.resolve(baseDir, p);
  return { ...listener, cert: resolve(listener.cert), key: resolve(listener.key), ca: listener.ca === undefined ? undefined : resolve(listener.ca) };
}
