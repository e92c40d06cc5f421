import { Duplex } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { PacketWriter } from '../../../src/broker/packet-writer.js';

/** A stream that records each system-call-sized write: one entry per write or writev. */
function recorder() {
  const calls: Buffer[][] = [];
  const stream = new Duplex({
    read() {},
    write(chunk: Buffer, _enc, done) {
      calls.push([chunk]);
      done();
    },
    writev(chunks, done) {
      calls.push(chunks.map((c) => c.chunk as Buffer));
      done();
    },
  });
  return { stream, calls, bytes: () => Buffer.concat(calls.flat()) };
}

const tick = () => new Promise<void>((resolve) => process.nextTick(resolve));
const puback = (id: number) => Buffer.from([0x40, 2, id >> 8, id & 0xff]);

describe('the packet writer', () => {
  it('sends a tick\'s writes in one writev, its acknowledgements packed into one buffer, in call order', async () => {
    const { stream, calls, bytes } = recorder();
    const w = new PacketWriter(stream);
    w.writeAck(0x40, 1);
    w.writeAck(0x40, 2);
    w.write(Buffer.from('P1'), Buffer.from('payload'));
    w.writeAck(0x50, 0x1234);
    w.writeAck(0x40, 3);
    expect(calls).toHaveLength(0);
    await tick();
    expect(calls).toHaveLength(1);
    expect(calls[0]!.map((c) => c.toString('hex'))).toEqual([
      Buffer.concat([puback(1), puback(2)]).toString('hex'),
      Buffer.from('P1').toString('hex'),
      Buffer.from('payload').toString('hex'),
      Buffer.concat([Buffer.from([0x50, 2, 0x12, 0x34]), puback(3)]).toString('hex'),
    ]);
    // The next tick starts over.
    w.writeAck(0x40, 4);
    await tick();
    expect(calls).toHaveLength(2);
    expect(bytes().subarray(-4)).toEqual(puback(4));
  });

  it('keeps every acknowledgement of a tick with more than one buffer of them, and none that were sent changes', async () => {
    const { stream, bytes } = recorder();
    const w = new PacketWriter(stream);
    for (let id = 1; id <= 1000; id++) w.writeAck(0x40, id);
    await tick();
    for (let id = 1001; id <= 1300; id++) w.writeAck(0x40, id);
    await tick();
    expect(bytes()).toEqual(Buffer.concat(Array.from({ length: 1300 }, (_, i) => puback(i + 1))));
  });

  it('hands the packed acknowledgements over on flush, before the stream is ended', async () => {
    const { stream, bytes } = recorder();
    const w = new PacketWriter(stream);
    w.writeAck(0x70, 9);
    w.flush();
    stream.end();
    await new Promise((resolve) => stream.once('finish', resolve));
    expect(bytes()).toEqual(Buffer.from([0x70, 2, 0, 9]));
  });
});
