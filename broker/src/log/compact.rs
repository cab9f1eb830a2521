//! Compaction: staged passes become runs.
//!
//! An append stores one pass record, whatever topics it touched: the only
//! write a publish waits for. Every [`INTERVAL`], or once [`SOON_BYTES`]
//! are staged, this thread writes what is staged as one run per topic (and
//! the idempotency records) and removes the passes, in one sled batch, so
//! after a crash a message is in exactly one of the two. Start-up replays
//! the passes a crash left the same way ([`Compactor::replay`]).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use parking_lot::{Condvar, Mutex};

use super::{
    contain::contain,
    damage::Damage,
    key_filter::KeyFilter,
    keys::{idempotency_key, message_key},
    record,
    run::{decode_pass, encode_run, RUN_BYTES},
    sled_maint::idempotency_body,
    tail::{Staged, Tail},
    LogError,
};

/// How long a message stays staged at most.
pub(super) const INTERVAL: Duration = Duration::from_millis(500);
/// Staged bytes that start a compaction before its time.
pub(super) const SOON_BYTES: usize = 8 << 20;
/// Staged bytes at which an append compacts itself before returning, so a
/// compaction that falls behind slows appends instead of growing memory.
pub(super) const MAX_BYTES: usize = 64 << 20;

/// `p` pass number (u64 BE).
pub(super) fn pass_key(no: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(b'p');
    k.extend_from_slice(&no.to_be_bytes());
    k
}

/// The sled writes that turn `staged` into runs and idempotency records
/// and remove its passes; the keys are noted in `filter` first.
pub(super) fn runs_batch(staged: &Staged, filter: &KeyFilter) -> sled::Batch {
    let mut batch = sled::Batch::default();
    for (topic, t) in &staged.topics {
        let mut run: Vec<&herald_core::Message> = Vec::new();
        let mut bytes = 0;
        for m in &t.messages {
            let breaks = run.last().is_some_and(|l| l.seq + 1 != m.seq) || bytes >= RUN_BYTES;
            if breaks {
                put_run(&mut batch, topic, &run);
                run.clear();
                bytes = 0;
            }
            bytes += m.envelope().len() + 12;
            run.push(m);
        }
        put_run(&mut batch, topic, &run);
        for (name, r) in &t.keys {
            let key = idempotency_key(topic, name);
            filter.note(&key, r.expires_at);
            let value = record::seal(&key, &idempotency_body(r.seq, r.ts, r.expires_at));
            batch.insert(key, value);
        }
    }
    for pass in &staged.passes {
        batch.remove(pass.as_slice());
    }
    batch
}

/// Adds the run record of `run` (consecutive messages) to `batch`.
pub(super) fn put_run(
    batch: &mut sled::Batch,
    topic: &herald_core::Topic,
    run: &[&herald_core::Message],
) {
    let Some(last) = run.last() else {
        return;
    };
    let key = message_key(topic, last.seq);
    let body = encode_run(run.iter().map(|m| (m.ts, &m.envelope()[..])));
    let value = record::seal_owned(&key, body);
    batch.insert(key, value);
}

/// The staged messages, and the thread that writes them as runs.
pub(super) struct Compactor {
    tree: sled::Tree,
    /// What appends staged.
    pub tail: Tail,
    filter: Arc<KeyFilter>,
    damage: Arc<Damage>,
    /// One compaction at a time; maintenance holds it to see no tail.
    running: Mutex<()>,
    wake: Condvar,
    wake_lock: Mutex<bool>,
    stop: AtomicBool,
}

impl Compactor {
    /// A compactor for `tree` (its thread is started by [`Compactor::spawn`]).
    pub fn new(tree: sled::Tree, filter: Arc<KeyFilter>, damage: Arc<Damage>) -> Arc<Self> {
        Arc::new(Compactor {
            tree,
            tail: Tail::default(),
            filter,
            damage,
            running: Mutex::new(()),
            wake: Condvar::new(),
            wake_lock: Mutex::new(false),
            stop: AtomicBool::new(false),
        })
    }

    /// Starts the thread that compacts every [`INTERVAL`] or when woken.
    pub fn spawn(self: &Arc<Self>) -> std::io::Result<JoinHandle<()>> {
        let this = self.clone();
        std::thread::Builder::new()
            .name("herald-compact".into())
            .spawn(move || loop {
                {
                    let mut woken = this.wake_lock.lock();
                    if !*woken && !this.stop.load(Ordering::Acquire) {
                        this.wake.wait_for(&mut woken, INTERVAL);
                    }
                    *woken = false;
                }
                if let Err(e) = this.compact() {
                    tracing::error!(error = %e, "compaction failed; the staged messages stay in their passes and are retried");
                }
                if this.stop.load(Ordering::Acquire) {
                    return;
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

    /// Writes what is staged as runs; returns the guard that keeps the
    /// next compaction out, for maintenance that must see no tail.
    pub fn compact_and_hold(&self) -> Result<parking_lot::MutexGuard<'_, ()>, LogError> {
        let running = self.running.lock();
        // A failed compaction is retried first, then what was staged since.
        for _ in 0..2 {
            let Some(staged) = self.tail.freeze() else {
                break;
            };
            let batch = runs_batch(&staged, &self.filter);
            contain(|| self.tree.apply_batch(batch).map_err(LogError::from)).unwrap_or_else(
                |panic| {
                    let reason = format!("the storage engine failed while compacting: {panic}");
                    self.damage.note_failure(reason.clone());
                    Err(LogError::Storage(reason))
                },
            )?;
            self.tail.release();
        }
        Ok(running)
    }

    /// Writes what is staged as runs.
    pub fn compact(&self) -> Result<(), LogError> {
        self.compact_and_hold().map(drop)
    }

    /// Turns the passes a crash left in `tree` into runs, durably; returns
    /// the next free pass number. A pass that fails its seal stays where it
    /// is, for the start-up check to report.
    pub fn replay(&self) -> Result<u64, LogError> {
        let mut staged = Staged::default();
        let mut next = 0;
        for item in self.tree.scan_prefix(b"p") {
            let (key, value) = item?;
            if key.len() == 9 {
                let no = u64::from_be_bytes(key[1..].try_into().expect("8 bytes"));
                next = next.max(no + 1);
            }
            let Ok(entries) = record::open(&key, &value)
                .map_err(|e| LogError::Corrupt(e.to_string()))
                .and_then(decode_pass)
            else {
                continue;
            };
            staged.push(key.to_vec(), &entries);
        }
        if !staged.passes.is_empty() {
            let passes = staged.passes.len();
            self.tree.apply_batch(runs_batch(&staged, &self.filter))?;
            self.tree.flush()?;
            tracing::info!(passes, "replayed the passes a stop left into runs");
        }
        Ok(next)
    }
}
