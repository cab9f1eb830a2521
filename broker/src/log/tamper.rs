//! Deliberate damage for drills and tests: records changed through sled
//! itself and bytes flipped in a run file, as a fault between writes would
//! leave them, so that what the start-up check and the readers do about it
//! can be shown. Nothing in the broker calls these. They write through
//! their own [`RunFiles`], so a log open beside them does not learn of the
//! garbage they leave: it is collected after its next open.

use std::{ops::RangeInclusive, path::Path};

use super::{
    compact::put_body,
    keys::{message_key, message_prefix_end, seq_of_key},
    record,
    run::{encode_run, RunMessage},
    runs::{RunFiles, RunRef},
    LogError,
};
use herald_core::Topic;

fn topic(name: &str) -> Result<Topic, LogError> {
    Topic::parse(name).map_err(|e| LogError::Corrupt(e.to_string()))
}

fn io(e: impl std::fmt::Display) -> LogError {
    LogError::Storage(e.to_string())
}

/// The ref stored under `key` and the run's body.
fn load(runs: &RunFiles, key: &[u8], value: &[u8]) -> Result<(RunRef, Vec<u8>), LogError> {
    let body = record::open(key, value).map_err(|e| LogError::Corrupt(e.to_string()))?;
    let r = RunRef::decode(body).ok_or_else(|| LogError::Corrupt("not a run ref".into()))?;
    let body = runs
        .get(key, &r)
        .map_err(|e| LogError::Corrupt(e.to_string()))?;
    Ok((r, body))
}

/// Removes the messages `seqs` of topic `name` from the runs of the log in
/// data dir `dir` (`tree` is its tree, [`super::format::TREE`]), leaving
/// the rest of each run stored and sealed: a hole nothing but the density
/// check can see. Returns how many messages were removed.
pub fn remove_messages(
    dir: &Path,
    tree: &sled::Tree,
    name: &str,
    seqs: RangeInclusive<u64>,
) -> Result<u64, LogError> {
    let topic = topic(name)?;
    let runs = RunFiles::open(&dir.join("runs")).map_err(io)?;
    let mut removed = 0;
    let range = message_key(&topic, *seqs.start())..message_prefix_end(&topic);
    let mut touched = Vec::new();
    for item in tree.range(range) {
        let (key, value) = item?;
        touched.push((key, value));
    }
    for (key, value) in touched {
        let (r, body) = load(&runs, &key, &value)?;
        let run = r
            .messages(seq_of_key(&key)?, &body)
            .map_err(LogError::Corrupt)?;
        if run[0].seq > *seqs.end() {
            break;
        }
        // What is kept is written back as runs of consecutive seqs.
        let kept: Vec<&RunMessage> = run.iter().filter(|m| !seqs.contains(&m.seq)).collect();
        removed += (run.len() - kept.len()) as u64;
        let mut batch = sled::Batch::default();
        batch.remove(&*key);
        for piece in kept.chunk_by(|a, b| a.seq + 1 == b.seq) {
            let last = piece.last().expect("a piece is not empty");
            let body = encode_run(piece.iter().map(|m| (m.ts, m.envelope)));
            let key = message_key(&topic, last.seq);
            put_body(&mut batch, &runs, key, &body, piece.len(), last.ts).map_err(io)?;
        }
        runs.sync().map_err(io)?;
        tree.apply_batch(batch)?;
    }
    Ok(removed)
}

/// Flips one bit of the stored body of the run holding message `seq` of
/// topic `name`, in the log in data dir `dir` (`tree` is its tree). Returns
/// whether such a run was found (a message still in the write-ahead file
/// is in none: open the log once first to have it replayed into runs).
pub fn alter_message(
    dir: &Path,
    tree: &sled::Tree,
    name: &str,
    seq: u64,
) -> Result<bool, LogError> {
    let topic = topic(name)?;
    let runs = RunFiles::open(&dir.join("runs")).map_err(io)?;
    let Some(item) = tree
        .range(message_key(&topic, seq)..message_prefix_end(&topic))
        .next()
    else {
        return Ok(false);
    };
    let (key, value) = item?;
    let (r, _) = load(&runs, &key, &value)?;
    if r.first_seq(seq_of_key(&key)?)
        .is_none_or(|first| first > seq)
    {
        return Ok(false);
    }
    runs.flip(&r).map_err(io)?;
    Ok(true)
}
