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
          if (packet.qos === 1) socket.write(mqtt.generate({ cmd: 'puback', messageId: packet.messageId }));
          for (const sub of subscribers) {
            const qos = Math.min(sub.qos, packet.qos);
            sub.nextId = (sub.nextId % 65535) + 1;
            sub.socket.write(mqtt.generate({ cmd: 'publish', topic: packet.topic, payload: packet.payload, qos, messageId: qos ? sub.nextId : undefined }));
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
      // Cork every subscriber while one chunk is parsed, so the forwards go out in one writev.
      for (const sub of subscribers) sub.socket.cork();
      parser.parse(chunk);
      for (const sub of subscribers) sub.socket.uncork();
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
