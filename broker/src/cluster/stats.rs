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
fn max_age(member_timeout: Duration) -> Duration {
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

    /// Fresh samples of the `members` (ids), each with its age in ms;
    /// forgets every other node's.
    pub(super) fn fresh(
        &self,
        members: &[String],
        member_timeout: Duration,
    ) -> Vec<(NodeStats, u64)> {
        let limit = max_age(member_timeout);
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
