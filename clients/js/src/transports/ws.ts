import { binaryPayload, decodeDelivery } from '../binary.js';
import { HeraldError } from '../errors.js';
import type { CloseInfo, WebSocketConstructor, WebSocketLike } from './types.js';

/** Callbacks of a {@link WsPipe}. */
export interface WsPipeHandlers {
  /**
   * One server frame: a parsed JSON text frame, or a binary delivery
   * (kind 0x02) as `{type: 'message', topic, seq, ts, data: Uint8Array}`.
   */
  frame(frame: Record<string, unknown>): void;
  /** A frame that is not a JSON object: the pipe is closed, no `closed` follows. */
  undecodable(error: HeraldError): void;
  /** Called at most once, only after the socket was open and not after `close()`. */
  closed(info: CloseInfo): void;
}

/** One WebSocket to `/v1/ws`, with an application-level liveness check. */
export class WsPipe {
  private socket: WebSocketLike | null = null;
  private done = false;
  private opened = false;
  private lastFrameAt = 0;
  private pingTimer: ReturnType<typeof setInterval> | null = null;
  private pingSeq = 0;

  constructor(
    private readonly ctor: WebSocketConstructor | undefined,
    private readonly url: string,
    private readonly handlers: WsPipeHandlers,
    private readonly opts: { pingIntervalMs: number; pongTimeoutMs: number },
  ) {}

  /** Opens the socket; rejects if it does not open within `timeoutMs`. */
  open(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (!this.ctor) {
        reject(new HeraldError('transport_unavailable', 'no WebSocket implementation (pass options.WebSocket)'));
        return;
      }
      let socket: WebSocketLike;
      try {
        socket = new this.ctor(this.url);
      } catch (e) {
        reject(new HeraldError('transport_unavailable', `WebSocket constructor failed: ${String(e)}`, { cause: e }));
        return;
      }
      this.socket = socket;
      // Binary deliveries must be read synchronously, in order with the
      // text frames (a Blob, the browser's default, reads asynchronously).
      try {
        (socket as { binaryType?: string }).binaryType = 'arraybuffer';
      } catch {
        /* an implementation without binaryType hands over bytes anyway */
      }
      let settled = false;
      const fail = (why: string, cause?: unknown) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.done = true;
        try {
          socket.close();
        } catch {
          /* ignore */
        }
        reject(new HeraldError('connect_failed', why, { cause }));
      };
      const timer = setTimeout(() => fail(`WebSocket did not open within ${timeoutMs} ms`), timeoutMs);
      // Open = the handshake succeeded AND a frame made the round trip (a
      // proxy that upgrades but never forwards frames counts as a failure).
      let handshake = false;
      socket.onopen = () => {
        if (settled) return;
        if (this.done) return fail('closed while opening');
        handshake = true;
        try {
          socket.send(JSON.stringify({ op: 'ping', id: 'open' }));
        } catch (e) {
          fail('WebSocket send failed', e);
        }
      };
      const opened = () => {
        settled = true;
        clearTimeout(timer);
        this.opened = true;
        this.lastFrameAt = Date.now();
        this.startPing();
        resolve();
      };
      socket.onerror = (ev) => {
        if (!this.opened) fail('WebSocket error before open', ev);
      };
      socket.onclose = (ev) => {
        if (!this.opened) {
          fail(`WebSocket closed before open (code ${ev?.code ?? '?'})`);
          return;
        }
        this.finish({ code: ev?.code, reason: ev?.reason });
      };
      socket.onmessage = (ev) => {
        if (this.done) return;
        if (!this.opened) {
          if (handshake && !settled) opened();
          else return;
        }
        this.lastFrameAt = Date.now();
        const data = ev.data;
        if (typeof data !== 'string') {
          this.binaryFrame(data);
          return;
        }
        let frame: unknown;
        try {
          frame = JSON.parse(data);
        } catch {
          frame = undefined;
        }
        if (frame && typeof frame === 'object' && !Array.isArray(frame)) {
          this.handlers.frame(frame as Record<string, unknown>);
        } else {
          // Never skipped silently; a reconnect would only meet it again.
          this.close(1003, 'undecodable frame');
          this.handlers.undecodable(new HeraldError('bad_response', `undecodable WebSocket frame: ${data.slice(0, 200)}`));
        }
      };
    });
  }

  /** A binary frame from the node: a delivery (kind 0x02), or undecodable. */
  private binaryFrame(data: unknown): void {
    const bytes = binaryPayload(data);
    let frame: Record<string, unknown> | null = null;
    let error: HeraldError;
    if (bytes) {
      try {
        frame = { type: 'message', ...decodeDelivery(bytes) };
      } catch (e) {
        error = e as HeraldError;
      }
    } else {
      error = new HeraldError('bad_response', 'binary WebSocket frame of an unreadable type (set binaryType to arraybuffer)');
    }
    if (frame) {
      this.handlers.frame(frame);
      return;
    }
    this.close(1003, 'undecodable frame');
    this.handlers.undecodable(error!);
  }

  /**
   * Sends one op (an object, or its JSON text) as a text frame, or a binary
   * frame (`Uint8Array`); returns false if the socket is not open.
   */
  send(op: unknown): boolean {
    if (this.done || !this.socket || this.socket.readyState !== 1) return false;
    try {
      this.socket.send(op instanceof Uint8Array ? op : typeof op === 'string' ? op : JSON.stringify(op));
      return true;
    } catch {
      return false;
    }
  }

  /** Closes without calling `closed`. */
  close(code = 1000, reason = 'client closed'): void {
    if (this.done && !this.socket) return;
    this.done = true;
    this.stopPing();
    const s = this.socket;
    this.socket = null;
    if (s) {
      s.onmessage = null;
      s.onopen = null;
      try {
        s.close(code, reason);
      } catch {
        /* ignore */
      }
    }
  }

  private finish(info: CloseInfo): void {
    if (this.done) return;
    this.done = true;
    this.stopPing();
    this.socket = null;
    this.handlers.closed(info);
  }

  private startPing(): void {
    const { pingIntervalMs, pongTimeoutMs } = this.opts;
    if (!(pingIntervalMs > 0)) return;
    const tick = Math.max(50, Math.min(pingIntervalMs, pongTimeoutMs) / 2);
    let lastPingAt = Date.now();
    this.pingTimer = setInterval(() => {
      const now = Date.now();
      if (now - this.lastFrameAt > pingIntervalMs + pongTimeoutMs) {
        // Nothing (not even a pong) for too long: the link is dead.
        const s = this.socket;
        this.finish({ code: 4000, reason: 'no answer to pings' });
        try {
          s?.close(4000, 'no answer to pings');
        } catch {
          /* ignore */
        }
        return;
      }
      if (now - lastPingAt >= pingIntervalMs) {
        lastPingAt = now;
        this.send({ op: 'ping', id: `ping-${++this.pingSeq}` });
      }
    }, tick);
    (this.pingTimer as { unref?: () => void }).unref?.();
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
  }
}
