import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { cli, ROOT } from '../helpers/cli.js';
import { startEngine, writeProject } from '../helpers/engine.js';
import { connect } from '../helpers/mqtt.js';



const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** A temp project removed after the test. */
function project(files: Parameters<typeof writeProject>[0]): string {
  const p = writeProject(files);
  cleanups.push(p.cleanup);
  return p.dir;
}

const GREENHOUSE = `rules:
  - id: greenhouse-temperature
    on: greenhouse/+/temperature
    when: payload.celsius > -40
    transform: '{ "room": levels[1], "c": payload.celsius, "f": payload.celsius * 9 / 5 + 32 }'
    to:
      - republish: { topic: "greenhouse/\${payload.room}/fahrenheit", qos: 1, retain: true }
      - history: {}
tests:
  - name: converts to fahrenheit
    publish: { topic: greenhouse/north/temperature, payload: { celsius: 20 } }
    expect:
      - republish: { topic: greenhouse/north/fahrenheit, payload: { room: north, c: 20, f: 68 } }
`;

const ALERTS = `rules:
  - id: too-hot
    on: greenhouse/+/fahrenheit
    when: payload.f > 80
    to:
      - republish: { topic: alerts/hot }
  - id: broken
    on: broken/+
    transform: '$error("cannot read " & topic)'
    to:
      - history: {}
tests:
  - name: a hot room raises an alert
    publish: { topic: greenhouse/east/temperature, payload: { celsius: 30 } }
    expect:
      - republish: { topic: alerts/hot, payload: { room: east, c: 30, f: 86 } }
  - name: a cool room does not
    publish: { topic: greenhouse/east/temperature, payload: { celsius: 10 } }
    expect:
      - republish: { topic: alerts/hot, count: 0 }
`;

// dist/ is built once for the whole run by test/global-setup.ts.

