import { describe, expect, test } from 'vitest';
import { anonymousAllowed, insecureListeners, isLoopback } from '../../../src/broker/auth.js';
import { parseBrokerConfig, type BrokerConfigInput } from '../../../src/config/broker.js';

describe('loopback addresses', () => {
  test.each(['127.0.0.1', '127.1.2.3', '::1', 'localhost', '::ffff:127.0.0.1'])('%s is loopback', (host) => {
    expect(isLoopback(host)).toBe(true);
  });
  test.each(['0.0.0.0', '::', '192.168.1.10', '10.0.0.1', 'example.com', '128.0.0.1', '::ffff:10.0.0.1'])('%s is not', (host) => {
    expect(isLoopback(host)).toBe(false);
  });
});

function config(input: BrokerConfigInput) {
  return parseBrokerConfig(input);
}

describe('anonymous access per listener', () => {
  test.each([
    { name: 'defaults: loopback without users', input: {}, expected: true },
    { name: 'a users file turns it off', input: { auth: { users: 'u.yaml' } }, expected: false },
    { name: 'auth.anonymous turns it on beside users', input: { auth: { users: 'u.yaml', anonymous: true } }, expected: true },
    { name: 'the listener overrides auth', input: { auth: { anonymous: true }, listeners: [{ type: 'mqtt' as const, anonymous: false }] }, expected: false },
    { name: 'non-loopback is off by default', input: { listeners: [{ type: 'mqtt' as const, host: '0.0.0.0' }] }, expected: false },
  ])('$name', ({ input, expected }) => {
    const c = config(input);
    expect(anonymousAllowed(c.listeners[0]!, c.auth)).toBe(expected);
  });
});

describe('insecure listeners', () => {
  const open = { type: 'mqtt' as const, host: '0.0.0.0', port: 1883 };
  test.each([
    { name: 'no users file', input: { listeners: [open] }, insecure: [0] },
    { name: 'anonymous: false explicitly', input: { listeners: [{ ...open, anonymous: false }] }, insecure: [0] },
    { name: 'a users file', input: { listeners: [open], auth: { users: 'u.yaml' } }, insecure: [] },
    { name: 'anonymous: true on the listener', input: { listeners: [{ ...open, anonymous: true }] }, insecure: [] },
    { name: 'auth.anonymous: true', input: { listeners: [open], auth: { anonymous: true } }, insecure: [] },
    { name: 'loopback beside a public one', input: { listeners: [{ type: 'mqtt' as const, host: '127.0.0.1', port: 1 }, open] }, insecure: [1] },
  ])('$name → listeners $insecure refused', ({ input, insecure }) => {
    expect(insecureListeners(config(input)).map((i) => i.index)).toEqual(insecure);
  });

  test('a listener requiring a client certificate is authenticated', () => {
    const c = config({ listeners: [open] });
    const withCert = { ...c, listeners: [{ ...c.listeners[0]!, requireCertificate: true } as (typeof c.listeners)[number]] };
    expect(insecureListeners(withCert)).toEqual([]);
  });
});
