//! Writing the acknowledged-heads journal.
//!
//! A record is written with one `pwrite` before the batch it describes is
//! acknowledged, so from then on no crash of the process (kill -9, OOM, a
//! panic) can lose it: the kernel holds it. A background thread
//! (`herald-acksync`) then waits, at most every 10 ms and for every record
//! written meanwhile, for them to reach the device (`fdatasync`); a machine
//! crash within that window can leave the journal a few batches behind,
//! which weakens the check by those batches and never makes it claim a
//! message sled did not write. Why not wait for
//! the device before each ack, or after each batch: `bench/results/HISTORY.md`,
//! "Integrity". Snapshots at start and at a clean stop are `fdatasync`ed.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
    thread,
};

use parking_lot::{Condvar, Mutex};

use super::{encode, padded, AckedRead, CLEAN, DELTA, FILES, MIN_FILE, SNAPSHOT};
use herald_core::Topic;

/// Waits until the records written so far have reached the device. The
/// file's space is preallocated, so `fdatasync` has no metadata to write.
fn write_through(file: &File, _offset: u64, _len: u64) -> std::io::Result<()> {
    file.sync_data()
}

/// Writes zero bytes from `from` to `to` of `file` and makes them durable.
fn zero_fill(file: &mut File, from: u64, to: u64) -> std::io::Result<()> {
    let chunk = vec![0u8; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    file.sync_all()
}

/// Shortest time between two device waits. One wait per batch competed with
/// sled's own writes for the device and cost a quarter of the durable acks
/// per second with 32 serial REST publishers; a wait every few ms does not
/// show (`bench/results/HISTORY.md`, "Integrity").
const SYNC_EVERY: std::time::Duration = std::time::Duration::from_millis(10);

/// Written ranges (per file) still to be brought to the device.
#[derive(Default)]
struct Pending {
    dirty: [Option<(u64, u64)>; 2],
    stop: bool,
    failed: Option<String>,
}

/// The state the writer and the `herald-acksync` thread share.
#[derive(Default)]
struct Syncer {
    pending: Mutex<Pending>,
    wake: Condvar,
}

impl Syncer {
    fn push(&self, file: usize, from: u64, to: u64) {
        let mut p = self.pending.lock();
        let range = p.dirty[file].get_or_insert((from, to));
        *range = (range.0.min(from), range.1.max(to));
        self.wake.notify_one();
    }

    fn run(&self, files: [File; 2]) {
        loop {
            // Writes that arrive meanwhile share the next device wait.
            thread::sleep(SYNC_EVERY);
            let dirty = {
                let mut p = self.pending.lock();
                while p.dirty == [None, None] && !p.stop {
                    self.wake.wait(&mut p);
                }
                if p.dirty == [None, None] {
                    return;
                }
                std::mem::take(&mut p.dirty)
            };
            for (file, range) in files.iter().zip(dirty) {
                if let Some((from, to)) = range {
                    if let Err(e) = write_through(file, from, to - from) {
                        tracing::error!(error = %e, "the acknowledged-heads journal cannot reach the disk");
                        self.pending.lock().failed.get_or_insert(e.to_string());
                    }
                }
            }
        }
    }
}

/// The journal, open for appending.
pub struct AckedHeads {
    dir: PathBuf,
    files: [File; 2],
    sizes: [u64; 2],
    active: usize,
    offset: u64,
    counter: u64,
    heads: HashMap<Topic, u64>,
    syncer: Arc<Syncer>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for AckedHeads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckedHeads")
            .field("dir", &self.dir)
            .field("active", &self.active)
            .field("counter", &self.counter)
            .finish()
    }
}

