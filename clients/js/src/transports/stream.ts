// Server -> client streams for the HTTP transports: SSE (EventSource in
// browsers, a fetch-based reader elsewhere) and long-poll.

import { decodeEnvelopeData } from '../binary.js';
import { HeraldError } from '../errors.js';
import { DEFAULT_RETRY_AFTER_MS, refusal, retryAfterMs } from '../refusal.js';
import type { GapInfo, HeraldMessage } from '../subscription.js';
import { SseParser } from './sse-parser.js';
import { isPresenceEvent, type EventSourceConstructor, type EventSourceLike, type FetchLike, type PipeHandlers } from './types.js';

/** A stream that delivers messages until closed. */
export interface StreamPipe {
  open(timeoutMs: number): Promise<void>;
  close(): void;
}

/** JSON.parse, with a failure as `undefined` (for the caller to report). */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** The error for an event or answer that is not what the protocol says. */
function undecodable(what: string, text: string): HeraldError {
  return new HeraldError('bad_response', `undecodable ${what}: ${text.slice(0, 200)}`);
}

function isMessage(v: unknown): v is HeraldMessage<unknown> {
  const m = v as HeraldMessage<unknown> | undefined;
  return !!m && typeof m.topic === 'string' && typeof m.seq === 'number' && typeof m.ts === 'number';
}

/**
 * The message of an envelope (binary data decoded), or the error that says
 * why it cannot be one.
 */
export function readMessage(v: unknown, what: string, text: string): HeraldMessage<unknown> | HeraldError {
  if (!isMessage(v)) return undecodable(what, text);
  try {
    return decodeEnvelopeData(v as HeraldMessage<unknown> & { encoding?: unknown });
  } catch (e) {
    return e instanceof HeraldError ? e : undecodable(what, text);
  }
}

/** The close of a pipe the node kicked (admin API): as WebSocket close 4004. */
export const KICKED_CODE = 4004;
/** What a kicked pipe reports. */
export function kickedInfo(body: string): { code: number; reason: string; error: HeraldError } {
  let message = 'disconnected by the server; do not reconnect automatically';
  try {
    const m = (JSON.parse(body) as { error?: { message?: string } }).error?.message;
    if (m) message = m;
  } catch {
    /* keep the default */
  }
  return { code: KICKED_CODE, reason: message, error: new HeraldError('kicked', message) };
}

/** The pattern of an `unsubscribed` event (`{"topic":..}`), if it is one. */
function unsubscribedPattern(text: string): string | null {
  const v = parseJson(text) as { topic?: unknown } | undefined;
  return v && typeof v.topic === 'string' ? v.topic : null;
}

function isGap(v: unknown): v is GapInfo {
  const g = v as GapInfo | undefined;
  return !!g && typeof g.topic === 'string' && typeof g.from === 'number' && typeof g.to === 'number';
}

/** SSE through the platform's (or an injected) EventSource. */
export class EventSourcePipe implements StreamPipe {
  private es: EventSourceLike | null = null;
  private done = false;
  private opened = false;

  constructor(
    private readonly ctor: EventSourceConstructor,
    private readonly url: string,
    private readonly handlers: PipeHandlers,
  ) {}

