//! `herald serve` flags (each also read from a `HERALD_*` variable) and
//! how they are laid over the file and the defaults.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;

use super::{Config, ConfigError, TlsConfig};
use crate::engine::Durability;

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
    /// NATS server URLs, comma-separated; joins the cluster through whichever is up.
    #[arg(long, env = "HERALD_NATS", value_name = "URLS")]
    pub nats: Option<String>,
    /// NATS user name (with `--nats-password`).
    #[arg(long, env = "HERALD_NATS_USER", value_name = "USER")]
    pub nats_user: Option<String>,
    /// NATS password (with `--nats-user`); prefer the variable.
    #[arg(
        long,
        env = "HERALD_NATS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// File with the node's NATS NKey seed.
    #[arg(long, env = "HERALD_NATS_NKEY_FILE", value_name = "FILE")]
    pub nats_nkey_file: Option<PathBuf>,
    /// NATS credentials file (`.creds`: user JWT and NKey seed).
    #[arg(long, env = "HERALD_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// PEM CA the NATS servers' certificates must chain to (implies TLS).
    #[arg(long, env = "HERALD_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate for NATS (with `--nats-tls-key`; implies TLS).
    #[arg(
        long,
        env = "HERALD_NATS_TLS_CERT",
        value_name = "FILE",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key for `--nats-tls-cert`.
    #[arg(
        long,
        env = "HERALD_NATS_TLS_KEY",
        value_name = "FILE",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
    /// Refuse NATS connections without TLS.
    #[arg(long, env = "HERALD_NATS_TLS_REQUIRED")]
    pub nats_tls_required: bool,
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
    /// Start even if the log is damaged: lost messages are recorded as lost and clients get a gap for them.
    #[arg(long, env = "HERALD_ACCEPT_DAMAGE")]
    pub accept_damage: bool,
    /// Largest accepted `data` payload in bytes.
    #[arg(long, env = "HERALD_MAX_PAYLOAD_BYTES", value_name = "BYTES")]
    pub max_payload_bytes: Option<usize>,
    /// Per-connection outgoing queue limit in bytes; a subscriber over it is disconnected.
    #[arg(long, env = "HERALD_QUEUE_BYTES", value_name = "BYTES")]
    pub queue_bytes: Option<usize>,
    /// Expose the `/v1/echo` WebSocket echo endpoint (conformance testing).
    #[arg(long, env = "HERALD_ENABLE_ECHO")]
    pub enable_echo: bool,
    /// HTTP/WebSocket worker threads; 0 (the default) means one per CPU.
    #[arg(long, env = "HERALD_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
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
    /// API key with the admin scope, which may also publish and read every topic (repeatable).
    #[arg(
        long = "admin-api-key",
        env = "HERALD_ADMIN_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_api_keys: Option<Vec<String>>,
}

impl ServeArgs {
    /// Adds each flag's built-in default to its help. The flags themselves
    /// have no clap default, which would hide the file's value (flag > env
    /// > file > default), so the text is taken from [`Config::default`].
    pub fn show_defaults(command: clap::Command) -> clap::Command {
        let d = Config::default();
        let durability = match d.log.durability {
            Durability::Always => "always",
            Durability::Relaxed => "relaxed",
        };
        let defaults = [
            ("listen", d.listen.to_string()),
            ("data_dir", d.data_dir.display().to_string()),
            ("nats", "none: a single node".into()),
            ("allowed_origins", "none: same origin only".into()),
            ("durability", durability.into()),
            ("max_payload_bytes", d.limits.max_payload_bytes.to_string()),
            ("queue_bytes", d.limits.queue_bytes.to_string()),
            ("workers", d.workers.to_string()),
            ("log", d.log_filter.clone()),
        ];
        defaults.into_iter().fold(command, |command, (id, value)| {
            command.mut_arg(id, |arg| {
                let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
                arg.help(format!("{help} [default: {value}]"))
            })
        })
    }

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
        let cluster = &mut config.cluster;
        if a.nats_user.is_some() {
            cluster.nats_user = a.nats_user;
        }
        if let Some(v) = a.nats_password {
            cluster.nats_password = Some(super::Secret::new(v));
        }
        if a.nats_nkey_file.is_some() {
            cluster.nats_nkey_file = a.nats_nkey_file;
        }
        if a.nats_creds.is_some() {
            cluster.nats_creds = a.nats_creds;
        }
        if a.nats_tls_ca.is_some() {
            cluster.nats_tls_ca = a.nats_tls_ca;
        }
        if let (Some(cert), Some(key)) = (a.nats_tls_cert, a.nats_tls_key) {
            cluster.nats_tls_cert = Some(cert);
            cluster.nats_tls_key = Some(key);
        }
        if a.nats_tls_required {
            cluster.nats_tls_required = true;
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
        if a.accept_damage {
            config.log.accept_damage = true;
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
        if let Some(v) = a.workers {
            config.workers = v;
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
                        scopes: Vec::new(),
                    }),
            );
        }
        if let Some(keys) = a.admin_api_keys {
            // The operator's key: what Centrifugo's server API key may do
            // (publish anywhere, read everything) plus the admin API.
            config.auth.api_keys.extend(
                keys.into_iter()
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .map(|key| crate::auth::ApiKeyConfig {
                        key,
                        publish: vec![">".into()],
                        subscribe: vec![">".into()],
                        scopes: vec![crate::auth::Scope::Admin],
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
