//! The write-ahead file appends go to: one record per append, in segment
//! files beside sled (`wal/<segment, 16 hex digits>.wal`).
//!
//! A publish waits for one `write` and the `fdatasync` that covers it, and
//! never for sled: compaction ([`super::compact`]) writes what is staged as
//! runs, makes them durable, and only then deletes the segments whose
//! every record is in runs. Start-up replays the segments left behind.
//!
//! A record is `len u32 ‖ crc32c(len ‖ body) u32 ‖ body` (big-endian), the
//! body a pass ([`super::run`]). A record that fails its check with nothing
//! intact after it is the torn end of a write that was never acknowledged
//! (the append's sync never returned), and is cut off; one with intact
//! records after it is damage, reported by the start-up check.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
};

use parking_lot::Mutex;

/// A segment is closed once it holds this many bytes.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Header bytes before each body.
const HEADER: usize = 8;
/// The largest body a record may declare (a pass is far smaller).
const MAX_BODY: usize = 1 << 30;

fn checksum(body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&(body.len() as u32).to_be_bytes()), body)
}

fn segment_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:016x}.wal"))
}

/// The segment numbers in `dir`, ascending.
fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(no) = name
            .strip_suffix(".wal")
            .and_then(|n| u64::from_str_radix(n, 16).ok())
        {
            out.push(no);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What start-up found in the segments.
#[derive(Debug, Default)]
pub(super) struct Replayed {
    /// Intact bodies, oldest first, with their segment.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Damage: records that failed their check with intact ones after.
    pub problems: Vec<String>,
}

/// Reads every segment in `dir`: intact records, damage, and the torn
/// end of the last one (cut off).
fn read_all(dir: &Path, numbers: &[u64]) -> std::io::Result<Replayed> {
    let mut out = Replayed::default();
    for (i, &no) in numbers.iter().enumerate() {
        let path = segment_path(dir, no);
        let bytes = fs::read(&path)?;
        let mut at = 0;
        let mut bad: Option<usize> = None;
        while at + HEADER <= bytes.len() {
            let len = u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4")) as usize;
            let crc = u32::from_be_bytes(bytes[at + 4..at + 8].try_into().expect("4"));
            let end = at + HEADER + len;
            let intact = len > 0
                && len <= MAX_BODY
                && end <= bytes.len()
                && checksum(&bytes[at + HEADER..end]) == crc;
            if intact {
                if let Some(from) = bad.take() {
                    out.problems.push(format!(
                        "{}: the record at byte {from} is damaged (what it held is unknown)",
                        path.display()
                    ));
                }
                out.records.push((no, bytes[at + HEADER..end].to_vec()));
                at = end;
            } else {
                // Look for an intact record further on, byte by byte: only
                // then is this damage rather than a torn end.
                bad.get_or_insert(at);
                at += 1;
            }
        }
        let torn_from = bad.or((at < bytes.len()).then_some(at));
        if let Some(from) = torn_from {
            if i + 1 == numbers.len() {
                tracing::warn!(path = %path.display(), at = from, "cut off the torn end of the write-ahead file (a write that was never acknowledged)");
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(from as u64)?;
                f.sync_all()?;
            } else {
                out.problems.push(format!(
                    "{}: damaged from byte {from} to its end (what it held is unknown)",
                    path.display()
                ));
            }
        }
    }
    Ok(out)
}

struct Active {
    no: u64,
    /// The oldest segment not deleted.
    oldest: u64,
    file: Arc<File>,
    len: u64,
}

/// The write-ahead file.
pub(super) struct Wal {
    dir: PathBuf,
    active: Mutex<Active>,
    /// Why a sync failed, once one has; held across each sync. Linux
    /// reports a write-back error to one `fdatasync` and may then drop the
    /// pages, so a later sync that returns Ok proves nothing about earlier
    /// appends: every sync after a failure fails too, whichever thread met
    /// it, and of two overlapping syncs the one told nothing waits until
    /// the other's failure is recorded.
    sync_failed: Mutex<Option<String>>,
    /// Test hook: the next sync fails as the device would.
    #[cfg(test)]
    fail_next_sync: std::sync::atomic::AtomicBool,
}

fn create(dir: &Path, no: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, no))?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

impl Wal {
    /// Opens the write-ahead file in `dir` (created if absent) and reads
    /// what earlier runs left in it; new appends go to a new segment.
    pub fn open(dir: &Path) -> std::io::Result<(Wal, Replayed)> {
        fs::create_dir_all(dir)?;
        let numbers = segments(dir)?;
        let replayed = read_all(dir, &numbers)?;
        let no = numbers.last().map_or(0, |n| n + 1);
        let file = Arc::new(create(dir, no)?);
        let wal = Wal {
            dir: dir.to_path_buf(),
            active: Mutex::new(Active {
                no,
                oldest: numbers.first().copied().unwrap_or(no),
                file,
                len: 0,
            }),
            sync_failed: Mutex::new(None),
            #[cfg(test)]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
        };
        Ok((wal, replayed))
    }

