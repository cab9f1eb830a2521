//! The sled writes of a compaction: run bodies to the run files, their
//! refs and the idempotency records in sled batches of whole topics.

use super::super::{
    keys::{idempotency_key, message_key},
    record,
    run::{encode_run, RUN_BYTES},
    runs::RunFiles,
    sled_maint::idempotency_body,
    tail::Staged,
};

/// Topics per sled batch of a compaction. A batch holds one epoch of
/// sled's memory reclamation open while it runs, and every key it writes
/// copies a leaf: small batches let the copies go as it proceeds.
const TOPICS_PER_BATCH: usize = 8;

/// The sled writes that turn `staged` into runs and idempotency records,
/// in batches each holding whole topics (a crash between two leaves each
/// topic entirely in runs or entirely in the write-ahead file); the keys
/// were noted in the key filter when they were appended (or replayed).
/// The bodies go to `runs`, durable at its next sync, which must come
/// before the batches are applied.
pub(in crate::log) fn runs_batches(
    staged: &Staged,
    runs: &RunFiles,
) -> std::io::Result<Vec<sled::Batch>> {
    let mut batches = Vec::with_capacity(staged.topics.len() / TOPICS_PER_BATCH + 1);
    for (i, (topic, t)) in staged.topics.iter().enumerate() {
        if i % TOPICS_PER_BATCH == 0 {
            batches.push(sled::Batch::default());
        }
        let batch = batches.last_mut().expect("pushed above");
        let mut run: Vec<&herald_core::Message> = Vec::new();
        let mut bytes = 0;
        for m in &t.messages {
            let breaks = run.last().is_some_and(|l| l.seq + 1 != m.seq) || bytes >= RUN_BYTES;
            if breaks {
                put_run(batch, runs, topic, &run)?;
                run.clear();
                bytes = 0;
            }
            bytes += m.envelope().len() + 12;
            run.push(m);
        }
        put_run(batch, runs, topic, &run)?;
        for (name, r) in &t.keys {
            let key = idempotency_key(topic, name);
            let value = record::seal(&key, &idempotency_body(r.seq, r.ts, r.expires_at));
            batch.insert(key, value);
        }
    }
    Ok(batches)
}

/// Writes the body of `run` (consecutive messages) to `runs` and adds its
/// ref to `batch`.
pub(in crate::log) fn put_run(
    batch: &mut sled::Batch,
    runs: &RunFiles,
    topic: &herald_core::Topic,
    run: &[&herald_core::Message],
) -> std::io::Result<()> {
    let Some(last) = run.last() else {
        return Ok(());
    };
    let key = message_key(topic, last.seq);
    let body = encode_run(run.iter().map(|m| (m.ts, &m.envelope()[..])));
    put_body(batch, runs, key, &body, run.len(), last.ts)
}

/// Writes a run body to `runs` and adds its ref, under `key`, to `batch`.
pub(in crate::log) fn put_body(
    batch: &mut sled::Batch,
    runs: &RunFiles,
    key: Vec<u8>,
    body: &[u8],
    count: usize,
    last_ts: u64,
) -> std::io::Result<()> {
    let count = u32::try_from(count).map_err(std::io::Error::other)?;
    let r = runs.put(&key, body, count, last_ts)?;
    let value = record::seal(&key, &r.encode());
    batch.insert(key, value);
    Ok(())
}
