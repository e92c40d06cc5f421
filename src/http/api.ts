import type { Clock } from '../clock.js';
import type { HttpConfig } from '../config/schema.js';
import type { Logger } from '../log.js';
import type { HistoryStore } from '../storage/history.js';
import { healthzHandler, readyzHandler, type ReadinessChecks } from './health.js';
import { historyHandler, lastHandler } from './history-api.js';
import type { LastValueCache } from './last-values.js';
import { createMetricsRegistry, metricsHandler, type MetricsSources } from './metrics.js';
import { HttpServer, type Handler, type HttpAddress } from './server.js';

/** What the HTTP API reads of a running signalbox (an `Engine` has all of it). */
export interface HttpApiSources extends MetricsSources {
  history: MetricsSources['history'] & Pick<HistoryStore, 'scan'>;
  /** The open database; `/readyz` checks it is open. */
  db: { readonly open: boolean };
  processor: MetricsSources['processor'] & { readonly rules: readonly unknown[] };
  lastValues?: LastValueCache;
}

/** What the HTTP API needs besides the engine's parts. */
export interface HttpApiDeps {
  clock: Clock;
  log: Logger;
  /**
   * True while the MQTT listeners are bound: from when `broker.listen()` resolved until
   * shutdown begins. `/readyz` answers 503 otherwise.
   */
  listening: () => boolean;
}

/**
 * The HTTP API of a running signalbox: `/healthz`, `/readyz`, `/metrics`, `/api/history`
 * and (with a last-value cache) `/api/last`. Nothing listens until {@link HttpApi.listen}.
 */
export class HttpApi {
  private readonly server: HttpServer;

  constructor(config: Pick<HttpConfig, 'host' | 'port'>, sources: HttpApiSources, deps: HttpApiDeps) {
    const checks: ReadinessChecks = {
      listeners: () => (deps.listening() ? { ok: true } : { ok: false, detail: 'MQTT listeners are not bound (starting or shutting down)' }),
      database: () => (sources.db.open ? { ok: true } : { ok: false, detail: 'the SQLite database is closed' }),
      rules: () => ({ ok: true, detail: `${sources.processor.rules.length} rule(s) loaded` }),
    };
    const routes: Record<string, Record<string, Handler>> = {
      '/healthz': { GET: healthzHandler() },
      '/readyz': { GET: readyzHandler(checks) },
      '/metrics': { GET: metricsHandler(createMetricsRegistry(sources)) },
      '/api/history': { GET: historyHandler(sources.history, deps.clock) },
    };
    if (sources.lastValues) routes['/api/last'] = { GET: lastHandler(sources.lastValues) };
    this.server = new HttpServer({ host: config.host, port: config.port, routes, log: deps.log });
  }

  /** Where it listens, once it does. */
  get address(): HttpAddress | undefined {
    return this.server.address;
  }

  /**
   * Starts listening; rejects with an `HttpError` coded SB_HTTP_LISTEN naming host:port when
   * it cannot.
   */
  listen(): Promise<HttpAddress> {
    return this.server.listen();
  }

  /** Stops listening and closes open connections. */
  close(): Promise<void> {
    return this.server.close();
  }
}
