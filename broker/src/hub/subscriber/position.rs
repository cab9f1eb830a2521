//! Positions and cursors: where a subscriber stands on each topic, how a
//! cursor resumes it, and what it reports back to the client.

use super::{Event, Position, Subscriber};
use crate::hub::{
    cursor::{Cursor, MAX_CURSOR_LEN},
    topic::{Pattern, Topic},
};

impl Subscriber {
    /// Continues from `cursor`: call before subscribing. Topics in the
    /// cursor resume after their seq; other topics matched by patterns
    /// resume from the cursor's floor.
    pub fn resume_from(&mut self, cursor: Cursor) {
        self.floor = cursor.floor;
        self.resuming = true;
        for (topic, seq) in cursor.positions {
            let position = self.resumed_position(&topic, seq);
            self.positions.insert(topic, position);
        }
    }

    /// A position taken from a cursor. Its `delivered_ts` must not be
    /// below the real ts of message `seq`: cursors drop entries older than
    /// the floor, and dropping one whose message is newer than the floor
    /// would replay that message on the next resume. Read it from the log;
    /// if the message is gone, keep the entry for good (`u64::MAX`).
    pub(super) fn resumed_position(&self, topic: &Topic, seq: u64) -> Position {
        let delivered_ts = match self.log.read(topic, seq, 1) {
            Ok(page) => page
                .first()
                .filter(|m| m.seq == seq)
                .map_or(u64::MAX, |m| m.ts),
            Err(_) => u64::MAX,
        };
        Position {
            scheduled: seq,
            delivered: seq,
            delivered_ts: if seq == 0 { 0 } else { delivered_ts },
            pinned: false,
        }
    }

    /// Where the subscription to `pattern` (replaying from `start`) stands.
    /// Unpinned topics with nothing delivered yet are left out: the floor
    /// covers them, while `topic~0` would mean "replay all history".
    pub(super) fn cursor_for(&self, pattern: &Pattern, start: u64) -> Cursor {
        let positions = self
            .positions
            .iter()
            .filter(|(t, pos)| pattern.matches(t) && (pos.pinned || pos.delivered > 0))
            .map(|(t, pos)| (t.clone(), pos.delivered))
            .collect();
        Cursor {
            floor: start,
            positions,
        }
    }

    /// Declares that every event produced so far has been delivered, so the
    /// floor may advance now rather than at the next drain of the mailbox.
    pub(super) fn settle(&mut self) {
        if self.work.is_empty() {
            if let Some(floor) = self.pending_floor.take() {
                self.floor = self.floor.max(floor);
            }
        }
    }

    pub(super) fn record_delivery(&mut self, event: &Event) {
        let (topic, seq, ts) = match event {
            Event::Message(m) => (&m.topic, m.seq, Some(m.ts)),
            Event::Gap { topic, to, .. } => (topic, *to, None),
        };
        if let Some(pos) = self.positions.get_mut(topic) {
            pos.delivered = pos.delivered.max(seq);
            if let Some(ts) = ts {
                pos.delivered_ts = ts;
            }
        }
    }

    /// Where this subscriber stands: resuming from this cursor continues
    /// right after the last delivered event. Every topic delivered on is
    /// listed; only a cursor that would not fit [`MAX_CURSOR_LEN`] leaves
    /// out entries its floor covers (oldest first): resuming those from the
    /// floor repeats nothing and skips nothing.
    pub fn cursor(&self) -> Cursor {
        let mut entries: Vec<(&Topic, &Position)> = self
            .positions
            .iter()
            .filter(|(_, pos)| pos.pinned || pos.delivered > 0)
            .collect();
        let entry_len = |t: &Topic, p: &Position| 2 + t.as_str().len() + digits(p.delivered);
        let mut len =
            2 + digits(self.floor) + entries.iter().map(|(t, p)| entry_len(t, p)).sum::<usize>();
        if len > MAX_CURSOR_LEN {
            entries.sort_by_key(|(_, p)| (p.pinned, p.delivered_ts));
            entries.retain(|(t, p)| {
                let covered = !p.pinned && p.delivered_ts < self.floor;
                if len > MAX_CURSOR_LEN && covered {
                    len -= entry_len(t, p);
                    return false;
                }
                true
            });
        }
        Cursor {
            floor: self.floor,
            positions: entries
                .into_iter()
                .map(|(topic, pos)| (topic.clone(), pos.delivered))
                .collect(),
        }
    }
}

/// Decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}
