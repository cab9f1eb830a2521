//! The live dashboard at `GET /dashboard` and the stats it feeds on.
//!
//! * `GET /dashboard` (+ `/dashboard/app.js`, `/dashboard/style.css`): a
//!   static page compiled into the binary — plain HTML, CSS and JavaScript,
//!   charts drawn as SVG by hand, no external requests (the page is served
//!   with a `default-src 'self'` Content-Security-Policy). It holds no data,
//!   so it is served without credentials.
//! * `GET /v1/stats`: one [`Snapshot`] as JSON: this node's live numbers,
//!   and cluster-wide totals and busiest topics from the peers' latest
//!   samples (`crate::stats`).
//! * `GET /v1/stats/stream`: Server-Sent Events, `event: stats` with a
//!   snapshot every `interval_ms` (default 1000) and `: ping` comments every
//!   `transport.sse_heartbeat`. Rates are each node's, over its last
//!   one-second sampling window, summed in the totals. The stream is not a
//!   subscriber and is not in the connection gauges, but it holds a
//!   connection slot under `max_connections` and the per-IP cap like one.
//!
//! With auth on, the stats (aggregates over every topic) need operator
//! credentials: any configured API key (server-side secrets held by
//! services and operators), or a JWT whose `subscribe` grants cover `>`
//! (every topic). No credentials is 401, a narrower token 403. With auth off
//! they are open.

mod snapshot;

use std::{sync::Arc, time::Duration};

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use bytes::Bytes;
use futures_util::stream;
use tokio::{sync::watch, time::Interval};

pub use self::snapshot::{NodeInfo, NodeSummary, Snapshot, TOP_TOPICS};
use super::{get_only, ApiError, ErrorCode};
use crate::{
    auth::{AuthError, Credentials},
    hub::Pattern,
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
        shutdown: state.lifecycle.shutdown.clone(),
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
