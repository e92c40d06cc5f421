import { z } from 'zod';

/** Rule ids: letters, digits and `_ . : -`, starting with a letter or digit. */
export const RULE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

const oneKeyObject = (what: string) =>
  z.record(z.string(), z.unknown()).refine((o) => Object.keys(o).length === 1, {
    error: `each ${what} is an object with exactly one key`,
  });

export const ruleSchema = z
  .object({
    id: z.string().regex(RULE_ID_PATTERN, { error: 'must be 1-128 letters, digits or _ . : - and start with a letter or digit' }).describe('Unique id across all rule files.'),
    description: z.string().optional().describe('Free text for humans.'),
    enabled: z.boolean().default(true).describe('A disabled rule is loaded and checked but never runs. Default true.'),
    on: z.union([z.string(), z.array(z.string()).min(1)]).describe('MQTT topic filter, or a list of them.'),
    when: z.string().optional().describe('JSONata predicate; the rule is skipped for messages where it is false. Runs first.'),
    transform: z.string().optional().describe('JSONata; its result is the new payload. Runs after `when`.'),
    steps: z
      .array(oneKeyObject('step'))
      .optional()
      .describe('Ordered steps after `when` and `transform`: `- when: expr`, `- transform: expr`.'),
    to: z.array(oneKeyObject('output')).min(1).describe('Outputs, in order: `- republish: {...}`, `- history: {}`, ...'),
    allowLoop: z.boolean().default(false).describe('Allow republishing onto a topic this rule\'s own filters match. Default false.'),
  })
  .strict();

export type RuleSpec = z.output<typeof ruleSchema>;

const publishSchema = z
  .object({
    topic: z.string().min(1),
    payload: z.unknown().optional().describe('Objects, arrays, numbers and booleans are sent as JSON; strings as they are.'),
    qos: z.union([z.literal(0), z.literal(1), z.literal(2)]).default(0),
    retain: z.boolean().default(false),
    clientId: z.string().default('test-client'),
    properties: z.record(z.string(), z.unknown()).optional(),
  })
  .strict();

const expectationSchema = z
  .record(
    z.string(),
    z
      .object({
        topic: z.string().optional(),
        payload: z.unknown().optional(),
        qos: z.union([z.literal(0), z.literal(1), z.literal(2)]).optional(),
        retain: z.boolean().optional(),
        count: z.number().int().min(0).optional(),
        rule: z.string().optional(),
      })
      .strict(),
  )
  .refine((o) => Object.keys(o).length === 1, { error: 'each expectation is `- <output>: { topic, payload, qos, retain, count }`' });

export const ruleTestSchema = z
  .object({
    name: z.string().min(1),
    publish: z.union([publishSchema, z.array(publishSchema).min(1)]),
    expect: z.union([z.literal('nothing'), z.array(expectationSchema)]),
  })
  .strict();

export type RuleTestSpec = z.output<typeof ruleTestSchema>;

/** A rule file: `rules:` and, optionally, `tests:` run by `signalbox test`. */
export const ruleFileSchema = z
  .object({
    rules: z.array(z.unknown()).default([]),
    tests: z.array(z.unknown()).default([]),
  })
  .strict();
