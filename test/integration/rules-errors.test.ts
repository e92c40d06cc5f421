import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, test } from 'vitest';
import { ConfigError, type ConfigIssue } from '../../src/config/issues.js';
import { loadProject } from '../../src/config/load.js';
import { MAX_SOURCE_BYTES } from '../../src/config/source.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { startEngine, writeProject, type ProjectFiles, type TestEngine } from '../helpers/engine.js';
import * as helpers from '../helpers/mqtt.js';
import { connect, type Received } from '../helpers/mqtt.js';

const { nextMessage, quiet } = helpers;
const { collect } = helpers;

const cleanups: Array<() => Promise<unknown> | unknown> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** 1-based line and column of the only occurrence of `marker` in `text`, moved `offset` characters into it. */
function locate(text: string, marker: string, offset = 0): { line: number; col: number } {
  const at = text.indexOf(marker);
  if (at < 0 || text.indexOf(marker, at + 1) >= 0) throw new Error(`marker ${JSON.stringify(marker)} must occur exactly once`);
  const before = text.slice(0, at + offset);
  const line = before.split('\n').length;
  return { line, col: at + offset - before.lastIndexOf('\n') };
}

interface Loaded {
  issues: ConfigIssue[];
  /** The name the loader gives a rule file in its reports (relative to the working directory). */
  file(name: string): string;
}

/** Loads a project that must be refused; returns every issue the loader reported. */
function loadIssues(files: ProjectFiles, env: NodeJS.ProcessEnv = {}, write?: (dir: string) => void): Loaded {
  const project = writeProject(files);
  write?.(project.dir);
  const file = (name: string) => path.relative(process.cwd(), path.join(project.dir, 'rules', name));
  try {
    loadProject(project.configFile, { explicit: true, registry: createOutputRegistry(), env });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return { issues: err.issues, file };
  } finally {
    project.cleanup();
  }
  throw new Error('expected loadProject to throw a ConfigError');
}

/** A project with one rule file that must be refused with exactly one issue. */
function oneIssue(text: string, name = 'rules.yaml'): ConfigIssue & { expectedFile: string } {
  const { issues, file } = loadIssues({ rules: { [name]: text } });
  expect(issues, issues.map((i) => `${i.line}:${i.col} ${i.code} ${i.message}`).join('\n')).toHaveLength(1);
  return { ...issues[0]!, expectedFile: file(name) };
}

