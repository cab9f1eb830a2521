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

/// A listener's queue of encoded `join` / `leave` events.
#[derive(Default)]
pub struct PresenceFeed {
    queue: Mutex<VecDeque<Arc<str>>>,
    notify: Notify,
    dropped: AtomicU64,
}

impl PresenceFeed {
    pub(super) fn push(&self, event: Arc<str>) {
        let mut queue = self.queue.lock();
        if queue.len() >= FEED_CAPACITY {
            queue.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queue.push_back(event);
        drop(queue);
        self.notify.notify_one();
    }

    /// Takes every queued event (JSON objects with `type` `join`/`leave`).
    pub fn drain(&self) -> Vec<Arc<str>> {
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
            feed.push(i.to_string().into());
        }
        let all = feed.drain();
        assert_eq!(all.len(), FEED_CAPACITY);
        assert_eq!(&*all[0], "10");
    }
}
