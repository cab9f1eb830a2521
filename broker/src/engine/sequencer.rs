//! The sequencer: assigns seqs, appends to the log with group commit, and
//! hands durable batches on — the publish hot path.
//!
//! A dedicated writer thread takes every command waiting when it wakes (up to
//! a cap) as one batch, so one fsync covers many publishes:
//!
//! ```text
//! publishers ──cmd──▶ writer: assign seq/ts → log.append → log.sync ──Committed──▶ output
//! ```
//!
//! The output is either the built-in fan-out thread (single node: dispatch,
//! then ack) or a channel the cluster engine reads (replicate first, then
//! dispatch and ack). While the output fans a batch out, the writer is
//! already syncing the next. One writer means one ordering per topic, and
//! the log never holds a seq twice.
//!
//! Besides publishes the writer applies *replicated* messages (sequenced by
//! another node): they must continue the topic exactly; duplicates are
//! skipped and a jump reports a gap for the caller to fill first.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{PublishError, PublishItem, Published};
use crate::{
    hub::{Hub, InFlight, Message, Topic, TopicHead},
    log::{LogEntry, LogError, MessageLog},
};

/// Most publishes sequenced as one batch.
const MAX_BATCH_ITEMS: usize = 4096;
/// Commands that may wait for the writer before publishers are slowed down.
const QUEUE_DEPTH: usize = 8192;

/// When a publish is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After fsync: an acked message survives a crash of the process or the
    /// machine.
    #[default]
    Always,
    /// After the write reaches the storage engine's buffers; they are written
    /// out every flush interval, so a crash can lose acknowledged messages
    /// from that window.
    Relaxed,
}

type PublishReply = oneshot::Sender<Result<Vec<Published>, PublishError>>;

/// What applying replicated entries did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Every entry is now in the log (new ones appended, known ones skipped).
    Done,
    /// Entry `index` does not continue its topic, whose head is `head`:
    /// entries before it were applied; fill the gap and resubmit the rest.
    Gap {
        /// Position of the first entry not applied.
        index: usize,
        /// The topic.
        topic: Topic,
        /// Its current head seq here.
        head: u64,
    },
}

type ApplyReply = oneshot::Sender<Result<Applied, PublishError>>;

enum Command {
    Publish {
        items: Vec<PublishItem>,
        reply: PublishReply,
    },
    Apply {
        entries: Vec<LogEntry>,
        reply: ApplyReply,
    },
}

enum Reply {
    Publish(PublishReply, Result<Vec<Published>, PublishError>),
    Apply(ApplyReply, Result<Applied, PublishError>),
}

/// Where a committed batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Sequenced here (publishes).
    Local,
    /// Sequenced elsewhere and applied here.
    Replicated,
}

/// A durable batch on its way to fan-out. Dropping it without
/// [`Committed::complete`] answers nobody, so every path must complete it.
pub struct Committed {
    /// Origin of the batch; a batch is never mixed.
    pub origin: Origin,
    /// Newly appended messages, per topic in seq order.
    pub messages: Vec<Arc<Message>>,
    /// Entries as logged (with idempotency keys), for replication.
    pub entries: Vec<LogEntry>,
    replies: Vec<Reply>,
    ticket: Option<InFlight>,
}

impl Committed {
    /// Dispatches the messages to local subscribers, then answers the
    /// publishers (and appliers) of the batch.
    pub fn complete(mut self, hub: &Hub) {
        if !self.messages.is_empty() {
            hub.dispatch(&self.messages);
        }
        self.ticket.take();
        self.answer();
    }

    /// Answers waiting publishers with `error` now; the batch itself is
    /// still durable and must still be [`Committed::complete`]d.
    pub fn fail_publishers(&mut self, error: &PublishError) {
        let mut kept = Vec::new();
        for reply in self.replies.drain(..) {
            match reply {
                Reply::Publish(tx, _) => {
                    let _ = tx.send(Err(error.clone()));
                }
                // Appliers learn the outcome when the batch completes.
                other => kept.push(other),
            }
        }
        self.replies = kept;
    }

    fn answer(&mut self) {
        for reply in self.replies.drain(..) {
            match reply {
                Reply::Publish(tx, result) => {
                    let _ = tx.send(result);
                }
                Reply::Apply(tx, result) => {
                    let _ = tx.send(result);
                }
            }
        }
    }
}

