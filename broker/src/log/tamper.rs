//! Deliberate damage for drills and tests: records changed through sled
//! itself, as a fault between writes would leave them, so that what the
//! start-up check and the readers do about it can be shown. Nothing in
//! the broker calls these.

use std::ops::RangeInclusive;

use super::{
    keys::{message_key, message_prefix_end, seq_of_key},
    record,
    run::{decode_run, encode_run},
    LogError,
};
use herald_core::Topic;

fn topic(name: &str) -> Result<Topic, LogError> {
    Topic::parse(name).map_err(|e| LogError::Corrupt(e.to_string()))
}

/// Removes the messages `seqs` of topic `name` from the runs in `tree` (the
/// log's tree, [`super::format::TREE`]), leaving the rest of each run
/// stored and sealed: a hole nothing but the density check can see.
/// Returns how many messages were removed.
pub fn remove_messages(
    tree: &sled::Tree,
    name: &str,
    seqs: RangeInclusive<u64>,
) -> Result<u64, LogError> {
    let topic = topic(name)?;
    let mut removed = 0;
    let range = message_key(&topic, *seqs.start())..message_prefix_end(&topic);
    let mut touched = Vec::new();
    for item in tree.range(range) {
        let (key, value) = item?;
        touched.push((key, value));
    }
    for (key, value) in touched {
        let last = seq_of_key(&key)?;
        let body = record::open(&key, &value).map_err(|e| LogError::Corrupt(e.to_string()))?;
        let run = decode_run(last, body)?;
        if run[0].seq > *seqs.end() {
            break;
        }
        tree.remove(&key)?;
        // What is kept is written back as runs of consecutive seqs.
        let kept: Vec<_> = run.iter().filter(|m| !seqs.contains(&m.seq)).collect();
        removed += (run.len() - kept.len()) as u64;
        for piece in kept.chunk_by(|a, b| a.seq + 1 == b.seq) {
            let last = piece.last().expect("a piece is not empty").seq;
            let key = message_key(&topic, last);
            let body = encode_run(piece.iter().map(|m| (m.ts, m.envelope)));
            tree.insert(key.as_slice(), record::seal_owned(&key, body))?;
        }
    }
    Ok(removed)
}

/// Flips one bit of the stored run holding message `seq` of topic `name`,
/// without sealing it again. Returns whether such a run was found (a
/// message still in the write-ahead file is in none: open the log once
/// first to have it replayed into runs).
pub fn alter_message(tree: &sled::Tree, name: &str, seq: u64) -> Result<bool, LogError> {
    let topic = topic(name)?;
    let mut holding = None;
    if let Some(item) = tree
        .range(message_key(&topic, seq)..message_prefix_end(&topic))
        .next()
    {
        let (key, value) = item?;
        let body = record::open(&key, &value).map_err(|e| LogError::Corrupt(e.to_string()))?;
        if decode_run(seq_of_key(&key)?, body)?[0].seq <= seq {
            holding = Some((key, value));
        }
    }
    let Some((key, value)) = holding else {
        return Ok(false);
    };
    let mut value = value.to_vec();
    let at = value.len() / 2;
    value[at] ^= 0x20;
    tree.insert(key, value)?;
    Ok(true)
}
