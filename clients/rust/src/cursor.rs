//! Resume cursors (`1~<floor>~<topic>~<seq>...`) and a subscription's
//! progress.
//!
//! A cursor says: every message of a listed topic up to its seq was
//! received, and every message matching the subscription with `ts < floor`
//! was received. The server resumes listed topics after their seq and other
//! matching topics from their first message with `ts >= floor`. The client
//! keeps the floor the server gave it (the `subscribed` reply on WebSocket,
//! every event id on SSE, every answer on long-poll) and lists *every* topic
//! it has received, so a resume on any node and any transport repeats and
//! loses nothing.

use std::collections::BTreeMap;

use crate::{Error, Start};

/// A decoded cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Milliseconds since the epoch.
    pub floor: u64,
    /// Last seq received per topic (byte order, as the wire wants it).
    pub positions: BTreeMap<String, u64>,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let mut out = format!("1~{}", self.floor);
        for (topic, seq) in &self.positions {
            out.push('~');
            out.push_str(topic);
            out.push('~');
            out.push_str(&seq.to_string());
        }
        out
    }

    pub fn decode(text: &str) -> Result<Cursor, Error> {
        let bad = || Error::Protocol(format!("malformed cursor {text:?}"));
        let mut parts = text.split('~');
        if parts.next() != Some("1") {
            return Err(bad());
        }
        let floor = parts.next().and_then(|f| f.parse().ok()).ok_or_else(bad)?;
        let mut positions = BTreeMap::new();
        while let Some(topic) = parts.next() {
            let seq = parts.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
            if topic.is_empty() {
                return Err(bad());
            }
            positions.insert(topic.to_string(), seq);
        }
        Ok(Cursor { floor, positions })
    }
}

/// True when `pattern` has no wildcard token.
pub(crate) fn is_concrete(pattern: &str) -> bool {
    !pattern.split('.').any(|t| t == "*" || t == ">")
}

/// NATS-style match of a concrete topic against a pattern.
pub(crate) fn matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.');
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// How far a subscription got: what to send on (re)connect and what to drop
/// as a duplicate.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// The subscription's floor; `None` until the server first confirmed the
    /// subscription (then the start is still the user's [`Start`]).
    pub floor: Option<u64>,
    /// Last seq received (or skipped by a gap) per topic.
    pub last: BTreeMap<String, u64>,
    /// The subscription's pattern has no wildcard.
    concrete: bool,
}

/// What [`Progress::accept_message`] made of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accepted {
    /// New (the next seq of its topic, or the first one seen).
    Next,
    /// New, but seqs were skipped without a gap event.
    AfterJump,
    /// Already received: drop it.
    Duplicate,
}

/// Where a (re)connection starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resume {
    /// Fresh, live.
    Live,
    /// Fresh, after this seq of a concrete topic.
    Since(u64),
    /// From a cursor.
    Cursor(Cursor),
}

impl Progress {
    pub fn new(pattern: &str, start: &Start) -> Result<Progress, Error> {
        let mut progress = Progress {
            floor: None,
            last: BTreeMap::new(),
            concrete: is_concrete(pattern),
        };
        match start {
            Start::Live => {}
            Start::Since(n) => {
                if !is_concrete(pattern) && *n != 0 {
                    return Err(Error::InvalidArgument(format!(
                        "Start::Since({n}) needs a concrete topic; {pattern:?} is a pattern \
                         (use Start::Since(0) for everything retained, or Start::Cursor)"
                    )));
                }
                progress.floor = Some(0);
                if is_concrete(pattern) {
                    progress.last.insert(pattern.to_string(), *n);
                }
            }
            Start::Cursor(text) => {
                let cursor = Cursor::decode(text)
                    .map_err(|_| Error::InvalidArgument(format!("malformed cursor {text:?}")))?;
                progress.floor = Some(cursor.floor);
                // `~0` entries of a wildcard would replay those topics from
                // their first retained message; the floor covers them.
                let concrete = progress.concrete;
                progress.last = cursor
                    .positions
                    .into_iter()
                    .filter(|(t, seq)| matches(pattern, t) && (concrete || *seq > 0))
                    .collect();
            }
        }
        Ok(progress)
    }

    /// How the next connection starts.
    pub fn resume(&self) -> Resume {
        match self.floor {
            None => Resume::Live,
            Some(0) if self.concrete && self.last.len() == 1 => {
                // A concrete `Since(n)` that was never confirmed: plain
                // `since` works on every server, cursors too.
                let (_, n) = self.last.iter().next().expect("one entry");
                Resume::Since(*n)
            }
            Some(_) => Resume::Cursor(self.cursor().expect("floor is set")),
        }
    }

    /// The resume cursor, once there is a floor.
    pub fn cursor(&self) -> Option<Cursor> {
        Some(Cursor {
            floor: self.floor?,
            positions: self.last.clone(),
        })
    }

