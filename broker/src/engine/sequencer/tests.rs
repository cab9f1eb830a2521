//! The writer's handling of replicated entries at seqs this node holds.

use std::{sync::Arc, time::Duration};

use super::{Applied, Durability, Sequencer, SequencerOptions};
use crate::{
    hub::{Hub, Message, Topic, TopicHead},
    log::{sled_log::SledOptions, LogEntry, MessageLog, SledLog},
    metrics::Metrics,
};

fn entry(topic: &Topic, seq: u64, ts: u64, data: &str) -> LogEntry {
    LogEntry {
        message: Message::new(topic.clone(), seq, ts, data),
        idempotency: None,
    }
}

fn start(dir: &tempfile::TempDir) -> (Sequencer, Arc<Hub>, Arc<dyn MessageLog>) {
    let options = SledOptions {
        cache_bytes: 1 << 20,
        flush_every_ms: 500,
    };
    let log: Arc<dyn MessageLog> = Arc::new(SledLog::open(dir.path(), &options).unwrap());
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
    (sequencer, hub, log)
}

fn stored(log: &Arc<dyn MessageLog>, topic: &Topic) -> Vec<(u64, u64, String)> {
    log.read(topic, 1, 100)
        .unwrap()
        .iter()
        .map(|m| {
            let envelope = String::from_utf8(m.envelope().to_vec()).unwrap();
            (m.seq, m.ts, envelope)
        })
        .collect()
}

#[tokio::test]
async fn the_same_message_again_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sequencer, hub, log) = start(&dir);
    let t = Topic::parse("a.b").unwrap();
    let first: Vec<_> = (1..=3).map(|s| entry(&t, s, 100 + s, "\"x\"")).collect();
    assert!(matches!(
        sequencer.apply(first.clone()).await,
        Ok(Applied::Done)
    ));
    let before = stored(&log, &t);
    assert!(matches!(sequencer.apply(first).await, Ok(Applied::Done)));
    assert_eq!(stored(&log, &t), before);
    assert_eq!(hub.metrics().cluster_replaced_messages.get(), 0);
    assert_eq!(hub.head(&t).last_seq, 3);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_different_message_at_a_held_seq_takes_its_place_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let (sequencer, hub, log) = start(&dir);
    let t = Topic::parse("a.b").unwrap();
    let old: Vec<_> = (1..=3).map(|s| entry(&t, s, 100 + s, "\"old\"")).collect();
    assert!(matches!(sequencer.apply(old).await, Ok(Applied::Done)));
    // A newer owner gave seqs 2 and 3 out again; its 4 continues them.
    let newer: Vec<_> = (2..=4).map(|s| entry(&t, s, 200 + s, "\"new\"")).collect();
    assert!(matches!(
        sequencer.apply(newer.clone()).await,
        Ok(Applied::Done)
    ));
    let log_now = stored(&log, &t);
    assert_eq!(log_now.len(), 4);
    assert_eq!(log_now[0].1, 101, "seq 1 was not given out again");
    for (got, want) in log_now[1..].iter().zip(&newer) {
        assert_eq!(got.0, want.message.seq);
        assert_eq!(got.1, want.message.ts);
        assert_eq!(got.2.as_bytes(), &want.message.envelope()[..]);
    }
    assert_eq!(hub.metrics().cluster_replaced_messages.get(), 2);
    assert_eq!(hub.head(&t).last_seq, 4);
    assert!(log.stats(&t).unwrap().count == 4, "stats recounted");
    sequencer.shutdown().await;
    // Durable: a reopened log holds the newer messages.
    drop((sequencer, hub, log));
    let options = SledOptions {
        cache_bytes: 1 << 20,
        flush_every_ms: 500,
    };
    let reopened: Arc<dyn MessageLog> = Arc::new(SledLog::open(dir.path(), &options).unwrap());
    assert_eq!(stored(&reopened, &t), log_now);
}

