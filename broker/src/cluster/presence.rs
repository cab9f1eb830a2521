//! Presence across the cluster.
//!
//! Each node broadcasts changes to its own entries on `P.p.<node>` and,
//! whenever the membership view gains a node or NATS (re)connects, a full
//! snapshot of them — a snapshot replaces whatever a peer held for the
//! node, so a restarted node's stale entries vanish with its first one.
//! NATS keeps one publisher's messages in order, so deltas and snapshots
//! from one node apply in the order they were made. When a node leaves the
//! view (it stopped or its heartbeats timed out) every peer drops its
//! entries and emits their `leave` events.

use std::{collections::HashSet, sync::Arc};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::Shared;
use crate::hub::presence::Delta;

/// Runs until the engine stops: sends local changes, applies peers'.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut local: mpsc::UnboundedReceiver<Delta>,
    mut peers: async_nats::Subscriber,
    mut connected: tokio::sync::watch::Receiver<u64>,
) {
    let subject = shared.subject(&format!("p.{}", shared.node));
    let mut views = shared.membership.subscribe();
    let mut known: HashSet<String> = views.borrow().members.iter().cloned().collect();
    let send = |delta: &Delta| {
        let payload = serde_json::to_vec(delta).expect("presence deltas serialize");
        let client = shared.client.clone();
        let subject = subject.clone();
        async move {
            if let Err(e) = client.publish(subject, payload.into()).await {
                tracing::debug!(error = %e, "presence update not sent");
            }
        }
    };
    loop {
        tokio::select! {
            delta = local.recv() => match delta {
                Some(delta) => send(&delta).await,
                None => return,
            },
            msg = peers.next() => match msg {
                Some(msg) => match serde_json::from_slice::<Delta>(&msg.payload) {
                    Ok(Delta::Resync { node }) if node != shared.node => {
                        send(&shared.presence.local_snapshot()).await;
                    }
                    Ok(delta) => shared.presence.apply(delta),
                    Err(e) => tracing::warn!(error = %e, "bad presence update"),
                },
                None => return,
            },
            changed = views.changed() => {
                if changed.is_err() {
                    return;
                }
                let now: HashSet<String> = views.borrow_and_update().members.iter().cloned().collect();
                for gone in known.difference(&now) {
                    shared.presence.drop_node(gone);
                }
                let joined = now.difference(&known).any(|n| *n != shared.node);
                known = now;
                if joined {
                    send(&shared.presence.local_snapshot()).await;
                    send(&Delta::Resync { node: shared.node.clone() }).await;
                }
            }
            changed = connected.changed() => {
                if changed.is_err() {
                    return;
                }
                send(&shared.presence.local_snapshot()).await;
                send(&Delta::Resync { node: shared.node.clone() }).await;
            }
        }
    }
}
