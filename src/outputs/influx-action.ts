import { z } from 'zod';
import { withPayload, type RuleInput } from '../engine/message.js';
import { compileExpression, ExpressionError, FALLBACK, type CompiledExpression, type ExpressionLimits } from '../rules/expression.js';
import type { CompiledTemplate } from '../rules/template.js';
import { compileSetting } from './common.js';
import { badName, FIELD_TYPES, PointError, toFieldValue, toTagValue, toTime, type FieldType, type FieldValue, type InfluxPoint } from './influx-points.js';
import { remoteActionFields, remoteActionType, remoteEffect } from './remote.js';
import { ActionConfigError, type CompiledAction, type Effect, type OutputType } from './types.js';

/** A JSONata expression, or a YAML number/boolean taken as that constant. */
const expressionText = z
  .union([z.string().min(1), z.number(), z.boolean()])
  .transform((v) => (typeof v === 'string' ? v : JSON.stringify(v)));

const fieldSpec = z.union([
  expressionText,
  z
    .object({
      value: expressionText.describe('JSONata expression for the value.'),
      type: z.enum(FIELD_TYPES).optional().describe('float, integer, boolean or string. Default: from the value (numbers are floats).'),
    })
    .strict(),
]);

function checkKeys(record: Record<string, unknown> | string | undefined, what: 'tags' | 'fields', ctx: z.RefinementCtx): void {
  if (record === undefined || typeof record === 'string') return;
  for (const key of Object.keys(record)) {
    const bad = badName(key, 'key');
    if (bad) ctx.addIssue({ code: 'custom', path: [what, key], message: `${what === 'tags' ? 'tag' : 'field'} key ${bad}` });
  }
}

/** Settings of the `influx` rule action; the `.describe()` texts are its documentation. */
export const influxActionSchema = z
  .object({
    output: remoteActionFields.output,
    measurement: z
      .string()
      .min(1)
      .optional()
      .describe('Measurement name; a `${…}` template. Default: the message\'s topic.'),
    tags: z
      .union([z.string().min(1), z.record(z.string(), expressionText)])
      .optional()
      .describe('Tag key → JSONata expression (missing or empty values leave the tag out), or one expression giving an object of tags. Default: no tags.'),
    fields: z
      .union([z.string().min(1), z.record(z.string(), fieldSpec)])
      .optional()
      .describe('Field key → JSONata expression or { value, type }, or one expression giving an object of fields. Default: the payload (an object\'s number, boolean and string members; a lone number, boolean or string as field "value").'),
    timestamp: z.string().min(1).optional().describe('JSONata expression: ms since the epoch, or an RFC 3339 date. Default: when signalbox received the message.'),
  })
  .strict()
  .superRefine((s, ctx) => {
    checkKeys(s.tags, 'tags', ctx);
    checkKeys(s.fields, 'fields', ctx);
    if (s.measurement !== undefined && !s.measurement.includes('${')) {
      const bad = badName(s.measurement, 'measurement');
      if (bad) ctx.addIssue({ code: 'custom', path: ['measurement'], message: `measurement ${bad}` });
    }
  });

/** The `influx` action's settings after validation. */
export type InfluxActionSettings = z.output<typeof influxActionSchema>;

/** Checks `output:` names an influx output, and queues effects in its outbox; planning is ours. */
const remote = remoteActionType({
  name: 'influx',
  connectorType: 'influx',
  description: 'Write time-series points to an InfluxDB output.',
  schema: z.object({ output: remoteActionFields.output }).strict(),
});

interface FieldSlot {
  readonly key: string;
  readonly slot: number;
  readonly type: FieldType | undefined;
}

/** What one action computes per message: expressions by slot, and which slot feeds what. */
interface Plan {
  readonly expressions: CompiledExpression[];
  readonly measurement: CompiledTemplate | undefined;
  /** Named tags, or the slot of one expression giving all tags. */
  readonly tags: ReadonlyArray<{ key: string; slot: number }> | number | undefined;
  /** Named fields, the slot of one expression giving all fields, or undefined for the payload. */
  readonly fields: readonly FieldSlot[] | number | undefined;
  readonly timestamp: number | undefined;
}

