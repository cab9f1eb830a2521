//! The hub: who is subscribed to what, the committed head of every topic, and
//! fan-out of sequenced messages to subscriber mailboxes.
//!
//! The hub never assigns sequence numbers and never touches the disk; an
//! engine (single node or cluster) sequences and persists messages and then
//! hands them to [`Hub::dispatch`] in seq order per topic.

pub mod control;
pub mod cursor;
pub mod index;
pub mod mailbox;
pub mod message;
pub mod presence;
mod replay;
pub mod subscriber;
pub mod topic;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use parking_lot::{Mutex, RwLock};

pub use self::{
    cursor::Cursor,
    index::{SubscriberId, SubscriptionIndex},
    mailbox::{Drained, Mailbox, MailboxState, Pushed, Skipped, SlowConsumerPolicy},
    message::{Message, Payload, TopicHead},
    subscriber::{Delivered, DeliverySink, Event, Resume, SubscribeError, Subscriber},
    topic::{Pattern, Topic, TopicError},
};
use crate::metrics::Metrics;

/// A millisecond clock that never runs backwards, shared by the sequencer
/// (message `ts`) and cursors (floors), which rely on that.
#[derive(Debug, Default)]
pub struct Clock {
    last: AtomicU64,
}

impl Clock {
    /// Milliseconds since the Unix epoch, never less than any earlier reading.
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let prev = self.last.fetch_max(wall, Ordering::AcqRel);
        prev.max(wall)
    }

    /// Makes sure later readings are at least `ts` (after replaying the log,
    /// or when a peer's clock is ahead).
    pub fn observe(&self, ts: u64) {
        self.last.fetch_max(ts, Ordering::AcqRel);
    }
}

