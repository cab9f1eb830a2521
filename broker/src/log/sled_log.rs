//! [`MessageLog`] on sled 0.34.
//!
//! sled 0.34 is the stable line (1.0 is still alpha). Everything lives in
//! one tree so that a message and its idempotency key are written by one
//! atomic batch:
//!
//! | key                                  | value                        |
//! |--------------------------------------|------------------------------|
//! | `m` topic `\0` seq (u64 BE)          | ts (u64 BE) ‖ envelope JSON  |
//! | `h` topic                            | last seq ‖ last ts (u64 BE)  |
//! | `i` topic `\0` idempotency key       | seq ‖ ts ‖ expires_at        |
//! | `x` name                             | small named values (cluster) |
//!
//! `h` records the head of what retention removed; a topic's head is the
//! later of it and its last message key (see [`super::heads`]).
//!
//! Topic names never contain `\0`, so a topic's keys form one contiguous
//! range. Big-endian seqs sort numerically.
//!
//! Durability: `sync` calls `Db::flush`, which writes sled's IO buffers and
//! fsyncs; sled documents that every write before a successful flush is
//! recovered after a crash. Without `sync` (relaxed mode) sled's background
//! flusher writes every `flush_every_ms`, so a crash loses at most that
//! window. A batch is applied atomically, so after any crash a message is
//! either entirely present (with its idempotency key) or absent.

use std::{collections::HashMap, path::Path, sync::Arc};

use bytes::Bytes;
use parking_lot::Mutex;

use super::{
    heads,
    keys::{head_key, idempotency_key, message_key, message_prefix, seq_of_key, u64_at},
    IdempotencyRecord, LogEntry, LogError, MessageLog, TopicStats, Trimmed,
};
use crate::hub::{Message, Topic, TopicHead};

const FORMAT_KEY: &[u8] = b"format";
/// File beside the sled directory saying Herald created it.
const MARKER_FILE: &str = "herald-log.format";
/// Format 2 derives heads from message keys instead of writing a head
/// record per append. A format-1 log is upgraded in place on open (its head
/// records stay valid); the new name makes an older Herald, which would read
/// stale heads and reuse seqs, refuse the upgraded log.
const FORMAT: &[u8] = b"herald-log-2";
const FORMAT_1: &[u8] = b"herald-log-1";

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
    db: sled::Db,
    tree: sled::Tree,
    /// Lazily computed retained sizes, kept current by appends and trims.
    stats: Mutex<HashMap<Topic, TopicStats>>,
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
    /// Opens (or creates) the log in `dir`.
    pub fn open(dir: &Path, options: &SledOptions) -> Result<Self, LogError> {
        let open_err = |reason: String| LogError::Open {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        // sled silently replaces files it cannot make sense of, so refuse a
        // log directory this node did not create before sled sees it.
        let marker = dir.join(MARKER_FILE);
        let log_dir = dir.join("log");
        let has_files = std::fs::read_dir(&log_dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if has_files && !marker.exists() {
            return Err(open_err(format!(
                "{} holds data Herald did not write ({} is missing); refusing to touch it",
                log_dir.display(),
                MARKER_FILE
            )));
        }
        let db = sled::Config::new()
            .path(dir.join("log"))
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(Some(options.flush_every_ms.max(1)))
            .open()
            .map_err(|e| open_err(e.to_string()))?;
        // The format inside the log, then the marker beside it, both durable.
        let stamp = || -> Result<(), LogError> {
            db.insert(FORMAT_KEY, FORMAT)
                .map_err(|e| open_err(e.to_string()))?;
            db.flush().map_err(|e| open_err(e.to_string()))?;
            write_synced(&marker, FORMAT).map_err(|e| open_err(e.to_string()))
        };
        match db.get(FORMAT_KEY).map_err(|e| open_err(e.to_string()))? {
            Some(v) if v == FORMAT => {}
            Some(v) if v == FORMAT_1 => {
                stamp()?;
                tracing::info!(path = %dir.display(), "log upgraded from format 1 to 2");
            }
            Some(v) => {
                return Err(open_err(format!(
                    "unrecognised log format {:?}; refusing to touch it",
                    String::from_utf8_lossy(&v)
                )))
            }
            None if db.was_recovered() || marker.exists() => {
                return Err(open_err(
                    "existing data is not a Herald log or is corrupt (no format marker); move it away to start empty"
                        .into(),
                ))
            }
            None => stamp()?,
        }
        let tree = db.open_tree("log").map_err(|e| open_err(e.to_string()))?;
        Ok(SledLog {
            db,
            tree,
            stats: Mutex::new(HashMap::new()),
        })
    }

    fn decode(topic: &Topic, key: &[u8], value: &[u8]) -> Result<Arc<Message>, LogError> {
        let seq = seq_of_key(key)?;
        let ts = u64_at(value, 0)?;
        Ok(Arc::new(Message::from_envelope(
            topic.clone(),
            seq,
            ts,
            Bytes::copy_from_slice(&value[8..]),
        )))
    }

    /// Size of `topic` from seq `from` on, and the last seq seen.
    fn scan_stats(&self, topic: &Topic, from: u64) -> Result<(TopicStats, u64), LogError> {
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
            stats.bytes += value.len().saturating_sub(8) as u64;
            last = seq;
        }
        Ok((stats, last))
    }
}

