//! [`MessageLog`] on sled 0.34.
//!
//! sled 0.34 is the stable line (1.0 is still alpha). Everything lives in
//! one tree so that a message and its idempotency key are written by one
//! atomic batch. Every value is sealed with a checksum of its key and body
//! ([`super::record`]); the table shows the bodies:
//!
//! | key                                  | body                                   |
//! |--------------------------------------|----------------------------------------|
//! | `m` topic `\0` last seq (u64 BE)     | where a run (consecutive messages, [`super::run`]) is in the run files ([`super::runs`]) |
//! | `h` topic                            | last seq ‖ last ts (u64 BE)            |
//! | `i` topic `\0` idempotency key       | seq ‖ ts ‖ expires_at                  |
//! | `d` topic `\0` from (u64 BE)         | to: seqs accepted as lost              |
//! | `x` name                             | small named values (cluster)           |
//!
//! An append writes one record to the write-ahead file ([`super::wal`]),
//! whatever topics it holds, and nothing to sled: sled's cost is per key
//! and grows with the bytes it copies per key. Its messages stay in memory
//! ([`super::tail`]) until compaction ([`super::compact`]) writes them as
//! one `m` run per topic, with their `i` records, in one batch.
//!
//! `h` records the head of what retention removed; a topic's head is the
//! latest of it, its last message key and its last lost range (see
//! [`super::heads`]).
//!
//! Topic names never contain `\0`, so a topic's keys form one contiguous
//! range. Big-endian seqs sort numerically.
//!
//! Durability: `sync` fdatasyncs the write-ahead file (and calls
//! `Db::flush` when a write went to sled directly, such as a cluster
//! record); a compaction makes its runs durable with `Db::flush` before it
//! deletes the write-ahead segments they came from. Without `sync`
//! (relaxed mode) the compaction thread syncs every `flush_every_ms` (at
//! most 500 ms), so a crash loses at most that window. A batch is applied atomically, so after any
//! crash a message is entirely present in runs (with its idempotency key)
//! or still in the write-ahead file, which start-up replays.
//!
//! Every call into sled runs inside [`contain`]: sled 0.34 panics on some
//! damaged pages, and that must become an error naming the data directory.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use parking_lot::Mutex;

use super::{
    compact::Compactor,
    contain::contain,
    damage::{Damage, LostRange},
    format,
    key_filter::KeyFilter,
    keys::{head_key, idempotency_key, u64_at},
    record,
    run::encode_pass,
    runs::RunFiles,
    wal::Wal,
    IdempotencyRecord, LogEntry, LogError, MessageLog, TopicStats, Trimmed,
};
use herald_core::{Message, Topic, TopicHead};

/// Options for opening the log.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled page cache size.
    pub cache_bytes: u64,
    /// Background flush interval (what relaxed durability relies on).
    pub flush_every_ms: u64,
}

/// The sled-backed log.
pub struct SledLog {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    /// Where the runs' bodies are.
    pub(super) runs: Arc<RunFiles>,
    dir: PathBuf,
    /// Lazily computed retained sizes, kept current by appends and trims.
    pub(super) stats: Mutex<HashMap<Topic, TopicStats>>,
    pub(super) damage: Arc<Damage>,
    /// Held by retention and by repairs, so that a repair never writes
    /// below what retention removed.
    trim_lock: Mutex<()>,
    /// Which idempotency keys may be stored (a new key needs no read).
    pub(super) keys: Arc<KeyFilter>,
    /// The staged tail and the thread that writes it as runs.
    pub(super) compactor: Arc<Compactor>,
    compact_thread: Option<JoinHandle<()>>,
    /// Something was written to sled outside compaction since the last sync.
    sled_dirty: AtomicBool,
    /// Held from taking `sled_dirty` to the end of its flush: a second
    /// caller (the writer and a cluster claim both sync) must not find the
    /// flag cleared and return while the first one's flush is still running.
    sled_flush: Mutex<()>,
    /// Damage the write-ahead file showed at open.
    wal_problems: Vec<String>,
    upgraded_from: Option<u8>,
    created: bool,
}

