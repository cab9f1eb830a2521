//! Reading back: a topic's runs (by seq, backwards by time, their size),
//! and the reads [`super::MessageLog`] answers, which take the staged tail
//! first and the runs after (see [`super::tail`]).

use std::{collections::HashMap, sync::Arc};

use super::{
    heads,
    keys::{idempotency_key, message_key, message_prefix, seq_of_key},
    run::{run_messages, RunMessage},
    runs::{RunError, RunRef},
    sled_log::SledLog,
    IdempotencyRecord, LogError, TopicStats,
};
use herald_core::{Message, Topic, TopicHead};

/// A run read back and checked.
pub(super) struct LoadedRun {
    last: u64,
    /// Its ref, as stored.
    pub reference: RunRef,
    body: Vec<u8>,
}

impl LoadedRun {
    /// Its messages still in the log, in seq order.
    pub fn messages(&self) -> Vec<RunMessage<'_>> {
        let run = self.reference.messages(self.last, &self.body);
        run.expect("checked when it was loaded")
    }
}

impl SledLog {
    /// The checked run stored under `key` (its ref in sled, its body in a
    /// run file). Call with the run files pinned
    /// ([`super::runs::RunFiles::pin`]) since before `value` was read.
    pub(super) fn open_run(
        &self,
        topic: &Topic,
        key: &[u8],
        value: &[u8],
    ) -> Result<LoadedRun, LogError> {
        let last = seq_of_key(key)?;
        let record = || format!("messages of {topic} up to #{last}");
        let body = self.open_value(record, key, value)?;
        let failed = |reason: String| {
            self.damage.note_corrupt(&record());
            LogError::CorruptRecord {
                record: record(),
                reason,
            }
        };
        let reference = RunRef::decode(body).ok_or_else(|| failed("not a run reference".into()))?;
        let body = match self.runs.get(key, &reference) {
            Ok(body) => body,
            Err(RunError::Damaged(reason)) => return Err(failed(reason)),
            Err(RunError::Io(reason)) => {
                return Err(LogError::Storage(format!("reading {}: {reason}", record())))
            }
        };
        reference.messages(last, &body).map_err(failed)?;
        Ok(LoadedRun {
            last,
            reference,
            body,
        })
    }

