//! The sled log's own round trip, and helpers other log tests share.

use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::log::tail::Take;

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

#[test]
fn readers_see_every_message_once_while_compaction_moves_them_into_runs() {
    let dir = tempfile::tempdir().unwrap();
    let topics: Vec<Topic> = ["a", "b", "c"]
        .iter()
        .map(|n| Topic::parse(n).unwrap())
        .collect();
    let log = Arc::new(open(dir.path()));
    let appended = Arc::new(AtomicU64::new(0));
    let writer = {
        let (log, appended, topics) = (log.clone(), appended.clone(), topics.clone());
        std::thread::spawn(move || {
            for seq in 1..=3_000u64 {
                let entries: Vec<_> = topics.iter().map(|t| entry(t, seq, seq)).collect();
                log.append(&entries).unwrap();
                appended.store(seq, Ordering::Release);
                if seq % 97 == 0 {
                    log.compactor.compact().unwrap();
                }
            }
        })
    };
    // Whatever a read races with, it returns 1..=n without a gap or a
    // repeat, reaching at least what was appended before it began.
    let mut reads = 0;
    while !writer.is_finished() || reads < 10 {
        let floor = appended.load(Ordering::Acquire);
        for t in &topics {
            let seqs: Vec<u64> = log
                .read(t, 1, 10_000)
                .unwrap()
                .iter()
                .map(|m| m.seq)
                .collect();
            assert!(seqs.len() as u64 >= floor, "{t}: {} < {floor}", seqs.len());
            assert!(
                seqs.iter().copied().eq(1..=seqs.len() as u64),
                "{t}: not dense"
            );
            let from = floor / 2 + 1;
            let page: Vec<u64> = log
                .read(t, from, 50)
                .unwrap()
                .iter()
                .map(|m| m.seq)
                .collect();
            assert!(page.iter().copied().eq(from..from + page.len() as u64));
            assert!(page.len() == 50 || from + page.len() as u64 > floor);
        }
        reads += 1;
    }
    writer.join().unwrap();
    assert_eq!(log.stats(&topics[0]).unwrap().count, 3_000);
    assert_eq!(
        log.first_seq_since_ts(&topics[1], 2_990, 3_000).unwrap(),
        Some(2_990)
    );
}

#[test]
fn the_write_ahead_file_left_by_a_crash_is_replayed_once_with_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let a = Topic::parse("a").unwrap();
    {
        let log = open(dir.path());
        log.append(&[entry(&a, 1, 1)]).unwrap();
        log.compactor.compact().unwrap();
        log.sync().unwrap();
    }
    {
        // What a kill -9 leaves: records no compaction wrote as runs, and
        // one (seq 1) whose messages are in runs already.
        let (wal, _) = Wal::open(&dir.path().join("wal")).unwrap();
        let mut keyed = entry(&a, 2, 2);
        keyed.idempotency = Some(("k2".into(), u64::MAX));
        wal.append(&encode_pass(&[entry(&a, 1, 1)])).unwrap();
        wal.append(&encode_pass(&[keyed, entry(&a, 3, 3)])).unwrap();
        wal.sync().unwrap();
    }
    let log = open(dir.path());
    let seqs: Vec<u64> = log.read(&a, 1, 10).unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3], "replayed, and seq 1 not twice");
    assert_eq!(log.stats(&a).unwrap().count, 3);
    assert_eq!(log.idempotency(&a, "k2").unwrap().unwrap().seq, 2);
    assert!(log.wal_problems().is_empty());
    let segments = std::fs::read_dir(dir.path().join("wal")).unwrap().count();
    assert_eq!(segments, 1, "replayed segments are deleted");
}

