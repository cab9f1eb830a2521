//! The sync stage: the writer appends while a sync is under way, and a
//! failed sync fails its batches and every later one.

use std::{
    sync::{mpsc as std_mpsc, Arc},
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use super::{Durability, Sequencer, SequencerOptions};
use crate::{
    engine::{PublishError, PublishItem},
    hub::{Hub, Payload, Topic, TopicHead},
    log::{
        sled_log::SledOptions, Damage, IdempotencyRecord, LogEntry, LogError, LostRange,
        MessageLog, SledLog, TopicStats, Trimmed,
    },
    metrics::Metrics,
};

/// A real log whose syncs wait for a verdict from the test once gated:
/// `true` syncs, `false` fails as the device would.
struct GatedSync {
    inner: SledLog,
    verdicts: Mutex<Option<std_mpsc::Receiver<bool>>>,
}

impl MessageLog for GatedSync {
    fn append(&self, entries: &[LogEntry]) -> Result<(), LogError> {
        self.inner.append(entries)
    }
    fn sync(&self) -> Result<(), LogError> {
        if let Some(verdicts) = &*self.verdicts.lock() {
            if !verdicts.recv().unwrap_or(true) {
                return Err(LogError::Storage("fdatasync: Input/output error".into()));
            }
        }
        self.inner.sync()
    }
    fn read(
        &self,
        topic: &Topic,
        from: u64,
        max: usize,
    ) -> Result<Vec<Arc<crate::hub::Message>>, LogError> {
        self.inner.read(topic, from, max)
    }
    fn first_seq_since_ts(&self, t: &Topic, floor: u64, to: u64) -> Result<Option<u64>, LogError> {
        self.inner.first_seq_since_ts(t, floor, to)
    }
    fn heads(&self) -> Result<Vec<(Topic, TopicHead)>, LogError> {
        self.inner.heads()
    }
    fn idempotency(&self, t: &Topic, key: &str) -> Result<Option<IdempotencyRecord>, LogError> {
        self.inner.idempotency(t, key)
    }
    fn idempotency_in(
        &self,
        t: &Topic,
        from: u64,
        to: u64,
    ) -> Result<Vec<(String, IdempotencyRecord)>, LogError> {
        self.inner.idempotency_in(t, from, to)
    }
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), LogError> {
        self.inner.put_meta(key, value)
    }
    fn scan_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        self.inner.scan_meta(prefix)
    }
    fn expire_idempotency(&self, now: u64) -> Result<u64, LogError> {
        self.inner.expire_idempotency(now)
    }
    fn stats(&self, t: &Topic) -> Result<TopicStats, LogError> {
        self.inner.stats(t)
    }
    fn trim_front(
        &self,
        t: &Topic,
        drop: &mut dyn FnMut(u64, u64, u64) -> bool,
    ) -> Result<Trimmed, LogError> {
        self.inner.trim_front(t, drop)
    }
    fn replace(&self, entries: &[LogEntry]) -> Result<(), LogError> {
        self.inner.replace(entries)
    }
    fn removed_through(&self, t: &Topic) -> Result<Option<TopicHead>, LogError> {
        self.inner.removed_through(t)
    }
    fn remove_through(&self, t: &Topic, head: TopicHead) -> Result<(), LogError> {
        self.inner.remove_through(t, head)
    }
    fn repair(&self, entries: &[LogEntry]) -> Result<usize, LogError> {
        self.inner.repair(entries)
    }
    fn accept_lost(&self, ranges: &[LostRange]) -> Result<(), LogError> {
        self.inner.accept_lost(ranges)
    }
    fn damage(&self) -> &Damage {
        self.inner.damage()
    }
    fn disk_bytes(&self) -> u64 {
        self.inner.disk_bytes()
    }
    fn staged_bytes(&self) -> u64 {
        self.inner.staged_bytes()
    }
}

