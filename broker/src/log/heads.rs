//! Topic heads (last seq and ts ever appended) as the log derives them.
//!
//! Appends write no head record: a topic's head is the last seq of its last
//! run (the run's key), or of its staged tail while it is staged.
//! Only retention, which may remove a topic's last messages, records the
//! head of what it removed (an `h` key, in the same batch as the removal),
//! and a range accepted as lost (`d`) counts up to its end, so a head is the
//! greatest of the three and no seq is ever reused.

use std::collections::HashMap;

use super::{
    keys::{seq_of_key, split_seq_key, u64_at},
    record,
    runs::RunRef,
    LogError,
};
use herald_core::{Topic, TopicHead};

/// The checked body of `value` under `key`.
fn body<'a>(key: &[u8], value: &'a [u8]) -> Result<&'a [u8], LogError> {
    record::open(key, value).map_err(|e| LogError::CorruptRecord {
        record: format!("record {}", String::from_utf8_lossy(key)),
        reason: e.to_string(),
    })
}

/// The head of every topic in `tree`: its last message key, the head
/// retention recorded, or the end of its last lost range, whichever is
/// latest.
pub(super) fn scan(tree: &sled::Tree) -> Result<Vec<(Topic, TopicHead)>, LogError> {
    let mut heads: HashMap<Topic, TopicHead> = HashMap::new();
    for item in tree.scan_prefix(b"h") {
        let (key, value) = item?;
        let body = body(&key, &value)?;
        let head = TopicHead {
            last_seq: u64_at(body, 0)?,
            last_ts: u64_at(body, 8)?,
        };
        merge(&mut heads, topic_of(&key[1..])?, head);
    }
    for item in tree.scan_prefix(b"d") {
        let (key, value) = item?;
        let (name, _) = split_seq_key(&key)
            .ok_or_else(|| LogError::Corrupt("lost-range key too short".into()))?;
        let head = TopicHead {
            last_seq: u64_at(body(&key, &value)?, 0)?,
            last_ts: 0,
        };
        merge(&mut heads, topic_of(name)?, head);
    }
    // One seek to each topic's first key and one to its last, so this costs
    // two lookups per topic, not a read of every message.
    let mut from = b"m".to_vec();
    while let Some(item) = tree.range(from.as_slice()..).next() {
        let (key, _) = item?;
        if key.first() != Some(&b'm') {
            break;
        }
        // `m` topic `\0` seq: the prefix ends at the `\0`.
        let prefix_len = key
            .len()
            .checked_sub(8)
            .filter(|&n| n >= 2 && key[n - 1] == 0)
            .ok_or_else(|| LogError::Corrupt("message key too short".into()))?;
        let prefix = &key[..prefix_len];
        let mut last_key = prefix.to_vec();
        last_key.extend_from_slice(&u64::MAX.to_be_bytes());
        if let Some(last) = tree.range(prefix..=last_key.as_slice()).next_back() {
            let (last_key, value) = last?;
            let last_seq = seq_of_key(&last_key)?;
            let run = RunRef::decode(body(&last_key, &value)?).ok_or_else(|| {
                LogError::Corrupt(format!(
                    "record {} is not a run reference",
                    String::from_utf8_lossy(&last_key)
                ))
            })?;
            let head = TopicHead {
                last_seq,
                last_ts: run.last_ts,
            };
            merge(&mut heads, topic_of(&prefix[1..prefix_len - 1])?, head);
        }
        // Topic names never hold bytes below `\x02`, so `m` topic `\x01` sorts
        // after this topic's keys and before the next topic's.
        from = prefix.to_vec();
        *from.last_mut().expect("prefix is not empty") = 1;
    }
    Ok(heads.into_iter().collect())
}

/// The topic a key names, if the name is valid.
pub(super) fn topic_of(name: &[u8]) -> Result<Topic, LogError> {
    let name = std::str::from_utf8(name)
        .map_err(|_| LogError::Corrupt("topic name is not UTF-8".into()))?;
    Topic::parse(name).map_err(|e| LogError::Corrupt(format!("topic {name:?}: {e}")))
}

