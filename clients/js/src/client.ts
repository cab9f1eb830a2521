// HeraldClient: subscriptions that resume without gap or duplicate on any
// node and any transport, publishes with idempotency keys, WebSocket -> SSE
// -> long-poll fallback, reconnect with backoff, upgrade back.

import { backoffDelay } from './backoff.js';
import { binaryPayload, encodePublish } from './binary.js';
import { combineCursors, encodeCursor, parseCursor, type CursorValue } from './cursor.js';
import { Emitter } from './emitter.js';
import { HeraldError } from './errors.js';
import { isConcrete, patternError, patternsOverlap, topicError } from './pattern.js';
import { DEFAULT_RETRY_AFTER_MS, isNodeRefusal, refusal, retryAfterMs } from './refusal.js';
import {
  Subscription,
  type GapInfo,
  type HeraldMessage,
  type MessageHandler,
  type SubscribeOptions,
} from './subscription.js';
import {
  EventSourcePipe,
  FetchSsePipe,
  KICKED_CODE,
  PollPipe,
  readMessage,
  type PollAnswer,
  type StreamPipe,
} from './transports/stream.js';
import {
  isPresenceEvent,
  type CloseInfo,
  type EventSourceConstructor,
  type FetchLike,
  type PipeHandlers,
  type PresenceEvent,
  type PresentClient,
  type TransportName,
  type WebSocketConstructor,
} from './transports/types.js';
import { WsPipe } from './transports/ws.js';
import { newIdempotencyKey, normalizeBaseUrl, publishEndpoint, streamEndpoint, wsEndpoint } from './urls.js';

/** Options of {@link HeraldClient}. */
export interface HeraldClientOptions {
  /**
   * The node's base URL (`http://host:port`), or several nodes of one
   * cluster: the client moves to the next one when a node cannot be reached.
   */
  url: string | string[];
  /**
   * Auth token (JWT), sent as `?token=` on WebSocket/SSE/long-poll and as
   * `Authorization: Bearer` on REST. A function is called before every
   * connection attempt (return a fresh token there); see also `setToken`.
   */
  token?: string | (() => string | Promise<string>);
  /** Transports to use, best first. Default `['ws', 'sse', 'poll']`. */
  transports?: TransportName[];
  /** Reconnect backoff (exponential, full jitter). Default 500 ms .. 10 s. */
  reconnect?: { minDelayMs?: number; maxDelayMs?: number };
  /** Queue publishes made while disconnected and send them on reconnect. Default true. */
  bufferWhileOffline?: boolean;
  /** Most publishes waiting at once. Default 1000. */
  maxBufferedPublishes?: number;
  /** A publish not acknowledged within this time is rejected (`timeout`). Default 30 s. */
  publishTimeoutMs?: number;
  /** A transport that does not open within this time counts as failed. Default 5 s. */
  openTimeoutMs?: number;
  /** While on a fallback transport, try a better one this often (0 = never). Default 30 s. */
  upgradeIntervalMs?: number;
  /** WebSocket: send an application ping this often. Default 20 s. */
  pingIntervalMs?: number;
  /** WebSocket: no frame for ping interval + this long = dead link. Default 10 s. */
  pongTimeoutMs?: number;
  /** Long-poll: how long one request waits on the server. Default 25 s. */
  pollTimeoutMs?: number;
  /** SSE without EventSource: no byte for this long = dead stream (server heartbeats every 15 s). Default 45 s. */
  sseIdleTimeoutMs?: number;
  /** Connect as soon as the client is created. Default true. */
  autoConnect?: boolean;
  /** WebSocket implementation (default: the global one; Node 20: pass the `ws` package's). */
  WebSocket?: unknown;
  /** EventSource implementation (default: the global one; without any, SSE is read with fetch). */
  EventSource?: unknown;
  /** fetch implementation (default: the global one). */
  fetch?: unknown;
  /**
   * Ask for join/leave events of every subscribed pattern, emitted as
   * `join` / `leave` (best effort, not resumable). Default false.
   */
  presence?: boolean;
}

/** A publish acknowledgement: the message is durable and has this seq. */
export interface PublishAck {
  topic: string;
  seq: number;
}

/** Options of {@link HeraldClient.publish}. */
export interface PublishOptions {
  /** Makes retries safe; default: a fresh random key per publish. */
  idempotencyKey?: string;
}

export interface ConnectEvent {
  transport: TransportName;
  url: string;
  /** True when this replaced a fallback transport by a better one. */
  upgraded: boolean;
}
export interface DisconnectEvent {
  transport: TransportName;
  url: string;
  code?: number;
  reason?: string;
  error?: unknown;
}
export interface ReconnectingEvent {
  /** 1 for the first retry after a loss, growing while attempts fail. */
  attempt: number;
  delayMs: number;
  /** The node tried next. */
  url: string;
  error?: unknown;
}
export interface GapEvent extends GapInfo {
  subscriptions: Subscription<unknown>[];
}
/** The node disconnected this client (admin API; WebSocket close 4004, SSE `kicked`, long-poll 410). */
export interface KickedEvent {
  transport: TransportName;
  url: string;
  reason: string;
  /** The error pending publishes were rejected with and subscriptions ended with (code `kicked`). */
  error: HeraldError;
}
/** The node ended subscriptions on its own (admin API `unsubscribe`). */
export interface UnsubscribedEvent {
  /** The pattern exactly as subscribed. */
  pattern: string;
  /** The subscriptions that ended (closed, never resubscribed). */
  subscriptions: Subscription<unknown>[];
}

/** Events of {@link HeraldClient}. */
export interface HeraldClientEvents {
  connect: (event: ConnectEvent) => void;
  disconnect: (event: DisconnectEvent) => void;
  reconnecting: (event: ReconnectingEvent) => void;
  error: (error: Error) => void;
  gap: (event: GapEvent) => void;
  /** A client subscribed to one of this client's patterns (option `presence`). */
  join: (event: PresenceEvent) => void;
  /** A client unsubscribed or disconnected (option `presence`). */
  leave: (event: PresenceEvent) => void;
  /**
   * The node disconnected this client on purpose (admin API). The client is
   * closed and does not reconnect: the application decides whether to
   * create a new one (subscriptions' `cursor()` still resume exactly).
   */
  kicked: (event: KickedEvent) => void;
  /** The node ended a subscribed pattern (admin API); it is not resubscribed. */
  unsubscribed: (event: UnsubscribedEvent) => void;
}

/** Connection state of a {@link HeraldClient}. */
export type ClientState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

interface PendingPublish {
  topic: string;
  data: unknown;
  /** The JSON text of `data`, or '' for a binary payload. */
  body: string;
  /** The bytes of a binary payload (sent as a binary frame or octet-stream). */
  binary: Uint8Array | null;
  key: string;
  resolve: (ack: PublishAck) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout> | null;
  sending: boolean;
  notBefore: number;
  attempts: number;
  done: boolean;
}

interface Session {
  readonly kind: TransportName;
  readonly url: string;
  /** Opens; rejects if the transport cannot be used. */
  start(timeoutMs: number): Promise<void>;
  /** The client adopted it: (re)subscribe everything, start sending. */
  activate(): void;
  /** The set of subscriptions changed. */
  syncSubs(): void;
  /** Closes without reporting. */
  close(): void;
}

