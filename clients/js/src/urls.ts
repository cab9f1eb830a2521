/** Normalizes a node address to its HTTP base URL (no trailing slash). */
export function normalizeBaseUrl(url: string): string {
  let u = String(url).trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(u)) u = `http://${u}`;
  u = u.replace(/^ws:/i, 'http:').replace(/^wss:/i, 'https:');
  u = u.replace(/\/+$/, '');
  // Accept a URL that already names an endpoint.
  u = u.replace(/\/v1\/(ws|sse|poll)$/, '');
  return u;
}

export function wsEndpoint(base: string, token?: string): string {
  const u = base.replace(/^http:/i, 'ws:').replace(/^https:/i, 'wss:');
  return `${u}/v1/ws${token ? `?token=${encodeURIComponent(token)}` : ''}`;
}

function query(params: [string, string][]): string {
  return params.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
}

export function streamEndpoint(
  base: string,
  kind: 'sse' | 'poll',
  patterns: readonly string[],
  extra: { cursor?: string; timeoutMs?: number; token?: string; presence?: boolean },
): string {
  const params: [string, string][] = patterns.map((p) => ['topic', p]);
  if (extra.presence) params.push(['presence', 'true']);
  if (extra.cursor !== undefined) params.push(['cursor', extra.cursor]);
  if (extra.timeoutMs !== undefined) params.push(['timeout_ms', String(Math.max(0, Math.floor(extra.timeoutMs)))]);
  if (extra.token) params.push(['token', extra.token]);
  return `${base}/v1/${kind}?${query(params)}`;
}

export function publishEndpoint(base: string, topic: string): string {
  return `${base}/v1/topics/${encodeURIComponent(topic)}/messages`;
}

/** A fresh idempotency key (printable ASCII, well under 255 bytes). */
export function newIdempotencyKey(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string; getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (c?.randomUUID) return `hc-${c.randomUUID()}`;
  const bytes = new Uint8Array(16);
  if (c?.getRandomValues) c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return `hc-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}
