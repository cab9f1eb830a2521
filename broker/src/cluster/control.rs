//! Admin orders across the cluster.
//!
//! A client is connected to one node, and an admin request may arrive at
//! any node. The node that takes the request carries the order out on its
//! own clients and broadcasts it on `P.admin.<node>` as a request; every
//! other node carries it out on its clients and answers with how many it
//! ended. The asking node gathers the answers until every live peer has
//! answered or the wait ends. Orders are not logged or retried: a node that
//! misses one (it was cut off from NATS) is reported as missing.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use futures_util::StreamExt;

use super::{
    wire::{self, AdminOrder, AdminReply},
    Shared,
};
use crate::{
    engine::{PeerOutcome, PublishError},
    hub::control::{Order, CONFIRM_WAIT},
};

/// How long the asking node waits for its peers: their own wait for
/// connections to confirm, and a NATS round trip.
fn answer_wait(shared: &Shared) -> Duration {
    CONFIRM_WAIT + shared.settings.request_timeout
}

/// Carries out the orders other nodes broadcast, until the subscription
/// ends.
pub(super) async fn run(shared: Arc<Shared>, mut orders: async_nats::Subscriber) {
    let own = shared.subject(&format!("admin.{}", shared.node));
    while let Some(msg) = orders.next().await {
        // The asking node carries out its own orders before broadcasting.
        if msg.subject.as_str() == own {
            continue;
        }
        let Some(order) = wire::decode::<AdminOrder>(&msg.payload).and_then(AdminOrder::into_order)
        else {
            tracing::warn!(subject = %msg.subject, "malformed admin order");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let count = shared.control.apply(&order).await;
            tracing::info!(?order, count, from = %msg.subject, "admin order carried out");
            if let Some(reply) = msg.reply {
                let answer = AdminReply {
                    node: shared.node.clone(),
                    count,
                };
                if let Err(e) = shared.client.publish(reply, wire::encode(&answer)).await {
                    tracing::debug!(error = %e, "admin order answer not sent");
                }
            }
        });
    }
}

/// Broadcasts `order` to the other nodes and gathers their answers.
pub(super) async fn broadcast(shared: &Shared, order: &Order) -> Result<PeerOutcome, PublishError> {
    shared.check_connected()?;
    let unavailable = |e: &dyn std::fmt::Display| {
        PublishError::Unavailable(format!("cannot reach the cluster: {e}"))
    };
    let peers: BTreeSet<String> = shared
        .membership
        .view()
        .members
        .iter()
        .filter(|n| **n != shared.node)
        .cloned()
        .collect();
    let inbox = shared.client.new_inbox();
    let mut answers = shared
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable(&e))?;
    shared
        .client
        .publish_with_reply(
            shared.subject(&format!("admin.{}", shared.node)),
            inbox,
            wire::encode(&AdminOrder::from_order(order)),
        )
        .await
        .map_err(|e| unavailable(&e))?;
    let deadline = tokio::time::Instant::now() + answer_wait(shared);
    let mut outcome = PeerOutcome::default();
    let mut answered = BTreeSet::new();
    while !peers.is_subset(&answered) {
        let msg = match tokio::time::timeout_at(deadline, answers.next()).await {
            Ok(Some(msg)) => msg,
            Ok(None) | Err(_) => break,
        };
        let Some(reply) = wire::decode::<AdminReply>(&msg.payload) else {
            continue;
        };
        // A node that joined after the view was read answers too.
        if answered.insert(reply.node) {
            outcome.count += reply.count;
        }
    }
    let _ = answers.unsubscribe().await;
    outcome.missing = peers.difference(&answered).cloned().collect();
    outcome.answered = answered.into_iter().collect();
    Ok(outcome)
}
