/**
 * Every error code the HTTP API answers with, and what it means (README "HTTP API" lists
 * them; a test checks each is documented).
 */
export const HTTP_ERROR_CODES = {
  SB_HTTP_UNKNOWN_PARAMETER: 'The request has a query parameter the endpoint does not take.',
  SB_HTTP_DUPLICATE_PARAMETER: 'A query parameter is given more than once.',
  SB_HTTP_MISSING_PARAMETER: 'A required query parameter (filter) is missing or empty.',
  SB_HTTP_BAD_FILTER: 'filter is not a valid MQTT topic filter.',
  SB_HTTP_BAD_TIME: 'from or to is not a time signalbox reads.',
  SB_HTTP_BAD_RANGE: 'from is not before to.',
  SB_HTTP_BAD_LIMIT: 'limit is not a whole number in its range.',
  SB_HTTP_BAD_ORDER: 'order is neither asc nor desc.',
  SB_HTTP_BAD_REQUEST: 'The request line cannot be read (a malformed URL).',
  SB_HTTP_NOT_FOUND: 'No endpoint has this path.',
  SB_HTTP_METHOD_NOT_ALLOWED: 'The endpoint exists but not for this method; the Allow header lists the ones it takes.',
  SB_HTTP_STORAGE: 'The database could not answer (busy, unreadable or closed); retry later.',
  SB_HTTP_INTERNAL: 'An unexpected failure inside signalbox; it is logged.',
  SB_HTTP_LISTEN: 'The HTTP API could not listen on its host:port (in use, not an address of this machine, no permission); signalbox does not start.',
} as const;

/** One of {@link HTTP_ERROR_CODES}. */
export type HttpErrorCode = keyof typeof HTTP_ERROR_CODES;

/**
 * An error answered as `status` with the body `{ "error": { code, message, parameter? } }`.
 * Handlers throw it; the server turns it into the response.
 */
export class HttpError extends Error {
  readonly status: number;
  readonly code: HttpErrorCode;
  /** The query parameter at fault, when one is. */
  readonly parameter: string | undefined;
  /** Extra response headers (Allow for 405, Retry-After for 503). */
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, code: HttpErrorCode, message: string, options: { parameter?: string; headers?: Record<string, string> } = {}) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.parameter = options.parameter;
    this.headers = options.headers ?? {};
  }

  /** The JSON body of the response. */
  toJSON(): { error: { code: HttpErrorCode; message: string; parameter?: string } } {
    return { error: { code: this.code, message: this.message, ...(this.parameter === undefined ? {} : { parameter: this.parameter }) } };
  }
}

/** A 400 for query parameter `parameter`. */
export function badParameter(code: HttpErrorCode, parameter: string, message: string): HttpError {
  return new HttpError(400, code, message, { parameter });
}
