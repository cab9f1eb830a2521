//! The sequencer: assigns seqs, appends to the log with group commit, and
//! hands durable batches on — the publish hot path.
//!
//! A dedicated writer thread takes every command waiting when it wakes (up to
//! a cap) as one batch, so one fsync covers many publishes:
//!
//! ```text
//! publishers ──cmd──▶ writer: assign seq/ts → log.append → log.sync ──Committed──▶ fan-out
//! ```
//!
//! In `always` mode the fan-out thread records each committed batch's topic
//! heads in the acknowledged-heads journal ([`mark`]) before it dispatches
//! the batch and answers anyone. While it fans a batch out, the writer is
//! already syncing the next. One writer means one ordering per topic, and
//! the log never holds a seq twice. In a cluster the owner replicates first
//! and applies through the same writer (below), so this path is shared.
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
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub(crate) mod assign;
mod mark;
#[cfg(test)]
mod tests;
mod writer;

use self::writer::Writer;
use super::{PublishError, PublishItem, Published};
use crate::{
    hub::{Hub, InFlight, Message, Topic, TopicHead},
    log::{acked::AckedHeads, LogEntry, MessageLog},
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
type SkipReply = oneshot::Sender<Result<(), PublishError>>;

enum Command {
    Publish {
        items: Vec<PublishItem>,
        reply: PublishReply,
    },
    Apply {
        entries: Vec<LogEntry>,
        reply: ApplyReply,
    },
    Skip {
        topic: Topic,
        head: TopicHead,
        reply: SkipReply,
    },
}

enum Reply {
    Publish(PublishReply, Result<Vec<Published>, PublishError>),
    Apply(ApplyReply, Result<Applied, PublishError>),
    Skip(SkipReply, Result<(), PublishError>),
}

/// Where a committed batch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// Sequenced here (publishes).
    Local,
    /// Sequenced elsewhere and applied here.
    Replicated,
}

/// A durable batch on its way to fan-out. Dropping it without
/// [`Committed::complete`] answers nobody, so every path must complete it.
pub struct Committed {
    /// Newly appended messages, per topic in seq order.
    pub messages: Vec<Arc<Message>>,
    /// Heads moved past seqs that no peer holds any more (see
    /// [`Sequencer::skip`]), set before the messages are dispatched.
    skipped: Vec<(Topic, TopicHead)>,
    replies: Vec<Reply>,
    ticket: Option<InFlight>,
}

impl Committed {
    /// Dispatches the messages to local subscribers, then answers the
    /// publishers (and appliers) of the batch.
    pub fn complete(mut self, hub: &Hub) {
        for (topic, head) in self.skipped.drain(..) {
            hub.advance_head(topic, head);
        }
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
                Reply::Skip(tx, result) => {
                    let _ = tx.send(result);
                }
            }
        }
    }
}

/// Handle to the sequencer threads.
pub struct Sequencer {
    tx: parking_lot::Mutex<Option<mpsc::Sender<Command>>>,
    healthy: Arc<AtomicBool>,
    log: Arc<dyn MessageLog>,
    threads: parking_lot::Mutex<Vec<thread::JoinHandle<()>>>,
}

/// Settings for [`Sequencer::start`].
#[derive(Debug, Clone)]
pub struct SequencerOptions {
    /// When to ack.
    pub durability: Durability,
    /// How long an idempotency key is remembered.
    pub idempotency_window: Duration,
    /// The acknowledged-heads journal; with `always` durability every batch
    /// is recorded there before it is acknowledged.
    pub journal: Option<Arc<parking_lot::Mutex<AckedHeads>>>,
}

const STOPPED: &str = "node is shutting down";

impl Sequencer {
    /// Starts the writer and the fan-out thread over `log`, continuing
    /// from the heads loaded into `hub`.
    pub fn start(
        hub: Arc<Hub>,
        log: Arc<dyn MessageLog>,
        options: SequencerOptions,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let healthy = Arc::new(AtomicBool::new(true));
        let mut threads = Vec::new();
        // With `always` durability every batch's heads go to the journal
        // before the batch is dispatched and acknowledged (see `mark`).
        let journal = match (&options.journal, options.durability) {
            (Some(journal), Durability::Always) => Some(journal.clone()),
            _ => None,
        };
        let (sink, mut batches) = mpsc::unbounded_channel::<Committed>();
        let fanout_hub = hub.clone();
        let fanout_healthy = healthy.clone();
        threads.push(
            thread::Builder::new()
                .name("herald-fanout".into())
                .spawn(move || {
                    let mut waiting = Vec::new();
                    while mark::take(&mut batches, &mut waiting) {
                        if let Some(journal) = &journal {
                            mark::record(journal, &mut waiting, &fanout_healthy);
                        }
                        for batch in waiting.drain(..) {
                            batch.complete(&fanout_hub);
                        }
                    }
                })?,
        );
        let heads: HashMap<Topic, TopicHead> = hub.all_heads().into_iter().collect();
        let writer = Writer {
            hub,
            log: log.clone(),
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
            log,
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

    /// Moves `topic`'s head to `head` without messages: the peers this
    /// node copies from no longer hold the seqs up to it (retention removed
    /// them), so they are recorded as removed here too and what follows can
    /// be applied. Does nothing when the head is already there.
    pub async fn skip(&self, topic: Topic, head: TopicHead) -> Result<(), PublishError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Skip { topic, head, reply }).await?;
        rx.await
            .map_err(|_| PublishError::Unavailable(STOPPED.into()))?
    }

    /// Whether storage is still accepting writes.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// `Ok` while storage accepts writes and the log is trusted; else why
    /// not (a failed write, corruption met at run time, a repair under way).
    pub fn readiness(&self) -> Result<(), String> {
        if !self.is_healthy() {
            return Err("storage failed".into());
        }
        self.log.damage().reason().map_or(Ok(()), Err)
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
