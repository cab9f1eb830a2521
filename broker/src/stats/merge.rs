//! Cluster-wide numbers: a node's own live counters plus its peers' latest
//! samples.

use std::collections::HashMap;

use serde::Serialize;

use super::{topics::busiest_first, Counters, NodeStats, Rates, TopicStats};

/// Sums over every node that reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    /// Nodes counted: this one and each peer with a fresh sample.
    pub nodes: usize,
    /// The counters, summed. `published_total` counts each message once
    /// (only its topic's owner counts it).
    #[serde(flatten)]
    pub counters: Counters,
    /// Each node's rates over its last window, summed.
    pub rates: Rates,
}

/// Adds the peers' samples to this node's `counters` and `rates`.
pub fn totals(counters: &Counters, rates: &Rates, peers: &[NodeStats]) -> Totals {
    let mut out = Totals {
        nodes: 1 + peers.len(),
        counters: *counters,
        rates: *rates,
    };
    for peer in peers {
        out.counters.add(&peer.counters);
        out.rates.add(&peer.rates);
    }
    out
}

/// The `limit` busiest topics over this node's rows (`own`) and the peers'.
/// `local` fills in a row with this node's live view of the topic (its head
/// and its own subscriber count). Subscribers add up over the nodes; seqs,
/// times and rates take the highest report, since every node holds every
/// topic and a lagging replica only under-reports.
pub fn top_topics(
    own: &[TopicStats],
    peers: &[NodeStats],
    local: impl Fn(&mut TopicStats),
    limit: usize,
) -> Vec<TopicStats> {
    let mut rows: HashMap<String, TopicStats> = HashMap::new();
    let fresh = |row: &TopicStats| {
        let mut row = row.clone();
        row.subscribers = 0;
        local(&mut row);
        row
    };
    for row in own {
        rows.insert(row.topic.clone(), fresh(row));
    }
    for row in peers.iter().flat_map(|p| &p.topics) {
        let merged = rows.entry(row.topic.clone()).or_insert_with(|| fresh(row));
        merged.subscribers += row.subscribers;
        merged.last_seq = merged.last_seq.max(row.last_seq);
        merged.last_ts = merged.last_ts.max(row.last_ts);
        merged.rate = merged.rate.max(row.rate);
    }
    let mut rows: Vec<TopicStats> = rows.into_values().collect();
    rows.sort_by(busiest_first);
    rows.truncate(limit);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::PerTransport;

    fn row(topic: &str, seq: u64, rate: f64, subscribers: usize) -> TopicStats {
        TopicStats {
            topic: topic.into(),
            last_seq: seq,
            last_ts: seq,
            rate,
            subscribers,
        }
    }

    fn node(name: &str, published: u64, publish_rate: f64, topics: Vec<TopicStats>) -> NodeStats {
        NodeStats {
            node: name.into(),
            ts: 0,
            window_ms: 1000,
            counters: Counters {
                connections: PerTransport {
                    ws: 1,
                    sse: 2,
                    poll: 0,
                },
                published_total: published,
                ..Counters::default()
            },
            rates: Rates {
                publish: publish_rate,
                ..Rates::default()
            },
            topics,
        }
    }

    #[test]
    fn totals_add_every_node() {
        let me = node("a", 0, 0.0, vec![]);
        let peers = [node("b", 10, 5.0, vec![]), node("c", 7, 1.5, vec![])];
        let t = totals(&me.counters, &me.rates, &peers);
        assert_eq!(t.nodes, 3);
        assert_eq!(t.counters.published_total, 17);
        assert_eq!(t.counters.connections.sum(), 9);
        assert_eq!(t.rates.publish, 6.5);
    }

    #[test]
    fn topics_merge_subscribers_and_keep_the_newest_head() {
        let own = [row("t.a", 5, 1.0, 99), row("t.b", 2, 0.0, 99)];
        let peers = [
            node(
                "b",
                0,
                0.0,
                vec![row("t.a", 6, 2.0, 3), row("t.c", 1, 0.0, 4)],
            ),
            node("c", 0, 0.0, vec![row("t.a", 5, 1.0, 1)]),
        ];
        // This node has 2 subscribers on every topic; its own rows' counts
        // are replaced by the live ones.
        let rows = top_topics(&own, &peers, |r| r.subscribers += 2, 10);
        let a = rows.iter().find(|r| r.topic == "t.a").unwrap();
        assert_eq!((a.last_seq, a.rate, a.subscribers), (6, 2.0, 6));
        let c = rows.iter().find(|r| r.topic == "t.c").unwrap();
        assert_eq!(c.subscribers, 6);
        assert_eq!(rows[0].topic, "t.a");
        assert_eq!(top_topics(&own, &peers, |_| {}, 1).len(), 1);
    }
}
