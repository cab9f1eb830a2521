//! Bringing lagging replicas along: a replica that lost a replication
//! message (its NATS server died with it in flight, or its apply failed),
//! or that is short of the head this node claimed a topic at (the old owner
//! drops what it sequenced unconfirmed; the claim copied it from a replica
//! that kept it), learns of the gap otherwise only from the topic's next
//! message, and the quorum may not have needed its ack — so a topic's last
//! messages could stay missing there, with its subscribers waiting, until
//! someone publishes again.

use std::time::Instant;

use super::{Owner, Slot};
use crate::{hub::Topic, log::LogEntry};

/// Most entries sent again to one lagging replica per topic and tick.
const RESEND_MAX: usize = 256;
/// Most entries sent again per tick in all (a restarted peer lags on every
/// topic at once; its own catch-up copies the bulk).
const RESEND_BUDGET: usize = 2048;

impl Owner {
    /// Stored entries that a live peer has not acknowledged although its
    /// acks for the topic have not moved for a heartbeat (then again every
    /// heartbeat), to replicate again. Peers that hold them skip them.
    pub(super) fn laggards(&mut self) -> Vec<(Topic, LogEntry)> {
        let after = self.shared.settings.heartbeat_interval;
        let now = Instant::now();
        let mut again = Vec::new();
        let mut still_behind = std::collections::HashMap::new();
        for (topic, slot) in &self.slots {
            let Slot::Owned(owned) = slot else { continue };
            let head = self.shared.hub.head(topic).last_seq;
            // Parts still waiting are resent by `stale_parts`.
            let applied = owned.pending.front().map_or(head, |p| p.first_seq - 1);
            for peer in self.view.peers() {
                // Only peers whose progress is known: their acks, or the
                // head they reported in this node's claim.
                let Some(acked) = self.acks.get(peer).and_then(|a| a.get(topic)).copied() else {
                    continue;
                };
                if acked >= applied {
                    continue;
                }
                // Behind, but moving (acks in flight under load): not lagging.
                let key = (peer.to_string(), topic.clone());
                let since = match self.behind.get(&key) {
                    Some(&(since, at)) if at == acked => since,
                    _ => now,
                };
                if now.duration_since(since) < after || again.len() >= RESEND_BUDGET {
                    still_behind.insert(key, (since, acked));
                    continue;
                }
                still_behind.insert(key, (now, acked));
                let from = acked + 1;
                let to = applied.min(acked + RESEND_MAX as u64);
                let entries = self
                    .shared
                    .stored(topic, from, to, (to - from + 1) as usize);
                again.extend(
                    entries
                        .unwrap_or_default()
                        .into_iter()
                        .map(|e| (topic.clone(), e)),
                );
            }
        }
        self.behind = still_behind;
        // One copy of each entry, however many peers lag.
        again.sort_by(|(a, x), (b, y)| a.cmp(b).then(x.message.seq.cmp(&y.message.seq)));
        again.dedup_by(|(a, x), (b, y)| a == b && x.message.seq == y.message.seq);
        again
    }
}
