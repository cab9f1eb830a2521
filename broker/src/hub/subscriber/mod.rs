//! The subscriber: one connection's subscriptions, positions and delivery
//! logic, shared by every transport (WebSocket, SSE, long-poll).
//!
//! # No gap, no duplicate
//!
//! The subscriber tracks, per topic, the last seq it has scheduled for
//! delivery. Live messages arrive through the mailbox in seq order per topic.
//! For each one:
//!
//! * `seq <= scheduled`: already delivered (from history or an overlapping
//!   pattern) — dropped;
//! * `seq == scheduled + 1`: delivered;
//! * `seq > scheduled + 1`: the missing range is read from the log first.
//!
//! The engine only dispatches a message after it is durable in the log, and
//! dispatches each topic in seq order, so whenever a live message with seq
//! `s` arrives, everything below `s` is in the log (or was trimmed by
//! retention, which is reported as a gap). That makes the seam between replay
//! and live traffic safe regardless of timing: subscribe first, then replay;
//! anything that races is either deduplicated or filled from the log.
//!
//! Topics a wildcard pattern matches are not known in advance. The subscriber
//! keeps a *floor* (see [`super::cursor`]): every matching message with
//! `ts < floor` has been delivered. The first time a topic shows up under a
//! pattern, its messages with `ts >= floor` that came before the live one are
//! replayed from the log.

mod backlog;
mod deliver;
mod position;

pub use deliver::{Delivered, DeliverySink};

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use super::replay::Work;
use super::{
    cursor::Cursor,
    mailbox::{Drained, Mailbox, MailboxState},
    message::Message,
    topic::{Pattern, Topic},
    Hub, SubscriberId,
};
use crate::log::{LogError, MessageLog};

/// Something to send to the client.
#[derive(Debug, Clone)]
pub enum Event {
    /// A message, in seq order for its topic.
    Message(Arc<Message>),
    /// Messages `from..=to` of `topic` were removed by retention before they
    /// could be delivered.
    Gap {
        /// The topic.
        topic: Topic,
        /// First lost seq.
        from: u64,
        /// Last lost seq.
        to: u64,
    },
}

/// Where a new subscription starts.
#[derive(Debug, Clone)]
pub enum Resume {
    /// Live from now (or, right after [`Subscriber::resume_from`], from
    /// that cursor).
    Live,
    /// After this seq: of the topic, or of each topic a pattern matches
    /// (`0`: every retained message).
    Since(u64),
    /// From the first message with `ts` at or after this time (ms since
    /// the epoch), per topic; what retention removed is reported as a gap.
    SinceTs(u64),
    /// From a cursor: listed topics after their seq, other matching topics
    /// from the cursor's floor.
    Cursor(Cursor),
}

/// Why a subscribe was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// Per-connection subscription limit reached.
    #[error("subscription limit of {0} per connection reached")]
    TooMany(usize),
}

/// Which messages of a topic not tracked yet a pattern owes: those after
/// `after_seq` when it is set (a `since` on a pattern), else those with
/// `ts >= ts` (a live subscription's start, a cursor's floor, a
/// `since_ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Start {
    /// Oldest `ts` owed.
    pub ts: u64,
    /// Seqs up to this one are not owed.
    pub after_seq: Option<u64>,
    /// Report what retention removed before the first retained message
    /// (`since_ts`: the client asked for a time, and may be owed some).
    pub report_trimmed: bool,
}

impl Start {
    fn at(ts: u64) -> Self {
        Start {
            ts,
            after_seq: None,
            report_trimmed: false,
        }
    }

