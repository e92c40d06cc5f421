import net from 'node:net';
import { generate, parser as createParser, type IConnackPacket, type IConnectPacket, type Packet, type PacketCmd } from 'mqtt-packet';

/** MQTT protocol level: 3 = MQTT 3.1 (MQIsdp), 4 = 3.1.1, 5 = 5.0. */
export type ProtocolVersion = 3 | 4 | 5;

/** The parsed packet type for a given `cmd`, e.g. `PacketOf<'connack'>` is `IConnackPacket`. */
export type PacketOf<C extends PacketCmd> = Extract<Packet, { cmd: C }>;

export interface RawClientOptions {
  /** Level used to encode what we send and to parse what the broker sends. Default 4. */
  protocolVersion?: ProtocolVersion;
  /** How long to wait for the TCP connection, in ms. Default 2000. */
  within?: number;
  /** Local address to connect from (e.g. 127.0.0.2, to look like another host). Default chosen by the OS. */
  localAddress?: string;
}

/**
 * A bare MQTT connection for protocol-level tests: it sends exactly the packets (or bytes) it
 * is told to and records every packet the broker sends, in order. It never answers anything by
 * itself (no PINGREQ, no PUBACK), so keepalive and acknowledgement behaviour can be tested.
 */
export interface RawClient {
  readonly protocolVersion: ProtocolVersion;
  readonly socket: net.Socket;
  /** True once the socket has closed (either side). */
  readonly isClosed: boolean;
  /** Encodes `packet` with mqtt-packet at this client's protocol level and writes it; a Buffer is written as is. */
  send(packet: Packet | Buffer): void;
  /**
   * Resolves with the next packet the broker sent (packets are queued, so none is missed).
   * Rejects after `within` ms (default 2000), at once if the connection closed with nothing
   * left to read, or if the broker's bytes could not be parsed.
   */
  nextPacket(options?: { within?: number }): Promise<Packet>;
  /** Like {@link nextPacket}, but rejects unless the packet is a `cmd`; resolves with it typed. */
  expectPacket<C extends PacketCmd>(cmd: C, options?: { within?: number }): Promise<PacketOf<C>>;
  /** Resolves if no packet arrives for `forMs` ms (default 300); rejects with the packet if one does. */
  noPacket(options?: { forMs?: number }): Promise<void>;
  /** Resolves when the socket has closed; rejects after `within` ms (default 2000). */
  closed(options?: { within?: number }): Promise<void>;
  /**
   * Sends CONNECT (clientId, protocol level and clean default from this client) and resolves with
   * the CONNACK, whatever its return code. Rejects if anything else, or nothing, arrives.
   */
  connect(packet?: Partial<Omit<IConnectPacket, 'cmd'>>, options?: { within?: number }): Promise<IConnackPacket>;
  /** Half-closes the socket (TCP FIN) the way a client does after DISCONNECT. */
  end(): void;
  /** Drops the connection at once, without DISCONNECT: what a crashed client or a broken network looks like. */
  destroy(): void;
}

let nextId = 0;

/** Opens a raw TCP connection to the broker on 127.0.0.1:`port`; rejects if it cannot connect. */
export function openRaw(port: number, options: RawClientOptions = {}): Promise<RawClient> {
  const protocolVersion = options.protocolVersion ?? 4;
  const within = options.within ?? 2000;
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress: options.localAddress });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`could not connect to 127.0.0.1:${port} within ${within} ms`));
    }, within);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve(createRawClient(socket, protocolVersion));
    });
  });
}

type Waiter = () => void;

