//! What the running node knows about damage to its log.
//!
//! * **Lost ranges** the operator accepted (`--accept-damage`): stored as
//!   `d` records, so they outlive restarts. Readers report them as gaps;
//!   history lists them.
//! * **Pending ranges** a clustered node is fetching back from its peers:
//!   a read that would step over one fails (the client retries, and gets
//!   the real messages once they are back), and the node is not ready.
//! * **Corrupt records met at run time**: each one is counted
//!   (`herald_log_corrupt_records_total`) and leaves the node not ready
//!   until an operator has looked (`herald verify`) and restarted it.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
};

use parking_lot::{Mutex, RwLock};

use super::LogError;
use crate::metrics::Metrics;
use herald_core::Topic;

/// A range of one topic's seqs that is missing or unreadable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LostRange {
    /// The topic.
    pub topic: Topic,
    /// First seq.
    pub from: u64,
    /// Last seq (inclusive).
    pub to: u64,
}

impl std::fmt::Display for LostRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.from == self.to {
            write!(f, "{} seq {}", self.topic, self.from)
        } else {
            write!(f, "{} seqs {}..={}", self.topic, self.from, self.to)
        }
    }
}

#[derive(Debug, Default)]
struct Ranges {
    /// Accepted as lost: `(from, to)`, sorted.
    accepted: Vec<(u64, u64)>,
    /// Waiting for repair: `(from, to)`, sorted.
    pending: Vec<(u64, u64)>,
    /// The first pending seq that lies beyond the log's last message (a lost
    /// tail): no read steps over it, catching up with the peers refills it.
    tail_from: Option<u64>,
}

/// The registry described in the module doc.
#[derive(Debug, Default)]
pub struct Damage {
    /// Set once any range is known, so reads of a healthy log skip the map.
    any: AtomicBool,
    ranges: RwLock<HashMap<Topic, Ranges>>,
    /// Why the node is degraded by corruption met at run time.
    degraded: Mutex<Option<String>>,
    metrics: OnceLock<Arc<Metrics>>,
}

fn overlaps(a: (u64, u64), from: u64, to: u64) -> bool {
    a.0 <= to && a.1 >= from
}

impl Damage {
    /// Counts corrupt records in `metrics` from now on.
    pub fn attach_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Records accepted-lost ranges (loaded from the log or just accepted).
    pub fn add_accepted(&self, topic: &Topic, from: u64, to: u64) {
        let mut map = self.ranges.write();
        let r = map.entry(topic.clone()).or_default();
        r.accepted.push((from, to));
        r.accepted.sort_unstable();
        self.any.store(true, Ordering::Release);
    }

    /// Records a range to be repaired before it may be read; `tail` when it
    /// lies beyond the log's last message.
    pub fn add_pending(&self, range: &LostRange, tail: bool) {
        let mut map = self.ranges.write();
        let r = map.entry(range.topic.clone()).or_default();
        r.pending.push((range.from, range.to));
        r.pending.sort_unstable();
        if tail {
            r.tail_from = Some(r.tail_from.map_or(range.from, |t| t.min(range.from)));
        }
        self.any.store(true, Ordering::Release);
    }

    /// Ranges still waiting for repair.
    pub fn pending(&self) -> Vec<LostRange> {
        self.pending_ranges().into_iter().map(|(r, _)| r).collect()
    }

    /// Ranges still waiting for repair, each with whether it is a lost tail
    /// (beyond the log's last message).
    pub fn pending_ranges(&self) -> Vec<(LostRange, bool)> {
        let map = self.ranges.read();
        let mut out: Vec<(LostRange, bool)> = map
            .iter()
            .flat_map(|(topic, r)| {
                r.pending.iter().map(|&(from, to)| {
                    let range = LostRange {
                        topic: topic.clone(),
                        from,
                        to,
                    };
                    (range, r.tail_from.is_some_and(|t| from >= t))
                })
            })
            .collect();
        out.sort();
        out
    }

    /// Marks seqs `from..=to` of `topic` as no longer pending (repaired,
    /// accepted, or below what retention keeps).
    pub fn resolve(&self, topic: &Topic, from: u64, to: u64) {
        let mut map = self.ranges.write();
        let Some(r) = map.get_mut(topic) else { return };
        let mut left = Vec::with_capacity(r.pending.len() + 1);
        for &(a, b) in &r.pending {
            if !overlaps((a, b), from, to) {
                left.push((a, b));
                continue;
            }
            if a < from {
                left.push((a, from - 1));
            }
            if b > to {
                left.push((to + 1, b));
            }
        }
        r.pending = left;
        if r.pending.is_empty() {
            r.tail_from = None;
        }
    }

