import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { historyCommand, parseTimeBound, type HistoryCommandOptions } from '../../../src/cli/history.js';
import { silentLogger } from '../../../src/log.js';
import { openDatabase } from '../../../src/storage/database.js';
import { HistoryStore, type HistoryRow } from '../../../src/storage/history.js';
import { FakeClock } from '../../helpers/fake-clock.js';

const NOW = Date.parse('2026-11-25T20:00:00.000Z');
const log = silentLogger();
let dir: string;
let dbPath: string;

class Collect extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

function run(options: Partial<HistoryCommandOptions>): { code: number; out: string; err: string } {
  const out = new Collect();
  const err = new Collect();
  const code = historyCommand({ dbPath, filter: '#', ...options }, out, { err, clock: new FakeClock(NOW), log });
  return { code, out: out.text, err: err.text };
}

function row(time: string, topic: string, payload: Buffer | string, extra: Partial<HistoryRow> = {}): HistoryRow {
  const bytes = typeof payload === 'string' ? Buffer.from(payload) : payload;
  return { time: Date.parse(time), topic, payload: bytes, qos: 1, retain: false, ruleId: 'greenhouse-temperature', clientId: 'sensor-1', ...extra };
}

async function seed(rows: HistoryRow[]): Promise<void> {
  const db = openDatabase(dbPath, { durability: 'normal', log });
  const store = new HistoryStore(db, { clock: new FakeClock(NOW), log });
  const done = Promise.all(rows.map((r) => store.append(r)));
  await store.close();
  await done;
  db.close();
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'signalbox-cli-history-'));
  dbPath = join(dir, 'data', 'signalbox.db');
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('signalbox history', () => {
  beforeEach(async () => {
    await seed([
      row('2026-11-25T18:00:00.000Z', 'greenhouse/north/f', '{"c":20}'),
      row('2026-11-25T18:30:00.000Z', 'greenhouse/south/f', 'hello\nworld', { qos: 0, retain: true, ruleId: 'r2' }),
      row('2026-11-25T19:00:00.000Z', 'greenhouse/north/f', Buffer.from([0xff, 0x00, 0xfe])),
      row('2026-11-25T19:45:00.000Z', 'garage/door', 'open'),
    ]);
  });

  it('prints one line per message, oldest first, text as text and other bytes as base64', () => {
    const { code, out, err } = run({ filter: 'greenhouse/#' });
    expect(code).toBe(0);
    expect(err).toBe('');
    expect(out).toBe(
      [
        '2026-11-25T18:00:00.000Z  greenhouse/north/f  q1 r0  rule=greenhouse-temperature  {"c":20}',
        '2026-11-25T18:30:00.000Z  greenhouse/south/f  q0 r1  rule=r2  hello\\nworld',
        '2026-11-25T19:00:00.000Z  greenhouse/north/f  q1 r0  rule=greenhouse-temperature  base64:/wD+',
        '',
      ].join('\n'),
    );
  });

  it('prints JSON lines with the payload parsed when it is JSON and its encoding named', () => {
    const { code, out } = run({ filter: 'greenhouse/+/f', json: true });
    expect(code).toBe(0);
    const lines = out.trimEnd().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toEqual([
      { time: '2026-11-25T18:00:00.000Z', topic: 'greenhouse/north/f', qos: 1, retain: false, ruleId: 'greenhouse-temperature', clientId: 'sensor-1', payload: { c: 20 }, payloadEncoding: 'json' },
      { time: '2026-11-25T18:30:00.000Z', topic: 'greenhouse/south/f', qos: 0, retain: true, ruleId: 'r2', clientId: 'sensor-1', payload: 'hello\nworld', payloadEncoding: 'utf8' },
      { time: '2026-11-25T19:00:00.000Z', topic: 'greenhouse/north/f', qos: 1, retain: false, ruleId: 'greenhouse-temperature', clientId: 'sensor-1', payload: '/wD+', payloadEncoding: 'base64' },
    ]);
  });

  it('takes --since and --until as durations ago or ISO-8601 times', () => {
    // now is 20:00: 1h30m ago is 18:30 (inclusive); until 19:00 is exclusive.
    expect(run({ since: '90m', until: '2026-11-25T19:00:00Z' }).out).toMatch(/^2026-11-25T18:30:00.000Z {2}greenhouse\/south\/f .*\n$/);
    expect(run({ since: '2026-11-25T19:00:00.000+01:00' }).out.split('\n')[0]).toContain('2026-11-25T18:00:00.000Z');
    expect(run({ until: '1d' }).out).toBe('');
  });

  it('shows the latest --limit messages, oldest first, and says more exist', () => {
    const { code, out, err } = run({ limit: 2 });
    expect(code).toBe(0);
    expect(out.trimEnd().split('\n').map((l) => l.slice(0, 24))).toEqual(['2026-11-25T19:00:00.000Z', '2026-11-25T19:45:00.000Z']);
    expect(err).toContain('showing the latest 2');
  });

  it('says when nothing matched', () => {
    const { code, out, err } = run({ filter: 'nothing/here' });
    expect(code).toBe(0);
    expect(out).toBe('');
    expect(err).toContain("no stored messages match 'nothing/here'");
  });

  it.each([
    ['since', 'yesterday'],
    ['until', '5'],
    ['since', '2026-13-45T99:00'],
  ])('rejects --%s %s with exit code 2, naming the option and what it accepts', (name, value) => {
    const { code, out, err } = run({ [name]: value });
    expect(code).toBe(2);
    expect(out).toBe('');
    expect(err).toContain(`--${name} must be a duration ago (such as 30m, 1h, 7d) or an ISO-8601 time`);
    expect(err).toContain(`got '${value}'`);
  });

  it('rejects --since after --until, a bad --limit, and an invalid filter with exit code 2', () => {
    expect(run({ since: '1h', until: '2h' })).toMatchObject({ code: 2, err: expect.stringContaining('--since') as unknown });
    expect(run({ limit: 0 })).toMatchObject({ code: 2, err: expect.stringContaining('--limit must be a whole number from 1 to 10000, got 0') as unknown });
    const bad = run({ filter: 'greenhouse/#/f' });
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("invalid topic filter 'greenhouse/#/f'");
    expect(bad.err).toContain("'#' must be the last level");
  });
});

describe('signalbox history without a database', () => {
  it('says no history is stored yet at the path, exits 1 and creates nothing', () => {
    const { code, err } = run({});
    expect(code).toBe(1);
    expect(err).toContain(`no history stored yet at ${dbPath}`);
    expect(existsSync(dbPath)).toBe(false);
  });

  it('names the file when it is not a database', () => {
    mkdirSync(join(dir, 'data'));
    writeFileSync(dbPath, 'not a database at all, just text'.repeat(10));
    const { code, err } = run({});
    expect(code).toBe(1);
    expect(err).toContain(dbPath);
    expect(err).toContain('SQLITE_NOTADB');
  });
});

describe('parseTimeBound', () => {
  it('reads durations as that long before now and ISO dates as given', () => {
    expect(parseTimeBound('1h', NOW)).toBe(NOW - 3_600_000);
    expect(parseTimeBound('7d', NOW)).toBe(NOW - 7 * 86_400_000);
    expect(parseTimeBound('2026-11-25', NOW)).toBe(Date.parse('2026-11-25T00:00:00Z'));
    expect(parseTimeBound('tomorrow', NOW)).toBeUndefined();
    expect(parseTimeBound('-1h', NOW)).toBeUndefined();
  });
});
