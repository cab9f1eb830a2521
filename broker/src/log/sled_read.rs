//! Reading a topic's runs back: by seq, backwards by time, and their size.
//! These see only what compaction wrote; [`super::sled_log`] merges the
//! staged tail in.

use std::sync::Arc;

use super::{
    keys::{message_key, message_prefix, seq_of_key},
    run::{decode_run, run_messages, RunMessage},
    sled_log::SledLog,
    LogError, TopicStats,
};
use herald_core::{Message, Topic};

impl SledLog {
    /// The checked messages of the run stored under `key`.
    pub(super) fn open_run<'a>(
        &self,
        topic: &Topic,
        key: &[u8],
        value: &'a [u8],
    ) -> Result<Vec<RunMessage<'a>>, LogError> {
        let last = seq_of_key(key)?;
        let record = || format!("messages of {topic} up to #{last}");
        let body = self.open_value(record, key, value)?;
        decode_run(last, body).map_err(|e| {
            self.damage.note_corrupt(&record());
            LogError::CorruptRecord {
                record: record(),
                reason: e.to_string(),
            }
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
        // Runs are stored under their last seq: the first key at or past
        // `from` is the run that holds it.
        let range = message_key(topic, from)..=message_key(topic, u64::MAX);
        for item in self.tree.range(range) {
            let (key, value) = item?;
            let run = self.open_run(topic, &key, &value)?;
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
            for m in run.iter().rev().filter(|m| m.seq <= to) {
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
        let range = message_key(topic, from)..=message_key(topic, u64::MAX);
        for item in self.tree.range(range) {
            let (key, value) = item?;
            for m in self.open_run(topic, &key, &value)? {
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
}
