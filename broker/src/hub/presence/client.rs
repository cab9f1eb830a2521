//! One client's presence on every transport: its entries in the presence
//! table (joined on subscribe, left on unsubscribe or disconnect) and,
//! when asked for, its feed of join/leave events.
//!
//! WebSocket and SSE clients are present while connected; long-poll
//! clients through their session (`sessions.rs`).

use std::sync::Arc;

use super::{ClientInfo, Presence, PresenceFeed};
use crate::{auth::Identity, hub::Pattern, metrics::Transport};

/// A client's entries and listeners; dropping it leaves everything.
pub struct ClientPresence {
    presence: Arc<Presence>,
    info: Arc<ClientInfo>,
    joined: Vec<Pattern>,
    listening: Vec<(Pattern, u64)>,
    feed: Arc<PresenceFeed>,
}

impl ClientPresence {
    /// A client of `transport` with no entries yet.
    pub fn new(presence: Arc<Presence>, transport: Transport, sub: Option<String>) -> Self {
        Self::with_id(presence.new_client_id(), presence, transport, sub)
    }

    fn with_id(
        client_id: String,
        presence: Arc<Presence>,
        transport: Transport,
        sub: Option<String>,
    ) -> Self {
        let info = Arc::new(ClientInfo {
            client_id: client_id.into(),
            sub,
            transport: transport.as_str().to_string(),
            node: presence.node().to_string(),
        });
        ClientPresence {
            presence,
            info,
            joined: Vec::new(),
            listening: Vec::new(),
            feed: Arc::new(PresenceFeed::default()),
        }
    }

    /// The client's id.
    pub fn client_id(&self) -> &str {
        &self.info.client_id
    }

    /// The client's id, shared.
    pub fn shared_client_id(&self) -> Arc<str> {
        self.info.client_id.clone()
    }

    /// The client subscribed to `pattern`; with `events`, it also wants the
    /// pattern's join/leave events.
    pub fn join(&mut self, pattern: &Pattern, events: bool) {
        if !self.presence.enabled_for(pattern) {
            return;
        }
        if !self.joined.contains(pattern) {
            self.joined.push(pattern.clone());
            self.presence.join(pattern, &self.info);
        }
        if events && !self.listening.iter().any(|(p, _)| p == pattern) {
            let id = self.presence.listen(pattern.clone(), self.feed.clone());
            self.listening.push((pattern.clone(), id));
        }
    }

    /// The client unsubscribed from `pattern`. Its listener goes first, so
    /// the client is not told of its own leave.
    pub fn leave(&mut self, pattern: &Pattern) {
        if let Some(i) = self.listening.iter().position(|(p, _)| p == pattern) {
            let (_, id) = self.listening.remove(i);
            self.presence.unlisten(id);
        }
        if let Some(i) = self.joined.iter().position(|p| p == pattern) {
            self.joined.remove(i);
            self.presence.leave(pattern, &self.info);
        }
    }

    /// Makes the entries exactly `patterns` (a long-poll request may name
    /// other topics than the previous one).
    pub fn sync(&mut self, patterns: &[Pattern], events: bool) {
        let stale: Vec<Pattern> = self
            .joined
            .iter()
            .chain(self.listening.iter().map(|(p, _)| p))
            .filter(|p| !patterns.contains(p))
            .cloned()
            .collect();
        for p in stale {
            self.leave(&p);
        }
        if !events {
            for (_, id) in self.listening.drain(..) {
                self.presence.unlisten(id);
            }
        }
        for p in patterns {
            self.join(p, events);
        }
    }

    /// Join/leave events for this client (JSON objects).
    pub fn feed(&self) -> &Arc<PresenceFeed> {
        &self.feed
    }

    /// Whether the client asked for any events.
    pub fn listening(&self) -> bool {
        !self.listening.is_empty()
    }

    /// Whether `identity` may take over this client: the same subject (or
    /// both anonymous) whose subscribe grants cover every pattern the client
    /// holds, so its queued join/leave events reveal nothing new.
    pub(super) fn may_continue(&self, identity: &Identity) -> bool {
        self.info.sub == identity.sub
            && self
                .joined
                .iter()
                .chain(self.listening.iter().map(|(p, _)| p))
                .all(|p| identity.check_subscribe(p).is_ok())
    }
}

impl Drop for ClientPresence {
    fn drop(&mut self) {
        for (_, id) in self.listening.drain(..) {
            self.presence.unlisten(id);
        }
        for pattern in self.joined.drain(..) {
            self.presence.leave(&pattern, &self.info);
        }
    }
}
