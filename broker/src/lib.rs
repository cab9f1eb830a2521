//! Herald: a clustered real-time pub/sub broker.
//!
//! Publish over REST or WebSocket; subscribe over WebSocket, Server-Sent
//! Events or long-poll; every topic is a durable, sequenced log, so clients
//! resume without gaps or duplicates. See `broker/ARCHITECTURE.md` for the
//! hot path and `protocol-spec/` for the wire protocol.
//!
//! [`run`] starts a node on a bound listener; `main.rs` only parses flags.

#![warn(missing_docs)]

pub mod auth;
pub mod cluster;

pub mod config;

pub mod engine;
pub mod error;
pub mod http;
pub mod hub;
pub mod json;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod server;
pub mod state;
pub mod stats;
pub mod telemetry;
pub mod transport;
pub mod validate;
pub mod wire;

pub use server::{run, run_reporting, Listening, ServerError};
