//! The client's one connection: a task that carries every subscription of
//! a client over one WebSocket (one `subscribe` op per pattern) or one SSE
//! stream / long-poll loop (every pattern in one request), reconnects with
//! back-off across the nodes, and resumes every subscription from its own
//! position.
//!
//! Each subscription keeps its own [`Progress`]; the connection resumes
//! from a cursor combining them ([`combine`]), and each subscription drops
//! what it already has or what precedes its start, so that a reconnect
//! loses and repeats nothing for any of them.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use reqwest::Url;
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::Instant,
};

use crate::{
    client::{display, Inner},
    cursor::{Accepted, Cursor, Progress},
    subscription::{Counters, Item},
    ConnectionEvent, Error, Event, Payload, Transport,
};

/// A session that lasted this long resets the reconnection back-off.
const STABLE: Duration = Duration::from_secs(5);

/// A node that refuses without saying for how long is asked again after
/// this (what Herald sends as `Retry-After`).
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Requests to the connection task.
pub(crate) enum Command {
    /// A new subscription.
    Add(Box<Entry>),
    /// A subscription was dropped.
    Remove(u64),
}

/// The sending side of a client's connection task.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Command>,
}

impl Handle {
    /// Starts the connection task (in the caller's tokio runtime).
    pub fn spawn(inner: Arc<Inner>) -> Handle {
        let (tx, rx) = mpsc::unbounded_channel();
        let manager = Manager {
            not_before: vec![None; inner.urls.len()],
            poll_session: None,
            subs: Registry::new(inner.clone()),
            inner,
            cmds: rx,
        };
        tokio::spawn(manager.run());
        Handle { tx }
    }

    /// False when the task has ended.
    pub fn add(&self, entry: Entry) -> bool {
        self.tx.send(Command::Add(Box::new(entry))).is_ok()
    }

    pub fn remove(&self, id: u64) {
        let _ = self.tx.send(Command::Remove(id));
    }
}

/// One subscription as the connection task sees it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub id: u64,
    /// What has been handed to the subscription's channel.
    pub progress: Progress,
    tx: mpsc::Sender<Item>,
    status: watch::Sender<Option<(String, Transport)>>,
    counters: Arc<Counters>,
    /// Pending until the subscription is first established.
    ready: Option<oneshot::Sender<Result<(), Error>>>,
    /// A pending subscription fails when no node was reached by then.
    deadline: Instant,
    /// The floor last handed to the channel.
    floor_sent: Option<u64>,
    /// Established on the current connection.
    pub live: bool,
    /// The subscription is gone or failed; removed at the next sweep.
    dead: bool,
}

impl Entry {
    pub fn new(
        id: u64,
        progress: Progress,
        tx: mpsc::Sender<Item>,
        status: watch::Sender<Option<(String, Transport)>>,
        counters: Arc<Counters>,
        ready: oneshot::Sender<Result<(), Error>>,
        deadline: Instant,
    ) -> Entry {
        Entry {
            id,
            floor_sent: progress.floor,
            progress,
            tx,
            status,
            counters,
            ready: Some(ready),
            deadline,
            live: false,
            dead: false,
        }
    }

    pub fn pattern(&self) -> &str {
        self.progress.pattern()
    }

    /// Hands an item over; false (and the entry is dead) when the user
    /// dropped the subscription.
    async fn send(&mut self, item: Item) -> bool {
        if self.tx.send(item).await.is_err() {
            self.dead = true;
        }
        !self.dead
    }

    /// Hands the current floor over first if it moved (so that the
    /// consumer's cursor follows).
    async fn send_event(&mut self, event: Event) {
        if self.progress.floor != self.floor_sent {
            if let Some(f) = self.progress.floor {
                self.floor_sent = Some(f);
                if !self.send(Item::Floor(f)).await {
                    return;
                }
            }
        }
        self.send(Item::Event(event)).await;
    }
}

/// Every subscription of the client, and what they receive.
#[derive(Debug)]
pub(crate) struct Registry {
    inner: Arc<Inner>,
    entries: BTreeMap<u64, Entry>,
}

