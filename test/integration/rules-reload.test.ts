import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { MqttClient } from 'mqtt';
import { pino } from 'pino';
import { afterAll, afterEach, describe, expect, test } from 'vitest';
import { systemClock } from '../../src/clock.js';
import { loadProject } from '../../src/config/load.js';
import { RuleReloader } from '../../src/engine/reload.js';
import type { Logger } from '../../src/log.js';
import { createOutputRegistry } from '../../src/outputs/registry.js';
import { startEngine, type TestEngine } from '../helpers/engine.js';
import * as helpers from '../helpers/mqtt.js';
import { connect } from '../helpers/mqtt.js';

const { nextMessage, quiet } = helpers;

const cleanups: Array<() => Promise<unknown> | unknown> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A rule relaying `in/+` to `out/<tag>`, so which version runs shows in the topic. */
function relay(tag: string): string {
  return `rules:
  - id: relay-${tag}
    on: in/+
    transform: '{ "tag": "${tag}", "from": levels[1] }'
    to:
      - republish: { topic: out/${tag} }
`;
}

/** A log line as pino writes it. */
type LogLine = Record<string, unknown> & { level: number; msg: string };

/** A pino logger writing into memory, with a deadline wait for a line. */
function captureLog(): { log: Logger; lines: LogLine[]; waitForLine(match: (l: LogLine) => boolean, within?: number): Promise<LogLine> } {
  const lines: LogLine[] = [];
  const events = new EventEmitter();
  const log = pino({ level: 'info' }, { write: (s: string) => (lines.push(JSON.parse(s) as LogLine), events.emit('line')) });
  return {
    log,
    lines,
    waitForLine: (match, within = 2000) => waitUntil(() => lines.find(match), events, 'line', within, 'log line'),
  };
}

/** Resolves with the first truthy `check()`, re-checked on each `event`, or rejects after `within` ms. */
function waitUntil<T>(check: () => T | undefined, emitter: EventEmitter, event: string, within: number, what: string): Promise<T> {
  return quiet(
    new Promise<T>((resolve, reject) => {
      const on = () => {
        const found = check();
        if (found === undefined) return;
        clearTimeout(timer);
        emitter.off(event, on);
        resolve(found);
      };
      const timer = setTimeout(() => {
        emitter.off(event, on);
        reject(new Error(`no ${what} within ${within} ms`));
      }, within);
      emitter.on(event, on);
      on();
    }),
  );
}

/** Polls `check` every 20 ms until it returns a value, or rejects after `within` ms. */
function poll<T>(check: () => T | undefined, { within = 3000, what = 'condition' } = {}): Promise<T> {
  const ticker = new EventEmitter();
  const interval = setInterval(() => ticker.emit('tick'), 20);
  return waitUntil(check, ticker, 'tick', within, what).finally(() => clearInterval(interval));
}

async function client(url: string): Promise<MqttClient> {
  const c = await connect(url);
  cleanups.push(() => c.endAsync(true));
  return c;
}

/** Publishes to `in/<from>` and returns the topic and payload the rules republished to `out/#`. */
async function relayed(sub: MqttClient, pub: MqttClient, from: string): Promise<{ topic: string; payload: unknown }> {
  const got = nextMessage(sub);
  await pub.publishAsync(`in/${from}`, 'x', { qos: 1 });
  const m = await got;
  return { topic: m.topic, payload: JSON.parse(m.payload.toString()) };
}

