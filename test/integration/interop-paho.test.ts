import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { connect, nextMessage, type TestBroker, startBroker } from '../helpers/mqtt.js';
import { PEERS_INSTALL_HINT, SYSTEM_PYTHON, type Child, expectCleanExit, requireCommand, startProcess } from '../helpers/peers.js';

// Debian's python3-paho-mqtt 1.6.1, run by /usr/bin/python3 (the python3 on PATH may be a
// pyenv build without paho), as a real MQTT 3.1.1 / 5.0 client of our broker.

const paho = requireCommand(SYSTEM_PYTHON, PEERS_INSTALL_HINT, { probeArgs: ['-c', 'import paho.mqtt.client'] });

/**
 * A paho client driven by a JSON plan (argv[1]). It connects, subscribes, prints
 * {"event":"ready"} once every SUBACK is in, publishes the plan's messages, and exits 0 when it
 * has received `expect` messages and every publish completed (PUBACK / PUBCOMP for QoS 1 / 2),
 * or 3 at the deadline. Everything it sees is printed as one JSON object per line.
 */
const PAHO_CLIENT = String.raw`
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

plan = json.loads(sys.argv[1])
v5 = plan["version"] == 5

def say(**event):
    print(json.dumps(event), flush=True)

def props_json(props):
    return props.json() if props is not None else None

def code(rc):
    return rc.value if hasattr(rc, "value") else rc

if v5:
    client = mqtt.Client(client_id=plan["clientId"], protocol=mqtt.MQTTv5)
else:
    client = mqtt.Client(client_id=plan["clientId"], clean_session=True, protocol=mqtt.MQTTv311)

state = {"connected": False, "subacks": 0, "published": 0, "received": 0, "sent": False, "gone": False}
pending_subs = set()

def on_connect(client, userdata, flags, rc, properties=None):
    say(event="connack", rc=code(rc), sessionPresent=bool(flags.get("session present")), properties=props_json(properties))
    if code(rc) != 0:
        return
    state["connected"] = True
    for sub in plan["subscribe"]:
        result, mid = client.subscribe(sub["filter"], sub["qos"])
        pending_subs.add(mid)
    if not plan["subscribe"]:
        ready()

def on_subscribe(client, userdata, mid, granted, properties=None):
    say(event="suback", granted=[code(g) for g in granted])
    pending_subs.discard(mid)
    if not pending_subs:
        ready()

def ready():
    say(event="ready")
    for pub in plan["publish"]:
        props = None
        if v5 and pub.get("userProperties"):
            props = Properties(PacketTypes.PUBLISH)
            for key, value in pub["userProperties"]:
                props.UserProperty = (key, value)
        client.publish(pub["topic"], pub["payload"].encode("utf-8"), pub["qos"], pub.get("retain", False), properties=props)
    state["sent"] = True

def on_publish(client, userdata, mid):
    state["published"] += 1
    say(event="published", mid=mid)

def on_message(client, userdata, msg):
    state["received"] += 1
    say(event="message", topic=msg.topic, payload=msg.payload.decode("utf-8", "replace"), qos=msg.qos,
        retain=bool(msg.retain), dup=bool(msg.dup), properties=props_json(getattr(msg, "properties", None)))

def on_disconnect(client, userdata, rc, properties=None):
    state["gone"] = True
    say(event="disconnected", rc=code(rc))

client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_publish = on_publish
client.on_message = on_message
client.on_disconnect = on_disconnect

client.connect(plan["host"], plan["port"], keepalive=30)
deadline = time.monotonic() + plan["waitS"]
while time.monotonic() < deadline and not state["gone"]:
    client.loop(timeout=0.05)
    if state["sent"] and state["published"] >= len(plan["publish"]) and state["received"] >= plan["expect"]:
        break
else:
    say(event="timeout", **state)
    sys.exit(3)

say(event="done", received=state["received"])
client.disconnect()
for _ in range(20):
    if state["gone"]:
        break
    client.loop(timeout=0.05)
`;