/// Writes `bytes` to `path` durably (temp file, fsync, rename, fsync dir).
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl SledLog {
    /// Opens (or creates) the log in `dir`, upgrading an older format in
    /// place. Damage sled cannot read past is an error naming the
    /// directory; whether the records inside are complete and intact is
    /// for [`super::integrity`] to check.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, LogError> {
        std::fs::create_dir_all(dir).map_err(|e| LogError::Open {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        })?;
        let config = sled::Config::new()
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(Some(options.flush_every_ms.max(1)));
        let runs = RunFiles::open(&dir.join("runs")).map_err(|e| LogError::Open {
            path: dir.join("runs"),
            reason: e.to_string(),
        })?;
        let runs = Arc::new(runs);
        let opened =
            contain(|| format::open(dir, config, &runs)).map_err(|panic| LogError::Open {
                path: dir.join("log"),
                reason: format!("the storage engine cannot read its files (damaged?): {panic}"),
            })??;
        let open_err = |e: &dyn std::fmt::Display| LogError::Open {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        };
        let keys = KeyFilter::filled_from(opened.tree.clone()).map_err(|e| open_err(&e))?;
        let damage = Arc::new(Damage::default());
        let (wal, replayed) = Wal::open(&dir.join("wal")).map_err(|e| LogError::Open {
            path: dir.join("wal"),
            reason: e.to_string(),
        })?;
        let compactor = Compactor::new(
            opened.db.clone(),
            opened.tree.clone(),
            wal,
            runs.clone(),
            damage.clone(),
            std::time::Duration::from_millis(options.flush_every_ms),
        );
        let wal_problems = contain(|| compactor.replay(replayed, &keys)).map_err(|panic| {
            open_err(&format!(
                "the storage engine failed while replaying the write-ahead file: {panic}"
            ))
        })??;
        let compact_thread = compactor.spawn().map_err(|e| open_err(&e))?;
        Ok(SledLog {
            db: opened.db,
            tree: opened.tree,
            runs,
            dir: dir.to_path_buf(),
            stats: Mutex::new(HashMap::new()),
            damage,
            trim_lock: Mutex::new(()),
            keys,
            compactor,
            compact_thread: Some(compact_thread),
            sled_dirty: AtomicBool::new(false),
            sled_flush: Mutex::new(()),
            wal_problems,
            upgraded_from: opened.upgraded_from,
            created: opened.created,
        })
    }

    /// The format this open upgraded the log from, if it did.
    pub fn upgraded_from(&self) -> Option<u8> {
        self.upgraded_from
    }

    /// Damage the write-ahead file showed at open (records that failed
    /// their check with intact ones after them).
    pub fn wal_problems(&self) -> &[String] {
        &self.wal_problems
    }

    /// The operator accepted the damage: the write-ahead segments read at
    /// open (their intact records are in runs) go.
    pub fn accept_wal_damage(&self) -> Result<(), LogError> {
        self.compactor.release_replayed()
    }

    /// Whether this open created the log.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(super) fn tree(&self) -> &sled::Tree {
        &self.tree
    }

    pub(super) fn runs(&self) -> &RunFiles {
        &self.runs
    }

    /// Makes the run bodies put so far durable (before their refs go to
    /// sled).
    pub(super) fn sync_runs(&self) -> Result<(), LogError> {
        self.runs.sync().map_err(|e| self.runs_failed(e))
    }

    /// A run file write failed: the node is degraded.
    pub(super) fn runs_failed(&self, e: std::io::Error) -> LogError {
        let reason = format!(
            "writing the run files in {} failed: {e}",
            self.dir.display()
        );
        self.damage.note_failure(reason.clone());
        LogError::Storage(reason)
    }

    /// Runs `f` against sled; a panic inside becomes a storage error and
    /// leaves the node degraded.
    pub(super) fn guard<T>(&self, f: impl FnOnce() -> Result<T, LogError>) -> Result<T, LogError> {
        contain(f).unwrap_or_else(|panic| {
            let reason = format!(
                "the storage engine failed on the log in {}: {panic}",
                self.dir.display()
            );
            self.damage.note_failure(reason.clone());
            Err(LogError::Storage(reason))
        })
    }

    /// The body of a stored value, or an error naming `record` (counted).
    pub(super) fn open_value<'a>(
        &self,
        record: impl FnOnce() -> String,
        key: &[u8],
        value: &'a [u8],
    ) -> Result<&'a [u8], LogError> {
        record::open(key, value).map_err(|e| {
            let record = record();
            self.damage.note_corrupt(&record);
            LogError::CorruptRecord {
                record,
                reason: e.to_string(),
            }
        })
    }

    /// Seeds the size cache (from the start-up scan).
    pub(super) fn seed_stats(&self, stats: impl IntoIterator<Item = (Topic, TopicStats)>) {
        self.stats.lock().extend(stats);
    }
}

