//! The sled log's maintenance: retention's trims, repairs of damaged ranges
//! from a peer's copy, lost ranges the operator accepted, removal of
//! damaged records, and the size scans behind `stats`.

use std::collections::HashMap;

use super::{
    keys::{head_key, idempotency_key, lost_key, message_key, message_prefix, seq_of_key, u64_at},
    record::{self, SEAL_LEN},
    sled_log::{entry_batch, SledLog},
    IdempotencyRecord, LogEntry, LogError, LostRange, TopicStats, Trimmed,
};
use herald_core::{Topic, TopicHead};

/// The body of an idempotency record.
pub(super) fn idempotency_body(seq: u64, ts: u64, expires_at: u64) -> [u8; 24] {
    let mut body = [0u8; 24];
    body[..8].copy_from_slice(&seq.to_be_bytes());
    body[8..16].copy_from_slice(&ts.to_be_bytes());
    body[16..].copy_from_slice(&expires_at.to_be_bytes());
    body
}

impl SledLog {
    /// Removes records by key (damaged ones, before they are accepted as
    /// lost or repaired) and makes that durable.
    pub(super) fn remove_keys(&self, keys: &[Vec<u8>]) -> Result<(), LogError> {
        self.guard(|| {
            let mut batch = sled::Batch::default();
            for key in keys {
                batch.remove(key.as_slice());
            }
            self.tree.apply_batch(batch)?;
            self.db.flush()?;
            Ok(())
        })
    }

    /// Removes `topic`'s oldest messages while `drop` says so; returns what
    /// was removed and the last seq removed.
    pub(super) fn trim(
        &self,
        topic: &Topic,
        drop: &mut dyn FnMut(u64, u64, u64) -> bool,
    ) -> Result<(Trimmed, Option<u64>), LogError> {
        let mut trimmed = Trimmed::default();
        // (seq, ts) of the last message removed.
        let mut last = None;
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        // Each batch records the head of what it removes, so that whenever
        // it removes a topic's last message the head survives (module doc).
        let with_head = |mut batch: sled::Batch, seq: u64, ts: u64| {
            let mut body = [0u8; 16];
            body[..8].copy_from_slice(&seq.to_be_bytes());
            body[8..].copy_from_slice(&ts.to_be_bytes());
            let key = head_key(topic);
            let value = record::seal(&key, &body);
            batch.insert(key, value);
            batch
        };
        for item in self.tree.scan_prefix(message_prefix(topic)) {
            let (key, value) = item?;
            let seq = seq_of_key(&key)?;
            let body = self.open_value(|| format!("message {topic}#{seq}"), &key, &value)?;
            let ts = u64_at(body, 0)?;
            let bytes = body.len().saturating_sub(8) as u64;
            if !drop(seq, ts, bytes) {
                break;
            }
            batch.remove(key);
            pending += 1;
            trimmed.messages += 1;
            trimmed.bytes += bytes;
            last = Some((seq, ts));
            // Removing in batches keeps each tree update short.
            if pending == 1024 {
                self.tree
                    .apply_batch(with_head(std::mem::take(&mut batch), seq, ts))?;
                pending = 0;
            }
        }
        if let Some((seq, ts)) = last.filter(|_| pending > 0) {
            self.tree.apply_batch(with_head(batch, seq, ts))?;
        }
        if let Some((seq, _)) = last {
            let mut stats = self.stats.lock();
            if let Some(s) = stats.get_mut(topic) {
                s.count = s.count.saturating_sub(trimmed.messages);
                s.bytes = s.bytes.saturating_sub(trimmed.bytes);
                s.first_seq = (s.count > 0).then_some(seq + 1);
            }
        }
        Ok((trimmed, last.map(|(seq, _)| seq)))
    }

    /// [`super::MessageLog::remove_through`]: trims the topic up to `head`
    /// and records `head` as the head of what retention removed.
    pub(super) fn write_removed(&self, topic: &Topic, head: TopicHead) -> Result<(), LogError> {
        // Trimmed first (each of its batches records the head it reached),
        // then the head moves on to `head`: a crash between leaves a lower
        // head, which the next skip moves again.
        self.trim(topic, &mut |seq, _, _| seq <= head.last_seq)?;
        let mut body = [0u8; 16];
        body[..8].copy_from_slice(&head.last_seq.to_be_bytes());
        body[8..].copy_from_slice(&head.last_ts.to_be_bytes());
        let key = head_key(topic);
        let recorded = match self.tree.get(&key)? {
            Some(value) => u64_at(
                self.open_value(|| format!("retention record of {topic}"), &key, &value)?,
                0,
            )?,
            None => 0,
        };
        if recorded < head.last_seq {
            let value = record::seal(&key, &body);
            self.tree.insert(key, value)?;
        }
        Ok(())
    }

