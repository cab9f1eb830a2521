//! The start-up check on logs built record by record: a format-2 log as
//! the previous release wrote it, and damage the check must name.

use std::{collections::BTreeMap, path::Path};

use super::*;
use crate::log::{acked, sled_log::tests::entry, tamper, LogEntry};
use herald_core::Message;

fn options() -> SledOptions {
    SledOptions {
        cache_bytes: 8 << 20,
        flush_every_ms: 500,
    }
}

fn topic(name: &str) -> Topic {
    Topic::parse(name).unwrap()
}

/// Opens `dir` as a single node, waiting out the previous handle's lock.
fn open(dir: &Path, accept: bool) -> Result<Verified, LogError> {
    for _ in 0..100 {
        match open_verified(dir, &options(), Mode::Single, accept) {
            Err(e) if e.to_string().contains("could not acquire lock") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
    panic!("log still locked")
}

/// Each topic's head seq, by name.
fn last_seqs(log: &SledLog) -> BTreeMap<String, u64> {
    let heads = log.heads().unwrap().into_iter();
    heads.map(|(t, h)| (t.to_string(), h.last_seq)).collect()
}

/// What the release before format 3 wrote: tree `log`, unsealed values.
fn write_format_2(dir: &Path) {
    let db = sled::Config::new().path(dir.join("log")).open().unwrap();
    db.insert("format", "herald-log-2").unwrap();
    let tree = db.open_tree("log").unwrap();
    let put_message = |name: &str, seq: u64, ts: u64| {
        let m = Message::new(topic(name), seq, ts, &format!("{{\"n\":{seq}}}"));
        let mut key = format!("m{name}\0").into_bytes();
        key.extend_from_slice(&seq.to_be_bytes());
        let mut value = ts.to_be_bytes().to_vec();
        value.extend_from_slice(m.envelope());
        tree.insert(key, value).unwrap();
    };
    for seq in 4..=10 {
        put_message("a.b", seq, 1000 + seq);
    }
    put_message("c", 1, 50);
    // Retention removed a.b 1..=3, recording the head of what it removed.
    let mut head = 3u64.to_be_bytes().to_vec();
    head.extend_from_slice(&1003u64.to_be_bytes());
    tree.insert(b"ha.b", head).unwrap();
    let mut idem = 5u64.to_be_bytes().to_vec();
    idem.extend_from_slice(&1005u64.to_be_bytes());
    idem.extend_from_slice(&u64::MAX.to_be_bytes());
    tree.insert(b"ia.b\0key-5", idem).unwrap();
    tree.insert(b"xcluster/max-members", &b"3"[..]).unwrap();
    db.flush().unwrap();
    std::fs::write(dir.join("herald-log.format"), "herald-log-2").unwrap();
    // The old mark: the sum of the topics' heads (10 + 1).
    std::fs::write(dir.join(LEGACY_HIGH_WATER), "11").unwrap();
}

/// What format 4 wrote: tree `log-v4`, each run's body in its sealed value.
/// `damaged` flips a byte of topic `bad`'s run.
fn write_format_4(dir: &Path, damaged: bool) {
    use crate::log::{record, run::encode_run};
    let db = sled::Config::new().path(dir.join("log")).open().unwrap();
    db.insert("format", "herald-log-4").unwrap();
    let tree = db.open_tree("log-v4").unwrap();
    let put_run = |name: &str, seqs: std::ops::RangeInclusive<u64>, flip: bool| {
        let messages: Vec<std::sync::Arc<Message>> = seqs
            .clone()
            .map(|s| Message::new(topic(name), s, 100 + s, &format!("{{\"n\":{s}}}")))
            .collect();
        let mut key = format!("m{name}\0").into_bytes();
        key.extend_from_slice(&seqs.end().to_be_bytes());
        let body = encode_run(messages.iter().map(|m| (m.ts, &m.envelope()[..])));
        let mut value = record::seal(&key, &body);
        if flip {
            value[10] ^= 1;
        }
        tree.insert(key, value).unwrap();
    };
    put_run("a.b", 1..=3, false);
    put_run("a.b", 4..=6, false);
    put_run("c", 1..=1, false);
    put_run("bad", 1..=2, damaged);
    db.flush().unwrap();
    std::fs::write(dir.join("herald-log.format"), "herald-log-4").unwrap();
}

#[test]
fn a_format_4_log_moves_its_runs_into_run_files_and_keeps_its_damage() {
    let dir = tempfile::tempdir().unwrap();
    write_format_4(dir.path(), false);
    {
        let v = open(dir.path(), false).unwrap();
        assert!(v.report.is_clean(), "{}", v.report);
        assert_eq!(v.log.upgraded_from(), Some(4));
        let read = v.log.read(&topic("a.b"), 2, 100).unwrap();
        let got: Vec<(u64, u64)> = read.iter().map(|m| (m.seq, m.ts)).collect();
        assert_eq!(got, (2..=6).map(|s| (s, 100 + s)).collect::<Vec<_>>());
        assert_eq!(
            read[0].envelope().as_ref(),
            Message::new(topic("a.b"), 2, 102, "{\"n\":2}")
                .envelope()
                .as_ref()
        );
        let heads = last_seqs(&v.log);
        assert_eq!(heads["a.b"], 6);
        assert!(v.log.runs().bytes() > 0, "the bodies are in run files");
        assert!(!v
            .log
            .db
            .tree_names()
            .iter()
            .any(|n| n.as_ref() == b"log-v4"));
    }
    assert_eq!(
        std::fs::read(dir.path().join("herald-log.format")).unwrap(),
        b"herald-log-5"
    );
    let v = open(dir.path(), false).unwrap();
    assert!(v.report.is_clean(), "{}", v.report);
    assert_eq!(v.log.upgraded_from(), None);
    drop(v);
    // A run damaged before the upgrade is still found damaged after it.
    let dir = tempfile::tempdir().unwrap();
    write_format_4(dir.path(), true);
    let err = open(dir.path(), false).err().expect("refused").to_string();
    assert!(
        err.contains("topic bad:") && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn a_format_2_log_is_upgraded_in_place_and_reads_back_verified() {
    let dir = tempfile::tempdir().unwrap();
    write_format_2(dir.path());
    {
        let v = open(dir.path(), false).unwrap();
        assert!(v.report.is_clean(), "{}", v.report);
        assert_eq!(v.log.upgraded_from(), Some(2));
        let seqs: Vec<u64> = v
            .log
            .read(&topic("a.b"), 0, 100)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(seqs, (4..=10).collect::<Vec<_>>());
        let m = &v.log.read(&topic("a.b"), 7, 1).unwrap()[0];
        assert_eq!(
            (m.ts, m.envelope().as_ref()),
            (
                1007,
                Message::new(topic("a.b"), 7, 1007, "{\"n\":7}")
                    .envelope()
                    .as_ref()
            )
        );
        assert_eq!(
            v.log
                .idempotency(&topic("a.b"), "key-5")
                .unwrap()
                .unwrap()
                .seq,
            5
        );
        assert_eq!(
            v.log.scan_meta("cluster/").unwrap(),
            vec![("cluster/max-members".to_string(), b"3".to_vec())]
        );
        let heads = last_seqs(&v.log);
        assert_eq!(heads, BTreeMap::from([("a.b".into(), 10), ("c".into(), 1)]));
        // New appends continue in the new format.
        v.log.append(&[entry(&topic("c"), 2, 60)]).unwrap();
        v.log.sync().unwrap();
    }
    assert_eq!(
        std::fs::read(dir.path().join("herald-log.format")).unwrap(),
        b"herald-log-5"
    );
    assert!(
        !dir.path().join(LEGACY_HIGH_WATER).exists(),
        "the journal replaces the old mark"
    );
    let read = acked::read(dir.path());
    assert_eq!((read.heads["a.b"], read.heads["c"]), (10, 1));
    // The second open finds format 5, a journal, and nothing wrong.
    let v = open(dir.path(), false).unwrap();
    assert!(v.report.is_clean(), "{}", v.report);
    assert_eq!(v.log.upgraded_from(), None);
    assert_eq!(v.log.read(&topic("c"), 0, 10).unwrap().len(), 2);
}

#[test]
fn an_interrupted_upgrade_starts_again_from_an_empty_new_tree() {
    let dir = tempfile::tempdir().unwrap();
    write_format_2(dir.path());
    {
        // Copies cut short: part of each new tree (here a record the old
        // tree does not have), the old format still recorded.
        let db = sled::Config::new()
            .path(dir.path().join("log"))
            .open()
            .unwrap();
        for tree in ["log-v3", "log-v4"] {
            db.open_tree(tree)
                .unwrap()
                .insert(b"ma.b\0\0\0\0\0\0\0\0\x63", &b"half"[..])
                .unwrap();
        }
        db.flush().unwrap();
    }
    let v = open(dir.path(), false).unwrap();
    assert!(v.report.is_clean(), "{}", v.report);
    assert_eq!(v.log.read(&topic("a.b"), 4, 1).unwrap()[0].seq, 4);
}

#[test]
fn a_format_2_log_below_its_old_mark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_format_2(dir.path());
    std::fs::write(dir.path().join(LEGACY_HIGH_WATER), "15").unwrap();
    let err = open(dir.path(), false).err().expect("refused").to_string();
    assert!(err.contains("sum of seqs 11 < recorded 15"), "{err}");
}

#[test]
fn holes_corrupt_records_and_a_lost_tail_are_named_then_accepted_as_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let t = topic("k.t");
    {
        let v = open(dir.path(), false).unwrap();
        // Three runs: 1..=11, 12, 13..=20.
        for seqs in [1..=11, 12..=12, 13..=20] {
            let entries: Vec<LogEntry> = seqs.map(|s| entry(&t, s, s)).collect();
            v.log.append(&entries).unwrap();
            v.log.compactor.compact().unwrap();
        }
        v.log.sync().unwrap();
        let mut journal = v.journal;
        journal.record(&[(t.clone(), 25)]).unwrap();
        // A hole (7..=8) and a damaged record (12).
        let tree = v.log.tree();
        assert_eq!(
            tamper::remove_messages(v.log.dir(), tree, "k.t", 7..=8).unwrap(),
            2
        );
        assert!(tamper::alter_message(v.log.dir(), tree, "k.t", 12).unwrap());
        v.log.sync().unwrap();
    }
    let err = open(dir.path(), false).err().expect("refused").to_string();
    for want in [
        "topic k.t:",
        "seqs 7..=8 (2 messages) missing: a hole",
        "seq 12 fail their checksum",
        "seqs 21..=25 (5 messages) missing: acknowledged, but beyond the end of the log",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    {
        let v = open(dir.path(), true).unwrap();
        assert_eq!(v.report.findings.len(), 3);
        let seqs: Vec<u64> = v
            .log
            .read(&t, 0, 100)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        let want: Vec<u64> = (1..=20).filter(|s| ![7, 8, 12].contains(s)).collect();
        assert_eq!(seqs, want);
        assert_eq!(
            v.log.damage().accepted_within(&t, 1, 30),
            vec![(7, 8), (12, 12), (21, 25)]
        );
        let head = v.log.heads().unwrap()[0].1.last_seq;
        assert_eq!(head, 25, "no seq of the lost tail is assigned again");
    }
    // Accepted once: later starts are clean and still know the gaps.
    let v = open(dir.path(), false).unwrap();
    assert!(v.report.is_clean(), "{}", v.report);
    assert_eq!(v.log.damage().accepted_within(&t, 1, 30).len(), 3);
}

#[test]
fn a_corrupt_record_met_at_run_time_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = topic("r");
    let v = open(dir.path(), false).unwrap();
    v.log.append(&[entry(&t, 1, 1), entry(&t, 2, 2)]).unwrap();
    // Staged messages are read from memory; the damage is in their run.
    assert_eq!(v.log.read(&t, 1, 10).unwrap().len(), 2);
    v.log.compactor.compact().unwrap();
    assert!(tamper::alter_message(v.log.dir(), v.log.tree(), "r", 1).unwrap());
    let err = v.log.read(&t, 1, 10).unwrap_err().to_string();
    assert!(
        err.contains("messages of r up to #2") && err.contains("checksum"),
        "{err}"
    );
    assert!(v
        .log
        .damage()
        .reason()
        .unwrap()
        .contains("messages of r up to #2"));
}

#[test]
fn a_run_retention_trimmed_in_part_passes_the_start_up_check() {
    let dir = tempfile::tempdir().unwrap();
    let t = topic("p");
    let seqs = |v: &Verified| -> Vec<u64> {
        let read = v.log.read(&t, 0, 100).unwrap();
        read.iter().map(|m| m.seq).collect()
    };
    {
        let v = open(dir.path(), false).unwrap();
        let entries: Vec<LogEntry> = (1..=10).map(|s| entry(&t, s, s)).collect();
        v.log.append(&entries).unwrap();
        v.log.compactor.compact().unwrap();
        // Twice into the same run: its ref skips 3, then 5 messages.
        v.log.trim_front(&t, &mut |seq, _, _| seq <= 3).unwrap();
        v.log.trim_front(&t, &mut |seq, _, _| seq <= 5).unwrap();
        assert_eq!(seqs(&v), (6..=10).collect::<Vec<_>>());
        v.log.sync().unwrap();
    }
    let v = open(dir.path(), false).unwrap();
    assert!(v.report.is_clean(), "{}", v.report);
    assert_eq!(seqs(&v), (6..=10).collect::<Vec<_>>());
    let stats = v.log.stats(&t).unwrap();
    assert_eq!((stats.first_seq, stats.count), (Some(6), 5));
}

/// Appends, retention, collection and readers at once, with run files small
/// enough to rotate every few compactions: every message retention kept is
/// read back dense, every time, and the log passes its start-up check.
#[test]
fn collection_beside_appends_retention_and_readers_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let topics: Vec<Topic> = (0..12).map(|i| topic(&format!("c.t{i}"))).collect();
    let last_seq = 600u64;
    {
        let v = open(dir.path(), false).unwrap();
        let log = &v.log;
        let done = AtomicBool::new(false);
        // A read is not a snapshot: one racing retention may still return
        // messages below what retention removed meanwhile. From the first
        // message still stored after the read, it must be dense.
        let check = |t: &Topic| {
            let read = log.read(t, 0, 10_000).unwrap();
            let front = log.read(t, 0, 1).unwrap().first().map_or(0, |m| m.seq);
            let seqs: Vec<u64> = read.iter().map(|m| m.seq).filter(|&s| s >= front).collect();
            let holes: Vec<_> = seqs.windows(2).filter(|w| w[1] != w[0] + 1).collect();
            assert!(holes.is_empty(), "{t}: holes {holes:?} above {front}");
            seqs
        };
        /// Ends the other loops however the writer ends (a panic too).
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                let _done = Done(&done);
                for seq in 1..=last_seq {
                    let entries: Vec<LogEntry> = topics
                        .iter()
                        .map(|t| LogEntry {
                            message: Message::new(
                                t.clone(),
                                seq,
                                seq,
                                &format!("\"{}\"", "x".repeat(200)),
                            ),
                            idempotency: None,
                        })
                        .collect();
                    log.append(&entries).unwrap();
                    if seq % 20 == 0 {
                        log.sync().unwrap();
                        log.compactor.compact().unwrap();
                    }
                }
            });
            s.spawn(|| {
                let _done = Done(&done);
                while !done.load(Ordering::Acquire) {
                    for t in &topics {
                        let head = check(t).last().copied().unwrap_or(0);
                        log.trim_front(t, &mut |seq, _, _| seq + 100 <= head)
                            .unwrap();
                    }
                }
            });
            s.spawn(|| {
                let _done = Done(&done);
                while !done.load(Ordering::Acquire) {
                    log.compactor.collect().unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
            });
            s.spawn(|| {
                let _done = Done(&done);
                while !done.load(Ordering::Acquire) {
                    for t in &topics {
                        check(t);
                    }
                }
            });
        });
        log.compactor.compact().unwrap();
        log.compactor.collect().unwrap();
        for t in &topics {
            assert_eq!(check(t).last(), Some(&last_seq), "{t}");
        }
        assert!(
            log.runs().files().unwrap().on_disk.len() < 20,
            "collection kept up: {:?}",
            log.runs().files().unwrap()
        );
        log.sync().unwrap();
    }
    let v = open(dir.path(), false).unwrap();
    assert!(v.report.is_clean(), "{}", v.report);
    for t in &topics {
        let read = v.log.read(t, 0, 10_000).unwrap();
        assert_eq!(read.last().map(|m| m.seq), Some(last_seq));
        assert!(read.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }
}
