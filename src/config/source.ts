import { readFileSync, statSync } from 'node:fs';
import { isScalar, LineCounter, parseDocument, visit, type Document, type Node } from 'yaml';
import type { z } from 'zod';
import type { ConfigIssue, ConfigIssueCode } from './issues.js';

/** Files larger than this are refused before they are read. */
export const MAX_SOURCE_BYTES = 1024 * 1024;
/** Alias expansions allowed per file; stops "billion laughs" documents. */
export const MAX_ALIAS_COUNT = 100;

export type Path = readonly (string | number)[];

/** A parsed YAML file that remembers where every value came from. */
export class YamlSource {
  private readonly lineCounter: LineCounter;

  private constructor(
    readonly file: string,
    readonly text: string,
    readonly doc: Document,
    lineCounter: LineCounter,
  ) {
    this.lineCounter = lineCounter;
  }

  /**
   * Reads and parses a file. Problems (missing, too large, YAML errors, duplicate keys) are
   * appended to `issues`; the result is undefined when the file could not be used at all.
   */
  static read(file: string, issues: ConfigIssue[]): YamlSource | undefined {
    let size: number;
    try {
      size = statSync(file).size;
    } catch {
      issues.push({ file, line: 1, col: 1, code: 'SB_CONFIG_NOT_FOUND', message: 'file not found' });
      return undefined;
    }
    if (size > MAX_SOURCE_BYTES) {
      issues.push({ file, line: 1, col: 1, code: 'SB_CONFIG_TOO_LARGE', message: `file is ${size} bytes; the limit is ${MAX_SOURCE_BYTES} (1 MiB)` });
      return undefined;
    }
    return YamlSource.parse(file, readFileSync(file, 'utf8'), issues);
  }

  /** Parses text as if read from `file` (used by tests and by `read`). */
  static parse(file: string, text: string, issues: ConfigIssue[]): YamlSource | undefined {
    const lineCounter = new LineCounter();
    const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
    const source = new YamlSource(file, text, doc, lineCounter);
    for (const e of doc.errors) {
      const { line, col } = lineCounter.linePos(e.pos[0]);
      issues.push({ file, line, col, code: 'SB_CONFIG_YAML', message: e.message.split('\n')[0]! });
    }
    return doc.errors.length > 0 ? undefined : source;
  }

  /** 1-based line and column of a character offset. */
  position(offset: number): { line: number; col: number } {
    return this.lineCounter.linePos(offset);
  }

  /** The node at `path`, or the deepest existing node on the way to it. */
  nodeAt(path: Path): Node | undefined {
    for (let n = path.length; n >= 0; n--) {
      const node = this.doc.getIn(path.slice(0, n), true) as Node | undefined;
      if (node && typeof node === 'object' && 'range' in node && node.range) return node;
    }
    return undefined;
  }

  /** Where the value at `path` starts (or its nearest existing parent). */
  positionOf(path: Path): { line: number; col: number } {
    const node = this.nodeAt(path);
    return node?.range ? this.position(node.range[0]) : { line: 1, col: 1 };
  }

  /** Where the key `key` of the map at `path` is written, falling back to the map itself. */
  keyPositionOf(path: Path, key: string): { line: number; col: number } {
    const map = this.doc.getIn(path, true) as { items?: { key: Node & { value?: unknown } }[] } | undefined;
    const pair = map?.items?.find((item) => isScalar(item.key) && item.key.value === key);
    return pair?.key?.range ? this.position(pair.key.range[0]) : this.positionOf(path);
  }

  /** An issue located at `path`. */
  issue(path: Path, code: ConfigIssueCode, message: string, hint?: string): ConfigIssue {
    const { line, col } = this.positionOf(path);
    return hint === undefined ? { file: this.file, line, col, code, message } : { file: this.file, line, col, code, message, hint };
  }

  /**
   * Replaces `${env:NAME}` in every string value with the variable's value. A variable that
   * is not set is an issue naming it, at the string that uses it. Other `${…}` (rule
   * templates) are left alone.
   */
  substituteEnv(env: NodeJS.ProcessEnv, issues: ConfigIssue[]): void {
    visit(this.doc, {
      Scalar: (_key, node) => {
        if (typeof node.value !== 'string' || !node.value.includes('${env:')) return;
        node.value = node.value.replace(/\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => {
          const value = env[name];
          if (value === undefined) {
            const { line, col } = node.range ? this.position(node.range[0]) : { line: 1, col: 1 };
            issues.push({ file: this.file, line, col, code: 'SB_CONFIG_ENV', message: `environment variable ${name} is not set`, hint: `export ${name}=… before starting signalbox` });
            return '';
          }
          return value;
        });
      },
    });
  }

  /** The document as plain data, with aliases capped; undefined (and an issue) when over the cap. */
  toData(issues: ConfigIssue[]): unknown {
    try {
      return this.doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }) ?? {};
    } catch (err) {
      issues.push({ file: this.file, line: 1, col: 1, code: 'SB_CONFIG_YAML', message: (err as Error).message });
      return undefined;
    }
  }

  /**
   * Validates `data` with a zod schema. Every zod issue becomes a located ConfigIssue; an
   * unknown key is reported where the key is written.
   */
  validate<S extends z.ZodType>(schema: S, data: unknown, issues: ConfigIssue[], basePath: Path = [], code: ConfigIssueCode = 'SB_CONFIG_SCHEMA'): z.output<S> | undefined {
    const result = schema.safeParse(data);
    if (result.success) return result.data;
    for (const zi of result.error.issues) {
      const path = [...basePath, ...(zi.path as (string | number)[])];
      if (zi.code === 'unrecognized_keys') {
        for (const key of zi.keys) {
          const { line, col } = this.keyPositionOf(path, key);
          issues.push({ file: this.file, line, col, code, message: `${describePath(path)}unknown key '${key}'` });
        }
        continue;
      }
      issues.push(this.issue(path, code, `${describePath(path)}${zi.message}`));
    }
    return undefined;
  }
}

function describePath(path: Path): string {
  if (path.length === 0) return '';
  return `'${path.map((p) => (typeof p === 'number' ? `[${p}]` : p)).join('.').replace(/\.\[/g, '[')}': `;
}
