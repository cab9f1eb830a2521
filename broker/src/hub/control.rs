//! Orders from the admin API to this node's clients: disconnect a client,
//! or end one of its subscriptions.
//!
//! Every WebSocket connection, SSE stream and long-poll session registers
//! in the node's [`Registry`] for its lifetime, under its client id and its
//! credentials' `sub`, with a [`Controlled`] handle. An [`Order`] names its
//! targets by client id or by `sub`; [`Registry::apply`] finds them and hands
//! each the order. The registry knows only this node's clients: in a
//! cluster the engine broadcasts every order, and each node applies it to
//! its own registry.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use super::topic::Pattern;

/// How long [`Registry::apply`] waits for connections to confirm an
/// unsubscribe. A connection stuck writing to a client that does not read
/// confirms later (or never); it is then not counted.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(2);

/// Whom an order is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One client (a WebSocket connection, SSE stream or long-poll session).
    Client(String),
    /// Every client whose credentials carry this `sub`.
    Sub(String),
}

/// What an administrator asks of clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    /// End the clients: they must not reconnect blindly.
    Disconnect {
        /// Whom.
        target: Target,
    },
    /// End the clients' subscription to exactly `pattern`.
    Unsubscribe {
        /// Whom.
        target: Target,
        /// The pattern as the clients subscribed it.
        pattern: Pattern,
    },
}

impl Order {
    /// Whom the order is for.
    pub fn target(&self) -> &Target {
        match self {
            Order::Disconnect { target } | Order::Unsubscribe { target, .. } => target,
        }
    }
}

/// How a registered client carries out orders.
pub trait Controlled: Send + Sync {
    /// Ends the client; `false` when it was already ending.
    fn disconnect(&self) -> bool;

    /// Ends the client's subscription to `pattern`; the answer says whether
    /// it had that subscription (a dropped sender counts as "no").
    fn unsubscribe(&self, pattern: &Pattern) -> oneshot::Receiver<bool>;
}

/// An unsubscribe order waiting for its connection.
pub struct Unsubscribe {
    /// The pattern to drop.
    pub pattern: Pattern,
    reply: Option<oneshot::Sender<bool>>,
}

impl Unsubscribe {
    /// Tells the registry whether the connection had the subscription.
    pub fn answer(self, held: bool) {
        if let Some(reply) = self.reply {
            let _ = reply.send(held);
        }
    }
}

/// The orders waiting for one client, taken by the task that serves it.
#[derive(Default)]
pub struct Inbox {
    kicked: AtomicBool,
    unsubscribes: Mutex<Vec<Unsubscribe>>,
    notify: Notify,
}

impl Inbox {
    /// Whether the client was told to disconnect.
    pub fn kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// Marks the client disconnected; `false` when it already was.
    pub fn kick(&self) -> bool {
        let first = !self.kicked.swap(true, Ordering::AcqRel);
        self.notify.notify_one();
        first
    }

    /// Queues `pattern` for the client to drop; `reply` learns whether it
    /// had it.
    pub fn push_unsubscribe(&self, pattern: Pattern, reply: Option<oneshot::Sender<bool>>) {
        self.unsubscribes
            .lock()
            .push(Unsubscribe { pattern, reply });
        self.notify.notify_one();
    }

    /// Takes the waiting unsubscribe orders.
    pub fn take_unsubscribes(&self) -> Vec<Unsubscribe> {
        std::mem::take(&mut *self.unsubscribes.lock())
    }

    /// Resolves when an order arrives (at once if one arrived since the
    /// last wait: `notify_one` keeps a permit).
    pub fn changed(self: &Arc<Self>) -> impl Future<Output = ()> + 'static {
        let inbox = self.clone();
        async move { inbox.notify.notified().await }
    }

    /// [`Inbox::changed`] borrowing the inbox (no reference count touched:
    /// a connection's task waits on it at every step).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// A connection's inbox is carried out by the connection's own task.
impl Controlled for Inbox {
    fn disconnect(&self) -> bool {
        self.kick()
    }

    fn unsubscribe(&self, pattern: &Pattern) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        self.push_unsubscribe(pattern.clone(), Some(tx));
        rx
    }
}

struct Entry {
    client_id: Arc<str>,
    sub: Option<Arc<str>>,
    handle: Arc<dyn Controlled>,
}

