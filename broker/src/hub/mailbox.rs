//! The bounded outgoing queue every connection owns.
//!
//! Fan-out pushes into a mailbox without ever waiting: a push takes a short
//! mutex, appends a shared `Arc<Message>` and wakes the connection only when
//! the queue goes from empty to non-empty. The connection drains everything
//! queued in one go and writes it as a batch.
//!
//! The queue is capped in bytes. When a push would exceed the cap the
//! subscriber is too slow for the publish rate, and the topic's namespace
//! policy decides (memory never exceeds the cap under any of them):
//!
//! * `disconnect`: the queue is emptied at once and the mailbox
//!   marked overflowed; the connection closes with a "slow consumer" reason
//!   and the client resumes from its last position, reading what it missed
//!   from the log.
//! * `drop_oldest`: the oldest queued messages make room; the client gets a
//!   `gap` event for what it lost.
//! * `conflate`: older queued messages of the same topic make room first
//!   (only the latest value of a topic matters); no gap is reported.
//! * `catch_up` (default): the queue is emptied and the subscriber marked
//!   lagging; once its connection drains, it replays what it missed from
//!   the log and goes live again — no gap, no disconnect. A client that
//!   reads nothing at all is still closed by its transport's idle timeout.

use std::{
    collections::{HashMap, VecDeque},
    future::poll_fn,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::{message::Message, topic::Topic};

/// What to do with a subscriber whose queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlowConsumerPolicy {
    /// Close the connection; the client resumes from the log.
    Disconnect,
    /// Drop the oldest queued messages and report a gap.
    DropOldest,
    /// Keep only the newest queued message per topic.
    Conflate,
    /// Stop queueing; replay from the log once the client drains. The
    /// default: a client that reads is never cut, whatever the burst.
    #[default]
    CatchUp,
}

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for delivery.
    Queued,
    /// Queued after older messages were dropped or conflated to make room.
    Evicted,
    /// Not queued: the subscriber will catch up from the log.
    Lagging,
    /// This push overflowed the queue; the subscriber will be disconnected.
    Overflowed,
    /// The mailbox had already overflowed or was closed; nothing was queued.
    Refused,
}

/// State reported when draining.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailboxState {
    /// Accepting messages.
    Open,
    /// The byte cap was exceeded under `disconnect`; the queue was discarded.
    Overflowed,
    /// Closed by its owner (connection ending or server shutting down).
    Closed,
}

/// Messages removed from the queue without delivery, per topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The topic.
    pub topic: Topic,
    /// Lowest seq removed.
    pub from: u64,
    /// Highest seq removed.
    pub up_to: u64,
    /// Whether the client is told (`drop_oldest`) or not (`conflate`).
    pub report: bool,
}

/// Everything a drain hands over besides the messages.
#[derive(Debug, Default)]
pub struct Drained {
    /// Messages evicted since the last drain.
    pub skipped: Vec<Skipped>,
    /// The queue was discarded under `catch_up`: replay from the log first.
    pub lagging: bool,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Arc<Message>>,
    bytes: usize,
    state: MailboxState,
    skipped: HashMap<Topic, (u64, u64, bool)>,
    lagging: bool,
}

impl Queue {
    fn evict_front(&mut self, report: bool) {
        if let Some(old) = self.items.pop_front() {
            self.bytes -= old.queue_weight();
            self.skip(&old, report);
        }
    }

    fn skip(&mut self, m: &Message, report: bool) {
        let entry = self
            .skipped
            .entry(m.topic.clone())
            .or_insert((m.seq, m.seq, false));
        entry.0 = entry.0.min(m.seq);
        entry.1 = entry.1.max(m.seq);
        entry.2 |= report;
    }
}

/// A byte-bounded, single-consumer queue of messages for one connection.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    /// Set by a push into an empty queue or a state change, cleared by the
    /// consumer's wait. With one consumer, a flag and an `AtomicWaker` do
    /// what `tokio::sync::Notify` does without its waiter list: no lock and
    /// no list insert/remove per wake-up of every subscriber on a publish.
    signalled: AtomicBool,
    waker: AtomicWaker,
    limit_bytes: usize,
}

