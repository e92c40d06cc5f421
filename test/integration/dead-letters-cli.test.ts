import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it, onTestFinished } from 'vitest';
import type { DeadLetter } from '../../src/storage/dead-letters.js';
import { cli, type CliResult } from '../helpers/cli.js';
import { startEngine, writeProject, type TestEngine } from '../helpers/engine.js';
import { connect } from '../helpers/mqtt.js';
import { TestTarget, testAction, testConnector } from '../helpers/test-output.js';

/**
 * `signalbox dead-letters list|replay|purge`, the built CLI run as a user runs it, against
 * the database of a signalbox running in this process: a rule whose transform fails and a
 * test output that refuses poison messages fill the dead letters; the running engine
 * redrives what `replay` marks.
 */



/** Polls `condition` (database state) until it holds; fails with `what` after `within` ms. */
async function until(condition: () => boolean, what: string, { within = 5000 } = {}): Promise<void> {
  const deadline = Date.now() + within;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${within} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const RULES = `rules:
  - id: parse-reading
    on: sensors/+/raw
    transform: '$error("boom")'
    to:
      - history: {}
  - id: forward
    on: sensors/+/out
    to:
      - test: { output: remote }
`;

/** The same rules with parse-reading fixed. */
const FIXED_RULES = RULES.replace(`transform: '$error("boom")'`, `transform: '{ "reading": payload }'`);

const CONFIG = `broker:
  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]
storage: { path: data/signalbox.db }
outputs:
  remote:
    type: test
    outbox: { retryMinMs: 5, retryMaxMs: 20 }
`;

/**
 * The config the CLI is pointed at: the same database. The project's own signalbox.yaml
 * names a `test` output, a type only this test process has; the storage commands refuse
 * such a config today (see the last describe block).
 */
const CLI_CONFIG = 'cli.yaml';

interface Fixture {
  sb: TestEngine;
  target: TestTarget;
  /** Runs `signalbox dead-letters <args> --config cli.yaml` in the project folder. */
  deadLetters(...args: string[]): Promise<CliResult>;
  /** Publishes one QoS 1 message and waits for its PUBACK. */
  publish(topic: string, payload: string): Promise<void>;
  letters(): DeadLetter[];
}

/** A running signalbox with the rules above, its CLI config, and a publisher. */
async function fixture(): Promise<Fixture> {
  const targets: Record<string, TestTarget> = {};
  const sb = await startEngine({ config: CONFIG, rules: { 'sensors.yaml': RULES } }, { actions: [testAction], connectors: [testConnector(targets)] });
  onTestFinished(() => sb.close());
  writeFileSync(path.join(sb.dir, CLI_CONFIG), 'storage: { path: data/signalbox.db }\n');
  const pub = await connect(sb.url, { clientId: 'sensor-1' });
  onTestFinished(() => {
    pub.end(true);
  });
  return {
    sb,
    target: targets['remote']!,
    deadLetters: (...args) => cli(['dead-letters', ...args, '--config', CLI_CONFIG], sb.dir),
    publish: async (topic, payload) => {
      await pub.publishAsync(topic, payload, { qos: 1 });
    },
    letters: () => sb.engine.deadLetters.list({ limit: 1000, order: 'asc' }),
  };
}

/** One letter from the failing rule and one from the output refusing a poison message. */
async function twoLetters(f: Fixture): Promise<{ ruleLetter: DeadLetter; outputLetter: DeadLetter }> {
  await f.publish('sensors/kitchen/raw', 'reading-42');
  await f.publish('sensors/kitchen/out', 'poison-7');
  await until(() => f.letters().length === 2, 'two dead letters');
  const [ruleLetter, outputLetter] = f.letters();
  expect(ruleLetter).toMatchObject({ ruleId: 'parse-reading', topic: 'sensors/kitchen/raw' });
  expect(outputLetter).toMatchObject({ ruleId: 'forward', output: 'remote', topic: 'sensors/kitchen/out' });
  return { ruleLetter: ruleLetter!, outputLetter: outputLetter! };
}

describe('signalbox dead-letters list', () => {
  it('lists each letter with its rule, output, error and payload', async () => {
    const f = await fixture();
    const { ruleLetter, outputLetter } = await twoLetters(f);
    const r = await f.deadLetters('list');
    expect(r.code, r.stderr).toBe(0);
    const [first, second] = r.stdout.split(/\n(?=#)/);
    expect(first).toContain(`#${ruleLetter.id}`);
    expect(first).toContain('sensors/kitchen/raw');
    expect(first).toContain('rule=parse-reading');
    expect(first).not.toContain('output=');
    expect(first).toMatch(/error: .*boom/);
    expect(first).toContain('payload: reading-42');
    expect(second).toContain(`#${outputLetter.id}`);
    expect(second).toContain('rule=forward output=remote');
    expect(second).toMatch(/error: SB_ERR_TEST_POISON: /);
    expect(second).toContain('payload: poison-7');
    expect(r.stderr).toContain('2 of 2 dead letter(s)');
  });

  it('lists letters as one JSON object per line with --json', async () => {
    const f = await fixture();
    const { ruleLetter, outputLetter } = await twoLetters(f);
    const r = await f.deadLetters('list', '--json');
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(rows).toHaveLength(2);
    expect(rows[0]).toMatchObject({ id: ruleLetter.id, ruleId: 'parse-reading', topic: 'sensors/kitchen/raw', payload: 'reading-42', qos: 1, clientId: 'sensor-1' });
    expect(rows[0]!['error']).toMatch(/boom/);
    expect(rows[0]!['output']).toBeUndefined();
    expect(rows[1]).toMatchObject({ id: outputLetter.id, ruleId: 'forward', output: 'remote', topic: 'sensors/kitchen/out', payload: 'poison-7' });
    expect(rows[1]!['error']).toMatch(/^SB_ERR_TEST_POISON: /);
    expect(rows[1]!['attempts']).toBeGreaterThanOrEqual(1);
    expect(new Date(rows[0]!['time'] as string).toISOString()).toBe(rows[0]!['time']);
  });

  it('lists only the letters of one rule with --rule', async () => {
    const f = await fixture();
    await twoLetters(f);
    const r = await f.deadLetters('list', '--rule', 'forward', '--json');
    expect(r.code, r.stderr).toBe(0);
    const rows = r.stdout.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(rows.map((row) => row['ruleId'])).toEqual(['forward']);
  });
});

describe('signalbox dead-letters replay', () => {
  it("redrives a rule's letters through the fixed rule in the running signalbox, which then deletes them", async () => {
    const f = await fixture();
    const { ruleLetter, outputLetter } = await twoLetters(f);
    writeFileSync(path.join(f.sb.dir, 'rules', 'sensors.yaml'), FIXED_RULES);
    f.sb.reload();

    const r = await f.deadLetters('replay', '--rule', 'parse-reading');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 dead letter(s) marked for replay');

    await until(() => !f.letters().some((l) => l.id === ruleLetter.id), 'the replayed letter deleted');
    const history = f.sb.engine.db.prepare('SELECT topic, payload, rule_id FROM history').all() as { topic: string; payload: Buffer; rule_id: string }[];
    expect(history.map((h) => [h.topic, h.rule_id, JSON.parse(h.payload.toString())])).toEqual([['sensors/kitchen/raw', 'parse-reading', { reading: 'reading-42' }]]);
    // It did not fail again, and the other rule's letter was left alone.
    expect(f.letters().map((l) => l.id)).toEqual([outputLetter.id]);
  });

  it("puts an output's letter back into its outbox, and the output delivers it", async () => {
    const f = await fixture();
    const { ruleLetter, outputLetter } = await twoLetters(f);
    // The target has been fixed and takes the message now.
    f.target.refuses = () => false;
    const r = await f.deadLetters('replay', String(outputLetter.id));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 dead letter(s) marked for replay');

    await f.target.waitFor(1, { within: 5000 });
    expect(f.target.received.map((m) => [m.topic, m.payload.toString(), m.ruleId])).toEqual([['sensors/kitchen/out', 'poison-7', 'forward']]);
    await until(() => !f.letters().some((l) => l.id === outputLetter.id), 'the replayed letter deleted');
    expect(f.letters().map((l) => l.id)).toEqual([ruleLetter.id]);
  });

  it('makes a letter that fails again a new letter', async () => {
    const f = await fixture();
    const { ruleLetter, outputLetter } = await twoLetters(f);
    // The rule is still broken.
    const r = await f.deadLetters('replay', String(ruleLetter.id));
    expect(r.code, r.stderr).toBe(0);
    await until(() => !f.letters().some((l) => l.id === ruleLetter.id), 'the replayed letter deleted');
    const letters = f.letters();
    expect(letters.map((l) => l.ruleId)).toEqual(['forward', 'parse-reading']);
    expect(letters[0]!.id).toBe(outputLetter.id);
    expect(letters[1]!.id).toBeGreaterThan(outputLetter.id!);
    expect(letters[1]!.payload.toString()).toBe('reading-42');
    expect(letters[1]!.replayAt).toBeUndefined();
  });
});

describe('signalbox dead-letters purge', () => {
  it('deletes letters by id, by rule, or all of them', async () => {
    const f = await fixture();
    for (const n of [1, 2, 3]) await f.publish('sensors/hall/raw', `r-${n}`);
    await f.publish('sensors/hall/out', 'poison-1');
    await f.publish('sensors/hall/out', 'poison-2');
    await until(() => f.letters().length === 5, 'five dead letters');
    const [first] = f.letters();

    let r = await f.deadLetters('purge', String(first!.id));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 dead letter(s) deleted');
    expect(f.letters().map((l) => l.payload.toString())).toEqual(['r-2', 'r-3', 'poison-1', 'poison-2']);

    r = await f.deadLetters('purge', '--rule', 'forward');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('2 dead letter(s) deleted');
    expect(f.letters().map((l) => l.payload.toString())).toEqual(['r-2', 'r-3']);

    r = await f.deadLetters('purge', '--all');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('2 dead letter(s) deleted');
    expect(f.letters()).toEqual([]);
  });
});

describe('signalbox dead-letters usage', () => {
  it('refuses a command line that does not say exactly which letters, with exit code 2 and a message', async () => {
    const f = await fixture();
    await twoLetters(f);
    const [none, two, unknown, notNumber] = await Promise.all([
      f.deadLetters('replay'),
      f.deadLetters('purge', '1', '--rule', 'forward'),
      f.deadLetters('frobnicate'),
      f.deadLetters('purge', 'abc'),
    ]);
    expect([none.code, none.stderr]).toEqual([2, expect.stringMatching(/dead-letters replay: name the letters: ids, --rule <id>, or --all \(exactly one\)/)]);
    expect([two.code, two.stderr]).toEqual([2, expect.stringMatching(/dead-letters purge: name the letters: .*exactly one/)]);
    expect([unknown.code, unknown.stderr]).toEqual([2, expect.stringMatching(/unknown action 'frobnicate'; use list, replay or purge/)]);
    expect([notNumber.code, notNumber.stderr]).toEqual([2, expect.stringMatching(/ids must be whole numbers, got abc/)]);
    // Nothing was touched.
    expect(f.letters()).toHaveLength(2);
    expect(f.letters().every((l) => l.replayAt === undefined)).toBe(true);
  });

  it('says there is no database yet instead of creating one', async () => {
    const project = writeProject({ config: 'storage: { path: data/signalbox.db }\n' });
    onTestFinished(project.cleanup);
    const [list, replay] = await Promise.all([cli(['dead-letters', 'list'], project.dir), cli(['dead-letters', 'replay', '--all'], project.dir)]);
    const dbPath = path.join(project.dir, 'data', 'signalbox.db');
    expect(list).toMatchObject({ code: 0, stdout: '' });
    expect(list.stderr).toContain(`no dead letters: no database at ${dbPath} yet`);
    expect(replay.code).toBe(1);
    expect(replay.stderr).toContain(`no database at ${dbPath}`);
    expect(existsSync(dbPath)).toBe(false);
  });

  it('reports a usage error as one even when there is no database yet', async () => {
    const project = writeProject({ config: 'storage: { path: data/signalbox.db }\n' });
    onTestFinished(project.cleanup);
    const r = await cli(['dead-letters', 'replay'], project.dir);
    expect(r.stderr).toContain('name the letters');
    expect(r.code).toBe(2);
  });
});

describe('signalbox dead-letters reads only storage.path from the config', () => {
  it("works while a remote output's ${env:…} secret is not set in the operator's shell", async () => {
    const project = writeProject({
      config: `storage: { path: data/signalbox.db }
outputs:
  cloud:
    type: bridge
    url: mqtt://127.0.0.1:1883
    password: \${env:SB_DEAD_LETTERS_TEST_UNSET_PASSWORD}
`,
    });
    onTestFinished(project.cleanup);
    const r = await cli(['dead-letters', 'list'], project.dir);
    expect(r.stderr).not.toContain('SB_CONFIG_ENV');
    expect(r.code, r.stderr).toBe(0);
  });

  it('works on a project whose outputs use a type only the server has (a plugin output)', async () => {
    const f = await fixture();
    await twoLetters(f);
    const r = await cli(['dead-letters', 'list', '--json'], f.sb.dir);
    expect(r.stderr).not.toContain('unknown type');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(2);
  });
});