impl Registry {
    fn new(inner: Arc<Inner>) -> Registry {
        Registry {
            inner,
            entries: BTreeMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn add(&mut self, entry: Entry) {
        self.entries.insert(entry.id, entry);
    }

    /// Removes a subscription; returns its pattern.
    pub fn remove(&mut self, id: u64) -> Option<String> {
        self.entries.remove(&id).map(|e| e.pattern().to_string())
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.get(&id)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> + Clone {
        self.entries.values()
    }

    pub fn progresses(&self) -> impl Iterator<Item = &Progress> + Clone {
        self.entries.values().map(|e| &e.progress)
    }

    /// Whether some subscription uses `pattern`.
    pub fn uses(&self, pattern: &str) -> bool {
        self.entries.values().any(|e| e.pattern() == pattern)
    }

    /// The distinct patterns, wildcards first (so that a concrete topic
    /// does not fix a position a wildcard's resume would need earlier).
    pub fn patterns(&self) -> Vec<String> {
        let mut patterns: Vec<String> = self
            .entries
            .values()
            .map(|e| e.pattern().to_string())
            .collect();
        patterns.sort_by(|a, b| {
            let concrete = |p: &str| crate::cursor::is_concrete(p);
            concrete(a).cmp(&concrete(b)).then_with(|| a.cmp(b))
        });
        patterns.dedup();
        patterns
    }

    /// Drops the entries whose user went away.
    pub fn sweep(&mut self) {
        self.entries.retain(|_, e| !e.dead);
    }

    /// Starts a live subscription from a server cursor and tells its
    /// consumer where it starts.
    pub async fn start(&mut self, id: u64, cursor: &Cursor, keep_zero: bool) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.progress.start_from(cursor, keep_zero);
            e.floor_sent = e.progress.floor;
            if let Some(c) = e.progress.cursor() {
                e.send(Item::Started(c)).await;
            }
        }
    }

    /// Starts a live subscription where another one to the same pattern on
    /// this connection stands; false if there is none.
    pub async fn start_like_peer(&mut self, id: u64) -> bool {
        let Some(pattern) = self.entries.get(&id).map(|e| e.pattern().to_string()) else {
            return false;
        };
        let peer = self
            .entries
            .values()
            .find(|e| e.id != id && e.live && e.progress.started() && e.pattern() == pattern)
            .and_then(|e| e.progress.cursor());
        match peer {
            Some(c) => {
                self.start(id, &c, true).await;
                true
            }
            None => false,
        }
    }

    /// A subscription is established on this connection.
    pub fn established(&mut self, id: u64, base: &Url, transport: Transport) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.live {
            return;
        }
        e.live = true;
        e.counters
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(index) = self.inner.urls.iter().position(|u| u == base) {
            self.inner.set_preferred(index);
        }
        e.status.send_replace(Some((display(base), transport)));
        self.inner.emit(ConnectionEvent::Connected {
            subscription: e.id,
            pattern: e.pattern().to_string(),
            url: display(base),
            transport,
        });
        if let Some(r) = e.ready.take() {
            let _ = r.send(Ok(()));
        }
    }

    /// The connection ended: every subscription it carried is told.
    pub fn lost(&mut self, base: &Url, transport: Transport, reason: &str) {
        for e in self.entries.values_mut() {
            if !e.live {
                continue;
            }
            e.live = false;
            e.status.send_replace(None);
            self.inner.emit(ConnectionEvent::Disconnected {
                subscription: e.id,
                pattern: e.pattern().to_string(),
                url: display(base),
                transport,
                reason: reason.to_string(),
            });
        }
    }

    /// Ends a subscription with an error (its `subscribe` call fails, or
    /// its stream yields the error).
    pub async fn fail(&mut self, id: u64, error: Error) {
        let Some(mut e) = self.entries.remove(&id) else {
            return;
        };
        e.status.send_replace(None);
        match e.ready.take() {
            Some(r) => {
                let _ = r.send(Err(error));
            }
            None => {
                let _ = e.tx.send(Item::Error(error)).await;
            }
        }
    }

    /// Fails every subscription with the same error.
    pub async fn fail_all(&mut self, error: &Error) {
        let ids: Vec<u64> = self.entries.keys().copied().collect();
        for id in ids {
            self.fail(id, clone_error(error)).await;
        }
    }

