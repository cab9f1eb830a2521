//! Values exchanged with the client: events, messages, options.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

/// What a [`Subscription`](crate::Subscription) yields.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A message published to a topic the subscription matches.
    Message {
        /// The concrete topic it was published to.
        topic: String,
        /// Its position in the topic: 1, 2, 3, ... (the same on every node).
        seq: u64,
        /// Publish time set by the broker, milliseconds since the Unix epoch.
        ts: u64,
        /// The payload, as published.
        data: serde_json::Value,
    },
    /// A binary message (published as raw bytes) on a topic the
    /// subscription matches.
    Binary {
        /// The concrete topic it was published to.
        topic: String,
        /// Its position in the topic.
        seq: u64,
        /// Publish time set by the broker, milliseconds since the Unix epoch.
        ts: u64,
        /// The bytes, exactly as published.
        data: bytes::Bytes,
    },
    /// Messages `from..=to` of `topic` were removed by retention before this
    /// subscription could receive them.
    Gap {
        /// The concrete topic.
        topic: String,
        /// First lost seq.
        from: u64,
        /// Last lost seq.
        to: u64,
    },
}

impl Event {
    /// The concrete topic the event is about.
    pub fn topic(&self) -> &str {
        match self {
            Event::Message { topic, .. }
            | Event::Binary { topic, .. }
            | Event::Gap { topic, .. } => topic,
        }
    }

    /// The payload of a message (JSON or binary); `None` for a gap.
    pub fn payload(&self) -> Option<crate::Payload> {
        match self {
            Event::Message { data, .. } => Some(crate::Payload::Json(data.clone())),
            Event::Binary { data, .. } => Some(crate::Payload::Binary(data.clone())),
            Event::Gap { .. } => None,
        }
    }
}

/// A stored message, as history returns it (the Herald envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The concrete topic.
    pub topic: String,
    /// Position in the topic.
    pub seq: u64,
    /// Publish time, milliseconds since the Unix epoch.
    pub ts: u64,
    /// The payload.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl From<Message> for Event {
    fn from(m: Message) -> Self {
        Event::Message {
            topic: m.topic,
            seq: m.seq,
            ts: m.ts,
            data: m.data,
        }
    }
}

/// The acknowledgement of a publish: the message is durable and has this seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// The topic published to.
    pub topic: String,
    /// The seq the broker assigned.
    pub seq: u64,
}

/// One page of a topic's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Retained messages after the requested `since`, in seq order.
    pub messages: Vec<Message>,
    /// The oldest retained seq (`last_seq + 1` when nothing is retained).
    pub first_seq: u64,
    /// The topic's newest seq (0 if never published).
    pub last_seq: u64,
}

/// Who is subscribed to a topic (`GET /v1/topics/{topic}/presence`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct Presence {
    /// The topic asked about.
    pub topic: String,
    /// Every client, on any node, subscribed to a pattern matching it.
    pub clients: Vec<PresentClient>,
}

/// One client in a presence list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct PresentClient {
    /// Unique per connection (per long-poll session).
    pub client_id: String,
    /// The authenticated subject, if any.
    pub sub: Option<String>,
    /// `ws`, `sse` or `poll`.
    pub transport: String,
    /// The node the client is connected to.
    pub node: String,
}

/// Where a new subscription starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Only messages published after the subscription is established.
    Live,
    /// Every retained message with a seq above this one, then live. On a
    /// wildcard pattern it applies to each matching topic (`Since(0)`:
    /// everything still retained).
    Since(u64),
    /// Resume from a cursor returned by
    /// [`Subscription::cursor`](crate::Subscription::cursor) (or an SSE /
    /// long-poll cursor of the same pattern), e.g. after a process restart.
    Cursor(String),
}

/// A streaming transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// WebSocket (`/v1/ws`).
    Ws,
    /// Server-Sent Events (`/v1/sse`).
    Sse,
    /// Long-polling (`/v1/poll`).
    Poll,
}

impl Transport {
    /// Every transport, in the default fallback order.
    pub const ALL: [Transport; 3] = [Transport::Ws, Transport::Sse, Transport::Poll];

    /// The short name: `ws`, `sse` or `poll`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ws" | "websocket" => Ok(Transport::Ws),
            "sse" => Ok(Transport::Sse),
            "poll" | "long-poll" | "longpoll" => Ok(Transport::Poll),
            other => Err(crate::Error::InvalidArgument(format!(
                "unknown transport {other:?} (expected ws, sse or poll)"
            ))),
        }
    }
}

/// Connection life-cycle of subscriptions, from
/// [`Client::connection_events`](crate::Client::connection_events).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// A subscription is established on a node (after the server confirmed
    /// it: WebSocket `subscribed`, SSE opening block, first poll answer).
    Connected {
        /// Id of the subscription ([`Subscription::id`](crate::Subscription::id)).
        subscription: u64,
        /// Its pattern.
        pattern: String,
        /// The node's base URL.
        url: String,
        /// The transport in use.
        transport: Transport,
    },
    /// An established connection ended; the client reconnects by itself.
    Disconnected {
        /// Id of the subscription.
        subscription: u64,
        /// Its pattern.
        pattern: String,
        /// The node's base URL.
        url: String,
        /// The transport that was in use.
        transport: Transport,
        /// Why it ended.
        reason: String,
    },
    /// A connection attempt failed; the next transport or node is tried.
    ConnectFailed {
        /// Id of the subscription.
        subscription: u64,
        /// Its pattern.
        pattern: String,
        /// The node's base URL.
        url: String,
        /// The transport that failed.
        transport: Transport,
        /// Why.
        reason: String,
    },
    /// The node disconnected the client on purpose (admin API: WebSocket
    /// close 4004, SSE `kicked`, long-poll 410). The subscription ends with
    /// [`Error::Kicked`](crate::Error::Kicked) and is not reconnected.
    Kicked {
        /// Id of the subscription.
        subscription: u64,
        /// Its pattern.
        pattern: String,
        /// The node's base URL.
        url: String,
        /// The transport that was in use.
        transport: Transport,
        /// What the node said.
        reason: String,
    },
    /// The node ended this subscription on its own (admin API
    /// `unsubscribe`). It ends with
    /// [`Error::Unsubscribed`](crate::Error::Unsubscribed) and is not
    /// subscribed again; the client's other subscriptions go on.
    Unsubscribed {
        /// Id of the subscription.
        subscription: u64,
        /// Its pattern.
        pattern: String,
        /// The node's base URL.
        url: String,
        /// The transport that was in use.
        transport: Transport,
    },
    /// A node answered that it cannot serve subscriptions now (not
    /// connected to its cluster or not caught up yet, draining, full): the
    /// client tries another node, and this one again after `retry_after`.
    /// Not an error; a subscription waits for a node to serve it.
    Refused {
        /// Id of the subscription.
        subscription: u64,
        /// Its pattern.
        pattern: String,
        /// The node's base URL.
        url: String,
        /// The transport that was refused.
        transport: Transport,
        /// What the node said.
        reason: String,
        /// How long the node asked to wait (its `Retry-After`).
        retry_after: Duration,
    },
    /// The client waits `delay` before its `attempt`-th reconnection round.
    Reconnecting {
        /// Id of the subscription.
        subscription: u64,
        /// Its pattern.
        pattern: String,
        /// 1 for the first retry after a failure, then 2, 3, ...
        attempt: u32,
        /// Back-off before the attempt.
        delay: Duration,
    },
}
