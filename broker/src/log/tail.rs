//! Messages the log holds in the write-ahead file (durable, one record per
//! append, [`super::wal`]) and not yet in runs: the part of each topic
//! readers take from memory.
//!
//! Compaction ([`super::compact`]) freezes what is staged, writes it as
//! runs, and only then lets it go; readers take the tail first and the
//! runs after, so a message moving from one to the other is seen in at
//! least one of them, and a merge by seq drops the copy seen twice.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

use super::{IdempotencyRecord, LogEntry};
use herald_core::{Message, Topic, TopicHead};

/// One topic's staged messages and idempotency keys.
#[derive(Debug, Default)]
pub(super) struct TopicTail {
    /// In seq order.
    pub messages: Vec<Arc<Message>>,
    /// Keys of those messages.
    pub keys: Vec<(String, IdempotencyRecord)>,
    /// The write-ahead segment of the first of them.
    pub first_segment: u64,
    /// When it was first staged (a count): shares take topics in this
    /// order.
    pub order: u64,
    /// Their envelope bytes.
    pub bytes: usize,
}

/// What some appends staged: where their records are, and their messages.
#[derive(Debug, Default)]
pub(super) struct Staged {
    /// Appends staged.
    pub passes: usize,
    /// The first write-ahead segment holding one of them.
    pub first_segment: Option<u64>,
    /// By topic.
    pub topics: HashMap<Topic, TopicTail>,
    /// Envelope bytes staged.
    pub bytes: usize,
    /// Topics staged so far (the next one's `order`).
    staged_topics: u64,
}

