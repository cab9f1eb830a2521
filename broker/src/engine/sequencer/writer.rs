//! The writer thread: takes every waiting command as one pass, assigns
//! seqs, appends and syncs once, and hands the committed pass on.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use tokio::sync::mpsc;

use super::{
    assign::{InFlightKeys, Stamp},
    Applied, ApplyReply, Command, Committed, Durability, Origin, PublishReply, Reply,
    SequencerOptions, SkipReply, MAX_BATCH_ITEMS,
};
use crate::{
    engine::{PublishError, PublishItem},
    hub::{Hub, InFlight, Message, Topic, TopicHead},
    log::{LogEntry, LogError, MessageLog},
};

/// The writer thread's state: assigns seqs and commits passes.
pub(super) struct Writer {
    pub(super) hub: Arc<Hub>,
    pub(super) log: Arc<dyn MessageLog>,
    pub(super) options: SequencerOptions,
    /// Last appended seq/ts per topic (ahead of the hub's committed heads).
    pub(super) heads: HashMap<Topic, TopicHead>,
    pub(super) healthy: Arc<AtomicBool>,
}

/// One writer pass over a set of commands of the same origin.
struct Pass {
    entries: Vec<LogEntry>,
    /// Replicated entries that take the place of different stored ones.
    replaced: Vec<LogEntry>,
    replies: Vec<Reply>,
    /// Heads before the pass, to undo assignments if the append fails.
    undo: HashMap<Topic, TopicHead>,
    /// Registration of the pass in the hub's in-flight set.
    ticket: Option<InFlight>,
}

