import type { Logger } from 'pino';
import type { Clock, TimerHandle } from '../clock.js';

/** The counters of limits hit; each is also a field of BrokerStats (see README "Limits"). */
export interface LimitCounters {
  /** New connections closed because `maxConnections` were open. */
  connectionsRefusedMax: number;
  /** New connections closed because their address had `maxPendingConnectionsPerIp` before CONNECT. */
  connectionsRefusedPendingPerIp: number;
  /** New connections closed because their address connected faster than `maxConnectRatePerIp`. */
  connectionsRefusedRate: number;
  /** Connections closed for sending no CONNECT within `connectTimeoutMs`. */
  connectTimeouts: number;
  /** Connections closed for a packet larger than `maxPacketSize`. */
  packetsTooLarge: number;
  /** Subscriptions refused because the client held `maxSubscriptions`. */
  subscriptionsRefused: number;
  /** Retained publishes to a new topic not retained because of `maxRetained` / `maxRetainedBytes`. */
  retainedRefused: number;
  /** QoS 1/2 messages dropped (oldest first) from a client's queue full at `maxQueued`. */
  droppedQueueFull: number;
  /** QoS 0 messages not sent to a client whose send buffer was over `maxSendBufferBytes`. */
  droppedSendBuffer: number;
  /** Clients disconnected because their send buffer did not drain within `slowConsumerTimeoutMs`. */
  slowConsumersDisconnected: number;
}

/** One of the limit counters. */
export type LimitCounter = keyof LimitCounters;

/** A fresh set of limit counters, all zero. */
export function limitCounters(): LimitCounters {
  return {
    connectionsRefusedMax: 0,
    connectionsRefusedPendingPerIp: 0,
    connectionsRefusedRate: 0,
    connectTimeouts: 0,
    packetsTooLarge: 0,
    subscriptionsRefused: 0,
    retainedRefused: 0,
    droppedQueueFull: 0,
    droppedSendBuffer: 0,
    slowConsumersDisconnected: 0,
  };
}

const MESSAGES: Record<LimitCounter, string> = {
  connectionsRefusedMax: 'maxConnections reached: closed a new connection',
  connectionsRefusedPendingPerIp: 'maxPendingConnectionsPerIp reached: closed a new connection',
  connectionsRefusedRate: 'maxConnectRatePerIp exceeded: closed a new connection',
  connectTimeouts: 'no CONNECT within connectTimeoutMs: closed the connection',
  packetsTooLarge: 'packet larger than maxPacketSize: closed the connection',
  subscriptionsRefused: 'maxSubscriptions reached: refused a subscription',
  retainedRefused: 'maxRetained or maxRetainedBytes reached: a retained message to a new topic was delivered but not retained',
  droppedQueueFull: 'maxQueued reached: dropped the oldest queued message',
  droppedSendBuffer: 'send buffer over maxSendBufferBytes: dropped a QoS 0 message',
  slowConsumersDisconnected: 'send buffer did not drain within slowConsumerTimeoutMs: disconnected the client',
};

/** How long after one warning the next one may come; hits in between are summed into it. */
export const LIMIT_LOG_INTERVAL_MS = 10_000;

/**
 * Counts limits hit and logs them without flooding the log: the first hit logs a warning at
 * once, naming the client; hits in the next {@link LIMIT_LOG_INTERVAL_MS} are only counted
 * and then logged as one warning with the count per limit. A flood of a million dropped
 * messages costs a counter increment each and one log line per interval.
 */
export class LimitLog {
  private window: TimerHandle | undefined;
  private summary: Partial<Record<LimitCounter, number>> = {};
  private summed = 0;

  constructor(
    private readonly counters: LimitCounters,
    private readonly log: Logger,
    private readonly clock: Clock,
  ) {}

  /** Counts one hit of `counter`; `who` (a client id or peer address) is logged if this hit is logged on its own. */
  hit(counter: LimitCounter, who: string | undefined): void {
    this.counters[counter]++;
    if (this.window === undefined) {
      this.log.warn({ limit: counter, client: who || undefined }, MESSAGES[counter]);
      this.window = this.clock.setTimeout(this.flush, LIMIT_LOG_INTERVAL_MS);
      return;
    }
    this.summary[counter] = (this.summary[counter] ?? 0) + 1;
    this.summed++;
  }

  private readonly flush = (): void => {
    this.window = undefined;
    if (this.summed === 0) return;
    this.log.warn({ limitsHit: this.summary, intervalMs: LIMIT_LOG_INTERVAL_MS }, 'limits hit in the last interval');
    this.summary = {};
    this.summed = 0;
    // Keep the window open, so a flood that goes on is still summed rather than logged per hit.
    this.window = this.clock.setTimeout(this.flush, LIMIT_LOG_INTERVAL_MS);
  };

  /** Logs what is still summed and stops the timer (broker shutdown). */
  close(): void {
    if (this.window !== undefined) this.clock.clearTimeout(this.window);
    this.flush();
    if (this.window !== undefined) this.clock.clearTimeout(this.window);
    this.window = undefined;
  }
}
