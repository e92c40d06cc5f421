import { systemClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import { webhookConnector, type WebhookRequest } from '../../src/outputs/webhook.js';
import { WebhookTarget, type RecordedRequest } from '../helpers/webhook-target.js';
import { describeOutputContract, type Arrival } from './output-contract.js';

/**
 * The webhook output against a real HTTP server: the planned request carries the topic in
 * its query, the payload is the body. Breaking the target makes it answer 503; a payload
 * containing `poison` is answered 400. A webhook keeps topic and payload, not QoS, retain or
 * MQTT 5 properties.
 */
describeOutputContract('webhook output', async () => {
  const target = await WebhookTarget.start();
  const accepted: RecordedRequest[] = [];
  let broken = false;
  target.answer = (request) => {
    if (broken) return { status: 503, body: 'maintenance' };
    if (request.body.includes('poison')) return { status: 400, body: 'cannot parse' };
    accepted.push(request);
    return { status: 204 };
  };
  const connector = webhookConnector.create('contract', webhookConnector.schema.parse({ url: `${target.url}/hook`, timeoutMs: 2000 }), { log: silentLogger(), clock: systemClock });
  return {
    connector,
    keeps: ['topic', 'payload'],
    received: async () => accepted.map((r): Arrival => ({ topic: new URL(r.url, target.url).searchParams.get('topic') ?? undefined, payload: r.body })),
    breakTarget: async () => {
      broken = true;
    },
    repairTarget: async () => {
      broken = false;
    },
    close: () => target.close(),
    prepare: (m) => {
      const data: WebhookRequest = { method: 'POST', url: `${target.url}/hook?topic=${encodeURIComponent(m.topic)}`, headers: { 'content-type': 'application/octet-stream' } };
      return { ...m, data };
    },
    poison: (m) => ({ ...m, payload: Buffer.from('poison') }),
  };
});