impl AckedHeads {
    /// Starts a new chain with a snapshot of `heads` (durable on return), in
    /// the file that does not hold the chain `previous` was read from.
    pub fn start(
        dir: &Path,
        heads: HashMap<Topic, u64>,
        previous: &AckedRead,
    ) -> std::io::Result<Self> {
        let open = |name: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(dir.join(name))
        };
        let mut files = [open(FILES[0])?, open(FILES[1])?];
        let mut sizes = [0; 2];
        for (file, size) in files.iter_mut().zip(&mut sizes) {
            *size = file.metadata()?.len();
            if *size < MIN_FILE {
                zero_fill(file, *size, MIN_FILE)?;
                *size = MIN_FILE;
            }
        }
        File::open(dir)?.sync_all()?;
        let syncer = Arc::new(Syncer::default());
        let clones = [files[0].try_clone()?, files[1].try_clone()?];
        let thread = {
            let syncer = syncer.clone();
            thread::Builder::new()
                .name("herald-acksync".into())
                .spawn(move || syncer.run(clones))?
        };
        let mut journal = AckedHeads {
            dir: dir.to_path_buf(),
            files,
            sizes,
            active: previous.chain_file.map_or(1, |f| f),
            offset: 0,
            counter: previous.last_counter,
            heads,
            syncer,
            thread: Some(thread),
        };
        journal.switch(SNAPSHOT)?;
        journal.files[journal.active].sync_data()?;
        Ok(journal)
    }

    /// Writes a snapshot of every head at the start of the other file and
    /// makes it the active one.
    fn switch(&mut self, kind: u8) -> std::io::Result<()> {
        let target = 1 - self.active;
        let record = encode(
            self.counter + 1,
            kind,
            self.heads.iter().map(|(t, h)| (t.as_str(), *h)),
        );
        let len = record.len() as u64;
        if len * 4 > self.sizes[target] {
            let size = padded(len * 4);
            zero_fill(&mut self.files[target], self.sizes[target], size)?;
            self.sizes[target] = size;
        }
        self.files[target].write_all_at(&record, 0)?;
        self.syncer.push(target, 0, len);
        self.active = target;
        self.offset = len;
        self.counter += 1;
        Ok(())
    }

    /// Records that `delta`'s topics reached these heads: written before
    /// this returns, on the device shortly after (module doc).
    pub fn record(&mut self, delta: &[(Topic, u64)]) -> std::io::Result<()> {
        if let Some(e) = &self.syncer.pending.lock().failed {
            return Err(std::io::Error::other(e.clone()));
        }
        for (topic, head) in delta {
            let h = self.heads.entry(topic.clone()).or_default();
            *h = (*h).max(*head);
        }
        let record = encode(
            self.counter + 1,
            DELTA,
            delta.iter().map(|(t, h)| (t.as_str(), *h)),
        );
        if self.offset + record.len() as u64 > self.sizes[self.active] {
            return self.switch(SNAPSHOT);
        }
        self.files[self.active].write_all_at(&record, self.offset)?;
        let end = self.offset + record.len() as u64;
        self.syncer.push(self.active, self.offset, end);
        self.offset = end;
        self.counter += 1;
        Ok(())
    }

    /// Records a clean shutdown with every head in `heads` (merged in),
    /// durable on return.
    pub fn close_clean(
        &mut self,
        heads: impl IntoIterator<Item = (Topic, u64)>,
    ) -> std::io::Result<()> {
        for (topic, head) in heads {
            let h = self.heads.entry(topic).or_default();
            *h = (*h).max(head);
        }
        let record = encode(
            self.counter + 1,
            CLEAN,
            self.heads.iter().map(|(t, h)| (t.as_str(), *h)),
        );
        if self.offset + record.len() as u64 > self.sizes[self.active] {
            self.switch(CLEAN)?;
        } else {
            self.files[self.active].write_all_at(&record, self.offset)?;
            self.offset += record.len() as u64;
            self.counter += 1;
        }
        self.files[self.active].sync_data()
    }
}

impl Drop for AckedHeads {
    /// Brings what is written to the device before the journal closes.
    fn drop(&mut self) {
        self.syncer.pending.lock().stop = true;
        self.syncer.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
