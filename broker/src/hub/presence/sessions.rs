//! Long-poll sessions. Long-poll clients are connected only during a
//! request, so their presence lives in a session that outlasts each request
//! by [`POLL_SESSION_GRACE`]: a client polling in a loop stays present (and
//! keeps its queued events) between requests, and one that stops polling
//! leaves shortly after.
//!
//! A session is also what the admin API reaches (`hub::control`): it is
//! registered under its client id for its lifetime. Disconnecting it ends
//! it at once (a waiting poll answers 410 `kicked`, and so does a later
//! poll naming it, for [`KICKED_MEMORY`]); unsubscribing drops a pattern
//! from it, which the waiting poll, or else the next one, reports.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Weak,
    },
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{ClientPresence, Presence, PresenceFeed};
use crate::{
    auth::Identity,
    hub::{
        control::{Controlled, Inbox, Registration, Registry},
        Pattern,
    },
    metrics::Transport,
};

/// How long a long-poll client stays present after its last request ended.
pub const POLL_SESSION_GRACE: Duration = Duration::from_secs(5);
/// How long the id of a disconnected session is remembered, so that the
/// client's next poll learns it was disconnected instead of quietly
/// starting a new session.
pub const KICKED_MEMORY: Duration = Duration::from_secs(60);
/// Most disconnected ids remembered at once.
const KICKED_MAX: usize = 10_000;

/// What a session keeps between requests.
pub struct SessionState {
    /// The client's presence entries and queued events.
    pub presence: ClientPresence,
    /// The patterns of its latest request.
    patterns: Vec<Pattern>,
}

struct PollSession {
    state: Arc<Mutex<SessionState>>,
    inbox: Arc<Inbox>,
    /// Bumped by every request; an expiry timer only ends the session if
    /// no request came since it was armed.
    generation: u64,
    active: usize,
    _registration: Registration,
}

/// The session a poll named was disconnected by the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this long-poll session was disconnected by the server; do not poll it again")]
pub struct SessionKicked;

/// Long-poll clients' sessions, by client id.
pub struct PollSessions {
    sessions: Mutex<HashMap<String, PollSession>>,
    kicked: Mutex<HashMap<String, Instant>>,
    next_generation: AtomicU64,
    registry: Arc<Registry>,
}

/// A long-poll request's hold on its session; arms the expiry when dropped.
pub struct PollLease {
    sessions: Arc<PollSessions>,
    client_id: String,
    state: Arc<Mutex<SessionState>>,
    inbox: Arc<Inbox>,
}

/// How the admin API reaches a session.
struct SessionHandle {
    sessions: Weak<PollSessions>,
    client_id: String,
}

impl Controlled for SessionHandle {
    fn disconnect(&self) -> bool {
        self.sessions
            .upgrade()
            .is_some_and(|s| s.kick(&self.client_id))
    }

    fn unsubscribe(&self, pattern: &Pattern) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let held = self
            .sessions
            .upgrade()
            .is_some_and(|s| s.unsubscribe(&self.client_id, pattern));
        let _ = tx.send(held);
        rx
    }
}

impl PollSessions {
    /// No sessions; each one registers in `registry`.
    pub fn new(registry: Arc<Registry>) -> Self {
        PollSessions {
            sessions: Mutex::new(HashMap::new()),
            kicked: Mutex::new(HashMap::new()),
            next_generation: AtomicU64::new(0),
            registry,
        }
    }

    /// The session `client_id` names if this node still has it and it is
    /// `identity`'s to continue (see `ClientPresence::may_continue`), else
    /// a new one with a fresh id; the named session is then left alone. A
    /// session the admin API disconnected is refused.
    pub fn begin(
        self: &Arc<Self>,
        client_id: Option<&str>,
        presence: &Arc<Presence>,
        identity: &Identity,
    ) -> Result<PollLease, SessionKicked> {
        if client_id.is_some_and(|id| self.was_kicked(id)) {
            return Err(SessionKicked);
        }
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut sessions = self.sessions.lock();
        let existing = client_id.and_then(|id| sessions.get_mut(id));
        let (id, state, inbox) = match existing {
            Some(s) if s.state.lock().presence.may_continue(identity) => {
                s.generation = generation;
                s.active += 1;
                let id = s.state.lock().presence.client_id().to_string();
                (id, s.state.clone(), s.inbox.clone())
            }
            _ => {
                let presence =
                    ClientPresence::new(presence.clone(), Transport::Poll, identity.sub.clone());
                let id = presence.client_id().to_string();
                let inbox = Arc::new(Inbox::default());
                let handle = SessionHandle {
                    sessions: Arc::downgrade(self),
                    client_id: id.clone(),
                };
                let registration = self.registry.register(
                    presence.shared_client_id(),
                    identity.sub.as_deref(),
                    Arc::new(handle),
                );
                let state = Arc::new(Mutex::new(SessionState {
                    presence,
                    patterns: Vec::new(),
                }));
                sessions.insert(
                    id.clone(),
                    PollSession {
                        state: state.clone(),
                        inbox: inbox.clone(),
                        generation,
                        active: 1,
                        _registration: registration,
                    },
                );
                (id, state, inbox)
            }
        };
        Ok(PollLease {
            sessions: self.clone(),
            client_id: id,
            state,
            inbox,
        })
    }

