import { pino, type Logger } from 'pino';

export type { Logger };

export interface LogOptions {
  /** pino level: trace, debug, info, warn, error, fatal, silent. Default info. */
  level?: string;
  /** Human-readable lines instead of JSON. Default: when stdout is a TTY. */
  pretty?: boolean;
}

/**
 * Creates the process logger: structured JSON on stdout, or readable lines (pino-pretty)
 * when stdout is a terminal. Built once in main and passed down; nothing imports a global.
 */
export function createLogger(options: LogOptions = {}): Logger {
  const level = options.level ?? 'info';
  const pretty = options.pretty ?? process.stdout.isTTY === true;
  if (pretty) {
    return pino({
      level,
      transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
    });
  }
  return pino({ level });
}

/** A logger that writes nothing, for tests and library use. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
