//! The persistence log: every topic's messages in seq order, durable on disk.
//!
//! The engine appends sequenced messages, makes them durable with
//! [`MessageLog::sync`] (group commit: one sync covers every append before
//! it) and only then acknowledges and dispatches them. Readers (history,
//! resume, gap filling) read committed ranges back.
//!
//! Damage is loud: every stored value carries a checksum checked on every
//! read ([`record`]), start-up checks that every topic is complete and
//! intact and reaches the heads this node acknowledged ([`integrity`],
//! [`acked`]), and sled's panics on damaged files are contained
//! ([`contain`]).

pub mod acked;
mod compact;
pub mod contain;
pub mod damage;
pub mod format;
mod heads;
pub mod integrity;
mod key_filter;
mod keys;
mod record;
pub mod retention;
mod run;
mod runs;
pub mod sled_log;
mod sled_maint;
mod sled_read;
mod tail;
pub mod tamper;
mod wal;

use std::{path::PathBuf, sync::Arc};

use herald_core::{Message, Topic, TopicHead};

pub use self::{
    damage::{Damage, LostRange},
    retention::RetentionPolicy,
    sled_log::SledLog,
};

/// Storage failures. Any of these makes the node unready.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The data directory could not be opened.
    #[error("cannot open the log in {path}: {reason}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The storage engine failed.
    #[error("storage error: {0}")]
    Storage(String),
    /// Data on disk is not what this version wrote.
    #[error("corrupt log entry: {0}")]
    Corrupt(String),
    /// A stored record failed its checksum.
    #[error("corrupt log record: {record} ({reason})")]
    CorruptRecord {
        /// Which record, e.g. `messages of orders.eu up to #42`.
        record: String,
        /// What failed.
        reason: String,
    },
    /// A read would step over seqs that are being repaired from a peer.
    #[error("{0} are damaged on this node and being repaired from a peer; retry shortly")]
    Unrepaired(LostRange),
    /// Start-up found damage (see the report) and the node refuses to start.
    #[error("{0}")]
    Damaged(Box<integrity::Report>),
}

impl From<sled::Error> for LogError {
    fn from(e: sled::Error) -> Self {
        match e {
            sled::Error::Corruption { .. } => LogError::Corrupt(e.to_string()),
            other => LogError::Storage(other.to_string()),
        }
    }
}

/// A remembered `Idempotency-Key`: the publish it first produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Seq of the original publish.
    pub seq: u64,
    /// Its timestamp.
    pub ts: u64,
    /// When the key may be forgotten, ms since the epoch.
    pub expires_at: u64,
}

/// One message to append, with the idempotency key that produced it.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// The sequenced message.
    pub message: Arc<Message>,
    /// `(key, expires_at)` when the publish carried an `Idempotency-Key`.
    pub idempotency: Option<(String, u64)>,
}

/// Size of one topic's retained history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicStats {
    /// Oldest retained seq (`None` when nothing is retained).
    pub first_seq: Option<u64>,
    /// Retained messages.
    pub count: u64,
    /// Retained envelope bytes.
    pub bytes: u64,
}

/// What a retention pass removed from one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Messages removed.
    pub messages: u64,
    /// Envelope bytes removed.
    pub bytes: u64,
}

/// An append-only, per-topic message log.
pub trait MessageLog: Send + Sync + 'static {
    /// Appends entries (per topic in seq order, continuing the topic), and
    /// their idempotency keys, atomically. Not durable until [`MessageLog::sync`].
    fn append(&self, entries: &[LogEntry]) -> Result<(), LogError>;

    /// Makes every earlier append durable: after `Ok`, the appended data
    /// survives a crash of the process or of the machine (fsync).
    fn sync(&self) -> Result<(), LogError>;

    /// Up to `max` retained messages of `topic` with `seq >= from`, ascending.
    fn read(&self, topic: &Topic, from: u64, max: usize) -> Result<Vec<Arc<Message>>, LogError>;

    /// The smallest seq `s <= to` such that every retained message in
    /// `s..=to` has `ts >= floor`; `None` if message `to` is older than the
    /// floor or absent.
    fn first_seq_since_ts(
        &self,
        topic: &Topic,
        floor: u64,
        to: u64,
    ) -> Result<Option<u64>, LogError>;

    /// Head (last seq and ts ever appended) of every topic, even when
    /// retention has since removed its messages.
    fn heads(&self) -> Result<Vec<(Topic, TopicHead)>, LogError>;

    /// The record for `key` on `topic`, if remembered (expired or not).
    fn idempotency(&self, topic: &Topic, key: &str) -> Result<Option<IdempotencyRecord>, LogError>;

    /// Idempotency keys of `topic` whose publish has a seq in `from..=to`
    /// (so replicas and catching-up nodes learn them with the messages).
    fn idempotency_in(
        &self,
        topic: &Topic,
        from: u64,
        to: u64,
    ) -> Result<Vec<(String, IdempotencyRecord)>, LogError>;

    /// Stores a small named value beside the log (cluster terms and the
    /// like); durable at the next [`MessageLog::sync`].
    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), LogError>;

    /// Every stored value whose name starts with `prefix`.
    fn scan_meta(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, LogError>;

    /// Forgets idempotency keys that expired before `now`; returns how many.
    fn expire_idempotency(&self, now: u64) -> Result<u64, LogError>;

    /// Retained size of `topic`.
    fn stats(&self, topic: &Topic) -> Result<TopicStats, LogError>;

    /// Removes retained messages of `topic` from the oldest while `drop`
    /// says so, stopping at the first message it keeps.
    fn trim_front(
        &self,
        topic: &Topic,
        drop: &mut dyn FnMut(u64, u64, u64) -> bool,
    ) -> Result<Trimmed, LogError>;

    /// Overwrites stored messages with `entries` at the same seqs, and
    /// records their idempotency keys: a newer owner's messages taking the
    /// place of an older term's that the cluster did not keep. Durable at
    /// the next [`MessageLog::sync`].
    fn replace(&self, entries: &[LogEntry]) -> Result<(), LogError>;

    /// The head of what retention removed from `topic` (its last seq and
    /// ts), if it removed anything. Ranges accepted as lost are not in it.
    fn removed_through(&self, topic: &Topic) -> Result<Option<TopicHead>, LogError>;

    /// Removes every stored message of `topic` up to `head.last_seq` and
    /// records `head` as the head of what retention removed: the peers
    /// this node copies from no longer hold those seqs (their retention
    /// removed them), so it accounts for them as its own retention would.
    /// Durable at the next [`MessageLog::sync`].
    fn remove_through(&self, topic: &Topic, head: TopicHead) -> Result<(), LogError>;

    /// Writes messages fetched from a peer into ranges pending repair
    /// (see [`Damage`]); entries outside them, or below what retention
    /// removed, are skipped. Durable on return; returns how many were
    /// written.
    fn repair(&self, entries: &[LogEntry]) -> Result<usize, LogError>;

    /// Records `ranges` as lost for good (the operator accepted them):
    /// readers report them as gaps, later starts find them accounted for,
    /// and they count towards their topic's head. Durable on return.
    fn accept_lost(&self, ranges: &[LostRange]) -> Result<(), LogError>;

    /// Known damage: accepted-lost and pending ranges, runtime corruption.
    fn damage(&self) -> &Damage;

    /// Bytes the log occupies on disk.
    fn disk_bytes(&self) -> u64;

    /// Envelope bytes acknowledged and held in memory until they are
    /// written as runs (appends wait while this is at its cap).
    fn staged_bytes(&self) -> u64;
}