#[tokio::test]
async fn a_conflict_inside_one_pass_keeps_the_later_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (sequencer, hub, log) = start(&dir);
    let t = Topic::parse("a.b").unwrap();
    // Two copies of seq 1 in one command: the second differs.
    let both = vec![entry(&t, 1, 101, "\"old\""), entry(&t, 1, 201, "\"new\"")];
    assert!(matches!(sequencer.apply(both).await, Ok(Applied::Done)));
    let got = stored(&log, &t);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 201);
    assert_eq!(hub.metrics().cluster_replaced_messages.get(), 1);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_replaced_message_takes_its_idempotency_key_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (sequencer, _hub, log) = start(&dir);
    let t = Topic::parse("a.b").unwrap();
    let keyed = |seq, ts, data: &str, key: &str| LogEntry {
        idempotency: Some((key.to_string(), u64::MAX)),
        ..entry(&t, seq, ts, data)
    };
    let old = vec![keyed(1, 101, "\"old\"", "k-old")];
    assert!(matches!(sequencer.apply(old).await, Ok(Applied::Done)));
    let newer = vec![keyed(1, 201, "\"new\"", "k-new")];
    assert!(matches!(sequencer.apply(newer).await, Ok(Applied::Done)));
    assert!(
        log.idempotency(&t, "k-old").unwrap().is_none(),
        "the old key names nothing stored"
    );
    assert_eq!(log.idempotency(&t, "k-new").unwrap().unwrap().seq, 1);
    assert_eq!(stored(&log, &t)[0].1, 201);
    sequencer.shutdown().await;
}

#[tokio::test]
async fn a_skip_records_the_range_as_removed_and_the_topic_continues_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topic::parse("a.b").unwrap();
    {
        let (sequencer, hub, log) = start(&dir);
        let first: Vec<_> = (1..=3).map(|s| entry(&t, s, 100 + s, "\"x\"")).collect();
        assert!(matches!(sequencer.apply(first).await, Ok(Applied::Done)));
        // Peers removed up to 40: what is stored below is removed too.
        let skipped = TopicHead {
            last_seq: 40,
            last_ts: 140,
        };
        sequencer.skip(t.clone(), skipped).await.unwrap();
        assert_eq!(hub.head(&t), skipped);
        assert!(stored(&log, &t).is_empty());
        // A skip below the head changes nothing.
        sequencer
            .skip(
                t.clone(),
                TopicHead {
                    last_seq: 10,
                    last_ts: 110,
                },
            )
            .await
            .unwrap();
        assert_eq!(hub.head(&t), skipped);
        // 41 continues the topic; 43 would not.
        let next = vec![entry(&t, 41, 141, "\"y\"")];
        assert!(matches!(sequencer.apply(next).await, Ok(Applied::Done)));
        let jump = vec![entry(&t, 43, 143, "\"z\"")];
        assert!(matches!(
            sequencer.apply(jump).await,
            Ok(Applied::Gap { head: 41, .. })
        ));
        sequencer.shutdown().await;
    }
    // After a restart the head and the stored message are the same, and the
    // start-up check finds the topic complete.
    let options = SledOptions {
        cache_bytes: 1 << 20,
        flush_every_ms: 500,
    };
    let log = SledLog::open(dir.path(), &options).unwrap();
    let heads = log.heads().unwrap();
    assert_eq!(
        heads,
        vec![(
            t.clone(),
            TopicHead {
                last_seq: 41,
                last_ts: 141
            }
        )]
    );
    assert_eq!(log.read(&t, 1, 10).unwrap().len(), 1);
    // (This sequencer ran without the acknowledged-heads journal, which
    // the check also reports; the messages themselves must be complete.)
    let report = crate::log::integrity::check(&log);
    assert!(report.lost().is_empty(), "{report:?}");
    assert_eq!(report.records, 2, "the head record and message 41");
}

#[tokio::test]
async fn staged_messages_of_a_topic_share_one_name() {
    let dir = tempfile::tempdir().unwrap();
    let (sequencer, _hub, _log) = start(&dir);
    let mut names = Vec::new();
    for data in ["1", "2"] {
        // A freshly parsed name each time, as every publish brings.
        let item = crate::engine::PublishItem {
            topic: Topic::parse("a.b").unwrap(),
            data: crate::hub::Payload::Json(data.into()),
            idempotency_key: None,
            traceparent: None,
        };
        let published = sequencer.publish(vec![item]).await.unwrap();
        // `Published` carries the name its message was built with (read
        // from here, not from the log, which compaction may rebuild).
        names.push(published[0].topic.as_str().as_ptr());
    }
    assert_eq!(
        names[0], names[1],
        "each staged message would hold its own copy of the name"
    );
    sequencer.shutdown().await;
}
