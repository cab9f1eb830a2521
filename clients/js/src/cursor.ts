// Resume cursors (protocol-spec §9.1): "1~<floor>~<topic>~<seq>~...".
//
// <floor>: every message matching the subscription with ts < floor was
// delivered. <topic>~<seq>: every message of topic up to seq was delivered.

/** A parsed cursor. */
export interface CursorValue {
  /** Milliseconds since the Unix epoch. */
  floor: number;
  /** Last delivered seq per topic. */
  positions: Map<string, number>;
}

const DIGITS = /^[0-9]{1,20}$/;

function parseNumber(text: string, what: string): number {
  if (!DIGITS.test(text)) throw new Error(`invalid cursor: bad ${what} ${JSON.stringify(text)}`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new Error(`invalid cursor: ${what} ${text} is too large`);
  return n;
}

/** Parses a cursor; throws on anything malformed. */
export function parseCursor(cursor: string): CursorValue {
  if (typeof cursor !== 'string') throw new Error('invalid cursor: not a string');
  const parts = cursor.split('~');
  if (parts[0] !== '1') throw new Error('invalid cursor: unknown version');
  if (parts.length < 2 || parts.length % 2 !== 0) throw new Error('invalid cursor: wrong number of fields');
  const floor = parseNumber(parts[1]!, 'floor');
  const positions = new Map<string, number>();
  for (let i = 2; i < parts.length; i += 2) {
    const topic = parts[i]!;
    if (topic.length === 0) throw new Error('invalid cursor: empty topic');
    positions.set(topic, parseNumber(parts[i + 1]!, 'seq'));
  }
  return { floor, positions };
}

/** Encodes a cursor, topics in byte order as the server writes them. */
export function encodeCursor(floor: number, positions: Iterable<[string, number]>): string {
  const entries = [...positions].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  let out = `1~${floor}`;
  for (const [topic, seq] of entries) out += `~${topic}~${seq}`;
  return out;
}

/** What {@link combineCursors} needs from a subscription. */
export interface CursorSource {
  readonly concrete: boolean;
  readonly floor: number | null;
  readonly positions: ReadonlyMap<string, number>;
}

/**
 * One cursor from which every given subscription can resume: the lowest
 * wildcard floor, and for each topic any of them tracks, the lowest seq they
 * track it at. The stream resumed from it may deliver more than a
 * subscription needs (a lower floor or seq); each subscription's own filter
 * drops that, so nothing is lost and nothing is delivered twice.
 * `restrict` keeps only the topics it accepts.
 */
export function combineCursors(
  subs: Iterable<CursorSource>,
  restrict?: (topic: string) => boolean,
): CursorValue {
  let floor: number | null = null;
  let anyFloor: number | null = null;
  const positions = new Map<string, number>();
  for (const sub of subs) {
    if (sub.floor !== null) {
      anyFloor = anyFloor === null ? sub.floor : Math.min(anyFloor, sub.floor);
      if (!sub.concrete) floor = floor === null ? sub.floor : Math.min(floor, sub.floor);
    }
    for (const [topic, seq] of sub.positions) {
      if (restrict && !restrict(topic)) continue;
      const cur = positions.get(topic);
      if (cur === undefined || seq < cur) positions.set(topic, seq);
    }
  }
  return { floor: floor ?? anyFloor ?? 0, positions };
}
