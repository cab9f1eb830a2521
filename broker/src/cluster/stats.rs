//! Dashboard stats across the cluster.
//!
//! Each node sends every stats sample (one a second, a few KiB at most) on
//! `P.s.<node>` and keeps the latest sample of each peer. A sample counts
//! while its node is in the membership view and it is younger than
//! [`max_age`]: a stopped node's numbers leave the totals with it, and a
//! node that stops sending while still heartbeating drops out of them after
//! a few seconds instead of freezing them.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use parking_lot::Mutex;

use super::Shared;
use crate::stats::{self, NodeStats};

/// How old a peer's sample may be and still count.
pub(super) fn max_age(member_timeout: Duration) -> Duration {
    member_timeout.max(stats::STATS_INTERVAL * 3)
}

/// The peers' latest samples.
#[derive(Default)]
pub(crate) struct PeerStats {
    latest: Mutex<HashMap<String, (Arc<NodeStats>, Instant)>>,
}

impl PeerStats {
    fn store(&self, sample: NodeStats) {
        self.latest
            .lock()
            .insert(sample.node.clone(), (Arc::new(sample), Instant::now()));
    }

    /// Samples of the `members` (ids) at most `limit` old, each with its
    /// age in ms; forgets every other node's.
    pub(super) fn fresh(&self, members: &[String], limit: Duration) -> Vec<(NodeStats, u64)> {
        let mut latest = self.latest.lock();
        latest.retain(|node, (_, at)| members.contains(node) && at.elapsed() <= limit);
        let mut out: Vec<(NodeStats, u64)> = latest
            .values()
            .map(|(s, at)| ((**s).clone(), at.elapsed().as_millis() as u64))
            .collect();
        out.sort_by(|a, b| a.0.node.cmp(&b.0.node));
        out
    }
}

/// Runs until the engine stops: sends this node's samples, keeps the
/// peers'.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut local: stats::Latest,
    mut peers: async_nats::Subscriber,
) {
    let subject = shared.subject(&format!("s.{}", shared.node));
    loop {
        tokio::select! {
            changed = local.changed() => {
                if changed.is_err() {
                    return;
                }
                let sample = local.borrow_and_update().clone();
                if !shared.connected.load(std::sync::atomic::Ordering::Acquire) {
                    continue;
                }
                let payload = serde_json::to_vec(&*sample).expect("stats serialize");
                if let Err(e) = shared.client.publish(subject.clone(), payload.into()).await {
                    tracing::debug!(error = %e, "stats sample not sent");
                }
            }
            msg = peers.next() => match msg {
                Some(msg) => match serde_json::from_slice::<NodeStats>(&msg.payload) {
                    // The subject names the sender; a sample claiming to be
                    // another node's is ignored.
                    Ok(sample)
                        if sample.node != shared.node
                            && msg.subject.as_str().rsplit('.').next() == Some(sample.node.as_str()) =>
                    {
                        shared.peer_stats.store(sample);
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "bad stats sample from a peer"),
                },
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Counters, Rates};

    fn sample(node: &str) -> NodeStats {
        NodeStats {
            node: node.into(),
            ts: 0,
            window_ms: 1000,
            counters: Counters::default(),
            rates: Rates::default(),
            topics: Vec::new(),
        }
    }

    #[test]
    fn only_fresh_samples_of_members_count() {
        let peers = PeerStats::default();
        peers.store(sample("b"));
        peers.store(sample("c"));
        let members = ["a".to_string(), "b".to_string()];
        let fresh = peers.fresh(&members, Duration::from_secs(5));
        let nodes: Vec<&str> = fresh.iter().map(|(s, _)| s.node.as_str()).collect();
        assert_eq!(nodes, ["b"], "c left the view");
        std::thread::sleep(Duration::from_millis(20));
        assert!(peers.fresh(&members, Duration::from_millis(10)).is_empty());
        assert_eq!(max_age(Duration::from_secs(1)), Duration::from_secs(3));
        assert_eq!(max_age(Duration::from_secs(10)), Duration::from_secs(10));
    }
}
