#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod binary;
mod client;
mod cursor;
pub mod decode;
mod error;
mod mux;
mod poll;
mod sse;
mod subscription;
mod types;
mod ws;

pub use binary::Payload;
pub use client::{Client, ClientBuilder};
pub use error::Error;
pub use subscription::{Stats, Subscription};
pub use types::{
    ConnectionEvent, Event, History, Message, Presence, PresentClient, Published, Start, Transport,
};

/// Re-exported so that users need no direct dependency to name payloads.
pub use bytes;
/// Re-exported so that users need no direct dependency to name payloads.
pub use serde_json;
