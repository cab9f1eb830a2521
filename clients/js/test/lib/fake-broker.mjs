// A scripted in-process WebSocket (no server) for unit tests of the client.

/** A fake broker: every socket it opens answers ops through `onOp`. */
export function fakeBroker({ behavior = () => 'open', onOp } = {}) {
  const sockets = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.onopen = this.onclose = this.onerror = this.onmessage = null;
      const b = behavior(url, sockets.length);
      if (b === 'throw') throw new Error('WebSocket blocked');
      sockets.push(this);
      if (b === 'hang') return; // never opens
      setTimeout(() => {
        if (b === 'open') {
          this.readyState = 1;
          this.onopen?.({});
        } else {
          this.readyState = 3;
          this.onerror?.({});
          this.onclose?.({ code: 1006, reason: '' });
        }
      }, 1);
    }
    send(text) {
      const op = JSON.parse(text);
      this.sent.push(op);
      if (op.op === 'ping') return this.push({ type: 'pong', id: op.id });
      onOp?.(this, op);
    }
    close(code = 1000) {
      if (this.readyState === 3) return;
      this.readyState = 3;
    }
    /** The server closes (or the link drops). */
    drop(code = 1006) {
      if (this.readyState === 3) return;
      this.readyState = 3;
      this.onclose?.({ code, reason: '' });
    }
    push(frame) {
      this.onmessage?.({ data: JSON.stringify(frame) });
    }
    ops(kind) {
      return this.sent.filter((o) => o.op === kind);
    }
  }
  return { FakeWS, sockets };
}

