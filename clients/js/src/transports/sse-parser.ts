/** One dispatched Server-Sent Event. */
export interface SseEvent {
  event: string;
  data: string;
  id: string | undefined;
}

/**
 * An incremental text/event-stream parser (WHATWG HTML §9.2.6): feed it
 * decoded text chunks, it calls `onEvent` for every complete event with
 * data. Comment lines and id-only blocks update nothing but `lastEventId`.
 */
export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private eventType = '';
  private sawCr = false;
  /** The last `id:` seen (what a reconnect would send as Last-Event-ID). */
  lastEventId: string | undefined;
  /** The last `retry:` (ms): how long the server asks to wait before reconnecting. */
  retry: number | undefined;

  constructor(private readonly onEvent: (event: SseEvent) => void) {}

  feed(chunk: string): void {
    let text = chunk;
    if (this.sawCr && text.startsWith('\n')) text = text.slice(1);
    this.sawCr = false;
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer.charCodeAt(i);
      if (c === 10 || c === 13) {
        this.line(this.buffer.slice(start, i));
        if (c === 13) {
          if (i + 1 < this.buffer.length) {
            if (this.buffer.charCodeAt(i + 1) === 10) i++;
          } else {
            this.sawCr = true;
          }
        }
        start = i + 1;
      }
    }
    this.buffer = this.buffer.slice(start);
  }

  private line(line: string): void {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
    }
    switch (field) {
      case 'event':
        this.eventType = value;
        break;
      case 'data':
        this.data.push(value);
        break;
      case 'id':
        if (!value.includes('\0')) this.lastEventId = value;
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields
    }
  }

  private dispatch(): void {
    const data = this.data;
    const type = this.eventType || 'message';
    this.data = [];
    this.eventType = '';
    if (data.length === 0) return;
    this.onEvent({ event: type, data: data.join('\n'), id: this.lastEventId });
  }
}
