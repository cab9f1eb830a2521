//! What nodes say to each other over NATS (JSON).
//!
//! Subjects, with prefix `P` (default `herald`):
//!
//! | subject               | kind              | payload                 |
//! |-----------------------|-------------------|-------------------------|
//! | `P.c.hb.<node>`       | broadcast         | [`Heartbeat`]           |
//! | `P.c.rep.<node>`      | broadcast         | [`Replicate`]           |
//! | `P.c.claim.<node>`    | broadcast request | [`Claim`] → [`ClaimReply`] |
//! | `P.n.<node>.ack`      | to one node       | [`Ack`]                 |
//! | `P.n.<node>.fwd`      | request           | [`Forward`] → [`ForwardReply`] |
//! | `P.n.<node>.fetch`    | request           | [`Fetch`] → [`FetchReply`] |
//! | `P.n.<node>.heads`    | request           | [`HeadsQuery`] → [`HeadsReply`] |
//! | `P.admin.<node>`      | broadcast request | [`AdminOrder`] → [`AdminReply`] |
//!
//! (Presence deltas travel on `P.p.<node>`, see `cluster::presence`.)
//!
//! Every `P.c.>` message reaches a node through one subscription, so a node
//! sees one owner's heartbeats, replication and claims in the order that
//! owner sent them — the ordering the replica logic relies on.

use std::{cmp::Ordering, sync::Arc};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    engine::PublishItem,
    hub::{
        control::{Order, Target},
        Message, Pattern, Payload, Topic,
    },
    json,
    log::LogEntry,
};

/// Who may sequence a topic: claims with a higher term fence off lower ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Term {
    /// Grows with every claim of the topic.
    pub counter: u64,
    /// The claiming node (breaks ties between concurrent claims).
    pub node: String,
}

impl Ord for Term {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.counter, &self.node).cmp(&(other.counter, &other.node))
    }
}

impl PartialOrd for Term {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Liveness, sent every heartbeat interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Node id.
    pub node: String,
    /// Changes on every start, so a restarted node is seen as new.
    pub incarnation: u64,
    /// Every message this node sequenced with `ts` below this has been
    /// published before this heartbeat.
    pub watermark: u64,
    /// Sent once on graceful shutdown: drop me from the view now.
    #[serde(default)]
    pub leaving: bool,
}

/// One sequenced message on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireEntry {
    /// Topic.
    pub t: String,
    /// Seq.
    pub s: u64,
    /// Timestamp.
    pub ts: u64,
    /// Idempotency key and its expiry, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<(String, u64)>,
    /// The envelope JSON, embedded as is.
    pub e: Box<RawValue>,
}

impl WireEntry {
    /// From a log entry.
    pub fn from_entry(entry: &LogEntry) -> Self {
        let m = &entry.message;
        let envelope = std::str::from_utf8(m.envelope()).expect("envelopes are UTF-8");
        WireEntry {
            t: m.topic.as_str().to_string(),
            s: m.seq,
            ts: m.ts,
            k: entry.idempotency.clone(),
            e: RawValue::from_string(envelope.to_string()).expect("envelopes are JSON"),
        }
    }

    /// Back into a log entry; `None` if the topic is invalid.
    pub fn into_entry(self) -> Option<LogEntry> {
        let topic = Topic::parse(&self.t).ok()?;
        let envelope = bytes::Bytes::from(self.e.get().as_bytes().to_vec());
        Some(LogEntry {
            message: Arc::new(Message::from_envelope(topic, self.s, self.ts, envelope)),
            idempotency: self.k,
        })
    }
}

/// Messages sequenced by `owner`, to be appended by every node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replicate {
    /// The sequencing node.
    pub owner: String,
    /// Per topic in this batch, the owner's term.
    pub terms: Vec<(String, Term)>,
    /// The messages, per topic in seq order.
    pub entries: Vec<WireEntry>,
}

/// "I now sequence `topic` under `term`": replicas fence off lower terms
/// and report how far they are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claim {
    /// The claimer.
    pub node: String,
    /// Topic.
    pub topic: String,
    /// The claimed term.
    pub term: Term,
}

/// Answer to a [`Claim`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClaimReply {
    /// The replying node.
    pub node: String,
    /// Whether the claim was accepted.
    pub ok: bool,
    /// The replier's head seq of the topic.
    pub head: u64,
    /// The highest term the replier knew before (or still knows, if refused).
    pub term: Term,
}

/// A replica's progress, sent to an owner after applying its messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ack {
    /// The replica.
    pub node: String,
    /// `(topic, seq)`: everything up to `seq` is durable there.
    pub heads: Vec<(String, u64)>,
    /// `(topic, term)`: refused because a newer term owns the topic.
    pub rejected: Vec<(String, Term)>,
}

/// One item of a forwarded publish.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardItem {
    /// Topic.
    pub topic: String,
    /// Compact JSON data (absent for a binary payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// A binary payload in base64. A node that predates binary payloads
    /// requires `data`, so it refuses such a forward as malformed instead
    /// of storing the base64 text as a JSON string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin: Option<String>,
    /// Idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// W3C trace context the message carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp: Option<String>,
}

