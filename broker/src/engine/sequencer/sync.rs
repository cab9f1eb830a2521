//! The sync stage (`always` durability): one `fdatasync` makes durable
//! every batch the writer appended since the last one, while the writer
//! already sequences and appends the next.
//!
//! ```text
//! writer: assign → append ──▶ sync: log.sync ──▶ fan-out: mark → dispatch, acks
//! ```
//!
//! With the sync on the writer's own thread a pass cost its CPU *plus* the
//! device's flush, and nothing was sequenced during the flush. Here the two
//! overlap: a pass costs the longer of them. A sync makes durable every
//! append that returned before it started (the write-ahead file syncs a
//! segment when it closes it), so the batches waiting when the stage wakes
//! share one. Batches leave in the order they came, so acks and deliveries
//! keep the writer's order.
//!
//! When a sync fails, none of the batches it was to cover is known to be on
//! disk: their publishers get an error, their messages are never dispatched,
//! and every later batch fails the same way (a later sync that succeeded
//! would otherwise acknowledge seqs after a hole; a skip's heads still move,
//! as the writer's own failures leave them). The writer refuses new
//! passes from then on; the node must be restarted.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use tokio::sync::mpsc;

use super::{mark, Committed};
use crate::{hub::Hub, log::MessageLog};

/// The sync stage's loop: runs until the writer is gone, then hands the
/// last batches on.
pub(super) fn run(
    log: Arc<dyn MessageLog>,
    hub: Arc<Hub>,
    healthy: Arc<AtomicBool>,
    mut batches: mpsc::UnboundedReceiver<Committed>,
    sink: mpsc::UnboundedSender<Committed>,
) {
    let mut waiting = Vec::new();
    let mut failed: Option<String> = None;
    while mark::take(&mut batches, &mut waiting) {
        let oldest = waiting.iter().filter_map(|b| b.appended).min();
        if let (Some(oldest), None) = (oldest, &failed) {
            match log.sync() {
                Ok(()) => {
                    let synced = Instant::now();
                    let metric = &hub.metrics().commit_seconds;
                    for appended in waiting.iter().filter_map(|b| b.appended) {
                        metric.observe(synced.duration_since(appended).as_secs_f64());
                    }
                    tracing::trace!(
                        batches = waiting.len(),
                        waited_us = synced.duration_since(oldest).as_micros() as u64,
                        "synced"
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "storage failure; refusing further writes");
                    healthy.store(false, Ordering::Release);
                    failed = Some(format!("storage failure: {e}"));
                }
            }
        }
        for mut batch in waiting.drain(..) {
            if let Some(reason) = &failed {
                batch.abandon(reason);
            }
            batch.appended = None;
            batch.spans.clear();
            if sink.send(batch).is_err() {
                return;
            }
        }
    }
}
