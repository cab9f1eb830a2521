//! Run files: where the bodies of runs live (`runs/<file, 16 hex>.run`).
//!
//! sled holds, under each run's key, a [`RunRef`] saying which file, where,
//! how long, and the checksum of key and body; the body itself is written
//! here, once. sled's memory and the bytes it writes grow with the bytes of
//! its values, so it is given 44 bytes per run (the ref and its seal)
//! instead of up to [`super::run::RUN_BYTES`]. Retention trimming part of a
//! run changes only its ref ([`RunRef::skip`]).
//!
//! A body is made durable ([`RunFiles::sync`]) before the ref naming it is
//! written to sled, so a durable ref always names durable bytes; bytes no
//! ref names (a crash between the two, a run trimmed or rewritten) are
//! garbage, and [`super::compact`] deletes a file once no ref names it,
//! rewriting what is still named in a file that is mostly garbage first.
//! A new file's directory entry is synced when it is created. Each open
//! appends to a new file, never after bytes an earlier process left; a
//! writer that puts bodies outside the compaction thread holds a
//! [`Writing`] until its refs are in sled, so collection leaves its file be.
//! After a failed write or sync nothing more is written (the node is
//! degraded; the write-ahead file still holds every append).

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard};

use garbage::GarbageNotes;

mod garbage;
mod reference;

pub(super) use garbage::Pass;
pub(super) use reference::{RunError, RunRef};

/// A file is closed once it holds this many bytes (small in unit tests,
/// so that they rotate and collect files).
pub(super) const FILE_BYTES: u64 = if cfg!(test) { 64 << 10 } else { 64 << 20 };
/// Buffered bytes written out before the next sync.
const BUFFER_BYTES: usize = 4 << 20;

fn checksum(key: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), body)
}

fn file_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:016x}.run"))
}

/// The run files in `dir` with their sizes, by number (none while `dir`
/// does not exist).
fn listing(dir: &Path) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(no) = name
            .strip_suffix(".run")
            .and_then(|n| u64::from_str_radix(n, 16).ok())
        {
            // Collection may delete a file between the listing and this.
            match entry.metadata() {
                Ok(m) => out.push((no, m.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The run files at one moment.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Files {
    /// Number and size of each file on disk, by number.
    pub on_disk: Vec<(u64, u64)>,
    /// Files from this number on are being written (or may be named by
    /// refs not yet in sled).
    pub keep_from: u64,
}

struct Writer {
    /// The file bodies go to, once one is needed.
    file: Option<(u64, File)>,
    /// Bytes in it, buffered ones included.
    len: u64,
    buf: Vec<u8>,
    /// Bytes written since the last sync.
    unsynced: bool,
    /// A write or sync failed: what, and nothing is written any more.
    broken: Option<String>,
}

/// Read handles kept open at most (each read past them opens its file).
const OPEN_READERS: usize = 32;

/// The run files of one log.
pub(super) struct RunFiles {
    dir: PathBuf,
    writer: Mutex<Writer>,
    readers: RwLock<HashMap<u64, Arc<File>>>,
    /// Held (shared) by reads from a ref to its body, and (exclusive) while
    /// a file is deleted: a reader never finds the file its ref named gone.
    gate: RwLock<()>,
    /// The file each [`Writing`] started in: collection leaves those and
    /// later ones be.
    writing: Mutex<Vec<u64>>,
    /// See [`RunFiles::edit_refs`].
    edits: Mutex<()>,
    /// Bytes in the files.
    bytes: AtomicU64,
    /// The number after the newest file created or found at open.
    next_no: AtomicU64,
    /// Where garbage may be that collection has not seen.
    garbage: GarbageNotes,
}

/// A writer outside the compaction thread between its first put and its
/// refs being in sled ([`RunFiles::writing`]).
pub(super) struct Writing<'a> {
    runs: &'a RunFiles,
    since: u64,
    finished: bool,
}

impl Writing<'_> {
    /// Every body put is named by a ref in sled, and none was replaced.
    /// A writer dropped without this (a failure, a replacement) notes that
    /// its files may hold garbage.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.runs.note_garbage();
        }
        let mut w = self.runs.writing.lock();
        if let Some(at) = w.iter().position(|&s| s == self.since) {
            w.swap_remove(at);
        }
    }
}

