//! Deliveries to a WebSocket client, pulled by its response body.
//!
//! The connection task and the response body (polled by actix's HTTP/1
//! dispatcher task) run on the same worker thread, and share the
//! connection's [`Subscriber`] here. Whenever its lane is empty the body
//! takes the subscriber's events itself, in the dispatcher's own poll: a
//! message wakes one task per subscriber (the dispatcher) instead of the
//! connection task and then the dispatcher, and a batch reaches the socket in
//! the poll that took it. The connection task keeps everything else (ops and
//! their replies, acks, pings, presence) and hears from here only when
//! delivery ends the connection: a slow consumer, the node draining, a failed
//! log read.
//!
//! A client that stops reading stops the dispatcher polling the body, so its
//! messages wait in the subscriber's mailbox, which is bounded. The
//! connection task's ping timer closes such a connection: 4001 once the
//! mailbox has overflowed, 4002 once messages have waited untaken for the
//! idle timeout (under the policies that never overflow) or the client has
//! stopped answering.

use std::{
    cell::{Cell, RefCell, RefMut},
    future::poll_fn,
    rc::Rc,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use actix_http::ws::OpCode;
use tokio::time::Instant;

use super::{
    wire::{self, Fill, Pull},
    Exit, CLOSE_SLOW_CONSUMER, EVENTS_PER_BATCH, SLOW_CONSUMER_REASON,
};
use crate::{
    hub::{Event, MailboxState, Subscriber},
    metrics::{Metrics, Transport},
    telemetry::trace,
    transport::protocol::Reply,
};

/// A connection's subscriber, shared by its task and its response body.
pub(super) struct Deliveries {
    /// `None` once the connection has ended: nothing is delivered after it
    /// (the close frame is the last frame).
    subscriber: RefCell<Option<Subscriber>>,
    /// Set while the connection task handles a client frame, so its replies
    /// go before anything delivered after it (`subscribed` before the new
    /// subscription's first message).
    held: Cell<bool>,
    /// The body skipped a pull while held: it is woken on release.
    skipped: Cell<bool>,
    /// Why delivery ended the connection, for the connection task.
    ended: RefCell<Option<Exit>>,
    /// The connection task, waiting for `ended`.
    connection: Cell<Option<Waker>>,
    /// Pulls that took something, so far.
    pulls: Cell<u64>,
    /// `pulls` at the last [`Deliveries::stalled_for`], and since when
    /// messages have waited with it unchanged.
    watch: Cell<(u64, Option<Instant>)>,
}

impl Deliveries {
    /// Shares `subscriber`; the returned [`Pull`] goes to the response body.
    pub(super) fn new(subscriber: Subscriber, metrics: Arc<Metrics>) -> (Rc<Self>, DeliveryPull) {
        let deliveries = Rc::new(Deliveries {
            subscriber: RefCell::new(Some(subscriber)),
            held: Cell::new(false),
            skipped: Cell::new(false),
            ended: RefCell::new(None),
            connection: Cell::new(None),
            pulls: Cell::new(0),
            watch: Cell::new((0, None)),
        });
        let pull = DeliveryPull {
            deliveries: deliveries.clone(),
            events: Vec::new(),
            metrics,
        };
        (deliveries, pull)
    }

    /// The subscriber, for an op. Never held across an await: the body
    /// borrows it whenever the dispatcher polls.
    pub(super) fn subscriber(&self) -> RefMut<'_, Subscriber> {
        RefMut::map(self.subscriber.borrow_mut(), |s| {
            s.as_mut()
                .expect("the subscriber lives as long as the connection")
        })
    }

    /// Whether the subscriber's mailbox overflowed. The body reports that
    /// when it next pulls, but a client that stopped reading stops the body
    /// being polled, so the connection task asks too.
    pub(super) fn overflowed(&self) -> bool {
        self.subscriber
            .borrow()
            .as_ref()
            .is_some_and(Subscriber::overflowed)
    }

    /// How long messages have waited without the body taking any, as seen
    /// by the calls so far (the ping timer's: its interval is the
    /// granularity). Zero when nothing waits or the body took some since.
    pub(super) fn stalled_for(&self, now: Instant) -> Duration {
        let waiting = self
            .subscriber
            .borrow()
            .as_ref()
            .is_some_and(Subscriber::pending);
        let pulls = self.pulls.get();
        let (seen, since) = self.watch.get();
        if !waiting || pulls != seen {
            self.watch.set((pulls, None));
            return Duration::ZERO;
        }
        let since = since.unwrap_or(now);
        self.watch.set((pulls, Some(since)));
        now - since
    }

    /// Holds deliveries while a client frame is handled.
    pub(super) fn hold(&self) {
        self.held.set(true);
    }

    /// Ends a [`Deliveries::hold`]; true if the body must be woken to take
    /// what it skipped.
    pub(super) fn release(&self) -> bool {
        self.held.set(false);
        self.skipped.replace(false)
    }

    /// Resolves when delivery ended the connection, with why.
    pub(super) async fn ended(&self) -> Exit {
        poll_fn(|cx| match self.ended.borrow_mut().take() {
            Some(exit) => Poll::Ready(exit),
            None => {
                self.connection.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }

    /// Drops the subscriber (its subscriptions end with it); the body
    /// delivers nothing more.
    pub(super) fn close(&self) {
        let subscriber = self.subscriber.borrow_mut().take();
        drop(subscriber);
    }

    fn end(&self, exit: Exit) {
        *self.ended.borrow_mut() = Some(exit);
        if let Some(waker) = self.connection.take() {
            waker.wake();
        }
    }
}

/// The response body's end of [`Deliveries`].
pub(super) struct DeliveryPull {
    deliveries: Rc<Deliveries>,
    events: Vec<Event>,
    metrics: Arc<Metrics>,
}

/// Bytes `event`'s frame takes on the wire (a gap's is built when sent and
/// small; it is left out).
fn ws_wire_len(event: &Event) -> usize {
    match event {
        Event::Message(m) => m.ws_wire().len(),
        Event::Gap { .. } => 0,
    }
}

impl Pull for DeliveryPull {
    fn pull(&mut self, cx: &mut Context<'_>, fill: &mut Fill<'_>) {
        let deliveries = &*self.deliveries;
        if deliveries.held.get() {
            deliveries.skipped.set(true);
            return;
        }
        if deliveries.ended.borrow().is_some() {
            return;
        }
        let Ok(mut slot) = deliveries.subscriber.try_borrow_mut() else {
            debug_assert!(false, "subscriber borrowed across an await");
            return;
        };
        let Some(subscriber) = slot.as_mut() else {
            return;
        };
        let mut taken = 0;
        while taken < EVENTS_PER_BATCH {
            if subscriber.poll_wake(cx).is_pending() {
                break;
            }
            self.events.clear();
            let state = match subscriber.next_events(&mut self.events, EVENTS_PER_BATCH - taken) {
                Ok(state) => state,
                Err(e) => {
                    tracing::error!(error = %e, "log read failed during delivery");
                    deliveries.end(Exit::Close(1011, "storage read failed"));
                    break;
                }
            };
            fill.expect(self.events.iter().map(ws_wire_len).sum());
            for event in &self.events {
                subscriber.delivered(event);
                match event {
                    Event::Message(m) => {
                        let _span = trace::deliver_span(m, "ws");
                        fill.push(m.ws_wire());
                    }
                    Event::Gap { topic, from, to } => {
                        let gap = Reply::Gap {
                            topic: topic.as_str(),
                            from: *from,
                            to: *to,
                        };
                        fill.push(&wire::frame(OpCode::Text, gap.encode().as_bytes()));
                    }
                }
            }
            taken += self.events.len();
            // Dropped here, not at the next pull: they hold the messages.
            self.events.clear();
            match state {
                MailboxState::Open => {}
                MailboxState::Overflowed => {
                    deliveries.end(Exit::Close(CLOSE_SLOW_CONSUMER, SLOW_CONSUMER_REASON));
                    break;
                }
                MailboxState::Closed => {
                    deliveries.end(Exit::DRAINING);
                    break;
                }
            }
        }
        if taken > 0 {
            deliveries.pulls.set(deliveries.pulls.get() + 1);
            self.metrics.delivered(Transport::Ws).inc_by(taken as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;

    use actix_web::body::{BodyStream, BoxBody, MessageBody};
    use bytes::Bytes;

    use super::{
        super::wire::{frame, FrameSender, FramedBody},
        *,
    };
    use crate::{
        hub::{Hub, Message, Pattern, Resume, Topic},
        log::{sled_log::SledOptions, MessageLog, SledLog},
    };

    struct Fixture {
        hub: Arc<Hub>,
        log: Arc<dyn MessageLog>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let options = SledOptions {
            cache_bytes: 1 << 20,
            flush_every_ms: 1000,
        };
        let log: Arc<dyn MessageLog> = Arc::new(SledLog::open(dir.path(), &options).unwrap());
        let hub = Arc::new(Hub::new(Arc::new(Metrics::default())));
        Fixture {
            hub,
            log,
            _dir: dir,
        }
    }

    /// A body whose lane's `pull` is this connection's deliveries, and whose
    /// control half (actix-ws's) never yields.
    fn body_for(fx: &Fixture, queue_bytes: usize) -> (Rc<Deliveries>, FramedBody, FrameSender) {
        let mut subscriber = Subscriber::new(fx.hub.clone(), fx.log.clone(), queue_bytes, 16);
        subscriber
            .subscribe(Pattern::parse("t").unwrap(), Resume::Live)
            .unwrap();
        let (deliveries, pull) = Deliveries::new(subscriber, fx.hub.metrics().clone());
        let control = BoxBody::new(BodyStream::new(futures_util::stream::pending::<
            Result<Bytes, std::convert::Infallible>,
        >()));
        let (body, sender) = FramedBody::new(control, Some(Box::new(pull)));
        (deliveries, body, sender)
    }

    fn message(seq: u64) -> Arc<Message> {
        let data = crate::json::string_value(&format!("m{seq}"));
        Message::new(Topic::parse("t").unwrap(), seq, seq, &data)
    }

    /// Everything the body yields without waiting, as text.
    fn drain(body: &mut FramedBody) -> Vec<String> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(chunk)) = Pin::new(&mut *body).poll_next(&mut cx) {
            out.push(String::from_utf8_lossy(&chunk.unwrap()).into_owned());
        }
        out
    }

    #[actix_web::test]
    async fn a_reply_to_a_held_frame_goes_before_what_was_delivered_meanwhile() {
        let fx = fixture();
        let (deliveries, mut body, sender) = body_for(&fx, 1 << 20);
        deliveries.hold();
        fx.hub.dispatch(&[message(1)]);
        assert!(drain(&mut body).is_empty(), "delivered while held");
        sender
            .send_all([frame(OpCode::Text, b"REPLY")])
            .await
            .unwrap();
        assert!(deliveries.release(), "the skipped pull is reported");
        let chunks = drain(&mut body).concat();
        let reply = chunks.find("REPLY").expect("reply sent");
        let delivered = chunks.find("\"m1\"").expect("message delivered");
        assert!(reply < delivered, "{chunks}");
        assert!(!deliveries.release(), "nothing skipped since");
    }

    #[actix_web::test]
    async fn an_overflow_ends_the_connection_and_close_stops_deliveries() {
        let fx = fixture();
        let queue = message(1).queue_weight() * 2;
        let (deliveries, mut body, _sender) = body_for(&fx, queue);
        for seq in 1..=5 {
            fx.hub.dispatch(&[message(seq)]);
        }
        // Known to the connection task even if the body is never polled.
        assert!(deliveries.overflowed());
        drain(&mut body);
        let exit = deliveries.ended().await;
        assert!(matches!(exit, Exit::Close(CLOSE_SLOW_CONSUMER, _)));
        deliveries.close();

        let (deliveries, mut body, _sender) = body_for(&fx, 1 << 20);
        fx.hub.dispatch(&[message(6)]);
        deliveries.close();
        assert!(drain(&mut body).is_empty(), "delivered after close");
        assert_eq!(
            fx.hub.subscription_count(),
            0,
            "subscriptions outlived close"
        );
    }
}
