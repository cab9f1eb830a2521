//! WebSocket transport at `/v1/ws` (and the `/v1/echo` conformance endpoint,
//! which runs the same connection loop with an echoing handler).
//!
//! One task per connection reads the socket and `select!`s over: client
//! frames, acks of publishes in flight, presence, the ping timer, server
//! shutdown and the end of delivery. Its subscriber is shared with the
//! response body, which pulls deliveries itself (`delivery`). Every write of
//! the task is bounded by the idle timeout; a client that stops reading
//! stops the body being polled, its queued messages are capped by the
//! mailbox, and the ping timer closes it (4001 once the mailbox overflowed).
//! Frames go out through Herald's own lane (`wire`), each message's frame
//! built once and shared; actix-ws does the handshake, the reading and the
//! close frame.
//!
//! Close codes: 1000 normal, 1012 node draining (reconnect elsewhere and
//! resume), 1002 protocol error,
//! 1007 invalid UTF-8, 1009 frame too big, 1011 internal error,
//! 4001 slow consumer (resume from your last seq), 4002 idle timeout.

mod delivery;
mod ops;
mod outbound;
mod wire;

use std::{future::Future, pin::Pin, rc::Rc, sync::Arc, time::Duration};

use actix_http::ws::OpCode;
use actix_web::{body::MessageBody, web, HttpRequest, HttpResponse};
use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session,
};
use delivery::Deliveries;
use futures_util::{stream::FuturesUnordered, StreamExt};
use tokio::time::{timeout, Instant};
use wire::{FrameSender, FramedBody, Pull};

use super::{new_subscriber, presence::ClientPresence, protocol::OpId, ConnectionTracker};
use crate::{
    auth::Identity,
    engine::{PublishError, Published},
    http::ApiError,
    limits::TokenBucket,
    metrics::Transport,
    server::AppState,
};

/// Close code (RFC 6455 "service restart"): the node is draining; reconnect,
/// to another node if there is one, and resume.
pub const CLOSE_SERVICE_RESTART: u16 = 1012;
/// Close code: the client fell too far behind and must resume.
pub const CLOSE_SLOW_CONSUMER: u16 = 4001;
/// Close reason sent with [`CLOSE_SLOW_CONSUMER`].
const SLOW_CONSUMER_REASON: &str = "slow consumer: resume from your last seq";
/// Close code: nothing heard from the client within the idle timeout.
pub const CLOSE_IDLE_TIMEOUT: u16 = 4002;
/// Close code: the connection's token expired without a `refresh`.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4003;
/// Publishes one connection may have awaiting their ack before it stops
/// reading further frames.
const MAX_PUBLISHES_IN_FLIGHT: usize = 256;
/// Events the response body takes from the subscriber per poll.
const EVENTS_PER_BATCH: usize = 256;

type AckResult = (Option<OpId>, Result<Vec<Published>, PublishError>);
type PendingAck = Pin<Box<dyn Future<Output = AckResult>>>;

/// `GET /v1/ws`: upgrades and spawns the connection task.
pub async fn upgrade(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    if state.shutting_down() {
        return Err(ApiError::new(crate::http::ErrorCode::Unavailable, "shutting down").into());
    }
    // Refuse before upgrading: a browser sees the 401 as a failed handshake.
    let identity = state.identify(&req)?;
    let tracker = ConnectionTracker::admit(&state, Transport::Ws, &req)?;
    let state = state.into_inner();
    let (deliveries, pull) = Deliveries::new(new_subscriber(&state), state.metrics.clone());
    let (response, upgraded) = handshake(&req, body, Some(Box::new(pull)))?;
    let upgraded = upgraded.limit(state.config.limits.max_frame_bytes());
    let presence = ClientPresence::new(state.presence.clone(), Transport::Ws, identity.sub.clone());
    let limits = &state.config.limits;
    let rate = (limits.publish_rate_per_connection > 0.0)
        .then(|| TokenBucket::new(limits.publish_rate_per_connection, limits.publish_burst));
    let handler = Handler::Broker(Box::new(BrokerHandler {
        deliveries,
        presence,
        acks: FuturesUnordered::new(),
        identity,
        rate,
    }));
    let conn = Connection::new(state, upgraded, handler);
    actix_web::rt::spawn(async move {
        conn.run().await;
        drop(tracker);
    });
    Ok(response)
}

/// `GET /v1/echo` (with `--enable-echo`): echoes text and binary messages.
pub async fn echo(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, upgraded) = handshake(&req, body, None)?;
    let state = state.into_inner();
    let upgraded = upgraded.limit(ECHO_MAX_MESSAGE_BYTES);
    actix_web::rt::spawn(Connection::new(state, upgraded, Handler::Echo).run());
    Ok(response)
}

