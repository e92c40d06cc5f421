import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

/**
 * Password hashing for the users file: scrypt (RFC 7914) with a random salt, every parameter
 * stored in the hash string so old hashes keep verifying when the defaults change.
 *
 * Format: `scrypt$N$r$p$<salt base64>$<key base64>`.
 */

/**
 * Default cost: N=2^14, r=8, p=1 uses 16 MiB and about 30-60 ms of one core per hash. It runs
 * on libuv's thread pool (async scrypt), so the event loop keeps serving other clients while
 * a CONNECT is checked; the per-IP serialisation in auth.ts keeps one client from occupying
 * more than one pool thread.
 */
export const SCRYPT_DEFAULTS = { N: 16_384, r: 8, p: 1 } as const;
/** Salt length in bytes. */
export const SALT_BYTES = 16;
/** Derived key length in bytes. */
export const KEY_BYTES = 32;
/** Largest memory one verification may use (128·N·r bytes); hashes asking for more are refused at load. */
export const MAX_SCRYPT_MEMORY_BYTES = 256 * 1024 * 1024;

/** A parsed hash string. */
export interface ScryptHash {
  readonly N: number;
  readonly r: number;
  readonly p: number;
  readonly salt: Buffer;
  readonly key: Buffer;
}

function deriveKey(password: string, salt: Buffer, N: number, r: number, p: number, keylen: number): Promise<Buffer> {
  const options: ScryptOptions = { N, r, p, maxmem: 128 * N * r * p + 1024 * 1024 };
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** Hashes a password with a fresh random salt. */
export async function hashPassword(password: string, params: { N: number; r: number; p: number } = SCRYPT_DEFAULTS): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await deriveKey(password, salt, params.N, params.r, params.p, KEY_BYTES);
  return `scrypt$${params.N}$${params.r}$${params.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const INTEGER = /^[1-9][0-9]{0,9}$/;

/**
 * Parses a hash string. Returns a message saying what is wrong (never echoing the value, which
 * may be a password written by mistake) instead of throwing.
 */
export function parseHash(text: string): ScryptHash | string {
  const parts = text.split('$');
  if (parts[0] !== 'scrypt' || parts.length !== 6) return 'is not a scrypt hash (expected scrypt$N$r$p$salt$hash, as written by `signalbox passwd`)';
  const [, n, r, p, salt, key] = parts as [string, string, string, string, string, string];
  if (!INTEGER.test(n) || !INTEGER.test(r) || !INTEGER.test(p)) return 'has scrypt parameters that are not whole numbers';
  const N = Number(n);
  const R = Number(r);
  const P = Number(p);
  if (N < 2 || (N & (N - 1)) !== 0) return `has scrypt N=${N}, which is not a power of two`;
  if (N < 1024) return `has scrypt N=${N}; at least 1024 is required`;
  if (R > 64 || P > 16) return `has scrypt r=${R}, p=${P}; at most r=64 and p=16 are accepted`;
  if (128 * N * R * P > MAX_SCRYPT_MEMORY_BYTES) return `needs ${128 * N * R * P} bytes to verify; at most ${MAX_SCRYPT_MEMORY_BYTES} are allowed`;
  if (!BASE64.test(salt) || !BASE64.test(key)) return 'has a salt or hash that is not base64';
  const saltBytes = Buffer.from(salt, 'base64');
  const keyBytes = Buffer.from(key, 'base64');
  if (saltBytes.length < 8) return 'has a salt shorter than 8 bytes';
  if (keyBytes.length < 16 || keyBytes.length > 64) return 'has a hash that is not 16 to 64 bytes long';
  return { N, r: R, p: P, salt: saltBytes, key: keyBytes };
}

/**
 * True when `password` matches `hash`. Runs scrypt on the thread pool; the comparison is
 * constant-time ({@link timingSafeEqual}), so the time taken says nothing about how close
 * a guess was.
 */
export async function verifyPassword(password: string, hash: ScryptHash): Promise<boolean> {
  const key = await deriveKey(password, hash.salt, hash.N, hash.r, hash.p, hash.key.length);
  return timingSafeEqual(key, hash.key);
}
