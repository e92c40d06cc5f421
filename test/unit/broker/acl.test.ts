import { describe, expect, test } from 'vitest';
import { filterCovers, filtersIntersect } from '../../../src/broker/acl-match.js';
import { AccessControl, substitute } from '../../../src/broker/acl.js';
import type { AclRule } from '../../../src/config/broker.js';

describe('filter relations', () => {
  test.each([
    ['#', 'a/b', true],
    ['a/+', 'a/b', true],
    ['a/+', '+/b', true],
    ['a/b', 'a/c', false],
    ['a/#', 'a', true],
    ['a/+', 'a', false],
    ['a/b/c', 'a/+', false],
    ['#', '$SYS/x', false],
    ['+/#', '$SYS/#', false],
    ['$SYS/#', '$SYS/+', true],
    ['sensors/u/#', '#', true],
    ['sensors/u/#', 'sensors/v/#', false],
  ])('%s and %s share a topic: %s', (a, b, expected) => {
    expect(filtersIntersect(a, b)).toBe(expected);
    expect(filtersIntersect(b, a)).toBe(expected);
  });

  test.each([
    ['#', 'a/b', true],
    ['#', '$SYS/x', false],
    ['a/#', 'a', true],
    ['a/#', 'a/+/c', true],
    ['a/+', 'a/b', true],
    ['a/+', 'a/#', false],
    ['a/b', 'a/+', false],
    ['a/+', 'a', false],
    ['a/b', 'a/b', true],
    ['a/b', 'a/b/c', false],
  ])('%s covers %s: %s', (outer, inner, expected) => {
    expect(filterCovers(outer, inner)).toBe(expected);
  });
});

describe('substitution', () => {
  test('%u and %c are replaced once, without re-substituting', () => {
    expect(substitute('devices/%u/%c/#', 'alice', 'dev-1')).toBe('devices/alice/dev-1/#');
    expect(substitute('devices/%u/#', '%c', 'x')).toBe('devices/%c/#');
    expect(substitute('plain/#', undefined, 'x')).toBe('plain/#');
  });

  test.each(['#', '+', 'a/#', 'a/b', '+/+', '/'])('a name "%s" that would widen the filter makes it apply to nobody', (name) => {
    expect(substitute('devices/%u/#', name, 'c')).toBeUndefined();
    expect(substitute('devices/%c/#', 'u', name)).toBeUndefined();
  });

  test('%u never applies to an anonymous client', () => {
    expect(substitute('devices/%u/#', undefined, 'c')).toBeUndefined();
  });
});

const RULES: AclRule[] = [
  { user: 'admin', allow: [{ subscribe: '#', publish: '#' }] },
  { clientId: 'bridge-*', deny: [{ publish: '#' }] },
  { user: '*', deny: [{ subscribe: 'sensors/%u/secret' }] },
  { user: '*', allow: [{ subscribe: 'sensors/%u/#' }, { publish: 'sensors/%u/#' }, { subscribe: 'public/#' }] },
  { allow: [{ subscribe: 'public/#' }] },
];

describe('AccessControl', () => {
  const acl = new AccessControl(RULES);

  test('a user reads and writes only their own subtree and the public one', () => {
    const u = acl.forClient('u', 'c1');
    expect(u.canRead('sensors/u/temp')).toBe(true);
    expect(u.canRead('sensors/u')).toBe(true);
    expect(u.canRead('sensors/v/temp')).toBe(false);
    expect(u.canRead('public/x')).toBe(true);
    expect(u.canRead('$SYS/x')).toBe(false);
    expect(u.canPublish('sensors/u/temp')).toBe(true);
    expect(u.canPublish('sensors/v/temp')).toBe(false);
    expect(u.canPublish('public/x')).toBe(false);
  });

  test('the first matching item wins: an earlier deny beats a later allow', () => {
    const u = acl.forClient('u', 'c1');
    expect(u.canRead('sensors/u/secret')).toBe(false);
    expect(u.canRead('sensors/u/other')).toBe(true);
  });

  test('subscribing is granted when some readable topic could match, and refused when none can', () => {
    const u = acl.forClient('u', 'c1');
    expect(u.canSubscribe('#')).toBe(true);
    expect(u.canSubscribe('sensors/#')).toBe(true);
    expect(u.canSubscribe('sensors/u/+')).toBe(true);
    expect(u.canSubscribe('sensors/v/#')).toBe(false);
    expect(u.canSubscribe('sensors/u/secret')).toBe(false);
    expect(u.canSubscribe('$SYS/#')).toBe(false);
  });

  test('client id rules match by prefix with a trailing *', () => {
    const bridge = acl.forClient('u', 'bridge-7');
    expect(bridge.canPublish('sensors/u/x')).toBe(false);
    expect(acl.forClient('u', 'bridgeX').canPublish('sensors/u/x')).toBe(true);
  });

  test('anonymous clients match only rules without a user', () => {
    const anon = acl.forClient(undefined, 'c');
    expect(anon.canRead('public/a')).toBe(true);
    expect(anon.canRead('sensors/u/a')).toBe(false);
    expect(anon.canPublish('public/a')).toBe(false);
  });

  test.each(['#', '+', 'a/#', '+/#', 'x'.repeat(65_000)])('user "%s" gets no more than its literal name allows', (name) => {
    const c = acl.forClient(name, name);
    for (const topic of ['sensors/u/t', 'sensors/v/t', 'sensors/a/b', 'a/b', 'sensors/#/t']) {
      expect(c.canRead(topic)).toBe(topic === 'public/x');
      expect(c.canPublish(topic)).toBe(false);
    }
    expect(c.canSubscribe('sensors/#')).toBe(name === 'x'.repeat(65_000));
  });

  test('clients with the same substituted rules share one compiled ACL', () => {
    expect(acl.forClient(undefined, 'a')).toBe(acl.forClient(undefined, 'b'));
    expect(acl.forClient('u', 'a')).not.toBe(acl.forClient('v', 'a'));
  });
});
