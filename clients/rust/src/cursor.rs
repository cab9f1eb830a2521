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

/// Whether some topic matches both patterns.
pub(crate) fn overlap(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(x), Some(y)) if x == "*" || y == "*" || x == y => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// How far a subscription got: what to send on (re)connect and what to drop
/// as a duplicate or as older than its start.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    /// The subscription's floor: every matching message with `ts < floor`
    /// precedes it or was received. `None` until its start is known (a live
    /// subscription the server has not confirmed yet).
    pub floor: Option<u64>,
    /// Last seq received (or skipped by a gap) per topic.
    pub last: BTreeMap<String, u64>,
    /// The subscription's pattern.
    pattern: String,
    /// The pattern has no wildcard.
    concrete: bool,
    /// `Start::Since(n)` on a pattern: a topic not received yet starts
    /// after this seq. A resume cursor cannot say so for topics it does not
    /// list (the server replays those from their oldest retained message),
    /// so the client drops what precedes it.
    after: u64,
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
    /// A topic this subscription has not received yet, older than its
    /// floor: it precedes the subscription (another one on the same
    /// connection needs it).
    BeforeStart,
    /// The topic does not match the pattern.
    Unmatched,
}

impl Progress {
    pub fn new(pattern: &str, start: &Start) -> Result<Progress, Error> {
        let mut progress = Progress {
            floor: None,
            last: BTreeMap::new(),
            pattern: pattern.to_string(),
            concrete: is_concrete(pattern),
            after: 0,
        };
        match start {
            Start::Live => {}
            Start::Since(n) => {
                progress.floor = Some(0);
                if progress.concrete {
                    progress.last.insert(pattern.to_string(), *n);
                } else {
                    progress.after = *n;
                }
            }
            Start::Cursor(text) => {
                let cursor = Cursor::decode(text)
                    .map_err(|_| Error::InvalidArgument(format!("malformed cursor {text:?}")))?;
                progress.start_from(&cursor, false);
            }
        }
        Ok(progress)
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether the start is known (the subscription has a floor).
    pub fn started(&self) -> bool {
        self.floor.is_some()
    }

    /// Whether a message of `topic` was received (or its position given).
    pub fn tracks(&self, topic: &str) -> bool {
        self.last.contains_key(topic)
    }

    /// Starts from a cursor: the server's starting cursor of a live
    /// subscription, or the user's. Only topics the pattern matches count;
    /// a wildcard ignores `~0` entries, which a `subscribed` reply uses for
    /// topics it is about to replay (sent back, they would replay those
    /// topics from their first retained message instead of the floor).
    ///
    /// `keep_zero` keeps them: SSE and long-poll cursors list no
    /// placeholders, and a client moves a topic back to `~0` itself when
    /// its first message came with the starting answer.
    pub fn start_from(&mut self, cursor: &Cursor, keep_zero: bool) {
        self.floor = Some(cursor.floor);
        self.last = cursor
            .positions
            .iter()
            .filter(|(t, seq)| {
                matches(&self.pattern, t) && (self.concrete || keep_zero || **seq > 0)
            })
            .map(|(t, seq)| (t.clone(), *seq))
            .collect();
    }

    /// Raises the floor: every message matching the subscription with a
    /// smaller `ts` was delivered (a stream cursor's floor).
    pub fn raise_floor(&mut self, floor: u64) {
        if let Some(f) = &mut self.floor {
            *f = (*f).max(floor);
        }
    }

    /// The resume cursor, once there is a floor.
    pub fn cursor(&self) -> Option<Cursor> {
        Some(Cursor {
            floor: self.floor?,
            positions: self.last.clone(),
        })
    }

    /// Decides whether a delivered message is new for this subscription and
    /// records it.
    pub fn accept_message(&mut self, topic: &str, seq: u64, ts: u64) -> Accepted {
        if !matches(&self.pattern, topic) {
            return Accepted::Unmatched;
        }
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
                if self.floor.is_some_and(|f| ts < f) || seq <= self.after {
                    return Accepted::BeforeStart;
                }
                self.last.insert(topic.to_string(), seq);
                Accepted::Next
            }
        }
    }

    /// Records a gap on a topic this subscription tracks; returns the part
    /// not already covered, if any. A gap of a topic it has not received
    /// yet is not its own: the server resumes such topics from the floor
    /// without gap reports (protocol-spec §16.1), so a gap there concerns
    /// another subscription of the connection that listed the topic.
    pub fn accept_gap(&mut self, topic: &str, from: u64, to: u64) -> Option<(u64, u64)> {
        let last = self.last.get_mut(topic)?;
        if to <= *last {
            return None;
        }
        let from = from.max(*last + 1);
        *last = to;
        Some((from, to))
    }

    /// Records what the consumer took (the consumed side of a
    /// subscription: the runner already filtered it).
    pub fn record(&mut self, topic: &str, seq: u64) {
        let last = self.last.entry(topic.to_string()).or_insert(seq);
        *last = (*last).max(seq);
    }
}

