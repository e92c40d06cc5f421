import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { onTestFinished } from 'vitest';
import { requireCommand, type Peer } from './peers.js';

/**
 * Throwaway certificates made with openssl for TLS tests: a CA, a server certificate it
 * signed, client certificates (valid, signed by another CA, expired), and a second CA.
 */

/** openssl, for {@link makeCertificates}. */
export const opensslPeer: Peer = requireCommand('openssl', 'apt-get install -y openssl');

/** A certificate and its private key (PEM files). */
export interface KeyPair {
  cert: string;
  key: string;
}

/** PEM files made by {@link makeCertificates}. */
export interface Certificates {
  dir: string;
  /** The CA that signed the server certificate and the valid client certificates. */
  ca: string;
  /** Server certificate for 127.0.0.1 and localhost, and its key. */
  cert: string;
  key: string;
  /** The server key encrypted with {@link KEY_PASSPHRASE}. */
  encryptedKey: string;
  /** A second CA; it signed only {@link Certificates.wrongCaClient}. Trusting only it must fail the handshake. */
  otherCa: string;
  /** A client certificate from `ca`, subject CN {@link CLIENT_CN}. */
  client: KeyPair;
  /** A client certificate from `otherCa`, CN `wrong-ca-device`. */
  wrongCaClient: KeyPair;
  /** A client certificate from `ca` that expired in 2020, CN `expired-device`. */
  expiredClient: KeyPair;
}

/** The subject CN of {@link Certificates.client}. */
export const CLIENT_CN = 'device-1';
/** The passphrase of {@link Certificates.encryptedKey}. */
export const KEY_PASSPHRASE = 'correct horse';

/** Every openssl run is bounded; key generation (EC P-256) takes milliseconds. */
const OPENSSL_TIMEOUT_MS = 10_000;

function openssl(dir: string, args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, timeout: OPENSSL_TIMEOUT_MS, stdio: ['ignore', 'pipe', 'pipe'] });
}

const EC_KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

function makeCa(dir: string, name: string): void {
  openssl(dir, [
    'req', '-x509', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.crt`, '-days', '2', '-subj', `/CN=signalbox test ${name}`,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
}

/** A key and a signing request for `cn`, as `<name>.key` / `<name>.csr`. */
function makeRequest(dir: string, name: string, cn: string): void {
  openssl(dir, ['req', '-new', ...EC_KEY, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`]);
}

/** Signs `<name>.csr` with `<ca>.key` for two days, with the extensions in `<ext>.ext`. */
function sign(dir: string, name: string, ca: string, ext: string): KeyPair {
  openssl(dir, ['x509', '-req', '-in', `${name}.csr`, '-CA', `${ca}.crt`, '-CAkey', `${ca}.key`, '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${ext}.ext`]);
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}

/**
 * Signs `<name>.csr` with `ca` for a day in January 2020: `openssl x509` cannot backdate, so
 * this goes through `openssl ca` with a throwaway database.
 */
function signExpired(dir: string, name: string): KeyPair {
  writeFileSync(path.join(dir, 'ca.cnf'), [
    '[ca]', 'default_ca = test_ca', '[test_ca]', 'database = index.txt', 'new_certs_dir = .', 'serial = ca-db.srl',
    'default_md = sha256', 'policy = any', 'unique_subject = no', 'email_in_dn = no', 'copy_extensions = none', '[any]', 'commonName = supplied', '',
  ].join('\n'));
  writeFileSync(path.join(dir, 'index.txt'), '');
  writeFileSync(path.join(dir, 'ca-db.srl'), '1000\n');
  openssl(dir, ['ca', '-batch', '-config', 'ca.cnf', '-cert', 'ca.crt', '-keyfile', 'ca.key', '-in', `${name}.csr`, '-out', `${name}.crt`, '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext', '-extfile', 'client.ext']);
  return { cert: path.join(dir, `${name}.crt`), key: path.join(dir, `${name}.key`) };
}

/**
 * Makes every file of {@link Certificates} in a fresh temp dir (removed when the test
 * finishes; outside a test the caller removes `dir`). Synchronous and bounded, about 20
 * openssl runs of a few milliseconds. Call `opensslPeer.require(ctx)` first.
 */
export function makeCertificates(): Certificates {
  const dir = mkdtempSync(path.join(tmpdir(), 'signalbox-certs-'));
  try {
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  } catch {
    // outside a test (beforeAll): the caller removes `dir`
  }
  makeCa(dir, 'ca');
  makeCa(dir, 'other-ca');
  writeFileSync(
    path.join(dir, 'server.ext'),
    ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature,keyEncipherment', 'extendedKeyUsage=serverAuth', 'subjectAltName=IP:127.0.0.1,DNS:localhost', ''].join('\n'),
  );
  writeFileSync(path.join(dir, 'client.ext'), ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth', ''].join('\n'));
  makeRequest(dir, 'server', 'localhost');
  const server = sign(dir, 'server', 'ca', 'server');
  openssl(dir, ['pkey', '-in', 'server.key', '-aes256', '-passout', `pass:${KEY_PASSPHRASE}`, '-out', 'server-encrypted.key']);
  makeRequest(dir, 'client', CLIENT_CN);
  makeRequest(dir, 'wrong-ca-client', 'wrong-ca-device');
  makeRequest(dir, 'expired-client', 'expired-device');
  return {
    dir,
    ca: path.join(dir, 'ca.crt'),
    cert: server.cert,
    key: server.key,
    encryptedKey: path.join(dir, 'server-encrypted.key'),
    otherCa: path.join(dir, 'other-ca.crt'),
    client: sign(dir, 'client', 'ca', 'client'),
    wrongCaClient: sign(dir, 'wrong-ca-client', 'other-ca', 'client'),
    expiredClient: signExpired(dir, 'expired-client'),
  };
}
