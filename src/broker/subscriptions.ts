import { TopicTrie } from '../topics/trie.js';
import type { Session, Subscription } from './session.js';
import type { Message, QoS } from './types.js';

/** The members of one shared subscription group on one filter; each message goes to one of them. */
class SharedGroup {
  readonly members: Subscription[] = [];
  private next = 0;

  /** Round robin, preferring members that are connected right now. */
  pick(): Subscription | undefined {
    const n = this.members.length;
    for (let i = 0; i < n; i++) {
      const sub = this.members[(this.next + i) % n]!;
      if (sub.session.sender) {
        this.next = (this.next + i + 1) % n;
        return sub;
      }
    }
    // Nobody online: queue on the next member in turn so persistent members still share the load.
    if (n === 0) return undefined;
    const sub = this.members[this.next % n]!;
    this.next = (this.next + 1) % n;
    return sub;
  }
}

type Entry = Subscription | SharedGroup;

/**
 * Every subscription of every session, in one topic trie, and the fan-out of a message to
 * the sessions that should get it: one copy per session at the highest matching QoS with all
 * matching subscription identifiers [MQTT-3.3.4-2, MQTT-3.3.4-3], plus one copy per shared
 * group [MQTT-4.8.2-3].
 */
export class SubscriptionIndex {
  private readonly trie = new TopicTrie<Entry>();
  private readonly groups = new Map<string, SharedGroup>();
  // Hot path: routing reuses these fields instead of allocating a Map or closure per message.
  private gen = 0;
  private origin = '';
  private readonly targets: Session[] = [];
  private readonly shared: Subscription[] = [];
  private readonly visit = (entry: Entry): void => {
    if (entry instanceof SharedGroup) {
      const sub = entry.pick();
      if (sub) this.shared.push(sub);
      return;
    }
    const s = entry.session;
    if (entry.noLocal && s.clientId === this.origin) return; // [MQTT-3.8.3-3]
    if (s.routeGen !== this.gen) {
      s.routeGen = this.gen;
      s.routeQos = entry.qos;
      s.routeRetainAsPublished = entry.retainAsPublished;
      s.routeSubIds = entry.subscriptionId === undefined ? undefined : [entry.subscriptionId];
      this.targets.push(s);
      return;
    }
    if (entry.qos > s.routeQos) s.routeQos = entry.qos;
    if (entry.retainAsPublished) s.routeRetainAsPublished = true;
    if (entry.subscriptionId !== undefined) (s.routeSubIds ??= []).push(entry.subscriptionId);
  };

  add(sub: Subscription): void {
    if (sub.group === undefined) {
      this.trie.add(sub.topicFilter, sub);
      return;
    }
    const key = `${sub.group}\u0000${sub.topicFilter}`;
    let group = this.groups.get(key);
    if (!group) {
      group = new SharedGroup();
      this.groups.set(key, group);
      this.trie.add(sub.topicFilter, group);
    }
    group.members.push(sub);
  }

  remove(sub: Subscription): void {
    if (sub.group === undefined) {
      this.trie.delete(sub.topicFilter, sub);
      return;
    }
    const key = `${sub.group}\u0000${sub.topicFilter}`;
    const group = this.groups.get(key);
    if (!group) return;
    const i = group.members.indexOf(sub);
    if (i >= 0) group.members.splice(i, 1);
    if (group.members.length === 0) {
      this.groups.delete(key);
      this.trie.delete(sub.topicFilter, group);
    }
  }

  /** Delivers `message` to every session with a matching subscription. Returns how many got it. */
  route(message: Message): number {
    this.gen = (this.gen + 1) | 0;
    this.origin = message.clientId;
    this.targets.length = 0;
    this.shared.length = 0;
    this.trie.match(message.topic, this.visit);
    const targets = this.targets;
    for (let i = 0; i < targets.length; i++) {
      const s = targets[i]!;
      const qos = (message.qos < s.routeQos ? message.qos : s.routeQos) as QoS;
      // [MQTT-3.3.1-12] live messages go out with RETAIN 0 unless Retain As Published [MQTT-3.3.1-13].
      s.deliver({ message, qos, retain: s.routeRetainAsPublished && message.retain, subscriptionIds: s.routeSubIds });
    }
    const shared = this.shared;
    for (let i = 0; i < shared.length; i++) {
      const sub = shared[i]!;
      const qos = (message.qos < sub.qos ? message.qos : sub.qos) as QoS;
      sub.session.deliver({
        message,
        qos,
        retain: sub.retainAsPublished && message.retain,
        subscriptionIds: sub.subscriptionId === undefined ? undefined : [sub.subscriptionId],
      });
    }
    const n = targets.length + shared.length;
    targets.length = 0;
    shared.length = 0;
    return n;
  }
}
