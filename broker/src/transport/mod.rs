//! Client transports: thin adapters between a socket and a
//! [`Subscriber`](crate::hub::Subscriber).
//!
//! Each transport only translates: requests into subscribe/publish calls,
//! and [`Event`](crate::hub::Event)s into its own framing. Ordering,
//! deduplication, replay and slow-consumer handling live in the subscriber.

pub mod poll;
pub mod protocol;
pub mod sse;
pub mod ws;

use std::sync::Arc;

use crate::{
    error::{ApiError, ErrorCode},
    hub::{ConnectionGuard, Cursor, Pattern, Resume, Subscriber},
    metrics::{Metrics, Transport},
    state::AppState,
};

/// Most topics one SSE or long-poll request may name.
pub const MAX_QUERY_TOPICS: usize = 64;

/// Holds a long-lived response's connection slot for its lifetime, and
/// counts a subscriber transport's connection (hub total and gauge).
pub struct ConnectionTracker {
    _permit: crate::limits::ConnectionPermit,
    counted: Option<(ConnectionGuard, Arc<Metrics>, Transport)>,
}

impl ConnectionTracker {
    /// Admits a `transport` connection from `req`'s peer under the
    /// connection limits (503 when the node is full, 429 when the client IP
    /// is) and counts it for its lifetime.
    pub fn admit(
        state: &AppState,
        transport: Transport,
        req: &actix_web::HttpRequest,
    ) -> Result<Self, ApiError> {
        let permit = Self::permit(state, req)?;
        state.metrics.connections(transport).inc();
        Ok(ConnectionTracker {
            _permit: permit,
            counted: Some((
                state.hub.connection_opened(),
                state.metrics.clone(),
                transport,
            )),
        })
    }

    /// Admits a long-lived response that is not a subscriber (the stats
    /// stream): it holds a slot under the same limits, so streams cannot
    /// take every descriptor, but is not in the per-transport gauges.
    pub fn admit_stream(state: &AppState, req: &actix_web::HttpRequest) -> Result<Self, ApiError> {
        Ok(ConnectionTracker {
            _permit: Self::permit(state, req)?,
            counted: None,
        })
    }

    /// A refusal closes the connection: kept alive, it would still hold the
    /// descriptor the limit is there to save.
    fn permit(
        state: &AppState,
        req: &actix_web::HttpRequest,
    ) -> Result<crate::limits::ConnectionPermit, ApiError> {
        let ip = req.peer_addr().map(|a| a.ip());
        state.connection_limits.admit(ip).map_err(|refusal| {
            state.metrics.connections_refused.inc();
            match refusal {
                crate::limits::Refusal::NodeFull(n) => ApiError::new(
                    ErrorCode::Unavailable,
                    format!("this node is at its limit of {n} connections; try another"),
                ),
                crate::limits::Refusal::IpFull(n) => ApiError::new(
                    ErrorCode::RateLimited,
                    format!("at most {n} connections per client address"),
                ),
            }
            .closing()
        })
    }
}

impl Drop for ConnectionTracker {
    fn drop(&mut self) {
        if let Some((_, metrics, transport)) = &self.counted {
            metrics.connections(*transport).dec();
        }
    }
}

/// A subscriber with this node's limits.
pub fn new_subscriber(state: &AppState) -> Subscriber {
    Subscriber::new(
        state.hub.clone(),
        state.log.clone(),
        state.config.limits.queue_bytes,
        state.config.limits.max_subscriptions,
    )
}

/// The `topic` parameters and the `cursor` parameter of an SSE or long-poll
/// query string.
pub struct StreamQuery {
    /// Patterns to subscribe.
    pub patterns: Vec<Pattern>,
    /// Resume position, if given.
    pub cursor: Option<Cursor>,
    /// `timeout_ms`, if given.
    pub timeout_ms: Option<u64>,
    /// `presence=true`: also send join/leave events of these topics.
    pub presence: bool,
    /// `client_id` (long-poll): the session of earlier polls.
    pub client_id: Option<String>,
    /// `since=N`: every topic from after seq N (unless a cursor is given).
    pub since: Option<u64>,
    /// `since_ts=T`: every topic from its first message at or after T (ms
    /// since the epoch; unless a cursor is given).
    pub since_ts: Option<u64>,
}

