import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { checkAuthConfig } from '../broker/auth-config.js';
import type { UserTable } from '../broker/auth-users.js';
import type { NamedOutput } from '../engine/outputs.js';
import { outboxSchema, type ConnectorRegistry } from '../outputs/connector.js';
import { createConnectorRegistry } from '../outputs/connectors.js';
import { bridgeOutRules, type BridgeSettings } from '../outputs/bridge.js';
import type { OutputRegistry } from '../outputs/registry.js';
import { bindInlineWebhooks } from '../outputs/webhook-action.js';
import { compileRuleFiles, type CompiledRules } from '../rules/compile.js';
import type { ExpressionLimits } from '../rules/expression.js';
import { tlsFileProblems } from '../broker/listeners/tls-options.js';
import { resolveListenerPaths, type ListenerConfig } from './broker.js';
import { ConfigError, sortIssues, type ConfigIssue } from './issues.js';
import { configSchema, type ConfigFile } from './schema.js';
import { YamlSource } from './source.js';

/** The validated configuration, with paths resolved against the config file's folder. */
export interface Config extends Omit<ConfigFile, 'outputs'> {
  /** Named remote outputs, each validated against its connector type. */
  readonly outputs: Readonly<Record<string, NamedOutput>>;
  /** The config file read; undefined when running on defaults. */
  readonly file: string | undefined;
  /** The rule folder, absolute. */
  readonly rulesDir: string;
  /** Expression guardrails from `engine:`. */
  readonly limits: ExpressionLimits;
  /** The users of `broker.auth.users` (read at load and at every reload); undefined without one. */
  readonly users: UserTable | undefined;
}

export interface Project {
  readonly config: Config;
  readonly compiled: CompiledRules;
  /** The rule files read, in order. */
  readonly ruleFiles: readonly string[];
}

export interface LoadOptions {
  /** The config file was named explicitly (a missing one is then an error). */
  explicit: boolean;
  env?: NodeJS.ProcessEnv;
  registry: OutputRegistry;
  /** Only these rule files instead of the rules folder (for `signalbox test FILES`). */
  ruleFiles?: readonly string[];
  /** Types of named outputs (`outputs.<name>.type`). Default: the built-in ones. */
  connectors?: ConnectorRegistry;
  /** Leave `outputs:` unchecked (tools that only read storage need not know every output type). */
  skipOutputs?: boolean;
}

/**
 * Loads signalbox.yaml and every rule file, validates and compiles them. Throws one
 * ConfigError carrying every problem found, each located `file:line:col`.
 */
export function loadProject(configFile: string, options: LoadOptions): Project {
  const issues: ConfigIssue[] = [];
  const config = loadConfigFile(configFile, options, issues);
  if (!config) throw new ConfigError(sortIssues(issues));
  const ruleFiles = options.ruleFiles ? options.ruleFiles.map((f) => path.resolve(f)) : listRuleFiles(config.rulesDir, config.file !== undefined, issues);
  const sources: YamlSource[] = [];
  for (const file of ruleFiles) {
    const source = YamlSource.read(path.relative(process.cwd(), file) || file, issues);
    if (!source) continue;
    source.substituteEnv(options.env ?? process.env, issues);
    sources.push(source);
  }
  const namedOutputs = new Map(Object.entries(config.outputs).map(([name, o]) => [name, o.type]));
  const outputSettings = new Map(Object.entries(config.outputs).map(([name, o]) => [name, o.settings]));
  const compiled = compileRuleFiles(sources, options.registry, { limits: config.limits, namedOutputs, outputSettings }, issues);
  // An inline webhook (`- webhook: { url: ... }`) gets an output of its own, `<rule id>.webhook.<n>`, so it has a durable outbox too.
  const inline = bindInlineWebhooks(compiled.rules, config.outputs, issues);
  compiled.rules.splice(0, compiled.rules.length, ...inline.rules);
  // A bridge's out mappings run as rules, through the same router, ordering and outbox.
  for (const [name, output] of Object.entries(config.outputs)) {
    if (output.type === 'bridge') compiled.rules.push(...bridgeOutRules(name, output.settings as BridgeSettings));
  }
  if (issues.length > 0) throw new ConfigError(sortIssues(issues));
  return { config: { ...config, outputs: { ...config.outputs, ...inline.outputs } }, compiled, ruleFiles };
}