function createRawClient(socket: net.Socket, protocolVersion: ProtocolVersion): RawClient {
  socket.setNoDelay(true);
  const queue: Array<Packet | Error> = [];
  let closed = false;
  let waiters: Waiter[] = [];
  const wake = () => {
    const current = waiters;
    waiters = [];
    for (const w of current) w();
  };

  const packetParser = createParser({ protocolVersion });
  packetParser.on('packet', (packet: Packet) => {
    queue.push(packet);
    wake();
  });
  packetParser.on('error', (err: Error) => {
    queue.push(new Error(`broker sent bytes mqtt-packet cannot parse (protocol ${protocolVersion}): ${err.message}`));
    wake();
  });
  socket.on('data', (chunk: Buffer) => packetParser.parse(chunk));
  // A reset from the broker is just a close for these tests; keep it from becoming an unhandled error.
  socket.on('error', () => {});
  socket.on('close', () => {
    closed = true;
    wake();
  });

  /** Waits until `ready()` is true, the socket closes, or `within` ms pass; resolves with whether `ready()` held. */
  const waitUntil = (ready: () => boolean, within: number): Promise<boolean> =>
    new Promise((resolve) => {
      if (ready() || closed) return resolve(ready());
      const timer = setTimeout(() => {
        waiters = waiters.filter((w) => w !== check);
        resolve(ready());
      }, within);
      const check: Waiter = () => {
        if (ready() || closed) {
          clearTimeout(timer);
          resolve(ready());
        } else {
          waiters.push(check);
        }
      };
      waiters.push(check);
    });

  const client: RawClient = {
    protocolVersion,
    socket,
    get isClosed() {
      return closed;
    },
    send(packet) {
      const bytes = Buffer.isBuffer(packet) ? packet : generate(packet, { protocolVersion });
      socket.write(bytes);
    },
    async nextPacket({ within = 2000 } = {}) {
      const got = await waitUntil(() => queue.length > 0, within);
      if (!got) {
        throw new Error(closed ? 'connection closed with no packet from the broker' : `no packet from the broker within ${within} ms`);
      }
      const item = queue.shift()!;
      if (item instanceof Error) throw item;
      return item;
    },
    async expectPacket(cmd, options) {
      const packet = await client.nextPacket(options);
      if (packet.cmd !== cmd) throw new Error(`expected ${cmd}, got ${describe(packet)}`);
      return packet as PacketOf<typeof cmd>;
    },
    async noPacket({ forMs = 300 } = {}) {
      // If the socket closes early nothing more can arrive, so resolving then is correct.
      const got = await waitUntil(() => queue.length > 0, forMs);
      if (got) throw new Error(`expected no packet, got ${describe(queue[0]!)}`);
    },
    async closed({ within = 2000 } = {}) {
      if (!(await waitUntil(() => closed, within))) throw new Error(`connection still open after ${within} ms`);
    },
    async connect(packet = {}, options) {
      client.send({
        cmd: 'connect',
        protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT',
        protocolVersion,
        clientId: packet.clientId ?? `raw-${process.pid}-${++nextId}`,
        clean: true,
        keepalive: 0,
        ...packet,
      });
      return client.expectPacket('connack', options);
    },
    end() {
      socket.end();
    },
    destroy() {
      socket.destroy();
    },
  };
  return client;
}

function describe(item: Packet | Error): string {
  if (item instanceof Error) return `an unparseable packet (${item.message})`;
  const reason = 'reasonCode' in item && item.reasonCode !== undefined ? ` reason 0x${item.reasonCode.toString(16)}` : '';
  const rc = 'returnCode' in item && item.returnCode !== undefined ? ` returnCode ${item.returnCode}` : '';
  return `${item.cmd}${reason}${rc}`;
}

/** Fields of a hand-built CONNECT; see {@link encodeConnect}. */
export interface RawConnectFields {
  /** Protocol name. Default 'MQTT'. */
  protocolId?: string;
  /** Protocol level byte, sent as is (so 6 or 0 can be tested). Default 4. */
  level?: number;
  clean?: boolean;
  keepalive?: number;
  clientId?: string;
}

/**
 * Encodes a CONNECT byte by byte, for the cases mqtt-packet's generate() refuses to produce:
 * an unknown protocol level, an empty client id with clean session off, an empty MQTT 3.1
 * client id. No will, username or password; level 5 gets an empty property list.
 */
export function encodeConnect(fields: RawConnectFields = {}): Buffer {
  const { protocolId = 'MQTT', level = 4, clean = true, keepalive = 0, clientId = '' } = fields;
  const str = (s: string) => {
    const b = Buffer.from(s, 'utf8');
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    return Buffer.concat([len, b]);
  };
  const keep = Buffer.alloc(2);
  keep.writeUInt16BE(keepalive);
  const body = Buffer.concat([
    str(protocolId),
    Buffer.from([level, clean ? 0x02 : 0x00]),
    keep,
    level === 5 ? Buffer.from([0]) : Buffer.alloc(0),
    str(clientId),
  ]);
  return Buffer.concat([Buffer.from([0x10]), varint(body.length), body]);
}

/** The Variable Byte Integer encoding of a remaining length [MQTT-1.5.5]. */
export function varint(n: number): Buffer {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}
