//! Configuration: built-in defaults, overridden by a TOML file (`--config`),
//! then by `HERALD_*` environment variables, then by flags.
//!
//! Flags and environment variables are resolved by clap (a flag beats its
//! variable); [`ServeArgs::resolve`] lays the result over the file and the
//! defaults, then [`Config::validate`] checks the whole.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::{engine::Durability, log::RetentionPolicy};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid setting {field}: {message}")]
    Invalid {
        /// Setting name as in the file.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Flags of `herald serve`; each also reads a `HERALD_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port; the bound address is logged).
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Directory for the persistence log.
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// NATS server URL; joins the cluster through it.
    #[arg(long, env = "HERALD_NATS", value_name = "URL")]
    pub nats: Option<String>,
    /// Unique node name (default: generated once and kept in the data dir).
    #[arg(long, env = "HERALD_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,
    /// Origins allowed for CORS and WebSocket upgrades, comma-separated, `*` for any.
    #[arg(
        long,
        env = "HERALD_ALLOWED_ORIGINS",
        value_name = "LIST",
        value_delimiter = ','
    )]
    pub allowed_origins: Option<Vec<String>>,
    /// When publishes are acknowledged: after fsync (`always`) or after buffering (`relaxed`).
    #[arg(long, env = "HERALD_DURABILITY", value_enum)]
    pub durability: Option<Durability>,
    /// Largest accepted `data` payload in bytes.
    #[arg(long, env = "HERALD_MAX_PAYLOAD_BYTES", value_name = "BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Per-connection outgoing queue limit in bytes; a subscriber over it is disconnected.
    #[arg(long, env = "HERALD_QUEUE_BYTES", value_name = "BYTES")]
    pub queue_bytes: Option<usize>,
    /// Expose the `/v1/echo` WebSocket echo endpoint (conformance testing).
    #[arg(long, env = "HERALD_ENABLE_ECHO")]
    pub enable_echo: bool,
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `herald=debug`.
    #[arg(long, env = "HERALD_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// HS256 secret; turns on JWT auth for every transport.
    #[arg(
        long,
        env = "HERALD_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA or EC P-256) for RS256/ES256 tokens.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,
    /// JWKS file for RS256/ES256 tokens (keys chosen by `kid`).
    #[arg(long, env = "HERALD_JWKS", value_name = "FILE")]
    pub jwks: Option<PathBuf>,
    /// PEM certificate chain: serve HTTPS and WSS.
    #[arg(
        long,
        env = "HERALD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `--tls-cert`.
    #[arg(
        long,
        env = "HERALD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// API key allowed to publish over REST (repeatable).
    #[arg(
        long = "api-key",
        env = "HERALD_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Option<Vec<String>>,
}

/// Settings of the persistence log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// When a publish is acknowledged.
    pub durability: Durability,
    /// Background flush interval (bounds what `relaxed` can lose).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Storage page cache, bytes.
    pub cache_bytes: u64,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    /// How long an `Idempotency-Key` is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_window: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            durability: Durability::Always,
            flush_interval: Duration::from_millis(500),
            cache_bytes: 64 << 20,
            retention_interval: Duration::from_secs(5),
            idempotency_window: Duration::from_secs(300),
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
    /// Largest WebSocket frame or HTTP body: a payload plus room for the
    /// surrounding op or batch fields.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_payload_bytes + 4096
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
}

/// The resolved configuration of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// NATS URL (cluster mode) or none (single node).
    pub nats: Option<String>,
    /// Node name; generated when empty.
    pub node_id: Option<String>,
    /// CORS / WebSocket origins; empty means the default (`*` without auth).
    pub allowed_origins: Vec<String>,
    /// Expose `/v1/echo`.
    pub enable_echo: bool,
    /// Log filter.
    pub log_filter: String,
    /// How long shutdown waits for connections to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Persistence.
    pub log: LogConfig,
    /// Limits.
    pub limits: Limits,
    /// Transport timers.
    pub transport: TransportConfig,
    /// Cluster engine settings.
    pub cluster: ClusterConfig,
    /// Default retention for every namespace.
    pub retention: RetentionPolicy,
    /// Per-namespace policies.
    pub namespaces: HashMap<String, NamespaceConfig>,
    /// Authentication.
    pub auth: crate::auth::AuthConfig,
    /// TLS (HTTPS/WSS); plain HTTP when absent.
    pub tls: Option<TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./herald-data"),
            nats: None,
            node_id: None,
            allowed_origins: Vec::new(),
            enable_echo: false,
            log_filter: "info".into(),
            shutdown_timeout: Duration::from_secs(10),
            log: LogConfig::default(),
            limits: Limits::default(),
            transport: TransportConfig::default(),
            cluster: ClusterConfig::default(),
            retention: RetentionPolicy::default(),
            namespaces: HashMap::new(),
            auth: Default::default(),
            tls: None,
        }
    }
}

