//! What a subscriber owes from the log besides live messages: the backlog
//! of a new or caught-up pattern, and what the mailbox evicted.

use super::{Position, Start, Subscriber};
use crate::hub::{
    mailbox::Drained,
    replay::Work,
    topic::{Pattern, Topic},
};

impl Subscriber {
    /// What the patterns matching `topic` owe of it, as one start: the
    /// smallest `after_seq` if any of them counts by seq (delivering more,
    /// never less, than each owes), else the earliest `ts`.
    fn first_seen_start(&self, topic: &Topic) -> Start {
        let matching = || {
            self.patterns
                .iter()
                .filter(|(p, _)| p.matches(topic))
                .map(|(_, start)| *start)
        };
        let report_trimmed = matching().any(|s| s.report_trimmed);
        match matching().filter_map(|s| s.after_seq).min() {
            Some(n) => Start {
                ts: 0,
                after_seq: Some(n),
                report_trimmed,
            },
            None => Start {
                ts: matching().map(|s| s.ts).min().unwrap_or(self.floor),
                after_seq: None,
                report_trimmed,
            },
        }
    }

    /// Whether a live message of a topic not tracked yet is owed by any
    /// pattern matching it. Only messages in flight when a pattern was
    /// subscribed (or published while a resumed client was away) can lie
    /// between a pattern's start and the live message, so this is cheap.
    pub(super) fn owed_first_seen(&self, topic: &Topic, seq: u64, ts: u64) -> bool {
        self.patterns
            .iter()
            .any(|(p, start)| p.matches(topic) && start.owes(seq, ts))
    }

    /// A topic seen for the first time at `seq` (live, or as the first seq
    /// the mailbox dropped): what the matching patterns owe of it before
    /// `seq` is read from the log.
    pub(super) fn owe_before_first_seen(&mut self, topic: &Topic, seq: u64) {
        if seq > 1 {
            let start = self.first_seen_start(topic);
            self.owe(topic, start, seq - 1);
        }
    }

    /// Schedules what `start` owes of `topic` (not tracked yet) up to `to`.
    fn owe(&mut self, topic: &Topic, start: Start, to: u64) {
        match start.after_seq {
            Some(n) if n < to => self.work.push_back(Work::Replay {
                topic: topic.clone(),
                from: n + 1,
                to,
            }),
            Some(_) => {}
            None => self.work.push_back(Work::ReplaySinceTs {
                topic: topic.clone(),
                floor: start.ts,
                to,
                report_trimmed: start.report_trimmed,
            }),
        }
    }

    /// Schedules from the log everything `pattern` matches that this
    /// subscriber has not been given: tracked topics after their position,
    /// untracked ones as `start` owes.
    pub(super) fn schedule_backlog(&mut self, pattern: &Pattern, start: Start) {
        for (topic, head) in self.hub.heads_matching(pattern) {
            match self.positions.get_mut(&topic) {
                Some(pos) if head.last_seq > pos.scheduled => {
                    self.work.push_back(Work::Replay {
                        topic,
                        from: pos.scheduled + 1,
                        to: head.last_seq,
                    });
                    pos.scheduled = head.last_seq;
                }
                Some(_) => {}
                None if start.owes(head.last_seq, head.last_ts) => {
                    self.owe(&topic, start, head.last_seq);
                    self.positions.insert(
                        topic,
                        Position {
                            scheduled: head.last_seq,
                            ..Default::default()
                        },
                    );
                }
                None => {}
            }
        }
    }

    /// A `since_ts` on a concrete topic: what retention removed before the
    /// first retained message may be owed (that message is), so it is
    /// reported as a gap before the rest.
    pub(super) fn owe_trimmed(&mut self, topic: &Topic, ts: u64) {
        if let Some(first) = self
            .log
            .read(topic, 1, 1)
            .ok()
            .and_then(|p| p.into_iter().next())
        {
            if first.seq > 1 && first.ts >= ts {
                self.work.push_back(Work::Gap {
                    topic: topic.clone(),
                    from: 1,
                    to: first.seq - 1,
                });
            }
        }
    }

    /// The mailbox dropped messages (`drop_oldest`, `conflate`) or all of
    /// them (`catch_up`): account for both before taking new ones.
    pub(super) fn absorb(&mut self, drained: Drained) {
        if drained.lagging {
            // Catch up from the log, exactly as a resume would.
            let patterns = self.patterns.clone();
            for (pattern, start) in &patterns {
                self.schedule_backlog(pattern, *start);
            }
        }
        for skip in drained.skipped {
            match self.positions.get_mut(&skip.topic) {
                Some(pos) if skip.up_to > pos.scheduled => {
                    if skip.report {
                        self.work.push_back(Work::Gap {
                            topic: skip.topic.clone(),
                            from: pos.scheduled + 1,
                            to: skip.up_to,
                        });
                    }
                    pos.scheduled = skip.up_to;
                }
                Some(_) => {}
                None => {
                    // First seen, and its first messages were dropped: what
                    // came before them is owed as for any first-seen topic.
                    self.owe_before_first_seen(&skip.topic, skip.from);
                    if skip.report {
                        self.work.push_back(Work::Gap {
                            topic: skip.topic.clone(),
                            from: skip.from,
                            to: skip.up_to,
                        });
                    }
                    self.positions.insert(
                        skip.topic,
                        Position {
                            scheduled: skip.up_to,
                            ..Default::default()
                        },
                    );
                }
            }
        }
    }
}
