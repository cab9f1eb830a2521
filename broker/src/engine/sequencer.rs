//! The sequencer: assigns seqs, appends to the log with group commit, and
//! hands durable messages to fan-out — the publish hot path.
//!
//! Two dedicated threads, connected by a bounded channel:
//!
//! ```text
//! publishers ──cmd──▶ writer: assign seq/ts → log.append → log.sync ──batch──▶ dispatcher: hub.dispatch → ack
//! ```
//!
//! The writer takes every command waiting when it wakes (up to a cap) as one
//! batch, so one fsync covers many publishes; while the dispatcher fans a
//! batch out, the writer is already syncing the next. Acks are sent only
//! after fan-out, so a client that publishes and then reads history always
//! sees its message. One writer means one ordering per topic, and the log
//! never holds a seq twice.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{PublishError, PublishItem, Published};
use crate::{
    hub::{Hub, Message, Topic, TopicHead},
    log::{LogEntry, LogError, MessageLog},
};

/// Most publishes sequenced as one batch.
const MAX_BATCH_ITEMS: usize = 4096;
/// Commands that may wait for the writer before publishers are slowed down.
const QUEUE_DEPTH: usize = 8192;
/// Batches sequenced but not yet fanned out.
const DISPATCH_DEPTH: usize = 64;

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

type Reply = oneshot::Sender<Result<Vec<Published>, PublishError>>;

struct Command {
    items: Vec<PublishItem>,
    reply: Reply,
}

struct Committed {
    /// Whether `hub.begin_batch` was called for this batch (then the
    /// dispatcher must call `hub.dispatch`, even with no messages).
    began: bool,
    messages: Vec<Arc<Message>>,
    replies: Vec<(Reply, Result<Vec<Published>, PublishError>)>,
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

impl Sequencer {
    /// Starts the writer and dispatcher threads over `log`, continuing from
    /// the topic heads already loaded into `hub`.
    pub fn start(
        hub: Arc<Hub>,
        log: Arc<dyn MessageLog>,
        options: SequencerOptions,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (dispatch_tx, dispatch_rx) = std_mpsc::sync_channel::<Committed>(DISPATCH_DEPTH);
        let healthy = Arc::new(AtomicBool::new(true));
        let heads: HashMap<Topic, TopicHead> = hub.all_heads().into_iter().collect();
        let writer = Writer {
            hub: hub.clone(),
            log,
            options,
            heads,
            healthy: healthy.clone(),
        };
        let writer = thread::Builder::new()
            .name("herald-writer".into())
            .spawn(move || writer.run(rx, dispatch_tx))?;
        let dispatcher = thread::Builder::new()
            .name("herald-fanout".into())
            .spawn(move || {
                for batch in dispatch_rx {
                    if batch.began {
                        hub.dispatch(&batch.messages);
                    }
                    for (reply, result) in batch.replies {
                        let _ = reply.send(result);
                    }
                }
            })?;
        Ok(Sequencer {
            tx: parking_lot::Mutex::new(Some(tx)),
            healthy,
            threads: parking_lot::Mutex::new(vec![writer, dispatcher]),
        })
    }

