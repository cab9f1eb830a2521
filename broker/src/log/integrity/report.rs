//! What an integrity check found, as `herald verify` prints it and as the
//! error a node refuses to start with.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use crate::log::LostRange;

/// Why seqs are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// Between two messages of the topic (retention never makes those).
    Hole,
    /// Before the topic's first message and after what retention removed.
    Front,
    /// Acknowledged (the acked-heads journal says so) but beyond the end of
    /// the log: a lost tail.
    Tail,
}

/// One problem.
#[derive(Debug, Clone)]
pub enum Finding {
    /// Seqs that should be in the log and are not.
    Missing {
        /// The seqs.
        range: LostRange,
        /// Why they should be there.
        cause: Cause,
    },
    /// Messages present whose checksum fails.
    Corrupt {
        /// The seqs (consecutive).
        range: LostRange,
    },
    /// A record other than a message that is damaged or malformed.
    BadRecord {
        /// Which record and what is wrong.
        what: String,
    },
    /// A file that is missing, unreadable or damaged (the path relative to
    /// the data dir comes first).
    File {
        /// The problem.
        what: String,
    },
    /// A format-2 log holds fewer messages than its high-water mark says
    /// were acknowledged (the mark was a sum, so no topic can be named).
    HighWater {
        /// Sum of heads recorded as acknowledged.
        recorded: u64,
        /// Sum of heads found.
        found: u64,
    },
}

impl Finding {
    /// The topic it is about, if one.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Finding::Missing { range, .. } | Finding::Corrupt { range } => {
                Some(range.topic.as_str())
            }
            _ => None,
        }
    }

    /// The seq range it makes unavailable, and whether it is a lost tail.
    pub fn lost(&self) -> Option<(&LostRange, bool)> {
        match self {
            Finding::Missing { range, cause } => Some((range, *cause == Cause::Tail)),
            Finding::Corrupt { range } => Some((range, false)),
            _ => None,
        }
    }
}

fn seqs(range: &LostRange) -> String {
    if range.from == range.to {
        format!("seq {}", range.from)
    } else {
        format!(
            "seqs {}..={} ({} messages)",
            range.from,
            range.to,
            range.to - range.from + 1
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Missing { range, cause } => {
                let why = match cause {
                    Cause::Hole => "missing: a hole retention did not make",
                    Cause::Front => "missing: before the first message, after what retention removed",
                    Cause::Tail => "missing: acknowledged, but beyond the end of the log (high-water mismatch)",
                };
                write!(f, "{} {why}", seqs(range))
            }
            Finding::Corrupt { range } => write!(f, "{} fail their checksum", seqs(range)),
            Finding::BadRecord { what } | Finding::File { what } => f.write_str(what),
            Finding::HighWater { recorded, found } => write!(
                f,
                "high-water mismatch: the log holds fewer messages than were acknowledged \
                 (sum of seqs {found} < recorded {recorded}); which topics lost them is not recorded"
            ),
        }
    }
}

/// The result of checking a data dir.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The data dir.
    pub data_dir: PathBuf,
    /// Every problem found.
    pub findings: Vec<Finding>,
    /// Topics seen.
    pub topics: usize,
    /// Records read and verified.
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// The log cannot be read through: only a restore helps.
    pub unreadable: bool,
}

impl Report {
    /// Nothing found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The ranges of messages found missing or corrupt.
    pub fn lost(&self) -> Vec<(LostRange, bool)> {
        self.findings
            .iter()
            .filter_map(|f| f.lost().map(|(r, tail)| (r.clone(), tail)))
            .collect()
    }

    /// A one-line summary naming the first problems.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .findings
            .iter()
            .take(3)
            .map(|f| match f.topic() {
                Some(t) => format!("{t}: {f}"),
                None => f.to_string(),
            })
            .collect();
        if self.findings.len() > 3 {
            parts.push(format!("and {} more", self.findings.len() - 3));
        }
        parts.join("; ")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = self.data_dir.display();
        if self.is_clean() {
            return write!(
                f,
                "{dir}: clean ({} topics, {} records verified, {} bytes)",
                self.topics, self.records, self.bytes
            );
        }
        writeln!(
            f,
            "{dir}: DAMAGED ({} problems; {} topics, {} records read, {} bytes)",
            self.findings.len(),
            self.topics,
            self.records,
            self.bytes
        )?;
        let mut by_topic: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
        for finding in &self.findings {
            if let Some(topic) = finding.topic() {
                by_topic.entry(topic).or_default().push(finding);
            }
        }
        for (topic, findings) in by_topic {
            writeln!(f, "  topic {topic}:")?;
            for finding in findings {
                writeln!(f, "    {finding}")?;
            }
        }
        for finding in self.findings.iter().filter(|f| f.topic().is_none()) {
            writeln!(f, "  {finding}")?;
        }
        if self.unreadable {
            return write!(
                f,
                "Recovery: the log cannot be read; restore {dir} from a backup, or in a cluster \
                 move it aside and let the node copy everything from its peers"
            );
        }
        write!(
            f,
            "Recovery: stop the node and restore {dir} from a backup or from a peer's copy; \
             in a cluster, restarting the node repairs lost messages from its peers; or start \
             with --accept-damage to serve what is left (clients get a gap for every lost range)"
        )
    }
}
