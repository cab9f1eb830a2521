//! The bounded outgoing queue every connection owns.
//!
//! Fan-out pushes into a mailbox without ever waiting: a push takes a short
//! mutex, appends a shared `Arc<Message>` and wakes the connection only when
//! the queue goes from empty to non-empty. The connection drains everything
//! queued in one go and writes it as a batch.
//!
//! The queue is capped in bytes. When a push would exceed the cap the
//! subscriber is too slow for the publish rate; the queue is emptied at once
//! (so its memory is freed immediately, not when the socket finally closes)
//! and the mailbox is marked overflowed. The connection then closes with a
//! "slow consumer" reason and the client resumes from its last position,
//! reading what it missed from the log. A slow subscriber therefore costs the
//! others nothing and its memory never exceeds the cap.

use std::{collections::VecDeque, sync::Arc};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::message::Message;

/// What became of one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for delivery.
    Queued,
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
    /// The byte cap was exceeded; the queue was discarded.
    Overflowed,
    /// Closed by its owner (connection ending or server shutting down).
    Closed,
}

#[derive(Debug)]
struct Queue {
    items: VecDeque<Arc<Message>>,
    bytes: usize,
    state: MailboxState,
}

/// A byte-bounded, single-consumer queue of messages for one connection.
#[derive(Debug)]
pub struct Mailbox {
    queue: Mutex<Queue>,
    notify: Notify,
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
            }),
            notify: Notify::new(),
            limit_bytes,
        }
    }

    /// Queues `message` without blocking. Called from fan-out.
    pub fn push(&self, message: &Arc<Message>) -> Pushed {
        let weight = message.queue_weight();
        let mut queue = self.queue.lock();
        if queue.state != MailboxState::Open {
            return Pushed::Refused;
        }
        // A single message larger than the cap is still accepted into an empty
        // queue; otherwise a big message could never reach anyone.
        if queue.bytes + weight > self.limit_bytes && !queue.items.is_empty() {
            queue.state = MailboxState::Overflowed;
            let dropped = std::mem::take(&mut queue.items);
            queue.bytes = 0;
            drop(queue);
            drop(dropped);
            self.notify.notify_one();
            return Pushed::Overflowed;
        }
        let was_empty = queue.items.is_empty();
        queue.items.push_back(message.clone());
        queue.bytes += weight;
        drop(queue);
        if was_empty {
            self.notify.notify_one();
        }
        Pushed::Queued
    }

    /// Moves everything queued into `out` and reports the state.
    pub fn drain_into(&self, out: &mut Vec<Arc<Message>>) -> MailboxState {
        let mut queue = self.queue.lock();
        out.extend(queue.items.drain(..));
        queue.bytes = 0;
        queue.state
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
        self.notify.notify_one();
    }

    /// Waits until something was pushed or the state changed since the last
    /// drain. May wake spuriously; callers drain and check.
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::topic::Topic;

    fn msg(seq: u64, size: usize) -> Arc<Message> {
        let data = crate::json::string_value(&"x".repeat(size));
        Message::new(Topic::parse("t").unwrap(), seq, 0, &data)
    }

    #[test]
    fn overflow_discards_and_refuses() {
        let m = msg(1, 100);
        let mailbox = Mailbox::new(m.queue_weight() * 3);
        for seq in 1..=3 {
            assert_eq!(mailbox.push(&msg(seq, 100)), Pushed::Queued);
        }
        assert_eq!(mailbox.push(&msg(4, 100)), Pushed::Overflowed);
        assert_eq!(mailbox.queued_bytes(), 0);
        assert_eq!(mailbox.push(&msg(5, 100)), Pushed::Refused);
        let mut out = Vec::new();
        assert_eq!(mailbox.drain_into(&mut out), MailboxState::Overflowed);
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_message_fits_empty_queue() {
        let mailbox = Mailbox::new(10);
        assert_eq!(mailbox.push(&msg(1, 1000)), Pushed::Queued);
        let mut out = Vec::new();
        assert_eq!(mailbox.drain_into(&mut out), MailboxState::Open);
        assert_eq!(out.len(), 1);
        assert_eq!(mailbox.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn wakes_consumer_on_first_push() {
        let mailbox = Arc::new(Mailbox::new(1 << 20));
        let waiter = {
            let mailbox = mailbox.clone();
            tokio::spawn(async move { mailbox.changed().await })
        };
        tokio::task::yield_now().await;
        mailbox.push(&msg(1, 1));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
