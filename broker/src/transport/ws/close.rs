//! The close codes a Herald WebSocket ends with, and what each asks of the
//! client (protocol-spec §6.7).

/// The connection is done (the client closed, or the server echoes it).
pub const NORMAL: u16 = 1000;
/// A framing error (RFC 6455).
pub const PROTOCOL_ERROR: u16 = 1002;
/// Text that is not UTF-8 (RFC 6455).
pub const INVALID_DATA: u16 = 1007;
/// A frame or message over the limit (RFC 6455).
pub const MESSAGE_TOO_BIG: u16 = 1009;
/// The node failed to serve the connection (e.g. a damaged log record).
pub const INTERNAL_ERROR: u16 = 1011;
/// The node is draining: reconnect, to another node if possible, and resume.
pub const SERVICE_RESTART: u16 = 1012;
/// The client fell too far behind under the `disconnect` policy and must
/// resume from its last seq.
pub const SLOW_CONSUMER: u16 = 4001;
/// Nothing heard from the client, or nothing taken by it, within the idle
/// timeout.
pub const IDLE_TIMEOUT: u16 = 4002;
/// The connection's token expired without a `refresh`.
pub const TOKEN_EXPIRED: u16 = 4003;
/// The admin API disconnected the client: unlike every other code, it must
/// not reconnect on its own (its application decides whether and when).
pub const KICKED: u16 = 4004;

/// Reason sent with [`SERVICE_RESTART`].
pub const DRAINING_REASON: &str = "node draining; reconnect, to another node if possible";
/// Reason sent with [`KICKED`].
pub const KICKED_REASON: &str = "disconnected by the server; do not reconnect automatically";
/// Reason sent with [`SLOW_CONSUMER`].
pub const SLOW_CONSUMER_REASON: &str = "slow consumer: resume from your last seq";
