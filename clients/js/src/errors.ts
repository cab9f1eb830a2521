/** An error reported by a Herald node or by the client itself. */
export class HeraldError extends Error {
  /**
   * Machine-readable code: the server's (`invalid_topic`, `bad_request`,
   * `unavailable`, ...) or the client's (`offline`, `timeout`, `closed`,
   * `buffer_full`, `transport_unavailable`, `connect_failed`, `subscribe_failed`,
   * `bad_response`: something a node sent could not be decoded).
   */
  readonly code: string;
  /** HTTP status, when the error came from an HTTP answer. */
  readonly status: number | undefined;
  /** Whether retrying the same request later may succeed. */
  readonly retriable: boolean;
  /** How long the node asked to wait before asking it again (its `Retry-After`), when it refused. */
  readonly retryAfterMs: number | undefined;

  constructor(
    code: string,
    message: string,
    opts: { status?: number; retriable?: boolean; retryAfterMs?: number; cause?: unknown } = {},
  ) {
    super(message);
    this.name = 'HeraldError';
    this.code = code;
    this.status = opts.status;
    this.retriable = opts.retriable ?? false;
    this.retryAfterMs = opts.retryAfterMs;
    if (opts.cause !== undefined) (this as { cause?: unknown }).cause = opts.cause;
  }
}
