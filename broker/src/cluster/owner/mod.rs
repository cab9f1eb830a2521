//! The owner side: claiming topics, sequencing their publishes, replicating
//! and acknowledging once enough replicas have them.
//!
//! One task owns all of this node's owned-topic state, so seq assignment
//! needs no locks. Per topic:
//!
//! ```text
//! (none) ──publish──▶ Claiming ──claim round ok──▶ Owned ──view moves it / newer term──▶ (none)
//! ```
//!
//! A publish to an owned topic gets its seqs at once, is published on the
//! replication subject, and waits in the topic's queue until
//! `required_acks` live peers report it durable. Then — in seq order — it is
//! appended to this node's own log (which dispatches it locally) and the
//! publisher gets its ack. Appending only after the quorum means this node
//! never holds a message that no other node could have received, so a
//! crashed owner never comes back with a seq that the cluster reassigned.

mod laggards;
mod release;
mod replication;

use self::replication::apply_parts;
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::{
    claim::Won,
    membership::View,
    wire::{Ack, Term},
    Shared,
};
use crate::{
    engine::{
        sequencer::assign::{InFlightKeys, Stamp},
        PublishError, PublishItem, Published,
    },
    hub::{InFlight, Topic},
    log::LogEntry,
};

/// Why the owner refused a publish.
#[derive(Debug, Clone)]
pub(crate) enum OwnerError {
    /// This node does not own (all of) the topics in its current view.
    NotOwner,
    /// This node (re)connected too recently for its view to hold every
    /// live node, so it may not know every node that holds a topic's seqs.
    CatchingUp,
    /// The publish cannot be completed now.
    Unavailable(String),
}

type OwnerReply = oneshot::Sender<Result<Vec<Published>, OwnerError>>;

/// Messages to the owner task.
pub(crate) enum OwnerCommand {
    /// Sequence these items (all owned here, per the sender).
    Publish {
        items: Vec<PublishItem>,
        reply: OwnerReply,
    },
    /// A replica's progress.
    Acks(Ack),
    /// A claim round finished.
    Claimed {
        topic: Topic,
        outcome: Result<Won, String>,
    },
    /// Another node's term for `topic` was accepted here.
    TermRaised { topic: Topic },
    /// NATS connection lost: give up everything.
    Disconnected,
}

/// One publish request, possibly spanning topics and parts.
struct Request {
    reply: Option<OwnerReply>,
    results: Vec<Option<Published>>,
    remaining: usize,
}

type RequestRef = Arc<Mutex<Request>>;

fn fill(request: &RequestRef, index: usize, published: Published) {
    let mut r = request.lock();
    if r.results[index].is_none() {
        r.results[index] = Some(published);
        r.remaining -= 1;
    }
    if r.remaining == 0 {
        if let Some(reply) = r.reply.take() {
            let results = r.results.drain(..).map(|p| p.expect("filled")).collect();
            let _ = reply.send(Ok(results));
        }
    }
}

fn fail(request: &RequestRef, error: OwnerError) {
    if let Some(reply) = request.lock().reply.take() {
        let _ = reply.send(Err(error));
    }
}

/// Messages of one topic sequenced together, waiting for replicas.
struct Part {
    /// The term it was sequenced under.
    term: Term,
    entries: Vec<LogEntry>,
    first_seq: u64,
    last_seq: u64,
    /// `(request, index in the request, result)` to fill once applied.
    waiters: Vec<(RequestRef, usize, Published)>,
    since: Instant,
    /// When it was last published on the replication subject.
    sent: Instant,
    answered: bool,
    _ticket: InFlight,
}

struct Owned {
    term: Term,
    next_seq: u64,
    pending: VecDeque<Part>,
    /// Idempotency keys sequenced here and not yet in the local log.
    in_flight: InFlightKeys,
}

enum Slot {
    Claiming {
        parked: Vec<(Vec<PublishItem>, OwnerReply)>,
    },
    Owned(Owned),
}

struct Owner {
    shared: Arc<Shared>,
    slots: HashMap<Topic, Slot>,
    /// Replica progress: node → topic → durable seq.
    acks: HashMap<String, HashMap<Topic, u64>>,
    /// Since when each (peer, topic) has lagged at the same acked seq (or
    /// was last sent again), and that seq.
    behind: HashMap<(String, Topic), (Instant, u64)>,
    view: Arc<View>,
    /// Topics whose waiting parts may have reached their quorum since the
    /// last [`Owner::advance`] (acked or published to), so it need not
    /// look at every owned topic after every command.
    touched: HashSet<Topic>,
    applier: mpsc::UnboundedSender<Vec<Part>>,
    tx: mpsc::UnboundedSender<OwnerCommand>,
}

