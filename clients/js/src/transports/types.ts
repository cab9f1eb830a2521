import type { HeraldError } from '../errors.js';
import type { GapInfo, HeraldMessage } from '../subscription.js';

/** The three transports, best first. */
export type TransportName = 'ws' | 'sse' | 'poll';

/** Why an open transport stopped. */
export interface CloseInfo {
  /** WebSocket close code, if any. */
  code?: number;
  reason?: string;
  error?: unknown;
}

/** A client joining or leaving a subscribed pattern (presence events). */
export interface PresenceEvent {
  type: 'join' | 'leave';
  /** The pattern the client subscribed or unsubscribed. */
  topic: string;
  client: PresentClient;
}

/** One client as presence shows it. */
export interface PresentClient {
  client_id: string;
  sub: string | null;
  transport: TransportName;
  node: string;
}

/** Whether a parsed JSON value is a presence event. */
export function isPresenceEvent(v: unknown): v is PresenceEvent {
  const e = v as PresenceEvent | null;
  return (
    typeof e === 'object' && e !== null && (e.type === 'join' || e.type === 'leave') &&
    typeof e.topic === 'string' && typeof e.client === 'object' && e.client !== null &&
    typeof e.client.client_id === 'string'
  );
}

/** Callbacks of a pipe; none is called after the pipe's own `close()`. */
export interface PipeHandlers {
  message(message: HeraldMessage<unknown>): void;
  gap(gap: GapInfo): void;
  /** A join/leave event (only when the client asked for them). */
  presence(event: PresenceEvent): void;
  /**
   * The node ended one of the subscribed patterns on its own (admin API):
   * nothing matched only by it follows.
   */
  unsubscribed(pattern: string): void;
  /**
   * Called at most once, only after the pipe was open. `code` 4004 (also
   * for SSE's `kicked` event and long-poll's 410): the node disconnected
   * the client; do not reconnect on your own.
   */
  closed(info: CloseInfo): void;
  /**
   * Something the node sent could not be decoded (not JSON, or not the
   * expected shape). Never skipped silently: the pipe is closed (no
   * `closed` call follows) and the client fails the subscriptions it
   * carried, since reconnecting would meet the same message again.
   */
  undecodable(error: HeraldError): void;
}

/** A WebSocket constructor (the browser's, Node 22's, or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** An EventSource constructor (the browser's, or a polyfill). */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  addEventListener(type: string, listener: (ev: { data?: unknown }) => void): void;
  close(): void;
}
export type EventSourceConstructor = new (url: string) => EventSourceLike;

export type FetchLike = (input: string, init?: {
  method?: string;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
  signal?: AbortSignal;
}) => Promise<{
  status: number;
  ok: boolean;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
  body?: ReadableStream<Uint8Array> | null;
}>;