impl Mailbox {
    /// A mailbox that holds at most `limit_bytes` of queued messages.
    pub fn new(limit_bytes: usize) -> Self {
        Mailbox {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                bytes: 0,
                state: MailboxState::Open,
                skipped: HashMap::new(),
                lagging: false,
            }),
            signalled: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            limit_bytes,
        }
    }

    /// Queues `message` without blocking, applying `policy` if the queue is
    /// full. Called from fan-out.
    pub fn push(&self, message: &Arc<Message>, policy: SlowConsumerPolicy) -> Pushed {
        let weight = message.queue_weight();
        let mut queue = self.queue.lock();
        if queue.state != MailboxState::Open {
            return Pushed::Refused;
        }
        let was_empty = queue.items.is_empty();
        // A single message larger than the cap is still accepted into an
        // empty queue; otherwise a big message could never reach anyone.
        let mut outcome = Pushed::Queued;
        if queue.bytes + weight > self.limit_bytes && !queue.items.is_empty() {
            match policy {
                SlowConsumerPolicy::Disconnect => {
                    queue.state = MailboxState::Overflowed;
                    return self.discard(queue, Pushed::Overflowed);
                }
                SlowConsumerPolicy::CatchUp => {
                    // Everything queued (and this message) is in the log.
                    queue.lagging = true;
                    return self.discard(queue, Pushed::Lagging);
                }
                SlowConsumerPolicy::Conflate => {
                    let topic = message.topic.clone();
                    let mut kept = VecDeque::with_capacity(queue.items.len());
                    for m in std::mem::take(&mut queue.items) {
                        if m.topic == topic {
                            queue.bytes -= m.queue_weight();
                            queue.skip(&m, false);
                        } else {
                            kept.push_back(m);
                        }
                    }
                    queue.items = kept;
                    while queue.bytes + weight > self.limit_bytes && !queue.items.is_empty() {
                        queue.evict_front(false);
                    }
                    outcome = Pushed::Evicted;
                }
                SlowConsumerPolicy::DropOldest => {
                    while queue.bytes + weight > self.limit_bytes && !queue.items.is_empty() {
                        queue.evict_front(true);
                    }
                    outcome = Pushed::Evicted;
                }
            }
        }
        queue.items.push_back(message.clone());
        queue.bytes += weight;
        drop(queue);
        if was_empty {
            self.signal();
        }
        outcome
    }

    /// Empties the queue (freeing its messages after the lock is released)
    /// and wakes the consumer to act on the new state.
    fn discard(&self, mut queue: parking_lot::MutexGuard<'_, Queue>, outcome: Pushed) -> Pushed {
        let dropped = std::mem::take(&mut queue.items);
        queue.bytes = 0;
        drop(queue);
        drop(dropped);
        self.signal();
        outcome
    }

    /// Moves everything queued into `out` and reports the state, plus what
    /// was evicted since the last drain.
    pub fn drain_into(&self, out: &mut Vec<Arc<Message>>, drained: &mut Drained) -> MailboxState {
        let mut queue = self.queue.lock();
        out.extend(queue.items.drain(..));
        queue.bytes = 0;
        drained.lagging |= std::mem::take(&mut queue.lagging);
        drained
            .skipped
            .extend(
                queue
                    .skipped
                    .drain()
                    .map(|(topic, (from, up_to, report))| Skipped {
                        topic,
                        from,
                        up_to,
                        report,
                    }),
            );
        queue.state
    }

    /// The state, without draining.
    pub fn state(&self) -> MailboxState {
        self.queue.lock().state
    }

    /// Bytes currently queued.
    pub fn queued_bytes(&self) -> usize {
        self.queue.lock().bytes
    }

    /// Stops accepting messages and wakes the consumer.
    pub fn close(&self) {
        let mut queue = self.queue.lock();
        if queue.state == MailboxState::Open {
            queue.state = MailboxState::Closed;
        }
        queue.items.clear();
        queue.bytes = 0;
        drop(queue);
        self.signal();
    }

    /// Wakes the consumer (or lets its next wait return at once).
    fn signal(&self) {
        self.signalled.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Waits until something was pushed or the state changed since the last
    /// drain. May wake spuriously; callers drain and check.
    /// Meant for one consumer at a time (the connection owning the
    /// mailbox): a second concurrent waiter would take the other's waker.
    pub async fn changed(&self) {
        poll_fn(|cx| self.poll_changed(cx)).await
    }

    /// [`Mailbox::changed`] as a poll: `Ready` once something was pushed or
    /// the state changed since the last drain, else `cx` is woken then.
    pub fn poll_changed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.signalled.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // a signal between the check and the registration woke no one
        if self.signalled.swap(false, Ordering::Acquire) {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, seq: u64, size: usize) -> Arc<Message> {
        let data = crate::json::string_value(&"x".repeat(size));
        Message::new(Topic::parse(topic).unwrap(), seq, 0, &data)
    }

    fn drain(mailbox: &Mailbox) -> (Vec<u64>, Drained, MailboxState) {
        let (mut out, mut drained) = (Vec::new(), Drained::default());
        let state = mailbox.drain_into(&mut out, &mut drained);
        (out.iter().map(|m| m.seq).collect(), drained, state)
    }

    #[test]
    fn disconnect_discards_and_refuses() {
        let weight = msg("t", 1, 100).queue_weight();
        let mailbox = Mailbox::new(weight * 3);
        for seq in 1..=3 {
            assert_eq!(
                mailbox.push(&msg("t", seq, 100), SlowConsumerPolicy::Disconnect),
                Pushed::Queued
            );
        }
        assert_eq!(
            mailbox.push(&msg("t", 4, 100), SlowConsumerPolicy::Disconnect),
            Pushed::Overflowed
        );
        assert_eq!(mailbox.queued_bytes(), 0);
        assert_eq!(
            mailbox.push(&msg("t", 5, 100), SlowConsumerPolicy::Disconnect),
            Pushed::Refused
        );
        let (seqs, _, state) = drain(&mailbox);
        assert!(seqs.is_empty());
        assert_eq!(state, MailboxState::Overflowed);
    }

    #[test]
    fn drop_oldest_and_conflate_stay_within_the_cap() {
        // Weights differ by a byte or two with the seq's digits.
        let weight = msg("t", 1, 100).queue_weight() + 4;
        let mailbox = Mailbox::new(weight * 3);
        for seq in 1..=10 {
            mailbox.push(&msg("t", seq, 100), SlowConsumerPolicy::DropOldest);
            assert!(mailbox.queued_bytes() <= weight * 3);
        }
        let (seqs, drained, _) = drain(&mailbox);
        assert_eq!(seqs, vec![8, 9, 10]);
        assert_eq!(
            drained.skipped,
            vec![Skipped {
                topic: Topic::parse("t").unwrap(),
                from: 1,
                up_to: 7,
                report: true
            }]
        );

        for seq in 1..=3 {
            mailbox.push(&msg("a", seq, 100), SlowConsumerPolicy::Conflate);
        }
        mailbox.push(&msg("b", 1, 100), SlowConsumerPolicy::Conflate);
        let (seqs, drained, _) = drain(&mailbox);
        assert_eq!(seqs, vec![2, 3, 1], "oldest evicted to fit b");
        assert!(!drained.skipped[0].report);
        for seq in 1..=3 {
            mailbox.push(&msg("a", seq, 100), SlowConsumerPolicy::Conflate);
        }
        mailbox.push(&msg("a", 4, 100), SlowConsumerPolicy::Conflate);
        let (seqs, _, _) = drain(&mailbox);
        assert_eq!(seqs, vec![4], "only the newest of a topic is kept");
    }

    #[test]
    fn catch_up_marks_lagging_and_keeps_accepting() {
        let weight = msg("t", 1, 100).queue_weight();
        let mailbox = Mailbox::new(weight * 2);
        for seq in 1..=3 {
            mailbox.push(&msg("t", seq, 100), SlowConsumerPolicy::CatchUp);
        }
        assert_eq!(
            mailbox.push(&msg("t", 4, 100), SlowConsumerPolicy::CatchUp),
            Pushed::Queued
        );
        let (seqs, drained, state) = drain(&mailbox);
        assert_eq!(
            (seqs, drained.lagging, state),
            (vec![4], true, MailboxState::Open)
        );
    }

    #[test]
    fn oversized_message_fits_empty_queue() {
        let mailbox = Mailbox::new(10);
        assert_eq!(
            mailbox.push(&msg("t", 1, 1000), SlowConsumerPolicy::Disconnect),
            Pushed::Queued
        );
        let (seqs, _, state) = drain(&mailbox);
        assert_eq!((seqs.len(), state), (1, MailboxState::Open));
    }

    #[tokio::test]
    async fn a_signal_before_the_wait_is_kept_once() {
        let mailbox = Mailbox::new(1 << 20);
        mailbox.push(&msg("t", 1, 1), SlowConsumerPolicy::Disconnect);
        let wait = std::time::Duration::from_millis(50);
        tokio::time::timeout(wait, mailbox.changed())
            .await
            .expect("the push before the wait counts");
        assert!(
            tokio::time::timeout(wait, mailbox.changed()).await.is_err(),
            "and only once"
        );
        mailbox.close();
        tokio::time::timeout(wait, mailbox.changed())
            .await
            .expect("closing wakes too");
    }

    #[tokio::test]
    async fn wakes_consumer_on_first_push() {
        let mailbox = Arc::new(Mailbox::new(1 << 20));
        let waiter = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.changed().await })
        };
        tokio::task::yield_now().await;
        mailbox.push(&msg("t", 1, 1), SlowConsumerPolicy::Disconnect);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
