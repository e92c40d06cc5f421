import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { ConfigError, type ConfigIssue } from '../../../src/config/issues.js';
import { loadProject, type Project } from '../../../src/config/load.js';
import { createOutputRegistry } from '../../../src/outputs/registry.js';
import { writeProject, type ProjectFiles } from '../../helpers/engine.js';

/** 1-based line and column of the only occurrence of `marker` in `text`, moved `offset` characters into it. */
function locate(text: string, marker: string, offset = 0): { line: number; col: number } {
  const at = text.indexOf(marker);
  if (at < 0 || text.indexOf(marker, at + 1) >= 0) throw new Error(`marker ${JSON.stringify(marker)} must occur exactly once`);
  const before = text.slice(0, at + offset);
  return { line: before.split('\n').length, col: at + offset - before.lastIndexOf('\n') };
}

const LISTENER = 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\n';

function load(files: ProjectFiles, env: NodeJS.ProcessEnv = {}): { project?: Project; issues: ConfigIssue[]; config: string; rules: string } {
  const p = writeProject(files);
  const rel = (f: string) => path.relative(process.cwd(), f);
  const names = { config: rel(p.configFile), rules: rel(path.join(p.dir, 'rules', 'hooks.yaml')) };
  try {
    return { project: loadProject(p.configFile, { explicit: true, registry: createOutputRegistry(), env }), issues: [], ...names };
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return { issues: err.issues, ...names };
  } finally {
    p.cleanup();
  }
}

/** A project refused with exactly one issue. */
function oneIssue(files: ProjectFiles): ConfigIssue & { config: string; rules: string } {
  const { issues, config, rules } = load(files);
  expect(issues, issues.map((i) => `${i.file}:${i.line}:${i.col} ${i.code} ${i.message}`).join('\n')).toHaveLength(1);
  return { ...issues[0]!, config, rules };
}

function outputConfig(settings: string): string {
  return `${LISTENER}outputs:\n  hooks:\n    type: webhook\n${settings}`;
}

const SEND_TO_HOOKS = `rules:
  - id: r
    on: a/#
    to:
      - webhook: { output: hooks }
`;