    /// Takes in a cursor the server sent: its floor, and for a concrete
    /// topic its position (the starting point of a live subscription).
    ///
    /// A wildcard subscription keeps only its own positions: the server's
    /// list adds nothing the client did not receive, except that a
    /// WebSocket `subscribed` cursor may list a topic it is about to replay
    /// as `<topic>~0`, which, sent back, would replay that topic from its
    /// first retained message instead of from the floor.
    pub fn merge(&mut self, cursor: &Cursor) {
        self.floor = Some(self.floor.map_or(cursor.floor, |f| f.max(cursor.floor)));
        if !self.concrete {
            return;
        }
        for (topic, seq) in &cursor.positions {
            let entry = self.last.entry(topic.clone()).or_insert(*seq);
            *entry = (*entry).max(*seq);
        }
    }

    /// Records a received message.
    pub fn accept_message(&mut self, topic: &str, seq: u64) -> Accepted {
        match self.last.get_mut(topic) {
            Some(last) if seq <= *last => Accepted::Duplicate,
            Some(last) => {
                let jumped = seq != *last + 1;
                *last = seq;
                if jumped {
                    Accepted::AfterJump
                } else {
                    Accepted::Next
                }
            }
            None => {
                self.last.insert(topic.to_string(), seq);
                Accepted::Next
            }
        }
    }

    /// Records a gap; returns the part not already covered, if any.
    pub fn accept_gap(&mut self, topic: &str, from: u64, to: u64) -> Option<(u64, u64)> {
        let from = match self.last.get(topic) {
            Some(last) if to <= *last => return None,
            Some(last) => from.max(*last + 1),
            None => from,
        };
        self.last.insert(topic.to_string(), to);
        Some((from, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let c = Cursor::decode("1~1764000000000~orders.eu~42~payments.eu~7").unwrap();
        assert_eq!(c.floor, 1764000000000);
        assert_eq!(c.positions["orders.eu"], 42);
        assert_eq!(c.encode(), "1~1764000000000~orders.eu~42~payments.eu~7");
        assert_eq!(Cursor::decode("1~0").unwrap().encode(), "1~0");
        for bad in ["", "2~0", "1", "1~x", "1~0~a", "1~0~a~x", "1~0~~1"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pattern_matching() {
        assert!(matches("orders.*", "orders.eu"));
        assert!(!matches("orders.*", "orders.eu.north"));
        assert!(matches("orders.>", "orders.eu.north"));
        assert!(!matches("orders.>", "orders"));
        assert!(matches(">", "a"));
        assert!(matches("*.eu", "orders.eu"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.c"));
        assert!(is_concrete("a.b") && !is_concrete("a.*") && !is_concrete(">"));
    }

    #[test]
    fn progress_drops_duplicates_and_trims_gaps() {
        let mut p = Progress::new("a.>", &Start::Live).unwrap();
        assert_eq!(p.resume(), Resume::Live);
        p.merge(&Cursor::decode("1~100").unwrap());
        assert_eq!(p.accept_message("a.x", 1), Accepted::Next);
        assert_eq!(p.accept_message("a.x", 2), Accepted::Next);
        assert_eq!(p.accept_message("a.x", 2), Accepted::Duplicate);
        assert_eq!(p.accept_message("a.x", 1), Accepted::Duplicate);
        assert_eq!(p.accept_gap("a.x", 1, 2), None);
        assert_eq!(p.accept_gap("a.x", 1, 5), Some((3, 5)));
        assert_eq!(p.accept_message("a.x", 5), Accepted::Duplicate);
        assert_eq!(p.accept_message("a.x", 6), Accepted::Next);
        assert_eq!(p.accept_message("a.x", 9), Accepted::AfterJump);
        assert_eq!(p.accept_message("a.x", 6), Accepted::Duplicate);
        assert_eq!(p.cursor().unwrap().encode(), "1~100~a.x~9");
        // A wildcard takes the floor only (`~0`: about to be replayed).
        p.merge(&Cursor::decode("1~200~a.y~0~a.x~9").unwrap());
        assert_eq!(p.cursor().unwrap().encode(), "1~200~a.x~9");
        p.merge(&Cursor::decode("1~150").unwrap());
        assert_eq!(p.floor, Some(200));
    }

    #[test]
    fn a_concrete_subscription_takes_the_server_position() {
        let mut p = Progress::new("a.b", &Start::Live).unwrap();
        p.merge(&Cursor::decode("1~100~a.b~0").unwrap());
        assert_eq!(
            p.resume(),
            Resume::Cursor(Cursor::decode("1~100~a.b~0").unwrap())
        );
        p.merge(&Cursor::decode("1~100~a.b~7").unwrap());
        assert_eq!(p.accept_message("a.b", 7), Accepted::Duplicate);
        assert_eq!(p.accept_message("a.b", 8), Accepted::Next);
    }

    #[test]
    fn starts() {
        let p = Progress::new("a.b", &Start::Since(5)).unwrap();
        assert_eq!(p.resume(), Resume::Since(5));
        let p = Progress::new("a.>", &Start::Since(0)).unwrap();
        assert_eq!(p.resume(), Resume::Cursor(Cursor::decode("1~0").unwrap()));
        assert!(Progress::new("a.>", &Start::Since(3)).is_err());
        let p = Progress::new("a.*", &Start::Cursor("1~9~a.b~4~c.d~1~a.z~0".into())).unwrap();
        assert_eq!(
            p.resume(),
            Resume::Cursor(Cursor::decode("1~9~a.b~4").unwrap())
        );
        assert!(Progress::new("a.*", &Start::Cursor("nope".into())).is_err());
    }
}
