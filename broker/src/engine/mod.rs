//! The engine boundary: how a publish becomes a sequenced, durable message
//! that reaches every subscriber.
//!
//! The HTTP and WebSocket layers only talk to [`Engine`]. The single-node
//! engine ([`LocalEngine`]) sequences messages itself; the cluster engine
//! (`crate::cluster`) plugs in behind the same trait.

pub mod local;
pub mod sequencer;

use async_trait::async_trait;

use crate::hub::{control::Order, Payload, Topic};

pub use self::{
    local::LocalEngine,
    sequencer::{Durability, Sequencer},
};

/// One message to publish.
#[derive(Debug, Clone)]
pub struct PublishItem {
    /// Destination (validated, concrete).
    pub topic: Topic,
    /// The `data` value: compact JSON text, or raw bytes.
    pub data: Payload,
    /// Optional `Idempotency-Key`, scoped to the topic.
    pub idempotency_key: Option<String>,
    /// W3C trace context the message carries to subscribers.
    pub traceparent: Option<String>,
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

/// What a clustered engine reports about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStatus {
    /// Live members, this node included, sorted.
    pub members: Vec<String>,
    /// Connected to NATS now.
    pub nats_connected: bool,
    /// Caught up with the peers since the last (re)connection.
    pub caught_up: bool,
}

/// What the other nodes of a cluster did with an admin order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerOutcome {
    /// Clients the answering nodes disconnected, or subscriptions they
    /// ended.
    pub count: usize,
    /// Nodes that answered in time, sorted.
    pub answered: Vec<String>,
    /// Live nodes that did not answer in time, sorted: the order may still
    /// have reached them, but their count is unknown.
    pub missing: Vec<String>,
}

/// Sequences, persists and fans out publishes.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Publishes `items` atomically, in order. On `Ok` every message is
    /// durable (as configured) and handed to fan-out.
    async fn publish(&self, items: Vec<PublishItem>) -> Result<Vec<Published>, PublishError>;

    /// `Ok` when publishes can be accepted, else why not.
    fn readiness(&self) -> Result<(), String>;

    /// Cluster state for metrics and the dashboard (`None` on a single node).
    fn cluster_status(&self) -> Option<ClusterStatus> {
        None
    }

    /// The latest stats sample of each live peer, at most a few seconds
    /// old, with its age in ms (empty on a single node).
    fn peer_stats(&self) -> Vec<(crate::stats::NodeStats, u64)> {
        Vec::new()
    }

    /// Sends an admin order to every other node, which carries it out on
    /// its own clients, and gathers their answers. A single node has no
    /// peers. Fails when the order cannot be sent (not connected to the
    /// cluster).
    async fn broadcast_order(&self, _order: &Order) -> Result<PeerOutcome, PublishError> {
        Ok(PeerOutcome::default())
    }

    /// Stops accepting publishes, finishes those in flight and makes the log
    /// durable.
    async fn shutdown(&self);
}
