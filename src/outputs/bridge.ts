import path from 'node:path';
import { z } from 'zod';
import type { CompiledRule } from '../rules/compile.js';
import type { RuleInput } from '../engine/message.js';
import { BridgeClient, HOPS_PROPERTY } from './bridge-client.js';
import { compileMapping, mappingsEcho, type TopicMapping } from './bridge-mapping.js';
import { qosSchema } from './common.js';
import type { ConnectorType } from './connector.js';
import { remoteActionFields, remoteActionType, remoteEffect } from './remote.js';
import type { Effect } from './types.js';

/** Bridge hops after which a message is not forwarded again (MQTT 5 remotes). */
export const DEFAULT_BRIDGE_MAX_HOPS = 4;
/** Unacknowledged messages towards an MQTT 5 remote, when its Receive Maximum allows as many. */
export const DEFAULT_BRIDGE_MAX_INFLIGHT = 1000;
/**
 * Towards an MQTT 3.1.1 remote, which cannot announce a Receive Maximum: Mosquitto's default
 * `max_inflight_messages` (and what its own bridges send with). Once unfinished QoS 2
 * messages fill it, Mosquitto drops what arrives while still acknowledging it.
 */
export const DEFAULT_BRIDGE_MAX_INFLIGHT_V4 = 20;

const mappingOut = z
  .object({
    local: z.string().min(1).describe('Local topic filter whose messages go out.'),
    remote: z.string().min(1).describe('Remote topic (filter of the same shape): the literal prefix replaces the local one, e.g. telemetry/# → site-a/telemetry/#.'),
    qos: qosSchema.optional().describe('QoS at the remote. Default: the message\'s QoS.'),
    retain: z.enum(['keep', 'always', 'never']).default('keep').describe('Retain flag at the remote: keep the message\'s (default), always set, never set.'),
  })
  .strict();

const mappingIn = z
  .object({
    remote: z.string().min(1).describe('Remote topic filter to subscribe to.'),
    local: z.string().min(1).describe('Local topic (filter of the same shape) the messages are published on.'),
    qos: qosSchema.default(1).describe('Subscription QoS at the remote. Default 1.'),
  })
  .strict();

export const bridgeSchema = z
  .object({
    url: z
      .string()
      .regex(/^(mqtt|mqtts|ws|wss):\/\/[^\s]+$/, { error: 'must be a URL such as mqtt://host:1883, mqtts://host:8883, ws://host/mqtt or wss://host/mqtt' })
      .describe('Remote broker URL: mqtt, mqtts, ws or wss.'),
    clientId: z.string().min(1).optional().describe('Client id at the remote. Default signalbox-<output name>.'),
    username: z.string().optional(),
    password: z.string().optional().describe('Use ${env:NAME} rather than writing it in the file.'),
    ca: z.string().optional().describe('PEM file of the CA that signed the remote\'s certificate (mqtts/wss).'),
    cert: z.string().optional().describe('PEM client certificate file, for brokers that require one.'),
    key: z.string().optional().describe('PEM private key file of the client certificate.'),
    rejectUnauthorized: z.boolean().default(true).describe('Verify the remote\'s certificate. Default true.'),
    protocolVersion: z.union([z.literal(4), z.literal(5)]).default(5).describe('MQTT 3.1.1 (4) or 5. Default 5.'),
    keepalive: z.number().int().min(0).max(65_535).default(60).describe('Keepalive in seconds. Default 60.'),
    maxInflight: z
      .number().int().min(1).max(65_535)
      .optional()
      .describe(
        `Unacknowledged QoS 1/2 messages towards the remote at once; an MQTT 5 remote's Receive Maximum lowers it. Default ${DEFAULT_BRIDGE_MAX_INFLIGHT} (MQTT 5), ${DEFAULT_BRIDGE_MAX_INFLIGHT_V4} (MQTT 3.1.1, which has no Receive Maximum: raise it to what the remote accepts).`,
      ),
    connectTimeoutMs: z.number().int().min(100).default(10_000).describe('Time allowed for CONNACK. Default 10000.'),
    cleanSession: z.boolean().default(false).describe('false (default): the remote keeps the bridge\'s session (subscriptions, queued messages) across reconnects.'),
    sessionExpiryS: z.number().int().min(0).max(0xffff_ffff).default(86_400).describe('MQTT 5 session expiry at the remote when cleanSession is false. Default 86400.'),
    reconnect: z
      .object({
        retryMinMs: z.number().int().min(1).default(500),
        retryMaxMs: z.number().int().min(1).default(30_000),
      })
      .strict()
      .default({ retryMinMs: 500, retryMaxMs: 30_000 })
      .describe('Reconnect backoff: doubles from retryMinMs to retryMaxMs, with jitter.'),
    status: z
      .object({
        topic: z.string().min(1).describe('Remote status topic (retained birth and last will).'),
        online: z.string().default('online'),
        offline: z.string().default('offline'),
      })
      .strict()
      .optional()
      .describe('Remote status topic. Default signalbox/<clientId>/status with online/offline.'),
    out: z.array(mappingOut).default([]).describe('Local filter → remote topic mappings.'),
    in: z.array(mappingIn).default([]).describe('Remote filter → local topic mappings.'),
    maxHops: z.number().int().min(1).max(64).default(DEFAULT_BRIDGE_MAX_HOPS).describe(`Bridges a message may cross before it is not forwarded again (MQTT 5). Default ${DEFAULT_BRIDGE_MAX_HOPS}.`),
    allowLoop: z.boolean().default(false).describe('Allow in and out mappings that would echo messages back and forth.'),
  })
  .strict()
  .superRefine((s, ctx) => {
    s.out.forEach((m, i) => {
      const r = compileMapping(m.local, m.remote);
      if (typeof r === 'string') ctx.addIssue({ code: 'custom', path: ['out', i], message: `invalid mapping: ${r}` });
    });
    s.in.forEach((m, i) => {
      const r = compileMapping(m.remote, m.local);
      if (typeof r === 'string') ctx.addIssue({ code: 'custom', path: ['in', i], message: `invalid mapping: ${r}` });
    });
    if (!s.allowLoop) {
      s.in.forEach((inMap, i) => {
        const j = s.out.findIndex((outMap) => mappingsEcho(inMap, outMap));
        if (j !== -1) ctx.addIssue({ code: 'custom', path: ['in', i], message: `in mapping ${inMap.remote} → ${inMap.local} and out mapping ${s.out[j]!.local} → ${s.out[j]!.remote} would echo messages back and forth (set allowLoop: true if the remote prevents it)` });
      });
    }
  });

