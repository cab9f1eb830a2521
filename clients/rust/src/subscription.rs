//! [`Subscription`]: the stream a user reads, and the task behind it that
//! connects, falls back, reconnects and resumes.

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
    cursor::{Accepted, Cursor, Progress},
    ConnectionEvent, Error, Event, Start, Transport,
};

/// Counters of a subscription's life, from [`Subscription::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Connections established (1 after subscribing, +1 per reconnection).
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
    connections: AtomicU64,
    duplicates: AtomicU64,
    jumps: AtomicU64,
}

/// What the background task hands to the [`Subscription`].
#[derive(Debug)]
pub(crate) enum Item {
    /// An event for the user.
    Event(Event),
    /// A server cursor covering every event sent before it.
    Cursor(Cursor),
    /// A fatal error; the task has ended.
    Error(Error),
}

/// A live subscription: a [`Stream`] of [`Event`]s in seq order per topic,
/// without duplicates, across reconnections and node changes.
///
/// It yields `Err` only for a fatal error, after which the stream ends: the
/// server refused the subscription (e.g. `forbidden` after a token
/// expired), or sent something this client cannot decode
/// ([`Error::Protocol`]; never skipped silently). Dropping the subscription
/// closes its connection.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    pattern: String,
    rx: mpsc::Receiver<Item>,
    /// What the user has consumed so far (for [`Subscription::cursor`]).
    consumed: Progress,
    status: watch::Receiver<Option<(String, Transport)>>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscription {
    /// This subscription's id (as in [`ConnectionEvent`]s).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The node URL and transport currently connected, `None` while
    /// reconnecting.
    pub fn connection(&self) -> Option<(String, Transport)> {
        self.status.borrow().clone()
    }

    /// A cursor covering exactly the events consumed from this stream so
    /// far. Pass it to [`Client::subscribe`](crate::Client::subscribe) as
    /// [`Start::Cursor`] (same pattern, any node, any transport) to continue
    /// after them, e.g. after a process restart. `None` before the first
    /// connection of a [`Start::Live`] subscription.
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
        self.task.abort();
    }
}

impl Stream for Subscription {
    type Item = Result<Event, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Item::Cursor(c))) => {
                    this.consumed.merge(&c);
                }
                Poll::Ready(Some(Item::Event(event))) => {
                    match &event {
                        Event::Message { topic, seq, .. } => {
                            this.consumed.accept_message(topic, *seq);
                        }
                        Event::Gap { topic, from, to } => {
                            this.consumed.accept_gap(topic, *from, *to);
                        }
                    }
                    return Poll::Ready(Some(Ok(event)));
                }
                Poll::Ready(Some(Item::Error(e))) => return Poll::Ready(Some(Err(e))),
            }
        }
    }
}

/// Validates, spawns the task and waits until the subscription is
/// established (or failed).
pub(crate) async fn start(
    inner: Arc<Inner>,
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
    let runner = Runner {
        inner,
        id,
        pattern: pattern.to_string(),
        progress: progress.clone(),
        tx,
        status: status_tx,
        counters: counters.clone(),
    };
    let task = tokio::spawn(runner.run(ready_tx));
    let sub = Subscription {
        id,
        pattern: pattern.to_string(),
        rx,
        consumed: progress,
        status,
        counters,
        task,
    };
    match ready_rx.await {
        Ok(Ok(())) => Ok(sub),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Unavailable("subscription task ended".into())),
    }
}

/// How one transport session ended.
pub(crate) enum Outcome {
    /// Never established; try the next transport or node.
    ConnectFailed(String),
    /// Established, then lost; reconnect.
    Disconnected(String),
    /// The server refused the subscription for good.
    Fatal(Error),
    /// The user dropped the subscription.
    Closed,
}

/// The background task of one subscription.
pub(crate) struct Runner {
    pub inner: Arc<Inner>,
    pub id: u64,
    pub pattern: String,
    /// What has been handed to the channel (what to resume from).
    pub progress: Progress,
    tx: mpsc::Sender<Item>,
    status: watch::Sender<Option<(String, Transport)>>,
    counters: Arc<Counters>,
}

/// Signals the first establishment to [`start`].
pub(crate) type Ready = Option<oneshot::Sender<Result<(), Error>>>;