/// Runs the owner task.
pub(crate) async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<OwnerCommand>) {
    let (applier, parts) = mpsc::unbounded_channel();
    tokio::spawn(apply_parts(shared.clone(), parts));
    let mut views = shared.membership.subscribe();
    let mut owner = Owner {
        view: shared.membership.view(),
        shared: shared.clone(),
        slots: HashMap::new(),
        acks: HashMap::new(),
        behind: HashMap::new(),
        touched: HashSet::new(),
        applier,
        tx: shared.owner_tx.clone(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            command = rx.recv() => {
                let Some(command) = command else { return };
                let mut outgoing = Vec::new();
                owner.handle(command, &mut outgoing);
                // Take whatever else is queued, then replicate it as one batch.
                while let Ok(command) = rx.try_recv() {
                    owner.handle(command, &mut outgoing);
                }
                owner.replicate(outgoing).await;
                owner.advance();
            }
            changed = views.changed() => {
                if changed.is_err() { return }
                let view = views.borrow_and_update().clone();
                owner.on_view(view);
                owner.touch_all();
                owner.advance();
            }
            _ = tick.tick() => {
                owner.touch_all();
                owner.advance();
                owner.expire();
                // Older entries first: they come before the waiting parts.
                let mut again = owner.laggards();
                again.extend(owner.stale_parts());
                owner.replicate(again).await;
            }
        }
    }
}

impl Owner {
    fn handle(&mut self, command: OwnerCommand, outgoing: &mut Vec<(Topic, LogEntry)>) {
        match command {
            OwnerCommand::Publish { items, reply } => self.publish(items, reply, outgoing),
            OwnerCommand::Acks(ack) => self.on_ack(ack),
            OwnerCommand::Claimed { topic, outcome } => self.on_claimed(topic, outcome, outgoing),
            OwnerCommand::TermRaised { topic } => {
                let newer = self.shared.term(&topic);
                if let Some(Slot::Owned(o)) = self.slots.get(&topic) {
                    if o.term < newer {
                        self.drop_slot(&topic, "a newer owner took the topic over");
                    }
                }
            }
            OwnerCommand::Disconnected => {
                let topics: Vec<Topic> = self.slots.keys().cloned().collect();
                for topic in topics {
                    self.drop_slot(&topic, "lost the NATS connection");
                }
                self.acks.clear();
            }
        }
    }

    fn publish(
        &mut self,
        items: Vec<PublishItem>,
        reply: OwnerReply,
        outgoing: &mut Vec<(Topic, LogEntry)>,
    ) {
        if let Err(e) = self.shared.check_connected() {
            let PublishError::Unavailable(m) = e;
            let _ = reply.send(Err(OwnerError::Unavailable(m)));
            return;
        }
        if items.iter().any(|i| !self.view.is_mine(i.topic.as_str())) {
            let _ = reply.send(Err(OwnerError::NotOwner));
            return;
        }
        // A claim made before the view holds every live node could miss a
        // node that has the old owner's last seqs, and give them out again.
        // (The claim copies what the answering nodes hold beyond this log
        // itself, so it need not wait for the whole catch-up.)
        if !self
            .shared
            .settled
            .load(std::sync::atomic::Ordering::Acquire)
        {
            let _ = reply.send(Err(OwnerError::CatchingUp));
            return;
        }
        let required = self.shared.required_acks();
        if self.view.peer_count() < required {
            let _ = reply.send(Err(OwnerError::Unavailable(format!(
                "not enough live replicas: {} of {required} needed",
                self.view.peer_count()
            ))));
            return;
        }
        // Every topic must be owned (claimed) first; park until it is.
        let unclaimed: Vec<Topic> = items
            .iter()
            .map(|i| i.topic.clone())
            .filter(|t| !matches!(self.slots.get(t), Some(Slot::Owned(_))))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if let Some(topic) = unclaimed.first() {
            match self.slots.get_mut(topic) {
                Some(Slot::Claiming { parked }) => parked.push((items, reply)),
                _ => {
                    self.slots.insert(
                        topic.clone(),
                        Slot::Claiming {
                            parked: vec![(items, reply)],
                        },
                    );
                    self.start_claim(topic.clone());
                }
            }
            return;
        }
        self.assign(items, reply, outgoing);
    }

    fn start_claim(&self, topic: Topic) {
        let (shared, tx) = (self.shared.clone(), self.tx.clone());
        tokio::spawn(async move {
            let outcome = super::claim::claim(&shared, &topic).await;
            let _ = tx.send(OwnerCommand::Claimed { topic, outcome });
        });
    }

