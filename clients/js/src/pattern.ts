// Topic and pattern rules (protocol-spec §1) and NATS-style matching.

const TOKEN = /^[A-Za-z0-9_-]{1,64}$/;
const MAX_BYTES = 255;
const MAX_TOKENS = 16;

function byteLength(s: string): number {
  // Valid names are ASCII; count UTF-8 bytes anyway so the error is right.
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Why `topic` is not a valid concrete topic, or null when it is. */
export function topicError(topic: unknown): string | null {
  if (typeof topic !== 'string') return 'topic must be a string';
  if (topic.length === 0) return 'topic is empty';
  if (byteLength(topic) > MAX_BYTES) return `topic is longer than ${MAX_BYTES} bytes`;
  const tokens = topic.split('.');
  if (tokens.length > MAX_TOKENS) return `topic has more than ${MAX_TOKENS} tokens`;
  for (const t of tokens) {
    if (t === '*' || t === '>') return 'a wildcard is not allowed here (concrete topic needed)';
    if (!TOKEN.test(t)) return `invalid token ${JSON.stringify(t)} (1-64 of A-Z a-z 0-9 _ -)`;
  }
  return null;
}

/** Why `pattern` is not a valid subscription pattern, or null when it is. */
export function patternError(pattern: unknown): string | null {
  if (typeof pattern !== 'string') return 'pattern must be a string';
  if (pattern.length === 0) return 'pattern is empty';
  if (byteLength(pattern) > MAX_BYTES) return `pattern is longer than ${MAX_BYTES} bytes`;
  const tokens = pattern.split('.');
  if (tokens.length > MAX_TOKENS) return `pattern has more than ${MAX_TOKENS} tokens`;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (t === '*') continue;
    if (t === '>') {
      if (i !== tokens.length - 1) return "'>' may only be the last token";
      continue;
    }
    if (!TOKEN.test(t)) return `invalid token ${JSON.stringify(t)} (1-64 of A-Z a-z 0-9 _ -, or * or >)`;
  }
  return null;
}

/** Whether a (valid) pattern has no wildcard, i.e. names exactly one topic. */
export function isConcrete(pattern: string): boolean {
  return !pattern.split('.').some((t) => t === '*' || t === '>');
}

/** Whether `topic` matches `pattern` (`*` = one token, trailing `>` = one or more). */
export function matchPattern(pattern: string, topic: string): boolean {
  if (pattern === topic) return true;
  const p = pattern.split('.');
  const t = topic.split('.');
  for (let i = 0; i < p.length; i++) {
    const pt = p[i]!;
    if (pt === '>') return t.length > i;
    if (i >= t.length) return false;
    if (pt !== '*' && pt !== t[i]) return false;
  }
  return p.length === t.length;
}

/** A compiled matcher for one pattern. */
export function compilePattern(pattern: string): (topic: string) => boolean {
  if (isConcrete(pattern)) return (topic) => topic === pattern;
  const p = pattern.split('.');
  const tail = p[p.length - 1] === '>';
  const fixed = tail ? p.length - 1 : p.length;
  return (topic) => {
    const t = topic.split('.');
    if (tail ? t.length <= fixed : t.length !== fixed) return false;
    for (let i = 0; i < fixed; i++) {
      if (p[i] !== '*' && p[i] !== t[i]) return false;
    }
    return true;
  };
}

/** Whether some topic matches both patterns. */
export function patternsOverlap(a: string, b: string): boolean {
  const x = a.split('.');
  const y = b.split('.');
  for (let i = 0; ; i++) {
    const xi = x[i];
    const yi = y[i];
    if (xi === undefined && yi === undefined) return true;
    if (xi === '>') return yi !== undefined;
    if (yi === '>') return xi !== undefined;
    if (xi === undefined || yi === undefined) return false;
    if (xi !== '*' && yi !== '*' && xi !== yi) return false;
  }
}