interface PahoPublish {
  topic: string;
  payload: string;
  qos: 0 | 1 | 2;
  retain?: boolean;
  /** MQTT 5 only; pairs, so a key may repeat. */
  userProperties?: Array<[string, string]>;
}

interface PahoPlan {
  version: 4 | 5;
  subscribe: Array<{ filter: string; qos: 0 | 1 | 2 }>;
  publish?: PahoPublish[];
  /** Messages to receive before exiting. */
  expect: number;
  clientId?: string;
}

/** One line printed by the script. */
interface PahoEvent {
  event: 'connack' | 'suback' | 'ready' | 'published' | 'message' | 'disconnected' | 'done' | 'timeout';
  rc?: number;
  properties?: Record<string, unknown> | null;
  granted?: number[];
  topic?: string;
  payload?: string;
  qos?: number;
  retain?: boolean;
}

const WAIT_S = 8;

let server: TestBroker;
let scriptPath: string;
let scriptDir: string;

beforeAll(async () => {
  scriptDir = await mkdtemp(join(tmpdir(), 'signalbox-paho-'));
  scriptPath = join(scriptDir, 'paho_client.py');
  await writeFile(scriptPath, PAHO_CLIENT);
  server = await startBroker();
});

afterAll(async () => {
  await server?.close();
  if (scriptDir !== undefined) await rm(scriptDir, { recursive: true, force: true });
});

beforeEach((ctx) => paho.require(ctx));

function freshTopic(what: string): string {
  return `interop/paho/${what}/${randomUUID()}`;
}

/** Starts the paho script with a plan; the child prints JSON lines (see PAHO_CLIENT). */
function startPaho(plan: PahoPlan): Child {
  const full = { host: '127.0.0.1', port: server.port, waitS: WAIT_S, publish: [], clientId: `paho-${randomUUID()}`, ...plan };
  return startProcess(SYSTEM_PYTHON, [scriptPath, JSON.stringify(full)], { deadlineMs: (WAIT_S + 4) * 1000 });
}

/** Waits for the script to finish and returns its events; fails with its whole output unless it exited 0. */
async function eventsOf(child: Child): Promise<PahoEvent[]> {
  const result = expectCleanExit(await child.exited);
  return result.stdout.split('\n').filter((line) => line.startsWith('{')).map((line) => JSON.parse(line) as PahoEvent);
}

const only = (events: PahoEvent[], kind: PahoEvent['event']) => events.filter((e) => e.event === kind);

const versions = [4, 5] as const;
const versionNames = { 4: 'MQTT 3.1.1', 5: 'MQTT 5' } as const;
const matrix = versions.flatMap((version) => ([0, 1, 2] as const).map((qos) => [versionNames[version], qos, qos, version] as const));