/// What the handshake leaves the connection task: its ends of the socket.
struct Upgraded<S> {
    frames: FrameSender,
    session: Session,
    stream: S,
}

impl Upgraded<actix_ws::MessageStream> {
    /// Caps client frames and reassembled messages at `max` bytes.
    fn limit(self, max: usize) -> Upgraded<AggregatedMessageStream> {
        Upgraded {
            frames: self.frames,
            session: self.session,
            stream: self
                .stream
                .max_frame_size(max)
                .aggregate_continuations()
                .max_continuation_size(max),
        }
    }
}

/// The WebSocket handshake (actix-ws), with Herald's data lane in front of
/// its response body (which takes deliveries from `pull`), and refusals in
/// the contract's error shape.
fn handshake(
    req: &HttpRequest,
    body: web::Payload,
    pull: Option<Box<dyn Pull>>,
) -> Result<(HttpResponse, Upgraded<actix_ws::MessageStream>), ApiError> {
    let (response, session, stream) = actix_ws::handle(req, body)
        .map_err(|e| ApiError::bad_request(format!("not a valid WebSocket upgrade: {e}")))?;
    let mut frames = None;
    let response = response.map_body(|_, control| {
        let (body, sender) = FramedBody::new(control, pull);
        frames = Some(sender);
        body.boxed()
    });
    let frames = frames.expect("map_body runs its closure");
    Ok((
        response,
        Upgraded {
            frames,
            session,
            stream,
        },
    ))
}

/// Largest message the echo endpoint takes: conformance suites send up to
/// 16 MiB. The broker endpoint's limit is a payload plus op overhead.
const ECHO_MAX_MESSAGE_BYTES: usize = 32 << 20;

struct BrokerHandler {
    /// The subscriber, shared with the response body that delivers.
    deliveries: Rc<Deliveries>,
    presence: ClientPresence,
    acks: FuturesUnordered<PendingAck>,
    identity: Identity,
    /// Publish rate of this connection, when limited.
    rate: Option<TokenBucket>,
}

enum Handler {
    Broker(Box<BrokerHandler>),
    Echo,
}

/// Why the loop ended, and what to tell the client.
enum Exit {
    /// Close with this code and reason.
    Close(u16, &'static str),
    /// The client closed or vanished; nothing more to send.
    Gone,
}

impl Exit {
    /// The node is draining (close 1012): reconnect elsewhere and resume.
    const DRAINING: Exit = Exit::Close(
        CLOSE_SERVICE_RESTART,
        "node draining; reconnect, to another node if possible",
    );
}

/// One WebSocket connection's state. It lives in its own allocation (see
/// [`Connection::new`]) and every step `run` awaits is a boxed future (one
/// allocation per incoming frame or delivery batch), so an idle connection's
/// task is small: a task holds the state of its biggest await, and `on_frame`
/// alone would add ~1.3 KiB to every idle connection.
struct Connection {
    state: Arc<AppState>,
    /// Every frame but close (replies, deliveries, ping/pong), in order.
    frames: FrameSender,
    /// Close frames; all else takes `frames`, in order.
    session: Session,
    stream: AggregatedMessageStream,
    handler: Handler,
    last_heard: Instant,
}

impl Connection {
    fn new(
        state: Arc<AppState>,
        upgraded: Upgraded<AggregatedMessageStream>,
        handler: Handler,
    ) -> Box<Self> {
        Box::new(Connection {
            state,
            frames: upgraded.frames,
            session: upgraded.session,
            stream: upgraded.stream,
            handler,
            last_heard: Instant::now(),
        })
    }

