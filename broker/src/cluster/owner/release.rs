//! Giving topics up: when the view moves them to another node, when
//! replication stalls, and answering the publishers left waiting.

use std::sync::Arc;

use super::{fail, Owner, OwnerError, Slot};
use crate::{cluster::membership::View, hub::Topic};

impl Owner {
    /// Adopts a new membership view, giving up topics that moved away.
    pub(super) fn on_view(&mut self, view: Arc<View>) {
        self.shared.note_members(view.members.len());
        let lost: Vec<Topic> = self
            .slots
            .keys()
            .filter(|t| !view.is_mine(t.as_str()))
            .cloned()
            .collect();
        self.view = view;
        for topic in lost {
            self.drop_slot(&topic, "the topic moved to another node");
        }
    }

    /// Answers publishers whose parts waited too long (the parts stay
    /// queued: they may still complete), and gives up on topics stuck for
    /// much longer.
    pub(super) fn expire(&mut self) {
        let limit = self.shared.settings.replication_timeout;
        let mut stuck = Vec::new();
        for (topic, slot) in &mut self.slots {
            let Slot::Owned(owned) = slot else { continue };
            // A key leaves the in-flight table once its message is in the
            // local log, where the next repeat finds it; until then a repeat
            // is answered from here, never given a second seq.
            if !owned.in_flight.is_empty() {
                let stored = self.shared.hub.head(topic).last_seq;
                owned.in_flight.retain(|_, p| p.seq > stored);
            }
            for part in owned.pending.iter_mut() {
                if !part.answered && part.since.elapsed() > limit {
                    part.answered = true;
                    for (request, _, _) in part.waiters.drain(..) {
                        fail(
                            &request,
                            OwnerError::Unavailable(
                                "replicas did not confirm the message in time".into(),
                            ),
                        );
                    }
                }
                if part.since.elapsed() > limit * 10 {
                    stuck.push(topic.clone());
                    break;
                }
            }
        }
        for topic in stuck {
            self.drop_slot(&topic, "replication stalled");
        }
    }

    /// Stops owning `topic`: unapplied parts are discarded (never appended
    /// here; whatever replicas kept is recovered through the next owner).
    pub(super) fn drop_slot(&mut self, topic: &Topic, reason: &str) {
        match self.slots.remove(topic) {
            Some(Slot::Claiming { parked }) => {
                for (_, reply) in parked {
                    let _ = reply.send(Err(OwnerError::NotOwner));
                }
            }
            Some(Slot::Owned(owned)) => {
                tracing::info!(%topic, reason, pending = owned.pending.len(), "giving up ownership");
                // Peers' progress counts only while the topic is owned here.
                for progress in self.acks.values_mut() {
                    progress.remove(topic);
                }
                for part in owned.pending {
                    for (request, _, _) in part.waiters {
                        fail(
                            &request,
                            OwnerError::Unavailable(format!("publish not confirmed: {reason}")),
                        );
                    }
                }
            }
            None => {}
        }
    }
}
