import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ListenerError } from '../../src/broker/listeners/listener.js';
import { CLIENT_CN, KEY_PASSPHRASE, makeCertificates, opensslPeer, type Certificates, type KeyPair } from '../helpers/certs.js';
import { recordingLogger, eventually } from '../helpers/durable.js';
import { attemptConnect, startListeners, type ListenersBroker } from '../helpers/listeners.js';
import { startEngine } from '../helpers/engine.js';
import { connect, nextMessage } from '../helpers/mqtt.js';
import { PEERS_INSTALL_HINT, expectCleanExit, requireCommand, requirePeers, runProcess, startProcess } from '../helpers/peers.js';

// The mqtts listener against real clients: MQTT.js, mosquitto_pub/mosquitto_sub and raw
// node:tls / node:net sockets for the handshakes a well-behaved client would never attempt.

const mosquittoSub = requireCommand('mosquitto_sub', PEERS_INSTALL_HINT);
const mosquittoPub = requireCommand('mosquitto_pub', PEERS_INSTALL_HINT);

let certs: Certificates;
let running: ListenersBroker | undefined;

beforeAll(() => {
  if (opensslPeer.missing === undefined) certs = makeCertificates();
});

afterAll(() => {
  if (certs) rmSync(certs.dir, { recursive: true, force: true });
});

beforeEach((ctx) => opensslPeer.require(ctx));

afterEach(async () => {
  await running?.close();
  running = undefined;
});

type MqttsInput = { requireCertificate?: boolean; certificateUsername?: 'CN' | 'none'; ca?: string; minVersion?: 'TLSv1.2' | 'TLSv1.3' };

/** A broker with one mqtts listener (and a plain mqtt one, for checks); returns the mqtts port. */
async function startMqtts(options: MqttsInput = {}, { log = recordingLogger('debug').log, connectTimeoutMs = 10_000 } = {}) {
  running = await startListeners({
    listeners: [
      { type: 'mqtts', host: '127.0.0.1', port: 0, cert: certs.cert, key: certs.key, ...(options.requireCertificate ? { ca: certs.ca } : {}), ...options },
      { type: 'mqtt', host: '127.0.0.1', port: 0 },
    ],
    connectTimeoutMs,
  }, { log });
  return { port: running.addresses[0]!.port, plainPort: running.addresses[1]!.port, ...running };
}

/** A TLS connection to 127.0.0.1:`port` trusting our CA, with an optional client certificate. */
function tlsSocket(port: number, clientCert?: KeyPair, extra: tls.ConnectionOptions = {}): tls.TLSSocket {
  const socket = tls.connect({
    host: '127.0.0.1',
    port,
    ca: readFileSync(certs.ca),
    ...(clientCert ? { cert: readFileSync(clientCert.cert), key: readFileSync(clientCert.key) } : {}),
    ...extra,
  });
  socket.on('error', () => undefined); // attemptConnect records it
  return socket;
}

