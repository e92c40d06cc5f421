import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { TlsListenerConfig } from '../../config/broker.js';
import { describeListener, ListenerError, remoteOf, type ListenerContext, type StreamPeer } from './listener.js';

/** The file settings of a TLS listener. */
export type TlsFileField = 'cert' | 'key' | 'ca';

/** A problem with one of a TLS listener's files, for the config loader to locate. */
export interface TlsFileProblem {
  field: TlsFileField | 'passphrase' | 'ciphers';
  /** `missing`: the file does not exist; `invalid`: it cannot be read or used. */
  kind: 'missing' | 'invalid';
  message: string;
}

interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | undefined;
}

/**
 * Reads and checks a TLS listener's files without starting anything: each must exist, be
 * readable, parse as PEM, and the key must open (passphrase) and match the certificate;
 * `ciphers`, when given, must name at least one cipher OpenSSL knows.
 * Returns every problem found (empty when the listener can start); the loader reports them
 * at config time, the listener throws the first at start.
 */
export function tlsFileProblems(config: TlsListenerConfig): TlsFileProblem[] {
  return readTlsMaterial(config).problems;
}

function readTlsMaterial(config: TlsListenerConfig): { material?: TlsMaterial; problems: TlsFileProblem[] } {
  const problems: TlsFileProblem[] = [];
  const read = (field: TlsFileField, file: string): Buffer | undefined => {
    try {
      return readFileSync(file);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') problems.push({ field, kind: 'missing', message: `${field} file not found: ${file}` });
      else problems.push({ field, kind: 'invalid', message: `cannot read the ${field} file ${file}: ${code ?? (err as Error).message}` });
      return undefined;
    }
  };
  const cert = read('cert', config.cert);
  const key = read('key', config.key);
  const ca = config.ca === undefined ? undefined : read('ca', config.ca);
  // Each part alone first, so a problem is pinned on the file that has it.
  const check = (field: TlsFileProblem['field'], what: string, options: tls.SecureContextOptions): boolean => {
    const reason = contextError(options);
    if (reason !== undefined) problems.push({ field, kind: 'invalid', message: `${what}: ${reason}` });
    return reason === undefined;
  };
  if (ca) {
    const reason = caError(ca);
    if (reason !== undefined) problems.push({ field: 'ca', kind: 'invalid', message: `the ca file ${config.ca} does not hold PEM CA certificates: ${reason}` });
  }
  const certOk = cert !== undefined && check('cert', `the cert file ${config.cert} is not a PEM certificate`, { cert });
  if (certOk && key) {
    const reason = contextError({ cert, key, passphrase: config.passphrase });
    if (reason !== undefined) {
      const passphrase = config.passphrase !== undefined && /bad decrypt/i.test(reason);
      problems.push({ field: passphrase ? 'passphrase' : 'key', kind: 'invalid', message: `the key file ${config.key} cannot be used with the cert file ${config.cert}: ${reason}` });
    }
  }
  if (config.ciphers !== undefined) check('ciphers', `OpenSSL accepts no cipher of "${config.ciphers}"`, { ciphers: config.ciphers });
  return problems.length === 0 ? { material: { cert: cert!, key: key!, ca }, problems } : { problems };
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/**
 * Why `ca` is not a list of PEM certificates. Node skips what it cannot parse in a CA list
 * without a word, which would leave every client certificate refused for no visible reason.
 */
function caError(ca: Buffer): string | undefined {
  const blocks = ca.toString('latin1').match(PEM_CERTIFICATE) ?? [];
  if (blocks.length === 0) return 'no -----BEGIN CERTIFICATE----- block';
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch (err) {
      return `certificate ${i + 1}: ${tlsReason(err)}`;
    }
  }
  return undefined;
}

/** Why Node cannot build a TLS context from `options`, or undefined when it can. */
function contextError(options: tls.SecureContextOptions): string | undefined {
  try {
    tls.createSecureContext(options);
    return undefined;
  } catch (err) {
    return tlsReason(err);
  }
}

/** OpenSSL's reason without its numeric prefix (`error:1E08010C:DECODER routines::unsupported` → `DECODER routines: unsupported`). */
function tlsReason(err: unknown): string {
  const e = err as { message?: string; reason?: string };
  return (e.reason ?? e.message ?? String(err)).replace(/^error:[0-9A-F]+:/, '').replace(/::/g, ': ');
}

/**
 * The `tls.createServer` options of a TLS listener. Reads its files now (synchronously, at
 * start); throws a {@link ListenerError} naming the listener and the file when one is missing
 * or unusable.
 */
export function tlsServerOptions(config: TlsListenerConfig, context: ListenerContext): tls.TlsOptions {
  const { material, problems } = readTlsMaterial(config);
  if (!material) throw new ListenerError('SB_ERR_LISTENER_TLS', describeListener(config), problems.map((p) => p.message).join('; '));
  return {
    cert: material.cert,
    key: material.key,
    passphrase: config.passphrase,
    ca: material.ca,
    minVersion: config.minVersion,
    ...(config.ciphers === undefined ? {} : { ciphers: config.ciphers }),
    requestCert: config.requireCertificate,
    // Client certificates are checked in acceptTlsSocket instead: Node would drop a refused
    // one without telling the server why, and the reason belongs in the log.
    rejectUnauthorized: false,
    handshakeTimeout: context.handshakeTimeoutMs,
  };
}

/**
 * Logs and counts failed handshakes of a TLS server (plaintext on the TLS port, a TLS
 * version below `minVersion`, no shared cipher, a handshake that stalls past the timeout).
 * Node destroys the socket; nothing reaches the broker.
 */
export function watchHandshakeFailures(server: tls.Server, config: TlsListenerConfig, context: ListenerContext): void {
  server.on('tlsClientError', (err: Error & { code?: string }, socket: tls.TLSSocket) => {
    context.stats.tlsHandshakeFailures++;
    context.log.debug({ listener: describeListener(config), remote: remoteOf(socket), code: err.code, reason: tlsReason(err) }, 'TLS handshake failed');
    // Node leaves a socket whose handshake timed out open.
    socket.destroy();
  });
}

/**
 * Decides whether a TLS socket that completed its handshake may go on to MQTT. Under
 * `requireCertificate` the client must have sent a certificate that `ca` vouches for (and
 * that is in its validity period), with a CN when `certificateUsername` is `CN`. Returns
 * the peer for the broker, or undefined after logging, counting and destroying the socket.
 */
export function acceptTlsSocket(socket: tls.TLSSocket, config: TlsListenerConfig, context: ListenerContext): StreamPeer | undefined {
  const remote = remoteOf(socket);
  const peer = { remote, address: socket.remoteAddress ?? '' };
  if (!config.requireCertificate) return peer;
  const refuse = (reason: string): undefined => {
    context.stats.tlsHandshakeFailures++;
    context.log.info({ listener: describeListener(config), remote, reason }, 'client certificate refused; closing');
    socket.destroy();
    return undefined;
  };
  const certificate = socket.getPeerCertificate();
  if (!certificate || Object.keys(certificate).length === 0) return refuse('no client certificate');
  if (!socket.authorized) return refuse(`client certificate not accepted: ${String(socket.authorizationError)}`);
  if (config.certificateUsername === 'none') return peer;
  const cn = certificate.subject?.CN as string | string[] | undefined;
  // A certificate with several CNs names no single user.
  if (typeof cn !== 'string' || cn === '') return refuse('client certificate has no single subject CN');
  return { ...peer, certificateUsername: cn };
}
