//! The parts of the cluster chaos test (`cluster_chaos.rs`): where clients
//! connect, what each subscriber saw and how it is judged, publishers
//! (`publishers.rs`), subscribers on every transport (`subscribers.rs`) and
//! the fault schedule (`nemesis.rs`).

pub mod nemesis;
pub mod publishers;
pub mod subscribers;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex,
    },
    time::Duration,
};

use rand::{rngs::StdRng, Rng};

/// The topics published to; the pattern subscribers use `z.*`.
pub const TOPICS: [&str; 4] = ["z.a", "z.b", "z.c", "z.d"];

/// Where clients connect: a node directly (ready or not: clients do not
/// ask `/readyz`), or HAProxy in front of all three.
pub struct Front {
    /// `http://ADDR` of each node (fixed across restarts).
    pub nodes: Vec<String>,
    /// `http://ADDR` of HAProxy.
    pub lb: String,
}

impl Front {
    /// A random entry point: HAProxy one time in four, else a random node.
    pub fn pick(&self, rng: &mut StdRng) -> Entry {
        if rng.gen_bool(0.25) {
            Entry {
                base: self.lb.clone(),
                lb: true,
            }
        } else {
            Entry {
                base: self.nodes[rng.gen_range(0..self.nodes.len())].clone(),
                lb: false,
            }
        }
    }
}

/// One entry point: `http://ADDR`, and whether it is HAProxy.
#[derive(Debug, Clone)]
pub struct Entry {
    pub base: String,
    pub lb: bool,
}

/// What the run shares between the test, the clients and the nemesis.
#[derive(Default)]
pub struct Shared {
    /// Publishers stop (each finishes the publish it has started).
    pub stop_publishing: AtomicBool,
    /// Each topic's last seq once publishing stopped and the nodes agree:
    /// subscribers stop when they reach it.
    pub heads: Mutex<Option<BTreeMap<String, u64>>>,
    /// Subscribers give up catching up (the test reports how far they got).
    pub give_up: AtomicBool,
    /// Everything the nemesis must stop for (the test failed).
    pub abort: AtomicBool,
    /// Broken promises seen on the way (wrong replies, a re-sent key
    /// answered with another seq, an unexpected error), each with context.
    pub problems: Mutex<Vec<String>>,
    /// Refusals (503 / `unavailable`) clients saw, and connections or
    /// requests that failed (node down, stopped or draining).
    pub refusals: AtomicU64,
    pub failures: AtomicU64,
    /// 408s with no body: requests a node timed out although they had
    /// arrived whole (a node resumed after SIGSTOP finds its request
    /// timers expired). Retried like a failure, counted apart.
    pub timeouts_408: AtomicU64,
}

impl Shared {
    pub fn problem(&self, what: String) {
        let what = format!("{what} (unix ms {})", nemesis::unix_ms());
        eprintln!("chaos problem: {what}");
        self.problems.lock().unwrap().push(what);
    }

    pub fn refused(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a connection or request to an entry point ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It served (and the subscriber moves on by choice, or the node
    /// closed it as it may: drain, restart).
    Served,
    /// The node refused it as not ready: 503 `unavailable` with
    /// `Retry-After`, an SSE `unavailable` event, a WebSocket `unavailable`
    /// error.
    Refused,
    /// It failed: the node is down, stopped or went away, or HAProxy had
    /// no server for it.
    Failed,
}

/// Judges a non-200 answer: Herald's 503 `unavailable` with `Retry-After`
/// is a refusal; HAProxy's own 5xx (no JSON error) while it has no server
/// up is a failure of the entry point; anything else breaks the contract
/// and is recorded as a problem.
pub fn judge(
    shared: &Shared,
    entry: &Entry,
    what: &str,
    status: u16,
    retry_after: bool,
    body: &str,
) -> End {
    let code = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
    match (status, code.as_deref()) {
        (503, Some("unavailable")) if retry_after => {
            shared.refused();
            End::Refused
        }
        (500..=599, None) if entry.lb => {
            shared.failed();
            End::Failed
        }
        (408, None) => {
            eprintln!(
                "chaos: {what} at {}: 408 (unix ms {})",
                entry.base,
                nemesis::unix_ms()
            );
            shared.timeouts_408.fetch_add(1, Ordering::Relaxed);
            shared.failed();
            End::Failed
        }
        _ => {
            let url = &entry.base;
            shared.problem(format!(
                "{what} at {url}: {status} (Retry-After: {retry_after}) {body}"
            ));
            End::Failed
        }
    }
}

/// A short random pause before trying elsewhere.
pub async fn backoff(rng: &mut StdRng) {
    tokio::time::sleep(Duration::from_millis(rng.gen_range(50..300))).await;
}

/// One delivery event of a topic, in the order the subscriber got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Message(u64),
    Gap { from: u64, to: u64 },
}

/// What one subscriber received, per topic, across all its connections.
#[derive(Debug, Default)]
pub struct Seen {
    pub name: String,
    /// The topics it is subscribed to (all of them for a pattern).
    pub topics: Vec<String>,
    pub events: BTreeMap<String, Vec<Event>>,
    /// Connections (or polls) that delivered normally.
    pub sessions: u64,
}

impl Seen {
    pub fn new(name: &str, topics: &[&str]) -> Seen {
        Seen {
            name: name.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    pub fn push(&mut self, topic: &str, event: Event) {
        self.events
            .entry(topic.to_string())
            .or_default()
            .push(event);
    }

    /// The position reached on `topic`: its last message's seq or the end
    /// of its last gap.
    pub fn last(&self, topic: &str) -> u64 {
        match self.events.get(topic).and_then(|e| e.last()) {
            Some(Event::Message(seq)) => *seq,
            Some(Event::Gap { to, .. }) => *to,
            None => 0,
        }
    }

    /// Whether every topic of this subscriber is at `heads`.
    pub fn reached(&self, heads: &BTreeMap<String, u64>) -> bool {
        self.topics
            .iter()
            .all(|t| self.last(t) >= heads.get(t).copied().unwrap_or(0))
    }
}

/// How one subscriber's stream of one topic compares with `1..=head`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Verdict {
    /// Seqs delivered more than once.
    pub duplicates: u64,
    /// Events that went backwards (seq at or below the position reached).
    pub backwards: u64,
    /// Seqs of `1..=head` never delivered, gaps covering them excepted.
    pub missing: u64,
    /// Seqs reported as gaps.
    pub gap_seqs: u64,
}

impl Verdict {
    /// Judges `events` of one topic against `1..=head`.
    pub fn of(events: &[Event], head: u64) -> Verdict {
        let mut v = Verdict::default();
        let mut covered = std::collections::BTreeSet::new();
        let mut position = 0u64;
        for event in events {
            let (from, to) = match *event {
                Event::Message(seq) => (seq, seq),
                Event::Gap { from, to } => {
                    v.gap_seqs += to - from + 1;
                    (from, to)
                }
            };
            if from <= position {
                v.backwards += 1;
            }
            for seq in from..=to {
                if !covered.insert(seq) && matches!(event, Event::Message(_)) {
                    v.duplicates += 1;
                }
            }
            position = position.max(to);
        }
        v.missing = (1..=head).filter(|s| !covered.contains(s)).count() as u64;
        v
    }

    pub fn clean(&self) -> bool {
        self.duplicates == 0 && self.backwards == 0 && self.missing == 0 && self.gap_seqs == 0
    }
}
