import { describe, it, expect } from 'vitest';
import { parseSharedFilter, validateTopicFilter, validateTopicName } from '../../../src/topics/validate.js';

describe('validateTopicName', () => {
  it.each([
    'sport/tennis/player1',
    'sport/tennis/player1/ranking',
    'sport/tennis/player1/score/wimbledon',
    '/finance',
    'finance/',
    '/',
    'a//b',
    '$SYS/broker/clients/connected',
    'sport/tennis player1',
    'ünïcödé/温度/😀',
  ])('accepts the topic name %j', (topic) => {
    expect(validateTopicName(topic)).toBeUndefined();
  });

  it('rejects an empty topic name [MQTT-4.7.3-1]', () => {
    expect(validateTopicName('')).toMatch(/must not be empty/);
  });

  it.each([
    ['sport/+', '+'],
    ['+', '+'],
    ['sport/tennis/#', '#'],
    ['#', '#'],
    ['a+b', '+'],
    ['a#b/c', '#'],
  ])('rejects the wildcard in the topic name %j [MQTT-3.3.2-2]', (topic, wildcard) => {
    expect(validateTopicName(topic)).toContain(`wildcard '${wildcard}'`);
  });

  it('rejects the null character in a topic name and says where it is [MQTT-1.5.4-2]', () => {
    expect(validateTopicName('a/b\u0000c')).toMatch(/U\+0000 \(at index 3\)/);
  });

  it('accepts a topic name of exactly 65535 UTF-8 bytes [MQTT-4.7.3-3]', () => {
    expect(validateTopicName('a'.repeat(65_535))).toBeUndefined();
    expect(validateTopicName('€'.repeat(21_845))).toBeUndefined();
  });

  it('rejects a topic name longer than 65535 UTF-8 bytes, counting bytes rather than characters [MQTT-4.7.3-3]', () => {
    expect(validateTopicName('a'.repeat(65_536))).toMatch(/65536 UTF-8 bytes/);
    // 32768 characters, but two bytes each
    expect(validateTopicName('é'.repeat(32_768))).toMatch(/65536 UTF-8 bytes/);
    expect(validateTopicName('€'.repeat(21_846))).toMatch(/65538 UTF-8 bytes/);
    // 16384 surrogate pairs: 32768 code units, 65536 bytes
    expect(validateTopicName('😀'.repeat(16_384))).toMatch(/65536 UTF-8 bytes/);
  });
});

describe('validateTopicFilter', () => {
  it.each([
    'sport/tennis/player1/#',
    'sport/#',
    '#',
    'sport/tennis/#',
    '+',
    '+/tennis/#',
    'sport/+/player1',
    'sport/+',
    '+/+',
    '/+',
    '+/',
    '//',
    '$SYS/#',
    '$SYS/monitor/+',
    '+/monitor/Clients',
    'a//+/#',
    '$share',
    '$shared/a',
    'a/$share/b',
  ])('accepts the topic filter %j', (filter) => {
    expect(validateTopicFilter(filter)).toBeUndefined();
  });

  it('rejects an empty topic filter [MQTT-4.7.3-1]', () => {
    expect(validateTopicFilter('')).toMatch(/must not be empty/);
  });

  it.each(['sport/tennis#', 'a#', 'a/b#'])(
    "rejects %j because '#' does not occupy a whole level [MQTT-4.7.1-2]",
    (filter) => {
      expect(validateTopicFilter(filter)).toMatch(/'#' must occupy a whole level/);
    },
  );

  it.each(['sport/tennis/#/ranking', '#/', '#/a', 'a/#/b', '##'])(
    "rejects %j because '#' is not the last level [MQTT-4.7.1-2]",
    (filter) => {
      expect(validateTopicFilter(filter)).toMatch(/'#' must be the last level/);
    },
  );

  it.each(['sport+', 'sport/+tennis', 'a/b+/c', '++', '+a', 'a+', '/+a/'])(
    "rejects %j because '+' does not occupy a whole level [MQTT-4.7.1-3]",
    (filter) => {
      expect(validateTopicFilter(filter)).toMatch(/'\+' must occupy a whole level/);
    },
  );

  it('rejects the null character in a topic filter [MQTT-1.5.4-2]', () => {
    expect(validateTopicFilter('a/\u0000/#')).toMatch(/U\+0000 \(at index 2\)/);
  });

  it('rejects a topic filter longer than 65535 UTF-8 bytes and accepts one of exactly 65535 [MQTT-4.7.3-3]', () => {
    expect(validateTopicFilter(`${'é'.repeat(32_766)}/#`)).toBeUndefined();
    expect(validateTopicFilter(`${'é'.repeat(32_767)}/#`)).toMatch(/65536 UTF-8 bytes/);
  });

  it('rejects a shared subscription filter and points to parseSharedFilter', () => {
    expect(validateTopicFilter('$share/group/a/b')).toMatch(/parseSharedFilter/);
  });
});

