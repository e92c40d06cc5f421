/**
 * Topic name and topic filter validation (MQTT 3.1.1 section 4.7, MQTT 5.0 sections 4.7 and
 * 4.8.2). These run once per PUBLISH / SUBSCRIBE, so they scan the string once with
 * `charCodeAt` and allocate nothing on success. Byte-level UTF-8 well-formedness is the packet
 * parser's job; here a string is already decoded.
 */

const SLASH = 0x2f; // '/'
const PLUS = 0x2b; // '+'
const HASH = 0x23; // '#'
const NUL = 0x00;

/** Longest topic name or filter, in UTF-8 bytes: a UTF-8 string field has a two-byte length. */
export const MAX_TOPIC_BYTES = 65_535;

/** Prefix that marks an MQTT 5 shared subscription filter: `$share/{group}/{filter}`. */
export const SHARED_PREFIX = '$share/';

/** One UTF-16 code unit encodes to at most 3 UTF-8 bytes, so shorter strings need no count. */
const MAX_UNCOUNTED_LENGTH = Math.floor(MAX_TOPIC_BYTES / 3);

function tooLong(s: string): number | undefined {
  if (s.length <= MAX_UNCOUNTED_LENGTH) return undefined;
  const bytes = Buffer.byteLength(s, 'utf8');
  return bytes > MAX_TOPIC_BYTES ? bytes : undefined;
}

/**
 * Checks a topic name as it arrives in a PUBLISH packet or a will message.
 *
 * Returns a message naming what is wrong and what would be accepted, or undefined when the
 * name is valid. The caller turns a message into a protocol error (disconnect with reason
 * 0x90 "Topic Name invalid" in MQTT 5, close the connection in 3.1.1); nothing is thrown.
 */
export function validateTopicName(topic: string): string | undefined {
  // [MQTT-4.7.3-1] a topic name must be at least one character long
  if (topic.length === 0) return 'topic name must not be empty';
  for (let i = 0; i < topic.length; i++) {
    const c = topic.charCodeAt(i);
    // [MQTT-3.3.2-2] the topic name in a PUBLISH must not contain wildcard characters
    if (c === PLUS || c === HASH) {
      return `topic name must not contain the wildcard '${c === PLUS ? '+' : '#'}' (at index ${i}); wildcards are only allowed in subscription filters`;
    }
    // [MQTT-1.5.4-2] a UTF-8 encoded string must not include U+0000
    if (c === NUL) return `topic name must not contain the null character U+0000 (at index ${i})`;
  }
  // [MQTT-4.7.3-3] topic names are UTF-8 strings, so at most 65535 bytes
  const bytes = tooLong(topic);
  if (bytes !== undefined) return `topic name is ${bytes} UTF-8 bytes long; at most ${MAX_TOPIC_BYTES} are allowed`;
  return undefined;
}

/**
 * Checks a (non-shared) topic filter from a SUBSCRIBE or UNSUBSCRIBE packet, or from a rule.
 *
 * Returns a message naming what is wrong and what would be accepted, or undefined when the
 * filter is valid. A filter starting with `$share/` is rejected: pass it to
 * {@link parseSharedFilter} first, which validates the inner filter with this function. The
 * broker answers an invalid filter with reason code 0x8F "Topic Filter invalid" for that
 * subscription only.
 */
