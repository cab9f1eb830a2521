//! Resume cursors for SSE and long-poll.
//!
//! A cursor is the position of one subscriber on every topic it follows:
//! `1~<floor>~<topic>~<seq>~<topic>~<seq>...` (`~` never occurs in a topic
//! and is URL-safe, so the text goes in `Last-Event-ID` and `?cursor=` as is).
//!
//! * `<topic>~<seq>`: every message of `topic` up to `seq` was delivered.
//! * `<floor>` (ms since the epoch): every message matching the subscription
//!   with `ts < floor` was delivered. A topic a pattern matches but the cursor
//!   does not list is resumed from its first message with `ts >= floor`. This
//!   is what lets a cursor cover pattern subscriptions without listing every
//!   topic the pattern could ever match.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::topic::Topic;

/// Longest cursor accepted, in bytes.
pub const MAX_CURSOR_LEN: usize = 16 * 1024;
const VERSION: &str = "1";

/// A decoded cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Everything matching with `ts < floor` was delivered.
    pub floor: u64,
    /// Last delivered seq per topic.
    pub positions: BTreeMap<Topic, u64>,
}

/// Why a cursor could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    /// Over [`MAX_CURSOR_LEN`].
    #[error("cursor is longer than {MAX_CURSOR_LEN} bytes")]
    TooLong,
    /// Not a cursor this server issued.
    #[error("malformed cursor: {0}")]
    Malformed(&'static str),
    /// A topic inside the cursor is invalid.
    #[error("cursor names an invalid topic: {0}")]
    Topic(#[from] crate::topic::TopicError),
}

impl Cursor {
    /// Encodes the cursor as URL- and header-safe text.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(24 + self.positions.len() * 24);
        let _ = write!(out, "{VERSION}~{}", self.floor);
        for (topic, seq) in &self.positions {
            let _ = write!(out, "~{topic}~{seq}");
        }
        out
    }

    /// Parses text produced by [`Cursor::encode`].
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        if text.len() > MAX_CURSOR_LEN {
            return Err(CursorError::TooLong);
        }
        let mut parts = text.split('~');
        if parts.next() != Some(VERSION) {
            return Err(CursorError::Malformed("unknown version"));
        }
        let floor = parse_u64(parts.next())?;
        let mut positions = BTreeMap::new();
        while let Some(topic) = parts.next() {
            let topic = Topic::parse(topic)?;
            let seq = parse_u64(parts.next())?;
            if positions.insert(topic, seq).is_some() {
                return Err(CursorError::Malformed("topic listed twice"));
            }
        }
        Ok(Cursor { floor, positions })
    }
}

fn parse_u64(part: Option<&str>) -> Result<u64, CursorError> {
    let part = part.ok_or(CursorError::Malformed("truncated"))?;
    if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CursorError::Malformed("expected a decimal number"));
    }
    part.parse()
        .map_err(|_| CursorError::Malformed("number out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_what_it_encodes() {
        let mut c = Cursor {
            floor: 1764000000123,
            ..Default::default()
        };
        c.positions.insert(Topic::parse("orders.eu").unwrap(), 42);
        c.positions.insert(Topic::parse("a").unwrap(), 0);
        assert_eq!(c.encode(), "1~1764000000123~a~0~orders.eu~42");
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "2~1",
            "1",
            "1~x",
            "1~1~a",
            "1~1~a~",
            "1~1~a~-1",
            "1~1~a*~1",
            "1~1~a~1~a~2",
            "1~99999999999999999999999",
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            Cursor::decode(&"1~1".repeat(10_000)),
            Err(CursorError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn round_trips(floor in any::<u64>(), entries in prop::collection::btree_map("[a-z]{1,5}(\\.[a-z0-9_-]{1,5}){0,3}", any::<u64>(), 0..20)) {
            let cursor = Cursor {
                floor,
                positions: entries.into_iter().map(|(t, s)| (Topic::parse(&t).unwrap(), s)).collect(),
            };
            prop_assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }

        #[test]
        fn never_panics_on_input(text in "\\PC{0,200}") {
            let _ = Cursor::decode(&text);
        }
    }
}