describe('signalbox check', () => {
  it('summarises a good project', async () => {
    const dir = project({ rules: { 'alerts.yaml': ALERTS, 'greenhouse.yaml': GREENHOUSE } });
    const r = await cli(['check'], dir);
    expect(r).toMatchObject({ code: 0, stdout: 'ok: 3 rules in 2 files, 3 tests; config signalbox.yaml\n' });
  });

  it('reports every problem in every file with file:line:col and a code, and exits 1', async () => {
    const dir = project({
      rules: {
        'a.yaml': 'rules:\n  - id: temp\n    on: greenhouse/#/x\n    when: "payload.c >"\n    to:\n      - republish: { topic: out }\n',
        'b.yaml': 'rules:\n  - id: temp\n    on: b\n    to:\n      - history: {}\n  - id: other\n    on: c\n    to:\n      - email: { to: x }\n      - republish: { topic: c, qos: 5 }\n',
      },
    });
    const r = await cli(['check'], dir);
    expect(r.code).toBe(1);
    const located = r.stdout.split('\n').filter((l) => /^rules\//.test(l)).map((l) => l.split(' ').slice(0, 2).join(' '));
    expect(located).toEqual([
      'rules/a.yaml:3:9 SB_RULE_FILTER',
      'rules/a.yaml:4:23 SB_RULE_EXPRESSION',
      'rules/b.yaml:2:9 SB_RULE_DUPLICATE_ID',
      'rules/b.yaml:9:9 SB_RULE_OUTPUT',
      'rules/b.yaml:10:37 SB_CONFIG_SCHEMA',
    ]);
    expect(r.stdout).toContain('hint: outputs are: republish, history');
    expect(r.stdout).toContain('must be 0, 1 or 2, got 5');
    expect(r.stdout).toMatch(/\n5 problem\(s\)\n$/);
  });
});

describe('signalbox test', () => {
  it("passes the repository's own example rules", async () => {
    const r = await cli(['test'], ROOT);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('✓ rules/greenhouse.yaml:15 converts to fahrenheit\n');
    const summary = /^(\d+) passed, 0 failed$/m.exec(r.stdout);
    expect(Number(summary?.[1])).toBeGreaterThanOrEqual(5);
  });

  it('exits 1 on a failing case and prints its diff; files narrow the run', async () => {
    const wrong = GREENHOUSE.replace('f: 68', 'f: 69');
    const dir = project({ rules: { 'alerts.yaml': ALERTS, 'greenhouse.yaml': wrong } });
    const r = await cli(['test'], dir);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain('✓ rules/alerts.yaml:13 a hot room raises an alert\n');
    expect(r.stdout).toContain('✗ rules/greenhouse.yaml:10 converts to fahrenheit\n');
    expect(r.stdout).toContain('payload: expected {"room":"north","c":20,"f":69}, got {"room":"north","c":20,"f":68}');
    expect(r.stdout).toContain('        "f": 68');
    expect(r.stdout).toMatch(/\n2 passed, 1 failed\n$/);

    // Only alerts.yaml: its test needs the greenhouse rule, so it fails without it.
    const only = await cli(['test', 'rules/alerts.yaml'], dir);
    expect(only.code).toBe(1);
    expect(only.stdout).toMatch(/\n1 passed, 1 failed\n$/);
    expect(only.stdout).not.toContain('greenhouse.yaml');
  });

  it('accepts folders and exits 2 with the report on config problems', async () => {
    const dir = project({ rules: { 'greenhouse.yaml': GREENHOUSE } });
    expect(await cli(['test', 'rules'], dir)).toMatchObject({ code: 0, stdout: expect.stringMatching(/\n?1 passed, 0 failed\n$/) });
    const bad = await cli(['test', 'rules', 'missing.yaml'], dir);
    expect(bad).toMatchObject({ code: 2, stdout: '' });
    expect(bad.stderr).toContain('missing.yaml:1:1 SB_CONFIG_NOT_FOUND file not found');
    expect(bad.stderr).toContain('1 problem(s)');
  });
});

describe('signalbox trace', () => {
  it('explains matched, chained, not matched, skipped and failing rules', async () => {
    const dir = project({ rules: { 'alerts.yaml': ALERTS, 'greenhouse.yaml': GREENHOUSE } });
    const [hot, skipped, failing, json] = await Promise.all([
      cli(['trace', '--topic', 'greenhouse/east/temperature', '--payload', '{"celsius":30}'], dir),
      cli(['trace', '--topic', 'greenhouse/east/temperature', '--payload', '{"celsius":-99}', '--qos', '1'], dir),
      cli(['trace', '--topic', 'broken/x', '--payload', 'anything'], dir),
      cli(['trace', '--topic', 'greenhouse/a/temperature', '--payload', '{"celsius":1}', '--json', '--retain', '--client-id', 'sensor-9'], dir),
    ]);
    expect(hot.code).toBe(0);
    expect(hot.stdout).toBe(
      [
        'greenhouse/east/temperature (qos 0, client signalbox-trace) {"celsius":30}',
        '  too-hot (rules/alerts.yaml:2): not matched: no filter matches (greenhouse/+/fahrenheit)',
        '  broken (rules/alerts.yaml:7): not matched: no filter matches (broken/+)',
        '  greenhouse-temperature (rules/greenhouse.yaml:2): matched greenhouse/+/temperature',
        '    ok',
        '      republish → greenhouse/east/fahrenheit (qos 1, retain) {"room":"east","c":30,"f":86}',
        '        → greenhouse/east/fahrenheit (qos 1, retain, hop 1) {"room":"east","c":30,"f":86}',
        '          too-hot (rules/alerts.yaml:2): matched greenhouse/+/fahrenheit',
        '            ok',
        '              republish → alerts/hot (qos 1) {"room":"east","c":30,"f":86}',
        '                → hop 2: no rule matches alerts/hot',
        '      history → greenhouse/east/temperature {"room":"east","c":30,"f":86}',
        '',
      ].join('\n'),
    );

    expect(skipped.stdout).toContain('greenhouse-temperature (rules/greenhouse.yaml:2): matched greenhouse/+/temperature\n    skipped: when `payload.celsius > -40` is false\n');

    expect(failing.code).toBe(0);
    expect(failing.stdout).toMatch(/broken \(rules\/alerts\.yaml:7\): matched broken\/\+\n {4}error at transform \(step 1\): .*cannot read broken\/x \(would be a dead letter\)\n/);

    const trace = JSON.parse(json.stdout) as { clientId: string; retain: boolean; rules: { id: string; status: string }[] };
    expect(trace).toMatchObject({ clientId: 'sensor-9', retain: true });
    expect(trace.rules.map((r) => `${r.id}:${r.status}`)).toEqual(['too-hot:not-matched', 'broken:not-matched', 'greenhouse-temperature:ok']);
  });

  it('exits 2 on a bad topic, a bad qos, or config problems', async () => {
    const dir = project({ rules: { 'greenhouse.yaml': GREENHOUSE } });
    const [wildcard, qos, missing, badConfig] = await Promise.all([
      cli(['trace', '--topic', 'greenhouse/#', '--payload', 'x'], dir),
      cli(['trace', '--topic', 'a', '--payload', 'x', '--qos', '3'], dir),
      cli(['trace', '--topic', 'a'], dir),
      cli(['trace', '--topic', 'a', '--payload', 'x', '-c', 'nope.yaml'], dir),
    ]);
    expect(wildcard).toMatchObject({ code: 2, stdout: '', stderr: expect.stringContaining("invalid topic 'greenhouse/#'") });
    expect(qos).toMatchObject({ code: 2, stderr: "signalbox trace: --qos must be 0, 1 or 2, got '3'\n" });
    expect(missing).toMatchObject({ code: 2, stderr: expect.stringContaining("'--payload <text>' not specified") });
    expect(badConfig).toMatchObject({ code: 2, stderr: expect.stringContaining('nope.yaml:1:1 SB_CONFIG_NOT_FOUND') });
  });
});

describe('signalbox history', () => {
  it('prints rows a real engine stored, reading storage.path from the config', async () => {
    const t = await startEngine({ rules: { 'greenhouse.yaml': GREENHOUSE } });
    cleanups.push(() => rmSync(t.dir, { recursive: true, force: true }));
    const client = await connect(t.url);
    // QoS 1: PUBACK waits for the history row to be committed.
    await client.publishAsync('greenhouse/north/temperature', '{"celsius":20}', { qos: 1 });
    await client.publishAsync('greenhouse/south/temperature', '{"celsius":25}', { qos: 1 });
    await client.endAsync();
    // The engine alone: t.close() would also delete the project the CLI reads.
    await t.engine.close();

    const r = await cli(['history', 'greenhouse/+/temperature', '--json'], t.dir);
    expect(r.code).toBe(0);
    const rows = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows).toMatchObject([
      { topic: 'greenhouse/north/temperature', ruleId: 'greenhouse-temperature', payload: { room: 'north', c: 20, f: 68 }, payloadEncoding: 'json' },
      { topic: 'greenhouse/south/temperature', payload: { room: 'south', c: 25, f: 77 } },
    ]);
    const limited = await cli(['history', '#', '--limit', '1'], t.dir);
    expect(limited.stdout).toMatch(/^\S+ {2}greenhouse\/south\/temperature {2}q1 r0 {2}rule=greenhouse-temperature {2}\{"room":"south","c":25,"f":77\}\n$/);
    expect(await cli(['history', '#', '--limit', 'lots'], t.dir)).toMatchObject({ code: 2, stderr: expect.stringContaining('must be a whole number') });
  });
});