  open(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let es: EventSourceLike;
      try {
        es = new this.ctor(this.url);
      } catch (e) {
        reject(new HeraldError('transport_unavailable', `EventSource constructor failed: ${String(e)}`, { cause: e }));
        return;
      }
      this.es = es;
      let settled = false;
      const fail = (why: string, cause?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.done = true;
        try {
          es.close();
        } catch {
          /* ignore */
        }
        reject(new HeraldError('connect_failed', why, { cause }));
      };
      const timer = setTimeout(() => fail(`EventSource did not open within ${timeoutMs} ms`), timeoutMs);
      // Open = the first event: the node sends `hello` right after the
      // opening block — or, when it cannot serve now, `unavailable` (in a
      // 200 stream, which EventSource would retry by itself).
      const opened = () => {
        if (settled || this.done) return;
        settled = true;
        this.opened = true;
        clearTimeout(timer);
        resolve();
      };
      es.onopen = () => {
        if (!settled && this.done) fail('closed while opening');
      };
      es.onerror = (ev) => {
        if (!this.opened) {
          fail('EventSource failed before open', ev);
          return;
        }
        // The browser would reconnect by itself with Last-Event-ID; the
        // client reconnects instead (backoff, other nodes, other transports).
        this.finish({ reason: 'stream ended', error: ev });
      };
      es.addEventListener('hello', () => opened());
      es.addEventListener('unavailable', (ev) => {
        const error = refusal(200, String(ev.data ?? ''), DEFAULT_RETRY_AFTER_MS, 'sse');
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          this.close();
          reject(error);
        } else {
          this.finish({ reason: error.message, error });
        }
      });
      es.addEventListener('message', (ev) => {
        if (this.done) return;
        opened();
        const m = readMessage(parseJson(String(ev.data)), 'SSE message event', String(ev.data));
        if (m instanceof HeraldError) this.undecodable(m);
        else this.handlers.message(m);
      });
      es.addEventListener('unsubscribed', (ev) => {
        if (this.done) return;
        const pattern = unsubscribedPattern(String(ev.data));
        if (pattern !== null) this.handlers.unsubscribed(pattern);
      });
      // Kicked: close before EventSource reconnects by itself (it would,
      // after the day-long `retry` the node set).
      es.addEventListener('kicked', (ev) => {
        if (this.done) return;
        const info = kickedInfo(String(ev.data ?? ''));
        if (!settled) {
          settled = true;
          clearTimeout(timer);
          this.close();
          reject(info.error);
        } else {
          this.finish(info);
        }
      });
      es.addEventListener('gap', (ev) => {
        if (this.done) return;
        opened();
        const g = parseJson(String(ev.data));
        if (isGap(g)) this.handlers.gap(g);
        else this.undecodable(undecodable('SSE gap event', String(ev.data)));
      });
      for (const kind of ['join', 'leave']) {
        es.addEventListener(kind, (ev) => {
          if (this.done) return;
          const p = parseJson(String(ev.data));
          if (isPresenceEvent(p)) this.handlers.presence(p);
        });
      }
    });
  }

  private undecodable(error: HeraldError): void {
    this.close();
    this.handlers.undecodable(error);
  }

  close(): void {
    this.done = true;
    const es = this.es;
    this.es = null;
    try {
      es?.close();
    } catch {
      /* ignore */
    }
  }

  private finish(info: { code?: number; reason?: string; error?: unknown }): void {
    if (this.done) return;
    this.close();
    this.handlers.closed(info);
  }
}

/** SSE read with fetch and a streaming body (Node, or browsers without EventSource). */
export class FetchSsePipe implements StreamPipe {
  private readonly abort = new AbortController();
  private done = false;
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private lastDataAt = 0;
  private firstEvent: { resolve: () => void; reject: (e: HeraldError) => void } | null = null;
  private opened = false;

  constructor(
    private readonly fetchImpl: FetchLike,
    private readonly url: string,
    private readonly handlers: PipeHandlers,
    private readonly idleTimeoutMs: number,
  ) {}