/// A sequencer over a gated log; the sender decides each sync.
fn start(
    dir: &tempfile::TempDir,
) -> (
    Arc<Sequencer>,
    Arc<Hub>,
    Arc<GatedSync>,
    std_mpsc::Sender<bool>,
) {
    let options = SledOptions {
        cache_bytes: 1 << 20,
        flush_every_ms: 500,
    };
    let (verdict, verdicts) = std_mpsc::channel();
    let log = Arc::new(GatedSync {
        inner: SledLog::open(dir.path(), &options).unwrap(),
        verdicts: Mutex::new(Some(verdicts)),
    });
    let hub = Arc::new(Hub::new(Arc::new(Metrics::default())));
    let sequencer = Sequencer::start(
        hub.clone(),
        log.clone(),
        SequencerOptions {
            durability: Durability::Always,
            idempotency_window: Duration::from_secs(60),
            journal: None,
        },
    )
    .unwrap();
    (Arc::new(sequencer), hub, log, verdict)
}

fn item(topic: &Topic, data: &str) -> Vec<PublishItem> {
    vec![PublishItem {
        topic: topic.clone(),
        data: Payload::Json(data.into()),
        idempotency_key: None,
        traceparent: None,
    }]
}

/// Waits until `topic` holds `n` appended messages (acknowledged or not).
async fn appended(log: &GatedSync, topic: &Topic, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while log.read(topic, 1, 100).unwrap().len() < n {
        assert!(Instant::now() < deadline, "the writer did not append {n}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn the_writer_appends_the_next_batch_while_a_sync_is_under_way() {
    let dir = tempfile::tempdir().unwrap();
    let (sequencer, hub, log, verdict) = start(&dir);
    let t = Topic::parse("a.b").unwrap();
    let first = tokio::spawn({
        let s = sequencer.clone();
        let t = t.clone();
        async move { s.publish(item(&t, "1")).await }
    });
    appended(&log, &t, 1).await;
    // The first sync is held: the second publish is still appended.
    let second = tokio::spawn({
        let s = sequencer.clone();
        let t = t.clone();
        async move { s.publish(item(&t, "2")).await }
    });
    appended(&log, &t, 2).await;
    assert_eq!(
        hub.head(&t).last_seq,
        0,
        "nothing is visible before its sync"
    );
    assert!(
        !first.is_finished() && !second.is_finished(),
        "no ack before the sync"
    );
    verdict.send(true).unwrap();
    verdict.send(true).unwrap();
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!((first[0].seq, second[0].seq), (1, 2));
    assert_eq!(hub.head(&t).last_seq, 2);
    drop(verdict);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_failed_sync_fails_its_batch_and_every_later_one_and_dispatches_none() {
    let dir = tempfile::tempdir().unwrap();
    let (sequencer, hub, log, verdict) = start(&dir);
    let t = Topic::parse("a.b").unwrap();
    let first = tokio::spawn({
        let s = sequencer.clone();
        let t = t.clone();
        async move { s.publish(item(&t, "1")).await }
    });
    appended(&log, &t, 1).await;
    let second = tokio::spawn({
        let s = sequencer.clone();
        let t = t.clone();
        async move { s.publish(item(&t, "2")).await }
    });
    appended(&log, &t, 2).await;
    // The first sync fails; the second batch's would succeed, but its seq
    // comes after a batch that may not be on disk.
    verdict.send(false).unwrap();
    verdict.send(true).unwrap();
    for publish in [first, second] {
        let outcome = publish.await.unwrap();
        assert!(
            matches!(&outcome, Err(PublishError::Unavailable(reason)) if reason.contains("Input/output error")),
            "{outcome:?}"
        );
    }
    assert_eq!(
        hub.head(&t).last_seq,
        0,
        "a batch not known durable is never dispatched"
    );
    assert!(!sequencer.is_healthy());
    let third = sequencer.publish(item(&t, "3")).await;
    assert!(
        matches!(third, Err(PublishError::Unavailable(_))),
        "{third:?}"
    );
    drop(verdict);
    sequencer.shutdown().await;
}
