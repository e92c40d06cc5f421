import { describe, expect, it } from 'vitest';
import type { ConfigIssue } from '../../../src/config/issues.js';
import { YamlSource } from '../../../src/config/source.js';
import { createOutputRegistry } from '../../../src/outputs/registry.js';
import { compileRuleFiles, type CompiledRules } from '../../../src/rules/compile.js';
import { DEFAULT_EXPRESSION_LIMITS } from '../../../src/rules/expression.js';
import { DEFAULT_TEST_TIME, runRuleTests, type RuleTestOptions, type RuleTestReport } from '../../../src/rules/test-runner.js';

const registry = createOutputRegistry();

/** Compiles one rule file's text; the file itself must be free of problems. */
function compile(text: string): CompiledRules {
  const issues: ConfigIssue[] = [];
  const source = YamlSource.parse('rules/t.yaml', text, issues)!;
  const compiled = compileRuleFiles([source], registry, { limits: DEFAULT_EXPRESSION_LIMITS, namedOutputs: new Map() }, issues);
  expect(issues).toEqual([]);
  return compiled;
}

function run(text: string, options: Partial<RuleTestOptions> = {}): Promise<RuleTestReport> {
  const { rules, tests } = compile(text);
  return runRuleTests(rules, tests, { registry, ...options });
}

const GREENHOUSE = `
rules:
  - id: greenhouse-temperature
    on: greenhouse/+/temperature
    when: payload.celsius > -40
    transform: |
      { "room": levels[1], "c": payload.celsius, "f": payload.celsius * 9 / 5 + 32 }
    to:
      - republish: { topic: "greenhouse/\${payload.room}/fahrenheit", qos: 1, retain: true }
      - history: {}
`;

