//! Run files: where the bodies of runs live (`runs/<file, 16 hex>.run`).
//!
//! sled holds, under each run's key, a [`RunRef`] saying which file, where,
//! how long, and the checksum of key and body; the body itself is written
//! here, once. sled's memory and the bytes it writes grow with the bytes of
//! its values, so it is given 40 bytes per run instead of up to
//! [`super::run::RUN_BYTES`].
//!
//! A body is made durable ([`RunFiles::sync`]) before the ref naming it is
//! written to sled, so a durable ref always names durable bytes; bytes no
//! ref names (a crash between the two, a run trimmed or rewritten) are
//! garbage, and [`super::compact`] deletes a file once no ref names it,
//! rewriting what is still named in a file that is mostly garbage first.
//! A new file's directory entry is synced when it is created. Each open
//! appends to a new file, never after bytes an earlier process left.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::{Mutex, RwLock, RwLockReadGuard};

/// A file is closed once it holds this many bytes.
pub(super) const FILE_BYTES: u64 = 64 << 20;
/// Buffered bytes written out before the next sync.
const BUFFER_BYTES: usize = 4 << 20;

/// Where a run's body is, and what it holds: the body of its sled value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RunRef {
    /// The run file.
    pub file: u64,
    /// Byte offset of the body in it.
    pub offset: u64,
    /// Length of the body.
    pub len: u32,
    /// crc32c of the run's key and body.
    pub crc: u32,
    /// Messages in the run.
    pub count: u32,
    /// Timestamp of its last message.
    pub last_ts: u64,
}

/// Bytes of an encoded [`RunRef`].
pub(super) const REF_LEN: usize = 36;

impl RunRef {
    /// The ref as stored (big-endian fields, in declaration order).
    pub fn encode(&self) -> [u8; REF_LEN] {
        let mut out = [0u8; REF_LEN];
        out[..8].copy_from_slice(&self.file.to_be_bytes());
        out[8..16].copy_from_slice(&self.offset.to_be_bytes());
        out[16..20].copy_from_slice(&self.len.to_be_bytes());
        out[20..24].copy_from_slice(&self.crc.to_be_bytes());
        out[24..28].copy_from_slice(&self.count.to_be_bytes());
        out[28..].copy_from_slice(&self.last_ts.to_be_bytes());
        out
    }

    /// A stored ref; `None` when `body` is not one.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let body: &[u8; REF_LEN] = body.try_into().ok()?;
        let u64_at = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().expect("4"));
        let r = RunRef {
            file: u64_at(0),
            offset: u64_at(8),
            len: u32_at(16),
            crc: u32_at(20),
            count: u32_at(24),
            last_ts: u64_at(28),
        };
        (r.count >= 1).then_some(r)
    }

    /// The first seq of the run stored under `last`.
    pub fn first_seq(&self, last: u64) -> Option<u64> {
        (last + 1)
            .checked_sub(u64::from(self.count))
            .filter(|&f| f >= 1)
    }
}

fn checksum(key: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(key), body)
}

fn file_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:016x}.run"))
}

/// The run files in `dir` with their sizes, by number.
fn listing(dir: &Path) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(no) = name
            .strip_suffix(".run")
            .and_then(|n| u64::from_str_radix(n, 16).ok())
        {
            out.push((no, entry.metadata()?.len()));
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
    /// The file bodies go to now, if one was created.
    pub writing: Option<u64>,
}

struct Writer {
    /// The file bodies go to, once one is needed.
    file: Option<(u64, File)>,
    /// Bytes in it, buffered ones included.
    len: u64,
    buf: Vec<u8>,
    /// Bytes written since the last sync.
    unsynced: bool,
}

/// The run files of one log.
pub(super) struct RunFiles {
    dir: PathBuf,
    writer: Mutex<Writer>,
    readers: RwLock<HashMap<u64, Arc<File>>>,
    /// Held (shared) by reads from a ref to its body, and (exclusive) while
    /// a file is deleted: a reader never finds the file its ref named gone.
    gate: RwLock<()>,
    /// Bytes in the files.
    bytes: AtomicU64,
}