const DEFAULTS = {
  minDelayMs: 500,
  maxDelayMs: 10_000,
  maxBufferedPublishes: 1000,
  publishTimeoutMs: 30_000,
  openTimeoutMs: 5_000,
  upgradeIntervalMs: 30_000,
  pingIntervalMs: 20_000,
  pongTimeoutMs: 10_000,
  pollTimeoutMs: 25_000,
  sseIdleTimeoutMs: 45_000,
};
/** A session that lived at least this long resets the backoff. */
const STABLE_MS = 5_000;
const MAX_STREAM_TOPICS = 64;
/** 408: a node paused past its request timeout answers so once it resumes. */
const RETRIABLE_STATUS = new Set([0, 408, 429, 500, 502, 503, 504]);

/**
 * A Herald client. See the package README for a quick start.
 *
 * ```ts
 * const client = new HeraldClient({ url: 'http://127.0.0.1:8080' });
 * client.subscribe('orders.*', (m) => console.log(m.topic, m.seq, m.data));
 * await client.publish('orders.eu', { id: 1 });
 * ```
 */
export class HeraldClient extends Emitter<HeraldClientEvents> {
  private readonly urls: string[];
  private urlIndex = 0;
  /** Per node: not before this time (ms), after it refused (its Retry-After). */
  private readonly notBefore = new Map<string, number>();
  private readonly transportList: TransportName[];
  private preferred = 0;
  /** Index of the transport of the last adopted session, if any. */
  private lastWorking: number | null = null;
  private readonly opts: typeof DEFAULTS & { bufferWhileOffline: boolean };
  private readonly tokenProvider: (() => string | Promise<string>) | undefined;
  private tokenValue: string | undefined;
  /** @internal */ readonly WebSocketImpl: WebSocketConstructor | undefined;
  /** @internal */ readonly EventSourceImpl: EventSourceConstructor | undefined;
  /** @internal */ readonly fetchImpl: FetchLike | undefined;
  private session: Session | null = null;
  private sessionOpenedAt = 0;
  private stateValue: ClientState = 'idle';
  private failures = 0;
  private loopRunning = false;
  private loopRequested: number | null = null;
  private sleepTimer: ReturnType<typeof setTimeout> | null = null;
  private wake: (() => void) | null = null;
  private upgradeTimer: ReturnType<typeof setTimeout> | null = null;
  private upgrading = false;
  /** @internal */ readonly subs = new Set<Subscription<unknown>>();
  private nextSubId = 1;
  private opCounter = 0;
  private readonly outbox: PendingPublish[] = [];
  private readonly lanes = new Set<string>();
  private pumpTimer: ReturnType<typeof setTimeout> | null = null;
  private pumpSoonTimer: ReturnType<typeof setTimeout> | null = null;