function compilePlan(s: InfluxActionSettings, limits: ExpressionLimits): Plan {
  const expressions: CompiledExpression[] = [];
  const add = (source: string, path: (string | number)[]): number => {
    try {
      expressions.push(compileExpression(source, limits));
    } catch (err) {
      if (err instanceof ExpressionError) throw new ActionConfigError(err.message, path, 'SB_RULE_EXPRESSION', err.position);
      throw err;
    }
    return expressions.length - 1;
  };
  const tags = typeof s.tags === 'string' ? add(s.tags, ['tags']) : s.tags && Object.entries(s.tags).map(([key, source]) => ({ key, slot: add(source, ['tags', key]) }));
  const fields =
    typeof s.fields === 'string'
      ? add(s.fields, ['fields'])
      : s.fields &&
        Object.entries(s.fields).map(([key, spec]): FieldSlot => (typeof spec === 'string' ? { key, slot: add(spec, ['fields', key]), type: undefined } : { key, slot: add(spec.value, ['fields', key, 'value']), type: spec.type }));
  const timestamp = s.timestamp === undefined ? undefined : add(s.timestamp, ['timestamp']);
  const measurement = s.measurement === undefined ? undefined : compileSetting(s.measurement, ['measurement'], limits);
  return { expressions, measurement, tags, fields, timestamp };
}

/** Every expression's value for `doc` without a promise, or FALLBACK when one needs JSONata's interpreter. */
function valuesSync(plan: Plan, doc: RuleInput): unknown[] | typeof FALLBACK {
  const out = new Array<unknown>(plan.expressions.length);
  for (let i = 0; i < out.length; i++) {
    const e = plan.expressions[i]!;
    if (!e.evaluateSync) return FALLBACK;
    const v = e.evaluateSync(doc);
    if (v === FALLBACK) return FALLBACK;
    out[i] = v;
  }
  return out;
}

/** Fields from one value holding them all: an object's scalar members, or a lone scalar as `value`. */
function objectFields(value: unknown, ruleId: string, setting: string, into: Record<string, FieldValue>): void {
  if (value === undefined || value === null) return;
  if (typeof value !== 'object') {
    const v = toFieldValue(value, undefined, ruleId, setting);
    if (v !== undefined) into['value'] = v;
    return;
  }
  if (Array.isArray(value)) throw new PointError(ruleId, setting, 'is an array; give an object of fields');
  for (const [key, member] of Object.entries(value)) {
    // Nested objects and arrays have no line protocol form; they are left out, as documented.
    if (member === null || typeof member === 'object') continue;
    const bad = badName(key, 'key');
    if (bad) throw new PointError(ruleId, `${setting}.${key}`, `field key ${bad}`);
    const v = toFieldValue(member, undefined, ruleId, `${setting}.${key}`);
    if (v !== undefined) into[key] = v;
  }
}

/** Builds one point from the expressions' values; throws a PointError naming the setting at fault. */
function assemble(plan: Plan, values: unknown[], measurement: string, doc: RuleInput, ruleId: string): InfluxPoint {
  const bad = badName(measurement, 'measurement');
  if (bad) throw new PointError(ruleId, 'measurement', bad);
  let tags: Record<string, string> | undefined;
  if (typeof plan.tags === 'number') {
    const all = values[plan.tags];
    if (all !== undefined && all !== null) {
      if (typeof all !== 'object' || Array.isArray(all)) throw new PointError(ruleId, 'tags', 'must give an object of tags');
      for (const [key, value] of Object.entries(all)) {
        const badKey = badName(key, 'key');
        if (badKey) throw new PointError(ruleId, `tags.${key}`, `tag key ${badKey}`);
        const v = toTagValue(value, ruleId, `tags.${key}`);
        if (v !== undefined) (tags ??= {})[key] = v;
      }
    }
  } else if (plan.tags !== undefined) {
    for (const { key, slot } of plan.tags) {
      const v = toTagValue(values[slot], ruleId, `tags.${key}`);
      if (v !== undefined) (tags ??= {})[key] = v;
    }
  }
  const fields: Record<string, FieldValue> = {};
  let integers: string[] | undefined;
  let any = false;
  if (typeof plan.fields === 'number') {
    objectFields(values[plan.fields], ruleId, 'fields', fields);
  } else if (plan.fields === undefined) {
    objectFields(doc.payload, ruleId, 'fields (the payload)', fields);
  } else {
    for (const { key, slot, type } of plan.fields) {
      const v = toFieldValue(values[slot], type, ruleId, `fields.${key}`);
      if (v === undefined) continue;
      fields[key] = v;
      any = true;
      if (type === 'integer') (integers ??= []).push(key);
    }
    if (!any) throw new PointError(ruleId, 'fields', `none of ${plan.fields.map((f) => f.key).join(', ')} has a value in this message`);
  }
  if (!any) {
    for (const _ in fields) {
      any = true;
      break;
    }
    if (!any) throw new PointError(ruleId, 'fields', `${typeof plan.fields === 'number' ? 'the fields expression' : 'the payload'} gave no number, boolean or string to write`);
  }
  const time = plan.timestamp === undefined ? doc.timestamp : toTime(values[plan.timestamp], ruleId);
  const point: { -readonly [K in keyof InfluxPoint]: InfluxPoint[K] } = { measurement, fields, time };
  if (tags) point.tags = tags;
  if (integers) point.integers = integers;
  return point;
}

