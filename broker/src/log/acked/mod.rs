//! The acknowledged-heads journal: proof of what this node acknowledged,
//! kept outside sled's files.
//!
//! sled's recovery stops at the first damaged record of its log and carries
//! on with what came before, so a damaged or truncated sled log can lose
//! acknowledged messages without an error. The journal records, for every
//! group commit and before its acks are released, the head of each topic
//! the commit wrote. At start-up every topic's head in the log must reach
//! its head here; a topic that falls short lost acknowledged messages.
//!
//! Layout: two preallocated, zero-filled files used in turn
//! (`acked-heads.0`, `acked-heads.1`). Records start on 512-byte
//! boundaries: `"HAH1" ‖ crc32c ‖ len ‖ counter ‖ kind ‖ n ‖ n × (topic len
//! u8 ‖ topic ‖ head u64)`, all little-endian, the crc covering everything
//! after itself up to `len`. A chain begins with a snapshot (every topic's
//! head) at the start of a file; each later record has the next counter.
//!
//! Appending is one `pwrite` into space that already exists, so no file
//! metadata changes; a background thread then waits for the record to reach
//! the device ([`journal`]). When a file fills up, a snapshot starts a new
//! chain at the beginning of the other file; the older chain stays readable
//! until the new snapshot is on disk.
//!
//! Reading takes the latest valid snapshot and follows its chain. A torn
//! final record (a crash mid-write) simply ends the chain: it was never
//! acknowledged. A valid record *beyond* the chain's end means a record in
//! between was damaged, and that is reported.

mod journal;

use std::{collections::HashMap, path::Path};

pub use self::journal::AckedHeads;

/// The journal's two files, beside the log.
pub const FILES: [&str; 2] = ["acked-heads.0", "acked-heads.1"];
const BLOCK: u64 = 512;
const MAGIC: &[u8; 4] = b"HAH1";
/// magic, crc, len, counter, kind, n.
const HEADER: usize = 4 + 4 + 4 + 8 + 1 + 4;
const MIN_FILE: u64 = 1 << 20;

const SNAPSHOT: u8 = 1;
const DELTA: u8 = 2;
/// A snapshot written by a clean shutdown.
const CLEAN: u8 = 3;

/// What the journal says, read at start-up.
#[derive(Debug, Default)]
pub struct AckedRead {
    /// Acknowledged head per topic name.
    pub heads: HashMap<String, u64>,
    /// The last record is a clean shutdown's.
    pub clean: bool,
    /// At least one journal file exists.
    pub found: bool,
    /// Journal files that do not exist.
    pub missing: Vec<&'static str>,
    /// Damage found in the journal itself.
    pub problems: Vec<String>,
    /// Counter of the chain's last record (0 when there is none).
    last_counter: u64,
    /// File holding the chain.
    chain_file: Option<usize>,
}

struct Record {
    file: usize,
    offset: u64,
    len: u64,
    counter: u64,
    kind: u8,
    entries: Vec<(String, u64)>,
}

fn padded(len: u64) -> u64 {
    len.div_ceil(BLOCK) * BLOCK
}

fn encode<'a>(
    counter: u64,
    kind: u8,
    entries: impl ExactSizeIterator<Item = (&'a str, u64)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + entries.len() * 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&counter.to_le_bytes());
    out.push(kind);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (topic, head) in entries {
        // Topic names are at most 255 bytes.
        out.push(topic.len() as u8);
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(&head.to_le_bytes());
    }
    let len = out.len() as u32;
    out[8..12].copy_from_slice(&len.to_le_bytes());
    let crc = crc32c::crc32c(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out.resize(padded(out.len() as u64) as usize, 0);
    out
}

/// The record starting at `bytes[0]` (at `offset` of file `file`), if it
/// is one and is intact.
fn decode(bytes: &[u8], file: usize, offset: u64) -> Option<Record> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return None;
    }
    let le32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let len = le32(8) as usize;
    if len < HEADER || len > bytes.len() || crc32c::crc32c(&bytes[8..len]) != le32(4) {
        return None;
    }
    let counter = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let kind = bytes[20];
    let n = le32(21) as usize;
    let mut entries = Vec::with_capacity(n.min(len / 10));
    let mut at = HEADER;
    for _ in 0..n {
        let tlen = *bytes.get(at)? as usize;
        let topic = std::str::from_utf8(bytes.get(at + 1..at + 1 + tlen)?).ok()?;
        let head = u64::from_le_bytes(bytes.get(at + 1 + tlen..at + 9 + tlen)?.try_into().ok()?);
        entries.push((topic.to_string(), head));
        at += 9 + tlen;
    }
    (at == len && matches!(kind, SNAPSHOT | DELTA | CLEAN)).then_some(Record {
        file,
        offset,
        len: len as u64,
        counter,
        kind,
        entries,
    })
}

fn scan_file(bytes: &[u8], file: usize, out: &mut Vec<Record>) {
    let mut offset = 0u64;
    while offset < bytes.len() as u64 {
        out.extend(decode(&bytes[offset as usize..], file, offset));
        offset += BLOCK;
    }
}