export type BridgeSettings = z.output<typeof bridgeSchema>;

/** Settings as the connection uses them: defaults that depend on the output's name filled in. */
export type ResolvedBridgeSettings = Omit<BridgeSettings, 'maxInflight'> & { clientId: string; maxInflight: number; status: NonNullable<BridgeSettings['status']> };

/**
 * `type: bridge`: a connection to another MQTT broker. Out mappings and rule actions go
 * through the durable outbox; in mappings publish into the local broker.
 */
export const bridgeConnector: ConnectorType<typeof bridgeSchema> = {
  type: 'bridge',
  description: 'Another MQTT broker (Mosquitto, EMQX, HiveMQ, a cloud broker): out, in, or both.',
  schema: bridgeSchema,
  create(name, settings, deps) {
    const inMappings = settings.in.map((m) => compileMapping(m.remote, m.local) as TopicMapping);
    const clientId = settings.clientId ?? `signalbox-${name}`;
    // Relative certificate paths are relative to the config file, like every other path.
    const file = (p: string | undefined) => (p === undefined ? undefined : path.resolve(deps.baseDir ?? '.', p));
    const resolved = {
      ...settings,
      clientId,
      maxInflight: settings.maxInflight ?? (settings.protocolVersion === 4 ? DEFAULT_BRIDGE_MAX_INFLIGHT_V4 : DEFAULT_BRIDGE_MAX_INFLIGHT),
      ca: file(settings.ca),
      cert: file(settings.cert),
      key: file(settings.key),
      status: settings.status ?? { topic: `signalbox/${clientId}/status`, online: 'online', offline: 'offline' },
    };
    return new BridgeClient(name, resolved, inMappings, { log: deps.log, clock: deps.clock, publishLocal: deps.publishLocal });
  },
};

/** Messages that came in through bridge `name` are never sent back out through it. */
function cameFrom(input: RuleInput, name: string): boolean {
  return input.clientId === `$bridge/${name}`;
}

function hopsOf(input: RuleInput): number {
  const v = input.properties.userProperties?.[HOPS_PROPERTY];
  return Number(Array.isArray(v) ? v[0] : (v ?? 0)) || 0;
}

/** `- bridge: { output: cloud, topic: "site-a/${topic}" }` in a rule's `to:`. */
export const bridgeAction = remoteActionType({
  name: 'bridge',
  connectorType: 'bridge',
  description: 'Send to another MQTT broker through a bridge output.',
  schema: z.object(remoteActionFields).strict(),
});

/**
 * The out mappings of a bridge as rules (`bridge:<name>:out:<i>`), so they share the rule
 * router, ordering and the outbox with every other rule.
 */
export function bridgeOutRules(name: string, settings: BridgeSettings): CompiledRule[] {
  return settings.out.map((m, i): CompiledRule => {
    const mapping = compileMapping(m.local, m.remote) as TopicMapping;
    return {
      id: `bridge:${name}:out:${i}`,
      description: `bridge ${name}: ${m.local} → ${m.remote}`,
      enabled: true,
      filters: [m.local],
      steps: [],
      file: `outputs.${name}`,
      line: 0,
      rawOnly: true,
      actions: [
        {
          type: 'bridge',
          plan(input: RuleInput, ruleId: string): Effect[] {
            if (cameFrom(input, name) || input.topic.startsWith('$')) return [];
            if (hopsOf(input) >= settings.maxHops) return [];
            const topic = mapping.map(input.topic);
            if (topic === undefined) return [];
            return [remoteEffect('bridge', name, ruleId, input, topic, m.qos ?? input.qos, m.retain === 'keep' ? input.retain : m.retain === 'always', undefined)];
          },
        },
      ],
    };
  });
}