#[test]
fn retention_and_replacement_rewrite_part_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let a = Topic::parse("a").unwrap();
    let log = open(dir.path());
    let entries: Vec<_> = (1..=10).map(|s| entry(&a, s, 100 + s)).collect();
    log.append(&entries).unwrap();
    log.compactor.compact().unwrap();
    assert_eq!(log.tree().scan_prefix(b"m").count(), 1, "one run");
    // Retention keeps 5..=10 of the run, under the same key.
    let t = log.trim_front(&a, &mut |seq, _, _| seq <= 4).unwrap();
    assert_eq!((t.messages, log.stats(&a).unwrap().count), (4, 6));
    // A replacement inside the run.
    let newer = LogEntry {
        message: Message::new(a.clone(), 7, 999, "\"newer\""),
        idempotency: None,
    };
    log.replace(&[newer]).unwrap();
    let got = log.read(&a, 0, 100).unwrap();
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (5..=10).collect::<Vec<_>>());
    assert_eq!((got[2].ts, got[2].data()), (999, &b"\"newer\""[..]));
    assert_eq!(log.first_seq_since_ts(&a, 107, 10).unwrap(), Some(7));
}

#[test]
fn a_damaged_write_ahead_segment_is_reported_at_every_open_until_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let a = Topic::parse("a").unwrap();
    drop(open(dir.path()));
    let segment = {
        let (wal, _) = Wal::open(&dir.path().join("wal")).unwrap();
        for seq in 1..=3 {
            wal.append(&encode_pass(&[entry(&a, seq, seq)])).unwrap();
        }
        wal.sync().unwrap();
        let mut segments: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        segments.sort();
        segments.pop().unwrap()
    };
    // Seq 2's record damaged: seq 3's after it is intact.
    let mut bytes = std::fs::read(&segment).unwrap();
    let second = bytes.len() / 2;
    bytes[second] ^= 0x10;
    std::fs::write(&segment, bytes).unwrap();
    for _ in 0..2 {
        let log = open(dir.path());
        assert_eq!(log.wal_problems().len(), 1, "{:?}", log.wal_problems());
        let seqs: Vec<u64> = log.read(&a, 1, 10).unwrap().iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1, 3], "the intact records are replayed");
        assert!(segment.exists(), "the evidence stays");
    }
    let log = open(dir.path());
    log.accept_wal_damage().unwrap();
    assert!(!segment.exists());
    drop(log);
    assert!(open(dir.path()).wal_problems().is_empty());
}

