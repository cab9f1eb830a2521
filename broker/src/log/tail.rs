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
mod tests;
