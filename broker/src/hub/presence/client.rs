//! One client's presence on every transport: its entries in the presence
//! table (joined on subscribe, left on unsubscribe or disconnect) and,
//! when asked for, its feed of join/leave events.
//!
//! WebSocket and SSE clients are present while connected. Long-poll
//! clients are connected only during a request, so their presence lives in
//! a [`PollSessions`] entry that outlasts each request by
//! [`POLL_SESSION_GRACE`]: a client polling in a loop stays present (and
//! keeps its queued events) between requests, and one that stops polling
//! leaves shortly after.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::Mutex;

use super::{ClientInfo, Presence, PresenceFeed};
use crate::{auth::Identity, hub::Pattern, metrics::Transport};

/// How long a long-poll client stays present after its last request ended.
pub const POLL_SESSION_GRACE: Duration = Duration::from_secs(5);

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
    fn may_continue(&self, identity: &Identity) -> bool {
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

struct PollSession {
    client: Arc<Mutex<ClientPresence>>,
    /// Bumped by every request; an expiry timer only ends the session if
    /// no request came since it was armed.
    generation: u64,
    active: usize,
}

/// Long-poll clients' presence between requests, by client id.
#[derive(Default)]
pub struct PollSessions {
    sessions: Mutex<HashMap<String, PollSession>>,
    next_generation: AtomicU64,
}

/// A long-poll request's hold on its session; arms the expiry when dropped.
pub struct PollLease {
    sessions: Arc<PollSessions>,
    client_id: String,
    /// The session's presence (shared with later requests).
    pub client: Arc<Mutex<ClientPresence>>,
}

impl PollSessions {
    /// The session `client_id` names if this node still has it and it is
    /// `identity`'s to continue (see `ClientPresence::may_continue`), else
    /// a new one with a fresh id; the named session is then left alone.
    pub fn begin(
        self: &Arc<Self>,
        client_id: Option<&str>,
        presence: &Arc<Presence>,
        identity: &Identity,
    ) -> PollLease {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut sessions = self.sessions.lock();
        let existing = client_id.and_then(|id| sessions.get_mut(id));
        let (id, client) = match existing {
            Some(s) if s.client.lock().may_continue(identity) => {
                s.generation = generation;
                s.active += 1;
                (s.client.lock().info.client_id.to_string(), s.client.clone())
            }
            _ => {
                let client = Arc::new(Mutex::new(ClientPresence::new(
                    presence.clone(),
                    Transport::Poll,
                    identity.sub.clone(),
                )));
                let id = client.lock().client_id().to_string();
                sessions.insert(
                    id.clone(),
                    PollSession {
                        client: client.clone(),
                        generation,
                        active: 1,
                    },
                );
                (id, client)
            }
        };
        PollLease {
            sessions: self.clone(),
            client_id: id,
            client,
        }
    }

    /// Sessions alive now.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether no session is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn end_request(self: &Arc<Self>, client_id: &str) {
        let mut sessions = self.sessions.lock();
        let Some(session) = sessions.get_mut(client_id) else {
            return;
        };
        session.active -= 1;
        if session.active > 0 {
            return;
        }
        let armed = session.generation;
        drop(sessions);
        let this = self.clone();
        let id = client_id.to_string();
        let expire = async move {
            tokio::time::sleep(POLL_SESSION_GRACE).await;
            let mut sessions = this.sessions.lock();
            if sessions
                .get(&id)
                .is_some_and(|s| s.active == 0 && s.generation == armed)
            {
                // Dropping the session's presence leaves its entries.
                sessions.remove(&id);
            }
        };
        // Outside a runtime (unit tests of other parts) end at once.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(expire);
            }
            Err(_) => {
                self.sessions.lock().remove(client_id);
            }
        }
    }
}

impl PollLease {
    /// The session's client id, returned to the client to send back.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
}

impl Drop for PollLease {
    fn drop(&mut self) {
        self.sessions.end_request(&self.client_id);
    }
}