#[test]
fn run_files_no_run_needs_go_and_mostly_dead_ones_are_moved_out_of_first() {
    let dir = tempfile::tempdir().unwrap();
    let a = Topic::parse("a").unwrap();
    let b = Topic::parse("b").unwrap();
    let seqs = |log: &SledLog, t: &Topic| -> Vec<u64> {
        log.read(t, 0, 1000)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect()
    };
    {
        // File 0: a few messages of `a` among many of `b`.
        let log = open(dir.path());
        let mut entries: Vec<_> = (1..=10).map(|s| entry(&a, s, s)).collect();
        entries.extend((1..=300).map(|s| entry(&b, s, s)));
        log.append(&entries).unwrap();
        log.sync().unwrap();
    }
    let log = open(dir.path());
    // File 1 is the one this open writes.
    log.append(&[entry(&a, 11, 11)]).unwrap();
    log.compactor.compact().unwrap();
    assert_eq!(log.compactor.collect().unwrap(), 0, "every file is needed");
    // Retention empties `b` and trims `a` in part: file 0 is now mostly
    // garbage.
    let trimmed = log.trim_front(&b, &mut |_, _, _| true).unwrap();
    log.trim_front(&a, &mut |seq, _, _| seq <= 2).unwrap();
    assert_eq!(trimmed.messages, 300);
    let before = log.runs().bytes();
    assert_eq!(log.compactor.collect().unwrap(), 1, "file 0 goes");
    assert!(log.runs().bytes() < before / 2);
    let files = log.runs().files().unwrap();
    assert_eq!(
        files.on_disk.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(seqs(&log, &a), (3..=11).collect::<Vec<_>>());
    assert!(seqs(&log, &b).is_empty());
    drop(log);
    // Reopened, the moved runs are intact, and once retention removes
    // everything, no file is left but the one being written.
    let log = open(dir.path());
    assert_eq!(seqs(&log, &a), (3..=11).collect::<Vec<_>>());
    log.trim_front(&a, &mut |_, _, _| true).unwrap();
    log.append(&[entry(&a, 12, 12)]).unwrap();
    log.compactor.compact().unwrap();
    assert_eq!(log.compactor.collect().unwrap(), 1);
    let files = log.runs().files().unwrap();
    assert_eq!(files.on_disk.len(), 1);
    assert_eq!(files.keep_from, files.on_disk[0].0, "the one being written");
    assert_eq!(seqs(&log, &a), vec![12]);
}

#[test]
fn a_share_compacts_whole_topics_staged_first_and_leaves_the_rest_readable() {
    let dir = tempfile::tempdir().unwrap();
    let topics: Vec<Topic> = ["s.c", "s.a", "s.b"]
        .iter()
        .map(|n| Topic::parse(n).unwrap())
        .collect();
    let seqs = |log: &SledLog, t: &Topic| -> Vec<u64> {
        log.read(t, 0, 100).unwrap().iter().map(|m| m.seq).collect()
    };
    {
        let log = open(dir.path());
        for t in &topics {
            let entries: Vec<_> = (1..=5).map(|s| entry(t, s, s)).collect();
            log.append(&entries).unwrap();
        }
        log.sync().unwrap();
        // One share (at least one byte): the topic staged first, whole.
        drop(log.compactor.compact_up_to(Take::Share(1)).unwrap());
        let held: Vec<bool> = topics.iter().map(|t| log.compactor.tail.holds(t)).collect();
        assert_eq!(held, vec![false, true, true]);
        assert_eq!(log.tree().scan_prefix(b"m").count(), 1, "one run, s.c's");
        for t in &topics {
            assert_eq!(seqs(&log, t), vec![1, 2, 3, 4, 5], "{t}");
        }
        // The next share takes the next topic.
        log.append(&[entry(&topics[0], 6, 6)]).unwrap();
        drop(log.compactor.compact_up_to(Take::Share(1)).unwrap());
        assert!(!log.compactor.tail.holds(&topics[1]));
        assert!(log.compactor.tail.holds(&topics[2]) && log.compactor.tail.holds(&topics[0]));
    }
    // Closed: the rest was written on the way out; nothing twice.
    let log = open(dir.path());
    assert_eq!(seqs(&log, &topics[0]), vec![1, 2, 3, 4, 5, 6]);
    for t in &topics[1..] {
        assert_eq!(seqs(&log, t), vec![1, 2, 3, 4, 5], "{t}");
    }
}

#[test]
fn maintenance_of_one_topic_writes_its_staged_messages_and_leaves_the_rest_staged() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b, c] = ["m.a", "m.b", "m.c"].map(|n| Topic::parse(n).unwrap());
    let seqs = |log: &SledLog, t: &Topic| -> Vec<u64> {
        log.read(t, 0, 100).unwrap().iter().map(|m| m.seq).collect()
    };
    {
        let log = open(dir.path());
        for t in [&a, &b, &c] {
            let entries: Vec<_> = (1..=5).map(|s| entry(t, s, s)).collect();
            log.append(&entries).unwrap();
        }
        log.sync().unwrap();
        // Retention of `a` writes `a`'s staged messages, not b's or c's.
        let t = log.trim_front(&a, &mut |seq, _, _| seq <= 2).unwrap();
        assert_eq!(t.messages, 2);
        assert!(!log.compactor.tail.holds(&a));
        assert!(log.compactor.tail.holds(&b) && log.compactor.tail.holds(&c));
        assert_eq!(seqs(&log, &a), vec![3, 4, 5]);
        // So does removing `b` through a head.
        log.remove_through(
            &b,
            TopicHead {
                last_seq: 3,
                last_ts: 3,
            },
        )
        .unwrap();
        assert!(!log.compactor.tail.holds(&b));
        assert!(log.compactor.tail.holds(&c));
        assert_eq!(seqs(&log, &b), vec![4, 5]);
        assert_eq!(seqs(&log, &c), vec![1, 2, 3, 4, 5]);
    }
    // c was written on the way out; nothing lost, nothing twice.
    let log = open(dir.path());
    assert_eq!(seqs(&log, &a), vec![3, 4, 5]);
    assert_eq!(seqs(&log, &b), vec![4, 5]);
    assert_eq!(seqs(&log, &c), vec![1, 2, 3, 4, 5]);
}