impl Staged {
    /// Adds the entries of one append, stored in write-ahead segment
    /// `segment`.
    pub fn push(&mut self, segment: u64, entries: &[LogEntry]) {
        self.passes += 1;
        self.first_segment.get_or_insert(segment);
        for entry in entries {
            let m = &entry.message;
            self.bytes += m.envelope().len();
            let order = &mut self.staged_topics;
            let t = self.topics.entry(m.topic.clone()).or_insert_with(|| {
                *order += 1;
                TopicTail {
                    first_segment: segment,
                    order: *order,
                    ..TopicTail::default()
                }
            });
            t.bytes += m.envelope().len();
            // Appends continue each topic, so this is a push; a caller
            // appending one topic from two threads still reads back in order.
            match t.messages.last() {
                Some(last) if last.seq >= m.seq => {
                    match t.messages.binary_search_by_key(&m.seq, |x| x.seq) {
                        Ok(at) => t.messages[at] = m.clone(),
                        Err(at) => t.messages.insert(at, m.clone()),
                    }
                }
                _ => t.messages.push(m.clone()),
            }
            if let Some((key, expires_at)) = &entry.idempotency {
                t.keys.push((
                    key.clone(),
                    IdempotencyRecord {
                        seq: m.seq,
                        ts: m.ts,
                        expires_at: *expires_at,
                    },
                ));
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Takes whole topics, those staged longest first, until at least
    /// `max_bytes` are taken: a compaction's share when more is staged
    /// than one compaction should write. Oldest first, so the write-ahead
    /// segments keep being released.
    fn split_oldest(&mut self, max_bytes: usize) -> Staged {
        // Staged first, so also in the oldest segments (segments only grow).
        let mut order: Vec<(u64, usize, &Topic)> = self
            .topics
            .iter()
            .map(|(topic, t)| (t.order, t.bytes, topic))
            .collect();
        order.sort_unstable_by_key(|o| o.0);
        let mut chosen = Vec::new();
        let mut taken = 0;
        for (_, bytes, topic) in order {
            if taken >= max_bytes {
                break;
            }
            taken += bytes;
            chosen.push(topic.clone());
        }
        self.split(chosen.iter())
    }

    /// Takes `topics` (those of them staged), whole.
    fn split<'a>(&mut self, topics: impl Iterator<Item = &'a Topic>) -> Staged {
        let mut out = Staged {
            passes: 1,
            ..Staged::default()
        };
        for topic in topics {
            let Some(t) = self.topics.remove(topic) else {
                continue;
            };
            let first_segment = t.first_segment;
            out.bytes += t.bytes;
            out.first_segment = Some(
                out.first_segment
                    .map_or(first_segment, |f| f.min(first_segment)),
            );
            out.topics.insert(topic.clone(), t);
        }
        self.bytes -= out.bytes;
        self.first_segment = self.topics.values().map(|t| t.first_segment).min();
        if self.topics.is_empty() {
            self.passes = 0;
        }
        out
    }
}

/// What a compaction takes of what is staged.
#[derive(Debug, Clone, Copy)]
pub(super) enum Take<'a> {
    /// Everything, or whole topics, those staged longest first, of at
    /// least this many bytes when more is staged.
    Share(usize),
    /// These topics only (maintenance of a few topics need not wait for
    /// everything staged to be written).
    Topics(&'a [Topic]),
}

/// What is staged after an append.
#[derive(Debug, Clone, Copy)]
pub(super) struct StagedBytes {
    /// Envelope bytes staged since the last compaction began.
    pub waiting: usize,
    /// Topics among them.
    pub topics: usize,
    /// Envelope bytes the running compaction is writing.
    pub compacting: usize,
}

impl StagedBytes {
    /// Every staged byte, what the running compaction writes included:
    /// all of it is held in memory.
    pub fn in_memory(&self) -> usize {
        self.waiting + self.compacting
    }
}

#[derive(Default)]
struct State {
    current: Staged,
    compacting: Option<Arc<Staged>>,
}

impl State {
    fn bytes(&self) -> StagedBytes {
        StagedBytes {
            waiting: self.current.bytes,
            topics: self.current.topics.len(),
            compacting: self.compacting.as_ref().map_or(0, |c| c.bytes),
        }
    }
}

/// The staged messages: those appended since the last compaction began,
/// and those the running compaction is writing.
#[derive(Default)]
pub(super) struct Tail {
    state: Mutex<State>,
}

impl Tail {
    /// Stages an append stored in write-ahead segment `segment`; returns
    /// what is staged then.
    pub fn push(&self, segment: u64, entries: &[LogEntry]) -> StagedBytes {
        let mut s = self.state.lock();
        s.current.push(segment, entries);
        s.bytes()
    }

    /// Envelope bytes staged, those a running compaction writes included.
    pub fn staged(&self) -> usize {
        self.state.lock().bytes().in_memory()
    }

    /// Envelope bytes and topics staged since the last compaction began
    /// (what the next one would take).
    pub fn waiting(&self) -> (usize, usize) {
        let s = self.state.lock();
        (s.current.bytes, s.current.topics.len())
    }

    /// What the next compaction writes: the one that failed, if one did
    /// (then `true`), else what `take` asks for of what is staged (`None`
    /// when that is nothing).
    pub fn freeze(&self, take: Take<'_>) -> Option<(Arc<Staged>, bool)> {
        let mut s = self.state.lock();
        if let Some(c) = &s.compacting {
            return Some((c.clone(), true));
        }
        if s.current.is_empty() {
            return None;
        }
        let frozen = match take {
            Take::Share(max_bytes) if s.current.bytes > max_bytes => {
                s.current.split_oldest(max_bytes)
            }
            Take::Share(_) => std::mem::take(&mut s.current),
            Take::Topics(topics) => s.current.split(topics.iter()),
        };
        if frozen.is_empty() {
            return None;
        }
        let frozen = Arc::new(frozen);
        s.compacting = Some(frozen.clone());
        Some((frozen, false))
    }

    /// The frozen part is in runs now: readers find it there. Returns the
    /// first segment still holding a staged append, if any.
    pub fn release(&self) -> Option<u64> {
        let mut s = self.state.lock();
        s.compacting = None;
        s.current.first_segment
    }

    /// The first write-ahead segment holding a staged append, if any.
    pub fn first_segment(&self) -> Option<u64> {
        let s = self.state.lock();
        let frozen = s.compacting.as_ref().and_then(|c| c.first_segment);
        frozen.into_iter().chain(s.current.first_segment).min()
    }

    fn each<T>(&self, topic: &Topic, mut f: impl FnMut(&TopicTail) -> T) -> Vec<T> {
        let s = self.state.lock();
        let frozen = s.compacting.as_ref().and_then(|c| c.topics.get(topic));
        frozen
            .into_iter()
            .chain(s.current.topics.get(topic))
            .map(&mut f)
            .collect()
    }

    /// Whether any of `topic`'s messages are staged.
    pub fn holds(&self, topic: &Topic) -> bool {
        !self
            .each(topic, |t| t.messages.is_empty())
            .iter()
            .all(|&e| e)
    }

    /// `topic`'s staged messages with `seq >= from`, in seq order.
    pub fn messages(&self, topic: &Topic, from: u64) -> Vec<Arc<Message>> {
        let parts = self.each(topic, |t| {
            let at = t.messages.partition_point(|m| m.seq < from);
            t.messages[at..].to_vec()
        });
        let mut out: Vec<Arc<Message>> = parts.into_iter().flatten().collect();
        out.sort_by_key(|m| m.seq);
        out.dedup_by_key(|m| m.seq);
        out
    }

    /// The staged record for idempotency key `key` of `topic`.
    pub fn idempotency(&self, topic: &Topic, key: &str) -> Option<IdempotencyRecord> {
        self.each(topic, |t| {
            t.keys.iter().rev().find(|(k, _)| k == key).map(|(_, r)| *r)
        })
        .into_iter()
        .flatten()
        .last()
    }

    /// Staged keys of `topic` whose seq is in `from..=to`.
    pub fn idempotency_in(
        &self,
        topic: &Topic,
        from: u64,
        to: u64,
    ) -> Vec<(String, IdempotencyRecord)> {
        self.each(topic, |t| {
            t.keys
                .iter()
                .filter(|(_, r)| (from..=to).contains(&r.seq))
                .cloned()
                .collect::<Vec<_>>()
        })
        .into_iter()
        .flatten()
        .collect()
    }

    /// The last staged message of every staged topic.
    pub fn heads(&self) -> Vec<(Topic, TopicHead)> {
        let s = self.state.lock();
        let frozen = s.compacting.iter().flat_map(|c| c.topics.iter());
        frozen
            .chain(s.current.topics.iter())
            .filter_map(|(topic, t)| {
                let last = t.messages.last()?;
                Some((
                    topic.clone(),
                    TopicHead {
                        last_seq: last.seq,
                        last_ts: last.ts,
                    },
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(topic: &Topic, seq: u64, key: Option<&str>) -> LogEntry {
        LogEntry {
            message: Message::new(topic.clone(), seq, seq * 10, "1"),
            idempotency: key.map(|k| (k.to_string(), 1_000)),
        }
    }

    #[test]
    fn readers_see_frozen_and_current_parts_in_order_once() {
        let t = Topic::parse("t").unwrap();
        let tail = Tail::default();
        tail.push(3, &[entry(&t, 1, Some("a")), entry(&t, 2, None)]);
        let (frozen, retried) = tail.freeze(Take::Share(usize::MAX)).unwrap();
        assert!(!retried);
        assert_eq!((frozen.passes, frozen.first_segment), (1, Some(3)));
        tail.push(4, &[entry(&t, 4, None), entry(&t, 3, Some("b"))]);
        let seqs = |from| -> Vec<u64> { tail.messages(&t, from).iter().map(|m| m.seq).collect() };
        assert_eq!(seqs(1), vec![1, 2, 3, 4]);
        assert_eq!(seqs(3), vec![3, 4]);
        assert_eq!(tail.idempotency(&t, "a").unwrap().seq, 1);
        assert_eq!(tail.idempotency(&t, "b").unwrap().seq, 3);
        assert_eq!(tail.idempotency_in(&t, 2, 9).len(), 1);
        // A failed compaction is retried with the same part.
        let (again, retried) = tail.freeze(Take::Share(usize::MAX)).unwrap();
        assert!(retried && Arc::ptr_eq(&again, &frozen));
        assert_eq!(tail.release(), Some(4));
        assert_eq!(seqs(1), vec![3, 4]);
        assert_eq!(tail.heads()[0].1.last_seq, 4);
        assert!(tail.idempotency(&t, "a").is_none());
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn a_share_takes_whole_topics_staged_longest_first() {
        let topics: Vec<Topic> = ["a", "b", "c"]
            .iter()
            .map(|n| Topic::parse(n).unwrap())
            .collect();
        let tail = Tail::default();
        let entry = |t: &Topic, seq: u64| LogEntry {
            message: Message::new(t.clone(), seq, seq, "\"0123456789\""),
            idempotency: None,
        };
        // c first (segment 1), then a (2), then b (3), and more of c (4).
        tail.push(1, &[entry(&topics[2], 1)]);
        tail.push(2, &[entry(&topics[0], 1)]);
        tail.push(3, &[entry(&topics[1], 1)]);
        tail.push(4, &[entry(&topics[2], 2)]);
        let (one, _) = tail.freeze(Take::Share(1)).unwrap();
        let names: Vec<&str> = one.topics.keys().map(|t| t.as_str()).collect();
        assert_eq!(names, vec!["c"], "the topic staged longest, whole");
        assert_eq!(one.topics[&topics[2]].messages.len(), 2);
        assert_eq!(one.first_segment, Some(1));
        assert_eq!(
            tail.first_segment(),
            Some(1),
            "the frozen part still counts"
        );
        tail.release();
        assert_eq!(tail.first_segment(), Some(2), "a's segment is next");
        let (rest, _) = tail.freeze(Take::Share(usize::MAX)).unwrap();
        assert_eq!(rest.topics.len(), 2);
        tail.release();
        assert!(tail.freeze(Take::Share(1)).is_none());
    }

    #[test]
    fn what_waits_is_counted_apart_from_what_a_compaction_writes() {
        let tail = Tail::default();
        let entry = |t: &str, seq: u64| LogEntry {
            message: Message::new(Topic::parse(t).unwrap(), seq, seq, "\"0123456789\""),
            idempotency: None,
        };
        let one = tail.push(1, &[entry("a", 1), entry("b", 1)]);
        assert_eq!((one.topics, one.compacting), (2, 0));
        let bytes = one.waiting;
        assert!(bytes > 0);
        let (frozen, _) = tail.freeze(Take::Share(usize::MAX)).unwrap();
        assert_eq!(frozen.bytes, bytes);
        // Staged while the compaction runs: only this waits for the next.
        let two = tail.push(2, &[entry("a", 2)]);
        assert_eq!(two.topics, 1);
        assert_eq!(two.compacting, bytes);
        assert!(two.waiting < bytes);
        assert_eq!(tail.waiting(), (two.waiting, 1));
        assert_eq!(tail.staged(), bytes + two.waiting, "in memory: both");
        tail.release();
        assert_eq!(tail.waiting(), (two.waiting, 1));
        assert_eq!(tail.staged(), two.waiting);
    }

    #[test]
    fn maintenance_takes_only_the_topics_it_names() {
        let [a, b, c] = ["a", "b", "c"].map(|n| Topic::parse(n).unwrap());
        let tail = Tail::default();
        let entry = |t: &Topic, seq: u64| LogEntry {
            message: Message::new(t.clone(), seq, seq, "1"),
            idempotency: None,
        };
        tail.push(1, &[entry(&a, 1)]);
        tail.push(2, &[entry(&b, 1), entry(&b, 2)]);
        assert!(
            tail.freeze(Take::Topics(std::slice::from_ref(&c)))
                .is_none(),
            "c: none staged"
        );
        let (taken, retried) = tail.freeze(Take::Topics(&[b.clone(), c.clone()])).unwrap();
        assert!(!retried);
        assert_eq!(taken.topics.keys().collect::<Vec<_>>(), vec![&b]);
        assert_eq!(taken.topics[&b].messages.len(), 2);
        assert_eq!(taken.first_segment, Some(2));
        tail.release();
        assert!(tail.holds(&a) && !tail.holds(&b));
        assert_eq!(tail.first_segment(), Some(1), "a's segment still counts");
        assert_eq!(tail.waiting().1, 1);
    }
}
