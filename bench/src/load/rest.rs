//! REST publisher: `POST /v1/topics/{topic}/messages` on one keep-alive
//! HTTP/1.1 connection, one request at a time (HTTP/1.1 without
//! pipelining), so concurrency equals the number of publishers.

use std::sync::atomic::Ordering;

use hyper::{Method, StatusCode};
use tokio::time::{sleep_until, timeout_at, Instant};

use super::{LiveCounters, PublishLoad, PublisherReport, Timing};
use crate::http::HttpConn;

pub async fn run(
    mut conn: HttpConn,
    index: usize,
    load: &PublishLoad,
    timing: Timing,
    live: &LiveCounters,
) -> PublisherReport {
    let path = format!("/v1/topics/{}/messages", load.topic_for(index));
    let mut rep = PublisherReport::default();
    let mut pace = load.pace_for(index, &timing);
    loop {
        let sent = match pace.as_mut() {
            Some(pace) => {
                // at a fixed rate, time from when it should have been sent
                let due = pace.advance();
                if due >= timing.stop_at {
                    break;
                }
                if due > Instant::now() {
                    // tokio's timer wakes up to ~1 ms late; not the server's fault
                    sleep_until(due).await;
                    Instant::now()
                } else {
                    due
                }
            }
            None => Instant::now(),
        };
        if sent >= timing.stop_at {
            break;
        }
        rep.sent_total += 1;
        if sent >= timing.measure_from {
            rep.sent_in_window += 1;
        }
        let request = conn.request(
            Method::POST,
            &path,
            Some("application/json"),
            load.payload.clone(),
        );
        match timeout_at(timing.drain_until, request).await {
            Err(_) => {
                rep.unanswered += 1;
                break;
            }
            Ok(Err(e)) => {
                rep.unanswered += 1;
                rep.failure = Some(format!("request failed: {e:#}"));
                break;
            }
            Ok(Ok((status, body))) => {
                let now = Instant::now();
                if status == StatusCode::OK {
                    rep.answered(&timing, now, now - sent);
                    live.acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    rep.errors += 1;
                    live.errors.fetch_add(1, Ordering::Relaxed);
                    rep.first_error.get_or_insert_with(|| {
                        format!(
                            "HTTP {status}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        )
                    });
                }
            }
        }
    }
    rep
}
