import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';
import { HttpError } from './errors.js';

/** What a handler sees of a request: the path and the query, nothing else (no body is read). */
export interface HttpRequest {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
}

/** A handler's answer: a JSON value (serialised by the server) or text with its content type. */
export type HttpResponse =
  | { readonly status: number; readonly json: unknown; readonly headers?: Readonly<Record<string, string>> }
  | { readonly status: number; readonly text: string; readonly contentType: string; readonly headers?: Readonly<Record<string, string>> };

/**
 * Answers one request. May throw (or reject with) an {@link HttpError} for a client error;
 * any other error is logged and answered 500 SB_HTTP_INTERNAL.
 */
export type Handler = (req: HttpRequest) => HttpResponse | Promise<HttpResponse>;

/** The handlers of one path, by method. A GET handler also answers HEAD. */
export type Routes = Readonly<Record<string, Readonly<Record<string, Handler>>>>;

/** Options of {@link HttpServer}. */
export interface HttpServerOptions {
  host: string;
  port: number;
  routes: Routes;
  log: Logger;
}

/** Longest a request may take to arrive whole, ms: a slow client does not hold a socket for long. */
export const REQUEST_TIMEOUT_MS = 30_000;
/** Idle keep-alive connections are closed after this many ms. */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** Most HTTP connections open at once; further ones are refused by the server. */
export const MAX_CONNECTIONS = 256;

/** The address the server listens on, once it does. */
export interface HttpAddress {
  host: string;
  port: number;
}

function allowed(methods: Readonly<Record<string, Handler>>): string {
  const names = Object.keys(methods);
  if (names.includes('GET') && !names.includes('HEAD')) names.push('HEAD');
  return names.join(', ');
}

/**
 * A small HTTP/1.1 server on `node:http`: exact-path routing, JSON bodies, errors as
 * `{ "error": { code, message, parameter? } }`, 404 for an unknown path and 405 with `Allow`
 * for a known path with another method. Bounded: request time, keep-alive, connections.
 */
export class HttpServer {
  private readonly server: http.Server;
  private readonly options: HttpServerOptions;
  private bound: HttpAddress | undefined;

  constructor(options: HttpServerOptions) {
    this.options = options;
    this.server = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS }, (req, res) => {
      void this.handle(req, res);
    });
    this.server.maxConnections = MAX_CONNECTIONS;
    // A broken client socket is that client's problem, never the process's.
    this.server.on('clientError', (_err, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Where it listens; undefined before {@link listen}. */
  get address(): HttpAddress | undefined {
    return this.bound;
  }

  /**
   * Starts listening. Rejects with an {@link HttpError} coded SB_HTTP_LISTEN that names
   * host:port and why (address in use, not an address of this machine, no permission).
   */
  listen(): Promise<HttpAddress> {
    const { host, port } = this.options;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        const why = err.code === 'EADDRINUSE' ? 'the port is in use' : err.code === 'EADDRNOTAVAIL' ? 'the host is not an address of this machine' : err.code === 'EACCES' ? 'no permission for this port' : err.message;
        reject(new HttpError(500, 'SB_HTTP_LISTEN', `HTTP API cannot listen on ${host}:${port}: ${why} (${err.code ?? 'error'})`));
      };
      this.server.once('error', onError);
      this.server.listen(port, host, () => {
        this.server.off('error', onError);
        const address = this.server.address() as AddressInfo;
        this.bound = { host: address.address, port: address.port };
        resolve(this.bound);
      });
    });
  }

  /** Stops accepting, closes every connection (idle or not), resolves when closed. */
  close(): Promise<void> {
    if (!this.server.listening) return Promise.resolve();
    return new Promise((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    let response: HttpResponse;
    try {
      response = await this.route(method, req.url ?? '/');
    } catch (err) {
      if (err instanceof HttpError) {
        response = { status: err.status, json: err.toJSON(), headers: err.headers };
      } else {
        this.options.log.error({ err, method, url: req.url }, 'HTTP API request failed');
        const internal = new HttpError(500, 'SB_HTTP_INTERNAL', 'internal error; see the signalbox log');
        response = { status: 500, json: internal.toJSON() };
      }
    }
    const body = 'json' in response ? `${JSON.stringify(response.json)}\n` : response.text;
    res.writeHead(response.status, {
      'content-type': 'json' in response ? 'application/json; charset=utf-8' : response.contentType,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      ...response.headers,
    });
    res.end(method === 'HEAD' ? undefined : body);
  }

  private route(method: string, rawUrl: string): HttpResponse | Promise<HttpResponse> {
    let url: URL;
    try {
      url = new URL(rawUrl, 'http://signalbox');
    } catch {
      throw new HttpError(400, 'SB_HTTP_BAD_REQUEST', `cannot read the request URL ${JSON.stringify(rawUrl.slice(0, 200))}`);
    }
    const methods = this.options.routes[url.pathname];
    if (methods === undefined) {
      throw new HttpError(404, 'SB_HTTP_NOT_FOUND', `no endpoint at ${url.pathname}; endpoints: ${Object.keys(this.options.routes).join(', ')}`);
    }
    const handler = methods[method] ?? (method === 'HEAD' ? methods.GET : undefined);
    if (handler === undefined) {
      const allow = allowed(methods);
      throw new HttpError(405, 'SB_HTTP_METHOD_NOT_ALLOWED', `${url.pathname} does not take ${method}; it takes ${allow}`, { headers: { allow } });
    }
    return handler({ method, path: url.pathname, query: url.searchParams });
  }
}