#[test]
fn collection_scans_only_after_garbage_and_until_it_saw_that_garbage_s_file_closed() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = ["g.a", "g.b"].map(|n| Topic::parse(n).unwrap());
    let log = open(dir.path());
    let append = |t: &Topic, seqs: std::ops::RangeInclusive<u64>| {
        let entries: Vec<_> = seqs.map(|s| entry(t, s, s)).collect();
        log.append(&entries).unwrap();
        log.compactor.compact().unwrap();
    };
    assert_eq!(
        log.runs().garbage_pass(),
        None,
        "no file yet: nothing to scan"
    );
    append(&a, 1..=10);
    assert_eq!(log.compactor.collect().unwrap(), 0);
    append(&a, 11..=20);
    assert_eq!(log.runs().garbage_pass(), None, "appends leave no garbage");
    // `b` fills the file being written, and retention then empties `b`.
    let mut seq = 1;
    while log.runs().files().unwrap().on_disk.last().unwrap().1 < crate::log::runs::FILE_BYTES {
        // Small enough to be one run: the put that fills the file is in it.
        append(&b, seq..=seq + 9);
        seq += 10;
    }
    assert_eq!(log.runs().files().unwrap().on_disk.len(), 1);
    log.trim_front(&b, &mut |_, _, _| true).unwrap();
    assert!(
        log.runs().garbage_pass().is_some(),
        "retention noted garbage"
    );
    assert_eq!(
        log.compactor.collect().unwrap(),
        0,
        "its file is still written"
    );
    assert!(
        log.runs().garbage_pass().is_some(),
        "the garbage's file was not looked at: the next pass runs"
    );
    // The next put closes it: mostly garbage, `a` moves out and it goes.
    append(&a, 21..=21);
    assert_eq!(log.compactor.collect().unwrap(), 1);
    assert_eq!(log.runs().files().unwrap().on_disk[0].0, 1);
    assert_eq!(log.runs().garbage_pass(), None);
    let seqs: Vec<u64> = log
        .read(&a, 0, 100)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(seqs, (1..=21).collect::<Vec<_>>());
    assert!(log.read(&b, 0, 100).unwrap().is_empty());
}

#[test]
fn garbage_an_earlier_process_left_is_collected_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = ["g.a", "g.b"].map(|n| Topic::parse(n).unwrap());
    {
        let log = open(dir.path());
        let entries: Vec<_> = (1..=10).map(|s| entry(&b, s, s)).collect();
        log.append(&entries).unwrap();
        log.append(&[entry(&a, 1, 1), entry(&a, 2, 2)]).unwrap();
        log.compactor.compact().unwrap();
        // Retention empties `b`; the process ends before collection runs.
        log.trim_front(&b, &mut |_, _, _| true).unwrap();
    }
    let seqs = |log: &SledLog| -> Vec<u64> {
        log.read(&a, 0, 10).unwrap().iter().map(|m| m.seq).collect()
    };
    let log = open(dir.path());
    assert!(log.runs().garbage_pass().is_some(), "files on disk at open");
    // File 0 is mostly garbage: `a` moves to file 1 and file 0 goes.
    assert_eq!(log.compactor.collect().unwrap(), 1);
    assert_eq!(log.runs().garbage_pass(), None, "every noted file was seen");
    assert_eq!(seqs(&log), vec![1, 2]);
    // A trim that only skips part of a run leaves its body named.
    log.trim_front(&a, &mut |seq, _, _| seq <= 1).unwrap();
    assert_eq!(log.runs().garbage_pass(), None, "a skip is not garbage");
    log.trim_front(&a, &mut |_, _, _| true).unwrap();
    assert!(log.runs().garbage_pass().is_some());
    assert_eq!(
        log.compactor.collect().unwrap(),
        0,
        "file 1 is being written"
    );
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.compactor.collect().unwrap(), 1, "file 1 goes");
    assert!(log.runs().files().unwrap().on_disk.is_empty());
    assert_eq!(log.runs().garbage_pass(), None);
    // The next file is never a number this process saw used.
    log.append(&[entry(&a, 3, 3)]).unwrap();
    log.compactor.compact().unwrap();
    assert_eq!(log.runs().files().unwrap().on_disk[0].0, 2);
    assert_eq!(seqs(&log), vec![3]);
}