export function validateTopicFilter(filter: string): string | undefined {
  // [MQTT-4.7.3-1] a topic filter must be at least one character long
  if (filter.length === 0) return 'topic filter must not be empty';
  if (filter.startsWith(SHARED_PREFIX)) {
    return `shared subscription filter '${SHARED_PREFIX}...' is not a plain topic filter; parse it with parseSharedFilter`;
  }
  const last = filter.length - 1;
  for (let i = 0; i <= last; i++) {
    const c = filter.charCodeAt(i);
    if (c === HASH) {
      // [MQTT-4.7.1-2] '#' must occupy a whole level and be the last character of the filter
      if (i > 0 && filter.charCodeAt(i - 1) !== SLASH) {
        return `'#' must occupy a whole level (at index ${i}); write '.../#', not '...x#'`;
      }
      if (i !== last) return `'#' must be the last level of a topic filter (at index ${i}); nothing may follow it`;
    } else if (c === PLUS) {
      // [MQTT-4.7.1-3] '+' must occupy an entire level of the filter
      if ((i > 0 && filter.charCodeAt(i - 1) !== SLASH) || (i < last && filter.charCodeAt(i + 1) !== SLASH)) {
        return `'+' must occupy a whole level (at index ${i}); write 'a/+/b', not 'a/x+/b'`;
      }
    } else if (c === NUL) {
      // [MQTT-1.5.4-2] a UTF-8 encoded string must not include U+0000
      return `topic filter must not contain the null character U+0000 (at index ${i})`;
    }
  }
  // [MQTT-4.7.3-3] topic filters are UTF-8 strings, so at most 65535 bytes
  const bytes = tooLong(filter);
  if (bytes !== undefined) return `topic filter is ${bytes} UTF-8 bytes long; at most ${MAX_TOPIC_BYTES} are allowed`;
  return undefined;
}

/** A shared subscription filter split into its share group and its inner topic filter. */
export interface SharedFilter {
  /** The share name: messages matching `filter` go to one subscriber of this group. */
  group: string;
  /** The inner topic filter, valid per {@link validateTopicFilter}. */
  filter: string;
}

/**
 * Splits an MQTT 5 shared subscription filter `$share/{group}/{filter}`.
 *
 * Returns undefined when `filter` does not start with `$share/` (it is an ordinary filter:
 * validate it with {@link validateTopicFilter}); the group and the inner filter when it is a
 * valid shared filter; otherwise `{ error }` naming the problem, which the broker reports as
 * reason code 0x8F "Topic Filter invalid" for that subscription.
 */
export function parseSharedFilter(filter: string): SharedFilter | { error: string } | undefined {
  if (!filter.startsWith(SHARED_PREFIX)) return undefined;
  // [MQTT-4.7.3-3] the whole filter, prefix and group included, is one UTF-8 string
  const bytes = tooLong(filter);
  if (bytes !== undefined) {
    return { error: `shared subscription filter is ${bytes} UTF-8 bytes long; at most ${MAX_TOPIC_BYTES} are allowed` };
  }
  const start = SHARED_PREFIX.length;
  const slash = filter.indexOf('/', start);
  // [MQTT-4.8.2-1] the share name must be at least one character long
  if (slash === start || filter.length === start) {
    return { error: `shared subscription group must not be empty: '$share/{group}/{filter}'` };
  }
  // [MQTT-4.8.2-2] the share name must be followed by '/' and a topic filter
  if (slash === -1) {
    return { error: `shared subscription filter needs a topic filter after the group: '$share/{group}/{filter}'` };
  }
  for (let i = start; i < slash; i++) {
    const c = filter.charCodeAt(i);
    // [MQTT-4.8.2-2] the share name must not contain '/', '+' or '#' ('/' ends it by construction)
    if (c === PLUS || c === HASH) {
      return { error: `shared subscription group must not contain '${c === PLUS ? '+' : '#'}'; use letters, digits or other characters except '/', '+' and '#'` };
    }
    // [MQTT-1.5.4-2] a UTF-8 encoded string must not include U+0000
    if (c === NUL) return { error: 'shared subscription group must not contain the null character U+0000' };
  }
  const inner = filter.slice(slash + 1);
  if (inner.length === 0) {
    return { error: `shared subscription filter needs a topic filter after the group: '$share/{group}/{filter}'` };
  }
  const problem = validateTopicFilter(inner);
  if (problem !== undefined) return { error: `in shared subscription filter: ${problem}` };
  return { group: filter.slice(start, slash), filter: inner };
}
