//! The mark thread (`always` durability): records each committed batch's
//! topic heads in the acknowledged-heads journal before the batch goes on
//! to be acknowledged.
//!
//! ```text
//! writer: append → sync (sled) ──▶ mark: journal pwrite + fdatasync ──▶ output (acks)
//! ```
//!
//! The mark for a batch is written only after sled's sync of that batch
//! returned, so the journal never claims a message that is not on disk;
//! and a batch is acknowledged only after its mark is on disk, so every
//! ack is covered. The journal's fdatasync overlaps the writer's sled sync
//! of the next batch, and every batch waiting when the thread wakes shares
//! one journal write, so the extra sync costs latency, not throughput.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::Committed;
use crate::{engine::PublishError, hub::Topic, log::acked::AckedHeads};

/// Starts the mark thread between `batches` (from the writer) and `sink`.
pub(super) fn spawn(
    journal: Arc<Mutex<AckedHeads>>,
    mut batches: mpsc::UnboundedReceiver<Committed>,
    sink: mpsc::UnboundedSender<Committed>,
    healthy: Arc<AtomicBool>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("herald-mark".into())
        .spawn(move || {
            let mut waiting = Vec::new();
            let mut heads: HashMap<Topic, u64> = HashMap::new();
            while let Some(first) = batches.blocking_recv() {
                waiting.push(first);
                while let Ok(more) = batches.try_recv() {
                    waiting.push(more);
                }
                for batch in &waiting {
                    for m in &batch.messages {
                        let head = heads.entry(m.topic.clone()).or_default();
                        *head = (*head).max(m.seq);
                    }
                }
                if !heads.is_empty() {
                    let delta: Vec<(Topic, u64)> = heads.drain().collect();
                    if let Err(e) = journal.lock().record(&delta) {
                        tracing::error!(error = %e, "cannot record acknowledged heads; refusing further writes");
                        healthy.store(false, Ordering::Release);
                        let error = PublishError::Unavailable(format!(
                            "storage failure: cannot record the acknowledged heads: {e}"
                        ));
                        for batch in &mut waiting {
                            batch.fail_publishers(&error);
                        }
                    }
                }
                for batch in waiting.drain(..) {
                    if sink.send(batch).is_err() {
                        return;
                    }
                }
            }
        })
}
