//! What a broker connection holds besides its socket: the subscriber, the
//! client's presence, its publishes awaiting acks, its identity and rate.

use std::{future::Future, pin::Pin};

use futures_util::{stream::FuturesUnordered, StreamExt};

use super::{
    close::{self, DRAINING_REASON, SLOW_CONSUMER_REASON},
    outbox::Outbox,
    Exit,
};
use crate::{
    auth::Identity,
    engine::{PublishError, Published},
    hub::presence::ClientPresence,
    hub::{Event, MailboxState, Subscriber},
    limits::TokenBucket,
    metrics::{Metrics, Transport},
    state::AppState,
    telemetry::trace,
    transport::{
        new_subscriber,
        protocol::{OpId, Reply},
        ConnectionTracker,
    },
    wire::websocket::{self, OpCode},
};

/// Publishes one connection may have awaiting their ack before its link
/// stops reading further frames.
pub const MAX_PUBLISHES_IN_FLIGHT: usize = 256;
/// Events taken from the subscriber per write.
const EVENTS_PER_BATCH: usize = 256;

/// The outcome of one publish, with the op id to answer it under.
pub type AckResult = (Option<OpId>, Result<Vec<Published>, PublishError>);
type PendingAck = Pin<Box<dyn Future<Output = AckResult>>>;

/// A broker connection's state.
pub struct Session {
    /// Subscriptions and delivery positions.
    pub subscriber: Subscriber,
    /// The client's presence entries and event feed.
    pub presence: ClientPresence,
    /// Publishes awaiting their ack; created on the first publish, so a
    /// subscribe-only connection holds none.
    acks: Option<FuturesUnordered<PendingAck>>,
    /// Who the client is (replaced by `refresh`).
    pub identity: Identity,
    /// Publish rate of this connection, when limited.
    pub rate: Option<TokenBucket>,
    _tracker: ConnectionTracker,
}

impl Session {
    /// A session for `identity`, counted by `tracker` while it lives.
    pub fn new(state: &AppState, identity: Identity, tracker: ConnectionTracker) -> Self {
        let limits = &state.config.limits;
        Session {
            subscriber: new_subscriber(state),
            presence: ClientPresence::new(
                state.presence.clone(),
                Transport::Ws,
                identity.sub.clone(),
            ),
            acks: None,
            identity,
            rate: (limits.publish_rate_per_connection > 0.0).then(|| {
                TokenBucket::new(limits.publish_rate_per_connection, limits.publish_burst)
            }),
            _tracker: tracker,
        }
    }

    /// Publishes awaiting their ack.
    pub fn acks_in_flight(&self) -> usize {
        self.acks.as_ref().map_or(0, FuturesUnordered::len)
    }

    /// Whether the link may read another frame.
    pub fn can_read(&self) -> bool {
        self.acks_in_flight() < MAX_PUBLISHES_IN_FLIGHT
    }

    /// Starts waiting for a publish's ack.
    pub fn await_ack(&mut self, ack: PendingAck) {
        self.acks
            .get_or_insert_with(FuturesUnordered::new)
            .push(ack);
    }

    /// The next ack (pending while none is in flight).
    pub async fn next_ack(&mut self) -> AckResult {
        match self.acks.as_mut() {
            Some(acks) if !acks.is_empty() => match acks.next().await {
                Some(result) => result,
                None => std::future::pending().await,
            },
            _ => std::future::pending().await,
        }
    }

    /// Frees the ack set once empty (a connection that published once
    /// should not keep it for life).
    pub fn compact(&mut self) {
        if self.acks.as_ref().is_some_and(FuturesUnordered::is_empty) {
            self.acks = None;
        }
    }

    /// Moves what is ready for the client into `out`: one batch of
    /// deliveries. Ends the connection when delivery does (slow consumer,
    /// draining, a failed log read).
    pub fn deliver(&mut self, out: &mut Outbox, metrics: &Metrics) -> Result<(), Exit> {
        out.expect(self.subscriber.queued_bytes());
        let delivered = self
            .subscriber
            .deliver(EVENTS_PER_BATCH, |event, _| match event {
                Event::Message(m) => {
                    let _span = trace::deliver_span(m, "ws");
                    out.push(m.ws_wire());
                }
                Event::Gap { topic, from, to } => {
                    let gap = Reply::Gap {
                        topic: topic.as_str(),
                        from: *from,
                        to: *to,
                    };
                    out.push(&websocket::frame(OpCode::Text, gap.encode().as_bytes()));
                }
            })
            .map_err(|e| {
                tracing::error!(error = %e, "log read failed during delivery");
                Exit::Close(close::INTERNAL_ERROR, "storage read failed")
            })?;
        metrics
            .delivered(Transport::Ws)
            .inc_by(delivered.taken as u64);
        match delivered.state {
            MailboxState::Open => Ok(()),
            MailboxState::Overflowed => {
                Err(Exit::Close(close::SLOW_CONSUMER, SLOW_CONSUMER_REASON))
            }
            MailboxState::Closed => Err(Exit::Close(close::SERVICE_RESTART, DRAINING_REASON)),
        }
    }
}