    /// Whether message `seq` (sent at `ts`) is owed.
    fn owes(&self, seq: u64, ts: u64) -> bool {
        match self.after_seq {
            Some(n) => seq > n,
            None => ts >= self.ts,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Position {
    /// Highest seq queued for delivery (or delivered).
    scheduled: u64,
    /// Highest seq delivered (or reported lost in a gap).
    delivered: u64,
    /// `ts` of the last delivered message.
    delivered_ts: u64,
    /// Named by a concrete subscription: always listed in cursors.
    pinned: bool,
}

/// One connection's view of the hub. Dropping it removes its subscriptions.
pub struct Subscriber {
    id: SubscriberId,
    hub: Arc<Hub>,
    log: Arc<dyn MessageLog>,
    mailbox: Arc<Mailbox>,
    /// Subscribed patterns, each with what it owes of topics first seen
    /// under it (from its subscribe time, a resumed cursor's floor, a
    /// `since` or a `since_ts`).
    patterns: Vec<(Pattern, Start)>,
    max_patterns: usize,
    /// Set by [`Subscriber::resume_from`] until events are first taken:
    /// patterns subscribed meanwhile continue the cursor.
    resuming: bool,
    /// Looked up twice per delivered message, so keyed with foldhash (seeded
    /// per map) rather than SipHash.
    positions: HashMap<Topic, Position, foldhash::fast::RandomState>,
    floor: u64,
    /// Watermark read before the last mailbox drain; becomes the floor once
    /// everything drained then has been delivered.
    pending_floor: Option<u64>,
    work: VecDeque<Work>,
    inbox: Vec<Arc<Message>>,
}

impl Subscriber {
    /// A subscriber with no subscriptions whose mailbox holds at most
    /// `queue_limit_bytes`.
    pub fn new(
        hub: Arc<Hub>,
        log: Arc<dyn MessageLog>,
        queue_limit_bytes: usize,
        max_patterns: usize,
    ) -> Self {
        Subscriber {
            id: hub.next_subscriber_id(),
            floor: hub.watermark(),
            hub,
            log,
            mailbox: Arc::new(Mailbox::new(queue_limit_bytes)),
            patterns: Vec::new(),
            max_patterns,
            resuming: false,
            positions: HashMap::default(),
            pending_floor: None,
            work: VecDeque::new(),
            inbox: Vec::new(),
        }
    }

    /// This subscriber's id.
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    /// The patterns subscribed, in order of subscription.
    pub fn patterns(&self) -> impl Iterator<Item = &Pattern> {
        self.patterns.iter().map(|(p, _)| p)
    }

    /// Subscribes to `pattern`, starting as `resume` says, and returns the
    /// subscription's cursor: where it starts, or — if the pattern was
    /// already subscribed, which changes nothing — where it stands.
    ///
    /// A client that records the seq of every message it receives can
    /// resume the subscription later — on any node — by sending back this
    /// cursor with its positions updated.
    pub fn subscribe(
        &mut self,
        pattern: Pattern,
        resume: Resume,
    ) -> Result<Option<Cursor>, SubscribeError> {
        let topic = pattern.as_topic();
        if let Some((_, start)) = self.patterns.iter().find(|(p, _)| *p == pattern) {
            // Already subscribed: nothing changes (a connection never gets a
            // seq twice), but the caller learns where the subscription stands.
            return Ok(Some(self.cursor_for(&pattern, start.ts)));
        }
        if self.patterns.len() >= self.max_patterns {
            return Err(SubscribeError::TooMany(self.max_patterns));
        }
        // Register before reading heads: anything dispatched from now on
        // reaches the mailbox, anything before is in the log.
        self.hub.add_subscription(&pattern, self.id, &self.mailbox);
        // `start`: topics this pattern matches that are not tracked are
        // replayed from their first message with `ts >= start`. A fresh
        // subscription starts now; a resumed one at its cursor's floor.
        // `resumed`: this subscription continues a cursor, so an unlisted
        // concrete topic starts at the floor rather than live.
        let resumed = self.resuming || matches!(resume, Resume::Cursor(_) | Resume::SinceTs(_));
        let (start, since) = match resume {
            Resume::Live if self.resuming => (Start::at(self.floor), None),
            Resume::Live => (Start::at(self.hub.watermark()), None),
            // A concrete topic is tracked from `n` on; a pattern owes each
            // topic it matches what came after `n`, whenever it was sent.
            Resume::Since(n) if topic.is_some() => (Start::at(self.hub.watermark()), Some(n)),
            Resume::Since(n) => (
                Start {
                    ts: 0,
                    after_seq: Some(n),
                    report_trimmed: false,
                },
                None,
            ),
            Resume::SinceTs(ts) => (
                Start {
                    ts,
                    after_seq: None,
                    report_trimmed: true,
                },
                None,
            ),
            Resume::Cursor(cursor) => {
                for (t, seq) in cursor
                    .positions
                    .into_iter()
                    .filter(|(t, _)| pattern.matches(t))
                {
                    if !self.positions.contains_key(&t) {
                        let position = self.resumed_position(&t, seq);
                        self.positions.insert(t, position);
                    }
                }
                (Start::at(cursor.floor), None)
            }
        };
        match &topic {
            Some(topic) => {
                let head = self.hub.head(topic);
                // Where an untracked concrete topic starts: after `since`;
                // when resuming a cursor that does not list it, or from a
                // `since_ts`, at its first message since that time (like any
                // other topic the cursor does not list); otherwise live.
                let from = match since {
                    Some(n) => n,
                    None if resumed && !self.positions.contains_key(topic) => {
                        if start.report_trimmed {
                            self.owe_trimmed(topic, start.ts);
                        }
                        self.log
                            .first_seq_since_ts(topic, start.ts, head.last_seq)
                            .ok()
                            .flatten()
                            .map_or(head.last_seq, |first| first - 1)
                    }
                    None => head.last_seq,
                };
                let pos = self.positions.entry(topic.clone()).or_insert(Position {
                    scheduled: from,
                    delivered: from,
                    delivered_ts: 0,
                    pinned: true,
                });
                pos.pinned = true;
                if head.last_seq > pos.scheduled {
                    self.work.push_back(Work::Replay {
                        topic: topic.clone(),
                        from: pos.scheduled + 1,
                        to: head.last_seq,
                    });
                    pos.scheduled = head.last_seq;
                }
            }
            None => self.schedule_backlog(&pattern, start),
        }
        // A replay from before the floor (a `since`, a `since_ts`) owes
        // what the floor would claim delivered: the floor waits for it.
        self.floor = self.floor.min(start.ts);
        let cursor = self.cursor_for(&pattern, start.ts);
        self.patterns.push((pattern, start));
        Ok(Some(cursor))
    }

    /// Unsubscribes from `pattern`; returns false if it was not subscribed.
    /// Nothing matched only by that pattern is delivered afterwards.
    pub fn unsubscribe(&mut self, pattern: &Pattern) -> bool {
        let Some(i) = self.patterns.iter().position(|(p, _)| p == pattern) else {
            return false;
        };
        self.patterns.remove(i);
        self.hub.remove_subscription(pattern, self.id);
        let patterns = &self.patterns;
        let still = |t: &Topic| patterns.iter().any(|(p, _)| p.matches(t));
        self.positions.retain(|t, _| still(t));
        self.work.retain(|w| still(w.topic()));
        if let Some(topic) = pattern.as_topic() {
            if let Some(pos) = self.positions.get_mut(&topic) {
                pos.pinned = false;
            }
        }
        true
    }

    /// Whether the mailbox overflowed (the client is too slow and must be
    /// disconnected), known before [`Subscriber::deliver`] reports it.
    pub fn overflowed(&self) -> bool {
        self.mailbox.state() == MailboxState::Overflowed
    }

    /// Bytes of live messages waiting in the mailbox.
    pub fn queued_bytes(&self) -> usize {
        self.mailbox.queued_bytes()
    }

    /// Whether events are ready without waiting for the mailbox.
    pub fn has_work(&self) -> bool {
        !self.work.is_empty()
    }

    /// Whether the [`Subscriber::next_events`] call that just returned
    /// `taken` of at most `max` events left nothing behind: a short batch
    /// means it emptied the mailbox, and no work waits. Anything queued
    /// since has stored a wake-up, so the caller waits instead of asking
    /// again.
    fn emptied_by(&self, taken: usize, max: usize) -> bool {
        taken < max && self.work.is_empty()
    }

    /// A future that resolves when [`Subscriber::deliver`] may have
    /// something to return. It does not borrow the subscriber, so it can sit
    /// in a `select!` next to branches that use it.
    pub fn wake(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mailbox = self.mailbox.clone();
        let ready_now = !self.work.is_empty();
        async move {
            if !ready_now {
                mailbox.changed().await;
            }
        }
    }
    /// [`Subscriber::wake`] as a poll, for a caller that holds the
    /// subscriber: `Ready` when [`Subscriber::deliver`] may have something,
    /// else `cx` is woken when it may.
    pub fn poll_wake(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if !self.work.is_empty() {
            return std::task::Poll::Ready(());
        }
        self.mailbox.poll_changed(cx)
    }

    /// A future that resolves when the mailbox changed (a message queued
    /// into an empty mailbox, an overflow, a close), whatever work is
    /// ready: for watching a connection whose socket is full.
    pub fn mailbox_changed(&self) -> impl std::future::Future<Output = ()> + 'static {
        let mailbox = self.mailbox.clone();
        async move { mailbox.changed().await }
    }

    /// Appends up to `max` events to `out` and returns the mailbox state;
    /// [`MailboxState::Overflowed`] means the client is too slow and must be
    /// disconnected so it resumes from the log.
    ///
    /// [`Subscriber::deliver`] records each event it hands on; cursors
    /// reflect only those.
    fn next_events(&mut self, out: &mut Vec<Event>, max: usize) -> Result<MailboxState, LogError> {
        let limit = out.len() + max;
        self.resuming = false;
        if self.work.is_empty() {
            // Everything drained last time has been handed to the transport,
            // so the watermark read before that drain is now a safe floor.
            if let Some(floor) = self.pending_floor.take() {
                self.floor = self.floor.max(floor);
            }
        }
        let mut drained = false;
        loop {
            while out.len() < limit {
                let Some(work) = self.work.pop_front() else {
                    break;
                };
                match work {
                    // The common case, moved out without touching its count.
                    Work::Live(message) => out.push(Event::Message(message)),
                    mut work => {
                        let done = work.step(&*self.log, out, limit - out.len());
                        if !matches!(done, Ok(true)) {
                            self.work.push_front(work);
                        }
                        done?;
                    }
                }
            }
            if out.len() >= limit || drained {
                return Ok(MailboxState::Open);
            }
            // Read the watermark before draining: whatever was dispatched
            // with a smaller ts is in the mailbox by now.
            let watermark = self.hub.watermark();
            let mut inbox = std::mem::take(&mut self.inbox);
            let mut evicted = Drained::default();
            let state = self.mailbox.drain_into(&mut inbox, &mut evicted);
            if state != MailboxState::Open {
                inbox.clear();
                self.inbox = inbox;
                return Ok(state);
            }
            self.pending_floor = Some(watermark);
            self.absorb(evicted);
            for message in inbox.drain(..) {
                let Some(live) = self.accept(message) else {
                    continue;
                };
                // Straight out when nothing waits before it: one queue fewer
                // touched per message per subscriber.
                if self.work.is_empty() && out.len() < limit {
                    out.push(Event::Message(live));
                } else {
                    self.work.push_back(Work::Live(live));
                }
            }
            self.inbox = inbox;
            drained = true;
        }
    }

    /// Decides what a live message needs: nothing (`None`), or delivery
    /// (`Some`), after any replay of what came before it, which is queued
    /// as work here.
    fn accept(&mut self, message: Arc<Message>) -> Option<Arc<Message>> {
        if !self.patterns.iter().any(|(p, _)| p.matches(&message.topic)) {
            return None; // unsubscribed while it was queued
        }
        match self.positions.get_mut(&message.topic) {
            Some(pos) => {
                if message.seq <= pos.scheduled {
                    return None;
                }
                if message.seq > pos.scheduled + 1 {
                    self.work.push_back(Work::Replay {
                        topic: message.topic.clone(),
                        from: pos.scheduled + 1,
                        to: message.seq - 1,
                    });
                }
                pos.scheduled = message.seq;
            }
            None => {
                // Below the floor of every pattern matching it: delivered
                // before (a resumed cursor's promise), or older than the
                // subscription. A copy a node receives late (catch-up after
                // a restart, replication after a NATS outage) is not new.
                if !self.owed_first_seen(&message.topic, message.seq, message.ts) {
                    return None;
                }
                self.owe_before_first_seen(&message.topic, message.seq);
                self.positions.insert(
                    message.topic.clone(),
                    Position {
                        scheduled: message.seq,
                        ..Default::default()
                    },
                );
            }
        }
        Some(message)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.mailbox.close();
        for (pattern, _) in &self.patterns {
            self.hub.remove_subscription(pattern, self.id);
        }
    }
}
