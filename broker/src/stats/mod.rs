//! Node stats for the dashboard: counters, rates and the busiest topics,
//! sampled once per [`STATS_INTERVAL`] and shared with the cluster.
//!
//! One [`Collector`] per node samples the metrics and the hub's topic heads;
//! [`run`] does so every [`STATS_INTERVAL`] and publishes each sample on a
//! `watch` channel. The HTTP stats routes read the latest sample from it,
//! and the cluster engine sends it to the peers (`P.s.<node>`), so a page
//! on any node shows cluster-wide numbers. [`merge`] sums a node's own live
//! numbers with the peers' latest samples.
//!
//! Rates come from consecutive samples, on the node that counted them:
//! summing the nodes' own rates stays smooth when a peer's sample arrives
//! late or a node joins, where differencing summed counters would spike.

pub mod merge;
mod topics;

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use self::topics::TopicRates;
use crate::{
    hub::Hub,
    metrics::{Metrics, Transport},
};

/// How often a node samples its stats (and sends them to its peers).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Topics a node ranks and shares per sample. The dashboard shows fewer;
/// the margin lets peers whose rankings differ a little at the edge still
/// add their subscriber counts to the rows shown.
pub const SHARED_TOPICS: usize = 20;

/// Per-transport values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerTransport<T> {
    /// WebSocket.
    pub ws: T,
    /// Server-Sent Events.
    pub sse: T,
    /// HTTP long-poll.
    pub poll: T,
}

impl<T> PerTransport<T> {
    /// Builds each value from its transport.
    pub fn from_fn(f: impl Fn(Transport) -> T) -> Self {
        PerTransport {
            ws: f(Transport::Ws),
            sse: f(Transport::Sse),
            poll: f(Transport::Poll),
        }
    }
}

impl<T: Copy + std::ops::Add<Output = T>> PerTransport<T> {
    /// The three values added up.
    pub fn sum(&self) -> T {
        self.ws + self.sse + self.poll
    }

    /// Adds `other` to each value.
    pub fn add(&mut self, other: &Self) {
        self.ws = self.ws + other.ws;
        self.sse = self.sse + other.sse;
        self.poll = self.poll + other.poll;
    }
}

/// Per-second rates over one sampling window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Messages sequenced by this node (as a topic's owner).
    pub publish: f64,
    /// Messages written to clients, all transports.
    pub delivery: f64,
    /// Slow-consumer actions (drops, conflations, deferrals, disconnects).
    pub slow_consumer_actions: f64,
}

impl Rates {
    /// Adds `other` to each rate.
    pub fn add(&mut self, other: &Rates) {
        self.publish += other.publish;
        self.delivery += other.delivery;
        self.slow_consumer_actions += other.slow_consumer_actions;
    }
}

/// One topic's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicStats {
    /// The topic.
    pub topic: String,
    /// Its last seq.
    pub last_seq: u64,
    /// The last message's publish time, ms since the Unix epoch.
    pub last_ts: u64,
    /// Messages per second over the last window.
    pub rate: f64,
    /// Subscriptions matching it on the reporting node (cluster-wide once
    /// merged).
    pub subscribers: usize,
}

/// The counters a sample carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Open client connections per transport.
    pub connections: PerTransport<i64>,
    /// Active (pattern, connection) subscriptions.
    pub subscriptions: i64,
    /// Messages this node sequenced.
    pub published_total: u64,
    /// Messages queued to subscriber mailboxes.
    pub fanned_out_total: u64,
    /// Messages written to clients, per transport.
    pub delivered_total: PerTransport<u64>,
    /// Subscribers disconnected because their queue overflowed.
    pub slow_consumers_total: u64,
    /// Messages dropped, conflated or deferred for slow consumers.
    pub slow_consumer_actions_total: u64,
}

impl Counters {
    /// Reads the node's counters now.
    pub fn read(m: &Metrics) -> Counters {
        Counters {
            connections: PerTransport::from_fn(|t| m.connections(t).get()),
            subscriptions: m.subscriptions.get(),
            published_total: m.messages_published.get(),
            fanned_out_total: m.messages_fanned_out.get(),
            delivered_total: PerTransport::from_fn(|t| m.delivered(t).get()),
            slow_consumers_total: m.slow_consumers.get(),
            slow_consumer_actions_total: m.slow_consumer_actions.get(),
        }
    }

