import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';

/** How the stand-in answers a write. */
export interface InfluxAnswer {
  status: number;
  body?: string;
  headers?: Record<string, string>;
}

/** One write request the stand-in received. */
export interface InfluxWrite {
  url: string;
  /** Line protocol, gunzipped when the output compressed it. */
  body: string;
  at: number;
  headers: http.IncomingHttpHeaders;
  /** The status it was answered with. */
  status: number;
}

/**
 * A local HTTP server on 127.0.0.1 standing in for InfluxDB (for the answers VictoriaMetrics
 * never gives): records every write and answers the n-th (from 1) as `answer` says, 204 by
 * default. `close()` it when done.
 */
export async function startFakeInflux(answer: (body: string, n: number) => InfluxAnswer = () => ({ status: 204 })) {
  const writes: InfluxWrite[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      // The output gzips bodies over 1 KiB, as InfluxDB and VictoriaMetrics accept.
      const body = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8');
      const a = answer(body, writes.length + 1);
      writes.push({ url: req.url ?? '', body, at: Date.now(), headers: req.headers, status: a.status });
      res.writeHead(a.status, { 'content-type': 'text/plain', ...a.headers });
      res.end(a.body ?? '');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  server.unref();
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    writes,
    /** Lines written with a 2xx answer. */
    accepted: () => writes.filter((w) => w.status < 300).flatMap((w) => w.body.split('\n')),
    close(): Promise<void> {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
