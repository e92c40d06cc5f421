import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileMapping, mappingsEcho, type TopicMapping } from '../../../src/outputs/bridge-mapping.js';
import { matchesFilter } from '../../../src/topics/match.js';
import { validateTopicName } from '../../../src/topics/validate.js';

function compiled(from: string, to: string): TopicMapping {
  const m = compileMapping(from, to);
  if (typeof m === 'string') throw new Error(`expected "${from}" → "${to}" to compile, got: ${m}`);
  return m;
}

function rejected(from: string, to: string): string {
  const m = compileMapping(from, to);
  expect(typeof m, `"${from}" → "${to}" should be rejected`).toBe('string');
  return m as string;
}

describe('compileMapping', () => {
  it('replaces the literal prefix of a # filter and keeps the rest of the topic', () => {
    const m = compiled('telemetry/#', 'site-a/telemetry/#');
    expect(m.from).toBe('telemetry/#');
    expect(m.to).toBe('site-a/telemetry/#');
    expect(m.map('telemetry/a/b')).toBe('site-a/telemetry/a/b');
    expect(m.map('telemetry/x')).toBe('site-a/telemetry/x');
  });

  it('maps the parent level a # filter also matches to the other prefix alone', () => {
    expect(compiled('telemetry/#', 'site-a/telemetry/#').map('telemetry')).toBe('site-a/telemetry');
  });

  it('strips a prefix in the other direction', () => {
    const m = compiled('site-a/telemetry/#', 'telemetry/#');
    expect(m.map('site-a/telemetry/a/b')).toBe('telemetry/a/b');
    expect(m.map('site-a/telemetry')).toBe('telemetry');
  });

  it('keeps empty levels after the prefix', () => {
    expect(compiled('a/#', 'b/#').map('a//x/')).toBe('b//x/');
  });

  it('prepends a prefix to every topic when the source filter is # alone', () => {
    const m = compiled('#', 'x/#');
    expect(m.map('a')).toBe('x/a');
    expect(m.map('a/b/c')).toBe('x/a/b/c');
  });

  it('maps the levels a + matches', () => {
    const m = compiled('plant/+/temperature', 'site-a/plant/+/temperature');
    expect(m.map('plant/boiler/temperature')).toBe('site-a/plant/boiler/temperature');
    const lead = compiled('+/status', 'devices/+/status');
    expect(lead.map('d1/status')).toBe('devices/d1/status');
    expect(compiled('devices/+/status', '+/status').map('devices/d1/status')).toBe('d1/status');
  });

  it('maps mixed + and # levels', () => {
    const m = compiled('a/+/x/#', 'b/c/+/x/#');
    expect(m.map('a/1/x/y/z')).toBe('b/c/1/x/y/z');
    expect(m.map('a/1/x')).toBe('b/c/1/x');
  });

  it('maps an exact topic to an exact topic', () => {
    const m = compiled('home/door', 'site-a/home/front-door');
    expect(m.map('home/door')).toBe('site-a/home/front-door');
  });

  it('maps multi-byte UTF-8 levels by characters, not bytes', () => {
    expect(compiled('usine/température/#', 'site/#').map('usine/température/°C/🙂')).toBe('site/°C/🙂');
  });

  it.each([
    { from: 'telemetry/#', to: 'site-a/+' },
    { from: 'a/+', to: 'b/#' },
    { from: 'a/+/#', to: 'b/#' },
    { from: '+/x', to: '+/y' },
    { from: 'a/+/b', to: 'c/+' },
    { from: 'a/b', to: 'c/#' },
    { from: 'a/#', to: 'c/d' },
  ])('rejects $from → $to, whose levels from the first wildcard differ, naming both', ({ from, to }) => {
    const reason = rejected(from, to);
    expect(reason).toContain(from);
    expect(reason).toContain(to);
    expect(reason).toMatch(/same levels/);
  });

  it.each([
    { from: 'a/#/b', to: 'c/#/b', problem: /'#' must be the last level/ },
    { from: 'a/x+', to: 'b/x+', problem: /'\+' must occupy a whole level/ },
    { from: '', to: 'b', problem: /must not be empty/ },
    { from: 'a/#', to: 'b#', problem: /'#' must occupy a whole level/ },
    { from: '$share/g/a/#', to: 'b/#', problem: /shared subscription/ },
  ])('rejects an invalid filter in $from → $to with the validator\'s reason', ({ from, to, problem }) => {
    expect(rejected(from, to)).toMatch(problem);
  });

  it('maps every topic matching the source filter to a valid topic matching the target filter, and back', () => {
    const literal = fc.stringMatching(/^[a-z0-9_é-]{1,6}$/);
    // The levels from the first wildcard on, shared by both sides; none for an exact topic.
    const rest = fc.oneof(
      fc.constant<string[]>([]),
      fc.constant<string[]>(['#']),
      fc.record({ more: fc.array(fc.oneof(fc.constant('+'), literal), { maxLength: 3 }), hash: fc.boolean() }).map(({ more, hash }) => ['+', ...more, ...(hash ? ['#'] : [])]),
    );
    const mapping = fc
      .record({ fromPrefix: fc.array(literal, { maxLength: 3 }), toPrefix: fc.array(literal, { maxLength: 3 }), rest })
      .map(({ fromPrefix, toPrefix, rest: r }) => ({ from: [...fromPrefix, ...r].join('/'), to: [...toPrefix, ...r].join('/'), fromPrefix, rest: r }))
      .filter(({ from, to }) => from !== '' && to !== '');
    const instance = fc.array(literal, { minLength: 3, maxLength: 6 });

    fc.assert(
      fc.property(mapping, instance, fc.array(literal, { maxLength: 3 }), ({ from, to, fromPrefix, rest }, fill, tail) => {
        // A topic matching `from`: each + filled with a level, # with zero or more levels.
        let k = 0;
        const restLevels = rest.flatMap((l) => (l === '+' ? [fill[k++ % fill.length]!] : l === '#' ? tail : [l]));
        const topic = rest.length === 0 ? from : [...fromPrefix, ...restLevels].join('/');
        fc.pre(topic !== '' && matchesFilter(from, topic));
        const forward = compiled(from, to);
        const mapped = forward.map(topic);
        // Parent-level matches onto an empty prefix map to no topic; their own test is below.
        fc.pre(mapped !== undefined);
        expect(validateTopicName(mapped!), `"${topic}" via ${from} → ${to} gave "${mapped}"`).toBeUndefined();
        expect(matchesFilter(to, mapped!), `"${mapped}" should match ${to}`).toBe(true);
        expect(compiled(to, from).map(mapped!)).toBe(topic);
      }),
      { numRuns: 1000 },
    );
  });

  // A topic whose first level is empty ("/a") is valid MQTT; the empty level is a literal
  // level of the filter like any other.
  it('replaces a leading empty level like any other literal level ("/#" → "x/#")', () => {
    const m = compiled('/#', 'x/#');
    expect(m.map('/a')).toBe('x/a');
    expect(m.map('/a/b')).toBe('x/a/b');
  });

  it('adds a leading empty level like any other literal level ("#" → "/#")', () => {
    expect(compiled('#', '/#').map('a/b')).toBe('/a/b');
  });

  it('maps the parent level of a # filter onto # to no topic at all, never the empty topic ("x/#" → "#" with topic "x")', () => {
    // `x/#` matches `x`; its literal prefix stripped leaves nothing, which is no topic name
    // [MQTT-4.7.3-1]: the message has nowhere to go and is skipped.
    const m = compileMapping('x/#', '#');
    if (typeof m === 'string') throw new Error(m);
    expect(m.map('x')).toBeUndefined();
    expect(m.map('x/y')).toBe('y');
  });
});

