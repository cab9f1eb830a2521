import { encodeCursor } from './cursor.js';
import { compilePattern, isConcrete } from './pattern.js';

/** A delivered message: the envelope every transport carries. */
export interface HeraldMessage<T = unknown> {
  /** The concrete topic it was published to. */
  topic: string;
  /** Position in the topic: 1, 2, 3, ... */
  seq: number;
  /** Publish time set by the broker, ms since the Unix epoch. */
  ts: number;
  /**
   * The payload, as published: the JSON value, or a `Uint8Array` with the
   * exact bytes of a binary message.
   */
  data: T;
}

/** Messages `from..=to` of `topic` were removed by retention before they could be delivered. */
export interface GapInfo {
  topic: string;
  from: number;
  to: number;
}

/** Called for every message of a subscription, in seq order per topic, never twice. */
export type MessageHandler<T = unknown> = (message: HeraldMessage<T>, subscription: Subscription<T>) => void;

/** Options of {@link HeraldClient.subscribe}. */
export interface SubscribeOptions {
  /**
   * Concrete topics only: start after this seq (every retained message with a
   * larger seq is delivered first, then live ones).
   */
  since?: number;
  /**
   * Resume from a cursor saved earlier with {@link Subscription.cursor}
   * (any pattern, any node).
   */
  cursor?: string;
}

/** Result of running one message through a subscription's filter. */
export interface AcceptResult {
  deliver: boolean;
  /** Set when seqs were skipped on a topic the subscription tracks (should never happen). */
  skipped?: { from: number; to: number };
}

/**
 * One subscription of a {@link HeraldClient}. It remembers where it stands
 * (a floor and the last seq per topic) so that it can resume on any node
 * and any transport with no gap and no duplicate.
 */
export class Subscription<T = unknown> {
  /** The pattern subscribed to. */
  readonly pattern: string;
  /** Whether the pattern has no wildcard. */
  readonly concrete: boolean;
  /**
   * Resolves once the broker has confirmed the subscription (messages
   * published after that are delivered); rejects if it was refused.
   */
  readonly ready: Promise<void>;

  /** @internal */ readonly handler: MessageHandler<T>;
  /** @internal */ readonly matches: (topic: string) => boolean;
  /** @internal */ floor: number | null = null;
  /** @internal */ positions = new Map<string, number>();
  /** @internal */ started = false;
  /** @internal */ active = false;
  /** @internal */ closed = false;
  /** @internal */ readonly id: number;
  /** @internal Events seen while its start is being probed (WebSocket join). */
  joinBuffer: (HeraldMessage<unknown> | GapInfo)[] | null = null;
  /** @internal */ onUnsubscribe: ((sub: Subscription<T>) => void) | null = null;
  private resolveReady!: () => void;
  private rejectReady!: (e: unknown) => void;
  private settled = false;
  private endError: unknown = undefined;

  /** @internal */
  constructor(id: number, pattern: string, handler: MessageHandler<T>) {
    this.id = id;
    this.pattern = pattern;
    this.concrete = isConcrete(pattern);
    this.handler = handler;
    this.matches = compilePattern(pattern);
    this.ready = new Promise<void>((res, rej) => {
      this.resolveReady = res;
      this.rejectReady = rej;
    });
    this.ready.catch(() => {});
  }

  /** Stops the subscription: no message is delivered to it afterwards. */
  unsubscribe(): void {
    if (this.closed) return;
    this.closed = true;
    this.active = false;
    this.onUnsubscribe?.(this);
  }

  /** Whether {@link unsubscribe} was called (or the subscription was refused). */
  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Where the subscription stands, as a cursor that `subscribe(pattern,
   * handler, {cursor})` accepts later (e.g. after a page reload); null until
   * the subscription has started.
   */
  cursor(): string | null {
    if (!this.started) return null;
    return encodeCursor(this.floor ?? 0, this.positions);
  }

  /** The last seq delivered (or reported lost) on `topic`, if any. */
  position(topic: string): number | undefined {
    return this.positions.get(topic);
  }

  /** @internal Starts from a floor and positions (first start only). */
  start(floor: number | null, positions: Iterable<[string, number]>): void {
    if (this.started) return;
    this.started = true;
    this.floor = floor;
    this.positions = new Map(positions);
  }

  /** @internal Starts as a copy of another subscription's position. */
  startFrom(other: Subscription<unknown>): void {
    this.start(other.floor, other.positions);
  }

  /** @internal */
  markActive(): void {
    if (this.closed) return;
    this.active = true;
    if (!this.settled) {
      this.settled = true;
      this.resolveReady();
    }
  }

  /**
   * Why the subscription ended, when it did not end by {@link unsubscribe}:
   * refused (`ready` rejected with it), ended by the node (`unsubscribed`),
   * or the client was disconnected by the node (`kicked`).
   */
  get error(): unknown {
    return this.endError;
  }

  /** @internal */
  fail(error: unknown): void {
    if (this.endError === undefined && !this.closed) this.endError = error;
    this.closed = true;
    this.active = false;
    if (!this.settled) {
      this.settled = true;
      this.rejectReady(error);
    }
  }

  /**
   * @internal Decides whether a message is new for this subscription and
   * records it. Tracked topics: only `seq > last`. Untracked topics: only
   * messages at or after the subscription's floor (earlier ones precede it).
   */
  accept(message: HeraldMessage<unknown>): AcceptResult {
    const last = this.positions.get(message.topic);
    if (last !== undefined) {
      if (message.seq <= last) return { deliver: false };
      this.positions.set(message.topic, message.seq);
      if (message.seq > last + 1) return { deliver: true, skipped: { from: last + 1, to: message.seq - 1 } };
      return { deliver: true };
    }
    if (this.floor !== null && message.ts < this.floor) return { deliver: false };
    this.positions.set(message.topic, message.seq);
    return { deliver: true };
  }

  /** @internal Records a gap; returns whether it covers anything not yet seen. */
  acceptGap(gap: GapInfo): boolean {
    const last = this.positions.get(gap.topic);
    if (last !== undefined && last >= gap.to) return false;
    this.positions.set(gap.topic, gap.to);
    return true;
  }
}