    /// Whether seq `seq` of `topic` is in a pending range.
    pub fn is_pending(&self, topic: &Topic, seq: u64) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .ranges
                .read()
                .get(topic)
                .is_some_and(|r| r.pending.iter().any(|&p| overlaps(p, seq, seq)))
    }

    /// Fails when a read of `topic` covering `from..=to` would step over a
    /// pending range.
    pub fn check_read(&self, topic: &Topic, from: u64, to: u64) -> Result<(), LogError> {
        if !self.any.load(Ordering::Acquire) || from > to {
            return Ok(());
        }
        let map = self.ranges.read();
        let Some(r) = map.get(topic) else {
            return Ok(());
        };
        let below_tail = |p: &(u64, u64)| r.tail_from.is_none_or(|t| p.0 < t);
        match r
            .pending
            .iter()
            .find(|&&p| below_tail(&p) && overlaps(p, from, to))
        {
            Some(&(a, b)) => Err(LogError::Unrepaired(LostRange {
                topic: topic.clone(),
                from: a,
                to: b,
            })),
            None => Ok(()),
        }
    }

    /// Accepted-lost ranges of `topic` within `from..=to`, clipped to it.
    pub fn accepted_within(&self, topic: &Topic, from: u64, to: u64) -> Vec<(u64, u64)> {
        if !self.any.load(Ordering::Acquire) || from > to {
            return Vec::new();
        }
        self.ranges.read().get(topic).map_or_else(Vec::new, |r| {
            r.accepted
                .iter()
                .filter(|&&a| overlaps(a, from, to))
                .map(|&(a, b)| (a.max(from), b.min(to)))
                .collect()
        })
    }

    /// Counts a record that failed verification at run time and marks the
    /// node degraded.
    pub fn note_corrupt(&self, record: &str) {
        if let Some(m) = self.metrics.get() {
            m.log_corrupt_records.inc();
        }
        tracing::error!(record, "corrupt record in the log (checksum mismatch)");
        self.degraded.lock().get_or_insert_with(|| {
            format!("log damaged: {record} is corrupt; run `herald verify` and restart")
        });
    }

    /// Marks the node degraded for a reason other than one corrupt record.
    pub fn note_failure(&self, reason: String) {
        tracing::error!(%reason, "storage engine failure");
        self.degraded.lock().get_or_insert(reason);
    }

    /// Why the log cannot be trusted right now, if it cannot.
    pub fn reason(&self) -> Option<String> {
        if let Some(r) = self.degraded.lock().clone() {
            return Some(r);
        }
        let pending = self.pending();
        let first = pending.first()?;
        Some(match pending.len() {
            1 => format!("repairing damaged log: {first}"),
            n => format!("repairing damaged log: {first} and {} more", n - 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_ranges_block_reads_until_resolved() {
        let d = Damage::default();
        let t = Topic::parse("a.b").unwrap();
        d.check_read(&t, 1, u64::MAX).unwrap();
        d.add_pending(
            &LostRange {
                topic: t.clone(),
                from: 10,
                to: 20,
            },
            false,
        );
        d.add_pending(
            &LostRange {
                topic: t.clone(),
                from: 40,
                to: 50,
            },
            true,
        );
        d.check_read(&t, 30, u64::MAX).unwrap();
        d.check_read(&t, 1, 9).unwrap();
        d.check_read(&t, 21, 30).unwrap();
        let err = d.check_read(&t, 5, 12).unwrap_err().to_string();
        assert!(err.contains("a.b seqs 10..=20"), "{err}");
        assert!(d.reason().unwrap().contains("a.b seqs 10..=20"));
        d.resolve(&t, 12, 15);
        assert_eq!(d.pending().len(), 3);
        assert!(d.is_pending(&t, 11) && !d.is_pending(&t, 13) && d.is_pending(&t, 16));
        d.resolve(&t, 1, 100);
        assert!(d.pending().is_empty() && d.reason().is_none());
    }

    #[test]
    fn accepted_ranges_are_clipped_to_the_question() {
        let d = Damage::default();
        let t = Topic::parse("a").unwrap();
        d.add_accepted(&t, 5, 9);
        d.add_accepted(&t, 20, 20);
        assert_eq!(d.accepted_within(&t, 7, 30), vec![(7, 9), (20, 20)]);
        assert!(d.accepted_within(&t, 10, 19).is_empty());
    }
}