  constructor(options: HeraldClientOptions) {
    super();
    if (!options || options.url === undefined) throw new TypeError('HeraldClient: options.url is required');
    const urls = (Array.isArray(options.url) ? options.url : [options.url]).map(normalizeBaseUrl);
    if (urls.length === 0) throw new TypeError('HeraldClient: options.url is empty');
    this.urls = urls;
    const transports = options.transports ?? ['ws', 'sse', 'poll'];
    for (const t of transports) {
      if (t !== 'ws' && t !== 'sse' && t !== 'poll') throw new TypeError(`HeraldClient: unknown transport ${String(t)}`);
    }
    if (transports.length === 0) throw new TypeError('HeraldClient: options.transports is empty');
    this.transportList = [...new Set(transports)];
    const num = (v: number | undefined, d: number) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : d);
    this.opts = {
      minDelayMs: Math.max(1, num(options.reconnect?.minDelayMs, DEFAULTS.minDelayMs)),
      maxDelayMs: num(options.reconnect?.maxDelayMs, DEFAULTS.maxDelayMs),
      maxBufferedPublishes: num(options.maxBufferedPublishes, DEFAULTS.maxBufferedPublishes),
      publishTimeoutMs: num(options.publishTimeoutMs, DEFAULTS.publishTimeoutMs),
      openTimeoutMs: Math.max(1, num(options.openTimeoutMs, DEFAULTS.openTimeoutMs)),
      upgradeIntervalMs: num(options.upgradeIntervalMs, DEFAULTS.upgradeIntervalMs),
      pingIntervalMs: num(options.pingIntervalMs, DEFAULTS.pingIntervalMs),
      pongTimeoutMs: num(options.pongTimeoutMs, DEFAULTS.pongTimeoutMs),
      pollTimeoutMs: num(options.pollTimeoutMs, DEFAULTS.pollTimeoutMs),
      sseIdleTimeoutMs: num(options.sseIdleTimeoutMs, DEFAULTS.sseIdleTimeoutMs),
      bufferWhileOffline: options.bufferWhileOffline ?? true,
    };
    this.presenceEvents = options.presence ?? false;
    if (typeof options.token === 'function') this.tokenProvider = options.token;
    else if (options.token !== undefined) this.tokenValue = String(options.token);
    const g = globalThis as { WebSocket?: unknown; EventSource?: unknown; fetch?: unknown };
    this.WebSocketImpl = (options.WebSocket ?? g.WebSocket) as WebSocketConstructor | undefined;
    this.EventSourceImpl = (options.EventSource ?? g.EventSource) as EventSourceConstructor | undefined;
    const f = (options.fetch ?? g.fetch) as FetchLike | undefined;
    this.fetchImpl = f && !options.fetch ? ((input, init) => f.call(globalThis, input, init)) as FetchLike : f;
    if (options.autoConnect ?? true) {
      // Next task, so that subscriptions made right after construction are
      // part of the first connection.
      setTimeout(() => this.connect(), 0);
    }
  }

  /** Current connection state. */
  get state(): ClientState {
    return this.stateValue;
  }

  /** Whether a transport is connected. */
  get connected(): boolean {
    return this.stateValue === 'connected';
  }

  /** The transport in use, or null while disconnected. */
  get transport(): TransportName | null {
    return this.stateValue === 'connected' ? (this.session?.kind ?? null) : null;
  }

  /** The node in use, or null while disconnected. */
  get url(): string | null {
    return this.stateValue === 'connected' ? (this.session?.url ?? null) : null;
  }

  /** Starts connecting (only needed with `autoConnect: false`, or after `close()` no). */
  connect(): void {
    if (this.stateValue !== 'idle') return;
    this.stateValue = 'connecting';
    void this.connectLoop(0);
  }

  /**
   * Subscribes to a topic or pattern (`*` = one token, trailing `>` = one or
   * more). The handler gets every message in seq order per topic, exactly
   * once, across reconnects, node changes and transport changes.
   */
  subscribe<T = unknown>(pattern: string, handler: MessageHandler<T>, options: SubscribeOptions = {}): Subscription<T> {
    const why = patternError(pattern);
    if (why) throw new HeraldError('invalid_topic', why);
    if (typeof handler !== 'function') throw new TypeError('subscribe: handler must be a function');
    const { since, cursor } = options;
    if (since !== undefined && cursor !== undefined) throw new HeraldError('bad_request', "give 'since' or 'cursor', not both");
    if (since !== undefined) {
      if (!Number.isSafeInteger(since) || since < 0) throw new HeraldError('bad_request', "'since' must be an integer >= 0");
      if (!isConcrete(pattern)) throw new HeraldError('bad_request', "'since' needs a concrete topic; use 'cursor' to resume a pattern");
    }
    let start: CursorValue | null = null;
    if (cursor !== undefined) {
      try {
        start = parseCursor(cursor);
      } catch (e) {
        throw new HeraldError('bad_request', (e as Error).message);
      }
    }
    if (this.stateValue === 'closed') throw new HeraldError('closed', 'the client is closed');
    const sub = new Subscription<T>(this.nextSubId++, pattern, handler);
    if (since !== undefined) sub.start(null, [[pattern, since]]);
    if (start) {
      const positions = [...start.positions].filter(([t]) => sub.matches(t));
      // A concrete topic missing from the cursor starts live, as on the server.
      if (!sub.concrete || positions.some(([t]) => t === pattern)) sub.start(start.floor, positions);
    }
    sub.onUnsubscribe = (s) => {
      this.subs.delete(s as Subscription<unknown>);
      if (this.stateValue === 'connected') this.session?.syncSubs();
    };
    this.subs.add(sub as Subscription<unknown>);
    if (this.stateValue === 'connected') this.session?.syncSubs();
    return sub;
  }

  /**
   * Publishes `data` to a concrete topic: any JSON value, or raw bytes (a
   * `Uint8Array`, another typed array or an `ArrayBuffer`: stored byte for
   * byte and delivered as a `Uint8Array`). Resolves once the message is
   * durable, with its seq. Retries after a lost connection or an
   * `unavailable` answer reuse the same idempotency key, so a message is
   * never stored twice.
   */
  publish(topic: string, data: unknown, options: PublishOptions = {}): Promise<PublishAck> {
    return new Promise<PublishAck>((resolve, reject) => {
      const why = topicError(topic);
      if (why) return reject(new HeraldError('invalid_topic', why));
      // A copy: the caller may reuse its buffer before the ack.
      const binary = binaryPayload(data)?.slice() ?? null;
      let body: string | undefined = '';
      if (!binary) {
        try {
          body = JSON.stringify(data);
        } catch (e) {
          return reject(new HeraldError('bad_request', `data is not JSON-serializable: ${String(e)}`));
        }
      }
      if (body === undefined) return reject(new HeraldError('bad_request', 'data is not a JSON value'));
      const key = options.idempotencyKey ?? newIdempotencyKey();
      if (!/^[\x21-\x7e]{1,255}$/.test(key)) {
        return reject(new HeraldError('bad_request', 'idempotencyKey must be 1-255 printable ASCII characters'));
      }
      if (this.stateValue === 'closed') return reject(new HeraldError('closed', 'the client is closed'));
      if (!this.connected && !this.opts.bufferWhileOffline) {
        return reject(new HeraldError('offline', 'not connected (bufferWhileOffline is off)', { retriable: true }));
      }
      if (this.outbox.length >= this.opts.maxBufferedPublishes) {
        return reject(new HeraldError('buffer_full', `${this.outbox.length} publishes are already waiting`, { retriable: true }));
      }
      const pub: PendingPublish = {
        topic,
        data,
        body,
        binary,
        key,
        resolve,
        reject,
        timer: null,
        sending: false,
        notBefore: 0,
        attempts: 0,
        done: false,
      };
      if (this.opts.publishTimeoutMs > 0) {
        pub.timer = setTimeout(
          () => this.publishFailed(pub, new HeraldError('timeout', `publish to ${topic} not acknowledged within ${this.opts.publishTimeoutMs} ms`)),
          this.opts.publishTimeoutMs,
        );
      }
      this.outbox.push(pub);
      this.pump();
    });
  }

  /**
   * Replaces the auth token. Used by every later request and reconnect; a
   * WebSocket connection is switched over at once (`refresh` op), so it is
   * not closed when the old token expires.
   */
  setToken(token: string): void {
    this.tokenValue = token;
    const s = this.session;
    if (s instanceof WsSession && this.stateValue === 'connected') s.refresh(token);
  }

  /** Closes the connection for good: pending publishes are rejected, subscriptions stop. */
  close(): void {
    this.shutdown(new HeraldError('closed', 'the client was closed'), 'client closed');
  }

  /** Closes for good: pending publishes are rejected with `error`. */
  private shutdown(error: HeraldError, reason: string): void {
    if (this.stateValue === 'closed') return;
    const was = this.session;
    const wasConnected = this.stateValue === 'connected';
    this.stateValue = 'closed';
    this.clearUpgrade();
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    if (this.pumpSoonTimer) clearTimeout(this.pumpSoonTimer);
    this.pumpSoonTimer = null;
    this.wakeUp();
    this.session = null;
    was?.close();
    for (const sub of this.subs) sub.active = false;
    for (const pub of [...this.outbox]) this.publishFailed(pub, error);
    if (was && wasConnected) this.emit('disconnect', { transport: was.kind, url: was.url, reason });
  }

  /**
   * The node disconnected this client on purpose (close 4004 and its SSE
   * and long-poll forms): unlike any other loss, not something to recover
   * from by reconnecting. The client closes and tells the application.
   */
  private kicked(session: Session, info: CloseInfo): void {
    const reason = info.reason || 'disconnected by the server; do not reconnect automatically';
    const error = info.error instanceof HeraldError && info.error.code === 'kicked' ? info.error : new HeraldError('kicked', reason);
    this.session = null;
    session.close();
    this.emit('disconnect', { transport: session.kind, url: session.url, ...info });
    this.shutdown(error, reason);
    for (const sub of [...this.subs]) sub.fail(error);
    this.emit('kicked', { transport: session.kind, url: session.url, reason, error });
  }

  /** @internal The node ended `pattern` on its own: its subscriptions end, never resubscribed. */
  serverUnsubscribed(pattern: string): void {
    const ended = [...this.subs].filter((s) => s.pattern === pattern && !s.closed);
    if (ended.length === 0) return;
    const error = new HeraldError('unsubscribed', `the server ended the subscription to ${pattern}`);
    for (const s of ended) {
      this.subs.delete(s);
      s.fail(error);
    }
    if (this.stateValue === 'connected') this.session?.syncSubs();
    this.emit('unsubscribed', { pattern, subscriptions: ended });
  }

  // ---------------------------------------------------------------- internals

  /** @internal */
  get options(): Readonly<typeof this.opts> {
    return this.opts;
  }

  /** @internal The token in force. */
  get token(): string | undefined {
    return this.tokenValue;
  }

  /** @internal */
  nextOpId(prefix: string): string {
    return `${prefix}${++this.opCounter}`;
  }

  /** @internal Runs a message through every subscription (or only `only`). */
  deliver(message: HeraldMessage<unknown>, only?: ReadonlySet<Subscription<unknown>>): void {
    for (const sub of this.subs) {
      if (only && !only.has(sub)) continue;
      if (sub.closed || !sub.matches(message.topic)) continue;
      if (!sub.started) {
        sub.joinBuffer?.push(message);
        continue;
      }
      // A seq may jump without a gap event: namespaces with the `conflate`
      // slow-consumer policy deliberately skip superseded messages.
      const r = sub.accept(message);
      if (!r.deliver) continue;
      try {
        sub.handler(message, sub);
      } catch (e) {
        this.emit('error', e instanceof Error ? e : new Error(String(e)));
      }
    }
  }

  /** @internal */
  deliverGap(gap: GapInfo, only?: ReadonlySet<Subscription<unknown>>): void {
    const affected: Subscription<unknown>[] = [];
    for (const sub of this.subs) {
      if (only && !only.has(sub)) continue;
      if (sub.closed || !sub.matches(gap.topic)) continue;
      if (!sub.started) {
        sub.joinBuffer?.push(gap);
        continue;
      }
      if (sub.acceptGap(gap)) affected.push(sub);
    }
    if (affected.length) this.emit('gap', { topic: gap.topic, from: gap.from, to: gap.to, subscriptions: affected });
  }

  /** @internal */
  reportError(error: unknown): void {
    this.emit('error', error instanceof Error ? error : new Error(String(error)));
  }

  /**
   * @internal A node sent something this client cannot decode. Every
   * subscription fails with it (a reconnect would resume right before the
   * same message); it is never skipped silently.
   */
  undecodable(error: HeraldError): void {
    for (const sub of [...this.subs]) this.failSubscription(sub, error);
  }

  /** @internal A refused subscription: it is closed and its `ready` rejects. */
  failSubscription(sub: Subscription<unknown>, error: HeraldError): void {
    if (sub.closed) return;
    this.subs.delete(sub);
    sub.fail(error);
    this.reportError(new HeraldError(error.code, `subscribe ${sub.pattern}: ${error.message}`, { cause: error }));
  }

  /**
   * What the node says when a transport failed to open: `down` (no answer
   * at all), its refusal (`/readyz` 503: it cannot serve subscriptions now
   * — a browser cannot see the status of a refused WebSocket upgrade), or
   * `up`. Without fetch: `up`.
   */
  private async nodeState(url: string): Promise<'up' | 'down' | HeraldError> {
    if (!this.fetchImpl) return 'up';
    try {
      const r = await httpGet(this, `${url}/readyz`, this.opts.openTimeoutMs);
      return r.status === 503 ? refusal(503, r.text, retryAfterMs(r.retryAfter), 'node') : 'up';
    } catch {
      return 'down';
    }
  }

  /** A node refused: not asked again before its Retry-After. */
  private refusedBy(url: string, error: HeraldError): void {
    this.notBefore.set(url, Date.now() + (error.retryAfterMs ?? DEFAULT_RETRY_AFTER_MS));
  }

  /** The backoff, but never less than what the node about to be tried asked for. */
  private delayFor(url: string, backoff: number): number {
    return Math.max(backoff, (this.notBefore.get(url) ?? 0) - Date.now());
  }

  private transportOrder(): number[] {
    const n = this.transportList.length;
    const order: number[] = [];
    for (let i = 0; i < n; i++) order.push((this.preferred + i) % n);
    return order;
  }

  private createSession(kind: TransportName, url: string): Session {
    return kind === 'ws' ? new WsSession(this, url) : new StreamSession(this, kind, url);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.wake = resolve;
      this.sleepTimer = setTimeout(resolve, ms);
    });
  }

  private wakeUp(): void {
    if (this.sleepTimer) clearTimeout(this.sleepTimer);
    this.sleepTimer = null;
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private isClosed(): boolean {
    return this.stateValue === 'closed';
  }

  private async connectLoop(initialDelay: number): Promise<void> {
    if (this.loopRunning) {
      // A session adopted by the running loop failed at once: go again
      // when that loop ends.
      this.loopRequested = initialDelay;
      return;
    }
    this.loopRunning = true;
    try {
      let delay = initialDelay;
      for (;;) {
        if (this.isClosed()) return;
        if (delay > 0) {
          await this.sleep(delay);
          if (this.isClosed()) return;
        }
        const url = this.urls[this.urlIndex]!;
        let lastError: unknown;
        let tokenOk = true;
        if (this.tokenProvider) {
          try {
            this.tokenValue = await this.tokenProvider();
          } catch (e) {
            tokenOk = false;
            lastError = e;
            this.reportError(new HeraldError('unauthorized', `token provider failed: ${String(e)}`, { cause: e }));
          }
          if (this.isClosed()) return;
        }
        const order = tokenOk ? this.transportOrder() : [];
        let retriedLastWorking = false;
        for (let k = 0; k < order.length; k++) {
          const idx = order[k]!;
          if (this.isClosed()) return;
          const session = this.createSession(this.transportList[idx]!, url);
          try {
            await session.start(this.opts.openTimeoutMs);
          } catch (e) {
            session.close();
            lastError = e;
            // Why it failed: the node cannot serve now (then another node,
            // not another transport), is down, or is up (the transport is
            // the problem). A missing implementation says nothing of the node.
            const code = e instanceof HeraldError ? e.code : '';
            const state = isNodeRefusal(e) ? e : code === 'transport_unavailable' ? 'up' : await this.nodeState(url);
            if (this.isClosed()) return;
            if (state instanceof HeraldError) {
              lastError = state;
              this.refusedBy(url, state);
              break;
            }
            // A node that does not answer at all is down, whatever the
            // transport: the next node (a lower transport would at best win
            // a race with its restart).
            if (state === 'down') break;
            if (idx === this.lastWorking) {
              // The transport that worked last failing while the node
              // answers: it may have come back since the attempt failed —
              // one more try before calling the transport blocked.
              if (!retriedLastWorking) {
                retriedLastWorking = true;
                k--;
              }
            }
            continue;
          }
          if (this.isClosed()) {
            session.close();
            return;
          }
          this.preferred = idx;
          this.lastWorking = idx;
          this.adopt(session, false);
          return;
        }
        if (this.isClosed()) return;
        // No transport works on this node (or it cannot serve now): next
        // node, after a backoff, and not before what that node asked for.
        this.urlIndex = (this.urlIndex + 1) % this.urls.length;
        delay = this.delayFor(this.urls[this.urlIndex]!, backoffDelay(this.failures, this.opts.minDelayMs, this.opts.maxDelayMs));
        this.failures++;
        this.stateValue = 'reconnecting';
        this.emit('reconnecting', {
          attempt: this.failures + 1,
          delayMs: delay,
          url: this.urls[this.urlIndex]!,
          error: lastError,
        });
      }
    } finally {
      this.loopRunning = false;
      const again = this.loopRequested;
      this.loopRequested = null;
      if (again !== null && !this.session && !this.isClosed()) void this.connectLoop(again);
    }
  }

  private adopt(session: Session, upgraded: boolean): void {
    this.session = session;
    this.sessionOpenedAt = Date.now();
    this.stateValue = 'connected';
    session.activate();
    if (this.session !== session) return; // activation failed and already dropped it
    this.emit('connect', { transport: session.kind, url: session.url, upgraded });
    this.pump();
    this.scheduleUpgrade();
  }

  /** @internal An adopted session stopped working. */
  sessionClosed(session: Session, info: CloseInfo, immediate = false): void {
    if (session !== this.session || this.stateValue === 'closed') return;
    if (info.code === KICKED_CODE) {
      this.kicked(session, info);
      return;
    }
    this.session = null;
    session.close();
    this.clearUpgrade();
    for (const sub of this.subs) sub.active = false;
    this.stateValue = 'reconnecting';
    const lived = Date.now() - this.sessionOpenedAt;
    if (lived >= STABLE_MS) this.failures = 0;
    this.emit('disconnect', { transport: session.kind, url: session.url, ...info });
    let delay: number;
    if (immediate) {
      delay = 0;
    } else if (info.code === 1001 || info.code === 1012 || isNodeRefusal(info.error)) {
      // The node is going away, or cannot serve now: another node, now —
      // this one not before its Retry-After.
      this.refusedBy(session.url, isNodeRefusal(info.error) ? info.error : new HeraldError('unavailable', 'going away'));
      this.urlIndex = (this.urlIndex + 1) % this.urls.length;
      delay = this.delayFor(this.urls[this.urlIndex]!, 0);
      if (lived < STABLE_MS && isNodeRefusal(info.error)) {
        delay = this.delayFor(this.urls[this.urlIndex]!, backoffDelay(this.failures++, this.opts.minDelayMs, this.opts.maxDelayMs));
      }
    } else if ((info.code === 4001 || info.code === 4003) && lived >= STABLE_MS) {
      delay = 0; // slow consumer: resume from the log at once; expired token: get a fresh one
    } else {
      delay = this.delayFor(this.urls[this.urlIndex]!, backoffDelay(this.failures, this.opts.minDelayMs, this.opts.maxDelayMs));
      if (lived < STABLE_MS) this.failures++;
    }
    this.emit('reconnecting', { attempt: 1, delayMs: delay, url: this.urls[this.urlIndex]!, error: info.error });
    void this.connectLoop(delay);
  }

  /** @internal Reconnects at once on the same node (to resubscribe from cursors). */
  restartSession(session: Session, reason: string): void {
    if (session !== this.session) return;
    this.sessionClosed(session, { reason }, true);
  }

  private clearUpgrade(): void {
    if (this.upgradeTimer) clearTimeout(this.upgradeTimer);
    this.upgradeTimer = null;
  }

  private scheduleUpgrade(): void {
    this.clearUpgrade();
    const s = this.session;
    if (!s || !(this.opts.upgradeIntervalMs > 0)) return;
    if (this.transportList.indexOf(s.kind) <= 0) return;
    this.upgradeTimer = setTimeout(() => void this.tryUpgrade(), this.opts.upgradeIntervalMs);
    (this.upgradeTimer as { unref?: () => void }).unref?.();
  }

  private async tryUpgrade(): Promise<void> {
    const current = this.session;
    if (!current || this.upgrading || this.stateValue !== 'connected') return;
    this.upgrading = true;
    try {
      const idx = this.transportList.indexOf(current.kind);
      for (let i = 0; i < idx; i++) {
        const candidate = this.createSession(this.transportList[i]!, current.url);
        try {
          await candidate.start(this.opts.openTimeoutMs);
        } catch {
          candidate.close();
          continue;
        }
        if (this.session !== current || this.stateValue !== 'connected') {
          candidate.close();
          return;
        }
        // Old and new overlap for a moment; every subscription's filter
        // drops what arrives twice.
        this.session = null;
        current.close();
        this.preferred = i;
        this.lastWorking = i;
        this.adopt(candidate, true);
        return;
      }
    } finally {
      this.upgrading = false;
    }
    if (this.session === current) this.scheduleUpgrade();
  }

  // ------------------------------------------------------------- publishing

  /** @internal Sends what can be sent now. */
  pump(): void {
    const s = this.session;
    if (!s || this.stateValue !== 'connected') return;
    const now = Date.now();
    let nextAt = Infinity;
    const blocked = new Set(this.lanes);
    for (const pub of this.outbox) {
      if (pub.done) continue;
      if (pub.sending) {
        blocked.add(pub.topic);
        continue;
      }
      if (blocked.has(pub.topic)) continue;
      if (pub.notBefore > now) {
        nextAt = Math.min(nextAt, pub.notBefore);
        blocked.add(pub.topic); // keep per-topic order
        continue;
      }
      if (s instanceof WsSession) {
        if (!s.sendPublish(pub)) break;
      } else {
        blocked.add(pub.topic);
        this.restPublish(pub, s as StreamSession);
      }
    }
    if (nextAt !== Infinity) {
      if (this.pumpTimer) clearTimeout(this.pumpTimer);
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = null;
        this.pump();
      }, Math.max(0, nextAt - now));
    }
  }

  /** @internal */
  publishAcked(pub: PendingPublish, ack: PublishAck): void {
    if (pub.done) return;
    pub.done = true;
    if (pub.timer) clearTimeout(pub.timer);
    const i = this.outbox.indexOf(pub);
    if (i !== -1) this.outbox.splice(i, 1);
    pub.resolve({ topic: ack.topic, seq: ack.seq });
  }

  /** @internal */
  publishFailed(pub: PendingPublish, error: Error): void {
    if (pub.done) return;
    pub.done = true;
    pub.sending = false;
    if (pub.timer) clearTimeout(pub.timer);
    const i = this.outbox.indexOf(pub);
    if (i !== -1) this.outbox.splice(i, 1);
    pub.reject(error);
    this.schedulePump();
  }

  private schedulePump(): void {
    if (this.pumpSoonTimer || this.stateValue === 'closed') return;
    this.pumpSoonTimer = setTimeout(() => {
      this.pumpSoonTimer = null;
      this.pump();
    }, 0);
  }

  /** @internal Try again later (same idempotency key). */
  publishRetryLater(pub: PendingPublish): void {
    if (pub.done) return;
    pub.sending = false;
    pub.notBefore = Date.now() + backoffDelay(pub.attempts++, 100, 2_000) + 50;
    this.schedulePump();
  }

  /** @internal Whether subscriptions ask for join/leave events. */
  readonly presenceEvents: boolean;

  /** @internal */
  emitPresence(event: PresenceEvent): void {
    this.emit(event.type, event);
  }

  /**
   * Who is subscribed to `topic`, on every node of the cluster
   * (`GET /v1/topics/{topic}/presence`), asked of the current node.
   */
  async presence(topic: string): Promise<PresentClient[]> {
    const f = this.fetchImpl;
    if (!f) throw new HeraldError('transport_unavailable', 'no fetch implementation (pass options.fetch)');
    const url = `${this.urls[this.urlIndex]!}/v1/topics/${encodeURIComponent(topic)}/presence`;
    let res: Awaited<ReturnType<FetchLike>>;
    try {
      res = await f(url, { headers: this.authHeaders() });
    } catch (e) {
      throw new HeraldError('connect_failed', `${url}: ${String(e)}`, { cause: e });
    }
    const text = await res.text();
    let body: { clients?: PresentClient[]; error?: { code?: string; message?: string } } | undefined;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (res.status !== 200 || !body || !Array.isArray(body.clients)) {
      throw new HeraldError(String(body?.error?.code ?? 'bad_response'), String(body?.error?.message ?? text.slice(0, 200)), { status: res.status });
    }
    return body.clients;
  }

  /** @internal */
  authHeaders(): Record<string, string> {
    return this.tokenValue ? { authorization: `Bearer ${this.tokenValue}` } : {};
  }

  private restPublish(pub: PendingPublish, session: StreamSession): void {
    const fetchImpl = this.fetchImpl;
    if (!fetchImpl) {
      this.publishFailed(pub, new HeraldError('transport_unavailable', 'no fetch implementation (pass options.fetch)'));
      return;
    }
    pub.sending = true;
    this.lanes.add(pub.topic);
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 10_000);
    const done = () => {
      clearTimeout(timer);
      this.lanes.delete(pub.topic);
    };
    fetchImpl(publishEndpoint(session.url, pub.topic), {
      method: 'POST',
      headers: {
        'content-type': pub.binary ? 'application/octet-stream' : 'application/json',
        'idempotency-key': pub.key,
        ...this.authHeaders(),
      },
      body: pub.binary ?? pub.body,
      signal: abort.signal,
    })
      .then(async (res) => {
        const text = await res.text();
        done();
        if (res.status === 200) {
          const ack = JSON.parse(text) as PublishAck;
          this.publishAcked(pub, ack);
          this.pump();
          return;
        }
        let code = 'http_error';
        let message = `HTTP ${res.status}`;
        try {
          const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
          if (e?.code) code = e.code;
          if (e?.message) message = e.message;
        } catch {
          /* not JSON */
        }
        if (RETRIABLE_STATUS.has(res.status)) this.publishRetryLater(pub);
        else this.publishFailed(pub, new HeraldError(code, message, { status: res.status }));
      })
      .catch(() => {
        done();
        // The node may be gone: let the session notice, retry (maybe elsewhere).
        session.suspect();
        this.publishRetryLater(pub);
      });
  }
}

