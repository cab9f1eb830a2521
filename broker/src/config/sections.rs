//! The sections of the configuration file, with their defaults.

use std::{path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::nats::Secret;
use crate::{engine::Durability, log::RetentionPolicy};

/// Settings of the persistence log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// When a publish is acknowledged.
    pub durability: Durability,
    /// Background flush interval (bounds what `relaxed` can lose).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Storage page cache, bytes, as sled counts them (its resident memory
    /// for it is a few times this; see deploy/CONFIG.md).
    pub cache_bytes: u64,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// How long an `Idempotency-Key` is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
    /// Start even when the start-up check finds damage: lost messages are
    /// recorded as lost and reported to clients as gaps.
    pub accept_damage: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            durability: Durability::Always,
            flush_interval: Duration::from_millis(500),
            cache_bytes: 8 << 20,
            retention_interval: Duration::from_secs(5),
            idempotency_window: Duration::from_secs(300),
            accept_damage: false,
        }
    }
}

/// Per-request and per-connection limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest `data` payload, bytes (413 `payload_too_large`).
    pub max_payload_bytes: usize,
    /// Outgoing queue per connection, bytes.
    pub queue_bytes: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Items in one batch publish.
    pub max_batch_items: usize,
    /// Deepest nesting of arrays and objects in a payload (400
    /// `bad_request` beyond it); at most [`crate::json::HARD_MAX_DEPTH`].
    pub max_json_depth: usize,
    /// Open client connections (WebSocket, SSE, long-poll) per node; beyond
    /// it new ones get 503. Keep below the process's open-file limit.
    pub max_connections: usize,
    /// Connections per client IP (0: unlimited); beyond it 429.
    pub max_connections_per_ip: usize,
    /// Publishes per second on one WebSocket connection (0: unlimited);
    /// beyond it an error frame `rate_limited`.
    pub publish_rate_per_connection: f64,
    /// Publishes per second per API key or token subject over REST
    /// (0: unlimited); beyond it 429 `rate_limited`.
    pub publish_rate_per_client: f64,
    /// Burst allowance of both rates, in publishes.
    pub publish_burst: f64,
    /// What happens to a subscriber whose queue is full (see
    /// `hub::mailbox`); namespaces may override it.
    pub slow_consumer: crate::hub::SlowConsumerPolicy,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_payload_bytes: 64 * 1024,
            queue_bytes: 1 << 20,
            max_subscriptions: 256,
            max_batch_items: 1000,
            max_json_depth: crate::json::DEFAULT_MAX_DEPTH,
            max_connections: 18_000,
            max_connections_per_ip: 0,
            publish_rate_per_connection: 0.0,
            publish_rate_per_client: 0.0,
            publish_burst: 100.0,
            slow_consumer: Default::default(),
        }
    }
}

impl Limits {
    /// Largest WebSocket frame or HTTP body: a payload in base64 (a binary
    /// payload at the limit published through JSON) plus room for the
    /// surrounding op or batch fields.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_payload_bytes.div_ceil(3).saturating_mul(4) + 4096
    }

    /// Largest batch body: 16 payloads with room for their fields, and at
    /// least 1 MiB.
    pub fn max_batch_bytes(&self) -> usize {
        (self.max_payload_bytes + 4096)
            .saturating_mul(16)
            .max(1 << 20)
    }
}

/// Timers of the streaming transports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// WebSocket ping interval.
    #[serde(with = "humantime_serde")]
    pub ws_ping_interval: Duration,
    /// A WebSocket with no frame (pong or other) from the client for this
    /// long is closed.
    #[serde(with = "humantime_serde")]
    pub ws_idle_timeout: Duration,
    /// SSE comment heartbeat interval.
    #[serde(with = "humantime_serde")]
    pub sse_heartbeat: Duration,
    /// Long-poll wait when `timeout_ms` is not given.
    #[serde(with = "humantime_serde")]
    pub poll_default_timeout: Duration,
    /// Longest long-poll wait a client may ask for.
    #[serde(with = "humantime_serde")]
    pub poll_max_timeout: Duration,
    /// Most messages in one long-poll response or history page.
    pub max_page: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            ws_ping_interval: Duration::from_secs(15),
            ws_idle_timeout: Duration::from_secs(45),
            sse_heartbeat: Duration::from_secs(15),
            poll_default_timeout: Duration::from_secs(25),
            poll_max_timeout: Duration::from_secs(60),
            max_page: 1000,
        }
    }
}

/// Certificate and key for HTTPS/WSS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Settings of the NATS cluster engine (used with `--nats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Prefix of every NATS subject the cluster uses.
    pub subject_prefix: String,
    /// How often a node announces itself.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Silence after which a node is considered gone and its topics move.
    #[serde(with = "humantime_serde")]
    pub member_timeout: Duration,
    /// Replicas (besides the owner) that must have a message on disk before
    /// it is acknowledged. 1 survives losing any one node for good.
    pub min_replica_acks: usize,
    /// How long a publish waits for replicas before failing with 503.
    #[serde(with = "humantime_serde")]
    pub replication_timeout: Duration,
    /// Timeout of node-to-node requests (forwarding, fetching, claims).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// NATS user name (with `nats_password`).
    pub nats_user: Option<String>,
    /// NATS password (with `nats_user`).
    pub nats_password: Option<Secret>,
    /// File holding the node's NATS NKey seed (`SU…`).
    pub nats_nkey_file: Option<PathBuf>,
    /// NATS `.creds` file (user JWT and NKey seed; decentralized auth).
    pub nats_creds: Option<PathBuf>,
    /// PEM CA certificate(s) the NATS servers' certificates must chain to;
    /// implies TLS.
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate for NATS servers that verify clients (with
    /// `nats_tls_key`); implies TLS.
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of `nats_tls_cert`.
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse NATS connections without TLS (also on with any `nats_tls_*`
    /// file or a `tls://` URL).
    pub nats_tls_required: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            subject_prefix: "herald".into(),
            heartbeat_interval: Duration::from_millis(500),
            member_timeout: Duration::from_secs(3),
            min_replica_acks: 1,
            replication_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(2),
            nats_user: None,
            nats_password: None,
            nats_nkey_file: None,
            nats_creds: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            nats_tls_required: false,
        }
    }
}

/// Policies of one namespace (first topic token).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceConfig {
    /// With auth on: anyone may subscribe to (and read) this namespace.
    pub anonymous_subscribe: bool,
    /// With auth on: anyone may publish to this namespace.
    pub anonymous_publish: bool,
    /// Largest `data` payload for this namespace (at most the global limit).
    pub max_payload_bytes: Option<usize>,
    /// Slow-consumer policy for this namespace's topics.
    pub slow_consumer: Option<crate::hub::SlowConsumerPolicy>,
    /// Retention for this namespace's topics (default: `[retention]`).
    pub retention: Option<RetentionPolicy>,
    /// Presence and join/leave events for this namespace (default:
    /// top-level `presence`).
    pub presence: Option<bool>,
    /// Whether `GET /v1/topics/{topic}/messages` serves this namespace
    /// (default: top-level `history`). Resume still replays from the log.
    pub history: Option<bool>,
}