impl RunFiles {
    /// The run files in `dir` (created with the first file).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        let found = listing(dir)?;
        let bytes = found.iter().map(|f| f.1).sum();
        let next_no = found.last().map_or(0, |f| f.0 + 1);
        Ok(RunFiles {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                file: None,
                len: 0,
                buf: Vec::new(),
                unsynced: false,
                broken: None,
            }),
            readers: RwLock::new(HashMap::new()),
            gate: RwLock::new(()),
            writing: Mutex::new(Vec::new()),
            edits: Mutex::new(()),
            bytes: AtomicU64::new(bytes),
            next_no: AtomicU64::new(next_no),
            garbage: GarbageNotes::at_open(next_no),
        })
    }

    /// A ref was removed or rewritten, or bodies were put that no ref may
    /// come to name: collection must look again (see [`garbage`]).
    pub fn note_garbage(&self) {
        self.garbage.note(self.next_no.load(Ordering::Acquire));
    }

    /// The collection pass to run now; `None` while no file can hold
    /// garbage collection has not seen.
    pub fn garbage_pass(&self) -> Option<Pass> {
        self.garbage.pass()
    }

    /// `pass` looked at every closed file before `keep_from` and left no
    /// garbage it could collect.
    pub fn collected(&self, pass: Pass, keep_from: u64) {
        self.garbage.passed(pass, keep_from);
    }

    /// Marks a writer busy until the returned guard drops: collection
    /// leaves the file bodies go to now, and every later one, alone.
    pub fn writing(&self) -> Writing<'_> {
        let since = self.writer.lock().file.as_ref().map_or(0, |f| f.0);
        self.writing.lock().push(since);
        Writing {
            runs: self,
            since,
            finished: false,
        }
    }

    /// The file numbers and sizes on disk, and from which file on
    /// collection must leave them be (the one written now, and any a
    /// [`Writing`] may still name).
    pub fn files(&self) -> std::io::Result<Files> {
        // In this order: a file created after the listing is not in it,
        // and one created before it is the current one or older.
        let on_disk = listing(&self.dir)?;
        let current = self.writer.lock().file.as_ref().map(|f| f.0);
        let busy = self.writing.lock().iter().copied().min();
        let next = self.next_number(&on_disk);
        Ok(Files {
            on_disk,
            keep_from: current.into_iter().chain(busy).min().unwrap_or(next),
        })
    }

    /// Bytes in the run files.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Writes `body` (the run stored under `key`); returns its ref. Durable
    /// at the next [`RunFiles::sync`], which must come before the ref is
    /// written to sled.
    pub fn put(
        &self,
        key: &[u8],
        body: &[u8],
        count: u32,
        last_ts: u64,
    ) -> std::io::Result<RunRef> {
        let mut w = self.writer.lock();
        if let Some(failed) = &w.broken {
            return Err(std::io::Error::other(failed.clone()));
        }
        if w.file.is_none() || w.len >= FILE_BYTES {
            // Closing the file is a write; creating the next is not (a
            // failure there leaves nothing half written).
            guarded(&mut w, close)?;
            self.create_next(&mut w)?;
        }
        let (file, _) = w.file.as_ref().expect("rotated above");
        let r = RunRef {
            file: *file,
            offset: w.len,
            len: u32::try_from(body.len()).map_err(std::io::Error::other)?,
            crc: checksum(key, body),
            count,
            skip: 0,
            last_ts,
        };
        w.buf.extend_from_slice(body);
        w.len += body.len() as u64;
        w.unsynced = true;
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        if w.buf.len() >= BUFFER_BYTES {
            guarded(&mut w, write_out)?;
        }
        Ok(r)
    }

    /// Makes every body put so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut w = self.writer.lock();
        if let Some(failed) = &w.broken {
            return Err(std::io::Error::other(failed.clone()));
        }
        if w.unsynced {
            guarded(&mut w, |w| {
                write_out(w)?;
                if let Some((_, f)) = &w.file {
                    f.sync_data()?;
                }
                Ok(())
            })?;
            w.unsynced = false;
        }
        Ok(())
    }

    /// The number after every file in `on_disk` and every file this
    /// process saw: never one used before (collection may have deleted
    /// the newest file), since garbage notes bound files by number.
    fn next_number(&self, on_disk: &[(u64, u64)]) -> u64 {
        let listed = on_disk.last().map_or(0, |f| f.0 + 1);
        listed.max(self.next_no.load(Ordering::Acquire))
    }

    /// Creates the next file (the current one is closed).
    fn create_next(&self, w: &mut Writer) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let mut no = self.next_number(&listing(&self.dir)?);
        let file = loop {
            match OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(file_path(&self.dir, no))
            {
                Ok(f) => break f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => no += 1,
                Err(e) => return Err(e),
            }
        };
        File::open(&self.dir)?.sync_all()?;
        self.next_no.fetch_max(no + 1, Ordering::AcqRel);
        w.file = Some((no, file));
        w.len = 0;
        w.unsynced = false;
        Ok(())
    }

    /// Why run files are no longer written, if a write or sync failed.
    pub fn broken(&self) -> Option<String> {
        self.writer.lock().broken.clone()
    }

    /// Held while a ref is rewritten to name the same file (retention's
    /// skip) and by collection while it moves runs, so that neither
    /// leaves a ref naming a file collection deletes.
    pub fn edit_refs(&self) -> MutexGuard<'_, ()> {
        self.edits.lock()
    }

    /// Holds deletions off while a reader goes from a ref to its body.
    /// Never pin twice on one thread: a deletion waiting between the two
    /// would wait for the first forever.
    pub fn pin(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read()
    }

    /// The body `r` names under `key`, once its checksum checks out.
    pub fn get(&self, key: &[u8], r: &RunRef) -> Result<Vec<u8>, RunError> {
        let path = || file_path(&self.dir, r.file).display().to_string();
        let file = self.reader(r.file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RunError::Damaged(format!("{} is missing", path())),
            _ => RunError::Io(format!("{} cannot be opened: {e}", path())),
        })?;
        let mut body = vec![0; r.len as usize];
        file.read_exact_at(&mut body, r.offset).map_err(|e| {
            let what = format!("{} cannot be read at byte {}: {e}", path(), r.offset);
            match e.kind() {
                std::io::ErrorKind::UnexpectedEof => RunError::Damaged(what),
                _ => RunError::Io(what),
            }
        })?;
        if checksum(key, &body) == r.crc {
            Ok(body)
        } else {
            Err(RunError::Damaged("checksum mismatch".into()))
        }
    }

    fn reader(&self, no: u64) -> std::io::Result<Arc<File>> {
        if let Some(f) = self.readers.read().get(&no) {
            return Ok(f.clone());
        }
        let file = Arc::new(File::open(file_path(&self.dir, no))?);
        let mut readers = self.readers.write();
        if readers.len() >= OPEN_READERS {
            // The start-up scan reads every file once: keep a few handles,
            // not one per file.
            if let Some(old) = readers.keys().next().copied() {
                readers.remove(&old);
            }
        }
        readers.insert(no, file.clone());
        Ok(file)
    }

    /// Deletes files no durable ref names (never the one being written).
    pub fn remove(&self, files: &[u64]) -> std::io::Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let current = self.writer.lock().file.as_ref().map(|f| f.0);
        {
            let _gate = self.gate.write();
            for &no in files.iter().filter(|&&no| Some(no) != current) {
                self.readers.write().remove(&no);
                let path = file_path(&self.dir, no);
                let len = fs::metadata(&path).map_or(0, |m| m.len());
                match fs::remove_file(&path) {
                    Ok(()) => {
                        let _ =
                            self.bytes
                                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                                    Some(b.saturating_sub(len))
                                });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        File::open(&self.dir)?.sync_all()
    }

    /// Flips one bit in the middle of the body `r` names (deliberate
    /// damage, [`super::tamper`]).
    pub fn flip(&self, r: &RunRef) -> std::io::Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(file_path(&self.dir, r.file))?;
        let at = r.offset + u64::from(r.len / 2);
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, at)?;
        byte[0] ^= 0x20;
        f.write_all_at(&byte, at)?;
        f.sync_all()
    }
}

/// Writes out and syncs the current file, if any.
fn close(w: &mut Writer) -> std::io::Result<()> {
    write_out(w)?;
    match &w.file {
        Some((_, f)) => f.sync_data(),
        None => Ok(()),
    }
}

/// Writes the buffered bytes where they belong (a retry after a partial
/// write writes the same bytes at the same place).
fn write_out(w: &mut Writer) -> std::io::Result<()> {
    if let Some((_, f)) = &w.file {
        f.write_all_at(&w.buf, w.len - w.buf.len() as u64)?;
    }
    w.buf.clear();
    if w.buf.capacity() > 2 * BUFFER_BYTES {
        w.buf.shrink_to(BUFFER_BYTES);
    }
    Ok(())
}

/// Runs `f`; a failure marks the writer broken for good.
fn guarded(
    w: &mut Writer,
    f: impl FnOnce(&mut Writer) -> std::io::Result<()>,
) -> std::io::Result<()> {
    f(w).inspect_err(|e| w.broken = Some(format!("an earlier run file write failed: {e}")))
}

#[cfg(test)]
mod tests;