impl Drop for SledLog {
    fn drop(&mut self) {
        // The thread compacts once more on its way out.
        self.compactor.stop();
        if let Some(thread) = self.compact_thread.take() {
            let _ = thread.join();
        }
    }
}

impl MessageLog for SledLog {
    fn append(&self, entries: &[LogEntry]) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        // With run files unwritable nothing staged could be compacted:
        // refuse rather than grow memory (the node is degraded already).
        if let Some(failed) = self.runs.broken() {
            return Err(LogError::Storage(failed));
        }
        // Keys are noted before they are stored (see [`KeyFilter`]).
        for entry in entries {
            if let Some((key, expires_at)) = &entry.idempotency {
                self.keys
                    .note(&idempotency_key(&entry.message.topic, key), *expires_at);
            }
        }
        let body = encode_pass(entries);
        // Staged under the stats lock, so a recount sees each message once.
        let behind = {
            let mut stats = self.stats.lock();
            let behind = self.compactor.append(&body, entries)?;
            for entry in entries {
                if let Some(s) = stats.get_mut(&entry.message.topic) {
                    s.first_seq.get_or_insert(entry.message.seq);
                    s.count += 1;
                    s.bytes += entry.message.envelope().len() as u64;
                }
            }
            behind
        };
        // Compaction fell behind: appends wait for it rather than memory
        // growing. The append itself is stored either way (its failure
        // marks the node degraded and the thread retries).
        if behind {
            if let Err(e) = self.compactor.compact_share() {
                tracing::error!(error = %e, "compaction failed; the staged messages stay in the write-ahead file");
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), LogError> {
        self.compactor.sync()?;
        let _flushing = self.sled_flush.lock();
        if self.sled_dirty.swap(false, Ordering::AcqRel) {
            let flushed = self.guard(|| {
                self.db.flush()?;
                Ok(())
            });
            if flushed.is_err() {
                // Still not durable: the next sync must try again.
                self.sled_dirty.store(true, Ordering::Release);
            }
            flushed?;
        }
        Ok(())
    }

    fn read(&self, topic: &Topic, from: u64, max: usize) -> Result<Vec<Arc<Message>>, LogError> {
        self.read_merged(topic, from, max)
    }

    fn first_seq_since_ts(
        &self,
        topic: &Topic,
        floor: u64,
        to: u64,
    ) -> Result<Option<u64>, LogError> {
        self.first_seq_since_ts_merged(topic, floor, to)
    }

    fn heads(&self) -> Result<Vec<(Topic, TopicHead)>, LogError> {
        self.heads_merged()
    }

    fn idempotency(&self, topic: &Topic, key: &str) -> Result<Option<IdempotencyRecord>, LogError> {
        self.idempotency_merged(topic, key)
    }

    fn idempotency_in(
        &self,
        topic: &Topic,
        from: u64,
        to: u64,
    ) -> Result<Vec<(String, IdempotencyRecord)>, LogError> {
        self.idempotency_in_merged(topic, from, to)
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), LogError> {
        let mut k = b"x".to_vec();
        k.extend_from_slice(key.as_bytes());
        let sealed = record::seal(&k, value);
        self.guard(|| {
            self.tree.insert(k, sealed)?;
            Ok(())
        })?;
        // After the write: a sync that saw the flag unset came before it.
        self.sled_dirty.store(true, Ordering::Release);
        Ok(())
    }

    fn scan_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let mut p = b"x".to_vec();
        p.extend_from_slice(prefix.as_bytes());
        self.guard(|| {
            let mut out = Vec::new();
            for item in self.tree.scan_prefix(&p) {
                let (key, value) = item?;
                let name = String::from_utf8_lossy(&key[1..]).into_owned();
                let body = self.open_value(|| format!("cluster record {name}"), &key, &value)?;
                out.push((name, body.to_vec()));
            }
            Ok(out)
        })
    }

