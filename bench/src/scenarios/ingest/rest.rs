//! `ingest`'s HTTP publishers: one keep-alive HTTP/1.1 connection each, one
//! request in flight, topics round-robin. Either one message per request
//! (`POST /v1/topics/{t}/messages`) or a batch of `batch` items
//! (`POST /v1/publish`, answered once every item is durable); a batch's
//! items all count as acked when its 200 arrives, and its latency is the
//! request's.

use hyper::{Method, StatusCode};
use tokio::time::{timeout_at, Instant};

use crate::{
    fleet::{publisher::PublishOutcome, Topics},
    http::HttpConn,
    load::Timing,
};

/// One connection's publishing until `timing.stop_at`; with `keys`, every
/// message carries a unique idempotency key starting with it.
pub async fn run(
    mut conn: HttpConn,
    topics: Topics,
    payload: String,
    batch: usize,
    keys: Option<String>,
    timing: Timing,
) -> PublishOutcome {
    let mut out = PublishOutcome::default();
    let mut next = 0usize;
    let key_of = |n: usize| keys.as_ref().map(|prefix| format!("{prefix}-{n}"));
    loop {
        let sent = Instant::now();
        if sent >= timing.stop_at {
            break;
        }
        let mut header_key = None;
        let (path, body) = if batch <= 1 {
            let path = format!("/v1/topics/{}/messages", topics.name(next));
            header_key = key_of(next);
            next += 1;
            (path, payload.clone())
        } else {
            let mut body = String::with_capacity(batch * (payload.len() + 40));
            body.push('[');
            for i in 0..batch {
                if i > 0 {
                    body.push(',');
                }
                let key =
                    key_of(next).map_or(String::new(), |k| format!(r#","idempotency_key":"{k}""#));
                body.push_str(&format!(
                    r#"{{"topic":"{}","data":{payload}{key}}}"#,
                    topics.name(next)
                ));
                next += 1;
            }
            body.push(']');
            ("/v1/publish".to_string(), body)
        };
        let items = batch.max(1) as u64;
        if timing.in_window(sent) {
            out.sent += items;
        }
        let request = conn.request_with(
            Method::POST,
            &path,
            Some("application/json"),
            header_key.as_deref(),
            body.into(),
        );
        match timeout_at(timing.drain_until, request).await {
            Err(_) => {
                out.unanswered += items;
                break;
            }
            Ok(Err(e)) => {
                out.unanswered += items;
                out.first_error.get_or_insert_with(|| format!("{e:#}"));
                break;
            }
            Ok(Ok((status, reply))) => {
                let now = Instant::now();
                if status == StatusCode::OK {
                    if timing.in_window(now) {
                        out.acked += items;
                        out.ack_hist.record(now - sent);
                    }
                } else {
                    out.errors += 1;
                    out.first_error.get_or_insert_with(|| {
                        format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(&reply[..reply.len().min(200)])
                        )
                    });
                }
            }
        }
    }
    out
}
