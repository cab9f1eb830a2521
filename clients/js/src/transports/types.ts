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

/** Callbacks of a pipe; none is called after the pipe's own `close()`. */
export interface PipeHandlers {
  message(message: HeraldMessage<unknown>): void;
  gap(gap: GapInfo): void;
  /** Called at most once, only after the pipe was open. */
  closed(info: CloseInfo): void;
}

/** A WebSocket constructor (the browser's, Node 22's, or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code?: number; reason?: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  send(data: string): void;
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
  body?: string;
  signal?: AbortSignal;
}) => Promise<{
  status: number;
  ok: boolean;
  headers: { get(name: string): string | null };
  text(): Promise<string>;
  body?: ReadableStream<Uint8Array> | null;
}>;