impl ServeArgs {
    /// Defaults < file < environment < flags.
    pub fn resolve(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let a = self.clone();
        if let Some(v) = a.listen {
            config.listen = v;
        }
        if let Some(v) = a.data_dir {
            config.data_dir = v;
        }
        if a.nats.is_some() {
            config.nats = a.nats;
        }
        if a.node_id.is_some() {
            config.node_id = a.node_id;
        }
        if let Some(v) = a.allowed_origins {
            config.allowed_origins = v
                .into_iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect();
        }
        if let Some(v) = a.durability {
            config.log.durability = v;
        }
        if let Some(v) = a.max_payload_bytes {
            config.limits.max_payload_bytes = v;
        }
        if let Some(v) = a.queue_bytes {
            config.limits.queue_bytes = v;
        }
        if a.enable_echo {
            config.enable_echo = true;
        }
        if let (Some(cert), Some(key)) = (a.tls_cert, a.tls_key) {
            config.tls = Some(TlsConfig { cert, key });
        }
        if a.jwt_secret.is_some() {
            config.auth.jwt_secret = a.jwt_secret;
        }
        if a.jwt_public_key.is_some() {
            config.auth.jwt_public_key = a.jwt_public_key;
        }
        if a.jwks.is_some() {
            config.auth.jwks = a.jwks;
        }
        if let Some(keys) = a.api_keys {
            config.auth.api_keys.extend(
                keys.into_iter()
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .map(|key| crate::auth::ApiKeyConfig {
                        key,
                        publish: vec![">".into()],
                        subscribe: Vec::new(),
                    }),
            );
        }
        if let Some(v) = a.log {
            config.log_filter = v;
        }
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Reads a TOML file; missing settings keep their defaults, unknown ones
    /// are refused (a typo must not silently fall back to a default).
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| {
            Err(ConfigError::Invalid {
                field,
                message: message.to_string(),
            })
        };
        if let Some(id) = &self.node_id {
            if id.is_empty()
                || id.len() > 64
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return invalid("node_id", "must be 1-64 of [A-Za-z0-9_-]");
            }
        }
        if let Some(url) = &self.nats {
            if url.trim().is_empty() {
                return invalid("nats", "must be a NATS URL such as nats://127.0.0.1:4222");
            }
        }
        if self.limits.max_payload_bytes == 0 || self.limits.max_payload_bytes > 16 << 20 {
            return invalid("limits.max_payload_bytes", "must be between 1 and 16 MiB");
        }
        if self.limits.queue_bytes < 64 * 1024 {
            return invalid("limits.queue_bytes", "must be at least 64 KiB");
        }
        if self.limits.max_subscriptions == 0 || self.limits.max_batch_items == 0 {
            return invalid(
                "limits",
                "max_subscriptions and max_batch_items must be positive",
            );
        }
        if self.transport.ws_idle_timeout <= self.transport.ws_ping_interval {
            return invalid(
                "transport.ws_idle_timeout",
                "must be longer than ws_ping_interval",
            );
        }
        let prefix_ok = !self.cluster.subject_prefix.is_empty()
            && self.cluster.subject_prefix.split('.').all(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
        if !prefix_ok {
            return invalid(
                "cluster.subject_prefix",
                "must be NATS subject tokens like `herald`",
            );
        }
        if self.cluster.member_timeout <= self.cluster.heartbeat_interval * 2 {
            return invalid(
                "cluster.member_timeout",
                "must be more than twice heartbeat_interval",
            );
        }
        if self.transport.max_page == 0 {
            return invalid("transport.max_page", "must be positive");
        }
        for origin in &self.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return invalid(
                    "allowed_origins",
                    "entries must be `*` or like https://example.com",
                );
            }
        }
        for name in self.namespaces.keys() {
            if crate::hub::Topic::parse(name).map(|t| t.tokens().count()) != Ok(1) {
                return invalid("namespaces", "keys must be single topic tokens");
            }
        }
        Ok(())
    }

    /// The payload limit for `topic`: its namespace's, capped by the global one.
    pub fn max_payload_for(&self, topic: &crate::hub::Topic) -> usize {
        let global = self.limits.max_payload_bytes;
        self.namespaces
            .get(topic.namespace())
            .and_then(|ns| ns.max_payload_bytes)
            .map_or(global, |n| n.min(global))
    }

    /// Slow-consumer policies by namespace (those that set one).
    pub fn slow_consumer_policies(&self) -> HashMap<String, crate::hub::SlowConsumerPolicy> {
        self.namespaces
            .iter()
            .filter_map(|(name, ns)| ns.slow_consumer.map(|p| (name.clone(), p)))
            .collect()
    }

    /// What anonymous clients may do when auth is on.
    pub fn anonymous_access(&self) -> crate::auth::AnonymousAccess {
        let mut access = crate::auth::AnonymousAccess::default();
        for (name, ns) in &self.namespaces {
            if ns.anonymous_subscribe {
                access.subscribe.push(name.clone());
            }
            if ns.anonymous_publish {
                access.publish.push(name.clone());
            }
        }
        access
    }

    /// Retention rules derived from `[retention]` and `[namespaces.*]`.
    pub fn retention_rules(&self) -> crate::log::retention::RetentionRules {
        crate::log::retention::RetentionRules {
            default: self.retention.clone(),
            namespaces: self
                .namespaces
                .iter()
                .filter_map(|(name, ns)| ns.retention.clone().map(|r| (name.clone(), r)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\n[retention]\nmax_messages = 5\n[namespaces.chat.retention]\nmax_age = \"1m\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            config: Some(file),
            data_dir: Some("/tmp/y".into()),
            ..Default::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/y"));
        assert_eq!(c.retention.max_messages, 5);
        let rules = c.retention_rules();
        assert_eq!(
            rules.for_namespace("chat").max_age,
            Some(Duration::from_secs(60))
        );
        assert_eq!(rules.for_namespace("other").max_messages, 5);
    }

    #[test]
    fn typos_and_bad_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "listn = \"127.0.0.1:9000\"\n").unwrap();
        let err = Config::from_file(&file).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
        let c = Config {
            node_id: Some("a b".into()),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }
}
