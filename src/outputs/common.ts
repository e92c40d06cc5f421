import { z } from 'zod';
import type { QoS } from '../broker/types.js';
import { ExpressionError, type ExpressionLimits } from '../rules/expression.js';
import { compileTemplate, type CompiledTemplate } from '../rules/template.js';
import { ActionConfigError } from './types.js';

/** `qos: 0 | 1 | 2` with a message that says what was given. */
export const qosSchema = z.union([z.literal(0), z.literal(1), z.literal(2)], {
  error: (issue) => `must be 0, 1 or 2, got ${JSON.stringify(issue.input)}`,
}) as z.ZodType<QoS>;

/** Compiles a `${…}` template of an action setting, turning a syntax error into an ActionConfigError at `path`. */
export function compileSetting(text: string, path: readonly (string | number)[], limits: ExpressionLimits): CompiledTemplate {
  try {
    return compileTemplate(text, limits);
  } catch (err) {
    if (err instanceof ExpressionError) throw new ActionConfigError(err.message, path, 'SB_RULE_EXPRESSION', err.position);
    throw err;
  }
}