// ------------------------------------------------------------------ sessions

interface PatternState {
  status: 'pending' | 'active';
  /** A subscribe without since/cursor: its reply is a live start for waiters too. */
  fresh: boolean;
  waiters: Set<Subscription<unknown>>;
}

/** The HeraldError of a JSON error answer (`{"error":{"code","message"}}`). */
function errorFromBody(status: number, text: string, retryAfter: string | null = null): HeraldError {
  if (status === 503 || status === 429) return refusal(status, text, retryAfterMs(retryAfter), 'node');
  let code = status === 401 ? 'unauthorized' : 'connect_failed';
  let message = `HTTP ${status}`;
  try {
    const e = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
    if (e?.code) code = e.code;
    if (e?.message) message = e.message;
  } catch {
    /* not JSON */
  }
  return new HeraldError(code, message, { status, retriable: RETRIABLE_STATUS.has(status) });
}

/** Positions of a start cursor that apply to `sub`. */
function startPositions(sub: Subscription<unknown>, cursor: CursorValue, dropZero: boolean): [string, number][] {
  return [...cursor.positions].filter(
    ([topic, seq]) => sub.matches(topic) && (seq > 0 || !dropZero || topic === sub.pattern),
  );
}

/** Keeps only the positions of topics `pattern` matches. */
function restrictCursor(cursor: CursorValue, matches: (t: string) => boolean): string {
  return encodeCursor(cursor.floor, [...cursor.positions].filter(([t]) => matches(t)));
}

