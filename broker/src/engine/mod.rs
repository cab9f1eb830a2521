//! The engine boundary: how a publish becomes a sequenced, durable message
//! that reaches every subscriber.
//!
//! The HTTP and WebSocket layers only talk to [`Engine`]. The single-node
//! engine ([`LocalEngine`]) sequences messages itself; the cluster engine
//! (`crate::cluster`) plugs in behind the same trait.

pub mod local;
pub mod sequencer;

use async_trait::async_trait;

use crate::hub::Topic;

pub use self::{
    local::LocalEngine,
    sequencer::{Durability, Sequencer},
};

/// One message to publish.
#[derive(Debug, Clone)]
pub struct PublishItem {
    /// Destination (validated, concrete).
    pub topic: Topic,
    /// The `data` value as compact JSON text.
    pub data: String,
    /// Optional `Idempotency-Key`, scoped to the topic.
    pub idempotency_key: Option<String>,
}

/// The outcome of one accepted publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The topic.
    pub topic: Topic,
    /// Its seq.
    pub seq: u64,
    /// Its timestamp.
    pub ts: u64,
    /// True when an earlier publish with the same idempotency key is being
    /// reported instead of a new one.
    pub duplicate: bool,
}

/// Why a publish failed. Every variant means nothing was acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// Storage or cluster cannot take writes now; the client should retry.
    #[error("{0}")]
    Unavailable(String),
}

/// Sequences, persists and fans out publishes.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Publishes `items` atomically, in order. On `Ok` every message is
    /// durable (as configured) and handed to fan-out.
    async fn publish(&self, items: Vec<PublishItem>) -> Result<Vec<Published>, PublishError>;

    /// `Ok` when publishes can be accepted, else why not.
    fn readiness(&self) -> Result<(), String>;

    /// Live cluster members, this node included, sorted; empty when the
    /// engine is not clustered (the dashboard's node list).
    fn members(&self) -> Vec<String> {
        Vec::new()
    }

    /// Stops accepting publishes, finishes those in flight and makes the log
    /// durable.
    async fn shutdown(&self);
}