describe('RuleReloader against a running engine', () => {
  /** Starts an engine with `rules` and a reloader wired the way `signalbox run` wires it. */
  async function running(rules: Record<string, string>) {
    const capture = captureLog();
    const te: TestEngine = await startEngine({ rules });
    cleanups.push(() => te.close());
    const registry = createOutputRegistry();
    const reloader = new RuleReloader({
      dir: te.project.config.rulesDir,
      load: () => loadProject(te.configFile, { explicit: true, registry, env: process.env }),
      apply: (next) => te.engine.reload(next),
      log: capture.log,
      clock: systemClock,
    });
    reloader.start();
    cleanups.push(() => reloader.stop());
    const sub = await client(te.url);
    const pub = await client(te.url);
    await sub.subscribeAsync('out/#', { qos: 1 });
    return { te, reloader, sub, pub, ...capture, rulesDir: te.project.config.rulesDir };
  }

  const ruleIds = (te: TestEngine) => te.engine.processor.rules.map((r) => r.id);

  test('a changed rule file is picked up from the watched folder and runs', async () => {
    const { te, sub, pub, rulesDir, waitForLine } = await running({ 'relay.yaml': relay('v1') });
    expect(await relayed(sub, pub, 'a')).toEqual({ topic: 'out/v1', payload: { tag: 'v1', from: 'a' } });

    writeFileSync(path.join(rulesDir, 'relay.yaml'), relay('v2'));
    await poll(() => (ruleIds(te).includes('relay-v2') ? true : undefined), { what: 'rule relay-v2 running' });

    expect(ruleIds(te)).toEqual(['relay-v2']);
    expect(await relayed(sub, pub, 'b')).toEqual({ topic: 'out/v2', payload: { tag: 'v2', from: 'b' } });
    expect(await waitForLine((l) => l.msg === 'rules reloaded')).toMatchObject({ reason: 'file change', rules: 1 });
  });

  test('a new rule file added to the folder is picked up next to the old ones', async () => {
    const { te, sub, pub, rulesDir } = await running({ 'a.yaml': relay('first') });

    writeFileSync(path.join(rulesDir, 'b.yaml'), relay('second').replace('on: in/+', 'on: in/second-only'));
    await poll(() => (ruleIds(te).length === 2 ? true : undefined), { what: 'two rules running' });

    expect(ruleIds(te)).toEqual(['relay-first', 'relay-second']);
    const got = quiet(helpers.collect(sub, 2));
    await pub.publishAsync('in/second-only', 'x', { qos: 1 });
    expect((await got).map((m) => m.topic).sort()).toEqual(['out/first', 'out/second']);
  });

  test('an invalid change is refused with the full report logged, and the old rules keep running', async () => {
    const { te, sub, pub, rulesDir, waitForLine } = await running({ 'relay.yaml': relay('v1') });
    const before = te.engine.processor.rules;

    const broken = `rules:
  - id: relay-broken
    on: in/+
    to:
      - republish: { topic: out/broken, qos: 3 }
`;
    writeFileSync(path.join(rulesDir, 'relay.yaml'), broken);
    const refused = await waitForLine((l) => l.msg.startsWith('rules not reloaded'));

    expect(refused.level).toBe(50); // error
    expect(refused).toMatchObject({ reason: 'file change', problems: 1 });
    const file = path.relative(process.cwd(), path.join(rulesDir, 'relay.yaml'));
    const at = broken.split('\n')[4]!.indexOf('qos: 3') + 'qos: '.length + 1; // the 3, 1-based
    expect(refused.report).toContain(`${file}:5:${at} SB_CONFIG_SCHEMA`);
    expect(refused.report).toContain('must be 0, 1 or 2, got 3');
    expect(refused.msg).toContain('the previous rules keep running');

    expect(te.engine.processor.rules).toBe(before);
    expect(await relayed(sub, pub, 'c')).toEqual({ topic: 'out/v1', payload: { tag: 'v1', from: 'c' } });

    // Fixing the file afterwards is picked up as usual.
    writeFileSync(path.join(rulesDir, 'relay.yaml'), relay('fixed'));
    await poll(() => (ruleIds(te).includes('relay-fixed') ? true : undefined), { what: 'rule relay-fixed running' });
    expect(await relayed(sub, pub, 'd')).toEqual({ topic: 'out/fixed', payload: { tag: 'fixed', from: 'd' } });
  });

  test('reload() (what SIGHUP calls) returns whether the new rules run, without a folder watch', async () => {
    const capture = captureLog();
    const te = await startEngine({ rules: { 'relay.yaml': relay('v1') } });
    cleanups.push(() => te.close());
    const registry = createOutputRegistry();
    const reloader = new RuleReloader({
      dir: undefined,
      load: () => loadProject(te.configFile, { explicit: true, registry, env: process.env }),
      apply: (next) => te.engine.reload(next),
      log: capture.log,
      clock: systemClock,
    });
    const rulesDir = te.project.config.rulesDir;

    writeFileSync(path.join(rulesDir, 'relay.yaml'), 'rules:\n  - id: x\n    on: a/#/b\n    to: [ { history: {} } ]\n');
    expect(reloader.reload('SIGHUP')).toBe(false);
    expect(ruleIds(te)).toEqual(['relay-v1']);
    expect(capture.lines.at(-1)).toMatchObject({ reason: 'SIGHUP', problems: 1 });
    expect(String(capture.lines.at(-1)!.report)).toContain('SB_RULE_FILTER');

    writeFileSync(path.join(rulesDir, 'relay.yaml'), relay('v2'));
    expect(reloader.reload('SIGHUP')).toBe(true);
    expect(ruleIds(te)).toEqual(['relay-v2']);
    expect(capture.lines.at(-1)).toMatchObject({ msg: 'rules reloaded', reason: 'SIGHUP', rules: 1 });
  });
});

