//! Units of delivery work a subscriber runs in order: live messages,
//! replays from the log (paged), and gap notices.

use std::sync::Arc;

use super::{message::Message, subscriber::Event, topic::Topic};
use crate::log::{LogError, MessageLog};

/// Most messages read from the log per replay step, bounding the memory a
/// resume can take at once.
pub(super) const REPLAY_PAGE: usize = 256;

/// One unit of delivery work.
#[derive(Debug)]
pub(super) enum Work {
    /// A live message, next in its topic.
    Live(Arc<Message>),
    /// Deliver `from..=to` from the log.
    Replay {
        /// Topic.
        topic: Topic,
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
    },
    /// Tell the client `from..=to` were dropped for it (slow consumer).
    Gap {
        /// Topic.
        topic: Topic,
        /// First seq.
        from: u64,
        /// Last seq.
        to: u64,
    },
    /// Deliver the messages up to `to` with `ts >= floor` from the log.
    ReplaySinceTs {
        /// Topic.
        topic: Topic,
        /// Oldest ts owed.
        floor: u64,
        /// Last seq.
        to: u64,
        /// Report what retention removed before the first retained message
        /// when that message is owed (some removed ones may be too).
        report_trimmed: bool,
    },
}

impl Work {
    /// The topic this work is about.
    pub(super) fn topic(&self) -> &Topic {
        match self {
            Work::Live(m) => &m.topic,
            Work::Replay { topic, .. }
            | Work::ReplaySinceTs { topic, .. }
            | Work::Gap { topic, .. } => topic,
        }
    }

    /// Runs one unit of work, emitting about `budget` events at most;
    /// returns whether the work item is finished.
    pub(super) fn step(
        &mut self,
        log: &dyn MessageLog,
        out: &mut Vec<Event>,
        budget: usize,
    ) -> Result<bool, LogError> {
        let work = self;
        match work {
            Work::Live(message) => {
                out.push(Event::Message(message.clone()));
                Ok(true)
            }
            Work::Gap { topic, from, to } => {
                out.push(Event::Gap {
                    topic: topic.clone(),
                    from: *from,
                    to: *to,
                });
                Ok(true)
            }
            Work::ReplaySinceTs {
                topic,
                floor,
                to,
                report_trimmed,
            } => {
                let from = log.first_seq_since_ts(topic, *floor, *to)?;
                if let (Some(from), true) = (from, *report_trimmed) {
                    let first = log.read(topic, 1, 1)?.into_iter().next();
                    if from > 1 && first.is_some_and(|m| m.seq == from) {
                        out.push(Event::Gap {
                            topic: topic.clone(),
                            from: 1,
                            to: from - 1,
                        });
                    }
                }
                *work = Work::Replay {
                    topic: topic.clone(),
                    from: from.unwrap_or(*to + 1),
                    to: *to,
                };
                Ok(from.is_none())
            }
            Work::Replay { topic, from, to } => {
                if *from > *to {
                    return Ok(true);
                }
                let want = budget.clamp(1, REPLAY_PAGE).min((*to - *from + 1) as usize);
                let page = log.read(topic, *from, want)?;
                let exhausted = page.len() < want;
                for message in page {
                    if message.seq > *to {
                        *from = *to + 1;
                        break;
                    }
                    if message.seq > *from {
                        out.push(Event::Gap {
                            topic: topic.clone(),
                            from: *from,
                            to: message.seq - 1,
                        });
                    }
                    *from = message.seq + 1;
                    out.push(Event::Message(message));
                }
                if exhausted && *from <= *to {
                    // Dispatched messages are always in the log, so what is
                    // missing was removed by retention or accepted as lost
                    // (`--accept-damage`); the log refuses reads over
                    // anything else it knows is missing.
                    out.push(Event::Gap {
                        topic: topic.clone(),
                        from: *from,
                        to: *to,
                    });
                    *from = *to + 1;
                }
                Ok(*from > *to)
            }
        }
    }
}
