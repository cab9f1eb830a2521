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
    error::ApiError,
    hub::{presence::SessionKicked, Event, MailboxState},
    metrics::Transport,
    state::AppState,
};

/// `{"messages":[envelope, ...],"cursor":"..."}`, plus `"gaps":[...]` when
/// retention removed messages the cursor still expected, and
/// `"unsubscribed":[...]` when the admin API ended some of the session's
/// patterns. 410 `kicked` when the admin API disconnected the session.
pub async fn poll(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.admit_subscriber()?;
    let query = StreamQuery::parse(req.query_string(), true)?;
    let identity = state.identify(&req)?;
    let expires = super::token_deadline(&identity)?;
    query.authorize(&identity)?;
    let transport = &state.config.transport;
    let wait = query
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(transport.poll_default_timeout)
        .min(transport.poll_max_timeout);
    let _tracker = ConnectionTracker::admit(&state, Transport::Poll, &req)?;
    let mut subscriber = new_subscriber(&state);
    let resume = query.resume();
    if let Some(cursor) = query.cursor {
        subscriber.resume_from(cursor);
    }
    // A `timeout_ms=0` poll that names no session and asks for no events
    // is a peek (clients use one to learn a starting cursor): it does not
    // make anyone present. It still gets an id to name next time.
    let peek = wait.is_zero() && query.client_id.is_none() && !query.presence;
    let lease = if peek {
        None
    } else {
        Some(
            state
                .poll_sessions
                .begin(query.client_id.as_deref(), &state.presence, &identity)?,
        )
    };
    // Patterns the admin API ended since the session's last answer are
    // left out of this poll and reported in it.
    let (patterns, mut unsubscribed, feed) = match &lease {
        Some(lease) => lease.sync(&query.patterns, query.presence),
        None => (query.patterns.clone(), Vec::new(), None),
    };
    for pattern in &patterns {
        subscriber.subscribe(pattern.clone(), resume.clone())?;
    }
    let client_id = match &lease {
        Some(lease) => lease.client_id().to_string(),
        None => state.presence.new_client_id(),
    };
    let orders = lease.as_ref().map(|lease| lease.inbox().clone());
    // A poll never outlives its token: it answers 401 at `exp`.
    let until_timeout = tokio::time::Instant::now() + wait;
    let deadline = expires.map_or(until_timeout, |exp| exp.min(until_timeout));
    let mut shutdown = state.lifecycle.shutdown.clone();
    let mut body = BytesMut::with_capacity(256);
    body.put_slice(b"{\"messages\":[");
    let mut gaps = Vec::new();
    let mut messages = 0;
    loop {
        let room = transport.max_page - messages - gaps.len();
        let delivered = subscriber.deliver(room, |event, _| match event {
            Event::Message(m) => {
                drop(crate::telemetry::trace::deliver_span(m, "poll"));
                if messages > 0 {
                    body.put_u8(b',');
                }
                messages += 1;
                body.put_slice(m.envelope());
            }
            Event::Gap { topic, from, to } => gaps.push(gap_json(topic.as_str(), *from, *to)),
        })?;
        if let Some(orders) = &orders {
            if orders.kicked() {
                return Err(SessionKicked.into());
            }
            for order in orders.take_unsubscribes() {
                let held = subscriber.unsubscribe(&order.pattern);
                if held {
                    unsubscribed.push(order.pattern.clone());
                }
                order.answer(held);
            }
        }
        let presence_waiting = feed.as_ref().is_some_and(|f| !f.is_empty());
        if messages + gaps.len() + unsubscribed.len() > 0
            || presence_waiting
            || delivered.state != MailboxState::Open
            || *shutdown.borrow()
        {
            break;
        }
        tokio::select! {
            _ = subscriber.wake() => {}
            _ = async { feed.as_ref().expect("checked").wait().await }, if feed.is_some() => {}
            _ = async { orders.as_ref().expect("checked").changed().await }, if orders.is_some() => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = shutdown.changed() => break,
        }
    }
    let presence_waiting = feed.as_ref().is_some_and(|f| !f.is_empty());
    if messages + gaps.len() + unsubscribed.len() == 0
        && !presence_waiting
        && expires.is_some_and(|exp| tokio::time::Instant::now() >= exp)
    {
        return Err(ApiError::new(
            crate::error::ErrorCode::Unauthorized,
            "token expired; poll again with a fresh token",
        ));
    }
    body.put_slice(b"],\"cursor\":\"");
    body.put_slice(subscriber.cursor().encode().as_bytes());
    body.put_u8(b'"');
    if !gaps.is_empty() {
        body.put_slice(format!(",\"gaps\":[{}]", gaps.join(",")).as_bytes());
    }
    if let Some(feed) = &feed {
        let events: Vec<_> = feed.drain().into_iter().map(|e| e.json).collect();
        body.put_slice(b",\"presence\":[");
        body.put_slice(events.join(",").as_bytes());
        body.put_u8(b']');
    }
    if !unsubscribed.is_empty() {
        let names: Vec<&str> = unsubscribed.iter().map(|p| p.as_str()).collect();
        body.put_slice(b",\"unsubscribed\":");
        body.put_slice(
            serde_json::to_string(&names)
                .expect("strings serialize")
                .as_bytes(),
        );
    }
    body.put_slice(b",\"client_id\":");
    body.put_slice(
        serde_json::to_string(&client_id)
            .expect("strings serialize")
            .as_bytes(),
    );
    body.put_u8(b'}');
    state
        .metrics
        .delivered(Transport::Poll)
        .inc_by(messages as u64);
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(body.freeze()))
}