    /// Adds `other` to each counter.
    pub fn add(&mut self, other: &Counters) {
        self.connections.add(&other.connections);
        self.subscriptions += other.subscriptions;
        self.published_total += other.published_total;
        self.fanned_out_total += other.fanned_out_total;
        self.delivered_total.add(&other.delivered_total);
        self.slow_consumers_total += other.slow_consumers_total;
        self.slow_consumer_actions_total += other.slow_consumer_actions_total;
    }

    /// Rates from `earlier` to these counters over `secs` seconds; a
    /// counter that went down (a restart) counts as 0.
    fn rates_since(&self, earlier: &Counters, secs: f64) -> Rates {
        let per_sec = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        Rates {
            publish: per_sec(self.published_total, earlier.published_total),
            delivery: per_sec(self.delivered_total.sum(), earlier.delivered_total.sum()),
            slow_consumer_actions: per_sec(
                self.slow_consumer_actions_total,
                earlier.slow_consumer_actions_total,
            ),
        }
    }
}

/// One node's sample: what it sends its peers every [`STATS_INTERVAL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStats {
    /// The node.
    pub node: String,
    /// When sampled, ms since the Unix epoch.
    pub ts: u64,
    /// The window the rates cover, ms (0 on the first sample).
    pub window_ms: u64,
    /// The counters when sampled.
    #[serde(flatten)]
    pub counters: Counters,
    /// Rates over the window.
    pub rates: Rates,
    /// The busiest topics, at most [`SHARED_TOPICS`]: by rate, then by
    /// last publish time.
    pub topics: Vec<TopicStats>,
}

/// Samples one node's stats; rates are over the time since the previous
/// sample.
pub struct Collector {
    node: String,
    hub: Arc<Hub>,
    previous: Mutex<Previous>,
}

struct Previous {
    at: Instant,
    counters: Counters,
    topics: TopicRates,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Collector {
    /// A collector for `node`, with its first (rateless) sample taken now.
    pub fn new(node: String, hub: Arc<Hub>) -> Self {
        let mut topics = TopicRates::default();
        topics.sample(&hub, 0.0);
        Collector {
            previous: Mutex::new(Previous {
                at: Instant::now(),
                counters: Counters::read(hub.metrics()),
                topics,
            }),
            node,
            hub,
        }
    }

    /// Takes a sample: counters now, rates since the previous sample.
    pub fn sample(&self) -> NodeStats {
        let counters = Counters::read(self.hub.metrics());
        let mut previous = self.previous.lock();
        let elapsed = previous.at.elapsed();
        let secs = elapsed.as_secs_f64();
        let (rates, topics) = if secs > 0.0 {
            let rates = counters.rates_since(&previous.counters, secs);
            (rates, previous.topics.sample(&self.hub, secs))
        } else {
            (Rates::default(), Vec::new())
        };
        previous.at = Instant::now();
        previous.counters = counters;
        drop(previous);
        NodeStats {
            node: self.node.clone(),
            ts: now_ms(),
            window_ms: elapsed.as_millis() as u64,
            counters,
            rates,
            topics,
        }
    }
}

/// The latest sample, as [`run`] publishes it.
pub type Latest = watch::Receiver<Arc<NodeStats>>;

/// A channel primed with a first sample, for [`run`] and its readers.
pub fn channel(collector: &Collector) -> (watch::Sender<Arc<NodeStats>>, Latest) {
    watch::channel(Arc::new(collector.sample()))
}

/// Samples every [`STATS_INTERVAL`] until every reader is gone.
pub async fn run(collector: Arc<Collector>, tx: watch::Sender<Arc<NodeStats>>) {
    let mut tick = tokio::time::interval(STATS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Sampling copies every topic head under the hub's read
                // lock: microseconds per thousand topics, once a second.
                tx.send_replace(Arc::new(collector.sample()));
            }
            _ = tx.closed() => return,
        }
    }
}