    /// Fails every subscription to `pattern`.
    pub async fn fail_pattern(&mut self, pattern: &str, error: &Error) {
        let ids: Vec<u64> = self
            .entries
            .values()
            .filter(|e| e.pattern() == pattern)
            .map(|e| e.id)
            .collect();
        for id in ids {
            self.fail(id, clone_error(error)).await;
        }
    }

    /// A delivered message: every subscription it is new for gets it.
    pub async fn message(&mut self, topic: &str, seq: u64, ts: u64, payload: Payload) {
        for e in self.entries.values_mut() {
            if e.dead || !e.progress.started() {
                continue;
            }
            match e.progress.accept_message(topic, seq, ts) {
                Accepted::Next => {}
                Accepted::AfterJump => {
                    tracing::warn!(topic, seq, "herald: seqs skipped without a gap event");
                    e.counters
                        .jumps
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Accepted::Duplicate => {
                    tracing::debug!(topic, seq, "herald: duplicate dropped");
                    e.counters
                        .duplicates
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                Accepted::BeforeStart | Accepted::Unmatched => continue,
            }
            let delivery = crate::binary::Delivery {
                topic: topic.to_string(),
                seq,
                ts,
                payload: payload.clone(),
            };
            e.send_event(delivery.into_event()).await;
        }
    }

    /// The node ended `pattern` on its own (admin API): its subscriptions
    /// end with [`Error::Unsubscribed`] and are not subscribed again.
    pub async fn server_unsubscribed(&mut self, pattern: &str, base: &Url, transport: Transport) {
        for e in self.entries.values().filter(|e| e.pattern() == pattern) {
            self.inner.emit(ConnectionEvent::Unsubscribed {
                subscription: e.id,
                pattern: pattern.to_string(),
                url: display(base),
                transport,
            });
        }
        let error =
            Error::Unsubscribed(format!("the server ended the subscription to {pattern:?}"));
        self.fail_pattern(pattern, &error).await;
    }

    /// The node disconnected the client on purpose: every subscription
    /// ends with [`Error::Kicked`], so nothing reconnects unless the
    /// application subscribes again.
    async fn kicked(&mut self, base: &Url, transport: Transport, reason: &str) {
        self.emit_all(|e| ConnectionEvent::Kicked {
            subscription: e.id,
            pattern: e.pattern().to_string(),
            url: display(base),
            transport,
            reason: reason.to_string(),
        });
        self.fail_all(&Error::Kicked(reason.to_string())).await;
    }

    /// Messages lost to retention: every subscription tracking the topic
    /// gets the part it did not have.
    pub async fn gap(&mut self, topic: &str, from: u64, to: u64) {
        for e in self.entries.values_mut() {
            if e.dead || !e.progress.started() {
                continue;
            }
            if let Some((from, to)) = e.progress.accept_gap(topic, from, to) {
                e.send_event(Event::Gap {
                    topic: topic.to_string(),
                    from,
                    to,
                })
                .await;
            }
        }
    }

    /// A stream cursor's floor: everything the stream's patterns match
    /// with a smaller `ts` has been delivered, so every subscription on it
    /// has what it needs below it.
    pub fn raise_floors(&mut self, floor: u64) {
        for e in self.entries.values_mut() {
            e.progress.raise_floor(floor);
        }
    }

    /// After a round where no node could be reached: pending subscriptions
    /// past their deadline fail.
    async fn expire(&mut self, now: Instant, reason: &str) {
        let expired: Vec<(u64, String)> = self
            .entries
            .values()
            .filter(|e| e.ready.is_some() && e.deadline <= now)
            .map(|e| (e.id, e.pattern().to_string()))
            .collect();
        for (id, pattern) in expired {
            self.fail(
                id,
                Error::Unavailable(format!("cannot subscribe to {pattern:?}: {reason}")),
            )
            .await;
        }
    }

    /// A node answered that it cannot serve yet: it is up, so pending
    /// subscriptions keep waiting for it.
    fn extend_deadlines(&mut self, until: Instant) {
        for e in self.entries.values_mut() {
            if e.ready.is_some() {
                e.deadline = e.deadline.max(until);
            }
        }
    }

    fn emit_all(&self, event: impl Fn(&Entry) -> ConnectionEvent) {
        for e in self.entries.values() {
            self.inner.emit(event(e));
        }
    }
}

/// [`Error`] holds non-`Clone` sources; the copies given to several
/// subscriptions keep the code and text.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Server {
            status,
            code,
            message,
        } => Error::Server {
            status: *status,
            code: code.clone(),
            message: message.clone(),
        },
        Error::Unavailable(t) => Error::Unavailable(t.clone()),
        Error::InvalidArgument(t) => Error::InvalidArgument(t.clone()),
        Error::Kicked(t) => Error::Kicked(t.clone()),
        Error::Unsubscribed(t) => Error::Unsubscribed(t.clone()),
        other => Error::Protocol(other.to_string()),
    }
}

