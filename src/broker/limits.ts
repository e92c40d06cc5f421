import type { Limits } from '../config/broker.js';

/** Why a new connection was closed as it was accepted; each is a counter in BrokerStats. */
export type ConnectionRefusal = 'connectionsRefusedMax' | 'connectionsRefusedPendingPerIp' | 'connectionsRefusedRate';

/** What the gate keeps per peer IP address. */
interface PeerEntry {
  /** Connections from this address that have not completed CONNECT. */
  pending: number;
  /** Token bucket of new connections: holds at most `maxConnectRatePerIp`, refills at that rate per second. */
  tokens: number;
  refilledAt: number;
}

/** How often idle entries are swept out of the per-address table, in ms. */
const SWEEP_INTERVAL_MS = 1000;

/**
 * Decides, before any byte is read, whether a newly accepted connection may stay: the total
 * number of connections (`maxConnections`), connections per IP address still before CONNECT
 * (`maxPendingConnectionsPerIp`), and new connections per IP address per second
 * (`maxConnectRatePerIp`, a token bucket that holds one second's worth).
 *
 * Memory is bounded: an address has an entry only while it has a pending connection or its
 * bucket is refilling (at most one second after its last connect); idle entries are swept
 * once a second, on the next accept. So the table holds the addresses with a pending
 * connection (at most `maxConnections`) plus those that connected in the last two seconds.
 */
export class ConnectionGate {
  private readonly peers = new Map<string, PeerEntry>();
  private lastSweep: number;

  constructor(
    private readonly limits: Pick<Limits, 'maxConnections' | 'maxPendingConnectionsPerIp' | 'maxConnectRatePerIp'>,
    private readonly now: () => number,
  ) {
    this.lastSweep = now();
  }

  /** Addresses currently tracked (for tests and status). */
  get trackedAddresses(): number {
    return this.peers.size;
  }

  /**
   * Called for each accepted stream, with the number of connections already open. Returns why
   * it must be closed, or undefined when it may stay; then it counts as pending for `address`
   * until the caller calls {@link release} (exactly once).
   */
  admit(address: string, open: number): ConnectionRefusal | undefined {
    if (open >= this.limits.maxConnections) return 'connectionsRefusedMax';
    const now = this.now();
    if (now - this.lastSweep >= SWEEP_INTERVAL_MS) this.sweep(now);
    let peer = this.peers.get(address);
    if (peer === undefined) {
      peer = { pending: 0, tokens: this.limits.maxConnectRatePerIp, refilledAt: now };
      this.peers.set(address, peer);
    } else {
      this.refill(peer, now);
    }
    if (peer.tokens < 1) return 'connectionsRefusedRate';
    if (peer.pending >= this.limits.maxPendingConnectionsPerIp) return 'connectionsRefusedPendingPerIp';
    peer.tokens -= 1;
    peer.pending++;
    return undefined;
  }

  /** An admitted connection completed CONNECT or closed before it: it stops counting as pending. */
  release(address: string): void {
    const peer = this.peers.get(address);
    if (peer !== undefined && peer.pending > 0) peer.pending--;
  }

  private refill(peer: PeerEntry, now: number): void {
    const rate = this.limits.maxConnectRatePerIp;
    const elapsed = now - peer.refilledAt;
    if (elapsed <= 0) return;
    peer.tokens = Math.min(rate, peer.tokens + (elapsed * rate) / 1000);
    peer.refilledAt = now;
  }

  /** Forgets addresses with nothing pending and a full bucket: they would be created afresh the same. */
  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [address, peer] of this.peers) {
      if (peer.pending > 0) continue;
      this.refill(peer, now);
      if (peer.tokens >= this.limits.maxConnectRatePerIp) this.peers.delete(address);
    }
  }
}
