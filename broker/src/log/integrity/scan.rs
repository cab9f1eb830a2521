//! The start-up scan: one pass over every record in the log, checking each
//! seal and that every topic's seqs are dense.
//!
//! Retention removes a topic's oldest messages only, and records the last
//! seq it removed (`h`). So the messages of a topic must run without a break
//! from just after that seq to the topic's last message; any other hole is
//! damage, unless the operator accepted it as lost (`d`).

use std::collections::BTreeMap;

use super::super::{
    keys::split_seq_key,
    record,
    runs::{RunError, RunFiles, RunRef},
    LogError, TopicStats,
};

/// What the scan saw of one topic.
#[derive(Debug, Default, Clone)]
pub(crate) struct TopicScan {
    /// First and last message seq present.
    pub first: Option<u64>,
    /// Last message seq present.
    pub last: u64,
    /// Messages present (intact or not).
    pub count: u64,
    /// Envelope bytes of the intact ones.
    pub bytes: u64,
    /// Last seq retention removed, from an intact `h` record.
    pub trimmed_to: Option<u64>,
    /// The `h` record is there but damaged.
    pub trim_record_damaged: bool,
    /// Ranges accepted as lost (`d`), sorted.
    pub lost: Vec<(u64, u64)>,
    /// Breaks between consecutive messages.
    pub holes: Vec<(u64, u64)>,
    /// Ranges of seqs whose run failed verification.
    pub corrupt: Vec<(u64, u64)>,
}

impl TopicScan {
    /// The topic's head as the log derives it.
    pub fn head(&self) -> u64 {
        let lost = self.lost.iter().map(|l| l.1).max().unwrap_or(0);
        self.last.max(self.trimmed_to.unwrap_or(0)).max(lost)
    }

    /// Seqs before the first message that retention did not remove, less
    /// what was accepted as lost.
    pub fn missing_front(&self) -> Vec<(u64, u64)> {
        let floor = self.trimmed_to.unwrap_or(0);
        match self.first.filter(|&f| f > floor + 1) {
            Some(first) => subtract((floor + 1, first - 1), &self.lost),
            None => Vec::new(),
        }
    }

    /// Breaks between messages, less what was accepted as lost.
    pub fn missing_between(&self) -> Vec<(u64, u64)> {
        self.holes
            .iter()
            .flat_map(|&range| subtract(range, &self.lost))
            .collect()
    }

    /// Retained size, as [`super::super::MessageLog::stats`] reports it.
    pub fn stats(&self) -> TopicStats {
        TopicStats {
            first_seq: self.first,
            count: self.count,
            bytes: self.bytes,
        }
    }
}

/// `range` less every range in `cut` (sorted).
pub(crate) fn subtract(range: (u64, u64), cut: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut from = range.0;
    for &(a, b) in cut {
        if b < from || a > range.1 {
            continue;
        }
        if a > from {
            out.push((from, a - 1));
        }
        from = b.saturating_add(1);
        if from > range.1 {
            return out;
        }
    }
    out.push((from, range.1));
    out
}

/// A record that is not a message and cannot be used.
#[derive(Debug, Clone)]
pub(crate) struct BadRecord {
    /// Its key, to remove it when the damage is accepted.
    pub key: Vec<u8>,
    /// What it is and what is wrong.
    pub what: String,
}

/// Everything the scan saw.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// By topic name.
    pub topics: BTreeMap<String, TopicScan>,
    /// Damaged or unparseable records other than messages.
    pub bad: Vec<BadRecord>,
    /// Keys of messages that failed verification.
    pub corrupt_keys: Vec<Vec<u8>>,
    /// Records read.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// sled failed part-way (the scan stopped there).
    pub failed: Option<String>,
}

fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).escape_debug().to_string()
}

fn valid_topic(name: &[u8]) -> Option<&str> {
    let name = std::str::from_utf8(name).ok()?;
    herald_core::Topic::parse(name).ok().map(|_| name)
}

impl Scan {
    fn bad(&mut self, key: &[u8], what: String) {
        self.bad.push(BadRecord {
            key: key.to_vec(),
            what,
        });
    }