describe('load-time errors name file:line:col and a code', () => {
  test('bad YAML syntax is SB_CONFIG_YAML at the offending node, and the engine does not start', async () => {
    const text = `rules:
  - id: broken
    on: sensors/x: y
    to: [ { history: {} } ]
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_CONFIG_YAML', ...locate(text, 'sensors/x: y') });
    expect(issue.message).toMatch(/nested mappings/i);

    const started = startEngine({ rules: { 'rules.yaml': text } });
    await expect(started).rejects.toBeInstanceOf(ConfigError);
    await expect(started).rejects.toMatchObject({ code: 'SB_ERR_CONFIG', issues: [{ code: 'SB_CONFIG_YAML', ...locate(text, 'sensors/x: y') }] });
  });

  test('a duplicate key is SB_CONFIG_YAML at the second key', () => {
    const text = `rules:
  - id: twice
    on: a/b
    to: [ { history: {} } ]
    on: c/d
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_CONFIG_YAML', ...locate(text, 'on: c/d') });
    expect(issue.message).toMatch(/unique/i);
  });

  test('a rule file over 1 MiB is SB_CONFIG_TOO_LARGE at 1:1, and the other files are still checked', () => {
    const good = `rules:\n  - id: fine\n    on: a/b\n    to: [ { history: {} } ]\n`;
    const other = `rules:\n  - id: other\n    on: a/#/b\n    to: [ { history: {} } ]\n`;
    const { issues, file } = loadIssues({ rules: { 'a-good.yaml': good, 'c-other.yaml': other } }, {}, (dir) => {
      // A valid YAML comment, so only the size can be the problem.
      writeFileSync(path.join(dir, 'rules', 'b-huge.yaml'), `# ${'x'.repeat(MAX_SOURCE_BYTES)}\nrules: []\n`);
    });
    expect(issues).toEqual([
      expect.objectContaining({ file: file('b-huge.yaml'), line: 1, col: 1, code: 'SB_CONFIG_TOO_LARGE' }),
      expect.objectContaining({ file: file('c-other.yaml'), code: 'SB_RULE_FILTER', ...locate(other, 'a/#/b') }),
    ]);
    expect(issues[0]!.message).toContain('1 MiB');
  });

  test('an unknown key in a rule is SB_CONFIG_SCHEMA at the key, naming it', () => {
    const text = `rules:
  - id: typo
    on: a/b
    tranform: payload
    to: [ { history: {} } ]
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_CONFIG_SCHEMA', ...locate(text, 'tranform') });
    expect(issue.message).toContain("unknown key 'tranform'");
  });

  test('`qos: 3` in republish is SB_CONFIG_SCHEMA at the value: must be 0, 1 or 2, got 3', () => {
    const text = `rules:
  - id: greenhouse-temperature
    on: greenhouse/+/temperature
    to:
      - republish: { topic: out, qos: 3 }
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_CONFIG_SCHEMA', ...locate(text, 'qos: 3', 5) });
    expect(issue.message).toContain('qos');
    expect(issue.message).toContain('must be 0, 1 or 2, got 3');
  });

  test('bad JSONata in a plain `when` is SB_RULE_EXPRESSION with the column on the offending token', () => {
    const text = `rules:
  - id: bad-when
    on: a/b
    when: payload.celsius > )
    to: [ { history: {} } ]
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_RULE_EXPRESSION', ...locate(text, '> )', 2) });
    expect(issue.message).toContain('rule "bad-when"');
  });

  test('bad JSONata in a `|` block `when` points at the line and column inside the block', () => {
    const text = `rules:
  - id: bad-block
    on: a/b
    when: |
      payload.celsius > 0 and
        payload.state = )
    to: [ { history: {} } ]
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_RULE_EXPRESSION', ...locate(text, '= )', 2) });
  });

  test('bad JSONata in a `|` block that starts with an empty line still points at the offending token', () => {
    const text = `rules:
  - id: bad-block-blank-first
    on: a/b
    when: |

      payload.state = )
    to: [ { history: {} } ]
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ code: 'SB_RULE_EXPRESSION', ...locate(text, '= )', 2) });
  });

  for (const { style, scalar } of [
    { style: 'double-quoted', scalar: String.raw`"payload.name = \"a b\" and )"` },
    { style: 'single-quoted', scalar: `'payload.name = ''a b'' and )'` },
  ]) {
    test(`bad JSONata in a ${style} \`when\` with escapes points at the offending token`, () => {
      const text = `rules:
  - id: bad-quoted
    on: a/b
    when: ${scalar}
    to: [ { history: {} } ]
`;
      const issue = oneIssue(text);
      expect(issue).toMatchObject({ code: 'SB_RULE_EXPRESSION', ...locate(text, 'and )', 4) });
    });
  }

  test('bad JSONata inside a `${…}` topic template points inside the template', () => {
    const text = `rules:
  - id: bad-template
    on: a/b
    to:
      - republish: { topic: "out/\${payload.room )}/x" }
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_RULE_EXPRESSION', ...locate(text, 'room )', 5) });
    expect(issue.message).toContain('rule "bad-template"');
  });

  test('an invalid topic filter in `on` is SB_RULE_FILTER at that filter, also inside a list', () => {
    const text = `rules:
  - id: bad-filter
    on: a/#/b
    to: [ { history: {} } ]
  - id: bad-in-list
    on: [ok/+, not+ok/x]
    to: [ { history: {} } ]
`;
    const { issues, file } = loadIssues({ rules: { 'f.yaml': text } });
    expect(issues).toEqual([
      expect.objectContaining({ file: file('f.yaml'), code: 'SB_RULE_FILTER', ...locate(text, 'a/#/b') }),
      expect.objectContaining({ file: file('f.yaml'), code: 'SB_RULE_FILTER', ...locate(text, 'not+ok/x') }),
    ]);
    expect(issues[0]!.message).toContain('"a/#/b"');
    expect(issues[1]!.message).toContain('"not+ok/x"');
  });

  test('a rule id used in two files is reported in the second, naming where the first is', () => {
    const first = `rules:\n  - id: pump\n    on: a/b\n    to: [ { history: {} } ]\n`;
    const second = `# the same id again\nrules:\n  - on: c/d\n    id: pump\n    to: [ { history: {} } ]\n`;
    const { issues, file } = loadIssues({ rules: { '1-first.yaml': first, '2-second.yaml': second } });
    expect(issues).toEqual([expect.objectContaining({ file: file('2-second.yaml'), code: 'SB_RULE_DUPLICATE_ID', ...locate(second, 'pump') })]);
    const where = locate(first, 'id: pump');
    expect(issues[0]!.message).toContain(`${file('1-first.yaml')}:${where.line}:${where.col}`);
  });

  test('an unknown output type in `to` is SB_RULE_OUTPUT at that entry, listing the known ones', () => {
    const text = `rules:
  - id: bad-output
    on: a/b
    to:
      - history: {}
      - carrier-pigeon: { topic: x }
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_RULE_OUTPUT', ...locate(text, 'carrier-pigeon') });
    expect(issue.message).toContain('"carrier-pigeon"');
    expect(issue.hint).toContain('republish');
  });

  test('a `bridge:` to a named output that is not defined is SB_RULE_OUTPUT at that entry', () => {
    const text = `rules:
  - id: to-cloud
    on: a/b
    to:
      - bridge: { output: nowhere, topic: "site/\${topic}" }
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_RULE_OUTPUT', line: locate(text, 'bridge').line });
    expect(issue.message).toMatch(/bridge|nowhere/);
  });

  test('a missing `${env:NAME}` is SB_CONFIG_ENV naming the variable, at the string using it', () => {
    const text = `rules:
  - id: site-relay
    on: a/b
    to:
      - republish: { topic: "site/\${env:SIGNALBOX_TEST_SITE}/out" }
`;
    const { issues, file } = loadIssues({ rules: { 'env.yaml': text } }, {});
    expect(issues).toEqual([expect.objectContaining({ file: file('env.yaml'), code: 'SB_CONFIG_ENV', ...locate(text, '"site/') })]);
    expect(issues[0]!.message).toContain('SIGNALBOX_TEST_SITE');
  });

  test('a set `${env:NAME}` is substituted into the rule', async () => {
    const text = `rules:
  - id: site-relay
    on: a/b
    to:
      - republish: { topic: "site/\${env:SIGNALBOX_TEST_SITE}/out" }
`;
    const te = await startEngine({ rules: { 'env.yaml': text } }, { env: { SIGNALBOX_TEST_SITE: 'north' } });
    cleanups.push(() => te.close());
    const sub = await connect(te.url);
    cleanups.push(() => sub.endAsync(true));
    await sub.subscribeAsync('site/#', { qos: 1 });
    const got = nextMessage(sub);
    await sub.publishAsync('a/b', 'x', { qos: 1 });
    expect((await got).topic).toBe('site/north/out');
  });

  test('a rule republishing onto its own filter is SB_RULE_LOOP, unless `allowLoop: true`', () => {
    const text = `rules:
  - id: feeds-itself
    on: a/#
    to:
      - history: {}
      - republish: { topic: a/x }
`;
    const issue = oneIssue(text);
    expect(issue).toMatchObject({ file: issue.expectedFile, code: 'SB_RULE_LOOP', ...locate(text, 'republish') });
    expect(issue.message).toContain('"a/#"');

    const allowed = writeProject({ rules: { 'loop.yaml': text.replace('    on: a/#', '    allowLoop: true\n    on: a/#') } });
    cleanups.push(allowed.cleanup);
    const project = loadProject(allowed.configFile, { explicit: true, registry: createOutputRegistry(), env: {} });
    expect(project.compiled.rules.map((r) => r.id)).toEqual(['feeds-itself']);
  });

  test('several problems in two files are all reported at once, sorted by file and position', () => {
    // Written so that the loader finds them out of order: env before rules, filters and `when` before outputs.
    const a = `rules:
  - id: out-of-order
    to:
      - teleport: {}
    on: bad#/filter
  - id: env-user
    on: ok/topic
    to:
      - republish: { topic: "x/\${env:SIGNALBOX_TEST_MISSING}" }
`;
    const b = `rules:
  - id: out-of-order
    on: x/y
    to: [ { history: {} } ]
  - id: bad-qos
    on: x/z
    to:
      - republish: { topic: out, qos: 7 }
    when: ')'
`;
    const { issues, file } = loadIssues({ rules: { 'a.yaml': a, 'b.yaml': b } });
    expect(issues.map((i) => ({ file: i.file, line: i.line, col: i.col, code: i.code }))).toEqual([
      { file: file('a.yaml'), ...locate(a, 'teleport'), code: 'SB_RULE_OUTPUT' },
      { file: file('a.yaml'), ...locate(a, 'bad#/filter'), code: 'SB_RULE_FILTER' },
      { file: file('a.yaml'), ...locate(a, '"x/${env:'), code: 'SB_CONFIG_ENV' },
      { file: file('b.yaml'), ...locate(b, 'out-of-order'), code: 'SB_RULE_DUPLICATE_ID' },
      { file: file('b.yaml'), ...locate(b, 'qos: 7', 5), code: 'SB_CONFIG_SCHEMA' },
      { file: file('b.yaml'), ...locate(b, "')'", 1), code: 'SB_RULE_EXPRESSION' },
    ]);
    // The message text carries every issue with its location, for the CLI to print.
    const err = new ConfigError(issues);
    for (const i of issues) expect(err.message).toContain(`${i.file}:${i.line}:${i.col} ${i.code}`);
  });
});