describe('mappingsEcho', () => {
  it('detects an out mapping that sends back what the in mapping brought in', () => {
    expect(mappingsEcho({ remote: 'site-a/cmd/#', local: 'cmd/#' }, { local: 'cmd/#', remote: 'site-a/cmd/#' })).toBe(true);
  });

  it('detects an echo through + levels', () => {
    expect(mappingsEcho({ remote: 'r/+/cmd', local: 'l/+/cmd' }, { local: 'l/#', remote: 'r/#' })).toBe(true);
  });

  it('detects an echo between exact topics', () => {
    expect(mappingsEcho({ remote: 'r/status', local: 'l/status' }, { local: 'l/status', remote: 'r/status' })).toBe(true);
  });

  it('detects an echo when everything is bridged both ways', () => {
    expect(mappingsEcho({ remote: '#', local: '#' }, { local: '#', remote: '#' })).toBe(true);
  });

  it('sees no echo when the local topics do not overlap', () => {
    expect(mappingsEcho({ remote: 'site-a/cmd/#', local: 'cmd/#' }, { local: 'telemetry/#', remote: 'site-a/telemetry/#' })).toBe(false);
  });

  it('sees no echo when the remote topics do not overlap', () => {
    expect(mappingsEcho({ remote: 'cloud/cmd/#', local: 'dev/#' }, { local: 'dev/#', remote: 'site-a/dev/#' })).toBe(false);
    expect(mappingsEcho({ remote: 'r/status', local: 'l/status' }, { local: 'l/status', remote: 'r/other' })).toBe(false);
  });

  it('sees no echo into $ topics, which a leading wildcard does not match', () => {
    expect(mappingsEcho({ remote: '$SYS/#', local: 'sys/#' }, { local: '#', remote: '#' })).toBe(false);
  });

  it('sees no echo when the out mapping sends in-mapped topics where the in filter does not reach', () => {
    // In brings r/q to x/q (two levels); out sends x/q to r/x/q (three levels), which r/+
    // never matches. The local and the remote filters overlap, each pair on its own.
    expect(mappingsEcho({ remote: 'r/+', local: 'x/+' }, { local: 'x/#', remote: 'r/x/#' })).toBe(false);
  });
});
