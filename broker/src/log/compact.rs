//! Compaction: staged appends become runs.
//!
//! An append writes one record to the write-ahead file ([`super::wal`]),
//! whatever topics it touched: the only write a publish waits for. Every
//! [`INTERVAL`], or once [`SOON_BYTES`] wait for it, this thread writes what
//! is staged (a share of at most [`SHARE_BYTES`] of whole topics, those
//! staged longest first, then the next share at once while enough still
//! waits) as one run per topic (and the idempotency records) in sled
//! batches, makes it durable, and deletes the write-ahead segments it no
//! longer needs. Start-up replays what the segments hold and the runs do
//! not ([`Compactor::replay`]).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use parking_lot::{Condvar, Mutex};

use super::{
    contain::contain,
    damage::Damage,
    key_filter::KeyFilter,
    keys::{head_key, idempotency_key, message_prefix, message_prefix_end, seq_of_key, u64_at},
    record,
    run::{decode_pass, RUN_BYTES},
    runs::RunFiles,
    tail::{Staged, Tail, Take},
    wal::{Replayed, Wal},
    LogEntry, LogError,
};
use herald_core::Topic;

mod batches;
mod collect;

use batches::runs_batches;
pub(super) use batches::{put_body, put_run};

/// How often the thread compacts (a share) when nothing wakes it sooner.
/// sled's cost is per key, and every topic that saw a message since the
/// last compaction is a key: a short interval makes light traffic over many
/// topics cost a key per message or two.
pub(super) const INTERVAL: Duration = Duration::from_secs(3);
/// The longest `log.flush_interval` honoured: how long `relaxed` appends
/// may wait for their sync.
const MAX_SYNC_EVERY: Duration = Duration::from_millis(500);
/// Staged bytes that start a compaction before its time. sled's cost is
/// per key, so a compaction should find several messages per topic: small
/// messages over many topics wait for the interval (or this much)...
pub(super) const SOON_BYTES: usize = 32 << 20;
/// ...while from this much on, a compaction starts as soon as its runs
/// would be full ([`RUN_BYTES`] per topic on average): waiting longer
/// saves no key and holds more memory.
pub(super) const EARLY_BYTES: usize = 1 << 20;
/// Staged bytes at which an append compacts (a share) itself before
/// returning, so a compaction that falls behind slows appends instead of
/// growing memory.
pub(super) const MAX_BYTES: usize = 96 << 20;
/// What one compaction writes at most when more is staged (whole topics,
/// staged longest first): a share's time bounds how long an append that
/// found compaction behind waits.
pub(super) const SHARE_BYTES: usize = 16 << 20;

/// How often compaction also collects the run files' garbage.
const COLLECT_EVERY: Duration = Duration::from_secs(30);

/// Whether `bytes` staged over `topics` topics and waiting for a
/// compaction (not counting what the running one writes) should start one
/// before its time. Counting only what waits matters: what is staged while
/// a compaction runs would otherwise start the next one at once, every
/// compaction would find a few messages per topic, and sled would be
/// written one key per few messages.
fn due(bytes: usize, topics: usize) -> bool {
    bytes >= SOON_BYTES || (bytes >= EARLY_BYTES && bytes >= topics * RUN_BYTES)
}

/// The last seq `tree` stores for `topic` (in runs, or removed by
/// retention), reading keys and intact retention records only: replay must
/// not fail on damage the start-up check is there to report.
fn stored_head(tree: &sled::Tree, topic: &Topic) -> Result<u64, LogError> {
    let range = message_prefix(topic)..message_prefix_end(topic);
    let last = match tree.range(range).next_back() {
        Some(item) => seq_of_key(&item?.0)?,
        None => 0,
    };
    let key = head_key(topic);
    let removed = match tree.get(&key)? {
        Some(v) => record::open(&key, &v)
            .ok()
            .and_then(|b| u64_at(b, 0).ok())
            .unwrap_or(0),
        None => 0,
    };
    Ok(last.max(removed))
}