describe('parseSharedFilter', () => {
  it.each(['sport/#', '$SYS/#', '$share', '$sharegroup/a', 'a/$share/g/b', ''])(
    'returns undefined for %j, which is not a shared subscription filter',
    (filter) => {
      expect(parseSharedFilter(filter)).toBeUndefined();
    },
  );

  it.each([
    ['$share/consumer1/sport/tennis/+', 'consumer1', 'sport/tennis/+'],
    ['$share/consumer2/sport/tennis/+', 'consumer2', 'sport/tennis/+'],
    ['$share/consumer1//finance', 'consumer1', '/finance'],
    ['$share/g/#', 'g', '#'],
    ['$share/g/+', 'g', '+'],
    ['$share/g/$SYS/#', 'g', '$SYS/#'],
    ['$share/g/a//', 'g', 'a//'],
  ])('splits %j into its group and inner filter', (filter, group, inner) => {
    expect(parseSharedFilter(filter)).toEqual({ group, filter: inner });
  });

  it.each(['$share/', '$share//a', '$share//'])(
    'rejects %j because the share name is empty [MQTT-4.8.2-1]',
    (filter) => {
      expect(parseSharedFilter(filter)).toEqual({ error: expect.stringMatching(/group must not be empty/) });
    },
  );

  it.each(['$share/group', '$share/group/'])(
    'rejects %j because no topic filter follows the share name [MQTT-4.8.2-2]',
    (filter) => {
      expect(parseSharedFilter(filter)).toEqual({ error: expect.stringMatching(/needs a topic filter after the group/) });
    },
  );

  it.each([
    ['$share/gr+oup/a', '+'],
    ['$share/+/a', '+'],
    ['$share/#/a', '#'],
    ['$share/g#/a', '#'],
  ])("rejects %j because the share name contains '%s' [MQTT-4.8.2-2]", (filter, char) => {
    expect(parseSharedFilter(filter)).toEqual({ error: expect.stringContaining(`group must not contain '${char}'`) });
  });

  it('rejects a share name containing the null character [MQTT-1.5.4-2]', () => {
    expect(parseSharedFilter('$share/g\u0000/a')).toEqual({ error: expect.stringMatching(/U\+0000/) });
  });

  it.each([
    ['$share/g/a#', /'#' must occupy a whole level/],
    ['$share/g/#/a', /'#' must be the last level/],
    ['$share/g/a+/b', /'\+' must occupy a whole level/],
    ['$share/g/a/\u0000', /U\+0000/],
    ['$share/g/$share/h/a', /parseSharedFilter/],
  ])('rejects %j because its inner filter is invalid, and says why', (filter, why) => {
    const result = parseSharedFilter(filter);
    expect(result).toEqual({ error: expect.stringMatching(why) });
    expect(result).toEqual({ error: expect.stringMatching(/^in shared subscription filter: /) });
  });

  it('rejects a shared filter longer than 65535 UTF-8 bytes in total, prefix and group included [MQTT-4.7.3-3]', () => {
    const prefix = '$share/g/';
    expect(parseSharedFilter(prefix + 'a'.repeat(65_535 - prefix.length))).toEqual({
      group: 'g',
      filter: 'a'.repeat(65_535 - prefix.length),
    });
    expect(parseSharedFilter(prefix + 'a'.repeat(65_536 - prefix.length))).toEqual({
      error: expect.stringMatching(/65536 UTF-8 bytes/),
    });
  });
});