impl Runner {
    async fn run(mut self, ready: oneshot::Sender<Result<(), Error>>) {
        let mut ready = Some(ready);
        let inner = self.inner.clone();
        let deadline = tokio::time::Instant::now() + inner.connect_timeout;
        let mut index = inner.preferred();
        let mut attempt = 0u32;
        let mut last_error = String::from("no attempt");
        loop {
            let base = inner.urls[index % inner.urls.len()].clone();
            for &transport in &inner.transports {
                let outcome = match transport {
                    Transport::Ws => self.ws(&base, &mut ready).await,
                    Transport::Sse => self.sse(&base, &mut ready).await,
                    Transport::Poll => self.poll(&base, &mut ready).await,
                };
                self.status.send_replace(None);
                match outcome {
                    Outcome::Closed => return,
                    Outcome::Fatal(e) => {
                        match ready.take() {
                            Some(r) => {
                                let _ = r.send(Err(e));
                            }
                            None => {
                                let _ = self.tx.send(Item::Error(e)).await;
                            }
                        }
                        return;
                    }
                    Outcome::ConnectFailed(reason) => {
                        tracing::debug!(url = %base, %transport, %reason, "herald connect failed");
                        inner.emit(ConnectionEvent::ConnectFailed {
                            subscription: self.id,
                            pattern: self.pattern.clone(),
                            url: crate::client::display(&base),
                            transport,
                            reason: reason.clone(),
                        });
                        last_error = format!("{base} ({transport}): {reason}");
                    }
                    Outcome::Disconnected(reason) => {
                        tracing::debug!(url = %base, %transport, %reason, "herald disconnected");
                        inner.emit(ConnectionEvent::Disconnected {
                            subscription: self.id,
                            pattern: self.pattern.clone(),
                            url: crate::client::display(&base),
                            transport,
                            reason,
                        });
                        attempt = 0;
                        break;
                    }
                }
            }
            if self.tx.is_closed() {
                return;
            }
            let delay = inner.backoff.delay(attempt);
            attempt = attempt.saturating_add(1);
            if ready.is_some() && tokio::time::Instant::now() + delay >= deadline {
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(Error::Unavailable(format!(
                        "cannot subscribe to {:?}: {last_error}",
                        self.pattern
                    ))));
                }
                return;
            }
            index += 1;
            inner.emit(ConnectionEvent::Reconnecting {
                subscription: self.id,
                pattern: self.pattern.clone(),
                attempt,
                delay,
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Records that a transport session is established.
    pub(crate) fn established(
        &mut self,
        base: &reqwest::Url,
        transport: Transport,
        ready: &mut Ready,
    ) {
        self.counters.connections.fetch_add(1, Ordering::Relaxed);
        if let Some(index) = self.inner.urls.iter().position(|u| u == base) {
            self.inner.set_preferred(index);
        }
        self.status
            .send_replace(Some((crate::client::display(base), transport)));
        self.inner.emit(ConnectionEvent::Connected {
            subscription: self.id,
            pattern: self.pattern.clone(),
            url: crate::client::display(base),
            transport,
        });
        if let Some(r) = ready.take() {
            let _ = r.send(Ok(()));
        }
    }

    /// Passes a received message on unless it is a duplicate; false when
    /// the user is gone.
    pub(crate) async fn message(
        &mut self,
        topic: String,
        seq: u64,
        ts: u64,
        data: serde_json::Value,
    ) -> bool {
        match self.progress.accept_message(&topic, seq) {
            Accepted::Next => {}
            Accepted::Duplicate => {
                tracing::debug!(topic, seq, "herald: duplicate dropped");
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Accepted::AfterJump => {
                tracing::warn!(topic, seq, "herald: seqs skipped without a gap event");
                self.counters.jumps.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.tx
            .send(Item::Event(Event::Message {
                topic,
                seq,
                ts,
                data,
            }))
            .await
            .is_ok()
    }

    /// Passes a gap on (the part not already seen); false when the user is
    /// gone.
    pub(crate) async fn gap(&mut self, topic: String, from: u64, to: u64) -> bool {
        match self.progress.accept_gap(&topic, from, to) {
            Some((from, to)) => self
                .tx
                .send(Item::Event(Event::Gap { topic, from, to }))
                .await
                .is_ok(),
            None => true,
        }
    }

    /// Completes when the user dropped the subscription.
    pub(crate) async fn tx_closed(&self) {
        self.tx.closed().await
    }

    /// Takes in a server cursor; false when the user is gone.
    pub(crate) async fn server_cursor(&mut self, text: &str) -> bool {
        match Cursor::decode(text) {
            Ok(cursor) => {
                self.progress.merge(&cursor);
                self.tx.send(Item::Cursor(cursor)).await.is_ok()
            }
            Err(e) => {
                tracing::warn!(error = %e, "herald: ignoring a cursor from the server");
                true
            }
        }
    }
}
