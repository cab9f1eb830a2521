//! The key layout of the sled tree (see [`super::sled_log`] for the table):
//! one prefix byte per kind, then the topic, so a topic's keys of one kind
//! form one contiguous range.

use super::LogError;
use herald_core::Topic;

/// `m` topic `\0`: the start of a topic's message keys.
pub(super) fn message_prefix(topic: &Topic) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.as_str().len() + 10);
    k.push(b'm');
    k.extend_from_slice(topic.as_str().as_bytes());
    k.push(0);
    k
}

/// The first key past every `m` key of `topic` (topic names never hold
/// bytes below `\x02`, so `m` topic `\x01` sorts before the next topic's).
pub(super) fn message_prefix_end(topic: &Topic) -> Vec<u8> {
    let mut end = message_prefix(topic);
    *end.last_mut().expect("prefix is not empty") = 1;
    end
}

/// `m` topic `\0` seq (u64 BE).
pub(super) fn message_key(topic: &Topic, seq: u64) -> Vec<u8> {
    let mut k = message_prefix(topic);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `h` topic.
pub(super) fn head_key(topic: &Topic) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.as_str().len() + 1);
    k.push(b'h');
    k.extend_from_slice(topic.as_str().as_bytes());
    k
}

/// `d` topic `\0` from (u64 BE): a range of seqs the operator accepted as
/// lost (`--accept-damage`); the value holds its last seq.
pub(super) fn lost_key(topic: &Topic, from: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.as_str().len() + 10);
    k.push(b'd');
    k.extend_from_slice(topic.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&from.to_be_bytes());
    k
}

/// The topic name and trailing seq of an `m` or `d` key (`kind` topic `\0`
/// seq), if it has that shape.
pub(super) fn split_seq_key(key: &[u8]) -> Option<(&[u8], u64)> {
    let n = key
        .len()
        .checked_sub(8)
        .filter(|&n| n >= 2 && key[n - 1] == 0)?;
    let seq = u64::from_be_bytes(key[n..].try_into().ok()?);
    Some((&key[1..n - 1], seq))
}

/// `i` topic `\0` idempotency key.
pub(super) fn idempotency_key(topic: &Topic, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(topic.as_str().len() + key.len() + 2);
    k.push(b'i');
    k.extend_from_slice(topic.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The big-endian u64 at `at` in a stored value.
pub(super) fn u64_at(bytes: &[u8], at: usize) -> Result<u64, LogError> {
    bytes
        .get(at..at + 8)
        .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| LogError::Corrupt(format!("value of {} bytes is too short", bytes.len())))
}

/// The seq at the end of a message key.
pub(super) fn seq_of_key(key: &[u8]) -> Result<u64, LogError> {
    if key.len() < 8 {
        return Err(LogError::Corrupt("message key too short".into()));
    }
    u64_at(key, key.len() - 8)
}
