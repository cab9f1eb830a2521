//! Replication from the owner: publishing sequenced entries to the peers,
//! counting their acks, and appending quorum-confirmed parts in seq order.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{fail, fill, Owner, OwnerCommand, OwnerError, Part, RequestRef, Slot};
use crate::{
    cluster::{
        wire::{self, Ack, Replicate, Term, WireEntry},
        Shared,
    },
    engine::{sequencer::Applied, PublishError, Published},
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
        let mut bytes = 0;
        for (i, (topic, entry)) in outgoing.iter().enumerate() {
            if !terms.iter().any(|(t, _)| t == topic.as_str()) {
                if let Some(Slot::Owned(o)) = self.slots.get(topic) {
                    terms.push((topic.as_str().to_string(), o.term.clone()));
                }
            }
            bytes += entry.message.envelope().len() + 64;
            batch.push(WireEntry::from_entry(entry));
            if bytes > 512 * 1024 || i + 1 == outgoing.len() {
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
                let slot = progress.entry(topic).or_default();
                *slot = (*slot).max(seq);
            }
        }
    }

    /// Forgets the keys of appended parts: the log answers them now.
    pub(super) fn on_applied(&mut self, keys: Vec<(Topic, String, u64)>) {
        for (topic, key, seq) in keys {
            if let Some(Slot::Owned(o)) = self.slots.get_mut(&topic) {
                if o.pending_keys.get(&key) == Some(&seq) {
                    o.pending_keys.remove(&key);
                }
            }
        }
    }

    /// Hands every part that reached its quorum to the applier, in order.
    pub(super) fn advance(&mut self) {
        let required = self.shared.required_acks();
        let mut ready = Vec::new();
        for (topic, slot) in &mut self.slots {
            let Slot::Owned(owned) = slot else { continue };
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
                // Its keys stay in `pending_keys` until the applier has
                // appended it (`OwnerCommand::Applied`): a repeat arriving
                // meanwhile finds neither the part nor a log record.
                ready.push(owned.pending.pop_front().expect("front exists"));
            }
        }
        if !ready.is_empty() {
            let _ = self.applier.send(Apply::Parts(ready));
        }
    }
}

/// Work for the applier, done in the order it was sent.
pub(super) enum Apply {
    /// Parts that reached their quorum, to append here and answer.
    Parts(Vec<Part>),
    /// A repeat of an idempotency key whose first publish (`seq`) was
    /// handed to the applier earlier: answered from the log once that
    /// publish is appended.
    Repeat {
        request: RequestRef,
        index: usize,
        topic: Topic,
        key: String,
        seq: u64,
    },
}

/// Answers a repeated key from the log, where its first publish now is
/// (or, if appending that failed, is not: then the repeat fails too and
/// the client retries).
fn answer_repeat(
    shared: &Shared,
    request: &RequestRef,
    index: usize,
    topic: Topic,
    key: &str,
    seq: u64,
) {
    match shared.log.idempotency(&topic, key) {
        Ok(Some(r)) if r.seq == seq => fill(
            request,
            index,
            Published {
                topic,
                seq,
                ts: r.ts,
                duplicate: true,
            },
        ),
        Ok(_) => fail(
            request,
            OwnerError::Unavailable("the first publish with this key was not stored".into()),
        ),
        Err(e) => fail(
            request,
            OwnerError::Unavailable(format!("storage read failed: {e}")),
        ),
    }
}

/// Appends quorum-confirmed parts to the local log in order, then answers
/// their publishers and the repeats of their keys.
pub(super) async fn apply_parts(shared: Arc<Shared>, mut work: mpsc::UnboundedReceiver<Apply>) {
    while let Some(first) = work.recv().await {
        let mut batch = Vec::new();
        let mut repeats = Vec::new();
        let mut next = Some(first);
        while let Some(item) = next.take().or_else(|| work.try_recv().ok()) {
            match item {
                Apply::Parts(parts) => batch.extend(parts),
                Apply::Repeat { .. } => repeats.push(item),
            }
        }
        if !batch.is_empty() {
            apply_batch(&shared, batch).await;
        }
        for repeat in repeats {
            if let Apply::Repeat {
                request,
                index,
                topic,
                key,
                seq,
            } = repeat
            {
                answer_repeat(&shared, &request, index, topic, &key, seq);
            }
        }
    }
}

async fn apply_batch(shared: &Shared, batch: Vec<Part>) {
    let entries: Vec<LogEntry> = batch
        .iter()
        .flat_map(|p| p.entries.iter().cloned())
        .collect();
    let outcome = shared.sequencer.apply(entries).await;
    let mut keys = Vec::new();
    for part in batch {
        for e in &part.entries {
            if let Some((key, _)) = &e.idempotency {
                keys.push((e.message.topic.clone(), key.clone(), e.message.seq));
            }
        }
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
    if !keys.is_empty() {
        let _ = shared.owner_tx.send(OwnerCommand::Applied { keys });
    }
}
