import type { Clock } from '../clock.js';
import { OutputError, parseRetryAfter } from './connector.js';

/** Characters of a refusing response's body quoted in the error (and so in the dead letter). */
export const ERROR_BODY_CHARS = 512;
/** Bytes of a response body read before the rest is discarded. */
const MAX_READ_BYTES = 64 * 1024;

/** One request, ready to send. */
export interface PreparedRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string | Buffer | undefined;
}

/** How {@link sendRequest} sends. */
export interface SendOptions {
  readonly timeoutMs: number;
  /** Aborted when the output closes. */
  readonly signal: AbortSignal;
  readonly clock: Clock;
}

/**
 * Sends one request with Node's fetch and resolves on a 2xx answer. Otherwise throws an
 * OutputError: retryable for 408, 429, 5xx, network errors and timeouts (with the target's
 * `Retry-After` as `retryAfterMs`), permanent for every other status, 3xx included
 * (redirects are not followed: a webhook that moved is a configuration to fix, and
 * following it would resend the body to a host nobody configured).
 */
export async function sendRequest(name: string, request: PreparedRequest, options: SendOptions): Promise<void> {
  const where = `webhook "${name}": ${request.method} ${origin(request.url)}`;
  if (options.signal.aborted) throw new OutputError(`webhook "${name}" is closed`, { retryable: true });
  const controller = new AbortController();
  const onClose = () => controller.abort();
  options.signal.addEventListener('abort', onClose, { once: true });
  let timedOut = false;
  const timer = options.clock.setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, options.timeoutMs);
  try {
    let response: Response;
    try {
      response = await fetch(request.url, { method: request.method, headers: request.headers, body: request.body, redirect: 'manual', signal: controller.signal });
    } catch (err) {
      throw transportError(where, err, timedOut, options);
    }
    if (response.status >= 200 && response.status < 300) {
      // Reading the (small) answer lets the connection be reused; an error here changes nothing, the target said yes.
      await readText(response, MAX_READ_BYTES).catch(() => undefined);
      return;
    }
    let text: string;
    try {
      text = await readText(response, MAX_READ_BYTES);
    } catch (err) {
      if (timedOut || options.signal.aborted) throw transportError(where, err, timedOut, options);
      text = '';
    }
    const status = `answered ${response.status}${response.statusText ? ` ${response.statusText}` : ''}`;
    const quoted = text.trim() === '' ? '' : `: ${truncate(text.trim(), ERROR_BODY_CHARS)}`;
    if (response.status === 408 || response.status === 429 || response.status >= 500) {
      const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'), options.clock.now());
      throw new OutputError(`${where} ${status}${quoted}`, { retryable: true, ...(retryAfterMs === undefined ? {} : { retryAfterMs }) });
    }
    const hint = response.status >= 300 && response.status < 400 ? ` (redirects are not followed; location: ${response.headers.get('location') ?? 'none'})` : '';
    throw new OutputError(`${where} ${status}${hint}${quoted}`, { retryable: false });
  } finally {
    options.clock.clearTimeout(timer);
    options.signal.removeEventListener('abort', onClose);
  }
}

function transportError(where: string, err: unknown, timedOut: boolean, options: SendOptions): OutputError {
  if (timedOut) return new OutputError(`${where}: no complete answer within ${options.timeoutMs} ms`, { retryable: true, cause: err });
  if (options.signal.aborted) return new OutputError(`${where}: the output closed during the request`, { retryable: true, cause: err });
  // fetch says only "fetch failed"; the reason (ECONNREFUSED, ENOTFOUND, a TLS error) is its cause.
  const cause = (err as { cause?: { code?: string; message?: string } } | undefined)?.cause;
  const reason = cause ? [cause.code, cause.message].filter(Boolean).join(' ') : err instanceof Error ? err.message : String(err);
  return new OutputError(`${where}: ${reason || 'request failed'}`, { retryable: true, cause: err });
}

/** Reads up to `max` bytes of the body as text and discards the rest. */
async function readText(response: Response, max: number): Promise<string> {
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
    if (size >= max) {
      await reader.cancel().catch(() => undefined);
      break;
    }
  }
  return Buffer.concat(chunks).subarray(0, max).toString('utf8');
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

/** Scheme and host of a URL: paths and queries of webhooks often carry secrets, errors and logs do not. */
function origin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return '(invalid URL)';
  }
}