/// The staged messages, and the thread that writes them as runs.
pub(super) struct Compactor {
    db: sled::Db,
    tree: sled::Tree,
    wal: Wal,
    runs: Arc<RunFiles>,
    /// What appends staged.
    pub tail: Tail,
    damage: Arc<Damage>,
    /// One compaction at a time; maintenance holds it while the topics it
    /// touches have nothing staged.
    running: Mutex<()>,
    /// Held from an append's write-ahead record until its messages are
    /// staged, so a compaction never sees a record that is in neither.
    staging: Mutex<()>,
    wake: Condvar,
    wake_lock: Mutex<bool>,
    stop: AtomicBool,
    /// How often `relaxed` appends are synced (`log.flush_interval`).
    sync_every: Duration,
    /// When the thread's periodic sync last ran.
    synced: Mutex<Instant>,
}

impl Compactor {
    /// A compactor for `tree` (its thread is started by [`Compactor::spawn`]).
    pub fn new(
        db: sled::Db,
        tree: sled::Tree,
        wal: Wal,
        runs: Arc<RunFiles>,
        damage: Arc<Damage>,
        sync_every: Duration,
    ) -> Arc<Self> {
        Arc::new(Compactor {
            db,
            tree,
            wal,
            runs,
            tail: Tail::default(),
            damage,
            running: Mutex::new(()),
            staging: Mutex::new(()),
            wake: Condvar::new(),
            wake_lock: Mutex::new(false),
            stop: AtomicBool::new(false),
            sync_every: sync_every.clamp(Duration::from_millis(1), MAX_SYNC_EVERY),
            synced: Mutex::new(Instant::now()),
        })
    }

    /// Stores an append: its write-ahead record, then its messages staged;
    /// starts a compaction when enough is staged. Returns whether
    /// compaction fell behind: the caller then compacts before it returns
    /// (outside its own locks). Durable at the next [`Compactor::sync`].
    pub fn append(&self, body: &[u8], entries: &[LogEntry]) -> Result<bool, LogError> {
        let staged = {
            let _staging = self.staging.lock();
            let segment = self
                .wal
                .append(body)
                .map_err(|e| self.io_failed("append", e))?;
            self.tail.push(segment, entries)
        };
        if due(staged.waiting, staged.topics) {
            self.wake();
        }
        Ok(staged.in_memory() >= MAX_BYTES)
    }

    /// Makes every earlier append durable.
    pub fn sync(&self) -> Result<(), LogError> {
        self.wal.sync().map_err(|e| self.io_failed("sync", e))
    }

    /// The periodic sync `relaxed` appends rely on (durable within
    /// `sync_every`): from the thread's loop, and between the sled batches
    /// of a compaction, which at many topics can take longer than that.
    pub(super) fn sync_if_due(&self) {
        {
            let mut synced = self.synced.lock();
            if synced.elapsed() < self.sync_every {
                return;
            }
            *synced = Instant::now();
        }
        if self.wal.failed() {
            // Reported once, when it failed; the node is degraded.
            return;
        }
        if let Err(e) = self.sync() {
            tracing::error!(error = %e, "syncing the write-ahead file failed");
        }
    }

    fn io_failed(&self, what: &str, e: std::io::Error) -> LogError {
        let reason = format!("the write-ahead file failed to {what}: {e}");
        self.damage.note_failure(reason.clone());
        LogError::Storage(reason)
    }

    fn runs_failed(&self, e: std::io::Error) -> LogError {
        let reason = format!("writing the run files failed: {e}");
        self.damage.note_failure(reason.clone());
        LogError::Storage(reason)
    }

