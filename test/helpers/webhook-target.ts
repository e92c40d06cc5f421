import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** One request as the target saw it. */
export interface RecordedRequest {
  readonly method: string;
  /** Path and query, as sent. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** How the target answers one request: a response, or `hang` (never answer). */
export type Answer = { status: number; headers?: Record<string, string>; body?: string } | 'hang';

/**
 * A real HTTP server on 127.0.0.1, port 0, standing in for a webhook endpoint: records every
 * request (also those it refuses) and answers with `answer`, 204 by default.
 */
export class WebhookTarget {
  readonly requests: RecordedRequest[] = [];
  answer: (request: RecordedRequest) => Answer = () => ({ status: 204 });
  private waiters: { count: number; resolve: () => void }[] = [];

  private constructor(
    private readonly server: Server,
    /** `http://127.0.0.1:<port>` */
    readonly url: string,
  ) {}

  static async start(): Promise<WebhookTarget> {
    let target: WebhookTarget | undefined;
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const recorded: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
        const answer = target!.answer(recorded);
        target!.record(recorded);
        if (answer === 'hang') return;
        res.writeHead(answer.status, answer.headers);
        res.end(answer.body);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    target = new WebhookTarget(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    return target;
  }

  private record(request: RecordedRequest): void {
    this.requests.push(request);
    this.waiters = this.waiters.filter((w) => {
      if (this.requests.length < w.count) return true;
      w.resolve();
      return false;
    });
  }

  /** Resolves once `count` requests arrived in total, or rejects after `within` ms. */
  waitFor(count: number, { within = 5000 } = {}): Promise<RecordedRequest[]> {
    if (this.requests.length >= count) return Promise.resolve(this.requests);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`expected ${count} requests within ${within} ms, got ${this.requests.length}`)), within);
      this.waiters.push({ count, resolve: () => (clearTimeout(timer), resolve(this.requests)) });
    });
  }

  /** Stops listening and drops every open connection, hanging requests included. */
  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
