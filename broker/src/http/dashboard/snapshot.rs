//! What `GET /v1/stats` answers: this node's live numbers, and the cluster's
//! from the peers' latest samples.

use serde::Serialize;

use crate::{
    hub::Topic,
    state::AppState,
    stats::{
        merge::{self, Totals},
        now_ms, Counters, NodeStats, PerTransport, Rates, TopicStats,
    },
};

/// Rows of `top_topics`.
pub const TOP_TOPICS: usize = 10;

/// One node's numbers in the node list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSummary {
    /// Age of the numbers, ms (0 for the answering node: live).
    pub age_ms: u64,
    /// Open client connections, all transports.
    pub connections: i64,
    /// Active subscriptions.
    pub subscriptions: i64,
    /// Messages the node sequenced.
    pub published_total: u64,
    /// Messages the node wrote to its clients, all transports.
    pub delivered_total: u64,
    /// The node's rates over its last window.
    pub rates: Rates,
}

impl NodeSummary {
    fn new(counters: &Counters, rates: Rates, age_ms: u64) -> Self {
        NodeSummary {
            age_ms,
            connections: counters.connections.sum(),
            subscriptions: counters.subscriptions,
            published_total: counters.published_total,
            delivered_total: counters.delivered_total.sum(),
            rates,
        }
    }
}

/// One cluster member as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeInfo {
    /// Node id.
    pub id: String,
    /// Whether this is the node answering.
    #[serde(rename = "self")]
    pub this: bool,
    /// Heartbeating (always true: members drop out of the view when silent).
    pub live: bool,
    /// Accepts publishes; `None` for peers, whose heartbeats do not say.
    pub ready: Option<bool>,
    /// Its numbers; `None` for a peer whose stats have not arrived (yet).
    pub stats: Option<NodeSummary>,
}

/// Everything the dashboard shows, at one instant. Counters (`*_total`)
/// only grow while the process runs. The top-level numbers are this node's,
/// read live; `totals` add the peers' latest samples.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// This node's id.
    pub node: String,
    /// Wall clock, ms since the Unix epoch.
    pub ts: u64,
    /// Seconds since the process started.
    pub uptime_seconds: f64,
    /// Whether this node accepts publishes.
    pub ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_ready_reason: Option<String>,
    /// Running with `--nats`.
    pub cluster: bool,
    /// Live members (just this node when not clustered).
    pub nodes: Vec<NodeInfo>,
    /// Open client connections per transport.
    pub connections: PerTransport<i64>,
    /// Active (pattern, connection) subscriptions.
    pub subscriptions: i64,
    /// Topics with at least one message (every node holds every topic).
    pub topics: usize,
    /// Messages accepted and sequenced by this node.
    pub published_total: u64,
    /// Messages queued to subscriber mailboxes.
    pub fanned_out_total: u64,
    /// Messages written to clients, per transport.
    pub delivered_total: PerTransport<u64>,
    /// Subscribers disconnected because their queue overflowed.
    pub slow_consumers_total: u64,
    /// Messages dropped, conflated or deferred to catch-up for slow consumers.
    pub slow_consumer_actions_total: u64,
    /// This node's rates over its last sampling window.
    pub rates: Rates,
    /// When that window ended, ms since the Unix epoch.
    pub rates_ts: u64,
    /// Cluster-wide sums (equal to this node's numbers on a single node).
    pub totals: Totals,
    /// The busiest topics, cluster-wide.
    pub top_topics: Vec<TopicStats>,
}

impl Snapshot {
    /// Reads the node's current numbers and the peers' latest.
    pub fn take(state: &AppState) -> Snapshot {
        let counters = Counters::read(&state.metrics);
        let sample: std::sync::Arc<NodeStats> = state.stats.borrow().clone();
        let readiness = if state.leaving() {
            Err("shutting down".to_string())
        } else {
            state.engine.readiness()
        };
        let ready = readiness.is_ok();
        let mut members = state
            .engine
            .cluster_status()
            .map(|c| c.members)
            .unwrap_or_default();
        if members.is_empty() {
            members.push(state.node_id.clone());
        }
        let (peers, ages): (Vec<NodeStats>, Vec<u64>) = state
            .engine
            .peer_stats()
            .into_iter()
            .filter(|(s, _)| members.contains(&s.node))
            .unzip();
        let nodes = members
            .into_iter()
            .map(|id| {
                let this = id == state.node_id;
                let stats = if this {
                    Some(NodeSummary::new(&counters, sample.rates, 0))
                } else {
                    peers
                        .iter()
                        .zip(&ages)
                        .find(|(p, _)| p.node == id)
                        .map(|(p, age)| NodeSummary::new(&p.counters, p.rates, *age))
                };
                NodeInfo {
                    ready: this.then_some(ready),
                    id,
                    this,
                    live: true,
                    stats,
                }
            })
            .collect();
        let hub = &state.hub;
        let top_topics = merge::top_topics(
            &sample.topics,
            &peers,
            |row| {
                if let Ok(topic) = Topic::parse(&row.topic) {
                    let head = hub.head(&topic);
                    row.last_seq = row.last_seq.max(head.last_seq);
                    row.last_ts = row.last_ts.max(head.last_ts);
                    row.subscribers += hub.subscribers_of(&topic);
                }
            },
            TOP_TOPICS,
        );
        Snapshot {
            node: state.node_id.clone(),
            ts: now_ms(),
            uptime_seconds: state.lifecycle.started.elapsed().as_millis() as f64 / 1000.0,
            ready,
            not_ready_reason: readiness.err(),
            cluster: state.config.nats.is_some(),
            nodes,
            connections: counters.connections,
            subscriptions: counters.subscriptions,
            topics: hub.topic_count(),
            published_total: counters.published_total,
            fanned_out_total: counters.fanned_out_total,
            delivered_total: counters.delivered_total,
            slow_consumers_total: counters.slow_consumers_total,
            slow_consumer_actions_total: counters.slow_consumer_actions_total,
            rates: sample.rates,
            rates_ts: sample.ts,
            totals: merge::totals(&counters, &sample.rates, &peers),
            top_topics,
        }
    }
}
