/**
 * A subscription index: topic filters in a tree of levels, so that one topic is matched
 * against every stored filter by walking only the branches its levels can reach.
 */

/** One level of the tree. Fields are all declared up front so every node has one shape. */
class Node<T> {
  /** Literal child levels by name ('' included: empty levels are levels). */
  children: Map<string, Node<T>> | undefined = undefined;
  /** The '+' child, kept apart so matching never looks it up by string. */
  plus: Node<T> | undefined = undefined;
  /** The '#' child; always a leaf in a valid filter. */
  hash: Node<T> | undefined = undefined;
  /** Values subscribed with the filter that ends at this node; undefined when none. */
  values: Set<T> | undefined = undefined;
  /** The filter that ends at this node, kept so `match` can report it without rebuilding it. */
  filter = '';

  isEmpty(): boolean {
    return this.values === undefined && this.plus === undefined && this.hash === undefined &&
      (this.children === undefined || this.children.size === 0);
  }
}

const DOLLAR = 0x24; // '$'

/**
 * Topic filters mapped to sets of values (for the broker: subscriptions; for the rule router:
 * rules), matched against topic names with MQTT wildcard semantics.
 *
 * Filters must already be valid per `validateTopicFilter` (shared filters: store the inner
 * filter). `add` and `delete` cost O(levels of the filter); `match` costs O(levels of the
 * topic × matching branches), independent of how many filters are stored. All walks are
 * iterative, so a filter or topic with tens of thousands of levels cannot exhaust the stack.
 */
export class TopicTrie<T> {
  readonly #root = new Node<T>();
  #size = 0;
  #nodeCount = 1;

  /** Number of distinct (filter, value) pairs stored. */
  get size(): number {
    return this.#size;
  }

  /**
   * Number of tree nodes, root included. For tests and metrics: it returns to 1 once every
   * pair is deleted, which shows that churn does not leak memory.
   */
  get nodeCount(): number {
    return this.#nodeCount;
  }

  /**
   * Stores `value` under `filter`. Adding the same value under the same filter again does
   * nothing: values are kept in a Set per filter, compared with SameValueZero.
   */
  add(filter: string, value: T): void {
    const levels = filter.split('/');
    let node = this.#root;
    for (let i = 0; i < levels.length; i++) {
      const level = levels[i];
      let next: Node<T> | undefined;
      if (level === '+') {
        next = node.plus ??= this.#newNode();
      } else if (level === '#') {
        next = node.hash ??= this.#newNode();
      } else {
        node.children ??= new Map();
        next = node.children.get(level);
        if (next === undefined) {
          next = this.#newNode();
          node.children.set(level, next);
        }
      }
      node = next;
    }
    if (node.values === undefined) {
      node.values = new Set();
      node.filter = filter;
    }
    if (!node.values.has(value)) {
      node.values.add(value);
      this.#size++;
    }
  }

  /**
   * Removes `value` from `filter`. Returns false when that pair was not stored. Nodes left
   * with no values and no children are removed, so memory follows the live subscriptions.
   */
  delete(filter: string, value: T): boolean {
    const levels = filter.split('/');
    const path: Node<T>[] = [this.#root];
    let node: Node<T> | undefined = this.#root;
    for (let i = 0; i < levels.length && node !== undefined; i++) {
      const level = levels[i];
      node = level === '+' ? node.plus : level === '#' ? node.hash : node.children?.get(level);
      if (node !== undefined) path.push(node);
    }
    if (node === undefined || node.values === undefined || !node.values.delete(value)) return false;
    this.#size--;
    if (node.values.size === 0) {
      node.values = undefined;
      node.filter = '';
    }
    // Prune from the leaf up: path[i] is reached from path[i - 1] through levels[i - 1].
    for (let i = path.length - 1; i > 0 && path[i].isEmpty(); i--) {
      const parent = path[i - 1];
      const level = levels[i - 1];
      if (level === '+') parent.plus = undefined;
      else if (level === '#') parent.hash = undefined;
      else {
        parent.children!.delete(level);
        if (parent.children!.size === 0) parent.children = undefined;
      }
      this.#nodeCount--;
    }
    return true;
  }

  /**
   * Calls `visit(value, filter)` once for every stored (filter, value) pair whose filter
   * matches `topic`, in no particular order. A value stored under two matching filters is
   * visited twice; the caller dedupes (and, for the broker, picks the highest QoS). Topics
   * starting with `$` are not matched by filters whose first level is `+` or `#`
   * [MQTT-4.7.2-1]. `visit` must not add or delete while the walk runs.
   *
   * Hot path, once per PUBLISH: the topic is split once, then the tree is walked level by
   * level with two reused frontier arrays; no closures, no regexes, no recursion.
   */
  match(topic: string, visit: (value: T, filter: string) => void): void {
    const levels = topic.split('/');
    const last = levels.length - 1;
    let frontier: Node<T>[] = [this.#root];
    let next: Node<T>[] = [];
    // [MQTT-4.7.2-1] at the first level of a '$' topic, wildcards are not followed
    let wildcards = topic.charCodeAt(0) !== DOLLAR;

    for (let i = 0; i <= last && frontier.length > 0; i++) {
      const level = levels[i];
      for (let j = 0; j < frontier.length; j++) {
        const node = frontier[j];
        if (wildcards) {
          // [MQTT-4.7.1-2] '#' matches this level and everything below it
          if (node.hash !== undefined) visitAll(node.hash, visit);
          if (node.plus !== undefined) next.push(node.plus);
        }
        const child = node.children?.get(level);
        if (child !== undefined) next.push(child);
      }
      wildcards = true;
      const done = frontier;
      frontier = next;
      next = done;
      next.length = 0;
    }

    // The topic is used up: filters ending here match, and so does a trailing '#', which
    // also matches its parent level ('a/#' matches 'a').
    for (let j = 0; j < frontier.length; j++) {
      const node = frontier[j];
      if (node.values !== undefined) visitAll(node, visit);
      if (node.hash !== undefined) visitAll(node.hash, visit);
    }
  }

  /** Every filter that has at least one value, in no particular order. For debugging. */
  *filters(): IterableIterator<string> {
    const stack: Node<T>[] = [this.#root];
    while (stack.length > 0) {
      const node = stack.pop()!;
      if (node.values !== undefined) yield node.filter;
      if (node.children !== undefined) for (const child of node.children.values()) stack.push(child);
      if (node.plus !== undefined) stack.push(node.plus);
      if (node.hash !== undefined) stack.push(node.hash);
    }
  }

  #newNode(): Node<T> {
    this.#nodeCount++;
    return new Node<T>();
  }
}

function visitAll<T>(node: Node<T>, visit: (value: T, filter: string) => void): void {
  if (node.values === undefined) return;
  const filter = node.filter;
  for (const value of node.values) visit(value, filter);
}