    async fn run(mut self: Box<Self>) {
        let transport = self.state.config.transport.clone();
        // One wait for the whole connection, not a fresh `changed()` (a
        // waiter-list insert and removal) per loop turn, i.e. per delivery
        // batch. Resolves at once if the server is already draining.
        let mut shutdown = self.state.shutdown.clone();
        let draining = async move {
            let _ = shutdown.wait_for(|draining| *draining).await;
        };
        tokio::pin!(draining);
        let mut ping = tokio::time::interval_at(
            Instant::now() + transport.ws_ping_interval,
            transport.ws_ping_interval,
        );
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let exit = loop {
            let (deliveries, acks_pending, reading, expiry, feed) = match &self.handler {
                Handler::Broker(b) => (
                    Some(b.deliveries.clone()),
                    !b.acks.is_empty(),
                    b.acks.len() < MAX_PUBLISHES_IN_FLIGHT,
                    b.identity.expires_at.map(deadline_of),
                    b.presence.listening().then(|| b.presence.feed().clone()),
                ),
                Handler::Echo => (None, false, true, None, None),
            };
            let step = tokio::select! {
                biased;
                _ = &mut draining => Step::Shutdown,
                frame = self.stream.next(), if reading => Step::Frame(frame),
                ack = next_ack(&mut self.handler), if acks_pending => Step::Ack(ack),
                exit = async { deliveries.as_ref().expect("checked").ended().await }, if deliveries.is_some() => Step::Ended(exit),
                _ = async { feed.as_ref().expect("checked").wait().await }, if feed.is_some() => Step::Presence,
                _ = ping.tick() => Step::Ping,
                _ = tokio::time::sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => Step::Expired,
            };
            let result = match step {
                Step::Shutdown => Err(Exit::DRAINING),
                Step::Frame(frame) => {
                    if let Some(d) = &deliveries {
                        d.hold();
                    }
                    let result = Box::pin(self.on_frame(frame)).await;
                    if deliveries.as_ref().is_some_and(|d| d.release()) {
                        self.frames.wake_body();
                    }
                    result
                }
                Step::Ack(Some((id, result))) => Box::pin(self.on_ack(id, result)).await,
                Step::Ack(None) => Ok(()),
                Step::Ended(exit) => Err(exit),
                Step::Presence => Box::pin(self.send_presence()).await,
                Step::Ping => Box::pin(self.ping(transport.ws_idle_timeout)).await,
                Step::Expired => Err(Exit::Close(
                    CLOSE_TOKEN_EXPIRED,
                    "token expired; reconnect with a fresh token",
                )),
            };
            if let Err(exit) = result {
                break exit;
            }
        };
        if let Handler::Broker(b) = &self.handler {
            b.deliveries.close();
        }
        if let Exit::Close(code, reason) = exit {
            let reason = CloseReason {
                code: CloseCode::from(code),
                description: Some(reason.to_string()),
            };
            let _ = timeout(Duration::from_secs(1), self.session.close(Some(reason))).await;
        }
    }

    async fn on_frame(
        &mut self,
        frame: Option<Result<AggregatedMessage, ProtocolError>>,
    ) -> Result<(), Exit> {
        self.last_heard = Instant::now();
        let message = match frame {
            None => return Err(Exit::Gone),
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "websocket protocol error");
                let exit = protocol_exit(&e);
                if let Exit::Close(code, _) = exit {
                    self.state.metrics.bad_requests.inc();
                    if code == 1009 {
                        self.state.metrics.ws_oversized_messages.inc();
                    }
                }
                return Err(exit);
            }
        };
        tracing::trace!(?message, "websocket frame");
        match message {
            AggregatedMessage::Text(text) => match &mut self.handler {
                Handler::Echo => self.send(text).await,
                Handler::Broker(_) => self.on_op(&text).await,
            },
            AggregatedMessage::Binary(bytes) => match &self.handler {
                Handler::Echo => {
                    self.send_frames(vec![wire::frame(OpCode::Binary, &bytes)])
                        .await
                }
                Handler::Broker(_) => {
                    self.state.metrics.bad_requests.inc();
                    self.send_error(
                        None,
                        &ApiError::bad_request(
                            "binary frames are not supported; send JSON text frames",
                        ),
                    )
                    .await
                }
            },
            // Pongs take the data lane, so they keep their place among the
            // replies (a ping before a message is answered before it).
            AggregatedMessage::Ping(bytes) => {
                self.send_frames(vec![wire::frame(OpCode::Pong, &bytes)])
                    .await
            }
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(reason) => {
                let _ = timeout(Duration::from_secs(1), self.session.clone().close(reason)).await;
                Err(Exit::Gone)
            }
        }
    }
}

enum Step {
    Shutdown,
    Frame(Option<Result<AggregatedMessage, ProtocolError>>),
    Ack(Option<AckResult>),
    Ended(Exit),
    Presence,
    Ping,
    Expired,
}

/// When a token expiring at `exp` (seconds since the epoch) runs out.
fn deadline_of(exp: u64) -> Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Instant::now() + Duration::from_secs(exp.saturating_sub(now))
}

async fn next_ack(handler: &mut Handler) -> Option<AckResult> {
    match handler {
        Handler::Broker(b) => b.acks.next().await,
        Handler::Echo => std::future::pending().await,
    }
}

fn protocol_exit(e: &ProtocolError) -> Exit {
    match e {
        ProtocolError::Overflow => Exit::Close(1009, "message too big"),
        // actix-ws reports invalid UTF-8 as InvalidData wrapping a
        // Utf8Error; other InvalidData errors (e.g. reserved bits) are
        // framing violations.
        ProtocolError::Io(io)
            if io.get_ref().is_some_and(|inner| {
                inner.is::<std::str::Utf8Error>() || inner.to_string().contains("utf-8")
            }) =>
        {
            Exit::Close(1007, "invalid UTF-8 in text frame")
        }
        ProtocolError::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            Exit::Close(1002, "protocol error")
        }
        ProtocolError::Io(_) => Exit::Gone,
        _ => Exit::Close(1002, "protocol error"),
    }
}
