//! Server-Sent Events at `GET /v1/sse?topic=a.b&topic=c.>`.
//!
//! Every event carries `id: <cursor>`, the subscriber's position after that
//! event, so a browser's `EventSource` resumes by itself: on reconnect it
//! sends the last id as `Last-Event-ID`. The stream opens with an id-only
//! block (no data, so no event fires) carrying the starting cursor, which
//! makes even a reconnect before the first message lose nothing. Heartbeat
//! comments carry a fresh cursor too.

use std::sync::Arc;

use actix_web::{http::header, web, HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use tokio::sync::watch;

use super::{gap_json, new_subscriber, ConnectionTracker, StreamQuery};
use crate::{
    error::ApiError,
    hub::presence::ClientPresence,
    hub::{
        control::{Inbox, Registration},
        Cursor, Event, MailboxState, Subscriber,
    },
    metrics::Transport,
    state::AppState,
};

/// Client reconnect delay suggested to `EventSource`, ms.
const RETRY_MS: u64 = 1000;
/// The last block of a stream whose token reached its `exp` (the
/// WebSocket's close 4003): no `id`, so the client's cursor stays where it
/// was; reconnect with a fresh token.
const EXPIRED_EVENT: &[u8] = b"event: expired\ndata: {\"error\":{\"code\":\"unauthorized\",\"message\":\"token expired; reconnect with a fresh token\"}}\n\n";
/// The last block of a stream the admin API disconnected (the WebSocket's
/// close 4004): no `id`, and a day's `retry`, so that a browser's
/// `EventSource` whose page does not handle the event does not come back
/// by itself either.
const KICKED_EVENT: &[u8] = b"retry: 86400000\nevent: kicked\ndata: {\"error\":{\"code\":\"kicked\",\"message\":\"disconnected by the server; do not reconnect automatically\"}}\n\n";
const EVENTS_PER_CHUNK: usize = 256;

struct SseStream {
    state: Arc<AppState>,
    subscriber: Subscriber,
    presence: ClientPresence,
    heartbeat: tokio::time::Interval,
    shutdown: watch::Receiver<bool>,
    opening: Option<Bytes>,
    done: bool,
    /// The last chunk left nothing queued: wait before asking again.
    caught_up: bool,
    /// The token's `exp`: the stream ends there with [`EXPIRED_EVENT`].
    expires: Option<tokio::time::Instant>,
    /// Orders of the admin API for this stream.
    control: Arc<Inbox>,
    _registration: Registration,
    _tracker: ConnectionTracker,
}

/// `GET /v1/sse`: subscribes to every `topic`, resuming from `Last-Event-ID`
/// or `?cursor=` when given.
pub async fn stream(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let state = state.into_inner();
    if let Err(e) = state.admit_subscriber() {
        return Ok(unavailable(&e));
    }
    let identity = state.identify(&req)?;
    let expires = super::token_deadline(&identity)?;
    let mut query = StreamQuery::parse(req.query_string(), false)?;
    let header_cursor = match req.headers().get("last-event-id") {
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not a cursor"))?;
            (!text.is_empty())
                .then(|| Cursor::decode(text))
                .transpose()?
        }
        None => None,
    };
    // EventSource resends Last-Event-ID on reconnect; it wins over ?cursor=.
    if header_cursor.is_some() {
        query.cursor = header_cursor;
    }
    query.authorize(&identity)?;
    let tracker = ConnectionTracker::admit(&state, Transport::Sse, &req)?;
    let mut presence =
        ClientPresence::new(state.presence.clone(), Transport::Sse, identity.sub.clone());
    let control = Arc::new(Inbox::default());
    let registration = state.control.register(
        presence.shared_client_id(),
        identity.sub.as_deref(),
        control.clone(),
    );
    let mut subscriber = new_subscriber(&state);
    let resume = query.resume();
    if let Some(cursor) = query.cursor {
        subscriber.resume_from(cursor);
    }
    for pattern in query.patterns {
        subscriber.subscribe(pattern.clone(), resume.clone())?;
        presence.join(&pattern, query.presence);
    }
    let mut opening = BytesMut::new();
    // The id-only block fires no event; `hello` (no id, so the cursor
    // stays) tells the client its presence id.
    opening.put_slice(
        format!(
            "retry: {RETRY_MS}\nid: {}\n\nevent: hello\ndata: {}\n\n",
            subscriber.cursor().encode(),
            serde_json::json!({"client_id": presence.client_id(), "node": state.node_id}),
        )
        .as_bytes(),
    );
    let heartbeat_every = state.config.transport.sse_heartbeat;
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + heartbeat_every,
        heartbeat_every,
    );
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = SseStream {
        shutdown: state.lifecycle.shutdown.clone(),
        state,
        subscriber,
        presence,
        heartbeat,
        opening: Some(opening.freeze()),
        done: false,
        caught_up: false,
        expires,
        control,
        _registration: registration,
        _tracker: tracker,
    };
    let body = stream::unfold(body, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, actix_web::Error>(chunk), s))
    });
    Ok(event_stream(body))
}