describe('mqtts listener', () => {
  it('MQTT.js publishes and subscribes over TLS, verifying the server certificate against the CA', async () => {
    const { port, plainPort } = await startMqtts();
    const ca = readFileSync(certs.ca);
    const sub = await connect(`mqtts://127.0.0.1:${port}`, { ca, protocolVersion: 5 });
    const pub = await connect(`mqtts://127.0.0.1:${port}`, { ca });
    const plain = await connect(`mqtt://127.0.0.1:${plainPort}`);
    try {
      await sub.subscribeAsync('tls/#', { qos: 1 });
      const first = nextMessage(sub);
      await pub.publishAsync('tls/a', 'over tls', { qos: 1 });
      expect((await first).payload.toString()).toBe('over tls');
      // Both listeners serve one broker.
      const second = nextMessage(sub);
      await plain.publishAsync('tls/b', 'over tcp', { qos: 1 });
      expect((await second).topic).toBe('tls/b');
    } finally {
      await Promise.all([sub.endAsync(), pub.endAsync(), plain.endAsync()]);
    }
  });

  it('MQTT.js refuses the server when it trusts another CA (the server certificate is really checked)', async () => {
    const { port } = await startMqtts();
    await expect(connect(`mqtts://127.0.0.1:${port}`, { ca: readFileSync(certs.otherCa) })).rejects.toThrow(/certificate/i);
  });

  it('mosquitto_sub receives over TLS (--cafile) what mosquitto_pub publishes over TLS', async (ctx) => {
    requirePeers(ctx, mosquittoSub, mosquittoPub);
    const { port } = await startMqtts();
    const topic = `tls/mosquitto/${randomUUID()}`;
    const tlsArgs = ['-h', '127.0.0.1', '-p', String(port), '--cafile', certs.ca];
    const sub = startProcess('stdbuf', ['-oL', 'mosquitto_sub', ...tlsArgs, '-t', topic, '-q', '1', '-C', '1', '-W', '8', '-d'], { deadlineMs: 12_000 });
    await sub.waitForLine(/^Subscribed \(mid: \d+\)/, { within: 5000 });
    expectCleanExit(await runProcess('mosquitto_pub', [...tlsArgs, '-t', topic, '-q', '1', '-m', 'hello over tls'], { deadlineMs: 10_000 }));
    const result = expectCleanExit(await sub.exited);
    expect(result.stdout.split('\n')).toContain('hello over tls');
  });

  it('plaintext MQTT on the TLS port is refused: no CONNACK, closed, counted, not a connection', async () => {
    const log = recordingLogger('debug');
    const { port, broker } = await startMqtts({}, { log: log.log });
    const attempt = await attemptConnect(net.connect(port, '127.0.0.1'));
    expect(attempt.accepted).toBe(false);
    expect(attempt.received.startsWith('20')).toBe(false);
    await eventually(() => broker.stats.tlsHandshakeFailures === 1, 'handshake failure counted');
    expect(broker.stats.connectionsAccepted).toBe(0);
    expect(broker.connectionCount).toBe(0);
    const line = log.lines.find((l) => l.msg === 'TLS handshake failed');
    expect(line).toMatchObject({ level: 20, remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
  });

  it('a TLS 1.1 client is refused, though the same client completes a TLS 1.1 handshake with a server that allows it', async () => {
    const legacy: tls.ConnectionOptions = { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' };
    // Control: the client really offers TLS 1.1 (Node's OpenSSL only does at security level 0).
    const control = tls.createServer({ cert: readFileSync(certs.cert), key: readFileSync(certs.key), minVersion: 'TLSv1', ciphers: 'DEFAULT:@SECLEVEL=0' });
    await new Promise<void>((resolve) => control.listen(0, '127.0.0.1', resolve));
    try {
      const socket = tlsSocket((control.address() as net.AddressInfo).port, undefined, legacy);
      await new Promise<void>((resolve, reject) => {
        socket.once('secureConnect', resolve);
        socket.once('error', reject);
      });
      expect(socket.getProtocol()).toBe('TLSv1.1');
      socket.destroy();
    } finally {
      control.close();
    }
    const { port, broker } = await startMqtts();
    for (const version of [{ ...legacy, maxVersion: 'TLSv1' as const }, legacy]) {
      const attempt = await attemptConnect(tlsSocket(port, undefined, version));
      expect(attempt).toMatchObject({ accepted: false, error: expect.stringMatching(/ERR_SSL|ECONNRESET/) });
    }
    await eventually(() => broker.stats.tlsHandshakeFailures === 2, 'both refusals counted');
  });

  it('minVersion TLSv1.3 refuses a TLS 1.2 client and serves a TLS 1.3 one', async () => {
    const { port } = await startMqtts({ minVersion: 'TLSv1.3' });
    expect((await attemptConnect(tlsSocket(port, undefined, { maxVersion: 'TLSv1.2' }))).accepted).toBe(false);
    expect((await attemptConnect(tlsSocket(port))).accepted).toBe(true);
  });

  it('a peer that never completes the handshake is dropped after connectTimeoutMs', async () => {
    const { port, broker } = await startMqtts({}, { connectTimeoutMs: 300 });
    const socket = net.connect(port, '127.0.0.1');
    const started = Date.now();
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('still open after 3 s')), 3000);
      socket.on('error', () => undefined);
      socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    await eventually(() => broker.stats.tlsHandshakeFailures === 1, 'timeout counted');
  });

  it('refuses to start when a certificate file is missing, naming the listener and the file', async () => {
    const missing = `${certs.dir}/nope.crt`;
    const err = await startListeners({ listeners: [{ type: 'mqtts', host: '127.0.0.1', port: 0, cert: missing, key: certs.key }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ListenerError);
    expect(err).toMatchObject({ code: 'SB_ERR_LISTENER_TLS', message: expect.stringContaining(`cert file not found: ${missing}`) });
    expect((err as Error).message).toMatch(/^mqtts listener 127\.0\.0\.1:0/);
  });
});

describe('mqtts listener in a whole signalbox', () => {
  it('loads certificate paths relative to signalbox.yaml and a passphrase from the environment; rules see TLS clients\' messages', async () => {
    const rel = (file: string) => path.join('..', path.basename(certs.dir), path.basename(file));
    const sb = await startEngine({
      config: [
        'broker:',
        '  listeners:',
        `    - { type: mqtts, host: 127.0.0.1, port: 0, cert: ${rel(certs.cert)}, key: ${rel(certs.encryptedKey)}, passphrase: "\${env:SB_TEST_KEY_PASSPHRASE}" }`,
        'storage: { path: ":memory:" }',
        '',
      ].join('\n'),
      rules: { 'echo.yaml': 'rules:\n  - id: echo\n    on: in/#\n    to:\n      - republish: { topic: "out/${levels[1]}" }\n' },
    }, { env: { SB_TEST_KEY_PASSPHRASE: KEY_PASSPHRASE } });
    try {
      const ca = readFileSync(certs.ca);
      const sub = await connect(`mqtts://127.0.0.1:${sb.port}`, { ca });
      const pub = await connect(`mqtts://127.0.0.1:${sb.port}`, { ca });
      await sub.subscribeAsync('out/#', { qos: 1 });
      const got = nextMessage(sub);
      await pub.publishAsync('in/kitchen', '21.5', { qos: 1 });
      expect((await got).topic).toBe('out/kitchen');
      await Promise.all([sub.endAsync(), pub.endAsync()]);
    } finally {
      await sb.close();
    }
  });
});

describe('mqtts listener with requireCertificate', () => {
  it('a client with a certificate from the CA connects, and its CN reaches the broker as certificateUsername', async () => {
    const { port, peers } = await startMqtts({ requireCertificate: true });
    const client = await connect(`mqtts://127.0.0.1:${port}`, { ca: readFileSync(certs.ca), cert: readFileSync(certs.client.cert), key: readFileSync(certs.client.key) });
    await client.endAsync();
    expect(peers).toEqual([expect.objectContaining({ type: 'mqtts', certificateUsername: CLIENT_CN, address: '127.0.0.1' })]);
  });

  it('mosquitto_pub with --cert/--key is accepted and identified by its CN', async (ctx) => {
    requirePeers(ctx, mosquittoPub);
    const { port, peers } = await startMqtts({ requireCertificate: true });
    expectCleanExit(await runProcess('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '--cafile', certs.ca, '--cert', certs.client.cert, '--key', certs.client.key, '-t', 'tls/cert', '-q', '1', '-m', 'x'], { deadlineMs: 10_000 }));
    expect(peers.map((p) => p.certificateUsername)).toEqual([CLIENT_CN]);
  });

  it('certificateUsername: none accepts the certificate but names no user', async () => {
    const { port, peers } = await startMqtts({ requireCertificate: true, certificateUsername: 'none' });
    expect((await attemptConnect(tlsSocket(port, certs.client))).accepted).toBe(true);
    expect(peers).toHaveLength(1);
    expect(peers[0]!.certificateUsername).toBeUndefined();
  });

  it.each([
    { what: 'no client certificate', cert: () => undefined, reason: /no client certificate/ },
    { what: 'a certificate from another CA', cert: () => certs.wrongCaClient, reason: /UNABLE_TO_(GET_ISSUER|VERIFY)/ },
    { what: 'an expired certificate', cert: () => certs.expiredClient, reason: /CERT_HAS_EXPIRED/ },
  ])('refuses $what before any MQTT: no CONNACK, logged with the reason, counted, nothing routed', async ({ cert, reason }) => {
    const log = recordingLogger('debug');
    const { port, plainPort, broker, peers } = await startMqtts({ requireCertificate: true }, { log: log.log });
    const watcher = await connect(`mqtt://127.0.0.1:${plainPort}`);
    try {
      await watcher.subscribeAsync('#');
      const attempt = await attemptConnect(tlsSocket(port, cert()));
      expect(attempt.accepted).toBe(false);
      await eventually(() => broker.stats.tlsHandshakeFailures === 1, 'refusal counted');
      expect(peers).toEqual([expect.objectContaining({ type: 'mqtt' })]);
      expect(broker.stats.connectionsAccepted).toBe(1); // the watcher only
      const line = log.lines.find((l) => l.msg === 'client certificate refused; closing');
      expect(line).toMatchObject({ level: 30, remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/), reason: expect.stringMatching(reason) });
      // The listener still serves a good client afterwards.
      expect((await attemptConnect(tlsSocket(port, certs.client))).accepted).toBe(true);
    } finally {
      await watcher.endAsync();
    }
  });
});