impl AckedRead {
    /// Whether an intact chain was found.
    pub fn has_chain(&self) -> bool {
        self.chain_file.is_some()
    }
}

/// Reads the journal in `dir` (see the module doc).
pub fn read(dir: &Path) -> AckedRead {
    let mut result = AckedRead::default();
    let mut records = Vec::new();
    for (i, name) in FILES.iter().enumerate() {
        match std::fs::read(dir.join(name)) {
            Ok(bytes) => {
                result.found = true;
                scan_file(&bytes, i, &mut records);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => result.missing.push(name),
            Err(e) => result.problems.push(format!("{name}: unreadable: {e}")),
        }
    }
    let Some(start) = records
        .iter()
        .filter(|r| r.kind != DELTA)
        .max_by_key(|r| r.counter)
    else {
        if let Some(r) = records.iter().max_by_key(|r| r.counter) {
            result.problems.push(format!(
                "{}: no intact snapshot, but record {} at offset {} is intact",
                FILES[r.file], r.counter, r.offset
            ));
        }
        return result;
    };
    let by_place: HashMap<(usize, u64), &Record> =
        records.iter().map(|r| ((r.file, r.offset), r)).collect();
    let mut at = start;
    loop {
        for (topic, head) in &at.entries {
            let h = result.heads.entry(topic.clone()).or_default();
            *h = (*h).max(*head);
        }
        result.clean = at.kind == CLEAN;
        match by_place.get(&(at.file, at.offset + padded(at.len))) {
            Some(next) if next.counter == at.counter + 1 && next.kind != SNAPSHOT => at = next,
            _ => break,
        }
    }
    result.last_counter = at.counter;
    result.chain_file = Some(at.file);
    if let Some(lost) = records
        .iter()
        .filter(|r| r.counter > at.counter)
        .min_by_key(|r| r.counter)
    {
        result.problems.push(format!(
            "{}: the record after {} (offset {}) is damaged; record {} at offset {} of {} is intact but cannot be reached",
            FILES[at.file],
            at.counter,
            at.offset + padded(at.len),
            lost.counter,
            lost.offset,
            FILES[lost.file]
        ));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_core::Topic;

    fn t(name: &str) -> Topic {
        Topic::parse(name).unwrap()
    }

    fn heads(read: &AckedRead) -> Vec<(String, u64)> {
        let mut v: Vec<_> = read.heads.iter().map(|(k, v)| (k.clone(), *v)).collect();
        v.sort();
        v
    }

    #[test]
    fn deltas_follow_the_snapshot_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let first = read(dir.path());
        assert!(!first.found && first.heads.is_empty());
        let mut j = AckedHeads::start(dir.path(), HashMap::from([(t("a"), 3)]), &first).unwrap();
        j.record(&[(t("a"), 5), (t("b"), 1)]).unwrap();
        j.record(&[(t("b"), 2)]).unwrap();
        drop(j);
        let r = read(dir.path());
        assert_eq!(heads(&r), vec![("a".into(), 5), ("b".into(), 2)]);
        assert!(r.problems.is_empty() && !r.clean);
        // A restart starts a new chain in the other file.
        let mut j =
            AckedHeads::start(dir.path(), HashMap::from([(t("a"), 5), (t("b"), 2)]), &r).unwrap();
        j.close_clean([(t("c"), 9)]).unwrap();
        let r = read(dir.path());
        assert!(r.clean && r.problems.is_empty());
        assert_eq!(heads(&r).len(), 3);
    }

    #[test]
    fn filling_a_file_moves_to_the_other_without_losing_heads() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = AckedHeads::start(dir.path(), HashMap::new(), &read(dir.path())).unwrap();
        // Each record takes one block: more than a file holds.
        let n = MIN_FILE / BLOCK * 3;
        for seq in 1..=n {
            j.record(&[(t(&format!("t{}", seq % 3)), seq)]).unwrap();
        }
        let r = read(dir.path());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.heads["t0"], n);
        assert_eq!(r.heads["t1"], n - 2);
    }

    #[test]
    fn a_damaged_middle_record_is_reported_and_a_torn_tail_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = AckedHeads::start(dir.path(), HashMap::new(), &read(dir.path())).unwrap();
        for seq in 1..=4 {
            j.record(&[(t("a"), seq)]).unwrap();
        }
        drop(j);
        let active = dir.path().join(FILES[read(dir.path()).chain_file.unwrap()]);
        let mut bytes = std::fs::read(&active).unwrap();
        // The last record (4th delta, block 4) torn: not a problem.
        bytes[4 * 512 + 30] ^= 0xff;
        std::fs::write(&active, &bytes).unwrap();
        let r = read(dir.path());
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.heads["a"], 3);
        // The 2nd delta damaged while later ones are intact: reported.
        bytes[4 * 512 + 30] ^= 0xff;
        bytes[2 * 512 + 30] ^= 0xff;
        std::fs::write(&active, &bytes).unwrap();
        let r = read(dir.path());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].contains("cannot be reached"),
            "{:?}",
            r.problems
        );
    }
}