  async open(timeoutMs: number): Promise<void> {
    const timer = setTimeout(() => this.abort.abort(), timeoutMs);
    let res: Awaited<ReturnType<FetchLike>>;
    try {
      res = await this.fetchImpl(this.url, { headers: { accept: 'text/event-stream' }, signal: this.abort.signal });
    } catch (e) {
      this.done = true;
      throw new HeraldError('connect_failed', `SSE request failed: ${String(e)}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
    const type = res.headers.get('content-type') ?? '';
    if (res.status !== 200 || !type.startsWith('text/event-stream') || !res.body) {
      this.done = true;
      const text = await res.text().catch(() => '');
      this.abort.abort();
      if (res.status === 503 || res.status === 429) {
        throw refusal(res.status, text, retryAfterMs(res.headers.get('retry-after')), 'sse');
      }
      throw new HeraldError('connect_failed', `SSE answered ${res.status}: ${text.slice(0, 200)}`, { status: res.status });
    }
    if (this.done) {
      this.abort.abort();
      throw new HeraldError('connect_failed', 'closed while opening');
    }
    this.lastDataAt = Date.now();
    if (this.idleTimeoutMs > 0) {
      this.watchdog = setInterval(() => {
        if (Date.now() - this.lastDataAt > this.idleTimeoutMs) this.finish({ reason: 'no data or heartbeat' });
      }, Math.max(100, this.idleTimeoutMs / 4));
      (this.watchdog as { unref?: () => void }).unref?.();
    }
    // Open = the first event (`hello`, right after the opening block), or
    // the node's `unavailable` refusal.
    const first = new Promise<void>((resolve, reject) => {
      this.firstEvent = { resolve, reject };
    });
    const firstTimer = setTimeout(
      () => this.opening(new HeraldError('connect_failed', `no SSE event within ${timeoutMs} ms`)),
      timeoutMs,
    );
    void this.read(res.body);
    try {
      await first;
    } catch (e) {
      this.close();
      throw e;
    } finally {
      clearTimeout(firstTimer);
    }
  }

  /** Settles `open()`: with an error, or (none) as opened. */
  private opening(error?: HeraldError): void {
    const f = this.firstEvent;
    if (!f) return;
    this.firstEvent = null;
    if (error) {
      f.reject(error);
    } else {
      this.opened = true;
      f.resolve();
    }
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser((ev) => {
      if (this.done) return;
      if (ev.event === 'unavailable') {
        const error = refusal(200, ev.data, parser.retry ?? DEFAULT_RETRY_AFTER_MS, 'sse');
        if (this.firstEvent) this.opening(error);
        else this.finish({ reason: error.message, error });
        return;
      }
      if (ev.event === 'kicked') {
        const info = kickedInfo(ev.data);
        if (this.firstEvent) this.opening(info.error);
        else this.finish(info);
        return;
      }
      this.opening();
      if (ev.event === 'message') {
        const m = readMessage(parseJson(ev.data), 'SSE message event', ev.data);
        if (m instanceof HeraldError) this.undecodable(m);
        else this.handlers.message(m);
      } else if (ev.event === 'unsubscribed') {
        const pattern = unsubscribedPattern(ev.data);
        if (pattern !== null) this.handlers.unsubscribed(pattern);
      } else if (ev.event === 'gap') {
        const g = parseJson(ev.data);
        if (isGap(g)) this.handlers.gap(g);
        else this.undecodable(undecodable('SSE gap event', ev.data));
      } else if (ev.event === 'join' || ev.event === 'leave') {
        const p = parseJson(ev.data);
        if (isPresenceEvent(p)) this.handlers.presence(p);
      }
    });
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (this.done) break;
        if (done) {
          this.opening(new HeraldError('connect_failed', 'SSE stream ended before its first event'));
          this.finish({ reason: 'stream ended' });
          break;
        }
        this.lastDataAt = Date.now();
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch (e) {
      this.opening(new HeraldError('connect_failed', `SSE stream failed: ${String(e)}`, { cause: e }));
      this.finish({ reason: 'stream failed', error: e });
    } finally {
      try {
        reader.releaseLock();
      } catch {
        /* ignore */
      }
    }
  }

  private undecodable(error: HeraldError): void {
    this.close();
    this.handlers.undecodable(error);
  }

  close(): void {
    this.done = true;
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = null;
    this.abort.abort();
  }

  private finish(info: { code?: number; reason?: string; error?: unknown }): void {
    if (this.done) return;
    this.close();
    // `open()` reports what happens before the first event.
    if (this.opened) this.handlers.closed(info);
  }
}

/** The body of a long-poll answer. */
export interface PollAnswer {
  messages: HeraldMessage<unknown>[];
  cursor: string;
  gaps?: GapInfo[];
  /** The poll session (presence) to name in the next request. */
  client_id?: string;
  /** Join/leave events, when asked for. */
  presence?: unknown[];
  /** Patterns the node ended on its own (admin API) since the previous answer. */
  unsubscribed?: unknown[];
}

/**
 * Long-poll: `GET /v1/poll?...&cursor=C` in a loop, passing back the cursor
 * each answer returns. `urlFor(cursor, timeoutMs)` builds a request URL.
 */
export class PollPipe implements StreamPipe {
  private abort: AbortController | null = null;
  private done = false;
  private cursor: string;
  /** Sent back so the node keeps one presence entry for this loop, not one per request. */
  private clientId: string | undefined;

  constructor(
    private readonly fetchImpl: FetchLike,
    private readonly urlFor: (cursor: string, timeoutMs: number) => string,
    startCursor: string,
    private readonly handlers: PipeHandlers,
    private readonly pollTimeoutMs: number,
  ) {
    this.cursor = startCursor;
  }

  /** The first poll (timeout 0) is the open; then the loop runs by itself. */
  async open(timeoutMs: number): Promise<void> {
    try {
      await this.pollOnce(0, timeoutMs);
    } catch (e) {
      this.done = true;
      throw e instanceof HeraldError ? e : new HeraldError('connect_failed', String(e), { cause: e });
    }
    if (this.done) throw new HeraldError('connect_failed', 'closed while opening');
    void this.loop();
  }

  private async loop(): Promise<void> {
    while (!this.done) {
      try {
        await this.pollOnce(this.pollTimeoutMs, this.pollTimeoutMs + 15_000);
      } catch (e) {
        if (e instanceof HeraldError && e.code === 'kicked') this.finish({ code: KICKED_CODE, reason: e.message, error: e });
        else this.finish({ reason: 'poll failed', error: e });
        return;
      }
    }
  }

  private async pollOnce(waitMs: number, requestTimeoutMs: number): Promise<void> {
    const abort = new AbortController();
    this.abort = abort;
    const timer = setTimeout(() => abort.abort(), requestTimeoutMs);
    let status: number;
    let text: string;
    let retryAfter: string | null;
    try {
      let url = this.urlFor(this.cursor, waitMs);
      if (this.clientId !== undefined) url += `${url.includes('?') ? '&' : '?'}client_id=${encodeURIComponent(this.clientId)}`;
      const res = await this.fetchImpl(url, { signal: abort.signal });
      status = res.status;
      retryAfter = res.headers.get('retry-after');
      text = await res.text();
    } catch (e) {
      throw new HeraldError('connect_failed', `poll request failed: ${String(e)}`, { cause: e });
    } finally {
      clearTimeout(timer);
    }
    if (this.done) return;
    if (status === 503 || status === 429) throw refusal(status, text, retryAfterMs(retryAfter), 'poll');
    if (status === 410) throw kickedInfo(text).error;
    if (status !== 200) {
      throw new HeraldError('connect_failed', `poll answered ${status}: ${text.slice(0, 200)}`, { status });
    }
    const answer = parseJson(text) as PollAnswer | undefined;
    const wellFormed = !!answer && typeof answer.cursor === 'string' && Array.isArray(answer.messages);
    const messages = wellFormed ? answer.messages.map((m) => readMessage(m, 'poll answer', text)) : [];
    const bad = wellFormed ? messages.find((m) => m instanceof HeraldError) : undecodable('poll answer', text);
    if (bad) {
      // Polling again from the same cursor would get the same answer.
      this.close();
      this.handlers.undecodable(bad as HeraldError);
      return;
    }
    answer!.messages = messages as HeraldMessage<unknown>[];
    for (const p of answer!.unsubscribed ?? []) if (!this.done && typeof p === 'string') this.handlers.unsubscribed(p);
    this.cursor = answer!.cursor;
    if (typeof answer!.client_id === 'string') this.clientId = answer!.client_id;
    // Gaps of a topic come before that topic's later messages.
    const gaps = (answer!.gaps ?? []).filter(isGap).slice().sort((a, b) => a.from - b.from);
    for (const m of answer!.messages) {
      if (this.done) return;
      for (let i = 0; i < gaps.length; i++) {
        const g = gaps[i]!;
        if (g.topic === m.topic && g.from < m.seq) {
          gaps.splice(i--, 1);
          this.handlers.gap(g);
        }
      }
      this.handlers.message(m);
    }
    for (const g of gaps) if (!this.done) this.handlers.gap(g);
    for (const p of answer!.presence ?? []) if (!this.done && isPresenceEvent(p)) this.handlers.presence(p);
  }

  close(): void {
    this.done = true;
    this.abort?.abort();
  }

  private finish(info: { code?: number; reason?: string; error?: unknown }): void {
    if (this.done) return;
    this.close();
    this.handlers.closed(info);
  }
}
