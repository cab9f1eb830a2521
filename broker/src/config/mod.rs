//! Configuration: built-in defaults, overridden by a TOML file (`--config`),
//! then by `HERALD_*` environment variables, then by flags.
//!
//! Flags and environment variables are resolved by clap (a flag beats its
//! variable); [`ServeArgs::resolve`] lays the result over the file and the
//! defaults, then [`Config::validate`] checks the whole.

mod args;
mod nats;
mod sections;

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

pub use self::{
    args::ServeArgs,
    nats::{display_url, split_urls, Secret},
    sections::{ClusterConfig, Limits, LogConfig, NamespaceConfig, TlsConfig, TransportConfig},
};
use crate::log::RetentionPolicy;

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

/// The resolved configuration of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// NATS server URLs, comma-separated (cluster mode), or none (single
    /// node). The file may also give a list.
    #[serde(deserialize_with = "nats::string_or_list")]
    pub nats: Option<String>,
    /// Node name; generated when empty.
    pub node_id: Option<String>,
    /// CORS / WebSocket origins; empty means the default (`*` without auth).
    pub allowed_origins: Vec<String>,
    /// Expose `/v1/echo`.
    pub enable_echo: bool,
    /// Log filter.
    pub log_filter: String,
    /// HTTP/WebSocket worker threads (each serves its share of the
    /// connections); 0 means one per CPU the process may use.
    pub workers: usize,
    /// How long shutdown waits for connections to finish.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// On SIGTERM, how long the node reports not ready (and keeps serving)
    /// before it closes connections, so load balancers stop routing to it
    /// first. Zero closes the port at once, with no window in which a
    /// health check can see the 503.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
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
    /// Keep presence (who is subscribed, join/leave events) by default;
    /// namespaces may override.
    pub presence: bool,
    /// Serve the history API by default; namespaces may override.
    pub history: bool,
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
            workers: 0,
            shutdown_timeout: Duration::from_secs(10),
            drain_delay: Duration::from_secs(2),
            log: LogConfig::default(),
            limits: Limits::default(),
            transport: TransportConfig::default(),
            cluster: ClusterConfig::default(),
            retention: RetentionPolicy::default(),
            presence: true,
            history: true,
            namespaces: HashMap::new(),
            auth: Default::default(),
            tls: None,
        }
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
        nats::validate(self)?;
        if self.workers > 256 {
            return invalid("workers", "must be between 0 (one per CPU) and 256");
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
        if !(1..=crate::json::HARD_MAX_DEPTH).contains(&self.limits.max_json_depth) {
            return Err(ConfigError::Invalid {
                field: "limits.max_json_depth",
                message: format!("must be between 1 and {}", crate::json::HARD_MAX_DEPTH),
            });
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

    /// Namespaces whose presence setting is given (the rest follow
    /// `presence`).
    pub fn presence_overrides(&self) -> HashMap<String, bool> {
        self.namespaces
            .iter()
            .filter_map(|(name, ns)| ns.presence.map(|on| (name.clone(), on)))
            .collect()
    }

    /// Whether the history API serves `topic`'s namespace.
    pub fn history_enabled(&self, topic: &crate::hub::Topic) -> bool {
        self.namespaces
            .get(topic.namespace())
            .and_then(|ns| ns.history)
            .unwrap_or(self.history)
    }

    /// Every configured secret (API keys, the JWT secret, the NATS password,
    /// a password in a NATS URL), for the log redactor. NKey seeds and
    /// creds-file JWTs are masked by their shape.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self.auth.api_keys.iter().map(|k| k.key.clone()).collect();
        secrets.extend(self.auth.jwt_secret.clone());
        secrets.extend(
            self.cluster
                .nats_password
                .as_ref()
                .map(|p| p.expose().to_string()),
        );
        for url in self.nats.iter().flat_map(|n| split_urls(n)) {
            let userinfo = url
                .split_once("://")
                .and_then(|(_, rest)| rest.split_once('@'))
                .map(|(info, _)| info);
            if let Some(info) = userinfo {
                secrets.push(
                    info.split_once(':')
                        .map_or(info, |(_, pass)| pass)
                        .to_string(),
                );
            }
        }
        secrets
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
        let c = Config {
            workers: 257,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("workers"));
        for depth in [0, crate::json::HARD_MAX_DEPTH + 1] {
            let mut c = Config::default();
            c.limits.max_json_depth = depth;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("max_json_depth"), "{err}");
        }
        let mut c = Config::default();
        c.limits.max_json_depth = crate::json::HARD_MAX_DEPTH;
        assert!(c.validate().is_ok());
    }
}
