// A scripted in-process WebSocket (no server) for unit tests of the client.

/** A fake broker: every socket it opens answers ops through `onOp`. */
export function fakeBroker({ behavior = () => 'open', onOp, onBinary } = {}) {
  const sockets = [];
  class FakeWS {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.binarySent = [];
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
      if (typeof text !== 'string') {
        this.binarySent.push(new Uint8Array(text));
        onBinary?.(this, new Uint8Array(text));
        return;
      }
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
    /** A binary frame, as a WebSocket with binaryType 'arraybuffer' hands it over. */
    pushBinary(bytes) {
      const copy = new Uint8Array(bytes);
      this.onmessage?.({ data: copy.buffer });
    }
    ops(kind) {
      return this.sent.filter((o) => o.op === kind);
    }
  }
  return { FakeWS, sockets };
}

