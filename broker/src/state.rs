//! What request handlers and connections share: the node's parts, its
//! limits and its lifecycle flags.

use std::{sync::Arc, time::Instant};

use tokio::sync::watch;

use crate::{
    auth::{Authenticator, Credentials, Identity},
    config::Config,
    engine::Engine,
    hub::presence::PollSessions,
    hub::{control::Registry, presence::Presence, Hub},
    limits::{ConnectionLimits, KeyedRates},
    log::MessageLog,
    metrics::Metrics,
};

/// Everything request handlers and connections share.
pub struct AppState {
    /// Resolved configuration.
    pub config: Config,
    /// This node's name.
    pub node_id: String,
    /// Subscriptions and fan-out.
    pub hub: Arc<Hub>,
    /// The persistence log (reads).
    pub log: Arc<dyn MessageLog>,
    /// The publish path.
    pub engine: Arc<dyn Engine>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Credentials → identities.
    pub auth: Arc<Authenticator>,
    /// Open-connection limits.
    pub connection_limits: Arc<ConnectionLimits>,
    /// REST publish rate per client (API key or token subject).
    pub client_rates: KeyedRates,
    /// Becomes `true` when the node starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Set on SIGTERM, `drain_delay` before `shutdown`: not ready any more.
    pub draining: std::sync::atomic::AtomicBool,
    /// Process start.
    pub started: Instant,
    /// Who is subscribed where, cluster-wide.
    pub presence: Arc<Presence>,
    /// Long-poll clients' presence between requests.
    pub poll_sessions: Arc<PollSessions>,
    /// This node's clients, as the admin API reaches them.
    pub control: Arc<Registry>,
    /// Every WebSocket link, so shutdown can wait for their close handshakes.
    pub ws_links: tokio_util::task::TaskTracker,
    /// This node's latest stats sample (one a second), for the dashboard.
    pub stats: crate::stats::Latest,
}

impl AppState {
    /// The identity behind a request (401 when auth is on and it has none).
    pub fn identify(
        &self,
        req: &actix_web::HttpRequest,
    ) -> Result<Identity, crate::error::ApiError> {
        Ok(self.auth.authenticate(&Credentials::from_request(req))?)
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether the node is leaving (drain delay or shutdown): not ready.
    pub fn leaving(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Acquire) || self.shutting_down()
    }

    /// Whether a subscription may start here: a node shutting down, or one
    /// that cannot answer exactly (in a cluster: not connected to NATS or
    /// not caught up), refuses it with 503 `unavailable` and `Retry-After`,
    /// and the client tries again, on another node if it has one. Resuming
    /// from a node that does not hold everything the cluster acknowledged
    /// could skip messages or repeat them.
    pub fn admit_subscriber(&self) -> Result<(), crate::error::ApiError> {
        use crate::error::{ApiError, ErrorCode};
        if self.shutting_down() {
            return Err(ApiError::new(ErrorCode::Unavailable, "shutting down"));
        }
        self.engine.readiness().map_err(|reason| {
            ApiError::new(
                ErrorCode::Unavailable,
                format!("node not ready ({reason}); retry, on another node if possible"),
            )
        })
    }
}