/// How one transport session ended.
pub(crate) enum Outcome {
    /// Never established; try the next transport.
    ConnectFailed(String),
    /// The node cannot serve now (not caught up with its cluster, draining,
    /// full): try another node, and this one not before `retry_after`.
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    /// Established, then lost; reconnect (to the next node).
    Disconnected(String),
    /// The set of subscriptions changed in a way this connection cannot
    /// follow: reconnect at once, same node and transport.
    Restart,
    /// No subscription is left.
    Idle,
    /// The node disconnected the client on purpose (admin API): end every
    /// subscription, reconnect nowhere.
    Kicked(String),
    /// Every handle is gone: the task ends.
    Closed,
}

/// How a round of attempts on one node ended.
enum Round {
    Failed,
    Unavailable { stable: bool },
    Lost { stable: bool },
    Restart,
    Idle,
}

/// The connection task.
pub(crate) struct Manager {
    pub inner: Arc<Inner>,
    pub cmds: mpsc::UnboundedReceiver<Command>,
    pub subs: Registry,
    /// Per URL: not before this instant (the node's `Retry-After`).
    not_before: Vec<Option<Instant>>,
    /// The long-poll presence session (`client_id`) and its node.
    pub poll_session: Option<(Url, String)>,
}

impl Manager {
    async fn run(mut self) {
        let inner = self.inner.clone();
        let urls = inner.urls.len();
        let mut index = inner.preferred();
        let mut attempt = 0u32;
        let mut restart_at: Option<usize> = None;
        let mut last_error = String::from("no attempt");
        loop {
            while self.subs.is_empty() {
                match self.cmds.recv().await {
                    None => return,
                    Some(c) => self.apply(c),
                }
            }
            let base = inner.urls[index % urls].clone();
            let first = restart_at.take().unwrap_or(0);
            let mut round = Round::Failed;
            for (t, &transport) in inner.transports.iter().enumerate().skip(first) {
                let began = Instant::now();
                let outcome = match transport {
                    Transport::Ws => self.ws(&base).await,
                    Transport::Sse => self.sse(&base).await,
                    Transport::Poll => self.poll(&base).await,
                };
                let reason = match &outcome {
                    Outcome::ConnectFailed(r)
                    | Outcome::Disconnected(r)
                    | Outcome::Kicked(r)
                    | Outcome::Unavailable { reason: r, .. } => r.clone(),
                    Outcome::Restart => "resubscribing".into(),
                    Outcome::Idle => "no subscription left".into(),
                    Outcome::Closed => "client dropped".into(),
                };
                self.subs.lost(&base, transport, &reason);
                self.subs.sweep();
                match outcome {
                    Outcome::Closed => return,
                    Outcome::Idle => {
                        round = Round::Idle;
                        break;
                    }
                    Outcome::Kicked(_) => {
                        tracing::info!(url = %base, %transport, %reason, "herald: disconnected by the server");
                        self.subs.kicked(&base, transport, &reason).await;
                        // That long-poll session is gone (410 for a while).
                        self.poll_session = None;
                        round = Round::Idle;
                        break;
                    }
                    Outcome::Restart => {
                        restart_at = Some(t);
                        round = Round::Restart;
                        break;
                    }
                    Outcome::ConnectFailed(_) => {
                        tracing::debug!(url = %base, %transport, %reason, "herald connect failed");
                        self.subs.emit_all(|e| ConnectionEvent::ConnectFailed {
                            subscription: e.id,
                            pattern: e.pattern().to_string(),
                            url: display(&base),
                            transport,
                            reason: reason.clone(),
                        });
                        last_error = format!("{} ({transport}): {reason}", display(&base));
                    }
                    Outcome::Unavailable { retry_after, .. } => {
                        tracing::debug!(url = %base, %transport, %reason, ?retry_after, "herald node unavailable");
                        self.subs.emit_all(|e| ConnectionEvent::Refused {
                            subscription: e.id,
                            pattern: e.pattern().to_string(),
                            url: display(&base),
                            transport,
                            reason: reason.clone(),
                            retry_after,
                        });
                        self.not_before[index % urls] = Some(Instant::now() + retry_after);
                        last_error = format!("{}: {reason}", display(&base));
                        round = Round::Unavailable {
                            stable: began.elapsed() >= STABLE,
                        };
                        break;
                    }
                    Outcome::Disconnected(_) => {
                        tracing::debug!(url = %base, %transport, %reason, "herald disconnected");
                        round = Round::Lost {
                            stable: began.elapsed() >= STABLE,
                        };
                        break;
                    }
                }
            }
            let delay = match round {
                Round::Restart | Round::Idle => continue,
                Round::Lost { stable } => {
                    if stable {
                        attempt = 0;
                    }
                    inner.backoff.delay(attempt)
                }
                Round::Unavailable { stable } => {
                    if stable {
                        attempt = 0;
                    }
                    self.subs
                        .extend_deadlines(Instant::now() + inner.connect_timeout);
                    inner.backoff.delay(attempt)
                }
                Round::Failed => inner.backoff.delay(attempt),
            };
            attempt = attempt.saturating_add(1);
            index += 1;
            let now = Instant::now();
            let delay = match self.not_before[index % urls] {
                Some(at) if at > now + delay => at - now,
                _ => delay,
            };
            if matches!(round, Round::Failed) {
                self.subs.expire(now + delay, &last_error).await;
            }
            self.subs.emit_all(|e| ConnectionEvent::Reconnecting {
                subscription: e.id,
                pattern: e.pattern().to_string(),
                attempt,
                delay,
            });
            if !self.pause(delay).await {
                return;
            }
        }
    }

