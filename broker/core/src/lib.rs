//! Herald's domain types, with no framework in them (no actix, no sled, no
//! tokio): what the broker, the Rust client and the benchmarks share.
//!
//! * [`topic`] — topic names and subscription patterns;
//! * [`message`] — a sequenced message and its wire encodings, built once;
//! * [`binary`] — the binary WebSocket publish and delivery frames;
//! * [`cursor`] — resume cursors;
//! * [`websocket`] — RFC 6455 frame headers, masking, close payloads;
//! * [`owner`] — which cluster member sequences a topic.

#![warn(missing_docs)]

pub mod binary;
pub mod cursor;
pub mod message;
pub mod owner;
pub mod topic;
pub mod websocket;

pub use cursor::{Cursor, CursorError};
pub use message::{Message, Payload, TopicHead};
pub use topic::{Pattern, Topic, TopicError};