describe('webhook output settings errors name signalbox.yaml:line:col and a code', () => {
  test('a URL that is not http(s) is SB_CONFIG_SCHEMA at the url', () => {
    const config = outputConfig('    url: ftp://files.example.com/in\n');
    const issue = oneIssue({ config, rules: { 'hooks.yaml': SEND_TO_HOOKS } });
    expect(issue).toMatchObject({ file: issue.config, code: 'SB_CONFIG_SCHEMA', ...locate(config, 'ftp://') });
    expect(issue.message).toMatch(/must start with http:\/\/ or https:\/\//);
  });

  test('a URL whose host comes from a template is refused: the scheme and host start must be literal', () => {
    const config = outputConfig('    url: "https://${payload.host}/x"\n');
    const issue = oneIssue({ config, rules: { 'hooks.yaml': SEND_TO_HOOKS } });
    expect(issue).toMatchObject({ code: 'SB_CONFIG_SCHEMA', ...locate(config, '"https://') });
  });

  test('an unknown method is SB_CONFIG_SCHEMA naming the accepted ones', () => {
    const config = outputConfig('    url: https://hooks.example.com/in\n    method: FETCH\n');
    const issue = oneIssue({ config, rules: { 'hooks.yaml': SEND_TO_HOOKS } });
    expect(issue).toMatchObject({ file: issue.config, code: 'SB_CONFIG_SCHEMA', ...locate(config, 'FETCH') });
    expect(issue.message).toContain('GET, POST, PUT, PATCH, DELETE');
  });

  test('a body that is not JSONata is SB_CONFIG_SCHEMA at the body', () => {
    const config = outputConfig('    url: https://hooks.example.com/in\n    body: "{ \\"a\\": payload.( }"\n');
    const issue = oneIssue({ config, rules: { 'hooks.yaml': SEND_TO_HOOKS } });
    expect(issue).toMatchObject({ file: issue.config, code: 'SB_CONFIG_SCHEMA', ...locate(config, '"{ \\"a') });
  });

  test('an unclosed ${ in a header template is SB_CONFIG_SCHEMA at that header', () => {
    const config = outputConfig('    url: https://hooks.example.com/in\n    headers:\n      x-topic: "${topic"\n');
    const issue = oneIssue({ config, rules: { 'hooks.yaml': SEND_TO_HOOKS } });
    expect(issue).toMatchObject({ code: 'SB_CONFIG_SCHEMA', ...locate(config, '"${topic"') });
    expect(issue.message).toMatch(/never closed/);
  });

  test('a header name with a space is SB_CONFIG_SCHEMA', () => {
    const config = outputConfig('    url: https://hooks.example.com/in\n    headers: { "x bad": "1" }\n');
    const issue = oneIssue({ config, rules: { 'hooks.yaml': SEND_TO_HOOKS } });
    expect(issue).toMatchObject({ code: 'SB_CONFIG_SCHEMA' });
    expect(issue.message).toMatch(/header names/);
  });

  test('a GET with a body is SB_CONFIG_SCHEMA', () => {
    const config = outputConfig('    url: https://hooks.example.com/in\n    method: GET\n    body: payload\n');
    const issue = oneIssue({ config, rules: { 'hooks.yaml': SEND_TO_HOOKS } });
    expect(issue).toMatchObject({ code: 'SB_CONFIG_SCHEMA', ...locate(config, 'body: payload', 6) });
    expect(issue.message).toMatch(/GET request has no body/);
  });

  test('a timeout past the limit is SB_CONFIG_SCHEMA', () => {
    const config = outputConfig('    url: https://hooks.example.com/in\n    timeoutMs: 900000\n');
    expect(oneIssue({ config, rules: { 'hooks.yaml': SEND_TO_HOOKS } })).toMatchObject({ code: 'SB_CONFIG_SCHEMA', ...locate(config, '900000') });
  });
});

describe('webhook rule action errors name the rule file:line:col and a code', () => {
  const config = outputConfig('    url: https://hooks.example.com/in\n');

  test('neither output nor url is SB_RULE_OUTPUT at the action', () => {
    const rules = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - webhook: { method: PUT }\n';
    const issue = oneIssue({ config, rules: { 'hooks.yaml': rules } });
    expect(issue).toMatchObject({ file: issue.rules, code: 'SB_RULE_OUTPUT', ...locate(rules, '{ method') });
    expect(issue.message).toMatch(/give `output:`.*or `url:`/);
  });

  test('output together with the inline-only timeoutMs is SB_RULE_OUTPUT at timeoutMs', () => {
    const rules = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - webhook: { output: hooks, timeoutMs: 500 }\n';
    const issue = oneIssue({ config, rules: { 'hooks.yaml': rules } });
    expect(issue).toMatchObject({ file: issue.rules, code: 'SB_RULE_OUTPUT', ...locate(rules, '500') });
    expect(issue.message).toMatch(/timeoutMs belongs to the output "hooks"/);
  });

  test('an output that is not defined, or not a webhook, is SB_RULE_OUTPUT at output', () => {
    const undefinedOutput = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - webhook: { output: nope }\n';
    expect(oneIssue({ config, rules: { 'hooks.yaml': undefinedOutput } })).toMatchObject({ code: 'SB_RULE_OUTPUT', message: expect.stringContaining('webhook outputs: hooks'), ...locate(undefinedOutput, 'nope') });
    const bridgeConfig = `${LISTENER}outputs:\n  cloud: { type: bridge, url: "mqtt://127.0.0.1:1" }\n`;
    const wrongType = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - webhook: { output: cloud }\n';
    expect(oneIssue({ config: bridgeConfig, rules: { 'hooks.yaml': wrongType } })).toMatchObject({ code: 'SB_RULE_OUTPUT', message: expect.stringContaining('is a bridge output, not a webhook') });
  });

  test('a body that is not JSONata is SB_RULE_EXPRESSION pointing inside the expression', () => {
    const rules = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - webhook: { url: "https://x.example/in", body: "payload.c +" }\n';
    const issue = oneIssue({ config, rules: { 'hooks.yaml': rules } });
    expect(issue).toMatchObject({ file: issue.rules, code: 'SB_RULE_EXPRESSION' });
    expect(issue.line).toBe(5);
    expect(issue.col).toBeGreaterThan(locate(rules, '"payload.c +"').col);
  });

  test('a url template with invalid JSONata is SB_RULE_EXPRESSION at the offending token', () => {
    const rules = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - webhook: { output: hooks, url: "https://x.example/${levels[}" }\n';
    const issue = oneIssue({ config, rules: { 'hooks.yaml': rules } });
    expect(issue).toMatchObject({ file: issue.rules, code: 'SB_RULE_EXPRESSION', line: 5 });
    expect(issue.col).toBeGreaterThan(locate(rules, '${levels').col);
  });

  test('an inline url that is not http(s) is SB_CONFIG_SCHEMA at the url', () => {
    const rules = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - webhook: { url: "mailto:me@example.com" }\n';
    expect(oneIssue({ config, rules: { 'hooks.yaml': rules } })).toMatchObject({ code: 'SB_CONFIG_SCHEMA', ...locate(rules, '"mailto') });
  });

  test('a body with a GET, the method coming from the output, is SB_RULE_OUTPUT at the body', () => {
    const getConfig = outputConfig('    url: https://hooks.example.com/in\n    method: get\n');
    const rules = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - webhook: { output: hooks, body: payload }\n';
    expect(oneIssue({ config: getConfig, rules: { 'hooks.yaml': rules } })).toMatchObject({ code: 'SB_RULE_OUTPUT', message: expect.stringContaining('GET request has no body'), ...locate(rules, 'payload }') });
  });

  test('an inline webhook whose output name is already taken under outputs: is SB_RULE_OUTPUT at its rule', () => {
    const taken = `${LISTENER}outputs:\n  r.webhook.0: { type: webhook, url: "https://x.example/" }\n`;
    const rules = 'rules:\n  - id: r\n    on: a/#\n    to:\n      - webhook: { url: "https://y.example/" }\n';
    const issue = oneIssue({ config: taken, rules: { 'hooks.yaml': rules } });
    expect(issue).toMatchObject({ file: issue.rules, code: 'SB_RULE_OUTPUT', line: 2, message: expect.stringContaining('"r.webhook.0"') });
  });
});

describe('inline webhooks get outputs of their own', () => {
  test('named <rule id>.webhook.<n>, with the inline settings, stable across loads', () => {
    const rules = `rules:
  - id: alarm
    on: a/#
    to:
      - republish: { topic: "b/x" }
      - webhook: { url: "https://one.example/\${topic}", method: put, headers: { x-key: abc } }
      - webhook: { url: "https://two.example/in", timeoutMs: 2500 }
`;
    const first = load({ config: LISTENER, rules: { 'hooks.yaml': rules } });
    expect(first.issues).toEqual([]);
    const outputs = first.project!.config.outputs;
    expect(Object.keys(outputs).sort()).toEqual(['alarm.webhook.0', 'alarm.webhook.1']);
    expect(outputs['alarm.webhook.0']).toMatchObject({ type: 'webhook', settings: { url: 'https://one.example/${topic}', method: 'PUT', headers: { 'x-key': 'abc' }, timeoutMs: 10_000 } });
    expect(outputs['alarm.webhook.1']).toMatchObject({ type: 'webhook', settings: { url: 'https://two.example/in', method: 'POST', timeoutMs: 2500 }, outbox: { batchSize: 100 } });
    const again = load({ config: LISTENER, rules: { 'hooks.yaml': rules } });
    expect(JSON.stringify(again.project!.config.outputs)).toBe(JSON.stringify(outputs));
  });
});