/// Where committed batches go.
pub enum Output {
    /// A built-in fan-out thread completes them in order (single node).
    Dispatch,
    /// The receiver (the cluster engine) completes them.
    Channel(mpsc::UnboundedSender<Committed>),
}

/// Handle to the sequencer threads.
pub struct Sequencer {
    tx: parking_lot::Mutex<Option<mpsc::Sender<Command>>>,
    healthy: Arc<AtomicBool>,
    threads: parking_lot::Mutex<Vec<thread::JoinHandle<()>>>,
}

/// Settings for [`Sequencer::start`].
#[derive(Debug, Clone)]
pub struct SequencerOptions {
    /// When to ack.
    pub durability: Durability,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
}

const STOPPED: &str = "node is shutting down";

impl Sequencer {
    /// Starts the writer (and, for [`Output::Dispatch`], the fan-out
    /// thread) over `log`, continuing from the heads loaded into `hub`.
    pub fn start(
        hub: Arc<Hub>,
        log: Arc<dyn MessageLog>,
        options: SequencerOptions,
        output: Output,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let healthy = Arc::new(AtomicBool::new(true));
        let mut threads = Vec::new();
        let sink = match output {
            Output::Channel(sink) => sink,
            Output::Dispatch => {
                let (sink, mut batches) = mpsc::unbounded_channel::<Committed>();
                let hub = hub.clone();
                threads.push(thread::Builder::new().name("herald-fanout".into()).spawn(
                    move || {
                        while let Some(batch) = batches.blocking_recv() {
                            batch.complete(&hub);
                        }
                    },
                )?);
                sink
            }
        };
        let heads: HashMap<Topic, TopicHead> = hub.all_heads().into_iter().collect();
        let writer = Writer {
            hub,
            log,
            options,
            heads,
            healthy: healthy.clone(),
        };
        threads.insert(
            0,
            thread::Builder::new()
                .name("herald-writer".into())
                .spawn(move || writer.run(rx, sink))?,
        );
        Ok(Sequencer {
            tx: parking_lot::Mutex::new(Some(tx)),
            healthy,
            threads: parking_lot::Mutex::new(threads),
        })
    }