fn merge(heads: &mut HashMap<Topic, TopicHead>, topic: Topic, head: TopicHead) {
    let entry = heads.entry(topic).or_default();
    if head.last_seq > entry.last_seq {
        *entry = head;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::log::{
        sled_log::tests::{entry, open},
        MessageLog,
    };

    fn sorted(heads: Vec<(Topic, TopicHead)>) -> BTreeMap<String, u64> {
        heads
            .into_iter()
            .map(|(t, h)| (t.as_str().to_string(), h.last_seq))
            .collect()
    }

    #[test]
    fn a_trimmed_topic_keeps_its_head_and_neighbours_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let names = ["a", "a-b", "a.b", "a.b.c", "b"];
        let topics: Vec<Topic> = names.iter().map(|n| Topic::parse(n).unwrap()).collect();
        {
            let log = open(dir.path());
            for (i, t) in topics.iter().enumerate() {
                let n = 3 * (i as u64 + 1);
                let entries: Vec<_> = (1..=n).map(|s| entry(t, s, 1000 + s)).collect();
                log.append(&entries).unwrap();
            }
            // "a" loses everything, "a.b" its first half.
            assert_eq!(
                log.trim_front(&topics[0], &mut |_, _, _| true)
                    .unwrap()
                    .messages,
                3
            );
            log.trim_front(&topics[2], &mut |seq, _, _| seq <= 4)
                .unwrap();
            log.sync().unwrap();
        }
        let log = open(dir.path());
        let heads = log.heads().unwrap();
        let a = heads.iter().find(|(t, _)| t.as_str() == "a").unwrap().1;
        assert_eq!(
            a,
            TopicHead {
                last_seq: 3,
                last_ts: 1003
            }
        );
        let want: BTreeMap<String, u64> =
            [("a", 3), ("a-b", 6), ("a.b", 9), ("a.b.c", 12), ("b", 15)]
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect();
        assert_eq!(sorted(heads), want);
    }

    #[test]
    fn a_format_1_log_is_upgraded_and_its_stale_heads_lose_to_newer_messages() {
        let dir = tempfile::tempdir().unwrap();
        let a = Topic::parse("a").unwrap();
        let gone = Topic::parse("gone").unwrap();
        {
            // What Herald before format 2 left on disk: a head per topic.
            let db = sled::Config::new()
                .path(dir.path().join("log"))
                .open()
                .unwrap();
            db.insert("format", "herald-log-1").unwrap();
            let tree = db.open_tree("log").unwrap();
            let mut head = [0u8; 16];
            head[..8].copy_from_slice(&2u64.to_be_bytes());
            tree.insert(b"ha", &head[..]).unwrap();
            head[..8].copy_from_slice(&7u64.to_be_bytes());
            tree.insert(b"hgone", &head[..]).unwrap();
            for seq in 1..=2u64 {
                let mut key = b"ma\0".to_vec();
                key.extend_from_slice(&seq.to_be_bytes());
                let mut value = 5u64.to_be_bytes().to_vec();
                value.extend_from_slice(b"{}");
                tree.insert(key, value).unwrap();
            }
            db.flush().unwrap();
            std::fs::write(dir.path().join("herald-log.format"), "herald-log-1").unwrap();
        }
        {
            let log = open(dir.path());
            let heads = sorted(log.heads().unwrap());
            assert_eq!(heads, BTreeMap::from([("a".into(), 2), ("gone".into(), 7)]));
            assert_eq!(log.read(&a, 1, 10).unwrap().len(), 2);
            // Format 2 appends write no head record: the `ha` record is stale now.
            log.append(&[entry(&a, 3, 9), entry(&gone, 8, 9)]).unwrap();
            log.sync().unwrap();
        }
        let log = open(dir.path());
        let heads = sorted(log.heads().unwrap());
        assert_eq!(heads, BTreeMap::from([("a".into(), 3), ("gone".into(), 8)]));
        drop(log);
        let format = std::fs::read(dir.path().join("herald-log.format")).unwrap();
        assert_eq!(format, b"herald-log-5", "the marker names the new format");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever is appended and trimmed, the heads read back after a
        /// reopen are the last seq ever appended per topic.
        #[test]
        fn heads_survive_any_appends_and_trims(
            ops in proptest::collection::vec((0usize..4, 1u64..40, any::<bool>()), 1..24)
        ) {
            let names = ["x", "x.y", "x-y", "xy"];
            let topics: Vec<Topic> = names.iter().map(|n| Topic::parse(n).unwrap()).collect();
            let dir = tempfile::tempdir().unwrap();
            let mut want = BTreeMap::new();
            {
                let log = open(dir.path());
                for (topic, n, trim) in ops {
                    let t = &topics[topic];
                    let head = want.entry(names[topic].to_string()).or_insert(0u64);
                    if trim {
                        // Remove the n-1 oldest retained messages (or all).
                        let mut left = n;
                        log.trim_front(t, &mut |_, _, _| {
                            left = left.saturating_sub(1);
                            left > 0
                        })
                        .unwrap();
                    } else {
                        let entries: Vec<_> =
                            (*head + 1..=*head + n).map(|s| entry(t, s, s)).collect();
                        log.append(&entries).unwrap();
                        *head += n;
                    }
                }
                log.sync().unwrap();
            }
            want.retain(|_, seq| *seq > 0);
            let log = open(dir.path());
            prop_assert_eq!(sorted(log.heads().unwrap()), want);
        }
    }
}
