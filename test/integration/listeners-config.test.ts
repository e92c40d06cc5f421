import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it, onTestFinished } from 'vitest';
import { LISTENER_ERROR_CODES } from '../../src/broker/listeners/listener.js';
import type { ConfigIssue } from '../../src/config/issues.js';
import { loadConfigFile } from '../../src/config/load.js';
import { KEY_PASSPHRASE, makeCertificates, opensslPeer, type Certificates } from '../helpers/certs.js';
import { cli } from '../helpers/cli.js';

// Listener settings as a user writes them in signalbox.yaml: defaults, relative certificate
// paths, and every bad form reported at its line and column with a code.

let certs: Certificates;
let dir: string;

beforeAll(() => {
  if (opensslPeer.missing === undefined) certs = makeCertificates();
});

afterAll(() => {
  if (certs) rmSync(certs.dir, { recursive: true, force: true });
});

beforeEach((ctx) => {
  opensslPeer.require(ctx);
  dir = mkdtempSync(path.join(tmpdir(), 'signalbox-listeners-'));
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  // The files sit beside the config under certs/, as a user would keep them.
  mkdirSync(path.join(dir, 'certs'));
  for (const [from, to] of [[certs.cert, 'server.crt'], [certs.key, 'server.key'], [certs.encryptedKey, 'encrypted.key'], [certs.ca, 'ca.crt'], [certs.client.key, 'other.key']]) {
    copyFileSync(from!, path.join(dir, 'certs', to!));
  }
  writeFileSync(path.join(dir, 'certs', 'garbage.pem'), 'not a certificate\n');
});

/** Loads `yaml` as signalbox.yaml in the temp dir; returns the config or the issues. */
function load(yaml: string) {
  const file = path.join(dir, 'signalbox.yaml');
  writeFileSync(file, yaml);
  const issues: ConfigIssue[] = [];
  const config = loadConfigFile(file, { explicit: true, skipOutputs: true }, issues);
  return { config, issues: issues.map((i) => ({ ...i, file: path.basename(i.file) })) };
}

/** One mqtts listener whose fields are the given YAML lines (6 spaces in). */
function mqtts(...lines: string[]): string {
  return ['broker:', '  listeners:', '    - type: mqtts', '      port: 0', ...lines.map((l) => `      ${l}`), ''].join('\n');
}

