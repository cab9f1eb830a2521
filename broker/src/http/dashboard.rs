//! The live dashboard at `GET /dashboard` and the stats it feeds on.
//!
//! * `GET /dashboard` (+ `/dashboard/app.js`, `/dashboard/style.css`): a
//!   static page compiled into the binary — plain HTML, CSS and JavaScript,
//!   charts drawn as SVG by hand, no external requests (the page is served
//!   with a `default-src 'self'` Content-Security-Policy). It holds no data,
//!   so it is served without credentials.
//! * `GET /v1/stats`: one [`Snapshot`] as JSON.
//! * `GET /v1/stats/stream`: Server-Sent Events, `event: stats` with a
//!   snapshot every `interval_ms` (default 1000) and `: ping` comments every
//!   `transport.sse_heartbeat`. Snapshots carry counters, not rates: the page
//!   computes rates from consecutive snapshots. The stream is not a
//!   subscriber and is not in the connection gauges, but it holds a
//!   connection slot under `max_connections` and the per-IP cap like one.
//!
//! With auth on, the stats (aggregates over every topic) need operator
//! credentials: any configured API key (server-side secrets held by
//! services and operators), or a JWT whose `subscribe` grants cover `>`
//! (every topic). No credentials is 401, a narrower token 403. With auth off
//! they are open.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream;
use serde::Serialize;
use tokio::{sync::watch, time::Interval};

use super::{get_only, ApiError, ErrorCode};
use crate::{
    auth::{AuthError, Credentials},
    hub::Pattern,
    metrics::{Metrics, Transport},
    state::AppState,
};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The page may load only its own script and style and talk only to its own
/// origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Default and bounds of `?interval_ms=` on the stream.
const DEFAULT_INTERVAL_MS: u64 = 1000;
const MIN_INTERVAL_MS: u64 = 100;
const MAX_INTERVAL_MS: u64 = 60_000;
/// Client reconnect delay suggested to `EventSource`, ms.
const RETRY_MS: u64 = 1000;

/// Registers the dashboard and stats routes (`App::configure`).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(get_only("/dashboard").route(web::get().to(page)))
        .service(get_only("/dashboard/app.js").route(web::get().to(script)))
        .service(get_only("/dashboard/style.css").route(web::get().to(style)))
        .service(get_only("/v1/stats").route(web::get().to(stats)))
        .service(get_only("/v1/stats/stream").route(web::get().to(stats_stream)));
}

/// Per-transport values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PerTransport<T> {
    /// WebSocket.
    pub ws: T,
    /// Server-Sent Events.
    pub sse: T,
    /// HTTP long-poll.
    pub poll: T,
}

impl<T> PerTransport<T> {
    fn from_fn(f: impl Fn(Transport) -> T) -> Self {
        PerTransport {
            ws: f(Transport::Ws),
            sse: f(Transport::Sse),
            poll: f(Transport::Poll),
        }
    }
}

/// One cluster member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Whether this is the node answering.
    #[serde(rename = "self")]
    pub this: bool,
    /// Heartbeating (always true: members drop out of the view when silent).
    pub live: bool,
    /// Accepts publishes; `None` for peers, whose heartbeats do not say.
    pub ready: Option<bool>,
}

/// Everything the dashboard shows, at one instant. Counters (`*_total`)
/// only grow while the process runs; rates are computed by the reader.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// This node's id.
    pub node: String,
    /// Wall clock, ms since the Unix epoch.
    pub ts: u64,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
    /// Whether this node accepts publishes.
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready_reason: Option<String>,
    /// Running with `--nats`.
    pub cluster: bool,
    /// Live members (just this node when not clustered).
    pub nodes: Vec<NodeInfo>,
    /// Open client connections per transport.
    pub connections: PerTransport<i64>,
    /// Active (pattern, connection) subscriptions.
    pub subscriptions: i64,
    /// Topics with at least one message.
    pub topics: usize,
    /// Messages accepted and sequenced.
    pub published_total: u64,
    /// Messages queued to subscriber mailboxes.
    pub fanned_out_total: u64,
    /// Messages written to clients, per transport.
    pub delivered_total: PerTransport<u64>,
    /// Subscribers disconnected because their queue overflowed.
    pub slow_consumers_total: u64,
    /// Messages dropped, conflated or deferred to catch-up for slow consumers.
    pub slow_consumer_actions_total: u64,
}

impl Snapshot {
    /// Reads the node's current numbers.
    pub fn take(state: &AppState) -> Snapshot {
        let m: &Metrics = &state.metrics;
        let readiness = if state.leaving() {
            Err("shutting down".to_string())
        } else {
            state.engine.readiness()
        };
        let ready = readiness.is_ok();
        let mut members = state
            .engine
            .cluster_status()
            .map(|c| c.members)
            .unwrap_or_default();
        if members.is_empty() {
            members.push(state.node_id.clone());
        }
        let nodes = members
            .into_iter()
            .map(|id| {
                let this = id == state.node_id;
                NodeInfo {
                    ready: this.then_some(ready),
                    id,
                    this,
                    live: true,
                }
            })
            .collect();
        Snapshot {
            node: state.node_id.clone(),
            ts: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            uptime_seconds: state.started.elapsed().as_millis() as f64 / 1000.0,
            ready,
            not_ready_reason: readiness.err(),
            cluster: state.config.nats.is_some(),
            nodes,
            connections: PerTransport::from_fn(|t| m.connections(t).get()),
            subscriptions: m.subscriptions.get(),
            topics: state.hub.topic_count(),
            published_total: m.messages_published.get(),
            fanned_out_total: m.messages_fanned_out.get(),
            delivered_total: PerTransport::from_fn(|t| m.delivered(t).get()),
            slow_consumers_total: m.slow_consumers.get(),
            slow_consumer_actions_total: m.slow_consumer_actions.get(),
        }
    }
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .body(body)
}

