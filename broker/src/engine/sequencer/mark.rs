//! The mark (`always` durability): each committed batch's topic heads are
//! written to the acknowledged-heads journal before the batch goes on to be
//! dispatched and acknowledged, by the fan-out thread itself.
//!
//! ```text
//! writer: append → sync (sled) ──▶ fan-out: journal pwrite → dispatch, acks
//! ```
//!
//! The mark is written only after sled's sync of that batch returned, so
//! the journal never claims a message sled had not written; and a batch is
//! acknowledged only after its mark is written, so every ack is covered.
//! Every batch waiting when the thread wakes shares one journal write, and
//! writing on the fan-out thread costs no extra thread hop on the way to
//! the acks. How the mark then reaches the device: `log::acked::journal`.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicBool, Ordering},
};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::Committed;
use crate::{engine::PublishError, hub::Topic, log::acked::AckedHeads};

/// Waits for the next committed batch and takes every other one already
/// queued (they share one journal write); `false` once the writer is gone.
pub(super) fn take(
    batches: &mut mpsc::UnboundedReceiver<Committed>,
    waiting: &mut Vec<Committed>,
) -> bool {
    let Some(first) = batches.blocking_recv() else {
        return false;
    };
    waiting.push(first);
    while let Ok(more) = batches.try_recv() {
        waiting.push(more);
    }
    true
}

/// Records the heads `batches` reached, durably. If that fails the node
/// stops taking writes and the batches' publishers are told (the batches
/// are on disk all the same, and still go on to be completed).
pub(super) fn record(journal: &Mutex<AckedHeads>, batches: &mut [Committed], healthy: &AtomicBool) {
    let mut heads: HashMap<Topic, u64> = HashMap::new();
    for batch in batches.iter() {
        for m in &batch.messages {
            let head = heads.entry(m.topic.clone()).or_default();
            *head = (*head).max(m.seq);
        }
    }
    if heads.is_empty() {
        return;
    }
    let delta: Vec<(Topic, u64)> = heads.into_iter().collect();
    if let Err(e) = journal.lock().record(&delta) {
        tracing::error!(error = %e, "cannot record acknowledged heads; refusing further writes");
        healthy.store(false, Ordering::Release);
        let error = PublishError::Unavailable(format!(
            "storage failure: cannot record the acknowledged heads: {e}"
        ));
        for batch in batches.iter_mut() {
            batch.fail_publishers(&error);
        }
    }
}