    fn expire_idempotency(&self, now: u64) -> Result<u64, LogError> {
        self.guard(|| {
            let mut expired = 0;
            for item in self.tree.scan_prefix(b"i") {
                let (key, value) = item?;
                let record = self.open_value(
                    || format!("idempotency record {}", String::from_utf8_lossy(&key[1..])),
                    &key,
                    &value,
                )?;
                if u64_at(record, 16)? < now {
                    self.tree.remove(key)?;
                    expired += 1;
                }
            }
            // Every record expired before `now` is gone: so may its keys.
            self.keys.prune(now);
            Ok(expired)
        })
    }

    fn stats(&self, topic: &Topic) -> Result<TopicStats, LogError> {
        self.stats_merged(topic)
    }

    fn trim_front(
        &self,
        topic: &Topic,
        drop: &mut dyn FnMut(u64, u64, u64) -> bool,
    ) -> Result<Trimmed, LogError> {
        let _trimming = self.trim_lock.lock();
        // Retention removes from the front only: while the front message
        // stays there is nothing to do, and nothing to compact first (a
        // pass over every topic must not compact once per topic).
        let front = self
            .read_merged(topic, 0, 1)
            .ok()
            .and_then(|m| m.first().cloned());
        let asked = match front {
            Some(m) if !drop(m.seq, m.ts, m.envelope().len() as u64) => {
                return Ok(Trimmed::default())
            }
            Some(m) => Some(m.seq),
            None => None,
        };
        // Retention sees the staged messages too: the topic's go into runs
        // first.
        let _compacted = match self.compactor.tail.holds(topic) {
            true => Some(
                self.compactor
                    .compact_topics_and_hold(std::slice::from_ref(topic))?,
            ),
            false => None,
        };
        // `drop` already said yes to the front message.
        let mut drop_rest = |seq, ts, bytes| Some(seq) == asked || drop(seq, ts, bytes);
        let trimmed = self.guard(|| self.trim(topic, &mut drop_rest))?;
        if let Some(last) = trimmed.1 {
            // Seqs retention removed need no repair any more.
            self.damage.resolve(topic, 0, last);
        }
        Ok(trimmed.0)
    }

    fn replace(&self, entries: &[LogEntry]) -> Result<(), LogError> {
        // Only messages still stored: under the retention lock, so nothing
        // is written back below what retention removed meanwhile.
        let _trimming = self.trim_lock.lock();
        // With none of their topics staged, every stored message of theirs
        // is in a run.
        let mut topics: Vec<Topic> = entries.iter().map(|e| e.message.topic.clone()).collect();
        topics.sort_unstable();
        topics.dedup();
        let _compacted = self.compactor.compact_topics_and_hold(&topics)?;
        self.write_replacements(entries)?;
        self.sled_dirty.store(true, Ordering::Release);
        Ok(())
    }

    fn removed_through(&self, topic: &Topic) -> Result<Option<TopicHead>, LogError> {
        self.guard(|| {
            let key = head_key(topic);
            let Some(value) = self.tree.get(&key)? else {
                return Ok(None);
            };
            let body = self.open_value(|| format!("retention record of {topic}"), &key, &value)?;
            Ok(Some(TopicHead {
                last_seq: u64_at(body, 0)?,
                last_ts: u64_at(body, 8)?,
            }))
        })
    }

    fn remove_through(&self, topic: &Topic, head: TopicHead) -> Result<(), LogError> {
        let _trimming = self.trim_lock.lock();
        let _compacted = self
            .compactor
            .compact_topics_and_hold(std::slice::from_ref(topic))?;
        self.guard(|| self.write_removed(topic, head))?;
        self.sled_dirty.store(true, Ordering::Release);
        self.damage.resolve(topic, 0, head.last_seq);
        self.stats.lock().remove(topic);
        Ok(())
    }

    fn repair(&self, entries: &[LogEntry]) -> Result<usize, LogError> {
        let _trimming = self.trim_lock.lock();
        let written = self.guard(|| self.write_repairs(entries))?;
        for m in written.iter() {
            self.damage.resolve(&m.0, m.1, m.1);
        }
        if !written.is_empty() {
            self.stats.lock().clear();
        }
        Ok(written.len())
    }

    fn accept_lost(&self, ranges: &[LostRange]) -> Result<(), LogError> {
        self.write_lost(ranges)
    }

    fn damage(&self) -> &Damage {
        &self.damage
    }

    fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0) + self.runs.bytes()
    }

    fn staged_bytes(&self) -> u64 {
        self.compactor.tail.staged() as u64
    }
}

#[cfg(test)]
pub(super) mod tests;
