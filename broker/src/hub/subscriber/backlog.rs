//! What a subscriber owes from the log besides live messages: the backlog
//! of a new or caught-up pattern, and what the mailbox evicted.

use super::{Position, Subscriber};
use crate::hub::{
    mailbox::Drained,
    replay::Work,
    topic::{Pattern, Topic},
};

impl Subscriber {
    /// Where replay starts for a topic first seen now: the earliest start
    /// of the patterns matching it. Only messages in flight when a pattern
    /// was subscribed (or published while a resumed client was away) can
    /// lie between that start and the live message, so this is cheap.
    pub(super) fn first_seen_floor(&self, topic: &Topic) -> u64 {
        self.patterns
            .iter()
            .filter(|(p, _)| p.matches(topic))
            .map(|(_, start)| *start)
            .min()
            .unwrap_or(self.floor)
    }

    /// A topic seen for the first time at `seq` (live, or as the first seq
    /// the mailbox dropped): its messages before `seq` since the matching
    /// patterns' start are owed, read from the log.
    pub(super) fn owe_before_first_seen(&mut self, topic: &Topic, seq: u64) {
        if seq > 1 {
            self.work.push_back(Work::ReplaySinceTs {
                topic: topic.clone(),
                floor: self.first_seen_floor(topic),
                to: seq - 1,
            });
        }
    }

    /// Schedules from the log everything `pattern` matches that this
    /// subscriber has not been given: tracked topics after their position,
    /// untracked ones from their first message with `ts >= start`.
    pub(super) fn schedule_backlog(&mut self, pattern: &Pattern, start: u64) {
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
                None if head.last_ts >= start => {
                    self.work.push_back(Work::ReplaySinceTs {
                        topic: topic.clone(),
                        floor: start,
                        to: head.last_seq,
                    });
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