/** GET returning status, body text and Retry-After; network failures throw `connect_failed`. */
async function httpGet(
  client: HeraldClient,
  url: string,
  timeoutMs: number,
): Promise<{ status: number; text: string; retryAfter: string | null }> {
  const f = client.fetchImpl;
  if (!f) throw new HeraldError('transport_unavailable', 'no fetch implementation (pass options.fetch)');
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const res = await f(url, { signal: abort.signal });
    return { status: res.status, text: await res.text(), retryAfter: res.headers?.get?.('retry-after') ?? null };
  } catch (e) {
    throw new HeraldError('connect_failed', `${url}: ${String(e)}`, { cause: e });
  } finally {
    clearTimeout(timer);
  }
}

  /**
   * Where new subscriptions start: a long-poll without cursor and with
   * timeout 0 answers with the live starting cursor of its patterns (and any
   * message already in flight at that moment, which belongs to them).
   */
async function probeStart(
  client: HeraldClient,
  baseUrl: string,
  patterns: string[],
  subs: Subscription<unknown>[],
  timeoutMs: number,
): Promise<void> {
    const url = streamEndpoint(baseUrl, 'poll', patterns, { timeoutMs: 0, token: client.token });
    const r = await httpGet(client, url, timeoutMs);
    if (r.status !== 200) {
      const error = errorFromBody(r.status, r.text, r.retryAfter);
      if (r.status === 400 || r.status === 403) {
        // Some pattern was refused (invalid, or outside the token's claims).
        if (patterns.length > 1) {
          for (const p of patterns) await probeStart(client, baseUrl, [p], subs, timeoutMs);
          return;
        }
        for (const s of subs) if (s.pattern === patterns[0]) client.failSubscription(s, error);
        return;
      }
      throw error;
    }
    const answer = JSON.parse(r.text) as PollAnswer;
    answer.messages = answer.messages.map((m) => {
      const decoded = readMessage(m, 'poll answer', r.text);
      if (decoded instanceof HeraldError) throw decoded;
      return decoded;
    });
    const start = parseCursor(answer.cursor);
    // Messages in the answer come after the start: move those topics back.
    const first = new Map<string, number>();
    for (const m of answer.messages) {
      if (!first.has(m.topic) || m.seq < first.get(m.topic)!) first.set(m.topic, m.seq);
    }
    for (const g of answer.gaps ?? []) {
      if (!first.has(g.topic) || g.from < first.get(g.topic)!) first.set(g.topic, g.from);
    }
    for (const [topic, seq] of first) start.positions.set(topic, seq - 1);
    for (const s of subs) {
      if (s.started || s.closed || !patterns.includes(s.pattern)) continue;
      s.start(start.floor, startPositions(s, start, false));
    }
    if (answer.messages.length || answer.gaps?.length) {
      // Only the probed subscriptions: the others' positions are elsewhere.
      const only = new Set(subs.filter((s) => patterns.includes(s.pattern)));
      const gaps = [...(answer.gaps ?? [])];
      for (const m of answer.messages) {
        for (let i = 0; i < gaps.length; i++) {
          if (gaps[i]!.topic === m.topic && gaps[i]!.from < m.seq) client.deliverGap(gaps.splice(i--, 1)[0]!, only);
        }
        client.deliver(m, only);
      }
      for (const g of gaps) client.deliverGap(g, only);
    }
  }