/// `GET /dashboard`: the page.
pub async fn page() -> HttpResponse {
    let mut res = asset("text/html; charset=utf-8", INDEX_HTML);
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    res
}

/// `GET /dashboard/app.js`.
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `GET /dashboard/style.css`.
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// Admits an API key or credentials that may read every topic (auth on).
fn authorize(state: &AppState, req: &HttpRequest) -> Result<(), ApiError> {
    let identity = state.identify(req)?;
    if !state.auth.enabled() {
        return Ok(());
    }
    // `identify` accepted the credentials; an API key among them suffices.
    let credentials = Credentials::from_request(req);
    let presented = [credentials.api_key, credentials.token];
    let api_key = state
        .config
        .auth
        .api_keys
        .iter()
        .any(|k| presented.iter().flatten().any(|p| *p == k.key));
    let everything = Pattern::parse(">").expect("valid pattern");
    if api_key || identity.subscribe.covers(&everything) {
        return Ok(());
    }
    let what = "the stats need an API key or a token that may subscribe to `>`";
    Err(if identity.anonymous {
        AuthError::Unauthorized(what.into())
    } else {
        AuthError::Forbidden(what.into())
    }
    .into())
}

/// Parses the query: `token` (credentials) and, when `interval` is true,
/// `interval_ms`; anything else is 400. Returns the interval.
fn parse_query(query: &str, interval: bool) -> Result<Duration, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
    let mut every = DEFAULT_INTERVAL_MS;
    for (key, value) in pairs {
        match key.as_str() {
            "token" => {}
            "interval_ms" if interval => {
                every = value
                    .parse::<u64>()
                    .ok()
                    .filter(|v| (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(v))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "interval_ms must be an integer from {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}"
                        ))
                    })?;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}"
                )))
            }
        }
    }
    Ok(Duration::from_millis(every))
}

/// `GET /v1/stats`: one snapshot.
pub async fn stats(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&state, &req)?;
    parse_query(req.query_string(), false)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(Snapshot::take(&state)))
}

struct StatsStream {
    state: Arc<AppState>,
    _slot: crate::transport::ConnectionTracker,
    every: Interval,
    heartbeat: Interval,
    shutdown: watch::Receiver<bool>,
    opening: bool,
}

impl StatsStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if std::mem::take(&mut self.opening) {
            return Some(Bytes::from(format!("retry: {RETRY_MS}\n\n")));
        }
        if *self.shutdown.borrow() {
            return None;
        }
        tokio::select! {
            _ = self.every.tick() => {
                let json = serde_json::to_string(&Snapshot::take(&self.state))
                    .expect("snapshots serialize");
                Some(Bytes::from(format!("event: stats\ndata: {json}\n\n")))
            }
            _ = self.heartbeat.tick() => Some(Bytes::from_static(b": ping\n\n")),
            _ = self.shutdown.changed() => None,
        }
    }
}

/// `GET /v1/stats/stream`: a snapshot every `interval_ms` over SSE.
pub async fn stats_stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    if state.shutting_down() {
        return Err(ApiError::new(ErrorCode::Unavailable, "shutting down"));
    }
    authorize(&state, &req)?;
    let period = parse_query(req.query_string(), true)?;
    let slot = crate::transport::ConnectionTracker::admit_stream(&state, &req)?;
    // The first tick fires at once, so the page has numbers immediately.
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let beat = state.config.transport.sse_heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = StatsStream {
        shutdown: state.shutdown.clone(),
        state,
        _slot: slot,
        every,
        heartbeat,
        opening: true,
    };
    let body = stream::unfold(body, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, actix_web::Error>(chunk), s))
    });
    Ok(crate::transport::sse::event_stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_strict() {
        assert_eq!(parse_query("", true).unwrap(), Duration::from_secs(1));
        assert_eq!(
            parse_query("interval_ms=250&token=x", true).unwrap(),
            Duration::from_millis(250)
        );
        assert!(parse_query("interval_ms=5", true).is_err());
        assert!(parse_query("interval_ms=abc", true).is_err());
        assert!(parse_query("interval_ms=250", false).is_err());
        assert!(parse_query("topic=a", false).is_err());
        assert!(parse_query("token=x", false).is_ok());
    }

    #[test]
    fn assets_are_self_contained() {
        assert!(INDEX_HTML.contains("dashboard/app.js"));
        assert!(INDEX_HTML.contains("dashboard/style.css"));
        for text in [INDEX_HTML, APP_JS, STYLE_CSS] {
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
        }
    }
}
