import type { Handler } from './server.js';

/** One part of readiness: ready, or why not. */
export interface ReadinessCheck {
  readonly ok: boolean;
  /** Why it is not ready (or a note when it is). */
  readonly detail?: string;
}

/** The parts `/readyz` checks, each read at request time. */
export type ReadinessChecks = Readonly<Record<string, () => ReadinessCheck>>;

/** `GET /healthz`: the process is alive and its event loop answers: always 200. */
export function healthzHandler(): Handler {
  return () => ({ status: 200, json: { status: 'ok' } });
}

/**
 * `GET /readyz`: 200 when every check is ready, else 503; the body lists each check as
 * `{ ok, detail? }` so the part that is not ready is named.
 */
export function readyzHandler(checks: ReadinessChecks): Handler {
  return () => {
    const results: Record<string, ReadinessCheck> = {};
    let ready = true;
    for (const [name, check] of Object.entries(checks)) {
      let result: ReadinessCheck;
      try {
        result = check();
      } catch (err) {
        result = { ok: false, detail: err instanceof Error ? err.message : String(err) };
      }
      results[name] = result;
      if (!result.ok) ready = false;
    }
    const notReady = Object.keys(results).filter((name) => !results[name]!.ok);
    return { status: ready ? 200 : 503, json: { status: ready ? 'ready' : 'not ready', ...(ready ? {} : { notReady }), checks: results } };
  };
}