    /// Up to `max` messages of `topic` in runs with `seq >= from`.
    pub(super) fn stored(
        &self,
        topic: &Topic,
        from: u64,
        max: usize,
    ) -> Result<Vec<Arc<Message>>, LogError> {
        let mut out = Vec::with_capacity(max.min(1024));
        let _pinned = self.runs.pin();
        // Runs are stored under their last seq: the first key at or past
        // `from` is the run that holds it.
        let range = message_key(topic, from)..=message_key(topic, u64::MAX);
        for item in self.tree.range(range) {
            let (key, value) = item?;
            let run = self.open_run(topic, &key, &value)?;
            let run = run.messages();
            let at = run.partition_point(|m| m.seq < from);
            let take = (max - out.len()).min(run.len() - at);
            out.extend(run_messages(topic, &run[at..at + take]));
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }

    /// Walks `topic`'s stored messages with `seq <= to` newest first while
    /// `keep(seq, ts)` says so.
    pub(super) fn stored_rev(
        &self,
        topic: &Topic,
        to: u64,
        keep: &mut dyn FnMut(u64, u64) -> bool,
    ) -> Result<(), LogError> {
        let _pinned = self.runs.pin();
        // The run holding `to` (stored at or past it), then the runs below.
        let holding = self
            .tree
            .range(message_key(topic, to)..=message_key(topic, u64::MAX))
            .next();
        let below = self
            .tree
            .range(message_prefix(topic)..message_key(topic, to))
            .rev();
        for item in holding.into_iter().chain(below) {
            let (key, value) = item?;
            let run = self.open_run(topic, &key, &value)?;
            for m in run.messages().iter().rev().filter(|m| m.seq <= to) {
                if !keep(m.seq, m.ts) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Size of `topic`'s runs holding seqs from `from` on, and the last seq
    /// seen. Sizes come from the run bodies; nothing here reaches a client.
    pub(super) fn scan_stats(
        &self,
        topic: &Topic,
        from: u64,
    ) -> Result<(TopicStats, u64), LogError> {
        let mut stats = TopicStats::default();
        let mut last = from.saturating_sub(1);
        let _pinned = self.runs.pin();
        let range = message_key(topic, from)..=message_key(topic, u64::MAX);
        for item in self.tree.range(range) {
            let (key, value) = item?;
            for m in self.open_run(topic, &key, &value)?.messages() {
                if m.seq >= from {
                    stats.first_seq.get_or_insert(m.seq);
                    stats.count += 1;
                    stats.bytes += m.envelope.len() as u64;
                    last = m.seq;
                }
            }
        }
        Ok((stats, last))
    }

    /// [`MessageLog::read`]: the staged tail merged with the runs.
    pub(super) fn read_merged(
        &self,
        topic: &Topic,
        from: u64,
        max: usize,
    ) -> Result<Vec<Arc<Message>>, LogError> {
        self.guard(|| {
            // The tail first: what compaction moves meanwhile is then in the
            // runs read next (module doc of [`super::tail`]).
            let staged = self.compactor.tail.messages(topic, from);
            let mut out = self.stored(topic, from, max)?;
            let last = out.last().map_or(0, |m| m.seq);
            if out.len() < max || staged.first().is_some_and(|m| m.seq < last) {
                out.extend(staged);
                out.sort_by_key(|m| m.seq);
                out.dedup_by_key(|m| m.seq);
                out.truncate(max);
            }
            // The page must not step over seqs still being repaired.
            let to = match out.last() {
                Some(last) if out.len() == max => last.seq,
                _ => u64::MAX,
            };
            self.damage.check_read(topic, from, to)?;
            Ok(out)
        })
    }

    /// [`MessageLog::first_seq_since_ts`] over the tail, then the runs.
    pub(super) fn first_seq_since_ts_merged(
        &self,
        topic: &Topic,
        floor: u64,
        to: u64,
    ) -> Result<Option<u64>, LogError> {
        self.guard(|| {
            let mut first = None;
            for m in self.compactor.tail.messages(topic, 0).iter().rev() {
                if m.seq > to {
                    continue;
                }
                if m.ts < floor {
                    return Ok(first);
                }
                first = Some(m.seq);
            }
            let below = first.map_or(to, |f: u64| f - 1);
            if below > 0 {
                self.stored_rev(topic, below, &mut |seq, ts| {
                    let keep = ts >= floor;
                    if keep {
                        first = Some(seq);
                    }
                    keep
                })?;
            }
            Ok(first)
        })
    }

    /// [`MessageLog::heads`]: the runs' heads, raised by the staged tail.
    pub(super) fn heads_merged(&self) -> Result<Vec<(Topic, TopicHead)>, LogError> {
        let staged = self.compactor.tail.heads();
        let mut heads: HashMap<Topic, TopicHead> = self
            .guard(|| heads::scan(&self.tree))?
            .into_iter()
            .collect();
        for (topic, head) in staged {
            let h = heads.entry(topic).or_default();
            if head.last_seq > h.last_seq {
                *h = head;
            }
        }
        Ok(heads.into_iter().collect())
    }

    /// [`MessageLog::idempotency`]: the filter, the tail, then sled.
    pub(super) fn idempotency_merged(
        &self,
        topic: &Topic,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, LogError> {
        let stored = idempotency_key(topic, key);
        if !self.keys.may_contain(&stored) {
            return Ok(None);
        }
        if let Some(record) = self.compactor.tail.idempotency(topic, key) {
            return Ok(Some(record));
        }
        let key = stored;
        self.guard(|| {
            let Some(value) = self.tree.get(&key)? else {
                return Ok(None);
            };
            Ok(Some(self.idempotency_record(topic, &key, &value)?))
        })
    }

    /// [`MessageLog::idempotency_in`]: the tail's keys and sled's.
    pub(super) fn idempotency_in_merged(
        &self,
        topic: &Topic,
        from: u64,
        to: u64,
    ) -> Result<Vec<(String, IdempotencyRecord)>, LogError> {
        let staged = self.compactor.tail.idempotency_in(topic, from, to);
        self.guard(|| {
            let prefix = idempotency_key(topic, "");
            let mut out = staged;
            for item in self.tree.scan_prefix(&prefix) {
                let (key, value) = item?;
                let record = self.idempotency_record(topic, &key, &value)?;
                if (from..=to).contains(&record.seq) {
                    let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                    if !out.iter().any(|(n, _)| *n == name) {
                        out.push((name, record));
                    }
                }
            }
            Ok(out)
        })
    }

    /// [`MessageLog::stats`], counted once and kept current by appends and trims.
    pub(super) fn stats_merged(&self, topic: &Topic) -> Result<TopicStats, LogError> {
        if let Some(s) = self.stats.lock().get(topic) {
            return Ok(*s);
        }
        // Scan without the lock (appends must not wait for a long topic),
        // then, under the lock (appends stage under it), add whatever was
        // appended meanwhile: appends only ever add seqs above those the
        // first scan saw. The tail before the runs, as readers do.
        let (mut s, last) = self.guard(|| self.scan_stats(topic, 0))?;
        let mut cache = self.stats.lock();
        if let Some(cached) = cache.get(topic) {
            return Ok(*cached);
        }
        let staged = self.compactor.tail.messages(topic, last + 1);
        let (more, last) = self.guard(|| self.scan_stats(topic, last + 1))?;
        let staged = staged.iter().filter(|m| m.seq > last);
        let more = staged.fold(more, |mut acc, m| {
            acc.first_seq.get_or_insert(m.seq);
            acc.count += 1;
            acc.bytes += m.envelope().len() as u64;
            acc
        });
        if s.first_seq.is_none() {
            s.first_seq = more.first_seq;
        }
        s.count += more.count;
        s.bytes += more.bytes;
        cache.insert(topic.clone(), s);
        Ok(s)
    }
}
