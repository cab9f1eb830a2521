//! The sled log's own round trip, and helpers other log tests share.

use super::*;

/// Opens the log in `dir`, waiting out the previous handle's file lock.
pub(in crate::log) fn open(dir: &Path) -> SledLog {
    let options = SledOptions {
        cache_bytes: 8 << 20,
        flush_every_ms: 500,
    };
    // sled's flusher thread may hold the file lock for a moment after
    // the previous handle in this process is dropped.
    for _ in 0..100 {
        match SledLog::open(dir, &options) {
            Ok(log) => return log,
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
    panic!("log still locked")
}

/// A message of `topic` with the given seq and ts.
pub(in crate::log) fn entry(topic: &Topic, seq: u64, ts: u64) -> LogEntry {
    LogEntry {
        message: Message::new(topic.clone(), seq, ts, &seq.to_string()),
        idempotency: None,
    }
}

#[test]
fn append_read_trim_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = Topic::parse("a").unwrap();
    let ab = Topic::parse("a.b").unwrap();
    {
        let log = open(dir.path());
        let mut entries: Vec<_> = (1..=10).map(|s| entry(&a, s, 100 + s)).collect();
        entries.push(entry(&ab, 1, 50));
        entries[0].idempotency = Some(("k1".into(), 999));
        log.append(&entries).unwrap();
        log.sync().unwrap();
        let got: Vec<u64> = log.read(&a, 4, 3).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(got, vec![4, 5, 6]);
        assert_eq!(
            log.read(&ab, 1, 10).unwrap().len(),
            1,
            "a.b is its own range"
        );
        assert_eq!(log.first_seq_since_ts(&a, 107, 10).unwrap(), Some(7));
        assert_eq!(log.first_seq_since_ts(&a, 200, 10).unwrap(), None);
        assert_eq!(log.stats(&a).unwrap().count, 10);
        let t = log.trim_front(&a, &mut |seq, _, _| seq <= 3).unwrap();
        assert_eq!(t.messages, 3);
        assert_eq!(log.stats(&a).unwrap().first_seq, Some(4));
        assert_eq!(log.idempotency(&a, "k1").unwrap().unwrap().seq, 1);
        assert_eq!(log.expire_idempotency(1000).unwrap(), 1);
        log.sync().unwrap();
    }
    let log = open(dir.path());
    let mut heads = log.heads().unwrap();
    heads.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        heads[0].1,
        TopicHead {
            last_seq: 10,
            last_ts: 110
        }
    );
    assert_eq!(heads[1].1.last_seq, 1);
    assert_eq!(log.read(&a, 0, 100).unwrap().first().unwrap().seq, 4);
    assert!(log.idempotency(&a, "k1").unwrap().is_none());
}

#[test]
fn removed_through_is_what_retention_removed_not_what_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    let a = Topic::parse("a").unwrap();
    let log = open(dir.path());
    let entries: Vec<_> = (1..=10).map(|s| entry(&a, s, 100 + s)).collect();
    log.append(&entries).unwrap();
    assert_eq!(log.removed_through(&a).unwrap(), None);
    // Lost, not removed: another node may still hold these.
    log.accept_lost(&[LostRange {
        topic: a.clone(),
        from: 11,
        to: 12,
    }])
    .unwrap();
    assert_eq!(log.removed_through(&a).unwrap(), None);
    log.trim_front(&a, &mut |seq, _, _| seq <= 2).unwrap();
    let retention = TopicHead {
        last_seq: 2,
        last_ts: 102,
    };
    assert_eq!(log.removed_through(&a).unwrap(), Some(retention));
    // Removing through 5 drops 3..=5 and records 5; a lower call changes
    // nothing.
    let through = TopicHead {
        last_seq: 5,
        last_ts: 105,
    };
    log.remove_through(&a, through).unwrap();
    log.remove_through(&a, retention).unwrap();
    assert_eq!(log.removed_through(&a).unwrap(), Some(through));
    assert_eq!(log.read(&a, 0, 100).unwrap().first().unwrap().seq, 6);
    assert_eq!(log.stats(&a).unwrap().first_seq, Some(6));
}

#[test]
fn stored_idempotency_keys_are_found_through_the_filter_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let a = Topic::parse("a").unwrap();
    let keyed = |seq: u64, key: &str, expires_at: u64| LogEntry {
        idempotency: Some((key.to_string(), expires_at)),
        ..entry(&a, seq, 100 + seq)
    };
    {
        let log = open(dir.path());
        log.append(&[keyed(1, "k1", 1_000), keyed(2, "k2", 5_000)])
            .unwrap();
        assert_eq!(log.idempotency(&a, "k1").unwrap().unwrap().seq, 1);
        log.sync().unwrap();
    }
    let log = open(dir.path());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !log.keys.is_complete() {
        assert!(
            std::time::Instant::now() < deadline,
            "the key scan never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Found through the filter (a key it missed would now read as absent).
    assert_eq!(log.idempotency(&a, "k1").unwrap().unwrap().seq, 1);
    assert_eq!(log.idempotency(&a, "k2").unwrap().unwrap().seq, 2);
    assert!(log.idempotency(&a, "k3").unwrap().is_none());
    // Appended after the reopen, and replaced: found too.
    log.append(&[keyed(3, "k3", 5_000)]).unwrap();
    log.replace(&[keyed(3, "k3b", 5_000)]).unwrap();
    assert_eq!(log.idempotency(&a, "k3b").unwrap().unwrap().seq, 3);
    assert!(log.idempotency(&a, "k3").unwrap().is_none(), "replaced");
    // The sweep removes k1 (expired at 1,000), keeps the others.
    assert_eq!(log.expire_idempotency(2_000).unwrap(), 1);
    assert!(log.idempotency(&a, "k1").unwrap().is_none());
    assert_eq!(log.idempotency(&a, "k2").unwrap().unwrap().seq, 2);
}