/** The documents points are built from: one per element when the payload is an array. */
function documents(input: RuleInput): RuleInput[] {
  return Array.isArray(input.payload) ? input.payload.map((p) => withPayload(input, p)) : [input];
}

/** Points for every document, synchronously, or FALLBACK when some expression needs JSONata. */
function pointsSync(plan: Plan, docs: RuleInput[], ruleId: string): InfluxPoint[] | typeof FALLBACK {
  const points: InfluxPoint[] = [];
  for (const doc of docs) {
    const values = valuesSync(plan, doc);
    if (values === FALLBACK) return FALLBACK;
    let measurement: string | typeof FALLBACK = doc.topic;
    if (plan.measurement) measurement = plan.measurement.renderSync(doc);
    if (measurement === FALLBACK) return FALLBACK;
    points.push(assemble(plan, values, measurement, doc, ruleId));
  }
  return points;
}

async function pointsAsync(plan: Plan, docs: RuleInput[], ruleId: string): Promise<InfluxPoint[]> {
  const points: InfluxPoint[] = [];
  for (const doc of docs) {
    const values = await Promise.all(plan.expressions.map((e) => e.evaluate(doc)));
    const measurement = plan.measurement ? await plan.measurement.render(doc) : doc.topic;
    points.push(assemble(plan, values, measurement, doc, ruleId));
  }
  return points;
}

/**
 * `- influx: { output: tsdb, measurement: …, tags: {…}, fields: {…}, timestamp: … }` in a
 * rule's `to:`. Computes the points when the rule runs (a point that cannot be built throws
 * a PointError: the message goes to the dead letters for the rule) and queues them, as the
 * effect's `data`, in the named influx output's outbox.
 */
export const influxAction: OutputType<typeof influxActionSchema> = {
  name: 'influx',
  description: 'Write time-series points to an InfluxDB (or VictoriaMetrics) output.',
  schema: influxActionSchema,
  compile(settings, ctx): CompiledAction {
    remote.compile({ output: settings.output }, ctx);
    const plan = compilePlan(settings, ctx.limits);
    const output = settings.output;
    const effect = (input: RuleInput, ruleId: string, points: InfluxPoint[]): Effect[] =>
      points.length === 0
        ? []
        : [remoteEffect('influx', output, ruleId, input, input.topic, input.qos, input.retain, points)];
    return {
      type: 'influx',
      // Hot path: stays synchronous (no promise) while every expression is in the fast path.
      plan(input: RuleInput, ruleId: string): Effect[] | Promise<Effect[]> {
        const docs = documents(input);
        const points = pointsSync(plan, docs, ruleId);
        if (points !== FALLBACK) return effect(input, ruleId, points);
        return pointsAsync(plan, docs, ruleId).then((p) => effect(input, ruleId, p));
      },
    };
  },
  createSink: (deps) => remote.createSink(deps),
};