describe('rule tests', () => {
  it('passes a case whose expectations all match, reporting its file and line', async () => {
    const report = await run(`${GREENHOUSE}
tests:
  - name: converts to fahrenheit
    publish: { topic: greenhouse/north/temperature, payload: { celsius: 20 } }
    expect:
      - republish: { topic: greenhouse/north/fahrenheit, payload: { room: north, c: 20, f: 68 }, qos: 1, retain: true }
      - history: { topic: greenhouse/north/temperature, payload: { f: 68, c: 20, room: north }, rule: greenhouse-temperature }
`);
    expect(report).toMatchObject({ passed: 1, failed: 0 });
    const [result] = report.results;
    expect(result).toMatchObject({ name: 'converts to fahrenheit', file: 'rules/t.yaml', line: 13, passed: true, failures: [], diff: undefined });
    expect(result!.effects.map((e) => [e.type, e.topic, e.payload])).toEqual([
      ['republish', 'greenhouse/north/fahrenheit', { room: 'north', c: 20, f: 68 }],
      ['history', 'greenhouse/north/temperature', { room: 'north', c: 20, f: 68 }],
    ]);
  });

  it('fails a case whose payload differs, with a diff of expected against every captured effect', async () => {
    const report = await run(`${GREENHOUSE}
tests:
  - name: wrong arithmetic
    publish: { topic: greenhouse/north/temperature, payload: { celsius: 20 } }
    expect:
      - republish: { topic: greenhouse/north/fahrenheit, payload: { room: north, c: 20, f: 70 } }
`);
    expect(report).toMatchObject({ passed: 0, failed: 1 });
    const result = report.results[0]!;
    expect(result.passed).toBe(false);
    expect(result.failures).toEqual([expect.stringContaining('expected at least 1 republish effect(s) matching')]);
    const diff = result.diff!;
    expect(diff).toContain('expected (1 of 1 not met):');
    expect(diff).toContain('republish #1 (rule greenhouse-temperature): payload: expected {"room":"north","c":20,"f":70}, got {"room":"north","c":20,"f":68}');
    // Expected and captured, pretty-printed.
    expect(diff).toContain('"f": 70');
    expect(diff).toContain('captured 2 effects:');
    expect(diff).toContain('"topic": "greenhouse/north/fahrenheit"');
    expect(diff).toContain('"type": "history"');
    expect(diff).toContain('"retain": true');
  });

  it('checks count as an exact number of matching effects', async () => {
    const report = await run(`${GREENHOUSE}
tests:
  - name: one republish
    publish: { topic: greenhouse/north/temperature, payload: { celsius: 20 } }
    expect:
      - republish: { count: 1 }
  - name: two readings, two republishes
    publish:
      - { topic: greenhouse/north/temperature, payload: { celsius: 20 } }
      - { topic: greenhouse/south/temperature, payload: { celsius: 25 } }
    expect:
      - republish: { count: 2 }
      - republish: { topic: greenhouse/south/fahrenheit, count: 1 }
      - history: { topic: greenhouse/west/temperature, count: 0 }
  - name: wrong count
    publish: { topic: greenhouse/north/temperature, payload: { celsius: 20 } }
    expect:
      - republish: { count: 2 }
`);
    expect(report.results.map((r) => r.passed)).toEqual([true, true, false]);
    expect(report.results[2]!.failures).toEqual(['expected exactly 2 republish effect(s) matching {}, got 1']);
  });

  it('passes expect: nothing only when no effect and no error happened', async () => {
    const report = await run(`${GREENHOUSE}
tests:
  - name: skipped by when
    publish: { topic: greenhouse/south/temperature, payload: { celsius: -99 } }
    expect: nothing
  - name: no rule matches
    publish: { topic: kitchen/temperature, payload: 20 }
    expect: nothing
  - name: but the rule runs
    publish: { topic: greenhouse/south/temperature, payload: { celsius: 10 } }
    expect: nothing
`);
    expect(report.results.map((r) => r.passed)).toEqual([true, true, false]);
    expect(report.results[2]!.failures).toEqual(['expected nothing, got 2 effects']);
    expect(report.results[2]!.diff).toContain('"topic": "greenhouse/south/fahrenheit"');
  });

  it('feeds republished messages back into the rules so chained rules are tested', async () => {
    const report = await run(`${GREENHOUSE}
  - id: too-hot
    on: greenhouse/+/fahrenheit
    when: payload.f > 80
    transform: '{ "room": payload.room, "at": $fromMillis(timestamp) }'
    to:
      - republish: { topic: alerts/hot }
tests:
  - name: a hot reading raises an alert through the fahrenheit topic
    publish: { topic: greenhouse/east/temperature, payload: { celsius: 30 } }
    expect:
      - republish: { topic: alerts/hot, rule: too-hot, qos: 1, payload: { room: east, at: "2026-01-01T00:00:00.000Z" } }
`);
    expect(report.results[0]).toMatchObject({ passed: true });
    const alert = report.results[0]!.effects.find((e) => e.topic === 'alerts/hot')!;
    // Republished by the first rule (hop 0), so the alert comes from a hop-1 message.
    expect(alert.hops).toBe(1);
    expect(new Date(DEFAULT_TEST_TIME).toISOString()).toBe('2026-01-01T00:00:00.000Z');
  });

  it('stamps messages with the injected clock', async () => {
    const report = await run(
      `
rules:
  - id: stamp
    on: in
    transform: timestamp
    to: [ { republish: { topic: out } } ]
tests:
  - name: stamped
    publish: { topic: in }
    expect:
      - republish: { payload: 1234 }
`,
      { clock: { now: () => 1234 } },
    );
    expect(report.results[0]!.passed).toBe(true);
  });

  it('stops a republish cycle at the hop limit and says so in the diff', async () => {
    const cycle = `
rules:
  - id: ping
    on: ping
    to: [ { republish: { topic: pong } } ]
  - id: pong
    on: pong
    to: [ { republish: { topic: ping } } ]
tests:
  - name: bounded
    publish: { topic: ping }
    expect:
      - republish: { count: 3 }
`;
    const report = await run(cycle, { maxHops: 2 });
    const result = report.results[0]!;
    // hops 0, 1 and 2 run; the message at hop 3 is dropped.
    expect(result.passed).toBe(true);
    expect(result.effects.map((e) => `${e.rule}@${e.hops}`)).toEqual(['ping@0', 'pong@1', 'ping@2']);
    expect(result.hopLimitDrops).toBe(1);

    const failing = await run(cycle.replace('count: 3', 'count: 4'), { maxHops: 2 });
    expect(failing.results[0]!.diff).toContain('hop limit reached: 1 message not run through rules');
  });

  it('fails a case on a rule error, naming the rule, the stage and the error', async () => {
    const report = await run(`
rules:
  - id: broken
    on: sensors/+
    transform: '$error("sensor payload unreadable")'
    to: [ { history: {} } ]
  - id: bad-topic
    on: wild/+
    to: [ { republish: { topic: "out/\${payload}" } } ]
tests:
  - name: transform throws
    publish: { topic: sensors/a, payload: x }
    expect: nothing
  - name: republish to a wildcard topic
    publish: { topic: wild/a, payload: "#" }
    expect:
      - republish: { topic: "out/#" }
`);
    const [throws, wildcard] = report.results;
    expect(throws!.passed).toBe(false);
    expect(throws!.errors).toEqual([{ rule: 'broken', output: undefined, error: expect.stringContaining('sensor payload unreadable'), topic: 'sensors/a' }]);
    expect(throws!.failures[0]).toMatch(/^rule "broken" failed on sensors\/a: transform \(step 1\): .*sensor payload unreadable/);
    expect(throws!.diff).toContain('sensor payload unreadable');
    // The effect was planned (its expectation matches), but the broker would refuse it: a dead letter.
    expect(wildcard!.passed).toBe(false);
    expect(wildcard!.errors).toEqual([{ rule: 'bad-topic', output: 'republish', error: expect.stringContaining('cannot publish to "out/#"'), topic: 'wild/a' }]);
    expect(report).toMatchObject({ passed: 0, failed: 2 });
  });

  it('publishes strings as they are and compares string payloads as text', async () => {
    const report = await run(`
rules:
  - id: echo
    on: in/+
    to: [ { republish: { topic: out } } ]
tests:
  - name: plain text
    publish: { topic: in/a, payload: open }
    expect: [ { republish: { payload: open } } ]
  - name: JSON text compared as JSON or as its text
    publish: { topic: in/b, payload: '{"a": 1}' }
    expect:
      - republish: { payload: { a: 1 } }
      - republish: { payload: '{"a": 1}' }
  - name: numbers and null are JSON
    publish: [ { topic: in/c, payload: 5 }, { topic: in/d, payload: null } ]
    expect:
      - republish: { payload: 5, count: 1 }
      - republish: { payload: null, count: 1 }
`);
    expect(report.results.map((r) => [r.name, r.passed, r.failures])).toEqual([
      ['plain text', true, []],
      ['JSON text compared as JSON or as its text', true, []],
      ['numbers and null are JSON', true, []],
    ]);
  });

  it('names the output types when an expectation uses an unknown one', async () => {
    const report = await run(`${GREENHOUSE}
tests:
  - name: typo
    publish: { topic: greenhouse/north/temperature, payload: { celsius: 20 } }
    expect: [ { republsh: {} } ]
`);
    expect(report.results[0]!.failures[0]).toContain('"republsh" is not an output type; outputs are: republish, history');
  });
});
