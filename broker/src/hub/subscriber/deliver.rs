//! The one call every transport delivers through: take what is ready, hand
//! each event to the transport, and keep the books (positions, floor).

use std::cell::RefCell;

use super::{Event, Subscriber};
use crate::{hub::mailbox::MailboxState, log::LogError};

thread_local! {
    /// Events of the batch being delivered. One per thread rather than one
    /// per subscriber: a batch never outlives its `deliver` call, and an idle
    /// connection should hold no buffer.
    static BATCH: RefCell<Vec<Event>> = const { RefCell::new(Vec::new()) };
}

/// What one [`Subscriber::deliver`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// Events handed to the transport.
    pub taken: usize,
    /// The mailbox's state: anything but `Open` ends the connection
    /// (`Overflowed`: a slow consumer under `disconnect`; `Closed`: the node
    /// is draining).
    pub state: MailboxState,
    /// Nothing else was ready: wait for [`Subscriber::wake`] before calling
    /// again.
    pub idle: bool,
}

/// Where [`Subscriber::deliver_to`] hands a batch.
pub trait DeliverySink {
    /// The whole batch, before its events are sent (to size a buffer once).
    fn prepare(&mut self, _events: &[Event]) {}

    /// One event, with the subscriber already past it.
    fn send(&mut self, event: &Event, subscriber: &Subscriber);
}

impl Subscriber {
    /// Takes up to `max` ready events (replays from the log, then live
    /// messages, in seq order per topic) and hands each to `send`, which
    /// must pass it on to the client in that order. Each event counts as
    /// delivered when `send` gets it, so the `&Subscriber` it also gets
    /// already reports the cursor *after* that event (SSE writes it as the
    /// event's id). Once nothing more is owed, the floor advances too.
    ///
    /// `send` must not call back into this subscriber's `deliver`.
    pub fn deliver(
        &mut self,
        max: usize,
        send: impl FnMut(&Event, &Subscriber),
    ) -> Result<Delivered, LogError> {
        struct Send<F>(F);
        impl<F: FnMut(&Event, &Subscriber)> DeliverySink for Send<F> {
            fn send(&mut self, event: &Event, subscriber: &Subscriber) {
                (self.0)(event, subscriber)
            }
        }
        self.deliver_to(max, &mut Send(send))
    }

    /// [`Subscriber::deliver`] into a [`DeliverySink`], which is shown the
    /// whole batch first.
    pub fn deliver_to(
        &mut self,
        max: usize,
        sink: &mut impl DeliverySink,
    ) -> Result<Delivered, LogError> {
        let mut events = BATCH.with(RefCell::take);
        let result = self.next_events(&mut events, max);
        let outcome = result.map(|state| {
            sink.prepare(&events);
            for event in &events {
                self.record_delivery(event);
                sink.send(event, self);
            }
            let idle = self.emptied_by(events.len(), max);
            if idle {
                self.settle();
            }
            Delivered {
                taken: events.len(),
                state,
                idle,
            }
        });
        // Dropped here, not at the next batch: the events hold messages.
        events.clear();
        BATCH.with(|batch| {
            let mut batch = batch.borrow_mut();
            if batch.capacity() < events.capacity() {
                *batch = events;
            }
        });
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{
        hub::{Hub, Message, Pattern, Resume, Topic},
        log::{sled_log::SledOptions, MessageLog, SledLog},
        metrics::Metrics,
    };

    use super::*;

    fn message(seq: u64) -> Arc<Message> {
        Message::new(Topic::parse("t").unwrap(), seq, seq, "1")
    }

    #[test]
    fn each_event_is_delivered_before_send_sees_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let options = SledOptions {
            cache_bytes: 1 << 20,
            flush_every_ms: 1000,
        };
        let log: Arc<dyn MessageLog> = Arc::new(SledLog::open(dir.path(), &options).unwrap());
        let hub = Arc::new(Hub::new(Arc::new(Metrics::default())));
        let mut subscriber = Subscriber::new(hub.clone(), log, 1 << 20, 16);
        subscriber
            .subscribe(Pattern::parse("t").unwrap(), Resume::Live)
            .unwrap();
        hub.dispatch(&[message(1), message(2), message(3)]);

        let mut seen = Vec::new();
        let delivered = subscriber
            .deliver(2, |event, s| {
                let Event::Message(m) = event else {
                    panic!("{event:?}")
                };
                seen.push((m.seq, s.cursor().positions[&m.topic]));
            })
            .unwrap();
        assert_eq!(seen, [(1, 1), (2, 2)]);
        assert_eq!(delivered.taken, 2);
        assert!(!delivered.idle, "one more was ready");

        let delivered = subscriber.deliver(2, |_, _| {}).unwrap();
        assert_eq!((delivered.taken, delivered.idle), (1, true));
        assert_eq!(delivered.state, MailboxState::Open);
        assert_eq!(
            subscriber.cursor().positions[&Topic::parse("t").unwrap()],
            3
        );
    }
}