    /// Sessions alive now.
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }

    /// Whether no session is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn was_kicked(&self, client_id: &str) -> bool {
        self.kicked
            .lock()
            .get(client_id)
            .is_some_and(|at| at.elapsed() < KICKED_MEMORY)
    }

    /// Ends a session for the admin API: it leaves presence now, its
    /// waiting poll answers `kicked`, and so does a poll naming it later.
    fn kick(&self, client_id: &str) -> bool {
        let Some(session) = self.sessions.lock().remove(client_id) else {
            return false;
        };
        {
            let mut kicked = self.kicked.lock();
            kicked.retain(|_, at| at.elapsed() < KICKED_MEMORY);
            if kicked.len() < KICKED_MAX {
                kicked.insert(client_id.to_string(), Instant::now());
            }
        }
        // A waiting poll still holds the state; its entries go now.
        session.state.lock().presence.sync(&[], false);
        session.inbox.kick();
        true
    }

    /// Drops `pattern` from a session for the admin API; `false` when the
    /// session does not have it.
    fn unsubscribe(&self, client_id: &str, pattern: &Pattern) -> bool {
        let sessions = self.sessions.lock();
        let Some(session) = sessions.get(client_id) else {
            return false;
        };
        let mut state = session.state.lock();
        if !state.patterns.contains(pattern) {
            return false;
        }
        state.patterns.retain(|p| p != pattern);
        state.presence.leave(pattern);
        session.inbox.push_unsubscribe(pattern.clone(), None);
        true
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

    /// Makes the session's patterns this request's, less those the admin
    /// API dropped since the last answer (returned, for the answer to
    /// report); presence entries follow. Returns the patterns to subscribe
    /// and, when the client asked for events, its event feed.
    pub fn sync(
        &self,
        requested: &[Pattern],
        events: bool,
    ) -> (Vec<Pattern>, Vec<Pattern>, Option<Arc<PresenceFeed>>) {
        let dropped: Vec<Pattern> = self
            .inbox
            .take_unsubscribes()
            .into_iter()
            .map(|u| u.pattern)
            .filter(|p| requested.contains(p))
            .collect();
        let kept: Vec<Pattern> = requested
            .iter()
            .filter(|p| !dropped.contains(p))
            .cloned()
            .collect();
        let mut state = self.state.lock();
        state.presence.sync(&kept, events);
        state.patterns = kept.clone();
        let feed = state
            .presence
            .listening()
            .then(|| state.presence.feed().clone());
        (kept, dropped, feed)
    }

    /// The session's orders (disconnect, unsubscribe) for the waiting poll.
    pub fn inbox(&self) -> &Arc<Inbox> {
        &self.inbox
    }
}

impl Drop for PollLease {
    fn drop(&mut self) {
        self.sessions.end_request(&self.client_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::control::{Order, Target};

    fn pattern(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[tokio::test]
    async fn the_admin_api_reaches_sessions() {
        let registry = Arc::new(Registry::default());
        let sessions = Arc::new(PollSessions::new(registry.clone()));
        let presence = Arc::new(Presence::new("n".into(), true, HashMap::new()));
        let identity = Identity::unrestricted();
        let lease = sessions.begin(None, &presence, &identity).unwrap();
        let id = lease.client_id().to_string();
        let (kept, dropped, _) = lease.sync(&[pattern("a.*"), pattern("b.x")], false);
        assert_eq!((kept.len(), dropped.len()), (2, 0));
        drop(lease);

        // Unsubscribe between polls: the next poll drops and reports it.
        let unsubscribe = |p: &str| Order::Unsubscribe {
            target: Target::Client(id.clone()),
            pattern: pattern(p),
        };
        assert_eq!(registry.apply(&unsubscribe("a.*")).await, 1);
        assert_eq!(registry.apply(&unsubscribe("c.*")).await, 0);
        assert_eq!(
            presence
                .list(&crate::hub::Topic::parse("a.q").unwrap())
                .len(),
            0
        );
        let lease = sessions.begin(Some(&id), &presence, &identity).unwrap();
        assert_eq!(lease.client_id(), id, "the same session");
        let (kept, dropped, _) = lease.sync(&[pattern("a.*"), pattern("b.x")], false);
        assert_eq!(kept, [pattern("b.x")]);
        assert_eq!(dropped, [pattern("a.*")]);

        // Disconnect while a poll waits: it learns at once, the session is
        // gone from presence and later polls naming it are refused.
        let disconnect = Order::Disconnect {
            target: Target::Client(id.clone()),
        };
        assert_eq!(registry.apply(&disconnect).await, 1);
        assert!(lease.inbox().kicked());
        assert_eq!(
            presence
                .list(&crate::hub::Topic::parse("b.x").unwrap())
                .len(),
            0
        );
        drop(lease);
        assert!(sessions.is_empty());
        assert!(registry.is_empty());
        assert_eq!(
            sessions.begin(Some(&id), &presence, &identity).err(),
            Some(SessionKicked)
        );
        assert_eq!(registry.apply(&disconnect).await, 0);
    }
}