/** One WebSocket connection and the patterns subscribed on it. */
class WsSession implements Session {
  readonly kind = 'ws' as const;
  private readonly pipe: WsPipe;
  private readonly patterns = new Map<string, PatternState>();
  private readonly ops = new Map<string, (frame: Record<string, unknown>) => void>();
  private readonly inflight = new Map<string, PendingPublish>();
  private active = false;
  private closed = false;

  constructor(
    private readonly client: HeraldClient,
    readonly url: string,
  ) {
    const o = client.options;
    this.pipe = new WsPipe(
      client.WebSocketImpl,
      wsEndpoint(url, client.token),
      {
        frame: (f) => this.onFrame(f),
        closed: (info) => {
          this.release();
          this.client.sessionClosed(this, info);
        },
        undecodable: (error) => this.undecodable(error),
      },
      { pingIntervalMs: o.pingIntervalMs, pongTimeoutMs: o.pongTimeoutMs },
    );
  }

  start(timeoutMs: number): Promise<void> {
    return this.pipe.open(timeoutMs);
  }

  activate(): void {
    if (this.closed) {
      this.client.sessionClosed(this, { reason: 'closed before use' });
      return;
    }
    this.active = true;
    // Resume every started subscription from one combined cursor (so the
    // order of the subscribe ops does not matter), then add new ones.
    const started = [...this.client.subs].filter((s) => s.started && !s.closed);
    this.subscribeStarted(started);
    this.syncSubs();
  }

  private subscribeStarted(started: Subscription<unknown>[]): void {
    if (started.length === 0) return;
    const cursor = combineCursors(started);
    const byPattern = new Map<string, Subscription<unknown>[]>();
    for (const s of started) {
      const list = byPattern.get(s.pattern);
      if (list) list.push(s);
      else byPattern.set(s.pattern, [s]);
    }
    for (const [pattern, subs] of byPattern) {
      this.sendSubscribe(pattern, { cursor: restrictCursor(cursor, subs[0]!.matches) }, subs);
    }
  }

  syncSubs(): void {
    if (!this.active || this.closed) return;
    const live = [...this.client.subs].filter((s) => !s.closed);
    // Subscriptions that carry a position (since / cursor) and are new here.
    const resumed = live.filter((s) => s.started && !this.patterns.has(s.pattern));
    if (resumed.length) {
      const onConnection = [...this.patterns.keys()];
      if (resumed.some((s) => onConnection.some((p) => patternsOverlap(p, s.pattern)))) {
        // This connection already delivers some of those topics and would
        // not replay them: resubscribe everything on a new connection.
        this.client.restartSession(this, 'resubscribing from a cursor');
        return;
      }
      this.subscribeStarted(resumed);
    }
    for (const s of live) {
      if (s.started || s.joinBuffer) continue;
      const st = this.patterns.get(s.pattern);
      if (!st) this.sendSubscribe(s.pattern, {}, [s]);
      else if (st.status === 'pending' && st.fresh) st.waiters.add(s);
      else this.join(s);
    }
    for (const pattern of [...this.patterns.keys()]) {
      if (!live.some((s) => s.pattern === pattern)) {
        this.patterns.delete(pattern);
        this.pipe.send({ op: 'unsubscribe', id: this.client.nextOpId('u'), topic: pattern });
      }
    }
  }

