import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { createInterface } from 'node:readline';
import { afterEach, describe, expect, it } from 'vitest';
import { CLI, cli } from '../helpers/cli.js';
import { writeProject } from '../helpers/engine.js';

/**
 * `signalbox run` with the HTTP API, as a user starts it: the built CLI in its own process,
 * its log read from stdout, requests over real HTTP. And the config checks of `http:` and
 * `history.maxRows` through `signalbox check`.
 */

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function project(config: string): string {
  const p = writeProject({ config, rules: { 'store.yaml': 'rules:\n  - id: store\n    on: sensors/#\n    to:\n      - history: {}\n' } });
  cleanups.push(p.cleanup);
  return p.dir;
}

interface Running {
  child: ChildProcess;
  exited: Promise<number | null>;
  stderr: () => string;
  /** Resolves with the first JSON log line `match` accepts, within `within` ms. */
  line(match: (l: Record<string, unknown>) => boolean, within?: number): Promise<Record<string, unknown>>;
}

function run(dir: string): Running {
  const child = spawn(process.execPath, [CLI, 'run', '--config', 'signalbox.yaml', '--log-format', 'json'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines: Record<string, unknown>[] = [];
  const waiters: Array<() => void> = [];
  createInterface({ input: child.stdout! }).on('line', (text) => {
    try {
      lines.push(JSON.parse(text) as Record<string, unknown>);
    } catch {
      lines.push({ msg: text });
    }
    for (const w of waiters.splice(0)) w();
  });
  return {
    child,
    exited,
    stderr: () => stderr,
    line(match, within = 5000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no matching log line within ${within} ms; stderr: ${stderr}; lines: ${lines.map((l) => l.msg).join(' | ')}`)), within);
        const check = () => {
          const found = lines.find(match);
          if (found) {
            clearTimeout(timer);
            resolve(found);
          } else waiters.push(check);
        };
        check();
      });
    },
  };
}

describe('signalbox run with http:', () => {
  it('serves /healthz and /readyz once the listeners are bound, and exits 0 on SIGTERM', async () => {
    const dir = project('broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\nhttp: { port: 0 }\n');
    const sb = run(dir);
    const listening = await sb.line((l) => l.msg === 'HTTP API listening');
    expect(listening).toMatchObject({ host: '127.0.0.1', port: expect.any(Number) });
    const base = `http://127.0.0.1:${String(listening.port)}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ready' });
    expect(await (await fetch(`${base}/metrics`)).text()).toContain('signalbox_connections 0');
    sb.child.kill('SIGTERM');
    expect(await sb.exited, sb.stderr()).toBe(0);
  });

  it('refuses to start when the HTTP port is taken, naming host:port, and exits 1', async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => blocker.close(resolve)));
    const port = (blocker.address() as { port: number }).port;
    const dir = project(`broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\nhttp: { host: 127.0.0.1, port: ${port} }\n`);
    const sb = run(dir);
    expect(await sb.exited).toBe(1);
    expect(sb.stderr()).toContain(`signalbox: not starting: HTTP API cannot listen on 127.0.0.1:${port}: the port is in use`);
  });

  it('reports bad http: and history: settings with file:line:col', async () => {
    const config = [
      'broker:',
      '  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]',
      'history:',
      '  maxRows: 0',
      'http:',
      '  port: 70000',
      '  colour: blue',
      '  lastValues: { maxTopics: -1, maxBytes: lots }',
      '',
    ].join('\n');
    const dir = project(config);
    const r = await cli(['check', '--config', 'signalbox.yaml'], dir);
    expect(r.code).toBe(1);
    const located = r.stdout.split('\n').filter((l) => /^signalbox\.yaml:\d+:\d+ /.test(l)).map((l) => l.split(' ').slice(0, 2).join(' '));
    expect(located).toEqual([
      'signalbox.yaml:4:12 SB_CONFIG_SCHEMA',
      'signalbox.yaml:6:9 SB_CONFIG_SCHEMA',
      'signalbox.yaml:7:3 SB_CONFIG_SCHEMA',
      'signalbox.yaml:8:28 SB_CONFIG_SCHEMA',
      'signalbox.yaml:8:42 SB_CONFIG_SCHEMA',
    ]);
    expect(r.stdout).toContain('maxBytes must be a size such as 67108864, "64MiB" or "1GiB", got "lots"');
  });

  it('takes an empty http: section as the defaults', async () => {
    const dir = project('broker:\n  listeners: [{ type: mqtt, host: 127.0.0.1, port: 0 }]\nhttp:\n');
    const r = await cli(['check', '--config', 'signalbox.yaml'], dir);
    expect(r.code, r.stdout + r.stderr).toBe(0);
  });
});
