//! A listener's bounded queue of join/leave events.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Presence events a listener may have queued before the oldest is dropped.
pub const FEED_CAPACITY: usize = 1024;

/// One `join` / `leave` event, encoded once and shared by every listener.
#[derive(Debug, Clone)]
pub struct PresenceFrame {
    /// `join` or `leave` (the SSE event name).
    pub kind: &'static str,
    /// `{"type":..,"topic":..,"client":{..}}`.
    pub json: Arc<str>,
}

impl std::ops::Deref for PresenceFrame {
    type Target = str;

    fn deref(&self) -> &str {
        &self.json
    }
}

/// A listener's queue of encoded `join` / `leave` events.
#[derive(Default)]
pub struct PresenceFeed {
    queue: Mutex<VecDeque<PresenceFrame>>,
    notify: Notify,
    dropped: AtomicU64,
}

impl PresenceFeed {
    pub(super) fn push(&self, event: PresenceFrame) {
        let mut queue = self.queue.lock();
        if queue.len() >= FEED_CAPACITY {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(event);
        drop(queue);
        self.notify.notify_one();
    }

    /// Takes every queued event.
    pub fn drain(&self) -> Vec<PresenceFrame> {
        self.queue.lock().drain(..).collect()
    }

    /// Whether events are queued.
    pub fn is_empty(&self) -> bool {
        self.queue.lock().is_empty()
    }

    /// Resolves once an event may be queued (check with [`Self::drain`]).
    pub async fn wait(&self) {
        let notified = self.notify.notified();
        if !self.is_empty() {
            return;
        }
        notified.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_is_bounded() {
        let feed = PresenceFeed::default();
        for i in 0..FEED_CAPACITY + 10 {
            feed.push(PresenceFrame {
                kind: "join",
                json: i.to_string().into(),
            });
        }
        let all = feed.drain();
        assert_eq!(all.len(), FEED_CAPACITY);
        assert_eq!(&*all[0], "10");
    }
}