/// One cursor from which the given subscriptions can resume over one
/// connection: for the subscriptions to one pattern (`group`, on a
/// WebSocket where every pattern has its own `subscribe`), or for all of
/// them (`None`: one SSE stream or long-poll loop for every pattern).
///
/// * The floor is the lowest floor of all the subscriptions (a concrete
///   subscription that tracks its topic does not need one), whatever the
///   group: a topic no cursor lists is replayed from the earliest start
///   among the patterns subscribed when it first shows up, so every
///   pattern of a connection resumes from the same floor.
/// * A topic (matching `group`) is listed at the lowest seq any
///   subscription tracks it at — or at `0` (every retained message) when a
///   subscription matches it without having received any of it: that one
///   needs the topic from its floor, which no seq expresses, and the
///   connection has one position per topic.
///
/// The stream resumed from it may carry more than a subscription needs;
/// each one's [`Progress::accept_message`] drops that, so nothing is lost or
/// delivered twice.
pub(crate) fn combine<'a, I>(subs: I, group: Option<&str>) -> Cursor
where
    I: IntoIterator<Item = &'a Progress> + Clone,
{
    let started = || subs.clone().into_iter().filter(|p| p.started());
    let floor = started()
        .filter(|p| !(p.concrete && p.tracks(&p.pattern)))
        .filter_map(|p| p.floor)
        .min()
        .or_else(|| started().filter_map(|p| p.floor).min())
        .unwrap_or(0);
    let mut positions: BTreeMap<String, u64> = BTreeMap::new();
    for p in started() {
        for (topic, seq) in &p.last {
            if group.is_none_or(|g| matches(g, topic)) {
                let entry = positions.entry(topic.clone()).or_insert(*seq);
                *entry = (*entry).min(*seq);
            }
        }
    }
    for (topic, seq) in positions.iter_mut() {
        if started().any(|p| matches(&p.pattern, topic) && !p.tracks(topic)) {
            *seq = 0;
        }
    }
    Cursor { floor, positions }
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
    fn overlapping_patterns() {
        assert!(overlap("a.*", "a.b"));
        assert!(overlap("a.>", "*.b.c"));
        assert!(overlap(">", "x"));
        assert!(overlap("a.*", "*.b"));
        assert!(!overlap("a.*", "a.b.c"));
        assert!(!overlap("a.b", "a.c"));
        assert!(!overlap("a.>", "a"));
        assert!(!overlap("a.*.c", "a.b"));
    }

    #[test]
    fn progress_drops_duplicates_and_trims_gaps() {
        let mut p = Progress::new("a.>", &Start::Live).unwrap();
        assert!(!p.started());
        p.start_from(&Cursor::decode("1~100").unwrap(), false);
        assert_eq!(p.accept_message("a.x", 1, 100), Accepted::Next);
        assert_eq!(p.accept_message("a.x", 2, 100), Accepted::Next);
        assert_eq!(p.accept_message("a.x", 2, 100), Accepted::Duplicate);
        assert_eq!(p.accept_message("a.x", 1, 100), Accepted::Duplicate);
        assert_eq!(p.accept_gap("a.x", 1, 2), None);
        assert_eq!(p.accept_gap("a.x", 1, 5), Some((3, 5)));
        assert_eq!(p.accept_message("a.x", 5, 100), Accepted::Duplicate);
        assert_eq!(p.accept_message("a.x", 6, 100), Accepted::Next);
        assert_eq!(p.accept_message("a.x", 9, 100), Accepted::AfterJump);
        assert_eq!(p.accept_message("a.x", 6, 100), Accepted::Duplicate);
        // Untracked topics: older than the floor is before the start, and
        // their gaps belong to other subscriptions of the connection.
        assert_eq!(p.accept_message("a.y", 4, 99), Accepted::BeforeStart);
        assert_eq!(p.accept_gap("a.y", 1, 3), None);
        assert_eq!(p.accept_message("b.y", 4, 200), Accepted::Unmatched);
        assert_eq!(p.cursor().unwrap().encode(), "1~100~a.x~9");
        p.raise_floor(200);
        p.raise_floor(150);
        assert_eq!(p.floor, Some(200));
    }

    #[test]
    fn a_wildcard_start_ignores_zero_entries_a_concrete_one_keeps_its_topic() {
        let mut w = Progress::new("a.>", &Start::Live).unwrap();
        w.start_from(&Cursor::decode("1~200~a.y~0~a.x~9~b.z~4").unwrap(), false);
        assert_eq!(w.cursor().unwrap().encode(), "1~200~a.x~9");
        let mut c = Progress::new("a.b", &Start::Live).unwrap();
        c.start_from(&Cursor::decode("1~100~a.b~0").unwrap(), false);
        assert_eq!(c.cursor().unwrap().encode(), "1~100~a.b~0");
        assert_eq!(c.accept_message("a.b", 1, 50), Accepted::Next);
    }

    #[test]
    fn combined_cursors() {
        let mut w = Progress::new("a.>", &Start::Live).unwrap();
        w.start_from(&Cursor::decode("1~500~a.x~3").unwrap(), false);
        let c = Progress::new("a.x", &Start::Since(1)).unwrap();
        let fresh = Progress::new("z.*", &Start::Live).unwrap();
        let all = [&w, &c, &fresh];
        // Lowest seq per topic; the concrete one needs no floor.
        assert_eq!(combine(all, None).encode(), "1~500~a.x~1");
        assert_eq!(combine(all, Some("a.x")).encode(), "1~500~a.x~1");
        assert_eq!(combine(all, Some("a.>")).encode(), "1~500~a.x~1");
        // A topic one tracks and another matches without having it: all
        // of it again.
        let mut c2 = Progress::new("a.b", &Start::Since(7)).unwrap();
        assert_eq!(combine([&w, &c2], None).encode(), "1~500~a.b~0~a.x~3");
        assert_eq!(w.accept_message("a.b", 8, 600), Accepted::Next);
        assert_eq!(c2.accept_message("a.b", 8, 600), Accepted::Next);
        assert_eq!(combine([&w, &c2], None).encode(), "1~500~a.b~8~a.x~3");
    }

    #[test]
    fn starts() {
        let p = Progress::new("a.b", &Start::Since(5)).unwrap();
        assert_eq!(p.cursor().unwrap().encode(), "1~0~a.b~5");
        let p = Progress::new("a.>", &Start::Since(0)).unwrap();
        assert_eq!(p.cursor().unwrap().encode(), "1~0");
        // On a pattern, each topic starts after the seq, whenever it first
        // shows up.
        let mut p = Progress::new("a.>", &Start::Since(3)).unwrap();
        assert_eq!(p.accept_message("a.x", 3, 10), Accepted::BeforeStart);
        assert_eq!(p.accept_message("a.x", 4, 11), Accepted::Next);
        assert_eq!(p.accept_message("a.y", 2, 12), Accepted::BeforeStart);
        assert_eq!(p.accept_message("a.y", 5, 13), Accepted::Next);
        let p = Progress::new("a.*", &Start::Cursor("1~9~a.b~4~c.d~1~a.z~0".into())).unwrap();
        assert_eq!(p.cursor().unwrap().encode(), "1~9~a.b~4");
        assert!(Progress::new("a.*", &Start::Cursor("nope".into())).is_err());
    }
}