describe('run-time errors go to dead letters and lose nothing else', () => {
  async function engine(files: ProjectFiles): Promise<TestEngine> {
    const te = await startEngine(files);
    cleanups.push(() => te.close());
    return te;
  }
  async function client(te: TestEngine, clientId?: string): Promise<MqttClient> {
    const c = await connect(te.url, clientId === undefined ? {} : { clientId });
    cleanups.push(() => c.endAsync(true));
    return c;
  }

  for (const { kind, expression, error } of [
    { kind: 'endless tail recursion', expression: '($f := function($x){ $f($x) }; $f(1))', error: /ran longer than timeoutMs 100/ },
    { kind: 'deep recursion', expression: '($f := function($x){ 1 + $f($x) }; $f(1))', error: /deeper than maxDepth 200/ },
  ]) {
    test(`a runaway transform (${kind}) is stopped within the time limit, counted and dead-lettered; other rules and later messages carry on`, async () => {
      const te = await engine({
        config: 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\nengine: { expressionTimeoutMs: 100, expressionMaxDepth: 200 }\n',
        rules: {
          'r.yaml': `
rules:
  - id: runaway
    on: work/in
    transform: '${expression}'
    to:
      - republish: { topic: work/runaway }
  - id: healthy
    on: work/in
    transform: '{ "ok": payload.n }'
    to:
      - republish: { topic: work/healthy }
`,
        },
      });
      const sub = await client(te);
      const pub = await client(te, 'runaway-publisher');
      await sub.subscribeAsync('work/+', { qos: 1 });

      const got = collect(sub, 2);
      const started = Date.now();
      await pub.publishAsync('work/in', JSON.stringify({ n: 1 }), { qos: 1 });
      const elapsed = Date.now() - started;
      // 100 ms of evaluation plus overhead; an unguarded loop would never return.
      expect(elapsed).toBeLessThan(1000);
      expect((await got).map((m) => m.topic)).toEqual(['work/in', 'work/healthy']);

      expect(te.engine.processor.stats.ruleErrors).toBe(1);
      const letters = te.engine.deadLetters.list();
      expect(letters).toHaveLength(1);
      expect(letters[0]).toMatchObject({ ruleId: 'runaway', topic: 'work/in', qos: 1, clientId: 'runaway-publisher' });
      expect(letters[0]!.error).toMatch(error);
      expect(letters[0]!.payload.toString()).toBe('{"n":1}');

      // The next message runs both rules again, and the healthy one still delivers.
      const next = collect(sub, 2);
      await pub.publishAsync('work/in', JSON.stringify({ n: 2 }), { qos: 1 });
      expect((await next).map((m) => m.payload.toString())).toEqual(['{"n":2}', '{"ok":2}']);
      expect(te.engine.processor.stats.ruleErrors).toBe(2);
      expect(te.engine.deadLetters.count()).toBe(2);
    });
  }

  test('a dead letter from a failed expression names its SB_EXPR code, as the README promises', async () => {
    const te = await engine({
      config: 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\nengine: { expressionTimeoutMs: 50 }\n',
      rules: {
        'c.yaml': `
rules:
  - id: endless
    on: codes/in
    transform: '($f := function($x){ $f($x) }; $f(1))'
    to: [ { history: {} } ]
  - id: throws
    on: codes/in
    transform: '$error("boom")'
    to: [ { history: {} } ]
`,
      },
    });
    const pub = await client(te);
    await pub.publishAsync('codes/in', '{}', { qos: 1 });

    expect(te.engine.deadLetters.list({ ruleId: 'endless' })[0]?.error).toContain('SB_EXPR_TIMEOUT');
    expect(te.engine.deadLetters.list({ ruleId: 'throws' })[0]?.error).toContain('SB_EXPR_EVAL');
  });

  test('a rule that throws ($error) dead-letters the message with rule id, error, topic and payload', async () => {
    const te = await engine({
      rules: {
        'e.yaml': `
rules:
  - id: thrower
    on: boom/+
    transform: '$error("boom: " & payload.why)'
    to:
      - republish: { topic: boom-out/never }
  - id: bystander
    on: boom/+
    to:
      - history: {}
`,
      },
    });
    const pub = await client(te, 'boom-publisher');

    await pub.publishAsync('boom/a', JSON.stringify({ why: 'bad input' }), { qos: 1 });

    const [letter] = te.engine.deadLetters.list({ ruleId: 'thrower' });
    expect(letter).toMatchObject({ ruleId: 'thrower', topic: 'boom/a', qos: 1, retain: false, clientId: 'boom-publisher' });
    expect(letter!.error).toContain('boom: bad input');
    expect(letter!.payload.toString()).toBe('{"why":"bad input"}');
    expect(te.engine.history.query({ filter: 'boom/#' }).map((r) => r.ruleId)).toEqual(['bystander']);
  });

  test('a topic template whose expression yields no value dead-letters that message only', async () => {
    const te = await engine({
      rules: {
        'n.yaml': `
rules:
  - id: by-room
    on: rooms/in
    to:
      - republish: { topic: "rooms/\${payload.room}/out" }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te, 'room-publisher');
    await sub.subscribeAsync('rooms/+/out', { qos: 1 });

    const got = nextMessage(sub);
    await pub.publishAsync('rooms/in', JSON.stringify({ temp: 20 }), { qos: 1 });
    await pub.publishAsync('rooms/in', JSON.stringify({ room: 'hall' }), { qos: 1 });
    expect((await got).topic).toBe('rooms/hall/out');

    const letters = te.engine.deadLetters.list();
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ ruleId: 'by-room', topic: 'rooms/in', clientId: 'room-publisher' });
    expect(letters[0]!.error).toContain('produced no value');
    expect(letters[0]!.error).toContain('payload.room');
    expect(letters[0]!.payload.toString()).toBe('{"temp":20}');
  });

  test('an output that fails at run time (a rendered topic with a wildcard) is dead-lettered with the output named', async () => {
    const te = await engine({
      rules: {
        'w.yaml': `
rules:
  - id: relay-by-name
    on: names/in
    to:
      - republish: { topic: "named/\${payload.name}" }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te, 'names-publisher');
    await sub.subscribeAsync('named/+', { qos: 1 });

    const got = receiveUntilTopic(sub, 'named/ok');
    await pub.publishAsync('names/in', JSON.stringify({ name: '+' }), { qos: 1 });
    await pub.publishAsync('names/in', JSON.stringify({ name: 'ok' }), { qos: 1 });
    expect((await got).map((m) => m.topic)).toEqual(['named/ok']);

    const letters = te.engine.deadLetters.list();
    expect(letters).toHaveLength(1);
    expect(letters[0]).toMatchObject({ ruleId: 'relay-by-name', output: 'republish', topic: 'names/in', clientId: 'names-publisher' });
    expect(letters[0]!.error).toContain('named/+');
    expect(te.engine.processor.stats.effectErrors).toBe(1);
  });

  test('a 150 ms stall of the whole process while 50 messages are in flight costs at most one of them', async () => {
    // src/rules/expression.ts: "a process starved of CPU for longer than [timeoutMs] fails the
    // evaluation it was in ... that costs one counted message". A GC pause or a busy host stalls
    // every evaluation in flight, not one.
    const te = await engine({
      config: 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\nengine: { expressionTimeoutMs: 100 }\n',
      rules: {
        's.yaml': `
rules:
  - id: cheap
    on: stall/in
    transform: '{ "n": payload.n + 1 }'
    to: [ { history: {} } ]
`,
      },
    });
    // Published the way the engine's own outputs publish; each evaluation starts at once.
    const published = Array.from({ length: 50 }, (_, n) => te.engine.broker.publish({ topic: 'stall/in', payload: JSON.stringify({ n }), qos: 1 }));
    const until = Date.now() + 150;
    while (Date.now() < until); // the stall: nothing else runs in this process meanwhile
    await Promise.all(published);

    expect(te.engine.history.query({ filter: 'stall/in', limit: 1000 }).length).toBeGreaterThanOrEqual(49);
    expect(te.engine.deadLetters.count()).toBeLessThanOrEqual(1);
  });

  test('a loop across two rules with `allowLoop: true` is stopped by the hop limit, counted, and the broker stays responsive', async () => {
    const te = await engine({
      config: 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\nengine: { maxHops: 3 }\n',
      rules: {
        'ping.yaml': `
rules:
  - id: ping
    on: loop/ping
    allowLoop: true
    to:
      - republish: { topic: loop/pong }
`,
        'pong.yaml': `
rules:
  - id: pong
    on: loop/pong
    allowLoop: true
    to:
      - republish: { topic: loop/ping }
`,
      },
    });
    const sub = await client(te);
    const pub = await client(te);
    await sub.subscribeAsync('loop/#', { qos: 1 });

    const seen: Received[] = [];
    sub.on('message', (topic, payload, packet) => seen.push({ topic, payload, packet }));
    const done = nextMessageOn(sub, 'loop/done');
    await pub.publishAsync('loop/ping', 'x', { qos: 1 });
    await pub.publishAsync('loop/done', 'marker', { qos: 1 });
    await done;

    // The client's message (hop 0) and maxHops rule republishes run rules; the hop 4 copy is delivered but runs none.
    expect(seen.map((m) => m.topic)).toEqual(['loop/ping', 'loop/pong', 'loop/ping', 'loop/pong', 'loop/ping', 'loop/done']);
    expect(te.engine.processor.stats.hopLimitDrops).toBe(1);

    const other = await client(te);
    await other.subscribeAsync('alive', { qos: 1 });
    const alive = nextMessage(other);
    await pub.publishAsync('alive', 'yes', { qos: 1 });
    expect((await alive).payload.toString()).toBe('yes');
  });
});

/** Every message the client receives up to and including the first one on `topic`. */
function receiveUntilTopic(c: MqttClient, topic: string, { within = 2000 } = {}): Promise<Received[]> {
  const got: Received[] = [];
  const on = (t: string, payload: Buffer, packet: Received['packet']) => got.push({ topic: t, payload, packet });
  c.on('message', on);
  return nextMessageOn(c, topic, { within }).then(
    () => (c.off('message', on), got),
    (err: unknown) => {
      c.off('message', on);
      throw err;
    },
  );
}

/** Resolves with the first message on `topic`, or rejects after `within` ms. */
function nextMessageOn(c: MqttClient, topic: string, { within = 2000 } = {}): Promise<Received> {
  return quiet(
    new Promise((resolve, reject) => {
      const on = (t: string, payload: Buffer, packet: Received['packet']) => {
        if (t !== topic) return;
        clearTimeout(timer);
        c.off('message', on);
        resolve({ topic: t, payload, packet });
      };
      const timer = setTimeout(() => {
        c.off('message', on);
        reject(new Error(`no message on ${topic} within ${within} ms`));
      }, within);
      c.on('message', on);
    }),
  );
}