impl StreamQuery {
    /// Parses `?topic=a&topic=b.>&cursor=..&timeout_ms=..`.
    pub fn parse(query: &str, allow_timeout: bool) -> Result<Self, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}")))?;
        let mut out = StreamQuery {
            patterns: Vec::new(),
            cursor: None,
            timeout_ms: None,
            presence: false,
            client_id: None,
            since: None,
            since_ts: None,
        };
        for (key, value) in pairs {
            match key.as_str() {
                "topic" => {
                    let pattern = Pattern::parse(&value)?;
                    if !out.patterns.contains(&pattern) {
                        out.patterns.push(pattern);
                    }
                }
                "cursor" => out.cursor = Some(Cursor::decode(&value)?),
                "since" => {
                    out.since = Some(value.parse().map_err(|_| {
                        ApiError::bad_request("since must be a non-negative integer")
                    })?)
                }
                "since_ts" => {
                    out.since_ts = Some(value.parse().map_err(|_| {
                        ApiError::bad_request("since_ts must be ms since the epoch")
                    })?)
                }
                "timeout_ms" if allow_timeout => {
                    out.timeout_ms = Some(value.parse().map_err(|_| {
                        ApiError::bad_request("timeout_ms must be a non-negative integer")
                    })?)
                }
                "presence" => {
                    out.presence = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(ApiError::bad_request("presence must be true or false")),
                    }
                }
                "client_id" if allow_timeout => {
                    if value.len() > 128 {
                        return Err(ApiError::bad_request("client_id is too long"));
                    }
                    out.client_id = Some(value);
                }
                // Browsers' EventSource cannot set headers; tokens travel here.
                "token" => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter {other:?}"
                    )))
                }
            }
        }
        if out.patterns.is_empty() {
            return Err(ApiError::bad_request(
                "at least one topic parameter is required",
            ));
        }
        if out.since.is_some() && out.since_ts.is_some() {
            return Err(ApiError::bad_request("give since or since_ts, not both"));
        }
        if out.patterns.len() > MAX_QUERY_TOPICS {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_QUERY_TOPICS} topics per request"
            )));
        }
        Ok(out)
    }
}

impl StreamQuery {
    /// Where each pattern starts. A cursor (`?cursor=`, `Last-Event-ID`)
    /// wins: `since` and `since_ts` say where a stream starts the first
    /// time, and a client that passes the cursor back (an `EventSource`
    /// reconnecting, the next poll) keeps its URL.
    pub fn resume(&self) -> Resume {
        match (&self.cursor, self.since, self.since_ts) {
            (Some(_), _, _) => Resume::Live,
            (None, Some(n), _) => Resume::Since(n),
            (None, None, Some(ts)) => Resume::SinceTs(ts),
            (None, None, None) => Resume::Live,
        }
    }

    /// Checks every topic and the cursor against `identity` (403 on the
    /// first refusal): a cursor may only name readable topics.
    pub fn authorize(&self, identity: &crate::auth::Identity) -> Result<(), ApiError> {
        for pattern in &self.patterns {
            identity.check_subscribe(pattern)?;
        }
        if let Some(cursor) = &self.cursor {
            for topic in cursor.positions.keys() {
                identity.check_read(topic)?;
            }
        }
        Ok(())
    }
}

/// When `identity`'s token expires, as a timer instant (`None`: it does
/// not expire). Already past is 401 `unauthorized`: a stream must end at
/// `exp` itself, so the leeway a short request's token gets would only
/// open a stream that ends at once (and an `EventSource` that reconnects
/// in a loop while the leeway lasts).
pub fn token_deadline(
    identity: &crate::auth::Identity,
) -> Result<Option<tokio::time::Instant>, ApiError> {
    let Some(exp) = identity.expires_at else {
        return Ok(None);
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let left = exp.saturating_mul(1000).saturating_sub(now_ms);
    if left == 0 {
        return Err(ApiError::new(ErrorCode::Unauthorized, "token expired"));
    }
    Ok(Some(
        tokio::time::Instant::now() + std::time::Duration::from_millis(left),
    ))
}

/// `{"topic":..,"from":..,"to":..}` for a retention gap.
pub fn gap_json(topic: &str, from: u64, to: u64) -> String {
    format!("{{\"topic\":\"{topic}\",\"from\":{from},\"to\":{to}}}")
}