describe('listener config', () => {
  it('fills the defaults of each type and resolves certificate paths against the config folder', () => {
    const { config, issues } = load([
      'broker:',
      '  listeners:',
      '    - { type: mqtts, cert: certs/server.crt, key: certs/server.key }',
      '    - { type: ws }',
      '    - { type: wss, cert: certs/server.crt, key: certs/server.key, ca: certs/ca.crt, requireCertificate: true }',
      '',
    ].join('\n'));
    expect(issues).toEqual([]);
    expect(config!.broker.listeners).toEqual([
      { type: 'mqtts', host: '127.0.0.1', port: 8883, cert: path.join(dir, 'certs/server.crt'), key: path.join(dir, 'certs/server.key'), requireCertificate: false, certificateUsername: 'CN', minVersion: 'TLSv1.2' },
      { type: 'ws', host: '127.0.0.1', port: 8080, path: '/mqtt' },
      { type: 'wss', host: '127.0.0.1', port: 8081, path: '/mqtt', cert: path.join(dir, 'certs/server.crt'), key: path.join(dir, 'certs/server.key'), ca: path.join(dir, 'certs/ca.crt'), requireCertificate: true, certificateUsername: 'CN', minVersion: 'TLSv1.2' },
    ]);
  });

  it('opens an encrypted key with its passphrase', () => {
    const { issues } = load(mqtts('cert: certs/server.crt', 'key: certs/encrypted.key', `passphrase: "${KEY_PASSPHRASE}"`));
    expect(issues).toEqual([]);
  });

  it.each([
    { what: 'an unknown type', yaml: 'broker:\n  listeners:\n    - { type: mqtt-sn, port: 0 }\n', at: [3, 15], code: 'SB_CONFIG_SCHEMA', message: /listener type must be one of mqtt, mqtts, ws, wss/ },
    { what: 'a port above 65535', yaml: 'broker:\n  listeners:\n    - type: ws\n      port: 70000\n', at: [4, 13], code: 'SB_CONFIG_SCHEMA', message: /'broker\.listeners\[0\]\.port': .*65535/ },
    { what: 'a port that is not a number', yaml: 'broker:\n  listeners:\n    - type: mqtt\n      port: "1883x"\n', at: [4, 13], code: 'SB_CONFIG_SCHEMA', message: /port.*number/ },
    { what: 'mqtts without cert', yaml: mqtts('key: certs/server.key'), at: [3, 7], code: 'SB_CONFIG_SCHEMA', message: /'broker\.listeners\[0\]\.cert'/ },
    { what: 'a cert file that does not exist', yaml: mqtts('cert: certs/nope.crt', 'key: certs/server.key'), at: [5, 13], code: 'SB_CONFIG_NOT_FOUND', message: /mqtts listener on port 0: cert file not found: .*certs\/nope\.crt/ },
    { what: 'a key file that does not exist', yaml: mqtts('cert: certs/server.crt', 'key: nope.key'), at: [6, 12], code: 'SB_CONFIG_NOT_FOUND', message: /key file not found/ },
    { what: 'a cert path that is a folder', yaml: mqtts('cert: certs', 'key: certs/server.key'), at: [5, 13], code: 'SB_CONFIG_TLS', message: /cannot read the cert file .*EISDIR/ },
    { what: 'a cert file that is not PEM', yaml: mqtts('cert: certs/garbage.pem', 'key: certs/server.key'), at: [5, 13], code: 'SB_CONFIG_TLS', message: /is not a PEM certificate/ },
    { what: 'a key of another certificate', yaml: mqtts('cert: certs/server.crt', 'key: certs/other.key'), at: [6, 12], code: 'SB_CONFIG_TLS', message: /cannot be used with the cert file/ },
    { what: 'an encrypted key without passphrase', yaml: mqtts('cert: certs/server.crt', 'key: certs/encrypted.key'), at: [6, 12], code: 'SB_CONFIG_TLS', message: /key file .* cannot be used/ },
    { what: 'a wrong passphrase', yaml: mqtts('cert: certs/server.crt', 'key: certs/encrypted.key', 'passphrase: wrong'), at: [7, 19], code: 'SB_CONFIG_TLS', message: /bad decrypt/ },
    { what: 'a ca file that is not PEM', yaml: mqtts('cert: certs/server.crt', 'key: certs/server.key', 'ca: certs/garbage.pem'), at: [7, 11], code: 'SB_CONFIG_TLS', message: /ca file .* does not hold PEM CA certificates/ },
    { what: 'a cipher list OpenSSL does not know', yaml: mqtts('cert: certs/server.crt', 'key: certs/server.key', 'ciphers: NOT-A-CIPHER'), at: [7, 16], code: 'SB_CONFIG_TLS', message: /OpenSSL accepts no cipher of "NOT-A-CIPHER"/ },
    { what: 'requireCertificate without ca', yaml: mqtts('cert: certs/server.crt', 'key: certs/server.key', 'requireCertificate: true'), at: [7, 27], code: 'SB_CONFIG_SCHEMA', message: /requireCertificate needs `ca`/ },
    { what: 'minVersion TLSv1.1', yaml: mqtts('cert: certs/server.crt', 'key: certs/server.key', 'minVersion: TLSv1.1'), at: [7, 19], code: 'SB_CONFIG_SCHEMA', message: /must be TLSv1\.2 or TLSv1\.3/ },
    { what: 'an unknown certificateUsername', yaml: mqtts('cert: certs/server.crt', 'key: certs/server.key', 'certificateUsername: email'), at: [7, 28], code: 'SB_CONFIG_SCHEMA', message: /certificateUsername/ },
    { what: 'a ws path without a leading slash', yaml: 'broker:\n  listeners:\n    - type: ws\n      path: mqtt\n', at: [4, 13], code: 'SB_CONFIG_SCHEMA', message: /must start with \// },
    { what: 'TLS settings on a ws listener', yaml: 'broker:\n  listeners:\n    - type: ws\n      cert: certs/server.crt\n', at: [4, 7], code: 'SB_CONFIG_SCHEMA', message: /unknown key 'cert'/ },
  ])('reports $what at its line and column', ({ yaml, at, code, message }) => {
    const { config, issues } = load(yaml);
    expect(config).toBeUndefined();
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatchObject({ file: 'signalbox.yaml', line: at[0], col: at[1], code, message: expect.stringMatching(message) });
  });

  it('reports every file problem of every listener at once', () => {
    const { issues } = load([
      'broker:',
      '  listeners:',
      '    - { type: mqtts, port: 0, cert: a.crt, key: b.key }',
      '    - { type: wss, port: 0, cert: certs/server.crt, key: certs/server.key, ca: c.crt }',
      '',
    ].join('\n'));
    expect(issues.map((i) => [i.line, i.col, i.code])).toEqual([[3, 37], [3, 49], [4, 80]].map(([l, c]) => [l, c, 'SB_CONFIG_NOT_FOUND']));
  });

  it('signalbox check prints a missing certificate as file:line:col CODE', async () => {
    writeFileSync(path.join(dir, 'signalbox.yaml'), mqtts('cert: certs/server.crt', 'key: certs/missing.key'));
    const r = await cli(['check', '--config', 'signalbox.yaml'], dir);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('signalbox.yaml:6:12 SB_CONFIG_NOT_FOUND mqtts listener on port 0: key file not found:');
  });

  it('README.md documents every listener error code', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    for (const code of Object.keys(LISTENER_ERROR_CODES)) expect(readme).toMatch(new RegExp(`\\b${code}\\b`));
  });
});
