import { Writable } from 'node:stream';
import mqttPacket from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import type { QoS } from '../../../src/broker/types.js';
import { PUBACK, PUBCOMP, PUBREC } from '../../../src/outputs/bridge-acks.js';
import { BridgeSender, MQTTJS_IDS } from '../../../src/outputs/bridge-sender.js';
import { OutputError, type OutboxMessage } from '../../../src/outputs/connector.js';

/** A socket stand-in that decodes what the sender writes, as the remote broker would. */
class Wire extends Writable {
  readonly packets: mqttPacket.Packet[] = [];
  private readonly parser = mqttPacket.parser({ protocolVersion: 5 });

  constructor() {
    super();
    this.parser.on('packet', (p) => this.packets.push(p));
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error) => void): void {
    this.parser.parse(chunk);
    done();
  }

  of(cmd: string): mqttPacket.Packet[] {
    return this.packets.filter((p) => p.cmd === cmd);
  }
}

function message(n: number, qos: QoS = 1): OutboxMessage {
  return { seq: n, time: n, ruleId: 'r', clientId: 'c', topic: `t/${n}`, payload: Buffer.from(String(n)), qos, retain: false, properties: undefined, data: undefined, attempts: 0 };
}

/** Lets the sender's pump (run in the check phase) run. */
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

function ids(packets: mqttPacket.Packet[]): number[] {
  return packets.map((p) => (p as { messageId: number }).messageId);
}

describe('the bridge sender', () => {
  it('keeps at most `window` messages unacknowledged and refills when half of them are acknowledged', async () => {
    const wire = new Wire();
    const sender = new BridgeSender('cloud', 'hops');
    sender.attach(wire, { window: 4, maxPacketSize: Infinity }, true, false);
    const done = sender.send(Array.from({ length: 10 }, (_, i) => message(i + 1)));
    await tick();
    const first = wire.of('publish');
    expect(first).toHaveLength(4);
    expect(ids(first).every((id) => id > MQTTJS_IDS)).toBe(true);
    sender.onAck(PUBACK, ids(first)[0]!, 0);
    await tick();
    expect(wire.of('publish')).toHaveLength(4); // three still out: more than half the window
    sender.onAck(PUBACK, ids(first)[1]!, 0);
    await tick();
    expect(wire.of('publish')).toHaveLength(6);
    let settled = false;
    void done.then(() => (settled = true));
    for (let round = 0; round < 10 && !settled; round++) {
      for (const id of ids(wire.of('publish'))) sender.onAck(PUBACK, id, 0);
      await tick();
    }
    await done;
    expect(wire.of('publish').map((p) => (p as mqttPacket.IPublishPacket).topic)).toEqual(Array.from({ length: 10 }, (_, i) => `t/${i + 1}`));
    expect(sender.pending).toBe(0);
  });

  it('fails the batch for good when the remote refuses a message, and retryably for quota exceeded', async () => {
    const wire = new Wire();
    const sender = new BridgeSender('cloud', 'hops');
    sender.attach(wire, { window: 10, maxPacketSize: Infinity }, true, false);
    const refused = sender.send([message(1)]);
    await tick();
    sender.onAck(PUBACK, ids(wire.of('publish'))[0]!, 0x87);
    await expect(refused).rejects.toMatchObject({ retryable: false, code: 'SB_ERR_OUTPUT_REJECTED' });
    const busy = sender.send([message(2)]);
    await tick();
    sender.onAck(PUBACK, ids(wire.of('publish'))[1]!, 0x97);
    await expect(busy).rejects.toMatchObject({ retryable: true });
  });

  it('answers PUBREC with PUBREL and settles QoS 2 on PUBCOMP', async () => {
    const wire = new Wire();
    const sender = new BridgeSender('cloud', 'hops');
    sender.attach(wire, { window: 10, maxPacketSize: Infinity }, true, false);
    const done = sender.send([message(1, 2)]);
    await tick();
    const [id] = ids(wire.of('publish'));
    sender.onAck(PUBREC, id!, 0);
    expect(ids(wire.of('pubrel'))).toEqual([id]);
    sender.onAck(PUBCOMP, id!, 0);
    await done;
  });

  it('releases a QoS 2 id left unfinished by a dropped link on the resumed session, and uses it for nothing else meanwhile', async () => {
    const sender = new BridgeSender('cloud', 'hops');
    const first = new Wire();
    sender.attach(first, { window: 10, maxPacketSize: Infinity }, true, false);
    const lost = sender.send([message(1, 2)]);
    await tick();
    const [held] = ids(first.of('publish'));
    sender.detach('lost its connection during a write');
    await expect(lost).rejects.toBeInstanceOf(OutputError);

    const second = new Wire();
    sender.attach(second, { window: 10, maxPacketSize: Infinity }, true, true);
    // The resumed session first hears PUBREL for the id the remote may still hold.
    expect(ids(second.of('pubrel'))).toEqual([held]);
    // Until the remote completes it, no new message gets that id, however many are sent.
    const many = sender.send(Array.from({ length: 8 }, (_, i) => message(10 + i, 1)));
    await tick();
    expect(ids(second.of('publish'))).not.toContain(held);
    sender.onAck(PUBCOMP, held!, 0x92);
    for (const id of ids(second.of('publish'))) sender.onAck(PUBACK, id, 0);
    await many;
  });

  it('forgets unfinished QoS 2 ids when the remote starts a new session', async () => {
    const sender = new BridgeSender('cloud', 'hops');
    const first = new Wire();
    sender.attach(first, { window: 10, maxPacketSize: Infinity }, true, false);
    void sender.send([message(1, 2)]).catch(() => undefined);
    await tick();
    sender.detach('lost its connection during a write');
    const second = new Wire();
    sender.attach(second, { window: 10, maxPacketSize: Infinity }, true, false);
    expect(second.of('pubrel')).toEqual([]);
  });

  it('refuses a message larger than the remote\'s Maximum Packet Size without sending it', async () => {
    const wire = new Wire();
    const sender = new BridgeSender('cloud', 'hops');
    sender.attach(wire, { window: 10, maxPacketSize: 64 }, true, false);
    const big = { ...message(1), payload: Buffer.alloc(100) };
    await expect(sender.send([big])).rejects.toMatchObject({ retryable: false, message: expect.stringContaining('maximum packet size 64') });
    expect(wire.of('publish')).toEqual([]);
  });
});