/// Registry of subscriptions and topic heads; shared by every connection.
pub struct Hub {
    index: RwLock<SubscriptionIndex<Arc<Mailbox>>>,
    heads: RwLock<HashMap<Topic, TopicHead>>,
    /// `(min ts, batch id)` of each batch sequenced but not yet dispatched.
    in_flight: Mutex<BTreeSet<(u64, u64)>>,
    next_batch: AtomicU64,
    /// Lowest watermark reported by remote owners (cluster), `u64::MAX` if none.
    remote_floor: AtomicU64,
    /// While the node cannot know what the cluster holds (not connected or
    /// not caught up): the watermark it last guaranteed, which it does not
    /// pass; `u64::MAX` otherwise.
    floor_hold: AtomicU64,
    clock: Clock,
    next_id: AtomicU64,
    connections: AtomicUsize,
    slow_default: SlowConsumerPolicy,
    slow_by_namespace: HashMap<String, SlowConsumerPolicy>,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// An empty hub.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_policies(metrics, SlowConsumerPolicy::default(), HashMap::new())
    }

    /// A hub applying `default` to slow consumers, or the policy of the
    /// message's namespace when listed in `by_namespace`.
    pub fn with_policies(
        metrics: Arc<Metrics>,
        default: SlowConsumerPolicy,
        by_namespace: HashMap<String, SlowConsumerPolicy>,
    ) -> Self {
        Hub {
            slow_default: default,
            slow_by_namespace: by_namespace,
            index: RwLock::new(SubscriptionIndex::new()),
            heads: RwLock::new(HashMap::new()),
            in_flight: Mutex::new(BTreeSet::new()),
            next_batch: AtomicU64::new(1),
            remote_floor: AtomicU64::new(u64::MAX),
            floor_hold: AtomicU64::new(u64::MAX),
            clock: Clock::default(),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            metrics,
        }
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The broker's monotonic clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// A fresh subscriber id.
    pub fn next_subscriber_id(&self) -> SubscriberId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Installs topic heads recovered from the log at start-up.
    pub fn load_heads(&self, heads: impl IntoIterator<Item = (Topic, TopicHead)>) {
        let mut map = self.heads.write();
        for (topic, head) in heads {
            self.clock.observe(head.last_ts);
            map.insert(topic, head);
        }
    }

    /// The committed head of `topic` (zeroes for a topic never published).
    pub fn head(&self, topic: &Topic) -> TopicHead {
        self.heads.read().get(topic).copied().unwrap_or_default()
    }

    /// Number of topics with at least one committed message.
    pub fn topic_count(&self) -> usize {
        self.heads.read().len()
    }

    /// Moves `topic`'s committed head forward to `head` without messages
    /// (seqs no peer holds any more); never moves it back.
    pub fn advance_head(&self, topic: Topic, head: TopicHead) {
        self.clock.observe(head.last_ts);
        let mut heads = self.heads.write();
        let known = heads.entry(topic).or_default();
        if known.last_seq < head.last_seq {
            *known = head;
        }
    }

    /// Heads of every known topic `pattern` matches.
    pub fn heads_matching(&self, pattern: &Pattern) -> Vec<(Topic, TopicHead)> {
        if let Some(topic) = pattern.as_topic() {
            return self
                .heads
                .read()
                .get(&topic)
                .map(|h| (topic, *h))
                .into_iter()
                .collect();
        }
        self.heads
            .read()
            .iter()
            .filter(|(topic, _)| pattern.matches(topic))
            .map(|(topic, head)| (topic.clone(), *head))
            .collect()
    }

    /// Every known topic and its head (for retention and diagnostics).
    pub fn all_heads(&self) -> Vec<(Topic, TopicHead)> {
        self.heads
            .read()
            .iter()
            .map(|(t, h)| (t.clone(), *h))
            .collect()
    }

    /// Adds `id`'s mailbox under `pattern`.
    pub fn add_subscription(
        &self,
        pattern: &Pattern,
        id: SubscriberId,
        mailbox: &Arc<Mailbox>,
    ) -> bool {
        let added = self.index.write().insert(pattern, id, mailbox.clone());
        if added {
            self.metrics.subscriptions.inc();
        }
        added
    }

    /// Removes `id` from `pattern`.
    pub fn remove_subscription(&self, pattern: &Pattern, id: SubscriberId) -> bool {
        let removed = self.index.write().remove(pattern, id);
        if removed {
            self.metrics.subscriptions.dec();
        }
        removed
    }

    /// Subscribers (connections, not patterns) that `topic` would be
    /// delivered to on this node.
    pub fn subscribers_of(&self, topic: &Topic) -> usize {
        let mut count = 0;
        self.index.read().for_each_match(topic, |_, _| count += 1);
        count
    }

    /// Number of (pattern, subscriber) pairs.
    pub fn subscription_count(&self) -> usize {
        self.index.read().len()
    }

    /// Records a connection opening; returns the guard that records its end.
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard { hub: self.clone() }
    }

    /// Open connections on all transports.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Every message with `ts` below the watermark has been dispatched.
    /// Cursor floors come from here (see [`cursor`]).
    pub fn watermark(&self) -> u64 {
        self.local_watermark()
            .min(self.remote_floor.load(Ordering::Acquire))
            .min(self.floor_hold.load(Ordering::Acquire))
    }

    /// Holds the watermark where it is (at most `at`) until
    /// [`Hub::release_floor`]: a cluster node that lost NATS, or has not
    /// caught up yet, cannot tell what other nodes sequenced meanwhile, so
    /// no cursor floor it hands out may move past what it guaranteed before.
    pub fn hold_floor(&self, at: u64) {
        let now = self.watermark().min(at);
        self.floor_hold.fetch_min(now, Ordering::AcqRel);
    }

    /// Lets the watermark move again (the node is caught up).
    pub fn release_floor(&self) {
        self.floor_hold.store(u64::MAX, Ordering::Release);
    }

    /// This node's own watermark, ignoring other nodes: every message it
    /// sequenced with a smaller `ts` has been handed on. Cluster heartbeats
    /// carry it.
    pub fn local_watermark(&self) -> u64 {
        // Read the clock under the lock: `begin_batch_now` takes its ts under
        // the same lock, so no batch can get a ts below a watermark already
        // handed out.
        let in_flight = self.in_flight.lock();
        let now = self.clock.now_ms();
        in_flight.first().map_or(now, |(ts, _)| (*ts).min(now))
    }

    /// In a cluster: every message from other nodes with `ts` below `floor`
    /// has been dispatched here (`None`: no remote owners).
    pub fn set_remote_floor(&self, floor: Option<u64>) {
        self.remote_floor
            .store(floor.unwrap_or(u64::MAX), Ordering::Release);
    }

    /// The engine announces a sequenced batch whose smallest `ts` is
    /// `min_ts`, before it is durable. The watermark stays below it until
    /// the returned ticket is dropped (after [`Hub::dispatch`], or when the
    /// batch is abandoned).
    pub fn begin_batch(self: &Arc<Self>, min_ts: u64) -> InFlight {
        let key = (min_ts, self.next_batch.fetch_add(1, Ordering::Relaxed));
        self.in_flight.lock().insert(key);
        InFlight {
            hub: self.clone(),
            key,
        }
    }

    /// Takes the current time as a new batch's `ts` and registers the batch
    /// in flight in one step, so the watermark can never pass it.
    pub fn begin_batch_now(self: &Arc<Self>) -> (InFlight, u64) {
        let mut in_flight = self.in_flight.lock();
        let now = self.clock.now_ms();
        let key = (now, self.next_batch.fetch_add(1, Ordering::Relaxed));
        in_flight.insert(key);
        drop(in_flight);
        (
            InFlight {
                hub: self.clone(),
                key,
            },
            now,
        )
    }

    /// Publishes a durable, sequenced batch to local subscribers. Per topic
    /// the batch must continue exactly where the previous one ended.
    pub fn dispatch(&self, batch: &[Arc<Message>]) {
        {
            let mut heads = self.heads.write();
            for m in batch {
                let head = heads.entry(m.topic.clone()).or_default();
                debug_assert!(m.seq > head.last_seq, "dispatch out of order");
                *head = TopicHead {
                    last_seq: m.seq,
                    last_ts: m.ts,
                };
            }
        }
        let (mut delivered, mut overflowed, mut slowed) = (0u64, 0u64, 0u64);
        {
            let index = self.index.read();
            for m in batch {
                // One policy lookup per message, not per subscriber.
                let policy = self
                    .slow_by_namespace
                    .get(m.topic.namespace())
                    .copied()
                    .unwrap_or(self.slow_default);
                let span = crate::telemetry::otel_enabled()
                    .then(|| m.traceparent())
                    .flatten()
                    .map(|tp| {
                        crate::telemetry::trace::message_span("fanout", tp, m.topic.as_str(), m.seq)
                    });
                let before = delivered;
                index.for_each_match(&m.topic, |_, mailbox| match mailbox.push(m, policy) {
                    Pushed::Queued => delivered += 1,
                    Pushed::Evicted => {
                        delivered += 1;
                        slowed += 1;
                    }
                    Pushed::Lagging => slowed += 1,
                    Pushed::Overflowed => overflowed += 1,
                    Pushed::Refused => {}
                });
                if let Some(span) = span {
                    span.record("herald.subscribers", delivered - before);
                }
            }
        }
        self.metrics.slow_consumer_actions.inc_by(slowed);
        self.metrics.messages_fanned_out.inc_by(delivered);
        self.metrics.slow_consumers.inc_by(overflowed);
    }
}

/// A sequenced batch not yet dispatched; holds the watermark down.
pub struct InFlight {
    hub: Arc<Hub>,
    key: (u64, u64),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.hub.in_flight.lock().remove(&self.key);
    }
}

/// Decrements the hub's connection count when dropped.
pub struct ConnectionGuard {
    hub: Arc<Hub>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.hub.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl crate::log::retention::HeadsSource for Hub {
    fn heads(&self) -> Vec<(Topic, TopicHead)> {
        self.all_heads()
    }

    fn now_ms(&self) -> u64 {
        self.clock().now_ms()
    }
}
