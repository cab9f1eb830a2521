//! Cluster membership from heartbeats, and topic ownership by rendezvous
//! hashing over the live members.
//!
//! A peer is live while its heartbeats arrive; after `member_timeout` of
//! silence (or a `leaving` heartbeat) it drops out of the view. Every node
//! computes a topic's owner from its own view, so views that briefly differ
//! can name different owners — claims with terms (see `owner.rs`) make that
//! safe; convergence makes it rare.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::RwLock;
use tokio::sync::watch;

use super::wire::Heartbeat;

/// The live members at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Increases whenever the member set (or a member's incarnation) changes.
    pub version: u64,
    /// Live node ids, sorted, including this node.
    pub members: Vec<String>,
    me: String,
}

impl View {
    /// The member that sequences `topic`: the highest rendezvous score.
    pub fn owner(&self, topic: &str) -> &str {
        herald_core::owner::owner(self.members.iter().map(String::as_str), topic)
            .unwrap_or(&self.me)
    }

    /// Whether this node owns `topic` in this view.
    pub fn is_mine(&self, topic: &str) -> bool {
        self.owner(topic) == self.me
    }

    /// Live members other than this node.
    pub fn peers(&self) -> impl Iterator<Item = &str> {
        self.members
            .iter()
            .map(String::as_str)
            .filter(move |m| *m != self.me)
    }

    /// Number of live peers.
    pub fn peer_count(&self) -> usize {
        self.members.len().saturating_sub(1)
    }
}

#[derive(Debug)]
struct Peer {
    incarnation: u64,
    last_seen: Instant,
    watermark: u64,
}

#[derive(Debug)]
struct Inner {
    peers: HashMap<String, Peer>,
    view: Arc<View>,
}

/// The membership table of this node.
#[derive(Debug)]
pub struct Membership {
    me: String,
    timeout: Duration,
    inner: RwLock<Inner>,
    changes: watch::Sender<Arc<View>>,
}

impl Membership {
    /// A table holding only this node.
    pub fn new(me: String, timeout: Duration) -> Self {
        let view = Arc::new(View {
            version: 1,
            members: vec![me.clone()],
            me: me.clone(),
        });
        let (changes, _) = watch::channel(view.clone());
        Membership {
            me,
            timeout,
            inner: RwLock::new(Inner {
                peers: HashMap::new(),
                view,
            }),
            changes,
        }
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.inner.read().view.clone()
    }

    /// Notifies on every view change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<View>> {
        self.changes.subscribe()
    }

    /// Records a heartbeat; returns whether the view changed.
    pub fn observe(&self, hb: &Heartbeat) -> bool {
        if hb.node == self.me {
            return false;
        }
        let mut inner = self.inner.write();
        let changed = if hb.leaving {
            inner.peers.remove(&hb.node).is_some()
        } else {
            let fresh = Peer {
                incarnation: hb.incarnation,
                last_seen: Instant::now(),
                watermark: hb.watermark,
            };
            match inner.peers.insert(hb.node.clone(), fresh) {
                None => true,
                Some(old) => old.incarnation != hb.incarnation,
            }
        };
        if changed {
            self.rebuild(&mut inner);
        }
        changed
    }

    /// Drops peers silent for longer than the timeout; returns whether the
    /// view changed.
    pub fn expire(&self) -> bool {
        let mut inner = self.inner.write();
        let before = inner.peers.len();
        let timeout = self.timeout;
        inner.peers.retain(|_, p| p.last_seen.elapsed() < timeout);
        let changed = inner.peers.len() != before;
        if changed {
            self.rebuild(&mut inner);
        }
        changed
    }

    /// Forgets every peer (this node lost NATS and cannot know who is live).
    pub fn clear(&self) {
        let mut inner = self.inner.write();
        if !inner.peers.is_empty() {
            inner.peers.clear();
            self.rebuild(&mut inner);
        }
    }

    /// The lowest watermark among live peers (see `Hub::set_remote_floor`).
    pub fn remote_floor(&self) -> Option<u64> {
        self.inner.read().peers.values().map(|p| p.watermark).min()
    }

    fn rebuild(&self, inner: &mut Inner) {
        let mut members: Vec<String> = inner.peers.keys().cloned().collect();
        members.push(self.me.clone());
        members.sort();
        let view = Arc::new(View {
            version: inner.view.version + 1,
            members,
            me: self.me.clone(),
        });
        tracing::info!(members = ?view.members, version = view.version, "cluster view changed");
        inner.view = view.clone();
        self.changes.send_replace(view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(node: &str, incarnation: u64) -> Heartbeat {
        Heartbeat {
            node: node.into(),
            incarnation,
            watermark: 10,
            leaving: false,
        }
    }

    #[test]
    fn views_follow_heartbeats() {
        let m = Membership::new("b".into(), Duration::from_millis(50));
        assert!(m.observe(&hb("a", 1)));
        assert!(!m.observe(&hb("a", 1)));
        assert!(m.observe(&hb("a", 2)), "a restart changes the view");
        assert_eq!(m.view().members, vec!["a", "b"]);
        std::thread::sleep(Duration::from_millis(60));
        assert!(m.expire());
        assert_eq!(m.view().members, vec!["b"]);
        m.observe(&hb("c", 1));
        assert!(m.observe(&Heartbeat {
            leaving: true,
            ..hb("c", 1)
        }));
        assert_eq!(m.view().peer_count(), 0);
    }

    #[test]
    fn every_node_agrees_on_owners_and_load_spreads() {
        let view = |me: &str| View {
            version: 1,
            members: vec!["n1".into(), "n2".into(), "n3".into()],
            me: me.into(),
        };
        let mut counts = HashMap::new();
        for i in 0..3000 {
            let topic = format!("t.{i}");
            let owner = view("n1").owner(&topic).to_string();
            assert_eq!(view("n2").owner(&topic), owner);
            *counts.entry(owner).or_insert(0) += 1;
        }
        for n in ["n1", "n2", "n3"] {
            assert!((800..1200).contains(&counts[n]), "{counts:?}");
        }
        // Removing a member only moves that member's topics.
        let two = View {
            version: 2,
            members: vec!["n1".into(), "n2".into()],
            me: "n1".into(),
        };
        for i in 0..300 {
            let topic = format!("t.{i}");
            let before = view("n1").owner(&topic).to_string();
            if before != "n3" {
                assert_eq!(two.owner(&topic), before);
            }
        }
    }
}