    /// Sequences `items` as one atomic unit.
    pub async fn publish(&self, items: Vec<PublishItem>) -> Result<Vec<Published>, PublishError> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(PublishError::Unavailable(
                "storage failed; the node must be restarted".into(),
            ));
        }
        let tx = self
            .tx
            .lock()
            .clone()
            .ok_or_else(|| PublishError::Unavailable("node is shutting down".into()))?;
        let (reply, rx) = oneshot::channel();
        tx.send(Command { items, reply })
            .await
            .map_err(|_| PublishError::Unavailable("node is shutting down".into()))?;
        rx.await
            .map_err(|_| PublishError::Unavailable("node is shutting down".into()))?
    }

    /// Whether storage is still accepting writes.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Stops taking publishes, completes queued ones, syncs and joins.
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
    /// Last assigned seq/ts per topic (ahead of the hub's committed heads).
    heads: HashMap<Topic, TopicHead>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>, dispatch: std_mpsc::SyncSender<Committed>) {
        let mut commands = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut items = first.items.len();
            commands.push(first);
            while items < MAX_BATCH_ITEMS {
                match rx.try_recv() {
                    Ok(cmd) => {
                        items += cmd.items.len();
                        commands.push(cmd);
                    }
                    Err(_) => break,
                }
            }
            let committed = self.commit(std::mem::take(&mut commands));
            if dispatch.send(committed).is_err() {
                break;
            }
        }
        if let Err(e) = self.log.sync() {
            tracing::error!(error = %e, "final log sync failed");
        }
    }

    fn commit(&mut self, commands: Vec<Command>) -> Committed {
        if !self.healthy.load(Ordering::Acquire) {
            return Self::fail_all(commands, "storage failed; the node must be restarted");
        }
        let started = Instant::now();
        let now = self.hub.clock().now_ms();
        let expires_at = now + self.options.idempotency_window.as_millis() as u64;
        let mut entries: Vec<LogEntry> = Vec::new();
        let mut outcomes: Vec<Vec<Published>> = Vec::with_capacity(commands.len());
        let mut fresh_keys: HashMap<(Topic, String), Published> = HashMap::new();
        let mut touched: HashMap<Topic, TopicHead> = HashMap::new();
        let mut lookup_error = None;
        for cmd in &commands {
            let mut published = Vec::with_capacity(cmd.items.len());
            for item in &cmd.items {
                if let Some(key) = &item.idempotency_key {
                    match self.remembered(&fresh_keys, &item.topic, key, now) {
                        Ok(Some(p)) => {
                            published.push(p);
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            lookup_error = Some(e);
                            break;
                        }
                    }
                }
                let head = self.heads.entry(item.topic.clone()).or_default();
                touched.entry(item.topic.clone()).or_insert(*head);
                head.last_seq += 1;
                head.last_ts = now;
                let message = Message::new(item.topic.clone(), head.last_seq, now, &item.data);
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
                entries.push(LogEntry {
                    message,
                    idempotency: item.idempotency_key.clone().map(|k| (k, expires_at)),
                });
            }
            outcomes.push(published);
        }
        if let Some(e) = lookup_error {
            self.heads.extend(touched);
            return self.storage_failed(commands, e);
        }
        if entries.is_empty() {
            return Committed {
                began: false,
                messages: Vec::new(),
                replies: commands
                    .into_iter()
                    .zip(outcomes)
                    .map(|(c, o)| (c.reply, Ok(o)))
                    .collect(),
            };
        }
        self.hub.begin_batch(now);
        if let Err(e) = self.log.append(&entries) {
            // The batch is atomic: nothing was written, so the seqs are free.
            self.heads.extend(touched);
            return Committed {
                began: true,
                ..self.storage_failed(commands, e)
            };
        }
        if self.options.durability == Durability::Always {
            if let Err(e) = self.log.sync() {
                // The batch may or may not be on disk; its seqs must never be
                // reused, so the node stops taking writes until restarted.
                return Committed {
                    began: true,
                    ..self.storage_failed(commands, e)
                };
            }
        }
        let metrics = self.hub.metrics();
        metrics.messages_published.inc_by(entries.len() as u64);
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        Committed {
            began: true,
            messages: entries.into_iter().map(|e| e.message).collect(),
            replies: commands
                .into_iter()
                .zip(outcomes)
                .map(|(c, o)| (c.reply, Ok(o)))
                .collect(),
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

    fn storage_failed(&self, commands: Vec<Command>, error: LogError) -> Committed {
        tracing::error!(error = %error, "storage failure; refusing further publishes");
        self.healthy.store(false, Ordering::Release);
        Self::fail_all(commands, &format!("storage failure: {error}"))
    }

    fn fail_all(commands: Vec<Command>, reason: &str) -> Committed {
        Committed {
            began: false,
            messages: Vec::new(),
            replies: commands
                .into_iter()
                .map(|c| (c.reply, Err(PublishError::Unavailable(reason.to_string()))))
                .collect(),
        }
    }
}
