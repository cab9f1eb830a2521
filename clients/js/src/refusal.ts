// A node that cannot serve subscriptions now (not connected to its
// cluster, not caught up after a restart, draining, full) refuses them:
// HTTP 503 `unavailable` with `Retry-After: 1` (WebSocket upgrade,
// long-poll), a 200 SSE stream with one `unavailable` event, an
// `unavailable` error frame for a `subscribe` op, close 1012. The client
// then tries another node, and this one again after its Retry-After.

import { HeraldError } from './errors.js';

/** What a node that gives no Retry-After is given. */
export const DEFAULT_RETRY_AFTER_MS = 1_000;

/** Milliseconds of a `Retry-After` header (seconds; Herald sends `1`), capped at a minute. */
export function retryAfterMs(header: string | null | undefined): number {
  const s = Number.parseInt(String(header ?? ''), 10);
  return Number.isFinite(s) && s >= 0 ? Math.min(60_000, s * 1000) : DEFAULT_RETRY_AFTER_MS;
}

/** Whether an error means "this node cannot serve now: try another". */
export function isNodeRefusal(e: unknown): e is HeraldError {
  return e instanceof HeraldError && (e.code === 'unavailable' || e.status === 503 || e.status === 429);
}

/** The refusal of a node, from a JSON error answer (or an SSE `unavailable` event's data). */
export function refusal(status: number, text: string, retryAfter: number, what: string): HeraldError {
  let code = 'unavailable';
  let message = `${what}: HTTP ${status}`;
  try {
    const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
    if (e?.code) code = e.code;
    if (e?.message) message = `${what}: ${e.message}`;
  } catch {
    /* not JSON */
  }
  return new HeraldError(code, message, { status, retriable: true, retryAfterMs: retryAfter });
}