impl Writer {
    pub(super) fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        sink: mpsc::UnboundedSender<Committed>,
    ) {
        let mut publishes = Vec::new();
        let mut applies = Vec::new();
        let mut skips = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut items = 0;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Publish { items: i, reply } => {
                        items += i.len();
                        publishes.push((i, reply));
                    }
                    Command::Apply { entries, reply } => {
                        items += entries.len();
                        applies.push((entries, reply));
                    }
                    Command::Skip { topic, head, reply } => skips.push((topic, head, reply)),
                }
                if items < MAX_BATCH_ITEMS {
                    next = rx.try_recv().ok();
                }
            }
            // Replicated entries first: a topic's local publishes (after a
            // takeover) must follow what was replicated to it.
            for batch in [
                self.apply_pass(std::mem::take(&mut applies)),
                self.publish_pass(std::mem::take(&mut publishes)),
                self.skip_pass(std::mem::take(&mut skips)),
            ]
            .into_iter()
            .flatten()
            {
                if sink.send(batch).is_err() {
                    return;
                }
            }
        }
        if let Err(e) = self.log.sync() {
            tracing::error!(error = %e, "final log sync failed");
        }
    }

    fn publish_pass(
        &mut self,
        commands: Vec<(Vec<PublishItem>, PublishReply)>,
    ) -> Option<Committed> {
        if commands.is_empty() {
            return None;
        }
        // The batch's ts and its in-flight registration are taken together,
        // so no cursor floor can pass these messages before they dispatch.
        let (ticket, now) = self.hub.begin_batch_now();
        let stamp = Stamp::new(now, self.options.idempotency_window);
        let mut pass = Pass {
            entries: Vec::new(),
            replaced: Vec::new(),
            replies: Vec::new(),
            undo: HashMap::new(),
            ticket: Some(ticket),
        };
        let mut in_flight = InFlightKeys::new();
        let mut outcomes = Vec::with_capacity(commands.len());
        for (items, _) in &commands {
            let mut published = Vec::with_capacity(items.len());
            for item in items {
                match stamp.earlier(item, &in_flight, self.log.as_ref()) {
                    Ok(Some(p)) => {
                        published.push(p);
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => return Some(self.storage_failed(pass, commands, e)),
                }
                let entry = self.heads.entry(item.topic.clone());
                // The name the writer holds (an occupied entry keeps its own
                // key): a staged message then costs no name of its own.
                let topic = entry.key().clone();
                let head = entry.or_default();
                pass.undo.entry(topic.clone()).or_insert(*head);
                head.last_seq += 1;
                head.last_ts = now;
                let (entry, p) = stamp.sequence(item, topic, head.last_seq, &mut in_flight);
                published.push(p);
                pass.entries.push(entry);
            }
            outcomes.push(published);
        }
        for ((_, reply), outcome) in commands.into_iter().zip(outcomes) {
            pass.replies.push(Reply::Publish(reply, Ok(outcome)));
        }
        Some(self.commit(pass, Origin::Local))
    }

    fn apply_pass(&mut self, commands: Vec<(Vec<LogEntry>, ApplyReply)>) -> Option<Committed> {
        if commands.is_empty() {
            return None;
        }
        let mut pass = Pass {
            entries: Vec::new(),
            replaced: Vec::new(),
            replies: Vec::new(),
            undo: HashMap::new(),
            ticket: None,
        };
        for (entries, reply) in commands {
            let mut outcome = Applied::Done;
            for (index, entry) in entries.into_iter().enumerate() {
                let m = &entry.message;
                let head = self.heads.entry(m.topic.clone()).or_default();
                if m.seq <= head.last_seq {
                    let before = pass.undo.get(&m.topic).map(|h| h.last_seq);
                    self.check_known(&mut pass, entry, before);
                    continue;
                }
                if m.seq != head.last_seq + 1 {
                    outcome = Applied::Gap {
                        index,
                        topic: m.topic.clone(),
                        head: head.last_seq,
                    };
                    break;
                }
                pass.undo.entry(m.topic.clone()).or_insert(*head);
                *head = TopicHead {
                    last_seq: m.seq,
                    last_ts: m.ts,
                };
                self.hub.clock().observe(m.ts);
                pass.entries.push(entry);
            }
            pass.replies.push(Reply::Apply(reply, Ok(outcome)));
        }
        Some(self.commit(pass, Origin::Replicated))
    }

    /// Records each topic's range up to its new head as removed (see
    /// [`super::Sequencer::skip`]); the heads move when the batch completes,
    /// after every batch before it.
    fn skip_pass(&mut self, skips: Vec<(Topic, TopicHead, SkipReply)>) -> Option<Committed> {
        if skips.is_empty() {
            return None;
        }
        let mut replies = Vec::new();
        if !self.healthy.load(Ordering::Acquire) {
            replies.extend(skips.into_iter().map(|(_, _, r)| Reply::Skip(r, Ok(()))));
            return Some(Self::failed(
                replies,
                "storage failed; the node must be restarted",
            ));
        }
        let mut skipped = Vec::new();
        let mut failure = None;
        for (topic, head, reply) in skips {
            replies.push(Reply::Skip(reply, Ok(())));
            let known = self.heads.get(&topic).copied().unwrap_or_default();
            if failure.is_some() || known.last_seq >= head.last_seq {
                continue;
            }
            match self.log.remove_through(&topic, head) {
                Ok(()) => {
                    self.heads.insert(topic.clone(), head);
                    skipped.push((topic, head));
                }
                Err(e) => failure = Some(e),
            }
        }
        if failure.is_none() && !skipped.is_empty() && self.options.durability == Durability::Always
        {
            failure = self.log.sync().err();
        }
        if let Some(e) = failure {
            // The heads that moved here move in the hub too, so the two agree.
            let mut failed = self.fail(replies, e);
            failed.skipped = skipped;
            return Some(failed);
        }
        Some(Committed {
            messages: Vec::new(),
            skipped,
            replies,
            ticket: None,
        })
    }

    /// A replicated entry at a seq this node holds: the same message is
    /// skipped; a different one comes from a newer term than the stored one
    /// (a replica accepts only the newest term it knows, and learns the
    /// term of everything it copies), so it takes the stored one's place.
    /// `before` is the topic's head before this pass, if the pass moved it.
    fn check_known(&mut self, pass: &mut Pass, entry: LogEntry, before: Option<u64>) {
        let m = &entry.message;
        let same = |stored: &Message| stored.ts == m.ts && stored.envelope() == m.envelope();
        if before.is_some_and(|b| m.seq > b) {
            // Appended earlier in this pass: not stored yet.
            if let Some(earlier) = pass
                .entries
                .iter_mut()
                .rev()
                .find(|e| e.message.topic == m.topic && e.message.seq == m.seq)
            {
                if !same(&earlier.message) {
                    conflict(&self.hub, m);
                    *earlier = entry;
                }
            }
            return;
        }
        // A message retention removed, or one this node cannot read, has
        // nothing to compare with.
        let Ok(stored) = self.log.read(&m.topic, m.seq, 1) else {
            return;
        };
        if let Some(stored) = stored.first().filter(|s| s.seq == m.seq) {
            if !same(stored) {
                conflict(&self.hub, m);
                pass.replaced
                    .retain(|e| e.message.topic != m.topic || e.message.seq != m.seq);
                pass.replaced.push(entry);
            }
        }
    }

    /// Appends and syncs a pass; on failure answers everyone with an error.
    fn commit(&mut self, mut pass: Pass, origin: Origin) -> Committed {
        if !self.healthy.load(Ordering::Acquire) {
            return Self::failed(pass.replies, "storage failed; the node must be restarted");
        }
        if !pass.replaced.is_empty() {
            if let Err(e) = self.log.replace(&pass.replaced) {
                self.heads.extend(pass.undo);
                return self.fail(pass.replies, e);
            }
            if pass.entries.is_empty() && self.options.durability == Durability::Always {
                if let Err(e) = self.log.sync() {
                    return self.fail(pass.replies, e);
                }
            }
        }
        if pass.entries.is_empty() {
            return Committed {
                messages: Vec::new(),
                skipped: Vec::new(),
                replies: pass.replies,
                ticket: None,
            };
        }
        let started = Instant::now();
        let min_ts = pass.entries.iter().map(|e| e.message.ts).min().unwrap_or(0);
        let ticket = pass
            .ticket
            .take()
            .unwrap_or_else(|| self.hub.begin_batch(min_ts));
        // Traced messages get a span covering their append and sync.
        let _spans: Vec<tracing::Span> = if crate::telemetry::otel_enabled() {
            pass.entries
                .iter()
                .filter_map(|e| {
                    let m = &e.message;
                    let tp = m.traceparent()?;
                    Some(crate::telemetry::trace::message_span(
                        "log.append",
                        tp,
                        m.topic.as_str(),
                        m.seq,
                    ))
                })
                .collect()
        } else {
            Vec::new()
        };
        if let Err(e) = self.log.append(&pass.entries) {
            // The batch is atomic: nothing was written, so the seqs are free.
            self.heads.extend(pass.undo);
            return self.fail(pass.replies, e);
        }
        if self.options.durability == Durability::Always {
            if let Err(e) = self.log.sync() {
                // The batch may or may not be on disk; its seqs must never be
                // reused, so the node stops taking writes until restarted.
                return self.fail(pass.replies, e);
            }
        }
        let metrics = self.hub.metrics();
        if origin == Origin::Local {
            metrics.messages_published.inc_by(pass.entries.len() as u64);
        }
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        Committed {
            messages: pass.entries.into_iter().map(|e| e.message).collect(),
            skipped: Vec::new(),
            replies: pass.replies,
            ticket: Some(ticket),
        }
    }

    fn storage_failed(
        &mut self,
        pass: Pass,
        commands: Vec<(Vec<PublishItem>, PublishReply)>,
        e: LogError,
    ) -> Committed {
        self.heads.extend(pass.undo);
        let replies = commands
            .into_iter()
            .map(|(_, reply)| Reply::Publish(reply, Ok(Vec::new())))
            .collect();
        self.fail(replies, e)
    }

    fn fail(&self, replies: Vec<Reply>, error: LogError) -> Committed {
        tracing::error!(error = %error, "storage failure; refusing further writes");
        self.healthy.store(false, Ordering::Release);
        Self::failed(replies, &format!("storage failure: {error}"))
    }

    fn failed(replies: Vec<Reply>, reason: &str) -> Committed {
        let err = PublishError::Unavailable(reason.to_string());
        let replies = replies
            .into_iter()
            .map(|r| match r {
                Reply::Publish(tx, _) => Reply::Publish(tx, Err(err.clone())),
                Reply::Apply(tx, _) => Reply::Apply(tx, Err(err.clone())),
                Reply::Skip(tx, _) => Reply::Skip(tx, Err(err.clone())),
            })
            .collect();
        Committed {
            messages: Vec::new(),
            skipped: Vec::new(),
            replies,
            ticket: None,
        }
    }
}

/// Reports a stored message replaced by a different one at the same seq:
/// the cluster gave that seq out twice, which claims exist to prevent.
fn conflict(hub: &Hub, m: &Message) {
    tracing::error!(
        topic = %m.topic,
        seq = m.seq,
        "a replicated message differs from the stored one at the same seq; keeping the newer owner's"
    );
    hub.metrics().cluster_replaced_messages.inc();
}
