//! Replication from the owner: publishing sequenced entries to the peers,
//! counting their acks, and appending quorum-confirmed parts in seq order.

use std::{collections::HashSet, sync::Arc};

use tokio::sync::mpsc;

use super::{fail, fill, Owner, OwnerError, Part, Slot};
use crate::{
    cluster::{
        wire::{self, Ack, Replicate, Term, WireEntry},
        Shared,
    },
    engine::{sequencer::Applied, PublishError},
    hub::Topic,
    log::LogEntry,
};

impl Owner {
    /// Publishes newly sequenced entries on the replication subject, in
    /// messages of at most ~512 KiB.
    pub(super) async fn replicate(&mut self, outgoing: Vec<(Topic, LogEntry)>) {
        if outgoing.is_empty() || self.shared.required_acks() == 0 && self.view.peer_count() == 0 {
            return;
        }
        let subject = self.shared.subject(&format!("c.rep.{}", self.shared.node));
        let mut batch: Vec<WireEntry> = Vec::new();
        let mut terms: Vec<(String, Term)> = Vec::new();
        // Topics whose term this message carries already (a set: a message
        // holds up to thousands of entries over as many topics).
        let mut termed: HashSet<&Topic> = HashSet::new();
        let mut bytes = 0;
        for (i, (topic, entry)) in outgoing.iter().enumerate() {
            if termed.insert(topic) {
                if let Some(Slot::Owned(o)) = self.slots.get(topic) {
                    terms.push((topic.as_str().to_string(), o.term.clone()));
                }
            }
            bytes += entry.message.envelope().len() + 64;
            batch.push(WireEntry::from_entry(entry));
            if bytes > 512 * 1024 || i + 1 == outgoing.len() {
                termed.clear();
                let message = Replicate {
                    owner: self.shared.node.clone(),
                    terms: std::mem::take(&mut terms),
                    entries: std::mem::take(&mut batch),
                };
                if let Err(e) = self
                    .shared
                    .client
                    .publish(subject.clone(), wire::encode(&message))
                    .await
                {
                    tracing::warn!(error = %e, "replication publish failed");
                }
                bytes = 0;
            }
        }
    }

    /// The entries of parts still short of their quorum a heartbeat after
    /// they were last sent, to send again. Their replication message may
    /// have been lost — NATS delivers at most once, and a NATS server that
    /// dies takes what it was forwarding with it — and replicas cannot
    /// fetch them instead: this node appends them only after the quorum.
    /// Replicas skip seqs they already hold, so a second copy is harmless.
    pub(super) fn stale_parts(&mut self) -> Vec<(Topic, LogEntry)> {
        let after = self.shared.settings.heartbeat_interval;
        let mut again = Vec::new();
        for (topic, slot) in &mut self.slots {
            let Slot::Owned(owned) = slot else { continue };
            for part in owned.pending.iter_mut() {
                if part.sent.elapsed() >= after {
                    part.sent = std::time::Instant::now();
                    again.extend(part.entries.iter().map(|e| (topic.clone(), e.clone())));
                }
            }
        }
        again
    }

    pub(super) fn on_ack(&mut self, ack: Ack) {
        for (topic, term) in &ack.rejected {
            let Ok(topic) = Topic::parse(topic) else {
                continue;
            };
            let _ = self.shared.raise_term(&topic, term);
            if matches!(self.slots.get(&topic), Some(Slot::Owned(o)) if o.term < *term) {
                self.drop_slot(&topic, "a newer owner took the topic over");
            }
        }
        let progress = self.acks.entry(ack.node).or_default();
        for (topic, seq) in ack.heads {
            if let Ok(topic) = Topic::parse(&topic) {
                // Progress counts only for topics owned here now; a claim
                // starts each topic's record afresh from the peers' heads.
                if !matches!(self.slots.get(&topic), Some(Slot::Owned(_))) {
                    continue;
                }
                self.touched.insert(topic.clone());
                let slot = progress.entry(topic).or_default();
                *slot = (*slot).max(seq);
            }
        }
    }

    /// Makes the next [`Owner::advance`] look at every owned topic (the
    /// view, and with it the quorum, changed).
    pub(super) fn touch_all(&mut self) {
        self.touched.extend(self.slots.keys().cloned());
    }

    /// Hands every part of the touched topics that reached its quorum to
    /// the applier, in order.
    pub(super) fn advance(&mut self) {
        let required = self.shared.required_acks();
        let mut ready = Vec::new();
        for topic in self.touched.drain() {
            let Some(Slot::Owned(owned)) = self.slots.get_mut(&topic) else {
                continue;
            };
            let topic = &topic;
            while let Some(part) = owned.pending.front() {
                let confirmed = self
                    .view
                    .peers()
                    .filter(|p| {
                        self.acks
                            .get(*p)
                            .and_then(|a| a.get(topic))
                            .is_some_and(|s| *s >= part.last_seq)
                    })
                    .count();
                if confirmed < required {
                    break;
                }
                ready.push(owned.pending.pop_front().expect("front exists"));
            }
        }
        if !ready.is_empty() {
            let _ = self.applier.send(ready);
        }
    }
}

/// Appends quorum-confirmed parts to the local log in order, then answers.
pub(super) async fn apply_parts(
    shared: Arc<Shared>,
    mut parts: mpsc::UnboundedReceiver<Vec<Part>>,
) {
    while let Some(mut batch) = parts.recv().await {
        while let Ok(more) = parts.try_recv() {
            batch.extend(more);
        }
        // A part whose topic a newer owner claimed meanwhile is not this
        // node's to append: that owner may have given its seqs out again,
        // and appending would put the older messages in their place here.
        let (batch, stale): (Vec<Part>, Vec<Part>) = batch.into_iter().partition(|p| {
            p.entries
                .first()
                .is_none_or(|e| shared.term_is(&e.message.topic, &p.term))
        });
        for part in stale {
            for (request, _, _) in part.waiters {
                fail(
                    &request,
                    OwnerError::Unavailable(
                        "publish not confirmed: a newer owner took the topic over".into(),
                    ),
                );
            }
        }
        if batch.is_empty() {
            continue;
        }
        let entries: Vec<LogEntry> = batch
            .iter()
            .flat_map(|p| p.entries.iter().cloned())
            .collect();
        let count = entries.len() as u64;
        let outcome = shared.sequencer.apply(entries).await;
        if matches!(outcome, Ok(Applied::Done)) {
            // The sequencer counts only what it sequences itself; in a
            // cluster the owner sequences, so each message is counted
            // once, here, and the nodes' counts add up to the cluster's.
            shared.hub.metrics().messages_published.inc_by(count);
        }
        for part in batch {
            for (request, index, published) in part.waiters {
                match &outcome {
                    Ok(Applied::Done) => fill(&request, index, published),
                    Ok(Applied::Gap { topic, head, .. }) => {
                        tracing::error!(%topic, head, "owner log does not continue its own sequence");
                        fail(
                            &request,
                            OwnerError::Unavailable("internal sequencing error".into()),
                        );
                    }
                    Err(PublishError::Unavailable(m)) => {
                        fail(&request, OwnerError::Unavailable(m.clone()))
                    }
                }
            }
        }
    }
}
