//! HTTP long-poll at `GET /v1/poll?topic=a.b&cursor=..&timeout_ms=25000`.
//!
//! Stateless between requests: each poll builds a subscriber from the
//! cursor, answers as soon as anything is deliverable (or at the timeout,
//! with an empty list) and returns the cursor to pass next time. Messages
//! published between two polls are read back from the log.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{BufMut, BytesMut};

use super::{gap_json, new_subscriber, ConnectionTracker, StreamQuery};
use crate::{
    http::ApiError,
    hub::{Event, MailboxState, Resume},
    metrics::Transport,
    server::AppState,
};

/// `{"messages":[envelope, ...],"cursor":"..."}`, plus `"gaps":[...]` when
/// retention removed messages the cursor still expected.
pub async fn poll(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let query = StreamQuery::parse(req.query_string(), true)?;
    query.authorize(&state.identify(&req)?)?;
    let transport = &state.config.transport;
    let wait = query
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(transport.poll_default_timeout)
        .min(transport.poll_max_timeout);
    let _tracker = ConnectionTracker::admit(&state, Transport::Poll, &req)?;
    let mut subscriber = new_subscriber(&state);
    if let Some(cursor) = query.cursor {
        subscriber.resume_from(cursor);
    }
    for pattern in query.patterns {
        subscriber.subscribe(pattern, Resume::Live)?;
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut shutdown = state.shutdown.clone();
    let mut events = Vec::new();
    loop {
        let room = transport.max_page - events.len();
        let got = subscriber.next_events(&mut events, room)?;
        if !events.is_empty() || got != MailboxState::Open || *shutdown.borrow() {
            break;
        }
        tokio::select! {
            _ = subscriber.wake() => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.changed() => break,
        }
    }
    for event in &events {
        subscriber.delivered(event);
    }
    subscriber.settle();
    let mut body = BytesMut::with_capacity(128 + events.len() * 128);
    body.put_slice(b"{\"messages\":[");
    let mut gaps = Vec::new();
    let mut first = true;
    for event in &events {
        match event {
            Event::Message(m) => {
                if !first {
                    body.put_u8(b',');
                }
                first = false;
                body.put_slice(m.envelope());
            }
            Event::Gap { topic, from, to } => gaps.push(gap_json(topic.as_str(), *from, *to)),
        }
    }
    body.put_slice(b"],\"cursor\":\"");
    body.put_slice(subscriber.cursor().encode().as_bytes());
    body.put_u8(b'"');
    if !gaps.is_empty() {
        body.put_slice(format!(",\"gaps\":[{}]", gaps.join(",")).as_bytes());
    }
    body.put_u8(b'}');
    state
        .metrics
        .delivered(Transport::Poll)
        .inc_by((events.len() - gaps.len()) as u64);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body.freeze()))
}