    async fn send(&self, command: Command) -> Result<(), PublishError> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(PublishError::Unavailable(
                "storage failed; the node must be restarted".into(),
            ));
        }
        let tx = self
            .tx
            .lock()
            .clone()
            .ok_or_else(|| PublishError::Unavailable(STOPPED.into()))?;
        tx.send(command)
            .await
            .map_err(|_| PublishError::Unavailable(STOPPED.into()))
    }

    /// Sequences `items` as one atomic unit.
    pub async fn publish(&self, items: Vec<PublishItem>) -> Result<Vec<Published>, PublishError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Publish { items, reply }).await?;
        rx.await
            .map_err(|_| PublishError::Unavailable(STOPPED.into()))?
    }

    /// Appends messages sequenced by another node (see [`Applied`]).
    /// Resolves once they are durable and dispatched here.
    pub async fn apply(&self, entries: Vec<LogEntry>) -> Result<Applied, PublishError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Apply { entries, reply }).await?;
        rx.await
            .map_err(|_| PublishError::Unavailable(STOPPED.into()))?
    }

    /// Whether storage is still accepting writes.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Stops taking commands, completes queued ones, syncs and joins.
    pub async fn shutdown(&self) {
        self.tx.lock().take();
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

struct Writer {
    hub: Arc<Hub>,
    log: Arc<dyn MessageLog>,
    options: SequencerOptions,
    /// Last appended seq/ts per topic (ahead of the hub's committed heads).
    heads: HashMap<Topic, TopicHead>,
    healthy: Arc<AtomicBool>,
}

/// One writer pass over a set of commands of the same origin.
struct Pass {
    entries: Vec<LogEntry>,
    replies: Vec<Reply>,
    /// Heads before the pass, to undo assignments if the append fails.
    undo: HashMap<Topic, TopicHead>,
    /// Registration of the pass in the hub's in-flight set.
    ticket: Option<InFlight>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>, sink: mpsc::UnboundedSender<Committed>) {
        let mut publishes = Vec::new();
        let mut applies = Vec::new();
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
        let expires_at = now + self.options.idempotency_window.as_millis() as u64;
        let mut pass = Pass {
            entries: Vec::new(),
            replies: Vec::new(),
            undo: HashMap::new(),
            ticket: Some(ticket),
        };
        let mut fresh_keys: HashMap<(Topic, String), Published> = HashMap::new();
        let mut outcomes = Vec::with_capacity(commands.len());
        for (items, _) in &commands {
            let mut published = Vec::with_capacity(items.len());
            for item in items {
                if let Some(key) = &item.idempotency_key {
                    match self.remembered(&fresh_keys, &item.topic, key, now) {
                        Ok(Some(p)) => {
                            published.push(p);
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            return Some(self.storage_failed(pass, commands, e, Origin::Local))
                        }
                    }
                }
                let head = self.heads.entry(item.topic.clone()).or_default();
                pass.undo.entry(item.topic.clone()).or_insert(*head);
                head.last_seq += 1;
                head.last_ts = now;
                let message = Message::traced(
                    item.topic.clone(),
                    head.last_seq,
                    now,
                    &item.data,
                    item.traceparent.as_deref(),
                );
                let p = Published {
                    topic: item.topic.clone(),
                    seq: message.seq,
                    ts: message.ts,
                    duplicate: false,
                };
                if let Some(key) = &item.idempotency_key {
                    fresh_keys.insert(
                        (item.topic.clone(), key.clone()),
                        Published {
                            duplicate: true,
                            ..p.clone()
                        },
                    );
                }
                published.push(p);
                pass.entries.push(LogEntry {
                    message,
                    idempotency: item.idempotency_key.clone().map(|k| (k, expires_at)),
                });
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

    /// Appends and syncs a pass; on failure answers everyone with an error.
    fn commit(&mut self, mut pass: Pass, origin: Origin) -> Committed {
        if !self.healthy.load(Ordering::Acquire) {
            return Self::failed(
                pass.replies,
                "storage failed; the node must be restarted",
                origin,
            );
        }
        if pass.entries.is_empty() {
            return Committed {
                origin,
                messages: Vec::new(),
                entries: Vec::new(),
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
            return self.fail(pass.replies, e, origin);
        }
        if self.options.durability == Durability::Always {
            if let Err(e) = self.log.sync() {
                // The batch may or may not be on disk; its seqs must never be
                // reused, so the node stops taking writes until restarted.
                return self.fail(pass.replies, e, origin);
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
            origin,
            messages: pass.entries.iter().map(|e| e.message.clone()).collect(),
            entries: pass.entries,
            replies: pass.replies,
            ticket: Some(ticket),
        }
    }

    /// The earlier publish for `key`, if still within the dedup window.
    fn remembered(
        &self,
        fresh: &HashMap<(Topic, String), Published>,
        topic: &Topic,
        key: &str,
        now: u64,
    ) -> Result<Option<Published>, LogError> {
        if let Some(p) = fresh.get(&(topic.clone(), key.to_string())) {
            return Ok(Some(p.clone()));
        }
        Ok(self
            .log
            .idempotency(topic, key)?
            .filter(|r| r.expires_at >= now)
            .map(|r| Published {
                topic: topic.clone(),
                seq: r.seq,
                ts: r.ts,
                duplicate: true,
            }))
    }

    fn storage_failed(
        &mut self,
        pass: Pass,
        commands: Vec<(Vec<PublishItem>, PublishReply)>,
        e: LogError,
        origin: Origin,
    ) -> Committed {
        self.heads.extend(pass.undo);
        let replies = commands
            .into_iter()
            .map(|(_, reply)| Reply::Publish(reply, Ok(Vec::new())))
            .collect();
        self.fail(replies, e, origin)
    }

    fn fail(&self, replies: Vec<Reply>, error: LogError, origin: Origin) -> Committed {
        tracing::error!(error = %error, "storage failure; refusing further writes");
        self.healthy.store(false, Ordering::Release);
        Self::failed(replies, &format!("storage failure: {error}"), origin)
    }

    fn failed(replies: Vec<Reply>, reason: &str, origin: Origin) -> Committed {
        let err = PublishError::Unavailable(reason.to_string());
        let replies = replies
            .into_iter()
            .map(|r| match r {
                Reply::Publish(tx, _) => Reply::Publish(tx, Err(err.clone())),
                Reply::Apply(tx, _) => Reply::Apply(tx, Err(err.clone())),
            })
            .collect();
        Committed {
            origin,
            messages: Vec::new(),
            entries: Vec::new(),
            replies,
            ticket: None,
        }
    }
}
