//! Presence: who is subscribed where, cluster-wide, and join/leave events.
//!
//! Every subscription a client holds on a namespace with presence on is an
//! *entry* `(client, pattern)`. A node owns the entries of its own
//! connections and, in a cluster, holds a copy of every other node's,
//! kept current by [`Delta`]s (see `cluster::presence`). A node that leaves
//! the membership view takes its entries with it, which emits a `leave` for
//! each.
//!
//! Listing a topic returns every client with an entry whose pattern matches
//! it, once per client. A join or leave on `S` is sent to each listener
//! whose pattern equals `S` or, when `S` is a concrete topic, matches it.
//! Events are best effort: they are not logged, not resumable, and a
//! listener that does not drain its small queue loses the oldest.

mod client;
mod feed;
mod sessions;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use self::{
    client::ClientPresence,
    feed::{PresenceFeed, PresenceFrame, FEED_CAPACITY},
    sessions::{PollLease, PollSessions, SessionKicked, KICKED_MEMORY, POLL_SESSION_GRACE},
};

use super::topic::{Pattern, Topic};

/// One client as presence shows it. Shared (`Arc`) by the client's
/// connection and every entry it has, so a subscription's entry costs no
/// copy of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// Unique per connection (per long-poll session).
    pub client_id: Arc<str>,
    /// The authenticated subject, if any.
    pub sub: Option<String>,
    /// `ws`, `sse` or `poll`.
    pub transport: String,
    /// The node the client is connected to.
    pub node: String,
}

/// A change to one node's entries, as sent between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Delta {
    /// `client` subscribed to `topic` (a pattern).
    Join {
        /// The pattern.
        topic: String,
        /// Who.
        client: ClientInfo,
    },
    /// `client` left `topic`.
    Leave {
        /// The pattern.
        topic: String,
        /// Who.
        client: ClientInfo,
    },
    /// `node` asks every peer for a snapshot (it may have missed changes).
    Resync {
        /// The asking node.
        node: String,
    },
    /// Every entry of the sending node, replacing what was known.
    Snapshot {
        /// The sending node.
        node: String,
        /// `(pattern, client)` pairs.
        entries: Vec<(String, ClientInfo)>,
    },
}

/// `(client id, pattern)`, both shared with what they came from.
type EntryKey = (Arc<str>, Arc<str>);

/// The presence table of the cluster as this node knows it.
pub struct Presence {
    node: String,
    /// node → (client id, pattern) → client.
    entries: RwLock<HashMap<String, HashMap<EntryKey, Arc<ClientInfo>>>>,
    listeners: RwLock<HashMap<u64, (Pattern, Arc<PresenceFeed>)>>,
    next_listener: AtomicU64,
    /// Local changes for the cluster engine to broadcast.
    outbox: Mutex<Option<mpsc::UnboundedSender<Delta>>>,
    default_on: bool,
    /// Namespace → presence on/off, where it differs from the default.
    overrides: HashMap<String, bool>,
}

impl Presence {
    /// An empty table for `node`. Presence is kept where `default_on`,
    /// except for namespaces listed in `overrides` with their own setting.
    pub fn new(node: String, default_on: bool, overrides: HashMap<String, bool>) -> Self {
        Presence {
            node,
            entries: RwLock::new(HashMap::new()),
            listeners: RwLock::new(HashMap::new()),
            next_listener: AtomicU64::new(1),
            outbox: Mutex::new(None),
            default_on,
            overrides,
        }
    }

