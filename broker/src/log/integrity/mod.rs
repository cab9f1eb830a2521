//! Start-up verification, and the offline check behind `herald verify`.
//!
//! At start the node reads every record once ([`scan`]): each seal must
//! hold, each topic's seqs must be dense from what retention kept to its
//! last message, and each topic must reach the head the acknowledged-heads
//! journal ([`super::acked`]) says this node acknowledged. What it finds:
//!
//! * single node: refuse to start, naming topics and ranges, unless the
//!   operator accepts the damage (`--accept-damage`): the lost ranges are
//!   then recorded, readers report them as gaps, and their seqs are never
//!   assigned again;
//! * cluster: lost messages are marked for repair and fetched back from a
//!   peer before the node reports ready (`cluster::catchup`).

pub mod report;
mod scan;
#[cfg(test)]
mod tests;
mod verify;

use std::{collections::HashMap, path::Path};

pub use self::{
    report::{Cause, Finding, Report},
    verify::{node_id_problem, verify, VerifyError},
};
use super::{
    acked::{self, AckedHeads, AckedRead},
    contain::contain,
    format,
    sled_log::{SledLog, SledOptions},
    LogError, LostRange, MessageLog,
};
use herald_core::Topic;

/// The format-2 acknowledged mark: a sum of heads, replaced by the journal.
const LEGACY_HIGH_WATER: &str = "acked-high-water";

/// How the node is going to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Alone: lost messages cannot come back.
    Single,
    /// In a cluster: lost messages are fetched back from peers.
    Cluster,
}

/// A log that passed the start-up check (or whose damage was accepted or
/// is being repaired), with its journal open.
pub struct Verified {
    /// The log.
    pub log: SledLog,
    /// The acknowledged-heads journal, a new chain started.
    pub journal: AckedHeads,
    /// What the check found (empty when clean).
    pub report: Report,
}

/// The check's findings and what they rest on.
struct Examined {
    report: Report,
    scan: scan::Scan,
    acked: AckedRead,
    /// sled could not be read through: nothing can be accepted or repaired.
    unreadable: bool,
}

/// Checks the records of an open log against themselves and the journal.
/// What the start-up check finds in `log` (for tests beside the code).
#[cfg(test)]
pub(crate) fn check(log: &SledLog) -> Report {
    examine(log).report
}

fn examine(log: &SledLog) -> Examined {
    let dir = log.dir();
    let mut findings = Vec::new();
    let mut unreadable = false;
    let scan = contain(|| scan::scan(log.tree(), log.runs())).unwrap_or_else(|panic| scan::Scan {
        failed: Some(format!(
            "the storage engine failed while reading it: {panic}"
        )),
        ..Default::default()
    });
    if let Some(failed) = &scan.failed {
        unreadable = true;
        findings.push(Finding::File {
            what: format!(
                "log/db: unreadable after {} records: {failed}",
                scan.records
            ),
        });
    }
    let mut heads_sum = 0u64;
    let mut log_heads: HashMap<&str, u64> = HashMap::new();
    for (name, t) in &scan.topics {
        let Ok(topic) = Topic::parse(name) else {
            continue;
        };
        let lost = |(from, to)| LostRange {
            topic: topic.clone(),
            from,
            to,
        };
        for range in t.missing_front() {
            findings.push(Finding::Missing {
                range: lost(range),
                cause: Cause::Front,
            });
        }
        for range in t.missing_between() {
            findings.push(Finding::Missing {
                range: lost(range),
                cause: Cause::Hole,
            });
        }
        for range in t.corrupt.iter().flat_map(|&r| scan::subtract(r, &t.lost)) {
            findings.push(Finding::Corrupt { range: lost(range) });
        }
        heads_sum += t.head();
        log_heads.insert(name, t.head());
    }
    findings.extend(scan.bad.iter().map(|b| Finding::BadRecord {
        what: b.what.clone(),
    }));
    // The write-ahead file's damage: what the records held is unknown, so
    // the check also finds their messages missing wherever it can.
    findings.extend(log.wal_problems().iter().map(|p| Finding::File {
        what: format!("write-ahead file {p}"),
    }));

    let acked = acked::read(dir);
    findings.extend(
        acked
            .problems
            .iter()
            .map(|p| Finding::File { what: p.clone() }),
    );
    let journal_expected = !log.created() && log.upgraded_from().is_none();
    if journal_expected && !scan.topics.is_empty() {
        for name in &acked.missing {
            findings.push(Finding::File {
                what: format!("{name} is missing"),
            });
        }
        if !acked.has_chain() {
            findings.push(Finding::File {
                what: format!(
                    "{} and {} hold no intact record: nothing proves the log holds every acknowledged message",
                    acked::FILES[0],
                    acked::FILES[1]
                ),
            });
        }
    }
    let mut tails: Vec<_> = acked
        .heads
        .iter()
        .filter(|(name, head)| log_heads.get(name.as_str()).copied().unwrap_or(0) < **head)
        .collect();
    tails.sort();
    for (name, &head) in tails {
        let Ok(topic) = Topic::parse(name) else {
            findings.push(Finding::File {
                what: format!("{}: holds an invalid topic name {name:?}", acked::FILES[0]),
            });
            continue;
        };
        let from = log_heads.get(name.as_str()).copied().unwrap_or(0) + 1;
        findings.push(Finding::Missing {
            range: LostRange {
                topic,
                from,
                to: head,
            },
            cause: Cause::Tail,
        });
    }
    if let Ok(text) = std::fs::read_to_string(dir.join(LEGACY_HIGH_WATER)) {
        match text.trim().parse::<u64>() {
            Ok(recorded) if recorded > heads_sum && !acked.found => {
                findings.push(Finding::HighWater {
                    recorded,
                    found: heads_sum,
                })
            }
            Ok(_) => {}
            Err(_) => findings.push(Finding::File {
                what: format!("{LEGACY_HIGH_WATER}: unreadable ({:?})", text.trim()),
            }),
        }
    }
    let report = Report {
        data_dir: dir.to_path_buf(),
        findings,
        topics: scan.topics.len(),
        records: scan.records,
        bytes: scan.bytes,
        unreadable,
    };
    Examined {
        report,
        scan,
        acked,
        unreadable,
    }
}

