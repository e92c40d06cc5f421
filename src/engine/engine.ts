import path from 'node:path';
import type Database from 'better-sqlite3';
import { createBroker, type Broker } from '../broker/broker.js';
import { systemClock, type Clock } from '../clock.js';
import type { Config, Project } from '../config/load.js';
import { LastValueCache } from '../http/last-values.js';
import type { Logger } from '../log.js';
import type { OutputRegistry } from '../outputs/registry.js';
import type { CompiledRule } from '../rules/compile.js';
import { WriteBatcher } from '../storage/batcher.js';
import { SqliteBrokerPersistence } from '../storage/broker-state.js';
import { Checkpointer } from '../storage/checkpointer.js';
import { openDatabase } from '../storage/database.js';
import { DeadLetterStore } from '../storage/dead-letters.js';
import { HistoryStore } from '../storage/history.js';
import { OutboxStore } from '../storage/outbox.js';
import type { ConnectorRegistry } from '../outputs/connector.js';
import { createConnectorRegistry } from '../outputs/connectors.js';
import { RemoteOutputs } from './outputs.js';
import { RuleProcessor } from './processor.js';
import { Redriver } from './redrive.js';

/** How often history retention runs. */
export const RETENTION_INTERVAL_MS = 60_000;

export interface EngineDeps {
  log: Logger;
  registry: OutputRegistry;
  /** Types of named outputs; must cover every `outputs.<name>.type` in the config. */
  connectors?: ConnectorRegistry;
  clock?: Clock;
}

/** A running signalbox: the broker, its storage and the rules, wired together. */
export interface Engine {
  readonly broker: Broker;
  /** The open SQLite database (for status, tests and tools; owned by the engine). */
  readonly db: Database.Database;
  readonly processor: RuleProcessor;
  readonly history: HistoryStore;
  readonly deadLetters: DeadLetterStore;
  /** The named remote outputs and their durable outboxes. */
  readonly outputs: RemoteOutputs;
  /** The newest stored message per topic, for the HTTP API; undefined when `http:` is off. */
  readonly lastValues: LastValueCache | undefined;
  /** Replaces the running rules at once (after they were validated). */
  setRules(rules: readonly CompiledRule[]): void;
  /**
   * Applies a reloaded project: the rules at once, and the outputs that changed (others,
   * bridges included, keep running). Broker settings need a restart.
   */
  reload(project: Project): Promise<void>;
  /** Stops the broker, finishes rule work, flushes history, closes the database. */
  close(): Promise<void>;
}

/** The broker settings a reload cannot apply, as text to compare (the users file and the ACL it can). */
function restartSettings(broker: Config['broker']): string {
  return JSON.stringify({ ...broker, acl: undefined, auth: { ...broker.auth, users: undefined } });
}

/**
 * Wires signalbox together: opens the database, builds the rule processor and the broker
 * with the processor as its publish hook. Nothing listens until `engine.broker.listen()`.
 * Wiring only: behaviour lives in the parts.
 */
export function createEngine(config: Config, rules: readonly CompiledRule[], deps: EngineDeps): Engine {
  const { log, registry } = deps;
  const clock = deps.clock ?? systemClock;
  const db: Database.Database = openDatabase(config.storage.path, { durability: config.storage.durability, log });
  // WAL checkpoints (page copies and fsyncs) run on their own thread, not between commits.
  const checkpointer = Checkpointer.start(db, { durability: config.storage.durability, log });
  // One group-commit batcher for everything a message causes: broker state, history, ...
  const batcher = new WriteBatcher(db, { clock, log });
  // Fed after each history commit; only kept when the HTTP API (its reader) is on.
  const lastValues = config.http ? new LastValueCache(config.http.lastValues) : undefined;
  const history = new HistoryStore(db, { clock, log, batcher, onStored: lastValues?.storedRows });
  const persistence = new SqliteBrokerPersistence(db, batcher);
  const deadLetters = new DeadLetterStore(db, { clock, log });
  // The broker, the processor and the outputs need each other: the processor republishes
  // and bridges publish in through the broker; the broker hands every message to the processor.
  let broker: Broker | undefined;
  const outputs = new RemoteOutputs(config.outputs, deps.connectors ?? createConnectorRegistry(), {
    store: new OutboxStore(db, batcher, log),
    deadLetters,
    clock,
    log,
    publishLocal: (input) => broker!.publish(input),
    baseDir: config.file ? path.dirname(path.resolve(config.file)) : process.cwd(),
  });

  const processor = new RuleProcessor(rules, config.engine.maxHops, {
    registry,
    deadLetters,
    history,
    outbox: outputs,
    log,
    publish: (input) => broker!.publish(input),
  });
  broker = createBroker(config.broker, { log, clock, onPublish: processor.onPublish, persistence, users: config.users });
  history.startRetention(config.history.retention, RETENTION_INTERVAL_MS, config.history.maxRows);
  if (lastValues) void lastValues.seed(history, log);
  outputs.start();
  const redriver = new Redriver({ deadLetters, processor, outputs, clock, log });
  redriver.start();
  const b = broker;
  return {
    broker: b,
    db,
    processor,
    history,
    deadLetters,
    outputs,
    lastValues,
    setRules: (next) => processor.setRules(next),
    async reload(project) {
      processor.setRules(project.compiled.rules);
      // The users file and the ACL apply at once; other broker settings need a restart.
      b.setAccess(project.config.users, project.config.broker.acl);
      await outputs.reconcile(project.config.outputs);
      if (restartSettings(project.config.broker) !== restartSettings(config.broker)) {
        log.warn('broker settings changed: restart signalbox to apply them');
      }
    },
    async close() {
      lastValues?.close();
      await b.close();
      await redriver.stop();
      await processor.close();
      await outputs.close();
      history.stopRetention();
      await history.close();
      await batcher.close();
      await checkpointer?.close();
      db.close();
    },
  };
}