/** Loads and validates signalbox.yaml alone (no rules). */
export function loadConfigFile(configFile: string, options: Pick<LoadOptions, 'explicit' | 'env' | 'connectors' | 'skipOutputs'>, issues: ConfigIssue[]): Config | undefined {
  let data: unknown = {};
  let source: YamlSource | undefined;
  const file = path.relative(process.cwd(), configFile) || configFile;
  if (existsSync(configFile)) {
    source = YamlSource.read(file, issues);
    if (!source) return undefined;
    source.substituteEnv(options.env ?? process.env, issues);
    data = source.toData(issues);
    if (data === undefined) return undefined;
  } else if (options.explicit) {
    issues.push({ file, line: 1, col: 1, code: 'SB_CONFIG_NOT_FOUND', message: 'config file not found', hint: 'omit --config to run on the defaults' });
    return undefined;
  }
  const parsed = source ? source.validate(configSchema, data, issues) : configSchema.parse({});
  if (!parsed) return undefined;
  const outputs = source && !options.skipOutputs ? validateOutputs(source, parsed.outputs, options.connectors ?? createConnectorRegistry(), issues) : {};
  if (!outputs) return undefined;
  const base = source ? path.dirname(path.resolve(configFile)) : process.cwd();
  const listeners = parsed.broker.listeners.map((l) => resolveListenerPaths(l, base));
  if (source && !checkListenerFiles(source, listeners, issues)) return undefined;
  const users = source ? checkAuthConfig(source, parsed.broker, base, issues) : undefined;
  if (users === false) return undefined;
  return {
    ...parsed,
    broker: { ...parsed.broker, listeners },
    outputs,
    storage: { ...parsed.storage, path: parsed.storage.path === ':memory:' ? ':memory:' : path.resolve(base, parsed.storage.path) },
    users,
    file: source ? file : undefined,
    rulesDir: path.resolve(base, parsed.rules),
    limits: {
      timeoutMs: parsed.engine.expressionTimeoutMs,
      maxDepth: parsed.engine.expressionMaxDepth,
      maxSequence: parsed.engine.expressionMaxSequence,
    },
  };
}

/**
 * Reads every TLS listener's certificate, key and CA now, so `check` reports a missing or
 * unusable file at the line that names it instead of `run` failing at start.
 */
function checkListenerFiles(source: YamlSource, listeners: readonly ListenerConfig[], issues: ConfigIssue[]): boolean {
  const before = issues.length;
  listeners.forEach((listener, i) => {
    if (listener.type !== 'mqtts' && listener.type !== 'wss') return;
    for (const problem of tlsFileProblems(listener)) {
      const code = problem.kind === 'missing' ? 'SB_CONFIG_NOT_FOUND' : 'SB_CONFIG_TLS';
      issues.push(source.issue(['broker', 'listeners', i, problem.field], code, `${listener.type} listener on port ${listener.port}: ${problem.message}`));
    }
  });
  return issues.length === before;
}

const OUTPUT_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Validates each named output against its type's schema and the common `outbox:` settings. */
function validateOutputs(source: YamlSource, raw: ConfigFile['outputs'], connectors: ConnectorRegistry, issues: ConfigIssue[]): Record<string, NamedOutput> | undefined {
  const before = issues.length;
  const outputs: Record<string, NamedOutput> = {};
  for (const [name, entry] of Object.entries(raw)) {
    const path = ['outputs', name];
    if (!OUTPUT_NAME.test(name)) {
      issues.push(source.issue(path, 'SB_CONFIG_SCHEMA', `output name "${name}" must be 1-64 letters, digits or _ . - and start with a letter or digit`));
      continue;
    }
    const type = connectors.get(entry.type);
    if (!type) {
      const known = [...connectors.keys()];
      issues.push(source.issue([...path, 'type'], 'SB_CONFIG_SCHEMA', `output "${name}": unknown type "${entry.type}"`, known.length ? `types are: ${known.join(', ')}` : 'no output types are available in this build'));
      continue;
    }
    const { type: _type, outbox, ...rest } = entry as Record<string, unknown>;
    const settings = source.validate(type.schema, rest, issues, path);
    const implied = settings !== undefined && type.outboxDefaults ? type.outboxDefaults(settings) : {};
    const outboxSettings = source.validate(outboxSchema, { ...implied, ...((outbox as object | undefined) ?? {}) }, issues, [...path, 'outbox']);
    if (settings !== undefined && outboxSettings !== undefined) outputs[name] = { type: entry.type, settings, outbox: outboxSettings };
  }
  return issues.length === before ? outputs : undefined;
}

/** The *.yaml / *.yml files of the rules folder, sorted. A missing default folder means no rules. */
function listRuleFiles(dir: string, configured: boolean, issues: ConfigIssue[]): string[] {
  if (!existsSync(dir)) {
    if (configured) issues.push({ file: path.relative(process.cwd(), dir) || dir, line: 1, col: 1, code: 'SB_CONFIG_NOT_FOUND', message: 'rules folder not found' });
    return [];
  }
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml') || f.endsWith('.yml'))
    .sort()
    .map((f) => path.join(dir, f));
}