    /// Appends one record; returns the segment it went to. Durable at the
    /// next [`Wal::sync`].
    pub fn append(&self, body: &[u8]) -> std::io::Result<u64> {
        let mut record = Vec::with_capacity(HEADER + body.len());
        record.extend_from_slice(&(body.len() as u32).to_be_bytes());
        record.extend_from_slice(&checksum(body).to_be_bytes());
        record.extend_from_slice(body);
        let mut a = self.active.lock();
        if a.len >= SEGMENT_BYTES {
            // A closed segment is whole on disk before the next one exists,
            // so only the last segment can end in a torn write.
            self.sync_file(&a.file)?;
            let next = a.no + 1;
            a.file = Arc::new(create(&self.dir, next)?);
            a.no = next;
            a.len = 0;
        }
        (&*a.file).write_all(&record)?;
        a.len += record.len() as u64;
        Ok(a.no)
    }

    /// Makes every earlier append durable (fdatasync, outside the lock;
    /// closed segments were synced when they were closed).
    pub fn sync(&self) -> std::io::Result<()> {
        let file = self.active.lock().file.clone();
        self.sync_file(&file)
    }

    /// Whether a sync has failed (every later one fails too).
    pub fn failed(&self) -> bool {
        self.sync_failed.lock().is_some()
    }

    fn sync_file(&self, file: &File) -> std::io::Result<()> {
        let mut failed = self.sync_failed.lock();
        if let Some(reason) = &*failed {
            return Err(std::io::Error::other(format!(
                "an earlier write-ahead sync failed: {reason}"
            )));
        }
        #[cfg(test)]
        let injected = self
            .fail_next_sync
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        #[cfg(not(test))]
        let injected = false;
        let result = if injected {
            Err(std::io::Error::other("fdatasync: Input/output error"))
        } else {
            file.sync_data()
        };
        if let Err(e) = &result {
            *failed = Some(e.to_string());
        }
        result
    }

    /// The segment appends go to now.
    pub fn active(&self) -> u64 {
        self.active.lock().no
    }

    /// The oldest segment not deleted.
    pub fn oldest(&self) -> u64 {
        self.active.lock().oldest
    }

    /// Deletes every segment before `no`: their records are in runs, and
    /// the runs are durable.
    pub fn release_before(&self, no: u64) -> std::io::Result<()> {
        let mut removed = false;
        for old in segments(&self.dir)?.into_iter().filter(|&s| s < no) {
            fs::remove_file(segment_path(&self.dir, old))?;
            removed = true;
        }
        if removed {
            File::open(&self.dir)?.sync_all()?;
        }
        let mut a = self.active.lock();
        a.oldest = a.oldest.max(no.min(a.no));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_a_torn_end_is_cut_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (wal, replayed) = Wal::open(dir.path()).unwrap();
            assert!(replayed.records.is_empty());
            for body in [&b"one"[..], b"two", b"three"] {
                wal.append(body).unwrap();
            }
            wal.sync().unwrap();
        }
        let path = segment_path(dir.path(), 0);
        // A torn write at the end: half a header.
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0]);
        fs::write(&path, &bytes).unwrap();
        {
            let (wal, replayed) = Wal::open(dir.path()).unwrap();
            let bodies: Vec<&[u8]> = replayed.records.iter().map(|r| &r.1[..]).collect();
            assert_eq!(bodies, vec![&b"one"[..], b"two", b"three"]);
            assert!(replayed.problems.is_empty());
            assert_eq!(wal.active(), 1, "appends go to a new segment");
            wal.append(b"four").unwrap();
            wal.sync().unwrap();
        }
        assert_eq!(fs::metadata(&path).unwrap().len() as usize, bytes.len() - 3);
        // A flipped byte in "two": damage, since "three" is intact after it.
        let mut bytes = fs::read(&path).unwrap();
        bytes[HEADER + 3 + HEADER + 1] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let (wal, replayed) = Wal::open(dir.path()).unwrap();
        let bodies: Vec<&[u8]> = replayed.records.iter().map(|r| &r.1[..]).collect();
        assert_eq!(bodies, vec![&b"one"[..], b"three", b"four"]);
        assert_eq!(replayed.problems.len(), 1, "{:?}", replayed.problems);
        // Released segments go.
        assert_eq!(wal.oldest(), 0);
        wal.release_before(2).unwrap();
        assert_eq!(segments(dir.path()).unwrap(), vec![2]);
        assert_eq!(wal.oldest(), 2);
    }

    #[test]
    fn after_a_failed_sync_every_later_sync_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        wal.append(b"one").unwrap();
        wal.sync().unwrap();
        wal.append(b"two").unwrap();
        wal.fail_next_sync
            .store(true, std::sync::atomic::Ordering::Release);
        let first = wal.sync().unwrap_err().to_string();
        assert!(first.contains("Input/output error"), "{first}");
        // The device would now report success: "two" may be gone all the same.
        let later = wal.sync().unwrap_err().to_string();
        assert!(
            later.contains("an earlier write-ahead sync failed") && later.contains(&first),
            "{later}"
        );
        wal.append(b"three").unwrap();
        assert!(wal.sync().is_err());
    }
}