    /// [`super::MessageLog::replace`], under the retention lock: the
    /// entries whose seqs are still stored take their place, and the
    /// replaced messages' idempotency keys go.
    pub(super) fn write_replacements(&self, entries: &[LogEntry]) -> Result<(), LogError> {
        let mut present = Vec::with_capacity(entries.len());
        for entry in entries {
            let m = &entry.message;
            if self.guard(|| Ok(self.tree.contains_key(message_key(&m.topic, m.seq))?))? {
                present.push(entry.clone());
            }
        }
        let entries = &present[..];
        let mut batch = entry_batch(entries, &self.keys);
        // The keys of the replaced messages name nothing stored any more.
        for entry in entries {
            let m = &entry.message;
            let new_key = entry.idempotency.as_ref().map(|(k, _)| k.as_str());
            for (key, _) in super::MessageLog::idempotency_in(self, &m.topic, m.seq, m.seq)? {
                if Some(key.as_str()) != new_key {
                    batch.remove(idempotency_key(&m.topic, &key));
                }
            }
        }
        self.guard(|| Ok(self.tree.apply_batch(batch)?))?;
        // Sizes changed under the cached stats: recount on the next read.
        let mut stats = self.stats.lock();
        for entry in entries {
            stats.remove(&entry.message.topic);
        }
        Ok(())
    }

    /// Writes the entries that fall in pending ranges above what retention
    /// removed, durably; returns `(topic, seq)` of each one written.
    pub(super) fn write_repairs(
        &self,
        entries: &[LogEntry],
    ) -> Result<Vec<(Topic, u64)>, LogError> {
        let mut floors: HashMap<&Topic, u64> = HashMap::new();
        let mut batch = sled::Batch::default();
        let mut written = Vec::new();
        for entry in entries {
            let m = &entry.message;
            if !self.damage.is_pending(&m.topic, m.seq) {
                continue;
            }
            let floor = match floors.get(&m.topic) {
                Some(f) => *f,
                None => {
                    let key = head_key(&m.topic);
                    let f = match self.tree.get(&key)? {
                        Some(v) => {
                            let body = self.open_value(
                                || format!("retention record of {}", m.topic),
                                &key,
                                &v,
                            )?;
                            u64_at(body, 0)?
                        }
                        None => 0,
                    };
                    *floors.entry(&m.topic).or_insert(f)
                }
            };
            if m.seq <= floor {
                continue;
            }
            let key = message_key(&m.topic, m.seq);
            batch.insert(key.clone(), record::seal_message(&key, m.ts, m.envelope()));
            if let Some((name, expires_at)) = &entry.idempotency {
                let key = idempotency_key(&m.topic, name);
                self.keys.note(&key, *expires_at);
                let body = idempotency_body(m.seq, m.ts, *expires_at);
                batch.insert(key.clone(), record::seal(&key, &body));
            }
            written.push((m.topic.clone(), m.seq));
        }
        if !written.is_empty() {
            self.tree.apply_batch(batch)?;
            self.db.flush()?;
        }
        Ok(written)
    }

    /// Size of `topic` from seq `from` on, and the last seq seen. Sizes
    /// come from value lengths alone; nothing here reaches a client.
    pub(super) fn scan_stats(
        &self,
        topic: &Topic,
        from: u64,
    ) -> Result<(TopicStats, u64), LogError> {
        let mut stats = TopicStats::default();
        let mut last = from.saturating_sub(1);
        for item in self
            .tree
            .range(message_key(topic, from)..=message_key(topic, u64::MAX))
        {
            let (key, value) = item?;
            let seq = seq_of_key(&key)?;
            stats.first_seq.get_or_insert(seq);
            stats.count += 1;
            stats.bytes += value.len().saturating_sub(8 + SEAL_LEN) as u64;
            last = seq;
        }
        Ok((stats, last))
    }

    pub(super) fn idempotency_record(
        &self,
        topic: &Topic,
        key: &[u8],
        value: &[u8],
    ) -> Result<IdempotencyRecord, LogError> {
        let body = self.open_value(|| format!("an idempotency key of {topic}"), key, value)?;
        Ok(IdempotencyRecord {
            seq: u64_at(body, 0)?,
            ts: u64_at(body, 8)?,
            expires_at: u64_at(body, 16)?,
        })
    }

    /// [`super::MessageLog::accept_lost`]: `d` records, durable, then known
    /// to the damage registry.
    pub(super) fn write_lost(&self, ranges: &[LostRange]) -> Result<(), LogError> {
        self.guard(|| {
            let mut batch = sled::Batch::default();
            for r in ranges {
                let key = lost_key(&r.topic, r.from);
                batch.insert(key.clone(), record::seal(&key, &r.to.to_be_bytes()));
            }
            self.tree.apply_batch(batch)?;
            self.db.flush()?;
            Ok(())
        })?;
        for r in ranges {
            self.damage.add_accepted(&r.topic, r.from, r.to);
        }
        self.stats.lock().clear();
        Ok(())
    }
}
