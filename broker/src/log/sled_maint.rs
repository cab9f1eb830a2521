//! The sled log's maintenance: retention's trims, repairs of damaged ranges
//! from a peer's copy, lost ranges the operator accepted, removal of
//! damaged records, and the size scans behind `stats`.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use super::{
    compact::{put_body, put_run},
    keys::{head_key, idempotency_key, lost_key, message_key, message_prefix, u64_at},
    record,
    run::encode_run,
    runs::RunRef,
    sled_log::SledLog,
    IdempotencyRecord, LogEntry, LogError, LostRange, Trimmed,
};
use herald_core::{Message, Topic, TopicHead};

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
            self.runs.note_garbage();
            self.db.flush()?;
            Ok(())
        })
    }

    /// Removes `topic`'s oldest messages while `drop` says so; returns what
    /// was removed and the last seq removed. A run partly removed keeps its
    /// body; its ref skips the messages removed.
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
        // A ref was removed in the batch not yet applied.
        let mut removed = false;
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
        // Not pinned past the removal: the stats lock below is also taken
        // before a pin (`stats`), and a deletion waiting between the two
        // would hold both up.
        let edits = self.runs.edit_refs();
        let pinned = self.runs.pin();
        'runs: for item in self.tree.scan_prefix(message_prefix(topic)) {
            let (key, value) = item?;
            let loaded = self.open_run(topic, &key, &value)?;
            let run = loaded.messages();
            let mut kept = run.len();
            for (i, m) in run.iter().enumerate() {
                let bytes = m.envelope.len() as u64;
                if !drop(m.seq, m.ts, bytes) {
                    kept = i;
                    break;
                }
                trimmed.messages += 1;
                trimmed.bytes += bytes;
                last = Some((m.seq, m.ts));
            }
            pending += 1;
            if kept < run.len() {
                if kept > 0 {
                    // The body stays; its ref skips what was removed.
                    let trimmed = RunRef {
                        skip: loaded.reference.skip + kept as u32,
                        ..loaded.reference
                    };
                    batch.insert(&*key, record::seal(&key, &trimmed.encode()));
                } else {
                    pending -= 1;
                }
                break 'runs;
            }
            batch.remove(key);
            removed = true;
            // Removing in batches keeps each tree update short.
            if pending == 256 {
                let (seq, ts) = last.expect("a run removed");
                self.tree
                    .apply_batch(with_head(std::mem::take(&mut batch), seq, ts))?;
                self.runs.note_garbage();
                pending = 0;
                removed = false;
            }
        }
        if let Some((seq, ts)) = last.filter(|_| pending > 0) {
            self.tree.apply_batch(with_head(batch, seq, ts))?;
            // A skip alone leaves the body named: collection counts a
            // run's whole body live.
            if removed {
                self.runs.note_garbage();
            }
        }
        std::mem::drop((pinned, edits));
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

    /// [`super::MessageLog::replace`], under the retention lock and with
    /// nothing of the entries' topics staged: the entries whose seqs are
    /// still stored take their place in their runs, and the replaced
    /// messages' idempotency keys go.
    pub(super) fn write_replacements(&self, entries: &[LogEntry]) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        // Runs rewritten so far, by key: later entries edit the same copy.
        let mut runs: BTreeMap<Vec<u8>, Vec<(u64, u64, Bytes)>> = BTreeMap::new();
        let mut present = Vec::with_capacity(entries.len());
        let pinned = self.runs.pin();
        let _writing = self.runs.writing();
        for entry in entries {
            let m = &entry.message;
            let holding = self.guard(|| {
                let range = message_key(&m.topic, m.seq)..=message_key(&m.topic, u64::MAX);
                Ok(self.tree.range(range).next().transpose()?)
            })?;
            let Some((key, value)) = holding else {
                continue;
            };
            if !runs.contains_key(&*key) {
                let run = self.open_run(&m.topic, &key, &value)?;
                let run = run
                    .messages()
                    .iter()
                    .map(|r| (r.seq, r.ts, Bytes::copy_from_slice(r.envelope)))
                    .collect();
                runs.insert(key.to_vec(), run);
            }
            let run = runs.get_mut(&*key).expect("inserted above");
            let Some(slot) = run.iter_mut().find(|r| r.0 == m.seq) else {
                continue;
            };
            *slot = (m.seq, m.ts, m.envelope().clone());
            present.push(entry);
        }
        for (key, run) in &runs {
            let body = encode_run(run.iter().map(|(_, ts, e)| (*ts, &e[..])));
            let last_ts = run.last().map_or(0, |m| m.1);
            put_body(
                &mut batch,
                &self.runs,
                key.clone(),
                &body,
                run.len(),
                last_ts,
            )
            .map_err(|e| self.runs_failed(e))?;
        }
        self.sync_runs()?;
        for entry in &present {
            let m = &entry.message;
            let new_key = entry.idempotency.as_ref().map(|(k, _)| k.as_str());
            // The keys of the replaced messages name nothing stored any more.
            for (key, _) in super::MessageLog::idempotency_in(self, &m.topic, m.seq, m.seq)? {
                if Some(key.as_str()) != new_key {
                    batch.remove(idempotency_key(&m.topic, &key));
                }
            }
            if let Some((name, expires_at)) = &entry.idempotency {
                let key = idempotency_key(&m.topic, name);
                self.keys.note(&key, *expires_at);
                let body = idempotency_body(m.seq, m.ts, *expires_at);
                batch.insert(key.clone(), record::seal(&key, &body));
            }
        }
        self.guard(|| Ok(self.tree.apply_batch(batch)?))?;
        // No pin while the stats lock is taken (see `trim`).
        drop(pinned);
        // Sizes changed under the cached stats: recount on the next read.
        let mut stats = self.stats.lock();
        for entry in &present {
            stats.remove(&entry.message.topic);
        }
        Ok(())
    }

    /// Writes the entries that fall in pending ranges above what retention
    /// removed, as runs, durably; returns `(topic, seq)` of each one written.
    pub(super) fn write_repairs(
        &self,
        entries: &[LogEntry],
    ) -> Result<Vec<(Topic, u64)>, LogError> {
        let mut floors: HashMap<&Topic, u64> = HashMap::new();
        let mut batch = sled::Batch::default();
        let mut written = Vec::new();
        let mut by_topic: BTreeMap<&Topic, Vec<&Message>> = BTreeMap::new();
        let _writing = self.runs.writing();
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
            by_topic.entry(&m.topic).or_default().push(m);
            if let Some((name, expires_at)) = &entry.idempotency {
                let key = idempotency_key(&m.topic, name);
                self.keys.note(&key, *expires_at);
                let body = idempotency_body(m.seq, m.ts, *expires_at);
                batch.insert(key.clone(), record::seal(&key, &body));
            }
            written.push((m.topic.clone(), m.seq));
        }
        for (topic, mut messages) in by_topic {
            messages.sort_by_key(|m| m.seq);
            messages.dedup_by_key(|m| m.seq);
            // One run per stretch of consecutive seqs.
            let mut from = 0;
            for i in 1..=messages.len() {
                if i == messages.len() || messages[i].seq != messages[i - 1].seq + 1 {
                    put_run(&mut batch, &self.runs, topic, &messages[from..i])
                        .map_err(|e| self.runs_failed(e))?;
                    from = i;
                }
            }
        }
        if !written.is_empty() {
            self.sync_runs()?;
            self.tree.apply_batch(batch)?;
            self.db.flush()?;
        }
        Ok(written)
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