    /// A run of messages, stored under its last seq: its ref, and its body
    /// in `runs`.
    fn run(&mut self, key: &[u8], value: &[u8], runs: &RunFiles) {
        let Some((name, last)) = split_seq_key(key).filter(|(n, _)| valid_topic(n).is_some())
        else {
            return self.bad(
                key,
                format!("message key {:?} is malformed", printable(key)),
            );
        };
        let t = self.topics.entry(printable(name)).or_default();
        let reference = record::open(key, value).ok().and_then(RunRef::decode);
        let body = match reference.map(|r| runs.get(key, &r)) {
            Some(Ok(body)) => Some(body),
            Some(Err(RunError::Io(e))) => {
                // Not evidence of damage: the scan cannot go on.
                self.failed = Some(e);
                return;
            }
            Some(Err(RunError::Damaged(_))) | None => None,
        };
        let run = reference
            .zip(body.as_deref())
            .and_then(|(r, body)| r.messages(last, body).ok());
        // A damaged ref's count is unknown: the run covers everything since
        // the run before it (or since what retention removed).
        let first = match (&run, reference.and_then(|r| r.first_seq(last))) {
            (Some(run), _) => run[0].seq,
            (None, Some(first)) => first,
            (None, None) => match t.first {
                Some(_) => t.last + 1,
                None => t.trimmed_to.unwrap_or(0) + 1,
            }
            .min(last),
        };
        match t.first {
            None => t.first = Some(first),
            Some(_) if first > t.last + 1 => t.holes.push((t.last + 1, first - 1)),
            Some(_) => {}
        }
        t.last = t.last.max(last);
        t.count += last + 1 - first;
        match run {
            Some(run) => t.bytes += run.iter().map(|m| m.envelope.len() as u64).sum::<u64>(),
            None => {
                t.corrupt.push((first, last));
                self.corrupt_keys.push(key.to_vec());
            }
        }
    }

    fn record(&mut self, key: &[u8], value: &[u8], runs: &RunFiles) {
        self.records += 1;
        self.bytes += (key.len() + value.len()) as u64;
        let body = record::open(key, value).ok();
        match key.first() {
            Some(b'm') => self.run(key, value, runs),
            Some(b'h') => match (valid_topic(&key[1..]), body.filter(|b| b.len() == 16)) {
                (Some(name), Some(b)) => {
                    let seq = u64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
                    self.topics.entry(name.to_string()).or_default().trimmed_to = Some(seq);
                }
                (Some(name), None) => {
                    self.topics
                        .entry(name.to_string())
                        .or_default()
                        .trim_record_damaged = true;
                    self.bad(key, format!("the retention record of {name} is corrupt"));
                }
                (None, _) => self.bad(
                    key,
                    format!("retention key {:?} is malformed", printable(key)),
                ),
            },
            Some(b'd') => {
                let parsed = split_seq_key(key).and_then(|(n, from)| Some((valid_topic(n)?, from)));
                match (parsed, body.filter(|b| b.len() == 8)) {
                    (Some((name, from)), Some(b)) => {
                        let to = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                        let t = self.topics.entry(name.to_string()).or_default();
                        t.lost.push((from, to));
                        t.lost.sort_unstable();
                    }
                    (Some((name, from)), None) => self.bad(
                        key,
                        format!("the lost-range record of {name} from {from} is corrupt"),
                    ),
                    (None, _) => self.bad(
                        key,
                        format!("lost-range key {:?} is malformed", printable(key)),
                    ),
                }
            }
            Some(b'i') => {
                if body.filter(|b| b.len() == 24).is_none() {
                    let topic = key[1..].split(|&b| b == 0).next().unwrap_or_default();
                    self.bad(
                        key,
                        format!("an idempotency record of {} is corrupt", printable(topic)),
                    );
                }
            }
            Some(b'x') => {
                if body.is_none() {
                    self.bad(
                        key,
                        format!("cluster record {:?} is corrupt", printable(&key[1..])),
                    );
                }
            }
            _ => self.bad(key, format!("unknown record {:?}", printable(key))),
        }
    }
}

/// Reads every record of `tree` once, and every run's body in `runs`.
/// Call inside [`super::super::contain::contain`]: sled may panic on
/// damaged pages.
pub(crate) fn scan(tree: &sled::Tree, runs: &RunFiles) -> Scan {
    let mut scan = Scan::default();
    let _pinned = runs.pin();
    for item in tree.iter() {
        match item {
            Ok((key, value)) => {
                scan.record(&key, &value, runs);
                if scan.failed.is_some() {
                    break;
                }
            }
            Err(e) => {
                scan.failed = Some(LogError::from(e).to_string());
                break;
            }
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtracting_accepted_ranges() {
        assert_eq!(subtract((1, 10), &[]), vec![(1, 10)]);
        assert_eq!(subtract((1, 10), &[(3, 4), (8, 20)]), vec![(1, 2), (5, 7)]);
        assert_eq!(subtract((5, 6), &[(1, 10)]), vec![]);
        assert_eq!(subtract((5, 9), &[(1, 5)]), vec![(6, 9)]);
    }

    #[test]
    fn holes_and_a_missing_front_are_found_but_retention_is_not_damage() {
        let t = TopicScan {
            first: Some(5),
            last: 20,
            trimmed_to: Some(2),
            holes: vec![(8, 9), (15, 15)],
            lost: vec![(15, 15)],
            ..Default::default()
        };
        assert_eq!(t.missing_front(), vec![(3, 4)]);
        assert_eq!(t.missing_between(), vec![(8, 9)]);
        assert_eq!(t.head(), 20);
        let trimmed = TopicScan {
            first: Some(5),
            last: 6,
            trimmed_to: Some(4),
            ..Default::default()
        };
        assert!(trimmed.missing_front().is_empty() && trimmed.missing_between().is_empty());
    }
}
