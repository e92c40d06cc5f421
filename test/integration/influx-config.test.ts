import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ConfigError, type ConfigIssue } from '../../src/config/issues.js';
import { loadProject } from '../../src/config/load.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { writeProject } from '../helpers/engine.js';

/** 1-based line and column of the only occurrence of `marker` in `text`, moved `offset` characters into it. */
function locate(text: string, marker: string, offset = 0): { line: number; col: number } {
  const at = text.indexOf(marker);
  if (at < 0 || text.indexOf(marker, at + 1) >= 0) throw new Error(`marker ${JSON.stringify(marker)} must occur exactly once`);
  const before = text.slice(0, at + offset);
  return { line: before.split('\n').length, col: at + offset - before.lastIndexOf('\n') };
}

const OUTPUTS = `broker:
  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]
outputs:
  tsdb:
    type: influx
    url: http://127.0.0.1:8428
  cloud:
    type: bridge
    url: mqtt://127.0.0.1:1883
`;

/** Loads a project that must be refused with exactly one issue; returns it with the file name the loader uses. */
function oneIssue(config: string, rule?: string, env: NodeJS.ProcessEnv = {}): ConfigIssue & { configFile: string; ruleFile: string } {
  const project = writeProject({ config, rules: rule === undefined ? {} : { 'r.yaml': rule } });
  const rel = (p: string) => path.relative(process.cwd(), p);
  try {
    loadProject(project.configFile, { explicit: true, registry: createOutputRegistry(), env });
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    expect(err.issues, err.issues.map((i) => `${i.line}:${i.col} ${i.code} ${i.message}`).join('\n')).toHaveLength(1);
    return { ...err.issues[0]!, configFile: rel(project.configFile), ruleFile: rel(path.join(project.dir, 'rules', 'r.yaml')) };
  } finally {
    project.cleanup();
  }
  throw new Error('expected loadProject to throw a ConfigError');
}

function influxOutput(settings: string): string {
  return `broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\noutputs:\n  tsdb:\n    type: influx\n${settings}`;
}

describe('influx output settings are checked at load, with file:line:col', () => {
  test('a url that is not http(s) is SB_CONFIG_SCHEMA at the url', () => {
    const config = influxOutput('    url: localhost:8086\n');
    const issue = oneIssue(config);
    expect(issue).toMatchObject({ file: issue.configFile, code: 'SB_CONFIG_SCHEMA', ...locate(config, 'localhost:8086') });
    expect(issue.message).toMatch(/'outputs\.tsdb\.url': must be an http:\/\/ or https:\/\/ URL/);
  });

  test('an unknown precision is SB_CONFIG_SCHEMA naming the accepted ones', () => {
    const config = influxOutput('    url: http://127.0.0.1:8086\n    precision: minutes\n');
    const issue = oneIssue(config);
    expect(issue).toMatchObject({ file: issue.configFile, code: 'SB_CONFIG_SCHEMA', ...locate(config, 'minutes') });
    expect(issue.message).toMatch(/must be one of ns, us, ms, s, got "minutes"/);
  });

  test('a flushInterval that is not a duration, and an unknown key, are reported where written', () => {
    const config = influxOutput('    url: http://127.0.0.1:8086\n    flushInterval: often\n');
    expect(oneIssue(config)).toMatchObject({ code: 'SB_CONFIG_SCHEMA', ...locate(config, 'often') });
    const unknown = influxOutput('    url: http://127.0.0.1:8086\n    database: x\n');
    expect(oneIssue(unknown)).toMatchObject({ code: 'SB_CONFIG_SCHEMA', ...locate(unknown, 'database') });
  });

  test('a token from an unset ${env:…} is SB_CONFIG_ENV', () => {
    const config = influxOutput('    url: http://127.0.0.1:8086\n    token: ${env:INFLUX_TOKEN}\n');
    const issue = oneIssue(config);
    expect(issue).toMatchObject({ code: 'SB_CONFIG_ENV', ...locate(config, '${env:INFLUX_TOKEN}') });
  });
});

describe('influx rule actions are checked at load, with file:line:col', () => {
  test('an action naming a bridge output is SB_RULE_OUTPUT at its output', () => {
    const rule = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - influx: { output: cloud, fields: { v: payload.v } }\n';
    const issue = oneIssue(OUTPUTS, rule);
    expect(issue).toMatchObject({ file: issue.ruleFile, code: 'SB_RULE_OUTPUT', ...locate(rule, 'cloud') });
    expect(issue.message).toMatch(/output "cloud" is a bridge output, not an influx/);
  });

  test('an action naming an undefined output is SB_RULE_OUTPUT listing the influx outputs', () => {
    const rule = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - influx: { output: nowhere }\n';
    const issue = oneIssue(OUTPUTS, rule);
    expect(issue).toMatchObject({ code: 'SB_RULE_OUTPUT', ...locate(rule, 'nowhere') });
    expect(issue.message).toMatch(/influx outputs: tsdb/);
  });

  test('bad JSONata in a field is SB_RULE_EXPRESSION pointing inside the expression', () => {
    const rule = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - influx:\n          output: tsdb\n          fields: { v: "payload.v +" }\n';
    const issue = oneIssue(OUTPUTS, rule);
    expect(issue).toMatchObject({ file: issue.ruleFile, code: 'SB_RULE_EXPRESSION', line: locate(rule, 'payload.v +').line });
    expect(issue.col).toBeGreaterThanOrEqual(locate(rule, 'payload.v +').col);
    expect(issue.message).toMatch(/rule "r"/);
  });

  test('bad JSONata in a tag, in a typed field and in the timestamp are each SB_RULE_EXPRESSION at their line', () => {
    for (const [marker, settings] of [
      ['$$bad(', 'tags: { room: "$$bad(" }\n          fields: { v: payload.v }'],
      ['payload.n +', 'fields:\n            n: { value: "payload.n +", type: integer }'],
      ['payload.t +', 'fields: { v: payload.v }\n          timestamp: "payload.t +"'],
    ] as const) {
      const rule = `rules:\n  - id: r\n    on: a/#\n    to:\n      - influx:\n          output: tsdb\n          ${settings}\n`;
      const issue = oneIssue(OUTPUTS, rule);
      expect(issue, marker).toMatchObject({ code: 'SB_RULE_EXPRESSION', line: locate(rule, marker).line });
    }
  });

  test('an unknown field type, a reserved key and a measurement starting with _ are SB_CONFIG_SCHEMA where written', () => {
    for (const [marker, settings] of [
      ['int }', 'fields: { n: { value: payload.n, type: int } }'],
      ['_hidden', 'fields: { _hidden: payload.v }'],
      ['_m', 'measurement: _m'],
    ] as const) {
      const rule = `rules:\n  - id: r\n    on: a/#\n    to:\n      - influx:\n          output: tsdb\n          ${settings}\n`;
      const issue = oneIssue(OUTPUTS, rule);
      expect(issue, marker).toMatchObject({ code: 'SB_CONFIG_SCHEMA', line: locate(rule, marker).line });
    }
  });
});