  /**
   * A live subscription to a pattern this connection already has (a second
   * subscribe would be a no-op): its start comes from a probe, and what the
   * connection delivers meanwhile is kept and then filtered by that start.
   */
  private join(s: Subscription<unknown>): void {
    s.joinBuffer = [];
    probeStart(this.client, this.url, [s.pattern], [s], this.client.options.openTimeoutMs).then(
      () => {
        const buffered = s.joinBuffer ?? [];
        s.joinBuffer = null;
        if (this.closed || s.closed || !s.started) return;
        const only = new Set([s]);
        for (const e of buffered) {
          if ('seq' in e) this.client.deliver(e, only);
          else this.client.deliverGap(e, only);
        }
        s.markActive();
      },
      (e: unknown) => {
        s.joinBuffer = null;
        // The node cannot serve now: another node.
        if (isNodeRefusal(e)) {
          if (!this.closed) this.client.sessionClosed(this, { reason: e.message, error: e });
          return;
        }
        // Node unreachable over HTTP: try again in a moment (a new
        // connection also retries).
        setTimeout(() => this.syncSubs(), 1_000);
      },
    );
  }

  private sendSubscribe(pattern: string, extra: { cursor?: string }, subs: Subscription<unknown>[]): void {
    const id = this.client.nextOpId('s');
    const st: PatternState = { status: 'pending', fresh: extra.cursor === undefined, waiters: new Set(subs) };
    this.patterns.set(pattern, st);
    this.ops.set(id, (frame) => {
      if (this.patterns.get(pattern) !== st) return; // unsubscribed meanwhile
      if (frame.type === 'subscribed') {
        st.status = 'active';
        let start: CursorValue | null = null;
        if (typeof frame.cursor === 'string') {
          try {
            start = parseCursor(frame.cursor);
          } catch {
            start = null;
          }
        }
        for (const s of st.waiters) {
          if (s.closed) continue;
          if (!s.started) {
            if (!start) {
              this.client.failSubscription(
                s,
                new HeraldError('subscribe_failed', 'the node sent no starting cursor (it needs a newer herald)'),
              );
              continue;
            }
            // Seq 0 entries are placeholders for topics the node is about to
            // replay; a wildcard tracks those from its floor instead.
            s.start(start.floor, startPositions(s, start, true));
          }
          s.markActive();
        }
        st.waiters.clear();
      } else if (frame.type === 'error') {
        this.patterns.delete(pattern);
        const error = new HeraldError(String(frame.code ?? 'error'), String(frame.message ?? 'subscribe refused'), {
          retryAfterMs: DEFAULT_RETRY_AFTER_MS,
        });
        if (isNodeRefusal(error)) {
          // The node lost its cluster since the connection opened: the
          // subscriptions keep their positions and move to another node.
          this.release();
          this.client.sessionClosed(this, { reason: `subscribe ${pattern}: ${error.message}`, error });
          return;
        }
        for (const s of st.waiters) this.client.failSubscription(s, error);
      }
    });
    this.pipe.send({ op: 'subscribe', id, topic: pattern, ...extra, ...(this.client.presenceEvents ? { presence: true } : {}) });
  }

  /** Switches the connection to a new token. */
  refresh(token: string): void {
    if (!this.active || this.closed) return;
    const id = this.client.nextOpId('r');
    this.ops.set(id, (f) => {
      if (f.type === 'error') {
        this.client.reportError(new HeraldError(String(f.code ?? 'error'), `token refresh refused: ${String(f.message ?? '')}`));
      }
    });
    this.pipe.send({ op: 'refresh', id, token });
  }

  /** Sends one publish op; false if the socket cannot take it. */
  sendPublish(pub: PendingPublish): boolean {
    if (!this.active || this.closed) return false;
    const id = this.client.nextOpId('p');
    // The body is already JSON; splice it in to keep it byte for byte.
    const frame = pub.binary
      ? encodePublish(pub.topic, pub.binary, { id, idempotencyKey: pub.key })
      : `{"op":"publish","id":${JSON.stringify(id)},"topic":${JSON.stringify(pub.topic)},"idempotency_key":${JSON.stringify(pub.key)},"data":${pub.body}}`;
    this.inflight.set(id, pub);
    pub.sending = true;
    this.ops.set(id, (f) => {
      this.inflight.delete(id);
      if (f.type === 'ack' && typeof f.seq === 'number') {
        this.client.publishAcked(pub, { topic: String(f.topic ?? pub.topic), seq: f.seq });
        this.client.pump();
      } else if (f.type === 'error') {
        const code = String(f.code ?? 'error');
        if (code === 'unavailable' || code === 'rate_limited') this.client.publishRetryLater(pub);
        else this.client.publishFailed(pub, new HeraldError(code, String(f.message ?? 'publish refused')));
      }
    });
    if (!this.pipe.send(frame)) {
      this.inflight.delete(id);
      this.ops.delete(id);
      pub.sending = false;
      return false;
    }
    return true;
  }

  /** The node sent something undecodable: its subscriptions fail, the connection is replaced. */
  private undecodable(error: HeraldError): void {
    if (this.closed) return;
    this.pipe.close(1003, 'undecodable frame');
    this.client.undecodable(error);
    this.release();
    this.client.sessionClosed(this, { reason: error.message, error });
  }

  private onFrame(frame: Record<string, unknown>): void {
    if (this.closed) return;
    switch (frame.type) {
      case 'message': {
        // Binary deliveries arrive decoded (data a Uint8Array); a JSON
        // frame may carry one as base64 (`encoding`).
        const m = readMessage(frame, 'message frame', JSON.stringify(frame));
        if (m instanceof HeraldError) this.undecodable(m);
        else this.client.deliver({ topic: m.topic, seq: m.seq, ts: m.ts, data: m.data });
        return;
      }
      case 'unsubscribed':
        if (frame.id === undefined && typeof frame.topic === 'string') {
          // Not asked for: the admin API ended it on the node.
          this.patterns.delete(frame.topic);
          this.client.serverUnsubscribed(frame.topic);
          return;
        }
        this.reply(frame);
        return;
      case 'gap':
        if (typeof frame.topic === 'string' && typeof frame.from === 'number' && typeof frame.to === 'number') {
          this.client.deliverGap({ topic: frame.topic, from: frame.from, to: frame.to });
        }
        return;
      case 'join':
      case 'leave':
        if (isPresenceEvent(frame)) this.client.emitPresence(frame);
        return;
      default:
        this.reply(frame);
    }
  }

  /** A reply to an op (matched by `id`), or an error frame of none. */
  private reply(frame: Record<string, unknown>): void {
    const id = frame.id === undefined || frame.id === null ? undefined : String(frame.id);
    const handler = id === undefined ? undefined : this.ops.get(id);
    if (handler) {
      this.ops.delete(id!);
      handler(frame);
    } else if (frame.type === 'error') {
      this.client.reportError(new HeraldError(String(frame.code ?? 'error'), String(frame.message ?? '')));
    }
  }

  /** Publishes in flight go back to the queue (same keys). */
  private release(): void {
    this.closed = true;
    for (const pub of this.inflight.values()) pub.sending = false;
    this.inflight.clear();
    this.ops.clear();
  }

  close(): void {
    if (this.closed) {
      this.pipe.close();
      return;
    }
    this.release();
    this.pipe.close();
  }
}

/** SSE or long-poll: one stream for all subscriptions, publishes over REST. */
class StreamSession implements Session {
  private pipe: StreamPipe | null = null;
  private pipeKey = '';
  private building: Promise<void> | null = null;
  private dirty = false;
  private scheduled = false;
  private active = false;
  private closed = false;

