import { describe, expect, test } from 'vitest';
import { hashPassword, parseHash, verifyPassword, type ScryptHash } from '../../../src/broker/auth-hash.js';

/** Cheap parameters so the tests stay fast; the format and the checks are the same. */
const FAST = { N: 1024, r: 8, p: 1 };

function parsed(text: string): ScryptHash {
  const h = parseHash(text);
  if (typeof h === 'string') throw new Error(h);
  return h;
}

describe('password hashes', () => {
  test('a hash verifies its password and no other, and does not contain the password', async () => {
    const text = await hashPassword('correct horse', FAST);
    expect(text).toMatch(/^scrypt\$1024\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    expect(text).not.toContain('correct horse');
    expect(text).not.toContain(Buffer.from('correct horse').toString('base64'));
    expect(await verifyPassword('correct horse', parsed(text))).toBe(true);
    expect(await verifyPassword('correct horsE', parsed(text))).toBe(false);
    expect(await verifyPassword('', parsed(text))).toBe(false);
  });

  test('the same password hashes differently each time (random salt)', async () => {
    const [a, b] = await Promise.all([hashPassword('pw', FAST), hashPassword('pw', FAST)]);
    expect(a).not.toBe(b);
  });

  test('the default parameters are stored in the hash', async () => {
    const text = await hashPassword('pw');
    expect(text.startsWith('scrypt$16384$8$1$')).toBe(true);
    expect(await verifyPassword('pw', parsed(text))).toBe(true);
  });

  test.each([
    ['plain text', 'hunter2', 'not a scrypt hash'],
    ['too few fields', 'scrypt$1024$8$1$abc', 'not a scrypt hash'],
    ['N not a power of two', 'scrypt$1000$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==', 'not a power of two'],
    ['N too small', 'scrypt$16$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==', 'at least 1024'],
    ['memory too large', 'scrypt$1048576$64$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==', 'bytes to verify'],
    ['non-numeric parameter', 'scrypt$x$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==', 'whole numbers'],
    ['salt not base64', 'scrypt$1024$8$1$!!!$AAAAAAAAAAAAAAAAAAAAAA==', 'not base64'],
    ['short salt', 'scrypt$1024$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA==', 'salt shorter'],
    ['short hash', 'scrypt$1024$8$1$AAAAAAAAAAA=$AAAA', 'not 16 to 64 bytes'],
  ])('a malformed hash is refused with a reason: %s', (_name, text, reason) => {
    const result = parseHash(text);
    expect(typeof result).toBe('string');
    expect(result).toContain(reason);
    expect(result).not.toContain('hunter2');
  });
});