impl ForwardItem {
    /// The wire form of a publish.
    pub fn new(item: &PublishItem) -> Self {
        let (data, bin) = match &item.data {
            Payload::Json(data) => (
                Some(RawValue::from_string(data.clone()).expect("data is JSON")),
                None,
            ),
            Payload::Binary(raw) => (None, Some(STANDARD.encode(raw))),
        };
        ForwardItem {
            topic: item.topic.as_str().to_string(),
            data,
            bin,
            key: item.idempotency_key.clone(),
            tp: item.traceparent.clone(),
        }
    }

    /// Takes the payload out (`None` if the item has neither or both
    /// forms, or bad base64). `item.key` and `item.tp` are left.
    pub fn payload(&mut self) -> Option<Payload> {
        match (self.data.take(), self.bin.take()) {
            (Some(data), None) => Some(Payload::Json(json::compact(data.get()).into_owned())),
            (None, Some(bin)) => STANDARD
                .decode(bin)
                .ok()
                .map(|raw| Payload::Binary(raw.into())),
            _ => None,
        }
    }
}

/// Publishes sent to their topics' owner: one publish request, or several
/// coalesced into one NATS request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// Items, all owned by the receiver (per the sender's view).
    pub items: Vec<ForwardItem>,
    /// When several requests are coalesced: how many of `items` each one
    /// has, in order. Each is sequenced and answered on its own (one
    /// request's failure is not another's), in [`ForwardReply::each`]. A
    /// node that predates this field takes all items as one request and
    /// answers once; the sender gives that answer to every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<usize>>,
}

/// One acknowledged item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardAck {
    /// Seq.
    pub seq: u64,
    /// Timestamp.
    pub ts: u64,
    /// Answered from the idempotency record.
    pub dup: bool,
}

/// Answer to a [`Forward`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardReply {
    /// Acks in item order, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Vec<ForwardAck>>,
    /// `not_owner` (retry after the view settles) or `unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<(String, String)>,
    /// The answer to each request of a coalesced [`Forward`] (its
    /// `requests`), in order; `ok` and `err` are then absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<Vec<ForwardReply>>,
}

/// Read `from..=to` of a topic (at most `max` messages).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fetch {
    /// Topic.
    pub topic: String,
    /// First seq.
    pub from: u64,
    /// Last seq.
    pub to: u64,
    /// Page size.
    pub max: usize,
}

/// Answer to a [`Fetch`]: messages in order (the replier's committed ones).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FetchReply {
    /// The messages.
    pub entries: Vec<WireEntry>,
    /// The replier's term for the topic, read after the messages: every
    /// message it sent was stored under this term or an older one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<Term>,
    /// The replier's retention removed the asked seqs up to this one; the
    /// entries, if any, follow it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
}

/// The last seq of a range a replier no longer holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Removed {
    /// Its last seq.
    pub seq: u64,
    /// The ts of the last message retention removed.
    pub ts: u64,
}

/// List topic heads after `after` (paging by name).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeadsQuery {
    /// Exclusive start.
    pub after: Option<String>,
    /// Page size.
    pub limit: usize,
}

/// Answer to a [`HeadsQuery`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeadsReply {
    /// `(topic, last_seq)`, sorted by topic.
    pub heads: Vec<(String, u64)>,
    /// More pages follow.
    pub more: bool,
    /// The replier's term of each topic in `heads` that has one: a node
    /// catching up learns every claim it missed while away, so it refuses
    /// the older owners' replication at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terms: Vec<(String, Term)>,
}

/// An order of the admin API, for every node to carry out on its own
/// clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AdminOrder {
    /// Disconnect the target's clients.
    Disconnect {
        /// Whom.
        target: Target,
    },
    /// End the target's subscription to `pattern`.
    Unsubscribe {
        /// Whom.
        target: Target,
        /// The pattern as subscribed.
        pattern: String,
    },
}

impl AdminOrder {
    /// The wire form of `order`.
    pub fn from_order(order: &Order) -> Self {
        match order {
            Order::Disconnect { target } => AdminOrder::Disconnect {
                target: target.clone(),
            },
            Order::Unsubscribe { target, pattern } => AdminOrder::Unsubscribe {
                target: target.clone(),
                pattern: pattern.as_str().to_string(),
            },
        }
    }

    /// Back into an order; `None` if the pattern is invalid.
    pub fn into_order(self) -> Option<Order> {
        Some(match self {
            AdminOrder::Disconnect { target } => Order::Disconnect { target },
            AdminOrder::Unsubscribe { target, pattern } => Order::Unsubscribe {
                target,
                pattern: Pattern::parse(&pattern).ok()?,
            },
        })
    }
}

/// A node's answer to an [`AdminOrder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminReply {
    /// The answering node.
    pub node: String,
    /// Clients it disconnected, or subscriptions it ended.
    pub count: usize,
}

/// Serializes a wire message.
pub fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    bytes::Bytes::from(serde_json::to_vec(value).expect("wire types serialize"))
}

/// Parses a wire message.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Option<T> {
    serde_json::from_slice(payload).ok()
}

#[cfg(test)]
mod tests;
