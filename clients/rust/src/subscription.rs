//! [`Subscription`]: the stream a user reads. Every subscription of a
//! client is carried by the client's one connection (see `mux`), which
//! feeds it through a bounded channel.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use futures_util::Stream;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    client::Inner,
    cursor::{Cursor, Progress},
    mux::{Entry, Handle},
    Error, Event, Start, Transport,
};

/// Counters of a subscription's life, from [`Subscription::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Times the subscription was established (1 after subscribing, +1 per
    /// reconnection of the client's connection).
    pub connections: u64,
    /// Messages the server sent again (after a resume, or through an
    /// overlap) that the client dropped.
    pub duplicates_dropped: u64,
    /// Times a topic's seq jumped forward with no gap event: messages the
    /// server failed to deliver. Should stay 0.
    pub seq_jumps: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections: AtomicU64,
    pub duplicates: AtomicU64,
    pub jumps: AtomicU64,
}

/// What the connection task hands to a [`Subscription`].
#[derive(Debug)]
pub(crate) enum Item {
    /// An event for the user.
    Event(Event),
    /// Where a live subscription starts (its floor and positions).
    Started(Cursor),
    /// Every matching message older than this floor came before.
    Floor(u64),
    /// A fatal error; nothing follows.
    Error(Error),
}

/// A live subscription: a [`Stream`] of [`Event`]s in seq order per topic,
/// without duplicates, across reconnections and node changes.
///
/// It yields `Err` only for a fatal error, after which the stream ends: the
/// server refused the subscription (e.g. `forbidden` after a token
/// expired), or sent something this client cannot decode
/// ([`Error::Protocol`]; never skipped silently). Dropping the subscription
/// unsubscribes it; the client's connection stays open for its other
/// subscriptions.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    pattern: String,
    rx: mpsc::Receiver<Item>,
    /// What the user has consumed so far (for [`Subscription::cursor`]).
    consumed: Progress,
    status: watch::Receiver<Option<(String, Transport)>>,
    counters: Arc<Counters>,
    mux: Handle,
    done: bool,
}

impl Subscription {
    /// This subscription's id (as in
    /// [`ConnectionEvent`](crate::ConnectionEvent)s).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The node URL and transport currently carrying it, `None` while
    /// reconnecting.
    pub fn connection(&self) -> Option<(String, Transport)> {
        self.status.borrow().clone()
    }

    /// A cursor covering exactly the events consumed from this stream so
    /// far. Pass it to [`Client::subscribe`](crate::Client::subscribe) as
    /// [`Start::Cursor`] (same pattern, any node, any transport) to continue
    /// after them, e.g. after a process restart. `None` before a
    /// [`Start::Live`] subscription is established.
    pub fn cursor(&self) -> Option<String> {
        self.consumed.cursor().map(|c| c.encode())
    }

    /// Connection and de-duplication counters.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.counters.connections.load(Ordering::Relaxed),
            duplicates_dropped: self.counters.duplicates.load(Ordering::Relaxed),
            seq_jumps: self.counters.jumps.load(Ordering::Relaxed),
        }
    }

    /// Ends the subscription (same as dropping it).
    pub fn unsubscribe(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.mux.remove(self.id);
    }
}

impl Stream for Subscription {
    type Item = Result<Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Item::Started(c))) => this.consumed.start_from(&c, true),
                Poll::Ready(Some(Item::Floor(f))) => this.consumed.raise_floor(f),
                Poll::Ready(Some(Item::Event(event))) => {
                    match &event {
                        Event::Message { topic, seq, .. } | Event::Binary { topic, seq, .. } => {
                            this.consumed.record(topic, *seq)
                        }
                        Event::Gap { topic, to, .. } => this.consumed.record(topic, *to),
                    }
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(Some(Item::Error(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

/// Registers a subscription with the client's connection and waits until
/// it is established (or refused, or no node could be reached).
pub(crate) async fn start(
    inner: &Arc<Inner>,
    mux: Handle,
    id: u64,
    pattern: &str,
    start: Start,
) -> Result<Subscription, Error> {
    if pattern.is_empty() {
        return Err(Error::InvalidArgument("empty pattern".into()));
    }
    let progress = Progress::new(pattern, &start)?;
    let (tx, rx) = mpsc::channel(inner.buffer);
    let (status_tx, status) = watch::channel(None);
    let (ready_tx, ready_rx) = oneshot::channel();
    let counters = Arc::new(Counters::default());
    let entry = Entry::new(
        id,
        progress.clone(),
        tx,
        status_tx,
        counters.clone(),
        ready_tx,
        tokio::time::Instant::now() + inner.connect_timeout,
    );
    if !mux.add(entry) {
        return Err(Error::Unavailable(
            "the client's connection task ended".into(),
        ));
    }
    let sub = Subscription {
        id,
        pattern: pattern.to_string(),
        rx,
        consumed: progress,
        status,
        counters,
        mux,
        done: false,
    };
    match ready_rx.await {
        Ok(Ok(())) => Ok(sub),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Unavailable(
            "the client's connection task ended".into(),
        )),
    }
}