impl RunFiles {
    /// The run files in `dir` (created if absent).
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let bytes = listing(dir)?.iter().map(|f| f.1).sum();
        Ok(RunFiles {
            dir: dir.to_path_buf(),
            writer: Mutex::new(Writer {
                file: None,
                len: 0,
                buf: Vec::new(),
                unsynced: false,
            }),
            readers: RwLock::new(HashMap::new()),
            gate: RwLock::new(()),
            bytes: AtomicU64::new(bytes),
        })
    }

    /// The file numbers and sizes on disk, and the one being written.
    pub fn files(&self) -> std::io::Result<Files> {
        let writing = self.writer.lock().file.as_ref().map(|f| f.0);
        Ok(Files {
            on_disk: listing(&self.dir)?,
            writing,
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
        if w.file.is_none() || w.len >= FILE_BYTES {
            self.rotate(&mut w)?;
        }
        let (file, _) = w.file.as_ref().expect("rotated above");
        let r = RunRef {
            file: *file,
            offset: w.len,
            len: u32::try_from(body.len()).map_err(std::io::Error::other)?,
            crc: checksum(key, body),
            count,
            last_ts,
        };
        w.buf.extend_from_slice(body);
        w.len += body.len() as u64;
        w.unsynced = true;
        self.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
        if w.buf.len() >= BUFFER_BYTES {
            write_out(&mut w)?;
        }
        Ok(r)
    }

    /// Makes every body put so far durable.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut w = self.writer.lock();
        if w.unsynced {
            write_out(&mut w)?;
            if let Some((_, f)) = &w.file {
                f.sync_data()?;
            }
            w.unsynced = false;
        }
        Ok(())
    }

    /// Closes the current file (durably) and creates the next.
    fn rotate(&self, w: &mut Writer) -> std::io::Result<()> {
        write_out(w)?;
        if let Some((_, f)) = &w.file {
            f.sync_data()?;
        }
        let mut no = listing(&self.dir)?.last().map_or(0, |l| l.0 + 1);
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
        w.file = Some((no, file));
        w.len = 0;
        w.unsynced = false;
        Ok(())
    }

    /// Holds deletions off while a reader goes from a ref to its body.
    pub fn pin(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read_recursive()
    }

    /// The body `r` names under `key`, once its checksum checks out; the
    /// error says what is wrong (missing file, short file, checksum).
    pub fn get(&self, key: &[u8], r: &RunRef) -> Result<Vec<u8>, String> {
        let file = self.reader(r.file)?;
        let mut body = vec![0; r.len as usize];
        file.read_exact_at(&mut body, r.offset).map_err(|e| {
            format!(
                "{} cannot be read at byte {}: {e}",
                file_path(&self.dir, r.file).display(),
                r.offset
            )
        })?;
        if checksum(key, &body) == r.crc {
            Ok(body)
        } else {
            Err("checksum mismatch".into())
        }
    }

    fn reader(&self, no: u64) -> Result<Arc<File>, String> {
        if let Some(f) = self.readers.read().get(&no) {
            return Ok(f.clone());
        }
        let path = file_path(&self.dir, no);
        let file = File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let file = Arc::new(file);
        self.readers.write().insert(no, file.clone());
        Ok(file)
    }

    /// Deletes files no durable ref names (never the one being written).
    pub fn remove(&self, files: &[u64]) -> std::io::Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let current = self.writer.lock().file.as_ref().map(|f| f.0);
        let _gate = self.gate.write();
        for &no in files.iter().filter(|&&no| Some(no) != current) {
            self.readers.write().remove(&no);
            let path = file_path(&self.dir, no);
            let len = fs::metadata(&path).map_or(0, |m| m.len());
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.bytes.fetch_sub(len, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
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

fn write_out(w: &mut Writer) -> std::io::Result<()> {
    if let Some((_, f)) = &mut w.file {
        f.write_all(&w.buf)?;
    }
    w.buf.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ref_round_trips_and_names_its_body_under_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let runs = RunFiles::open(dir.path()).unwrap();
        let a = runs.put(b"ka", b"body a", 2, 7).unwrap();
        let b = runs.put(b"kb", b"body b!", 1, 9).unwrap();
        runs.sync().unwrap();
        assert_eq!(RunRef::decode(&a.encode()), Some(a));
        assert_eq!(RunRef::decode(&a.encode()[1..]), None);
        assert_eq!(b.offset, 6);
        assert_eq!(a.first_seq(10), Some(9));
        assert_eq!(runs.get(b"ka", &a).unwrap(), b"body a");
        assert_eq!(runs.get(b"kb", &b).unwrap(), b"body b!");
        assert_eq!(runs.get(b"kb", &a).unwrap_err(), "checksum mismatch");
        runs.flip(&b).unwrap();
        assert_eq!(runs.get(b"kb", &b).unwrap_err(), "checksum mismatch");
        assert_eq!(runs.bytes(), 13);
    }

    #[test]
    fn each_open_writes_a_new_file_and_removed_files_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let runs = RunFiles::open(dir.path()).unwrap();
            let r = runs.put(b"k", b"one", 1, 1).unwrap();
            runs.sync().unwrap();
            r
        };
        let runs = RunFiles::open(dir.path()).unwrap();
        let second = runs.put(b"k", b"two", 1, 2).unwrap();
        runs.sync().unwrap();
        assert_eq!((first.file, second.file, second.offset), (0, 1, 0));
        assert_eq!(runs.get(b"k", &first).unwrap(), b"one");
        // The file being written stays.
        runs.remove(&[0, 1]).unwrap();
        let files = Files {
            on_disk: vec![(1, 3)],
            writing: Some(1),
        };
        assert_eq!(runs.files().unwrap(), files);
        let err = runs.get(b"k", &first).unwrap_err();
        assert!(err.contains("0000000000000000.run"), "{err}");
        assert_eq!(runs.bytes(), 3);
    }
}
