//! Claiming a topic: before a node sequences a topic it fences every live
//! node (itself too) at a new term and copies whatever any of them holds
//! beyond its own head. See `replica.rs` for the answering side.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt;

use super::{
    catchup,
    wire::{self, Claim, ClaimReply, Term},
    Shared,
};
use crate::hub::Topic;

/// A claim that succeeded.
#[derive(Debug)]
pub(crate) struct Won {
    /// The term this node now owns the topic under.
    pub term: Term,
    /// The head each other answering node reported: how far it holds the
    /// topic, which may be short of where this node continues (the old
    /// owner drops its unconfirmed messages, another replica may hold
    /// them), so the owner can send it the rest.
    pub peer_heads: Vec<(String, u64)>,
}

/// Claims `topic` for this node: fences every live node (this one too) at a
/// new term and makes sure this node holds everything any of them holds.
pub(crate) async fn claim(shared: &Arc<Shared>, topic: &Topic) -> Result<Won, String> {
    let mut last_error = String::from("no attempt");
    for attempt in 0..5u32 {
        if attempt > 0 {
            let jitter = rand::random::<u64>() % 100;
            tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt) + jitter)).await;
        }
        let view = shared.membership.view();
        if !view.is_mine(topic.as_str()) {
            return Err("the topic moved to another node".into());
        }
        let term = Term {
            counter: shared.term(topic).counter + 1,
            node: shared.node.clone(),
        };
        let inbox = shared.client.new_inbox();
        let mut replies = shared
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| e.to_string())?;
        let claim = Claim {
            node: shared.node.clone(),
            topic: topic.as_str().to_string(),
            term: term.clone(),
        };
        shared
            .client
            .publish_with_reply(
                shared.subject(&format!("c.claim.{}", shared.node)),
                inbox,
                wire::encode(&claim),
            )
            .await
            .map_err(|e| e.to_string())?;
        // Every live member must answer; a node outside this view (one that
        // just came back, or that this view lost too early) may still hold
        // seqs of the old owner, so its answer counts too when it comes.
        let expected: HashSet<&str> = view.members.iter().map(String::as_str).collect();
        let mut got: HashMap<String, ClaimReply> = HashMap::new();
        let deadline = tokio::time::Instant::now() + shared.settings.request_timeout;
        while !expected.iter().all(|n| got.contains_key(*n)) {
            match tokio::time::timeout_at(deadline, replies.next()).await {
                Ok(Some(msg)) => {
                    if let Some(reply) = wire::decode::<ClaimReply>(&msg.payload) {
                        got.insert(reply.node.clone(), reply);
                    }
                }
                _ => break,
            }
        }
        let _ = replies.unsubscribe().await;
        if let Some(refusal) = got.values().find(|r| !r.ok) {
            let _ = shared.raise_term(topic, &refusal.term);
            last_error = format!("{} knows a newer owner", refusal.node);
            continue;
        }
        let missing: Vec<&&str> = expected.iter().filter(|n| !got.contains_key(**n)).collect();
        if !missing.is_empty() {
            last_error = format!("no answer from {missing:?}");
            continue;
        }
        // At least as many answers as a write has copies: with fewer, the
        // nodes holding a confirmed write could all be silent. (This alone
        // is no quorum past 3 nodes; waiting for the whole view is what
        // keeps a single failure safe, see cluster.md "Limits".)
        let needed = shared.required_acks() + 1;
        if got.len() < needed {
            last_error = format!("{} of {needed} nodes answered", got.len());
            continue;
        }
        // Continue after the highest seq any answering node holds.
        let (holder, max) = got
            .values()
            .map(|r| (r.node.clone(), r.head))
            .max_by_key(|(_, h)| *h)
            .expect("self replied");
        let own = shared.hub.head(topic).last_seq;
        if max > own {
            if let Err(e) = catchup::fetch_into(shared, &holder, topic, own + 1, max).await {
                last_error = format!("cannot copy {topic} {}..={max} from {holder}: {e}", own + 1);
                continue;
            }
        }
        if shared.hub.head(topic).last_seq < max {
            last_error = "log did not reach the cluster's head".into();
            continue;
        }
        let peer_heads = got
            .into_values()
            .filter(|r| r.node != shared.node)
            .map(|r| (r.node, r.head))
            .collect();
        return Ok(Won { term, peer_heads });
    }
    Err(last_error)
}