    /// Whether presence is kept for subscriptions to `pattern`. A pattern
    /// whose first token is a wildcard spans namespaces and follows the
    /// default.
    pub fn enabled_for(&self, pattern: &Pattern) -> bool {
        let first = pattern.as_str().split('.').next().unwrap_or_default();
        if first == "*" || first == ">" {
            return self.default_on;
        }
        self.overrides
            .get(first)
            .copied()
            .unwrap_or(self.default_on)
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A new client id, unique in the cluster and unguessable: 128 random
    /// bits from a CSPRNG (`rand`'s thread generator, seeded by the OS).
    /// A long-poll client names its session by this id, so a guessable one
    /// would let others reach for it.
    pub fn new_client_id(&self) -> String {
        format!("{}-{:032x}", self.node, rand::random::<u128>())
    }

    /// Routes local changes to `tx` (the cluster engine broadcasts them).
    pub fn set_outbox(&self, tx: mpsc::UnboundedSender<Delta>) {
        *self.outbox.lock() = Some(tx);
    }

    /// Hands a change to the cluster engine, if there is one (the delta is
    /// only built then).
    fn broadcast(&self, delta: impl FnOnce() -> Delta) {
        if let Some(tx) = &*self.outbox.lock() {
            let _ = tx.send(delta());
        }
    }

    /// Records `client` (of any node) on `topic`; announces a new entry.
    fn add(&self, topic: Arc<str>, client: &Arc<ClientInfo>) -> bool {
        let key = (client.client_id.clone(), topic);
        let mut entries = self.entries.write();
        let node = match entries.get_mut(&client.node) {
            Some(node) => node,
            None => entries.entry(client.node.clone()).or_default(),
        };
        let topic = key.1.clone();
        let new = node.insert(key, client.clone()).is_none();
        drop(entries);
        if new {
            self.notify("join", &topic, client);
        }
        new
    }

    /// Forgets `client` on `topic`; announces the removal.
    fn remove(&self, topic: Arc<str>, client: &ClientInfo) -> bool {
        let key = (client.client_id.clone(), topic);
        let removed = self
            .entries
            .write()
            .get_mut(&client.node)
            .and_then(|m| m.remove(&key))
            .is_some();
        if removed {
            self.notify("leave", &key.1, client);
        }
        removed
    }

    /// A local client subscribed to `pattern`.
    pub fn join(&self, pattern: &Pattern, client: &Arc<ClientInfo>) {
        if self.add(pattern.shared_text(), client) {
            self.broadcast(|| Delta::Join {
                topic: pattern.as_str().to_string(),
                client: ClientInfo::clone(client),
            });
        }
    }

    /// A local client left `pattern` (or disconnected).
    pub fn leave(&self, pattern: &Pattern, client: &Arc<ClientInfo>) {
        if self.remove(pattern.shared_text(), client) {
            self.broadcast(|| Delta::Leave {
                topic: pattern.as_str().to_string(),
                client: ClientInfo::clone(client),
            });
        }
    }

    /// Every local entry, for a snapshot to peers.
    pub fn local_snapshot(&self) -> Delta {
        let entries = self
            .entries
            .read()
            .get(&self.node)
            .map(|m| {
                m.iter()
                    .map(|((_, pattern), c)| (pattern.to_string(), ClientInfo::clone(c)))
                    .collect()
            })
            .unwrap_or_default();
        Delta::Snapshot {
            node: self.node.clone(),
            entries,
        }
    }

    /// Applies a peer's change (ignores this node's own).
    pub fn apply(&self, delta: Delta) {
        match delta {
            Delta::Join { topic, client } if client.node != self.node => {
                self.add(topic.into(), &Arc::new(client));
            }
            Delta::Leave { topic, client } if client.node != self.node => {
                self.remove(topic.into(), &client);
            }
            Delta::Snapshot { node, entries } if node != self.node => {
                let new: HashMap<EntryKey, Arc<ClientInfo>> = entries
                    .into_iter()
                    .map(|(pattern, c)| ((c.client_id.clone(), pattern.into()), Arc::new(c)))
                    .collect();
                let old = self
                    .entries
                    .write()
                    .insert(node, new.clone())
                    .unwrap_or_default();
                for (key, c) in &old {
                    if !new.contains_key(key) {
                        self.notify("leave", &key.1, c);
                    }
                }
                for (key, c) in &new {
                    if !old.contains_key(key) {
                        self.notify("join", &key.1, c);
                    }
                }
            }
            _ => {}
        }
    }

    /// Forgets every entry of `node` (it left or died), emitting leaves.
    pub fn drop_node(&self, node: &str) {
        if node == self.node {
            return;
        }
        let gone = self.entries.write().remove(node).unwrap_or_default();
        for ((_, pattern), c) in &gone {
            self.notify("leave", pattern, c);
        }
    }

    /// Distinct clients present, on every node.
    pub fn client_count(&self) -> usize {
        let entries = self.entries.read();
        let mut ids: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for node in entries.values() {
            ids.extend(node.keys().map(|(id, _)| &**id));
        }
        ids.len()
    }

    /// Nodes that have entries here.
    pub fn nodes(&self) -> Vec<String> {
        self.entries.read().keys().cloned().collect()
    }

    /// Every client subscribed to a pattern matching `topic`, once each,
    /// sorted by client id.
    pub fn list(&self, topic: &Topic) -> Vec<ClientInfo> {
        let entries = self.entries.read();
        let mut seen: HashMap<&str, &ClientInfo> = HashMap::new();
        for node in entries.values() {
            for ((client_id, pattern), c) in node {
                if seen.contains_key(&**client_id) {
                    continue;
                }
                if **pattern == *topic.as_str()
                    || Pattern::parse(pattern).is_ok_and(|p| p.matches(topic))
                {
                    seen.insert(client_id, c);
                }
            }
        }
        let mut out: Vec<ClientInfo> = seen.into_values().cloned().collect();
        out.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        out
    }

    /// How many clients [`Presence::list`] would list for `topic`, and how
    /// many distinct `sub`s they have (clients without one not counted),
    /// without building the list.
    pub fn count(&self, topic: &Topic) -> (usize, usize) {
        let entries = self.entries.read();
        let mut clients: std::collections::HashSet<&str> = std::collections::HashSet::new();
        let mut subs: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for node in entries.values() {
            for ((client_id, pattern), c) in node {
                if clients.contains(&**client_id) {
                    continue;
                }
                if **pattern == *topic.as_str()
                    || Pattern::parse(pattern).is_ok_and(|p| p.matches(topic))
                {
                    clients.insert(client_id);
                    subs.extend(c.sub.as_deref());
                }
            }
        }
        (clients.len(), subs.len())
    }

    /// Sends join/leave events on `pattern` to `feed` until
    /// [`Presence::unlisten`] with the returned id.
    pub fn listen(&self, pattern: Pattern, feed: Arc<PresenceFeed>) -> u64 {
        let id = self.next_listener.fetch_add(1, Ordering::Relaxed);
        self.listeners.write().insert(id, (pattern, feed));
        id
    }

    /// Stops a listener.
    pub fn unlisten(&self, id: u64) {
        self.listeners.write().remove(&id);
    }

    fn notify(&self, kind: &'static str, subject: &str, client: &ClientInfo) {
        let listeners = self.listeners.read();
        if listeners.is_empty() {
            return;
        }
        let concrete = Topic::parse(subject).ok();
        let mut event: Option<PresenceFrame> = None;
        for (pattern, feed) in listeners.values() {
            let hit = pattern.as_str() == subject
                || concrete.as_ref().is_some_and(|t| pattern.matches(t));
            if hit {
                let event = event
                    .get_or_insert_with(|| PresenceFrame {
                        kind,
                        json: encode_event(kind, subject, client).into(),
                    })
                    .clone();
                feed.push(event);
            }
        }
    }
}

/// `{"type":"join","topic":..,"client":{..}}`.
fn encode_event(kind: &str, topic: &str, client: &ClientInfo) -> String {
    #[derive(Serialize)]
    struct Event<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        topic: &'a str,
        client: &'a ClientInfo,
    }
    serde_json::to_string(&Event {
        kind,
        topic,
        client,
    })
    .expect("presence events serialize")
}

#[cfg(test)]
mod tests;