describe('signalbox run (the built CLI)', () => {
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  const main = path.join(repo, 'dist', 'cli', 'main.js');

  // dist/ is built once for the whole run by test/global-setup.ts.

  let child: ChildProcess | undefined;
  let dir: string | undefined;
  afterAll(() => {
    // Stopped by its PID only if a failed test left it running.
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) process.kill(child.pid, 'SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('reloads rules on SIGHUP and exits 0 on SIGTERM', async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'signalbox-cli-'));
    const rulesDir = path.join(dir, 'rules');
    writeFileSync(path.join(dir, 'signalbox.yaml'), 'broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\nstorage: { path: data/signalbox.db }\nrules: rules\n');
    mkdirSync(rulesDir);
    writeFileSync(path.join(rulesDir, 'relay.yaml'), relay('v1'));

    const proc = spawn(process.execPath, [main, 'run', '--config', path.join(dir, 'signalbox.yaml'), '--log-format', 'json'], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child = proc;
    const exited = quiet(new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code))));
    let stderr = '';
    proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const lines: LogLine[] = [];
    const events = new EventEmitter();
    createInterface({ input: proc.stdout! }).on('line', (text) => {
      try {
        lines.push(JSON.parse(text) as LogLine);
      } catch {
        lines.push({ level: 0, msg: text });
      }
      events.emit('line');
    });
    const logLine = (match: (l: LogLine) => boolean, what: string, within = 3000) =>
      waitUntil(() => lines.find(match), events, 'line', within, `${what} (stderr: ${stderr})`);

    const listening = await logLine((l) => l.msg === 'listening', "'listening' log line");
    const url = `mqtt://127.0.0.1:${String(listening.port)}`;
    const sub = await client(url);
    const pub = await client(url);
    await sub.subscribeAsync('out/#', { qos: 1 });
    expect(await relayed(sub, pub, 'a')).toEqual({ topic: 'out/v1', payload: { tag: 'v1', from: 'a' } });

    writeFileSync(path.join(rulesDir, 'relay.yaml'), relay('v2'));
    process.kill(proc.pid!, 'SIGHUP');
    expect(await logLine((l) => l.msg === 'rules reloaded' && l.reason === 'SIGHUP', "'rules reloaded' after SIGHUP")).toMatchObject({ rules: 1 });
    expect(await relayed(sub, pub, 'b')).toEqual({ topic: 'out/v2', payload: { tag: 'v2', from: 'b' } });

    process.kill(proc.pid!, 'SIGTERM');
    const code = await Promise.race([exited, new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), 3000))]);
    expect(code, `stderr: ${stderr}`).toBe(0);
    expect(lines.find((l) => l.msg === 'shutting down')).toMatchObject({ signal: 'SIGTERM' });
  });
});