    /// Waits, taking in subscriptions meanwhile; false when the task ends.
    async fn pause(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                cmd = self.cmds.recv() => match cmd {
                    None => return false,
                    Some(c) => self.apply(c),
                },
            }
        }
    }

    /// Applies a command while no connection is open.
    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Add(e) => self.subs.add(*e),
            Command::Remove(id) => {
                self.subs.remove(id);
            }
        }
    }
}

/// The `Retry-After` of an answer, in seconds (Herald sends `1`).
pub(crate) fn retry_after(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

/// Whether a Herald error answer means "this node cannot serve now, try
/// another": `unavailable` (503), or too many connections from this
/// address (`rate_limited`, 429).
pub(crate) fn node_refusal(status: u16, code: Option<&str>) -> bool {
    status == 503 || status == 429 || matches!(code, Some("unavailable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_capped_and_defaulted() {
        assert_eq!(retry_after(Some("1")), Duration::from_secs(1));
        assert_eq!(retry_after(Some(" 3 ")), Duration::from_secs(3));
        assert_eq!(retry_after(Some("3600")), Duration::from_secs(60));
        assert_eq!(retry_after(Some("soon")), DEFAULT_RETRY_AFTER);
        assert_eq!(retry_after(None), DEFAULT_RETRY_AFTER);
    }

    #[test]
    fn refusals_of_the_node_are_told_from_refusals_of_the_request() {
        assert!(node_refusal(503, Some("unavailable")));
        assert!(node_refusal(429, Some("rate_limited")));
        assert!(node_refusal(0, Some("unavailable")));
        assert!(!node_refusal(403, Some("forbidden")));
        assert!(!node_refusal(400, Some("invalid_topic")));
        assert!(!node_refusal(502, None));
    }
}
