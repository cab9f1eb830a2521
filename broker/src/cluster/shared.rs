//! State shared by the cluster engine's tasks, and its small helpers
//! (subjects, term fencing, quorum size, connectivity).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::{membership::Membership, owner::OwnerCommand, wire::Term};
use crate::{
    config::ClusterConfig,
    engine::{PublishError, Sequencer},
    hub::{control::Registry, presence::Presence, Hub, Topic},
    log::{LogEntry, LogError, MessageLog},
};

pub(super) const META_TERM: &str = "term/";
pub(super) const META_MAX_MEMBERS: &str = "cluster/max-members";

/// State shared by the engine's tasks.
pub(crate) struct Shared {
    pub node: String,
    pub incarnation: u64,
    pub client: async_nats::Client,
    pub settings: ClusterConfig,
    /// How long idempotency keys are remembered.
    pub idempotency_window: Duration,
    pub hub: Arc<Hub>,
    pub presence: Arc<Presence>,
    /// This node's clients, for admin orders.
    pub control: Arc<Registry>,
    pub log: Arc<dyn MessageLog>,
    pub sequencer: Sequencer,
    pub membership: Membership,
    /// Connected to NATS right now.
    pub connected: AtomicBool,
    /// Caught up with the peers since the last (re)connection.
    pub caught_up: AtomicBool,
    /// Heartbeats have been listened to long enough since the last
    /// (re)connection for the view to hold every live node: claims may
    /// start (they ask every member of the view).
    pub settled: AtomicBool,
    /// Highest term known per topic (fencing); persisted in the log.
    pub(super) terms: Mutex<HashMap<Topic, Term>>,
    /// Largest cluster seen (persisted): sizes the replica quorum, so that
    /// the lone survivor of a bigger cluster does not accept writes alone.
    pub(super) max_members: AtomicUsize,
    pub(super) owner_tx: mpsc::UnboundedSender<OwnerCommand>,
    /// Accept as lost what no peer can give back (`--accept-damage`).
    pub accept_damage: bool,
    /// The peers' latest stats samples.
    pub(super) peer_stats: super::stats::PeerStats,
}

impl Shared {
    /// `P.<rest>` for this cluster's prefix.
    pub fn subject(&self, rest: &str) -> String {
        format!("{}.{rest}", self.settings.subject_prefix)
    }

    /// `P.n.<node>.<kind>`.
    pub fn node_subject(&self, node: &str, kind: &str) -> String {
        self.subject(&format!("n.{node}.{kind}"))
    }

    /// The highest known term of `topic`.
    pub fn term(&self, topic: &Topic) -> Term {
        self.terms.lock().get(topic).cloned().unwrap_or_default()
    }

    /// The known term of `topic` if it is newer than `than` (no copy of
    /// the term otherwise: replication asks this for every topic it
    /// carries).
    pub fn newer_term(&self, topic: &Topic, than: &Term) -> Option<Term> {
        self.terms
            .lock()
            .get(topic)
            .filter(|known| *known > than)
            .cloned()
    }

    /// Whether `term` is the known term of `topic`.
    pub fn term_is(&self, topic: &Topic, term: &Term) -> bool {
        match self.terms.lock().get(topic) {
            Some(known) => known == term,
            None => *term == Term::default(),
        }
    }

    /// Raises the known term of `topic` to `term` if higher (persisted,
    /// durable at the next sync); returns whether it rose.
    pub fn raise_term(&self, topic: &Topic, term: &Term) -> Result<bool, LogError> {
        let mut terms = self.terms.lock();
        if terms.get(topic).is_some_and(|t| t >= term) {
            return Ok(false);
        }
        self.log.put_meta(
            &format!("{META_TERM}{topic}"),
            &serde_json::to_vec(term).expect("terms serialize"),
        )?;
        terms.insert(topic.clone(), term.clone());
        Ok(true)
    }

    /// Raises the known term of `topic` to a peer's, telling the owner
    /// task when another node's term rose past this node's.
    pub fn learn_term(&self, topic: &Topic, term: &Term) {
        if self.raise_term(topic, term).unwrap_or(false) && term.node != self.node {
            let _ = self.owner_tx.send(OwnerCommand::TermRaised {
                topic: topic.clone(),
            });
        }
    }

    /// Replica acks an owner needs before acknowledging a publish.
    pub fn required_acks(&self) -> usize {
        self.settings
            .min_replica_acks
            .min(self.max_members.load(Ordering::Relaxed).saturating_sub(1))
    }

    /// Records the view's size in the persisted high-water mark.
    pub fn note_members(&self, count: usize) {
        if self.max_members.fetch_max(count, Ordering::Relaxed) < count {
            let _ = self
                .log
                .put_meta(META_MAX_MEMBERS, count.to_string().as_bytes());
        }
    }

    /// Up to `max` stored messages of `topic` in `from..=to`, each with its
    /// idempotency key: what a peer needs to hold them as this node does.
    pub fn stored(
        &self,
        topic: &Topic,
        from: u64,
        to: u64,
        max: usize,
    ) -> Result<Vec<LogEntry>, LogError> {
        let messages = self.log.read(topic, from, max)?;
        let keys = self.log.idempotency_in(topic, from, to).unwrap_or_default();
        Ok(messages
            .into_iter()
            .filter(|m| m.seq <= to)
            .map(|message| {
                let idempotency = keys
                    .iter()
                    .find(|(_, r)| r.seq == message.seq)
                    .map(|(k, r)| (k.clone(), r.expires_at));
                LogEntry {
                    message,
                    idempotency,
                }
            })
            .collect())
    }

    /// Whether publishes can be taken now.
    pub fn check_connected(&self) -> Result<(), PublishError> {
        if self.connected.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(PublishError::Unavailable("not connected to NATS".into()))
        }
    }
}
