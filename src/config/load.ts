import { existsSync, readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { brokerSchema, type BrokerConfig } from './broker.js';

/** The whole signalbox.yaml after validation. Sections other than `broker:` join as they are built. */
export interface Config {
  broker: BrokerConfig;
  /** The file it came from; undefined when running on defaults. */
  file: string | undefined;
}

const MAX_CONFIG_BYTES = 1024 * 1024;

/** A configuration problem, with where it is and what would be accepted. */
export class ConfigError extends Error {
  readonly code = 'SB_ERR_CONFIG';
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

const fileSchema = z.object({ broker: brokerSchema.optional() }).strict();

/**
 * Loads signalbox.yaml. A missing file at the default path means "defaults"; a missing file
 * named explicitly is an error. Every problem is collected and thrown together as a
 * ConfigError, each as `file:line:col message`.
 */
export function loadConfig(file: string, { explicit }: { explicit: boolean }): Config {
  if (!existsSync(file)) {
    if (explicit) throw new ConfigError([`${file}: config file not found`]);
    return { broker: brokerSchema.parse({}), file: undefined };
  }
  const text = readFileSync(file, 'utf8');
  if (Buffer.byteLength(text) > MAX_CONFIG_BYTES) throw new ConfigError([`${file}: larger than 1 MiB`]);
  const doc = parseDocument(text, { uniqueKeys: true, prettyErrors: false });
  const lineOf = (offset: number): string => {
    const before = text.slice(0, offset);
    const line = before.split('\n').length;
    const col = offset - before.lastIndexOf('\n');
    return `${line}:${col}`;
  };
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => `${file}:${lineOf(e.pos[0])} ${e.message.split('\n')[0]}`));
  }
  const result = fileSchema.safeParse(doc.toJS({ maxAliasCount: 100 }) ?? {});
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((issue) => {
        const node = doc.getIn(issue.path as (string | number)[], true) as { range?: [number, number] } | undefined;
        const where = node?.range ? lineOf(node.range[0]) : '1:1';
        const path = issue.path.join('.');
        return `${file}:${where} ${path ? `'${path}': ` : ''}${issue.message}`;
      }),
    );
  }
  return { broker: result.data.broker ?? brokerSchema.parse({}), file };
}