/// This node's clients, by registration.
#[derive(Default)]
pub struct Registry {
    entries: RwLock<HashMap<u64, Entry>>,
    next: AtomicU64,
}

/// A client's place in the registry; dropping it leaves.
pub struct Registration {
    registry: Arc<Registry>,
    key: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.entries.write().remove(&self.key);
    }
}

impl Registry {
    /// Registers a client until the returned registration is dropped
    /// (`client_id` is shared with the client's presence, not copied).
    pub fn register(
        self: &Arc<Self>,
        client_id: Arc<str>,
        sub: Option<&str>,
        handle: Arc<dyn Controlled>,
    ) -> Registration {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.entries.write().insert(
            key,
            Entry {
                client_id,
                sub: sub.map(Into::into),
                handle,
            },
        );
        Registration {
            registry: self.clone(),
            key,
        }
    }

    /// Registered clients.
    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    /// Whether no client is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Carries out `order` on this node's clients; returns how many it
    /// ended (disconnect) or how many had the subscription and dropped it
    /// within [`CONFIRM_WAIT`] (unsubscribe).
    pub async fn apply(&self, order: &Order) -> usize {
        // Handles are called outside the lock: a long-poll session that
        // ends drops its own registration.
        let handles: Vec<Arc<dyn Controlled>> = {
            let entries = self.entries.read();
            let target = order.target();
            entries
                .values()
                .filter(|e| match target {
                    Target::Client(id) => *e.client_id == **id,
                    Target::Sub(sub) => e.sub.as_deref() == Some(sub.as_str()),
                })
                .map(|e| e.handle.clone())
                .collect()
        };
        match order {
            Order::Disconnect { .. } => handles.iter().filter(|h| h.disconnect()).count(),
            Order::Unsubscribe { pattern, .. } => {
                let answers = handles.iter().map(|h| h.unsubscribe(pattern));
                let answers = futures_util::future::join_all(
                    answers.map(|rx| async move { tokio::time::timeout(CONFIRM_WAIT, rx).await }),
                );
                answers
                    .await
                    .into_iter()
                    .filter(|a| matches!(a, Ok(Ok(true))))
                    .count()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[tokio::test]
    async fn orders_reach_their_targets_only() {
        let registry = Arc::new(Registry::default());
        let a = Arc::new(Inbox::default());
        let b = Arc::new(Inbox::default());
        let c = Arc::new(Inbox::default());
        let _ra = registry.register("n-a".into(), Some("alice"), a.clone());
        let _rb = registry.register("n-b".into(), Some("alice"), b.clone());
        let rc = registry.register("n-c".into(), None, c.clone());
        let kick = |t: Target| Order::Disconnect { target: t };
        assert_eq!(registry.apply(&kick(Target::Client("n-a".into()))).await, 1);
        assert!(a.kicked() && !b.kicked() && !c.kicked());
        // a is already ending: only b is counted.
        assert_eq!(
            registry.apply(&kick(Target::Sub("alice".into()))).await,
            2 - 1
        );
        assert!(b.kicked() && !c.kicked());
        assert_eq!(registry.apply(&kick(Target::Sub("bob".into()))).await, 0);
        drop(rc);
        assert_eq!(registry.apply(&kick(Target::Client("n-c".into()))).await, 0);
        assert_eq!(registry.len(), 2);
    }

    #[tokio::test]
    async fn unsubscribes_count_what_the_connections_confirm() {
        let registry = Arc::new(Registry::default());
        let inbox = Arc::new(Inbox::default());
        let _r = registry.register("n-a".into(), None, inbox.clone());
        let order = Order::Unsubscribe {
            target: Target::Client("n-a".into()),
            pattern: pattern("chat.*"),
        };
        let served = inbox.clone();
        let connection = tokio::spawn(async move {
            served.changed().await;
            let orders = served.take_unsubscribes();
            assert_eq!(orders.len(), 1);
            for o in orders {
                let held = o.pattern == pattern("chat.*");
                o.answer(held);
            }
        });
        assert_eq!(registry.apply(&order).await, 1);
        connection.await.unwrap();
        // Nobody answers: not counted, after the wait.
        assert_eq!(registry.apply(&order).await, 0);
        assert_eq!(inbox.take_unsubscribes().len(), 1);
    }
}
