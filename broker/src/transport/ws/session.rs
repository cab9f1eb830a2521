//! What a broker connection holds besides its socket: the subscriber, the
//! client's presence, its publishes awaiting acks, its identity and rate.

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use futures_util::{stream::FuturesUnordered, StreamExt};

use super::{
    close::{self, DRAINING_REASON, KICKED_REASON, SLOW_CONSUMER_REASON},
    outbox::Outbox,
    Exit,
};
use crate::{
    auth::Identity,
    engine::{Engine, PublishError, PublishItem, Published},
    hub::presence::ClientPresence,
    hub::{
        control::{Inbox, Registration},
        DeliverySink, Event, MailboxState, Message, Subscriber,
    },
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

/// The outcome of publishes handed to the engine together, with the op id
/// of each (in order) to answer it under.
pub type AckResult = (Vec<Option<OpId>>, Result<Vec<Published>, PublishError>);
type PendingAck = Pin<Box<dyn Future<Output = AckResult>>>;

/// Publishes awaiting their ack. The set is created on the first publish,
/// so a subscribe-only connection holds none.
#[derive(Default)]
pub struct Acks {
    set: Option<FuturesUnordered<PendingAck>>,
    /// Publishes in `set`.
    in_flight: usize,
}

impl Acks {
    fn push(&mut self, publishes: usize, ack: PendingAck) {
        self.in_flight += publishes;
        self.set.get_or_insert_with(FuturesUnordered::new).push(ack);
    }

    /// Whether any publish awaits its ack.
    pub fn waiting(&self) -> bool {
        self.in_flight > 0
    }

    /// The next ack (pending while none is in flight).
    pub async fn next(&mut self) -> AckResult {
        let result = match self.set.as_mut() {
            Some(set) if !set.is_empty() => match set.next().await {
                Some(result) => result,
                None => std::future::pending().await,
            },
            _ => std::future::pending().await,
        };
        self.in_flight -= result.0.len();
        result
    }

    /// Frees the set once empty (a connection that published once should
    /// not keep it for life).
    pub fn compact(&mut self) {
        if self.set.as_ref().is_some_and(FuturesUnordered::is_empty) {
            self.set = None;
        }
    }
}

/// A broker connection's state.
pub struct Session {
    /// Subscriptions and delivery positions.
    pub subscriber: Subscriber,
    /// The client's presence entries and event feed.
    pub presence: ClientPresence,
    /// Publishes awaiting their ack.
    pub acks: Acks,
    /// Publishes read but not handed to the engine yet: every publish op of
    /// one read goes to the engine in one call (see [`Session::submit`]).
    queued: Vec<(Option<OpId>, PublishItem)>,
    /// Who the client is (replaced by `refresh`).
    pub identity: Identity,
    /// Publish rate of this connection, when limited.
    pub rate: Option<TokenBucket>,
    /// Orders of the admin API for this connection.
    pub control: Arc<Inbox>,
    /// Binary messages go out as JSON text frames with base64 `data`
    /// (`/v1/ws?binary=base64`) instead of binary frames.
    pub binary_as_base64: bool,
    _registration: Registration,
    _tracker: ConnectionTracker,
}

impl Session {
    /// A session for `identity`, counted by `tracker` while it lives.
    pub fn new(state: &AppState, identity: Identity, tracker: ConnectionTracker) -> Self {
        let limits = &state.config.limits;
        let presence =
            ClientPresence::new(state.presence.clone(), Transport::Ws, identity.sub.clone());
        let control = Arc::new(Inbox::default());
        let registration = state.control.register(
            presence.shared_client_id(),
            identity.sub.as_deref(),
            control.clone(),
        );
        Session {
            subscriber: new_subscriber(state),
            presence,
            control,
            binary_as_base64: false,
            _registration: registration,
            acks: Acks::default(),
            queued: Vec::new(),
            identity,
            rate: (limits.publish_rate_per_connection > 0.0).then(|| {
                TokenBucket::new(limits.publish_rate_per_connection, limits.publish_burst)
            }),
            _tracker: tracker,
        }
    }

    /// Publishes awaiting their ack (or queued for the engine).
    pub fn acks_in_flight(&self) -> usize {
        self.acks.in_flight + self.queued.len()
    }

    /// Whether the link may read another frame.
    pub fn can_read(&self) -> bool {
        self.acks_in_flight() < MAX_PUBLISHES_IN_FLIGHT
    }

    /// Starts waiting for the ack of `publishes` publishes.
    pub fn await_ack(&mut self, publishes: usize, ack: PendingAck) {
        self.acks.push(publishes, ack);
    }

    /// Queues a publish for the next [`Session::submit`].
    pub fn queue_publish(&mut self, id: Option<OpId>, item: PublishItem) {
        self.queued.push((id, item));
    }

    /// Hands every queued publish to the engine in one call: one trip
    /// through the sequencer's queue and one reply for what one read of the
    /// socket brought, instead of one per publish. Publishes of one
    /// connection reach the sequencer in the order they were sent, so
    /// pipelined publishes to a topic get increasing seqs.
    pub fn submit(&mut self, engine: &Arc<dyn Engine>, metrics: &Arc<Metrics>) {
        if self.queued.is_empty() {
            return;
        }
        let (ids, items): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queued).into_iter().unzip();
        let n = items.len();
        let (engine, metrics) = (engine.clone(), metrics.clone());
        // `unconstrained`: the engine takes the publishes in this future's
        // first poll; tokio's budget could defer that poll, and deferred
        // wake-ups run in reverse order.
        self.await_ack(
            n,
            Box::pin(tokio::task::unconstrained(async move {
                let started = std::time::Instant::now();
                let result = engine.publish(items).await;
                match &result {
                    Ok(_) => {
                        let took = started.elapsed().as_secs_f64();
                        for _ in 0..n {
                            metrics.publish_ack_seconds.observe(took);
                        }
                    }
                    Err(_) => metrics.publish_errors.inc_by(n as u64),
                }
                (ids, result)
            })),
        );
    }

    /// Carries out the admin API's orders: a disconnect ends the
    /// connection (4004); a subscription it ends is reported with an
    /// `unsubscribed` frame without `id` (the client did not ask).
    pub fn apply_orders(&mut self, out: &mut Outbox) -> Result<(), Exit> {
        if self.control.kicked() {
            return Err(Exit::Close(close::KICKED, KICKED_REASON));
        }
        for order in self.control.take_unsubscribes() {
            let held = self.subscriber.unsubscribe(&order.pattern);
            if held {
                self.presence.leave(&order.pattern);
                let reply = Reply::Unsubscribed {
                    id: None,
                    topic: order.pattern.as_str(),
                };
                out.push(&websocket::frame(OpCode::Text, reply.encode().as_bytes()));
            }
            order.answer(held);
        }
        Ok(())
    }

    /// Moves what is ready for the client into `out`: one batch of
    /// deliveries. Ends the connection when delivery does (slow consumer,
    /// draining, a failed log read).
    pub fn deliver(&mut self, out: &mut Outbox, metrics: &Metrics) -> Result<(), Exit> {
        let delivered = self
            .subscriber
            .deliver_to(
                EVENTS_PER_BATCH,
                &mut Frames {
                    out,
                    base64: self.binary_as_base64,
                },
            )
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

/// Deliveries as WebSocket frames: each message's shared frame (a binary
/// message's binary frame, or its JSON text frame when the client asked
/// for base64), a gap as a `gap` frame.
struct Frames<'a> {
    out: &'a mut Outbox,
    base64: bool,
}

impl Frames<'_> {
    fn wire<'m>(&self, m: &'m Message) -> &'m Bytes {
        if self.base64 {
            m.ws_text_wire()
        } else {
            m.ws_wire()
        }
    }
}

impl DeliverySink for Frames<'_> {
    fn prepare(&mut self, events: &[Event]) {
        let bytes = events
            .iter()
            .map(|e| match e {
                Event::Message(m) => self.wire(m).len(),
                Event::Gap { .. } => 64,
            })
            .sum();
        self.out.expect(bytes);
    }

    fn send(&mut self, event: &Event, _: &Subscriber) {
        match event {
            Event::Message(m) => {
                let _span = trace::deliver_span(m, "ws");
                let wire = self.wire(m);
                self.out.push(wire);
            }
            Event::Gap { topic, from, to } => {
                let gap = Reply::Gap {
                    topic: topic.as_str(),
                    from: *from,
                    to: *to,
                };
                self.out
                    .push(&websocket::frame(OpCode::Text, gap.encode().as_bytes()));
            }
        }
    }
}
