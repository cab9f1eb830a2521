//! Seq assignment and idempotency: the one copy shared by the single-node
//! writer and the cluster owner, so both answer a publish the same way.
//!
//! A caller keeps its own topic heads (the writer's appended heads, the
//! owner's `next_seq`) and its own table of keys still in flight; this
//! module decides, per item, whether it is an earlier publish repeated or a
//! new message, and builds that message.

use std::{collections::HashMap, time::Duration};

use crate::{
    engine::{PublishItem, Published},
    hub::{Message, Topic},
    log::{LogEntry, LogError, MessageLog},
};

/// Keys sequenced but not yet stored, per (topic, key): the answer a repeat
/// gets. The writer keeps one per pass; the owner one per owned topic until
/// its replicas confirm.
pub(crate) type InFlightKeys = HashMap<(Topic, String), Published>;

/// The clock reading one batch of publishes shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamp {
    /// Every message of the batch gets this `ts`.
    pub(crate) now: u64,
    /// When an idempotency key given in this batch stops deduplicating.
    pub(crate) expires_at: u64,
}

impl Stamp {
    /// A stamp at `now` for keys remembered `window` long.
    pub(crate) fn new(now: u64, window: Duration) -> Self {
        Stamp {
            now,
            expires_at: now + window.as_millis() as u64,
        }
    }

    /// The earlier publish `item` repeats, if its key was used within the
    /// window: a key still in flight first, then the log's record.
    pub(crate) fn earlier(
        &self,
        item: &PublishItem,
        in_flight: &InFlightKeys,
        log: &dyn MessageLog,
    ) -> Result<Option<Published>, LogError> {
        let Some(key) = &item.idempotency_key else {
            return Ok(None);
        };
        if let Some(p) = self.in_flight(item, in_flight) {
            return Ok(Some(p));
        }
        Ok(log
            .idempotency(&item.topic, key)?
            .filter(|r| r.expires_at >= self.now)
            .map(|r| Published {
                topic: item.topic.clone(),
                seq: r.seq,
                ts: r.ts,
                duplicate: true,
            }))
    }

    /// The in-flight publish `item` repeats, if its key is in `in_flight`
    /// (no read of the log).
    pub(crate) fn in_flight(
        &self,
        item: &PublishItem,
        in_flight: &InFlightKeys,
    ) -> Option<Published> {
        let key = item.idempotency_key.as_ref()?;
        in_flight.get(&(item.topic.clone(), key.clone())).cloned()
    }

    /// `item` as message `seq`: the entry to store and the publisher's
    /// answer. Its key, if any, is remembered in `in_flight`. `topic` is
    /// `item`'s topic, passed as the caller holds it so that a topic's
    /// messages can share one name.
    pub(crate) fn sequence(
        &self,
        item: &PublishItem,
        topic: Topic,
        seq: u64,
        in_flight: &mut InFlightKeys,
    ) -> (LogEntry, Published) {
        debug_assert_eq!(topic, item.topic, "the item's own topic, shared");
        let message = Message::with_payload(
            topic,
            seq,
            self.now,
            &item.data,
            item.traceparent.as_deref(),
        );
        let published = Published {
            topic: message.topic.clone(),
            seq,
            ts: self.now,
            duplicate: false,
        };
        if let Some(key) = &item.idempotency_key {
            in_flight.insert(
                (published.topic.clone(), key.clone()),
                Published {
                    duplicate: true,
                    ..published.clone()
                },
            );
        }
        let entry = LogEntry {
            message,
            idempotency: item
                .idempotency_key
                .as_ref()
                .map(|k| (k.clone(), self.expires_at)),
        };
        (entry, published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        hub::Payload,
        log::{sled_log::SledOptions, SledLog},
    };

    fn log(dir: &tempfile::TempDir) -> SledLog {
        let options = SledOptions {
            cache_bytes: 1 << 20,
            flush_every_ms: 500,
        };
        SledLog::open(dir.path(), &options).unwrap()
    }

    fn item(topic: &str, key: Option<&str>) -> PublishItem {
        PublishItem {
            topic: Topic::parse(topic).unwrap(),
            data: Payload::Json("1".into()),
            idempotency_key: key.map(str::to_string),
            traceparent: None,
        }
    }

    #[test]
    fn a_repeat_in_flight_gets_the_first_publish_with_its_ts() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let mut keys = InFlightKeys::new();
        let first = Stamp::new(1_000, Duration::from_secs(60));
        let (_, p) = first.sequence(
            &item("a.b", Some("k")),
            Topic::parse("a.b").unwrap(),
            7,
            &mut keys,
        );
        assert_eq!((p.seq, p.ts, p.duplicate), (7, 1_000, false));
        let later = Stamp::new(5_000, Duration::from_secs(60));
        let again = later
            .earlier(&item("a.b", Some("k")), &keys, &log)
            .unwrap()
            .unwrap();
        assert_eq!((again.seq, again.ts, again.duplicate), (7, 1_000, true));
        // Keys are per topic.
        assert!(later
            .earlier(&item("a.c", Some("k")), &keys, &log)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_stored_key_counts_only_within_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let mut keys = InFlightKeys::new();
        let stamp = Stamp::new(1_000, Duration::from_millis(500));
        let (entry, _) = stamp.sequence(
            &item("a.b", Some("k")),
            Topic::parse("a.b").unwrap(),
            1,
            &mut keys,
        );
        log.append(&[entry]).unwrap();
        let none = InFlightKeys::new();
        let within = Stamp::new(1_500, Duration::from_secs(1));
        let seen = within
            .earlier(&item("a.b", Some("k")), &none, &log)
            .unwrap();
        assert_eq!(seen.map(|p| (p.seq, p.ts)), Some((1, 1_000)));
        let after = Stamp::new(1_501, Duration::from_secs(1));
        assert!(after
            .earlier(&item("a.b", Some("k")), &none, &log)
            .unwrap()
            .is_none());
    }
}
