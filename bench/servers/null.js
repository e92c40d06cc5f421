// "Null broker": the least work an mqtt-packet based broker can do (parse, ack, forward every
// PUBLISH to every subscriber, no topic matching, no sessions, no flow control). It is not a
// contender: running the throughput load against it measures the ceiling of the load
// generator + codec on this machine, so the bench can show the load side outruns the
// brokers it measures.
import net from 'node:net';
import mqtt from 'mqtt-packet';

/** Starts the null broker on 127.0.0.1 with an OS-chosen port. */
export async function start() {
  /** @type {Set<{ socket: net.Socket, qos: number, nextId: number }>} */
  const subscribers = new Set();
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    const parser = mqtt.parser({ protocolVersion: 4 });
    let subscriber;
    parser.on('packet', (packet) => {
      switch (packet.cmd) {
        case 'connect':
          parser.settings = { protocolVersion: packet.protocolVersion };
          socket.write(mqtt.generate({ cmd: 'connack', returnCode: 0, sessionPresent: false }));
          break;
        case 'subscribe': {
          const qos = packet.subscriptions[0].qos;
          subscriber = { socket, qos, nextId: 0 };
          subscribers.add(subscriber);
          socket.write(mqtt.generate({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map((s) => s.qos) }));
          break;
        }
        case 'publish':
          if (packet.qos === 1) {
            const ack = Buffer.allocUnsafe(4);
            ack[0] = 0x40;
            ack[1] = 0x02;
            ack.writeUInt16BE(packet.messageId, 2);
            socket.write(ack);
          }
          for (const sub of subscribers) {
            const qos = Math.min(sub.qos, packet.qos);
            sub.nextId = (sub.nextId % 65535) + 1;
            sub.socket.write(encodePublish(packet.topic, packet.payload, qos, sub.nextId));
          }
          break;
        case 'pingreq':
          socket.write(mqtt.generate({ cmd: 'pingresp' }));
          break;
        case 'disconnect':
          socket.end();
          break;
        default:
          break; // puback from subscribers: no inflight tracking here
      }
    });
    parser.on('error', () => socket.destroy());
    socket.on('data', (chunk) => {
      // Cork this socket (acks) and every subscriber (forwards) while one chunk is parsed, so
      // each goes out in one writev.
      socket.cork();
      for (const sub of subscribers) sub.socket.cork();
      parser.parse(chunk);
      for (const sub of subscribers) sub.socket.uncork();
      socket.uncork();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      if (subscriber) subscribers.delete(subscriber);
    });
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** MQTT 3.1.1 PUBLISH without mqtt-packet's generic generator (hot path of the null broker). */
function encodePublish(topic, payload, qos, messageId) {
  const topicLength = Buffer.byteLength(topic);
  const remaining = 2 + topicLength + (qos ? 2 : 0) + payload.length;
  let lengthBytes = 1;
  for (let r = remaining; r > 127; r = Math.floor(r / 128)) lengthBytes++;
  const buf = Buffer.allocUnsafe(1 + lengthBytes + remaining);
  buf[0] = 0x30 | (qos << 1);
  let off = 1;
  let r = remaining;
  do {
    let byte = r % 128;
    r = Math.floor(r / 128);
    if (r > 0) byte |= 0x80;
    buf[off++] = byte;
  } while (r > 0);
  buf.writeUInt16BE(topicLength, off);
  off += 2;
  off += buf.write(topic, off);
  if (qos) {
    buf.writeUInt16BE(messageId, off);
    off += 2;
  }
  payload.copy(buf, off);
  return buf;
}