    /// Starts the thread that compacts every [`INTERVAL`] or when woken.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let this = self.clone();
        std::thread::Builder::new()
            .name("herald-compact".into())
            .spawn(move || {
                let mut compacted = Instant::now();
                let mut collected = Instant::now();
                loop {
                    let next_sync = this.sync_every.saturating_sub(this.synced.lock().elapsed());
                    let woken = {
                        let mut woken = this.wake_lock.lock();
                        if !*woken && !this.stop.load(Ordering::Acquire) {
                            let wait = next_sync.max(Duration::from_millis(1));
                            this.wake.wait_for(&mut woken, wait);
                        }
                        std::mem::take(&mut *woken)
                    };
                    this.sync_if_due();
                    let stopping = this.stop.load(Ordering::Acquire);
                    if woken || stopping || compacted.elapsed() >= INTERVAL {
                        compacted = Instant::now();
                        // On the way out everything is written.
                        let compacted = match stopping {
                            true => this.compact(),
                            false => this.compact_share(),
                        };
                        // Still enough waiting to start one: the next
                        // share at once.
                        let (waiting, topics) = this.tail.waiting();
                        if !stopping && due(waiting, topics) {
                            *this.wake_lock.lock() = true;
                        }
                        if let Err(e) = compacted {
                            tracing::error!(error = %e, "compaction failed; the staged messages stay in the write-ahead file and are retried");
                        }
                    }
                    if !stopping && collected.elapsed() >= COLLECT_EVERY {
                        collected = Instant::now();
                        match this.collect() {
                            Ok(0) => {}
                            Ok(files) => tracing::debug!(files, "deleted run files no run needs"),
                            Err(e) => tracing::error!(error = %e, "collecting the run files' garbage failed; retried later"),
                        }
                    }
                    if stopping {
                        return;
                    }
                }
            })
    }

    /// Asks the thread to compact now.
    pub fn wake(&self) {
        *self.wake_lock.lock() = true;
        self.wake.notify_one();
    }

    /// Asks the thread to compact once more and end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// Runs `f` against sled, a panic inside becoming a storage error.
    fn guard<T>(&self, f: impl FnOnce() -> Result<T, LogError>) -> Result<T, LogError> {
        contain(f).unwrap_or_else(|panic| {
            let reason = format!("the storage engine failed while compacting: {panic}");
            self.damage.note_failure(reason.clone());
            Err(LogError::Storage(reason))
        })
    }

    /// Writes everything staged as runs (a clean stop); returns the guard
    /// that keeps the next compaction out.
    pub fn compact_and_hold(&self) -> Result<parking_lot::MutexGuard<'_, ()>, LogError> {
        self.compact_up_to(Take::Share(usize::MAX))
    }

    /// Writes what is staged of `topics` as runs; returns the guard that
    /// keeps the next compaction out, for maintenance of those topics that
    /// must see none of them staged. The rest stays staged: a retention
    /// pass or a replacement must not write everything staged once per
    /// topic it touches.
    pub fn compact_topics_and_hold(
        &self,
        topics: &[Topic],
    ) -> Result<parking_lot::MutexGuard<'_, ()>, LogError> {
        self.compact_up_to(Take::Topics(topics))
    }

    /// Writes what `take` asks for of what is staged as runs, besides a
    /// compaction that failed before.
    pub(super) fn compact_up_to(
        &self,
        take: Take<'_>,
    ) -> Result<parking_lot::MutexGuard<'_, ()>, LogError> {
        let running = self.running.lock();
        // A failed compaction is retried first, then what was staged since
        // (a share of it).
        let mut compacted = false;
        for _ in 0..2 {
            let Some((staged, retried)) = self.tail.freeze(take) else {
                break;
            };
            // A compaction may run beside collection (from an append that
            // found it behind, or from maintenance): its bodies' files stay
            // until its refs are in sled.
            let writing = self.runs.writing();
            let batches = runs_batches(&staged, &self.runs).map_err(|e| self.runs_failed(e))?;
            self.runs.sync().map_err(|e| self.runs_failed(e))?;
            for batch in batches {
                self.guard(|| Ok(self.tree.apply_batch(batch)?))?;
                self.sync_if_due();
            }
            if retried {
                // A failed attempt may have put some of these refs, naming
                // bodies this one has just replaced.
                drop(writing);
            } else {
                writing.finish();
            }
            self.tail.release();
            compacted = true;
            if !retried {
                break;
            }
        }
        if compacted {
            // Segments whose every append is in runs go, once the runs are
            // durable.
            let keep_from = {
                let _staging = self.staging.lock();
                let active = self.wal.active();
                self.tail.first_segment().map_or(active, |f| f.min(active))
            };
            if self.wal.oldest() < keep_from {
                self.guard(|| Ok(self.db.flush().map(drop)?))?;
                self.wal
                    .release_before(keep_from)
                    .map_err(|e| self.io_failed("remove a segment", e))?;
            }
        }
        Ok(running)
    }

    /// Writes what is staged as runs.
    pub fn compact(&self) -> Result<(), LogError> {
        self.compact_and_hold().map(drop)
    }

    /// Writes at most about [`SHARE_BYTES`] of what is staged as runs: what
    /// the thread and an append that found compaction behind do, so that
    /// neither holds acks up for longer than one share takes.
    pub fn compact_share(&self) -> Result<(), LogError> {
        self.compact_up_to(Take::Share(SHARE_BYTES)).map(drop)
    }

    /// Writes what the write-ahead file held at open and the runs do not
    /// (a crash came before its compaction) as runs, durably, and deletes
    /// the old segments; returns the damage found in them. The replayed
    /// idempotency keys are noted in `filter`.
    pub fn replay(&self, replayed: Replayed, filter: &KeyFilter) -> Result<Vec<String>, LogError> {
        let Replayed {
            records,
            mut problems,
        } = replayed;
        let mut staged = Staged::default();
        let mut heads: HashMap<Topic, u64> = HashMap::new();
        for (segment, body) in records {
            let entries = match decode_pass(&body) {
                Ok(entries) => entries,
                Err(e) => {
                    problems.push(format!("write-ahead segment {segment:016x}: {e}"));
                    continue;
                }
            };
            let mut fresh = Vec::with_capacity(entries.len());
            for entry in entries {
                let topic = &entry.message.topic;
                let head = match heads.get(topic) {
                    Some(h) => *h,
                    None => *heads
                        .entry(topic.clone())
                        .or_insert(stored_head(&self.tree, topic)?),
                };
                if entry.message.seq > head {
                    // The key scan at open may have read `i` before
                    // this replay writes it.
                    if let Some((key, expires_at)) = &entry.idempotency {
                        filter.note(&idempotency_key(topic, key), *expires_at);
                    }
                    fresh.push(entry);
                }
            }
            staged.push(segment, &fresh);
        }
        let messages: usize = staged.topics.values().map(|t| t.messages.len()).sum();
        if messages > 0 {
            let writing = self.runs.writing();
            let batches = runs_batches(&staged, &self.runs).map_err(|e| self.runs_failed(e))?;
            self.runs.sync().map_err(|e| self.runs_failed(e))?;
            for batch in batches {
                self.tree.apply_batch(batch)?;
            }
            writing.finish();
            tracing::info!(messages, "replayed the write-ahead file into runs");
        }
        self.db.flush()?;
        // Damaged segments stay, so every start (and `herald verify`)
        // reports them until the operator accepts the damage.
        if problems.is_empty() {
            self.release_replayed()?;
        }
        Ok(problems)
    }

    /// Deletes the segments start-up replayed (once their damage is
    /// accepted, when they had any).
    pub fn release_replayed(&self) -> Result<(), LogError> {
        self.wal
            .release_before(self.wal.active())
            .map_err(|e| LogError::Storage(format!("cannot remove a write-ahead segment: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compaction_is_due_for_full_runs_or_enough_bytes_not_for_a_few_messages() {
        // Many topics: not before the runs would be full, or SOON_BYTES.
        assert!(!due(EARLY_BYTES * 4, 10_000));
        assert!(due(SOON_BYTES, 10_000));
        // Few topics: as soon as their runs are full.
        assert!(due(EARLY_BYTES, 10));
        assert!(!due(EARLY_BYTES - 1, 10));
    }
}