    fn on_claimed(
        &mut self,
        topic: Topic,
        outcome: Result<Won, String>,
        outgoing: &mut Vec<(Topic, LogEntry)>,
    ) {
        let Some(Slot::Claiming { parked }) = self.slots.remove(&topic) else {
            return;
        };
        match outcome {
            Ok(Won { term, peer_heads })
                if self.shared.term(&topic) == term && self.view.is_mine(topic.as_str()) =>
            {
                let head = self.shared.hub.head(&topic).last_seq;
                tracing::info!(%topic, counter = term.counter, head, "claimed topic");
                // What each peer holds now is what it has acknowledged (no
                // progress is kept from an earlier time this node owned the
                // topic: giving it up forgot it, and acks count only while
                // it is owned). A peer short of this node's head (the old
                // owner dropped its unconfirmed messages that a replica
                // kept) is then sent the rest by `laggards` instead of
                // waiting for the topic's next publish to reveal the gap.
                // Every seeded head is at or below this node's, so none
                // confirms a message sequenced from here on.
                for (peer, held) in peer_heads {
                    self.acks
                        .entry(peer)
                        .or_default()
                        .insert(topic.clone(), held);
                }
                self.slots.insert(
                    topic,
                    Slot::Owned(Owned {
                        term,
                        next_seq: head + 1,
                        pending: VecDeque::new(),
                        in_flight: InFlightKeys::new(),
                    }),
                );
                // Re-enter: parked publishes may need other topics claimed.
                for (items, reply) in parked {
                    self.publish(items, reply, outgoing);
                }
            }
            Ok(_) => {
                for (_, reply) in parked {
                    let _ = reply.send(Err(OwnerError::NotOwner));
                }
            }
            Err(reason) => {
                tracing::warn!(%topic, %reason, "claim failed");
                for (_, reply) in parked {
                    let _ = reply.send(Err(OwnerError::Unavailable(format!(
                        "cannot take over the topic: {reason}"
                    ))));
                }
            }
        }
    }

    /// Assigns seqs to `items` (every topic owned) and queues the parts.
    fn assign(
        &mut self,
        items: Vec<PublishItem>,
        reply: OwnerReply,
        outgoing: &mut Vec<(Topic, LogEntry)>,
    ) {
        let hub = self.shared.hub.clone();
        let (mut ticket, now) = hub.begin_batch_now();
        let stamp = Stamp::new(now, self.shared.idempotency_window);

        let request: RequestRef = Arc::new(Mutex::new(Request {
            reply: Some(reply),
            results: vec![None; items.len()],
            remaining: items.len(),
        }));
        // Every idempotency lookup first: a failed read refuses the request
        // before any seq is given out (a seq given out, replicated and then
        // dropped would leave a hole this node's log could never continue
        // past).
        let mut earlier = Vec::with_capacity(items.len());
        for item in &items {
            let Some(Slot::Owned(owned)) = self.slots.get(&item.topic) else {
                unreachable!("assign is only called with every topic owned")
            };
            match stamp.earlier(item, &owned.in_flight, self.shared.log.as_ref()) {
                Ok(found) => earlier.push(found),
                Err(e) => {
                    fail(
                        &request,
                        OwnerError::Unavailable(format!("storage read failed: {e}")),
                    );
                    return;
                }
            }
        }
        let mut parts: HashMap<Topic, Part> = HashMap::new();
        let mut immediate = Vec::new();
        for (index, (item, found)) in items.into_iter().zip(earlier).enumerate() {
            let Some(Slot::Owned(owned)) = self.slots.get_mut(&item.topic) else {
                unreachable!("assign is only called with every topic owned")
            };
            // A key repeated within this request: its first copy is in
            // flight by now.
            let found = found.or_else(|| stamp.in_flight(&item, &owned.in_flight));
            if let Some(published) = found {
                // The first publish with this key may still wait for its
                // replicas: answer this one when that one is applied.
                let seq = published.seq;
                if let Some(part) = owned
                    .pending
                    .iter_mut()
                    .find(|p| p.first_seq <= seq && seq <= p.last_seq)
                {
                    part.waiters.push((request.clone(), index, published));
                } else if let Some(part) = parts
                    .get_mut(&item.topic)
                    .filter(|p| p.first_seq <= seq && seq <= p.last_seq)
                {
                    part.waiters.push((request.clone(), index, published));
                } else {
                    // Stored, or confirmed by its replicas and being
                    // applied here.
                    immediate.push((index, published));
                }
                continue;
            }
            let seq = owned.next_seq;
            owned.next_seq += 1;
            let (entry, published) =
                stamp.sequence(&item, item.topic.clone(), seq, &mut owned.in_flight);
            let part = parts.entry(item.topic.clone()).or_insert_with(|| Part {
                term: owned.term.clone(),
                entries: Vec::new(),
                first_seq: seq,
                last_seq: 0,
                waiters: Vec::new(),
                since: Instant::now(),
                sent: Instant::now(),
                answered: false,
                _ticket: std::mem::replace(&mut ticket, hub.begin_batch(now)),
            });
            part.last_seq = seq;
            part.waiters.push((request.clone(), index, published));
            outgoing.push((item.topic.clone(), entry.clone()));
            part.entries.push(entry);
        }
        for (topic, part) in parts {
            if let Some(Slot::Owned(owned)) = self.slots.get_mut(&topic) {
                owned.pending.push_back(part);
                self.touched.insert(topic);
            }
        }
        for (index, published) in immediate {
            fill(&request, index, published);
        }
    }
}