  constructor(
    private readonly client: HeraldClient,
    readonly kind: 'sse' | 'poll',
    readonly url: string,
  ) {}

  async start(timeoutMs: number): Promise<void> {
    this.building = this.rebuild(timeoutMs);
    try {
      await this.building;
    } finally {
      this.building = null;
    }
  }

  activate(): void {
    this.active = true;
    this.syncSubs();
  }

  private live(): Subscription<unknown>[] {
    return [...this.client.subs].filter((s) => !s.closed);
  }

  private keyOf(subs: Subscription<unknown>[]): string {
    return [...new Set(subs.filter((s) => s.started).map((s) => s.pattern))].sort().join('\n');
  }

  syncSubs(): void {
    if (!this.active || this.closed) return;
    const live = this.live();
    if (live.every((s) => s.started) && this.keyOf(live) === this.pipeKey) {
      for (const s of live) s.markActive();
      return;
    }
    if (this.building) {
      this.dirty = true;
      return;
    }
    if (this.scheduled) return;
    this.scheduled = true;
    // Batch the subscribe/unsubscribe calls of one tick into one restart.
    setTimeout(() => {
      this.scheduled = false;
      if (this.closed) return;
      this.building = (async () => {
        try {
          do {
            this.dirty = false;
            await this.rebuild(this.client.options.openTimeoutMs);
          } while (this.dirty && !this.closed);
        } catch (e) {
          if (!this.closed) this.client.sessionClosed(this, { reason: 'resubscribe failed', error: e });
        } finally {
          this.building = null;
        }
      })();
    }, 0);
  }

  /** A REST publish could not reach the node. */
  suspect(): void {
    if (this.active && !this.closed && !this.pipe && !this.building) {
      this.client.sessionClosed(this, { reason: 'node unreachable' });
    }
  }

  private requireFetch(): FetchLike {
    const f = this.client.fetchImpl;
    if (!f) throw new HeraldError('transport_unavailable', 'no fetch implementation (pass options.fetch)');
    return f;
  }

  /**
   * Stops the stream, starts new subscriptions from a probe, and opens a
   * stream for all of them from one combined cursor.
   */
  private async rebuild(timeoutMs: number, refusedOnce = false): Promise<void> {
    this.pipe?.close();
    this.pipe = null;
    this.pipeKey = '';
    const o = this.client.options;
    let probed = false;
    let live = this.live();
    const toProbe: Subscription<unknown>[] = [];
    // New subscriptions start live from a probe, even when another one has
    // the same pattern (that one may still be catching up from a cursor).
    for (const s of live) if (!s.started) toProbe.push(s);
    if (toProbe.length) {
      const patterns = [...new Set(toProbe.map((s) => s.pattern))];
      for (let i = 0; i < patterns.length; i += MAX_STREAM_TOPICS) {
        await probeStart(this.client, this.url, patterns.slice(i, i + MAX_STREAM_TOPICS), toProbe, timeoutMs);
        probed = true;
      }
    }
    if (this.closed) throw new HeraldError('closed', 'session closed');
    live = this.live();
    const started = live.filter((s) => s.started);
    if (started.length === 0) {
      if (!probed) {
        const r = await httpGet(this.client, `${this.url}/healthz`, timeoutMs);
        if (r.status !== 200) throw new HeraldError('connect_failed', `healthz answered ${r.status}`);
      }
      return;
    }
    // Wildcards first (protocol-spec §16.1: a concrete topic before a
    // wildcard matching it starts live when the cursor does not list it).
    const patterns = [...new Set(started.map((s) => s.pattern))].sort(
      (a, b) => Number(isConcrete(a)) - Number(isConcrete(b)) || (a < b ? -1 : a > b ? 1 : 0),
    );
    if (patterns.length > MAX_STREAM_TOPICS) {
      throw new HeraldError('bad_request', `${this.kind} carries at most ${MAX_STREAM_TOPICS} patterns (${patterns.length} subscribed)`);
    }
    const cursor = combineCursors(started);
    const cursorText = encodeCursor(cursor.floor, cursor.positions);
    const handlers: PipeHandlers = {
      message: (m) => {
        if (this.pipe === pipe && !this.closed) this.client.deliver(m);
      },
      gap: (g) => {
        if (this.pipe === pipe && !this.closed) this.client.deliverGap(g);
      },
      presence: (p) => {
        if (this.pipe === pipe && !this.closed) this.client.emitPresence(p);
      },
      unsubscribed: (pattern) => {
        if (this.pipe === pipe && !this.closed) this.client.serverUnsubscribed(pattern);
      },
      closed: (info) => {
        if (this.pipe !== pipe || this.closed) return;
        this.pipe = null;
        this.pipeKey = '\u0000closed';
        this.client.sessionClosed(this, info);
      },
      undecodable: (error) => {
        if (this.pipe !== pipe || this.closed) return;
        this.client.undecodable(error);
        this.pipe = null;
        this.pipeKey = '\u0000closed';
        this.client.sessionClosed(this, { reason: error.message, error });
      },
    };
    let pipe: StreamPipe;
    if (this.kind === 'sse') {
      const url = streamEndpoint(this.url, 'sse', patterns, { cursor: cursorText, token: this.client.token, presence: this.client.presenceEvents });
      const ES = this.client.EventSourceImpl;
      pipe = ES ? new EventSourcePipe(ES, url, handlers) : new FetchSsePipe(this.requireFetch(), url, handlers, o.sseIdleTimeoutMs);
    } else {
      pipe = new PollPipe(
        this.requireFetch(),
        (c, t) => streamEndpoint(this.url, 'poll', patterns, { cursor: c, timeoutMs: t, token: this.client.token, presence: this.client.presenceEvents }),
        cursorText,
        handlers,
        o.pollTimeoutMs,
      );
    }
    this.pipe = pipe;
    try {
      await pipe.open(timeoutMs);
    } catch (e) {
      if (this.pipe === pipe) this.pipe = null;
      pipe.close();
      const status = (e as HeraldError).status;
      // EventSource hides the status of a refused request.
      const unknown = status === undefined && pipe instanceof EventSourcePipe;
      if ((status === 400 || status === 403 || unknown) && !refusedOnce) {
        // Find the refused patterns (one probe each), drop their
        // subscriptions, and try once more with the others.
        if (await this.dropRefused(patterns, started, timeoutMs)) return this.rebuild(timeoutMs, true);
      }
      throw e;
    }
    if (this.closed || this.pipe !== pipe) {
      pipe.close();
      throw new HeraldError('closed', 'session closed');
    }
    this.pipeKey = this.keyOf(started);
    // Before adoption, activate() marks them.
    if (this.active) for (const s of started) s.markActive();
  }

  /** Fails the subscriptions whose pattern the node refuses on its own. */
  private async dropRefused(patterns: string[], subs: Subscription<unknown>[], timeoutMs: number): Promise<number> {
    let dropped = 0;
    for (const p of patterns) {
      const url = streamEndpoint(this.url, 'poll', [p], { timeoutMs: 0, token: this.client.token });
      const r = await httpGet(this.client, url, timeoutMs);
      if (r.status !== 400 && r.status !== 403) continue;
      const error = errorFromBody(r.status, r.text);
      for (const s of subs) {
        if (s.pattern === p && !s.closed) {
          this.client.failSubscription(s, error);
          dropped++;
        }
      }
    }
    return dropped;
  }

  close(): void {
    this.closed = true;
    this.pipe?.close();
    this.pipe = null;
  }
}