impl MessageLog for SledLog {
    fn append(&self, entries: &[LogEntry]) -> Result<(), LogError> {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let m = &entry.message;
            let mut value = Vec::with_capacity(8 + m.envelope().len());
            value.extend_from_slice(&m.ts.to_be_bytes());
            value.extend_from_slice(m.envelope());
            batch.insert(message_key(&m.topic, m.seq), value);
            if let Some((key, expires_at)) = &entry.idempotency {
                let mut value = Vec::with_capacity(24);
                value.extend_from_slice(&m.seq.to_be_bytes());
                value.extend_from_slice(&m.ts.to_be_bytes());
                value.extend_from_slice(&expires_at.to_be_bytes());
                batch.insert(idempotency_key(&m.topic, key), value);
            }
        }
        self.tree.apply_batch(batch)?;
        let mut stats = self.stats.lock();
        for entry in entries {
            if let Some(s) = stats.get_mut(&entry.message.topic) {
                s.first_seq.get_or_insert(entry.message.seq);
                s.count += 1;
                s.bytes += entry.message.envelope().len() as u64;
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), LogError> {
        self.db.flush()?;
        Ok(())
    }

    fn read(&self, topic: &Topic, from: u64, max: usize) -> Result<Vec<Arc<Message>>, LogError> {
        let mut out = Vec::with_capacity(max.min(1024));
        let range = message_key(topic, from)..=message_key(topic, u64::MAX);
        for item in self.tree.range(range).take(max) {
            let (key, value) = item?;
            out.push(Self::decode(topic, &key, &value)?);
        }
        Ok(out)
    }

    fn first_seq_since_ts(
        &self,
        topic: &Topic,
        floor: u64,
        to: u64,
    ) -> Result<Option<u64>, LogError> {
        let mut first = None;
        for item in self
            .tree
            .range(message_key(topic, 0)..=message_key(topic, to))
            .rev()
        {
            let (key, value) = item?;
            if u64_at(&value, 0)? < floor {
                break;
            }
            first = Some(seq_of_key(&key)?);
        }
        Ok(first)
    }

    fn heads(&self) -> Result<Vec<(Topic, TopicHead)>, LogError> {
        heads::scan(&self.tree)
    }

    fn idempotency(&self, topic: &Topic, key: &str) -> Result<Option<IdempotencyRecord>, LogError> {
        let Some(value) = self.tree.get(idempotency_key(topic, key))? else {
            return Ok(None);
        };
        Ok(Some(IdempotencyRecord {
            seq: u64_at(&value, 0)?,
            ts: u64_at(&value, 8)?,
            expires_at: u64_at(&value, 16)?,
        }))
    }

    fn idempotency_in(
        &self,
        topic: &Topic,
        from: u64,
        to: u64,
    ) -> Result<Vec<(String, IdempotencyRecord)>, LogError> {
        let prefix = idempotency_key(topic, "");
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (key, value) = item?;
            let seq = u64_at(&value, 0)?;
            if (from..=to).contains(&seq) {
                let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                out.push((
                    name,
                    IdempotencyRecord {
                        seq,
                        ts: u64_at(&value, 8)?,
                        expires_at: u64_at(&value, 16)?,
                    },
                ));
            }
        }
        Ok(out)
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), LogError> {
        let mut k = b"x".to_vec();
        k.extend_from_slice(key.as_bytes());
        self.tree.insert(k, value)?;
        Ok(())
    }

    fn scan_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError> {
        let mut p = b"x".to_vec();
        p.extend_from_slice(prefix.as_bytes());
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&p) {
            let (key, value) = item?;
            out.push((
                String::from_utf8_lossy(&key[1..]).into_owned(),
                value.to_vec(),
            ));
        }
        Ok(out)
    }

    fn expire_idempotency(&self, now: u64) -> Result<u64, LogError> {
        let mut expired = 0;
        for item in self.tree.scan_prefix(b"i") {
            let (key, value) = item?;
            if u64_at(&value, 16)? < now {
                self.tree.remove(key)?;
                expired += 1;
            }
        }
        Ok(expired)
    }

    fn stats(&self, topic: &Topic) -> Result<TopicStats, LogError> {
        if let Some(s) = self.stats.lock().get(topic) {
            return Ok(*s);
        }
        // Scan without the lock (appends must not wait for a long topic),
        // then, under the lock, add whatever was appended meanwhile: appends
        // only ever add seqs above those the first scan saw.
        let (mut s, last) = self.scan_stats(topic, 0)?;
        let mut cache = self.stats.lock();
        if let Some(cached) = cache.get(topic) {
            return Ok(*cached);
        }
        let (more, _) = self.scan_stats(topic, last + 1)?;
        if s.first_seq.is_none() {
            s.first_seq = more.first_seq;
        }
        s.count += more.count;
        s.bytes += more.bytes;
        cache.insert(topic.clone(), s);
        Ok(s)
    }

    fn trim_front(
        &self,
        topic: &Topic,
        drop: &mut dyn FnMut(u64, u64, u64) -> bool,
    ) -> Result<Trimmed, LogError> {
        let mut trimmed = Trimmed::default();
        // (seq, ts) of the last message removed.
        let mut last = None;
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        // Each batch records the head of what it removes, so that whenever
        // it removes a topic's last message the head survives (module doc).
        let with_head = |mut batch: sled::Batch, seq: u64, ts: u64| {
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&seq.to_be_bytes());
            value[8..].copy_from_slice(&ts.to_be_bytes());
            batch.insert(head_key(topic), &value[..]);
            batch
        };
        for item in self.tree.scan_prefix(message_prefix(topic)) {
            let (key, value) = item?;
            let seq = seq_of_key(&key)?;
            let ts = u64_at(&value, 0)?;
            let bytes = value.len().saturating_sub(8) as u64;
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
        Ok(trimmed)
    }

    fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

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
}