/** A port nothing listens on right now (bound, then released). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

describe('signalbox status', () => {
  it('shows the running broker, a bridge that cannot connect, and what waits in its outbox', async () => {
    const port = await freePort();
    const deadPort = await freePort();
    const t = await startEngine({
      config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: ${port} }]\noutputs:\n  cloud:\n    type: bridge\n    url: mqtt://127.0.0.1:${deadPort}\n    reconnect: { retryMinMs: 50, retryMaxMs: 100 }\n`,
      rules: { 'fwd.yaml': 'rules:\n  - id: fwd\n    on: t/#\n    to:\n      - bridge: { output: cloud }\n' },
    });
    cleanups.push(() => void t.close());
    const client = await connect(t.url);
    await client.publishAsync('t/1', 'waiting', { qos: 1 });
    await client.endAsync();

    const r = await cli(['status', '--json'], t.dir);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout) as { broker: { reachable: boolean }; bridges: Record<string, string>; outboxes: Record<string, { waiting: number }> };
    expect(report.broker.reachable).toBe(true);
    expect(['connecting', 'offline']).toContain(report.bridges.cloud);
    expect(report.outboxes.cloud!.waiting).toBe(1);
    const text = await cli(['status'], t.dir);
    expect(text.stdout).toMatch(/^broker {5}mqtt:\/\/127\.0\.0\.1:\d+ {2}running$/m);
    expect(text.stdout).toMatch(/^outbox {5}cloud {2}1 waiting/m);
  });

  it('says so, and exits 1, when no signalbox is running', async () => {
    const port = await freePort();
    const dir = project({ config: `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: ${port} }]\n` });
    const r = await cli(['status'], dir);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/NOT REACHABLE/);
  });
});

describe('signalbox', () => {
  it('prints its version and help', async () => {
    const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(await cli(['--version'], ROOT)).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
    const help = await cli(['--help'], ROOT);
    expect(help.code).toBe(0);
    for (const command of ['run', 'check', 'test', 'trace', 'history']) expect(help.stdout).toMatch(new RegExp(`^  ${command}\\b`, 'm'));
  });

  it('refuses to run with a bad rule file, naming file:line:col on stderr', async () => {
    const dir = project({ rules: { 'bad.yaml': 'rules:\n  - id: x\n    on: a/#/b\n    to: [ { history: {} } ]\n' } });
    const r = await cli(['run', '--log-level', 'silent'], dir);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('signalbox: not starting: 1 problem(s)');
    expect(r.stderr).toContain('rules/bad.yaml:3:9 SB_RULE_FILTER');
  });
});