/// The refusal of a node that cannot serve a stream now (shutting down, or
/// not caught up with its cluster): a stream of one `unavailable` event
/// (the contract's error body) with `retry:`, then its end. Not a 503:
/// `EventSource` gives up for good on any status but 200, while the end of
/// a 200 stream makes it reconnect after `retry` — with `Last-Event-ID`,
/// and behind a load balancer to a node that is ready.
fn unavailable(error: &ApiError) -> HttpResponse {
    let body = format!(
        "retry: {RETRY_MS}\n\nevent: unavailable\ndata: {}\n\n",
        error.body()
    );
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::RETRY_AFTER, "1"))
        .body(body)
}

/// A `text/event-stream` response that proxies must neither cache nor
/// buffer.
pub fn event_stream<S>(body: S) -> HttpResponse
where
    S: futures_util::Stream<Item = Result<Bytes, actix_web::Error>> + 'static,
{
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

impl SseStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(opening) = self.opening.take() {
            return Some(opening);
        }
        loop {
            if self.done || *self.shutdown.borrow() {
                return None;
            }
            if self
                .expires
                .is_some_and(|exp| tokio::time::Instant::now() >= exp)
            {
                self.done = true;
                return Some(Bytes::from_static(EXPIRED_EVENT));
            }
            if let Some(orders) = self.apply_orders() {
                return Some(orders);
            }
            if !self.caught_up {
                let mut out = BytesMut::new();
                let delivered = match self.subscriber.deliver(EVENTS_PER_CHUNK, |event, s| {
                    encode_event(&mut out, event, s);
                }) {
                    Ok(delivered) => delivered,
                    Err(e) => {
                        tracing::error!(error = %e, "log read failed during SSE delivery");
                        return None;
                    }
                };
                if delivered.state != MailboxState::Open {
                    // Ending the stream makes EventSource reconnect with its
                    // last id, which resumes from the log.
                    self.done = true;
                    if delivered.state == MailboxState::Overflowed {
                        out.put_slice(b": slow consumer; reconnect to resume\n\n");
                    }
                }
                if delivered.taken > 0 {
                    self.state
                        .metrics
                        .delivered(Transport::Sse)
                        .inc_by(delivered.taken as u64);
                }
                if !out.is_empty() {
                    self.caught_up = delivered.idle;
                    return Some(out.freeze());
                }
                if self.done {
                    return None;
                }
            }
            self.caught_up = false;
            let wake = self.subscriber.wake();
            let feed = self.presence.feed().clone();
            let listening = self.presence.listening();
            let orders = self.control.changed();
            tokio::select! {
                _ = wake => {}
                _ = orders => {}
                _ = feed.wait(), if listening => {
                    // Presence events carry no id: EventSource keeps the
                    // last message cursor for its reconnect.
                    let mut out = BytesMut::new();
                    for event in feed.drain() {
                        out.put_slice(format!("event: {}\ndata: {}\n\n", event.kind, event.json).as_bytes());
                    }
                    if !out.is_empty() {
                        return Some(out.freeze());
                    }
                }
                _ = self.heartbeat.tick() => {
                    let cursor = self.subscriber.cursor().encode();
                    return Some(Bytes::from(format!(": ping\nid: {cursor}\n\n")));
                }
                _ = self.shutdown.changed() => return None,
                _ = tokio::time::sleep_until(self.expires.unwrap_or_else(tokio::time::Instant::now)), if self.expires.is_some() => {}
            }
        }
    }
}

impl SseStream {
    /// Carries out the admin API's orders: a disconnect ends the stream with
    /// [`KICKED_EVENT`]; each subscription it ends is announced by an
    /// `unsubscribed` event (no `id`: the cursor stays).
    fn apply_orders(&mut self) -> Option<Bytes> {
        if self.control.kicked() {
            self.done = true;
            return Some(Bytes::from_static(KICKED_EVENT));
        }
        let mut out = BytesMut::new();
        for order in self.control.take_unsubscribes() {
            let held = self.subscriber.unsubscribe(&order.pattern);
            if held {
                self.presence.leave(&order.pattern);
                out.put_slice(b"event: unsubscribed\ndata: ");
                out.put_slice(
                    serde_json::json!({"topic": order.pattern.as_str()})
                        .to_string()
                        .as_bytes(),
                );
                out.put_slice(b"\n\n");
            }
            order.answer(held);
        }
        (!out.is_empty()).then(|| out.freeze())
    }
}

/// One event with its id: the subscriber's cursor right after it.
fn encode_event(out: &mut BytesMut, event: &Event, subscriber: &Subscriber) {
    out.put_slice(b"id: ");
    out.put_slice(subscriber.cursor().encode().as_bytes());
    match event {
        Event::Message(m) => {
            drop(crate::telemetry::trace::deliver_span(m, "sse"));
            out.put_slice(b"\nevent: message\ndata: ");
            out.put_slice(m.envelope());
        }
        Event::Gap { topic, from, to } => {
            out.put_slice(b"\nevent: gap\ndata: ");
            out.put_slice(gap_json(topic.as_str(), *from, *to).as_bytes());
        }
    }
    out.put_slice(b"\n\n");
}
