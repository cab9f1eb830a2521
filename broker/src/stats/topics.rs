//! Per-topic rates from the hub's topic heads, and the busiest topics.
//!
//! Every node holds every topic's messages with the same seqs, so any node
//! can rate any topic from its own heads: the seq's growth between two
//! samples is the number of messages published in between.

use std::{cmp::Ordering, collections::HashMap};

use super::{TopicStats, SHARED_TOPICS};
use crate::hub::{Hub, Topic};

/// The seqs of the previous sample.
#[derive(Default)]
pub(super) struct TopicRates {
    seqs: HashMap<Topic, u64>,
    primed: bool,
}

/// Busiest first: by rate, then the most recent publish, then by name.
pub(super) fn busiest_first(a: &TopicStats, b: &TopicStats) -> Ordering {
    b.rate
        .partial_cmp(&a.rate)
        .unwrap_or(Ordering::Equal)
        .then(b.last_ts.cmp(&a.last_ts))
        .then_with(|| a.topic.cmp(&b.topic))
}

impl TopicRates {
    /// Rates since the previous call, `secs` ago; returns the busiest
    /// [`SHARED_TOPICS`] with this node's subscriber counts. The first call
    /// only records the seqs (a topic loaded from the log at start-up has
    /// no rate yet); after it, a topic first seen counts from seq 0.
    pub(super) fn sample(&mut self, hub: &Hub, secs: f64) -> Vec<TopicStats> {
        let heads = hub.all_heads();
        let mut rows: Vec<(Topic, TopicStats)> = Vec::with_capacity(heads.len().min(1024));
        let mut seqs = HashMap::with_capacity(heads.len());
        for (topic, head) in heads {
            let before = if self.primed {
                self.seqs.get(&topic).copied().unwrap_or(0)
            } else {
                head.last_seq
            };
            let rate = if secs > 0.0 {
                head.last_seq.saturating_sub(before) as f64 / secs
            } else {
                0.0
            };
            seqs.insert(topic.clone(), head.last_seq);
            rows.push((
                topic.clone(),
                TopicStats {
                    topic: topic.as_str().to_string(),
                    last_seq: head.last_seq,
                    last_ts: head.last_ts,
                    rate,
                    subscribers: 0,
                },
            ));
        }
        self.seqs = seqs;
        self.primed = true;
        let keep = SHARED_TOPICS.min(rows.len());
        if keep < rows.len() {
            rows.select_nth_unstable_by(keep, |a, b| busiest_first(&a.1, &b.1));
            rows.truncate(keep);
        }
        rows.sort_by(|a, b| busiest_first(&a.1, &b.1));
        rows.into_iter()
            .map(|(topic, mut row)| {
                row.subscribers = hub.subscribers_of(&topic);
                row
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(topic: &str, rate: f64, last_ts: u64) -> TopicStats {
        TopicStats {
            topic: topic.into(),
            last_seq: 1,
            last_ts,
            rate,
            subscribers: 0,
        }
    }

    #[test]
    fn busiest_are_the_fastest_then_the_most_recent() {
        let mut rows = [
            row("idle.old", 0.0, 1),
            row("fast", 50.0, 5),
            row("idle.new", 0.0, 9),
            row("slow", 2.0, 8),
            row("a.tie", 0.0, 9),
        ];
        rows.sort_by(busiest_first);
        let order: Vec<&str> = rows.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(order, ["fast", "slow", "a.tie", "idle.new", "idle.old"]);
    }
}