/// Opens the log in `dir`, checks it, and acts on what it finds as
/// described in the module doc. `accept_damage` is the operator's
/// `--accept-damage`.
pub fn open_verified(
    dir: &Path,
    options: &SledOptions,
    mode: Mode,
    accept_damage: bool,
) -> Result<Verified, LogError> {
    let refuse = |findings: Vec<Finding>| {
        LogError::Damaged(Box::new(Report {
            data_dir: dir.to_path_buf(),
            findings,
            ..Default::default()
        }))
    };
    let io_err = |e: std::io::Error| LogError::Open {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    if let Err(problem) = format::read_marker(dir) {
        if !accept_damage {
            return Err(refuse(vec![Finding::File { what: problem }]));
        }
        tracing::warn!(%problem, "accepted damage: the format marker is rewritten");
        format::reset_marker(dir).map_err(io_err)?;
    }
    if let Err(problem) = format::check_sled_conf(dir) {
        if !accept_damage {
            return Err(refuse(vec![Finding::File { what: problem }]));
        }
        tracing::warn!(%problem, "accepted damage: the storage engine's settings are written again");
        format::reset_sled_conf(dir).map_err(io_err)?;
    }
    let log = SledLog::open(dir, options)?;
    let examined = examine(&log);
    let report = examined.report.clone();
    if !report.is_clean() {
        let bad_records = report
            .findings
            .iter()
            .any(|f| matches!(f, Finding::BadRecord { .. }));
        let refused = examined.unreadable
            || match mode {
                Mode::Single => !accept_damage,
                Mode::Cluster => bad_records && !accept_damage,
            };
        if refused {
            return Err(LogError::Damaged(Box::new(report)));
        }
        act_on(&log, &examined, mode)?;
    } else {
        log.seed_stats(
            examined
                .scan
                .topics
                .iter()
                .filter_map(|(name, t)| Some((Topic::parse(name).ok()?, t.stats()))),
        );
    }
    for (name, t) in &examined.scan.topics {
        if let Ok(topic) = Topic::parse(name) {
            for &(from, to) in &t.lost {
                log.damage().add_accepted(&topic, from, to);
            }
        }
    }
    let mut heads: HashMap<Topic, u64> = log
        .heads()?
        .into_iter()
        .map(|(t, h)| (t, h.last_seq))
        .collect();
    for (name, &head) in &examined.acked.heads {
        if let Ok(topic) = Topic::parse(name) {
            let h = heads.entry(topic).or_default();
            *h = (*h).max(head);
        }
    }
    let journal = AckedHeads::start(dir, heads, &examined.acked).map_err(|e| LogError::Open {
        path: dir.join(acked::FILES[0]),
        reason: format!("cannot write the acknowledged-heads journal: {e}"),
    })?;
    // The journal now covers what the format-2 mark did.
    let _ = std::fs::remove_file(dir.join(LEGACY_HIGH_WATER));
    Ok(Verified {
        log,
        journal,
        report,
    })
}

/// Accepts the damage (single node) or marks it for repair (cluster).
fn act_on(log: &SledLog, examined: &Examined, mode: Mode) -> Result<(), LogError> {
    let report = &examined.report;
    let mut remove: Vec<Vec<u8>> = examined.scan.corrupt_keys.clone();
    remove.extend(examined.scan.bad.iter().map(|b| b.key.clone()));
    log.remove_keys(&remove)?;
    let lost = report.lost();
    match mode {
        Mode::Single => {
            for finding in &report.findings {
                tracing::warn!(topic = finding.topic().unwrap_or("-"), %finding, "accepted damage");
            }
            let ranges: Vec<LostRange> = lost.into_iter().map(|(r, _)| r).collect();
            log.accept_lost(&ranges)?;
        }
        Mode::Cluster => {
            for finding in &report.findings {
                match finding.lost() {
                    Some((range, tail)) => {
                        tracing::warn!(%range, %finding, "damaged log: will repair from a peer");
                        log.damage().add_pending(range, tail);
                    }
                    None => {
                        tracing::warn!(%finding, "damaged log: accepted (peers bring back what they hold)")
                    }
                }
            }
        }
    }
    // Damaged write-ahead segments go last: their intact records are in
    // runs, and what they lost is accounted for above.
    log.accept_wal_damage()?;
    Ok(())
}
