//! The replica side: one ordered inbox for heartbeats, replication and
//! claims from every node (`P.c.>`).
//!
//! Processing them in arrival order is what makes claims safe: a claim is
//! answered only after every replication message received before it has
//! been applied, and replication arriving after a claim with an older term
//! is refused. So the claimer learns every message this node holds from the
//! old owner, and the old owner can never get a confirmation for a seq the
//! new owner may reassign.

use std::{collections::HashSet, sync::Arc};

use futures_util::StreamExt;

use super::{
    catchup,
    owner::OwnerCommand,
    wire::{self, Ack, Claim, ClaimReply, Heartbeat, Replicate, Term},
    Shared,
};
use crate::{
    engine::{sequencer::Applied, PublishError},
    hub::Topic,
    log::LogEntry,
};

/// Runs the inbox until the subscription ends.
pub(crate) async fn run(shared: Arc<Shared>, subscriber: async_nats::Subscriber) {
    let prefix = shared.subject("c.");
    let mut chunks = subscriber.ready_chunks(64);
    while let Some(chunk) = chunks.next().await {
        // Consecutive replication messages are applied together (one fsync).
        let mut reps: Vec<Replicate> = Vec::new();
        for msg in chunk {
            let kind = msg
                .subject
                .as_str()
                .strip_prefix(prefix.as_str())
                .and_then(|r| r.split('.').next())
                .unwrap_or("");
            match kind {
                "rep" => {
                    // The subject names the owner: skip our own batches
                    // before paying for decoding them.
                    if msg.subject.as_str().rsplit('.').next() == Some(shared.node.as_str()) {
                        continue;
                    }
                    if let Some(rep) = wire::decode::<Replicate>(&msg.payload) {
                        if rep.owner != shared.node {
                            reps.push(rep);
                        }
                    }
                }
                "hb" => {
                    flush(&shared, &mut reps).await;
                    if let Some(hb) = wire::decode::<Heartbeat>(&msg.payload) {
                        shared.membership.observe(&hb);
                        shared
                            .hub
                            .set_remote_floor(shared.membership.remote_floor());
                    }
                }
                "claim" => {
                    flush(&shared, &mut reps).await;
                    if let (Some(claim), Some(reply)) =
                        (wire::decode::<Claim>(&msg.payload), msg.reply)
                    {
                        answer_claim(&shared, claim, reply.to_string()).await;
                    }
                }
                _ => {}
            }
        }
        flush(&shared, &mut reps).await;
    }
}

/// An ack to send once a pass is applied: the owner, the topics it
/// replicated with the term it sent them under, and the ack so far.
type PendingAck = (String, Vec<(Topic, Term)>, Ack);

/// Applies buffered replication messages and acknowledges them to their owners.
async fn flush(shared: &Arc<Shared>, reps: &mut Vec<Replicate>) {
    if reps.is_empty() {
        return;
    }
    let mut entries: Vec<(String, LogEntry)> = Vec::new();
    let mut acks: Vec<PendingAck> = Vec::new();
    for rep in reps.drain(..) {
        let mut ack = Ack {
            node: shared.node.clone(),
            ..Default::default()
        };
        // Sets: a message carries up to thousands of entries and topics.
        let mut termed: HashSet<&str> = HashSet::with_capacity(rep.terms.len());
        let mut accepted: Vec<(Topic, Term)> = Vec::new();
        for (topic, term) in &rep.terms {
            let Ok(t) = Topic::parse(topic) else { continue };
            if let Some(known) = shared.newer_term(&t, term) {
                ack.rejected.push((topic.clone(), known));
            } else {
                termed.insert(topic.as_str());
                // A newer owner whose claim this node missed (it was away).
                shared.learn_term(&t, term);
                accepted.push((t, term.clone()));
            }
        }
        for wire_entry in rep.entries {
            // Refused, or without a term: not applied.
            if !termed.contains(wire_entry.t.as_str()) {
                continue;
            }
            if let Some(entry) = wire_entry.into_entry() {
                entries.push((rep.owner.clone(), entry));
            }
        }
        acks.push((rep.owner, accepted, ack));
    }
    if let Err(e) = apply_in_order(shared, entries).await {
        tracing::warn!(error = %e, "replication not applied; peers will retry through gap filling");
        return;
    }
    for (owner, topics, mut ack) in acks {
        for (t, term) in topics {
            // A newer owner's messages applied in the same pass may have
            // taken the place of this owner's: its head says nothing then.
            if let Some(known) = shared.newer_term(&t, &term) {
                ack.rejected.push((t.as_str().to_string(), known));
            } else {
                let head = shared.hub.head(&t).last_seq;
                ack.heads.push((t.as_str().to_string(), head));
            }
        }
        let subject = shared.node_subject(&owner, "ack");
        if let Err(e) = shared.client.publish(subject, wire::encode(&ack)).await {
            tracing::debug!(error = %e, "ack not sent");
        }
    }
}

/// Appends replicated entries, filling any gap from the entry's owner first.
async fn apply_in_order(
    shared: &Arc<Shared>,
    entries: Vec<(String, LogEntry)>,
) -> Result<(), PublishError> {
    let mut rest = entries;
    let mut fills = 0;
    while !rest.is_empty() {
        let batch: Vec<LogEntry> = rest.iter().map(|(_, e)| e.clone()).collect();
        match shared.sequencer.apply(batch).await? {
            Applied::Done => return Ok(()),
            Applied::Gap { index, topic, head } => {
                fills += 1;
                let (source, entry) = &rest[index];
                let to = entry.message.seq - 1;
                if fills > 16 {
                    return Err(PublishError::Unavailable(format!(
                        "cannot fill gap in {topic} after {head}"
                    )));
                }
                if let Err(e) = catchup::fetch_from_any(shared, source, &topic, head + 1, to).await
                {
                    // Skip this topic's entries; the next message or a
                    // catch-up will bring them.
                    tracing::warn!(%topic, from = head + 1, to, error = %e, "gap not filled");
                    let skip = topic.clone();
                    rest = rest
                        .split_off(index)
                        .into_iter()
                        .filter(|(_, e)| e.message.topic != skip)
                        .collect();
                    continue;
                }
                rest = rest.split_off(index);
            }
        }
    }
    Ok(())
}

/// Fences `claim.topic` at `claim.term` if newer, and answers with this
/// node's head (everything received before the claim is applied by now).
async fn answer_claim(shared: &Arc<Shared>, claim: Claim, reply: String) {
    let Ok(topic) = Topic::parse(&claim.topic) else {
        return;
    };
    let known = shared.term(&topic);
    let ok = claim.term >= known;
    if claim.term > known {
        match shared.raise_term(&topic, &claim.term) {
            Ok(_) => {
                // The fence must survive a restart before we promise it.
                let log = shared.log.clone();
                if !matches!(
                    tokio::task::spawn_blocking(move || log.sync()).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
                if claim.node != shared.node {
                    let _ = shared.owner_tx.send(OwnerCommand::TermRaised {
                        topic: topic.clone(),
                    });
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record a claim");
                return;
            }
        }
    }
    let answer = ClaimReply {
        node: shared.node.clone(),
        ok,
        head: shared.hub.head(&topic).last_seq,
        term: if ok { known } else { shared.term(&topic) },
    };
    if let Err(e) = shared.client.publish(reply, wire::encode(&answer)).await {
        tracing::debug!(error = %e, "claim reply not sent");
    }
}
