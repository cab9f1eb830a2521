//! What request handlers and connections share: the node's parts, its
//! limits and its lifecycle flags.
//!
//! `AppState` holds them all, for the long-lived connections (WebSocket
//! links, SSE and long-poll streams, the dashboard stream) that use most of
//! them. Each part is also registered with actix on its own
//! (`http::app`), so a request handler names only the parts it uses
//! (`web::Data<Hub>`, `web::Data<dyn MessageLog>`, `web::Data<Lifecycle>`…).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

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

/// The node's lifecycle as handlers see it: shutdown, the drain, uptime.
pub struct Lifecycle {
    /// Becomes `true` when the node starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Set on SIGTERM, `drain_delay` before `shutdown`: not ready any more.
    pub draining: AtomicBool,
    /// Process start.
    pub started: Instant,
}

impl Lifecycle {
    /// A node that has not started to drain.
    pub fn new(shutdown: watch::Receiver<bool>) -> Self {
        Lifecycle {
            shutdown,
            draining: AtomicBool::new(false),
            started: Instant::now(),
        }
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Whether the node is leaving (drain delay or shutdown): not ready.
    pub fn leaving(&self) -> bool {
        self.draining.load(Ordering::Acquire) || self.shutting_down()
    }
}

/// This node's name, as a part of its own for handlers that need only it.
pub struct NodeId(pub String);

/// The identity behind a request (401 when auth is on and it has none).
pub fn identify(
    auth: &Authenticator,
    req: &actix_web::HttpRequest,
) -> Result<Identity, crate::error::ApiError> {
    Ok(auth.authenticate(&Credentials::from_request(req))?)
}

/// Everything request handlers and connections share.
pub struct AppState {
    /// Resolved configuration.
    pub config: Arc<Config>,
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
    pub client_rates: Arc<KeyedRates>,
    /// Shutdown, the drain and uptime.
    pub lifecycle: Arc<Lifecycle>,
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
        identify(&self.auth, req)
    }

    /// Whether shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.lifecycle.shutting_down()
    }

    /// Whether the node is leaving (drain delay or shutdown): not ready.
    pub fn leaving(&self) -> bool {
        self.lifecycle.leaving()
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

/// Defines an extractor holding some of the node's parts, each taken from
/// the app with [`part`] (`field: Type = "its name in the 500"`).
macro_rules! handler_parts {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($field:ident: $ty:ty = $what:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        $vis struct $name {
            $($field: actix_web::web::Data<$ty>),+
        }

        impl actix_web::FromRequest for $name {
            type Error = actix_web::Error;
            type Future = std::future::Ready<Result<Self, Self::Error>>;

            fn from_request(
                req: &actix_web::HttpRequest,
                _: &mut actix_web::dev::Payload,
            ) -> Self::Future {
                std::future::ready((|| {
                    Ok($name {
                        $($field: $crate::state::part(req, $what)?),+
                    })
                })())
            }
        }
    };
}
pub(crate) use handler_parts;

/// The part `T` registered with the app (see `http::app`); a 500 naming it
/// if it is missing, which only a wiring mistake can cause.
pub fn part<T: ?Sized + 'static>(
    req: &actix_web::HttpRequest,
    name: &str,
) -> Result<actix_web::web::Data<T>, actix_web::Error> {
    req.app_data::<actix_web::web::Data<T>>()
        .cloned()
        .ok_or_else(|| {
            actix_web::error::ErrorInternalServerError(format!("{name} is not configured"))
        })
}