describe('paho-mqtt (python3-paho-mqtt 1.6.1) against signalbox', () => {
  it.each(matrix)('a paho %s client subscribed at QoS %s receives its own QoS %s publish back', async (_name, qos, _same, version) => {
    const topic = freshTopic(`q${qos}`);
    const events = await eventsOf(startPaho({
      version,
      subscribe: [{ filter: topic, qos }],
      publish: [{ topic, payload: `paho says hi at QoS ${qos} ✓`, qos }],
      expect: 1,
    }));

    expect(only(events, 'connack')).toMatchObject([{ rc: 0 }]);
    expect(only(events, 'suback')).toMatchObject([{ granted: [qos] }]);
    expect(only(events, 'published')).toHaveLength(1);
    expect(only(events, 'message')).toMatchObject([{ topic, payload: `paho says hi at QoS ${qos} ✓`, qos, retain: false }]);
  });

  it.each(versions.map((v) => [versionNames[v], v] as const))('a paho %s client publishing at QoS 0, 1 and 2 to a QoS 2 subscription gets each at its own QoS', async (_name, version) => {
    const base = freshTopic('mixed');
    const events = await eventsOf(startPaho({
      version,
      subscribe: [{ filter: `${base}/#`, qos: 2 }],
      publish: ([0, 1, 2] as const).map((qos) => ({ topic: `${base}/q${qos}`, payload: `m${qos}`, qos })),
      expect: 3,
    }));

    const got = only(events, 'message').map((m) => [m.topic, m.payload, m.qos]).sort();
    expect(got).toEqual([[`${base}/q0`, 'm0', 0], [`${base}/q1`, 'm1', 1], [`${base}/q2`, 'm2', 2]]);
  });

  it('an MQTT 5 paho client reads the broker limits advertised in CONNACK', async () => {
    const events = await eventsOf(startPaho({ version: 5, subscribe: [], expect: 0 }));

    expect(only(events, 'connack')).toMatchObject([{ rc: 0, properties: { ReceiveMaximum: 100, TopicAliasMaximum: 10 } }]);
  });

  it('an MQTT 5 paho client connecting with an empty client id is assigned one starting with "sb-"', async () => {
    const events = await eventsOf(startPaho({ version: 5, subscribe: [], expect: 0, clientId: '' }));

    const [connack] = only(events, 'connack');
    expect(connack).toMatchObject({ rc: 0 });
    expect(connack!.properties?.AssignedClientIdentifier).toMatch(/^sb-/);
  });

  it('user properties an MQTT 5 paho client publishes reach an MQTT.js 5 subscriber', async () => {
    const topic = freshTopic('to-mqttjs');
    const client = await connect(server.url, { protocolVersion: 5 });
    try {
      await client.subscribeAsync(topic, { qos: 2 });
      const arrives = nextMessage(client, { within: 5000 });

      await eventsOf(startPaho({
        version: 5,
        subscribe: [],
        publish: [{ topic, payload: 'from paho', qos: 2, userProperties: [['site', 'north'], ['site', 'south'], ['unit', '°C']] }],
        expect: 0,
      }));

      const { payload, packet } = await arrives;
      expect(payload.toString()).toBe('from paho');
      expect(packet.qos).toBe(2);
      expect(packet.properties?.userProperties).toEqual({ site: ['north', 'south'], unit: '°C' });
    } finally {
      await client.endAsync();
    }
  });

  it.each(versions.map((v) => [versionNames[v], v] as const))('a message an MQTT.js client publishes reaches a paho %s subscriber', async (_name, version) => {
    const topic = freshTopic('from-mqttjs');
    const subscriber = startPaho({ version, subscribe: [{ filter: topic, qos: 1 }], expect: 1 });
    await subscriber.waitForLine(/"event": "ready"/, { within: 5000 });

    const client = await connect(server.url, { protocolVersion: 5 });
    try {
      await client.publishAsync(topic, 'from mqtt.js', { qos: 1, properties: { userProperties: { origin: 'mqtt.js' } } });
    } finally {
      await client.endAsync();
    }

    const [message] = only(await eventsOf(subscriber), 'message');
    expect(message).toMatchObject({ topic, payload: 'from mqtt.js', qos: 1, retain: false });
    if (version === 5) expect(message!.properties).toMatchObject({ UserProperty: [['origin', 'mqtt.js']] });
  });

  it('a paho client that subscribes after a retained publish receives the retained message with retain set', async () => {
    const topic = freshTopic('retained');
    const client = await connect(server.url);
    try {
      await client.publishAsync(topic, 'kept', { qos: 1, retain: true });
    } finally {
      await client.endAsync();
    }

    const events = await eventsOf(startPaho({ version: 4, subscribe: [{ filter: topic, qos: 1 }], expect: 1 }));

    expect(only(events, 'message')).toMatchObject([{ topic, payload: 'kept', qos: 1, retain: true }]);
  });
});
