import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import type { Logger } from 'pino';
import type { Clock } from '../clock.js';
import type { AuthConfig, BrokerConfig, ListenerConfig } from '../config/broker.js';
import { KEY_BYTES, SALT_BYTES, SCRYPT_DEFAULTS, verifyPassword, type ScryptHash } from './auth-hash.js';
import { DEFAULT_THROTTLE, LoginThrottle, type ThrottleOptions } from './auth-throttle.js';
import type { UserTable } from './auth-users.js';
import type { StreamOrigin } from './listeners/listener.js';

/** The outcome of checking a CONNECT's credentials. */
export type AuthVerdict =
  | { readonly ok: true; /** The authenticated username; undefined for an anonymous client. */ readonly username: string | undefined }
  | { readonly ok: false; readonly refusal: 'bad-credentials' | 'not-authorized'; readonly reason: string };

/** True when `host` only accepts connections from this machine. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const kind = net.isIP(host);
  if (kind === 4) return host.startsWith('127.');
  if (kind === 6) return host === '::1' || /^::ffff:127\./i.test(host);
  return false;
}

/** Whether clients without credentials may connect on this listener. */
export function anonymousAllowed(listener: ListenerConfig, auth: AuthConfig): boolean {
  return listener.anonymous ?? auth.anonymous ?? (auth.users === undefined && isLoopback(listener.host));
}

function requiresCertificate(listener: ListenerConfig): boolean {
  return (listener as { requireCertificate?: unknown }).requireCertificate === true;
}

/** A listener that would accept anyone from the network, and why. */
export interface InsecureListener {
  readonly index: number;
  readonly listener: ListenerConfig;
  readonly message: string;
}

/**
 * The listeners that must not start: reachable from the network with no authentication
 * configured (no users file, no required client certificate, and anonymous access not
 * explicitly switched on).
 */
export function insecureListeners(config: Pick<BrokerConfig, 'listeners' | 'auth'>): InsecureListener[] {
  const found: InsecureListener[] = [];
  config.listeners.forEach((listener, index) => {
    if (isLoopback(listener.host) || config.auth.users !== undefined || requiresCertificate(listener)) return;
    if ((listener.anonymous ?? config.auth.anonymous) === true) return;
    found.push({
      index,
      listener,
      message: `listener ${listener.type} on ${listener.host}:${(listener as { port?: number }).port ?? '?'} is reachable from the network but has no authentication`,
    });
  });
  return found;
}

/** Thrown by `listen()` for a listener {@link insecureListeners} names. */
export class InsecureListenerError extends Error {
  readonly code = 'SB_ERR_INSECURE_LISTENER';
  readonly retryable = false;
}

/** Settings of {@link Authenticator} beyond the broker config. */
export interface AuthenticatorDeps {
  clock: Clock;
  log: Logger;
  throttle?: ThrottleOptions;
}

/**
 * Checks CONNECT credentials: client certificate identity, users file with scrypt hashes,
 * anonymous access per listener. Failed password checks are slowed per IP
 * ({@link LoginThrottle}); verified passwords are remembered in a bounded cache of keyed
 * HMACs, so a reconnect does not pay for scrypt again.
 */
export class Authenticator {
  private users: UserTable | undefined;
  private readonly throttle: LoginThrottle;
  /** username → HMAC of its last verified password, and the hash it was verified against. */
  private readonly verified = new Map<string, { hashText: string; mac: Buffer }>();
  /** Per-process key of the cache's HMACs: the digests mean nothing outside this process. */
  private readonly macKey = randomBytes(32);
  /** Verified against for unknown users, so their refusal takes as long as a wrong password. */
  private readonly decoy: ScryptHash = { ...SCRYPT_DEFAULTS, salt: randomBytes(SALT_BYTES), key: randomBytes(KEY_BYTES) };

  constructor(
    private readonly config: AuthConfig,
    users: UserTable | undefined,
    private readonly deps: AuthenticatorDeps,
  ) {
    this.users = users;
    this.throttle = new LoginThrottle(deps.clock, deps.throttle ?? DEFAULT_THROTTLE);
  }

  /** Replaces the users (a reloaded users file); connected clients stay connected. */
  setUsers(users: UserTable | undefined): void {
    this.users = users;
    this.verified.clear();
  }

  /** Failed logins of `ip`, decayed (for tests and status). */
  failures(ip: string): number {
    return this.throttle.failures(ip);
  }

  /**
   * Checks a CONNECT. Synchronous when no password needs scrypt (certificate, anonymous, a
   * cached password); otherwise a promise, resolved after the per-IP queue and, for a
   * failure, after its delay. `alive` says whether the client is still there when its turn
   * comes, so a queue of abandoned guesses drains without work.
   */
  authenticate(origin: StreamOrigin, username: string | undefined, password: Buffer | undefined, alive: () => boolean): AuthVerdict | Promise<AuthVerdict> {
    // A verified client certificate names the user; CONNECT's username is ignored.
    if (origin.certificateUsername !== undefined) return { ok: true, username: origin.certificateUsername };
    const users = this.users;
    if (username === undefined && password === undefined) {
      if (anonymousAllowed(origin.listener, this.config)) return { ok: true, username: undefined };
      return { ok: false, refusal: 'not-authorized', reason: 'anonymous clients are not allowed on this listener' };
    }
    if (users === undefined) {
      // Nothing to check credentials against: such a client is anonymous, if that is allowed.
      if (anonymousAllowed(origin.listener, this.config)) return { ok: true, username: undefined };
      return { ok: false, refusal: 'not-authorized', reason: 'no users are configured on this listener' };
    }
    const entry = username === undefined ? undefined : users.get(username);
    const text = password?.toString('utf8');
    if (entry && text !== undefined && this.cached(username!, entry.hashText, text)) return { ok: true, username };
    return this.throttle
      .run(origin.address, async () => {
        if (!alive()) return undefined;
        // A check queued behind another login of the same user may find it verified by now.
        if (entry && text !== undefined && this.cached(username!, entry.hashText, text)) return true;
        // Unknown users and missing passwords cost one scrypt too: the timing does not tell them apart.
        const ok = await verifyPassword(text ?? '', entry?.hash ?? this.decoy);
        if (ok && entry && text !== undefined) this.remember(username!, entry.hashText, text);
        return ok && entry !== undefined && text !== undefined;
      })
      .then((ok): AuthVerdict => {
        if (ok) return { ok: true, username };
        if (ok === undefined) return { ok: false, refusal: 'bad-credentials', reason: 'the client left before its check' };
        // The name is the client's input: bounded in the log.
        this.deps.log.info({ remote: origin.remote, username: username?.slice(0, 256), failures: Math.round(this.throttle.failures(origin.address)) }, 'login failed');
        return { ok: false, refusal: 'bad-credentials', reason: 'bad user name or password' };
      });
  }

  private mac(password: string): Buffer {
    return createHmac('sha256', this.macKey).update(password, 'utf8').digest();
  }

  private cached(username: string, hashText: string, password: string): boolean {
    const hit = this.verified.get(username);
    if (!hit || hit.hashText !== hashText) return false;
    if (!timingSafeEqual(hit.mac, this.mac(password))) return false;
    this.verified.delete(username);
    this.verified.set(username, hit);
    return true;
  }

  private remember(username: string, hashText: string, password: string): void {
    const max = this.config.credentialCache;
    if (max === 0) return;
    this.verified.delete(username);
    if (this.verified.size >= max) this.verified.delete(this.verified.keys().next().value!);
    this.verified.set(username, { hashText, mac: this.mac(password) });
  }
}
