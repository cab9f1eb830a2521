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

/// Busiest first: by rate, then the most recent publish, then by name;
/// each side is `(rate, last_ts, topic)`.
fn rank(a: (f64, u64, &str), b: (f64, u64, &str)) -> Ordering {
    b.0.partial_cmp(&a.0)
        .unwrap_or(Ordering::Equal)
        .then(b.1.cmp(&a.1))
        .then_with(|| a.2.cmp(b.2))
}

/// [`rank`] over rows.
pub(super) fn busiest_first(a: &TopicStats, b: &TopicStats) -> Ordering {
    rank((a.rate, a.last_ts, &a.topic), (b.rate, b.last_ts, &b.topic))
}

impl TopicRates {
    /// Rates since the previous call, `secs` ago; returns the busiest
    /// [`SHARED_TOPICS`] with this node's subscriber counts. The first call
    /// only records the seqs (a topic loaded from the log at start-up has
    /// no rate yet); after it, a topic first seen counts from seq 0.
    pub(super) fn sample(&mut self, hub: &Hub, secs: f64) -> Vec<TopicStats> {
        let heads = hub.all_heads();
        // A topic's row is built only if it makes the cut: per topic, one
        // map update and a small tuple, no string.
        let mut rated: Vec<(Topic, u64, u64, f64)> = Vec::with_capacity(heads.len());
        for (topic, head) in heads {
            let before = self.seqs.insert(topic.clone(), head.last_seq);
            let before = match before {
                Some(seq) => seq,
                None if self.primed => 0,
                None => head.last_seq,
            };
            let rate = if secs > 0.0 {
                head.last_seq.saturating_sub(before) as f64 / secs
            } else {
                0.0
            };
            rated.push((topic, head.last_seq, head.last_ts, rate));
        }
        if self.seqs.len() > rated.len() {
            // Topics gone from the hub (retention dropped them).
            let live: std::collections::HashSet<&Topic> = rated.iter().map(|r| &r.0).collect();
            self.seqs.retain(|t, _| live.contains(t));
        }
        self.primed = true;
        let order = |a: &(Topic, u64, u64, f64), b: &(Topic, u64, u64, f64)| {
            rank((a.3, a.2, a.0.as_str()), (b.3, b.2, b.0.as_str()))
        };
        let keep = SHARED_TOPICS.min(rated.len());
        if keep < rated.len() {
            rated.select_nth_unstable_by(keep, order);
            rated.truncate(keep);
        }
        rated.sort_by(order);
        rated
            .into_iter()
            .map(|(topic, last_seq, last_ts, rate)| TopicStats {
                subscribers: hub.subscribers_of(&topic),
                topic: topic.as_str().to_string(),
                last_seq,
                last_ts,
                rate,
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
    fn rates_come_from_seq_growth() {
        use crate::{hub::TopicHead, metrics::Metrics};
        let hub = Hub::new(std::sync::Arc::new(Metrics::default()));
        let t = |s: &str| Topic::parse(s).unwrap();
        let head = |last_seq, last_ts| TopicHead { last_seq, last_ts };
        hub.load_heads([(t("old"), head(5, 100))]);
        let mut rates = TopicRates::default();
        // The first sample only records: history from before has no rate.
        let first = rates.sample(&hub, 0.0);
        assert_eq!((first[0].last_seq, first[0].rate), (5, 0.0));
        hub.load_heads([(t("old"), head(15, 300)), (t("new"), head(4, 200))]);
        let rows = rates.sample(&hub, 2.0);
        let got: Vec<(&str, f64)> = rows.iter().map(|r| (r.topic.as_str(), r.rate)).collect();
        assert_eq!(got, [("old", 5.0), ("new", 2.0)]);
        // Nothing new: both idle, the most recent first.
        let rows = rates.sample(&hub, 1.0);
        let got: Vec<(&str, f64)> = rows.iter().map(|r| (r.topic.as_str(), r.rate)).collect();
        assert_eq!(got, [("old", 0.0), ("new", 0.0)]);
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
