//! Garbage collection of run files: a file no ref names any more is
//! deleted; one mostly garbage has what is still named moved to the file
//! being written first ([`super::super::runs`]).

use std::collections::{HashMap, HashSet};

use super::{Compactor, LogError};
use crate::log::{keys::seq_of_key, record, run::encode_run, runs::RunRef};

/// Bytes moved per collection at most, so one never holds compaction up
/// for long.
const MOVE_BYTES: u64 = 64 << 20;

impl Compactor {
    /// The bytes every ref in the log names, by run file.
    fn live_bytes(&self) -> Result<HashMap<u64, u64>, LogError> {
        let mut live: HashMap<u64, u64> = HashMap::new();
        for (i, item) in self.tree.scan_prefix(b"m").enumerate() {
            if i % 1024 == 0 {
                self.sync_if_due();
            }
            let (key, value) = item?;
            if let Some(r) = record::open(&key, &value).ok().and_then(RunRef::decode) {
                *live.entry(r.file).or_default() += u64::from(r.len);
            }
        }
        Ok(live)
    }

    /// Deletes the run files no ref names, after moving what is still
    /// named out of files more than half garbage. Returns the files deleted.
    ///
    /// It needs no lock against compaction or maintenance: each holds a
    /// [`crate::log::runs::RunFiles::writing`] from its first body to its
    /// refs being in sled, and collection leaves the file such a writer
    /// began in, and every later one, alone.
    ///
    /// Nothing is scanned while no garbage was noted since a pass left none
    /// ([`crate::log::runs::RunFiles::garbage_pass`]): a node that only
    /// appends never pays for a scan of every ref.
    pub fn collect(&self) -> Result<usize, LogError> {
        let Some(pass) = self.runs.garbage_pass() else {
            return Ok(0);
        };
        let files = self.runs.files().map_err(|e| self.collect_failed(e))?;
        let closed = files.on_disk.iter().filter(|f| f.0 < files.keep_from);
        let live = self.guard(|| self.live_bytes())?;
        let mut gone: Vec<u64> = Vec::new();
        let mut sparse = HashSet::new();
        let mut moving = 0;
        // Sparse files left for a later pass (the move budget is spent).
        let mut left = false;
        for &(no, size) in closed {
            match live.get(&no) {
                None => gone.push(no),
                Some(&l) if l * 2 < size => {
                    if moving + l <= MOVE_BYTES {
                        sparse.insert(no);
                        moving += l;
                    } else {
                        left = true;
                    }
                }
                Some(_) => {}
            }
        }
        if !sparse.is_empty() {
            // Files no ref names go even when moving fails.
            match self.move_out_of(&sparse) {
                Ok(emptied) => {
                    left |= emptied.len() < sparse.len();
                    gone.extend(emptied);
                }
                Err(e) => {
                    left = true;
                    // Copies may have been put that no ref came to name.
                    self.runs.note_garbage();
                    tracing::warn!(error = %e, "moving runs out of mostly dead run files failed")
                }
            }
        }
        if !gone.is_empty() {
            // The refs' removal (or move) durable before the bytes go.
            self.guard(|| Ok(self.db.flush().map(drop)?))?;
            self.runs
                .remove(&gone)
                .map_err(|e| self.collect_failed(e))?;
        }
        if !left {
            self.runs.collected(pass, files.keep_from);
        }
        Ok(gone.len())
    }

    /// Collection could not list or delete files: nothing is lost, and the
    /// node is not degraded; the next pass tries again.
    fn collect_failed(&self, e: std::io::Error) -> LogError {
        LogError::Storage(format!("collecting the run files' garbage failed: {e}"))
    }

    /// Writes every run whose body is in `files` again (without what
    /// retention skipped), and points its ref at the copy; returns the
    /// files left with nothing named in them. A run that fails to load
    /// stays where it is, for the start-up check to report.
    fn move_out_of(&self, files: &HashSet<u64>) -> Result<Vec<u64>, LogError> {
        let mut moves = Vec::new();
        let mut stuck = HashSet::new();
        // Retention's skip rewrites a ref to name the same file: not while
        // a move is under way.
        let _edits = self.runs.edit_refs();
        {
            let _pinned = self.runs.pin();
            self.guard(|| {
                for (i, item) in self.tree.scan_prefix(b"m").enumerate() {
                    if i % 1024 == 0 {
                        self.sync_if_due();
                    }
                    let (key, value) = item?;
                    let Some(r) = record::open(&key, &value).ok().and_then(RunRef::decode) else {
                        continue;
                    };
                    if !files.contains(&r.file) {
                        continue;
                    }
                    let Some((body, count)) = self.kept_body(&key, &r) else {
                        stuck.insert(r.file);
                        continue;
                    };
                    let moved = self
                        .runs
                        .put(&key, &body, count, r.last_ts)
                        .map_err(|e| self.runs_failed(e))?;
                    let sealed = record::seal(&key, &moved.encode());
                    moves.push((key, value, sealed));
                }
                Ok(())
            })?;
        }
        self.runs.sync().map_err(|e| self.runs_failed(e))?;
        self.guard(|| {
            for (key, old, new) in moves {
                if self
                    .tree
                    .compare_and_swap(&key, Some(old), Some(new))?
                    .is_ok()
                {
                    continue;
                }
                // Changed meanwhile (a replacement, a removal): whatever
                // it names now must not be in a file about to go, and the
                // copy is garbage.
                self.runs.note_garbage();
                let now = self.tree.get(&key)?;
                let named = now
                    .as_deref()
                    .and_then(|v| record::open(&key, v).ok().and_then(RunRef::decode));
                if let Some(r) = named.filter(|r| files.contains(&r.file)) {
                    stuck.insert(r.file);
                }
            }
            Ok(())
        })?;
        Ok(files.difference(&stuck).copied().collect())
    }
}

impl Compactor {
    /// The body of the run `r` names under `key` without what retention
    /// skipped, and its message count; `None` when it fails to load.
    fn kept_body(&self, key: &[u8], r: &RunRef) -> Option<(Vec<u8>, u32)> {
        let body = self.runs.get(key, r).ok()?;
        if r.skip == 0 {
            return Some((body, r.count));
        }
        let kept = r.messages(seq_of_key(key).ok()?, &body).ok()?;
        let body = encode_run(kept.iter().map(|m| (m.ts, m.envelope)));
        Some((body, kept.len() as u32))
    }
}
