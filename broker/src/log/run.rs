//! The two bodies that hold messages: a *run* (consecutive messages of one
//! topic, stored in sled under the run's last seq) and a *pass* (everything
//! one append wrote, in arrival order, with the idempotency keys: a record
//! of the write-ahead file, [`super::wal`]).
//!
//! | body | layout (integers big-endian) |
//! |------|------------------------------|
//! | run  | count u32, then per message: ts u64 ‖ len u32 ‖ envelope |
//! | pass | count u32, then per entry: topic len u16 ‖ topic ‖ seq u64 ‖ ts u64 ‖ len u32 ‖ envelope ‖ key len u32 (`u32::MAX`: none) ‖ key ‖ expires_at u64 |
//!
//! A run's seqs are implicit: the key names its last, the count gives its
//! first. A run is sealed like every value in sled ([`super::record`]); a
//! pass is checked by its write-ahead record.

use std::sync::Arc;

use bytes::Bytes;

use super::{LogEntry, LogError};
use herald_core::{Message, Topic};

/// A run is closed once its body passes this many bytes. sled 0.34 splits a
/// leaf at 17 keys, whatever their size, and writes a page of more than
/// 128 KiB as a blob its cache does not account for (memory then grows
/// past any limit): values stay small enough that a full leaf stays below.
pub(super) const RUN_BYTES: usize = 4 << 10;

fn corrupt(what: &str) -> LogError {
    LogError::Corrupt(format!("{what} is malformed"))
}

/// Reads big-endian integers and slices off a body, failing on a short one.
struct Reader<'a> {
    body: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LogError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.body.len());
        let end = end.ok_or_else(|| corrupt(self.what))?;
        let out = &self.body[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, LogError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }

    fn u32(&mut self) -> Result<u32, LogError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, LogError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn done(&self) -> Result<(), LogError> {
        if self.at == self.body.len() {
            Ok(())
        } else {
            Err(corrupt(self.what))
        }
    }
}

/// Appends one message's part of a run body.
fn put_message(body: &mut Vec<u8>, ts: u64, envelope: &[u8]) {
    body.extend_from_slice(&ts.to_be_bytes());
    body.extend_from_slice(&(envelope.len() as u32).to_be_bytes());
    body.extend_from_slice(envelope);
}

/// The body of a run holding `messages` (consecutive seqs of one topic).
pub(super) fn encode_run<'a, I>(messages: I) -> Vec<u8>
where
    I: IntoIterator<Item = (u64, &'a [u8])>,
    I::IntoIter: Clone,
{
    let messages = messages.into_iter();
    // Sized first, so the body is not copied again as it grows.
    let size = 4 + messages.clone().map(|(_, e)| 12 + e.len()).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(&[0; 4]);
    let mut count = 0u32;
    for (ts, envelope) in messages {
        put_message(&mut body, ts, envelope);
        count += 1;
    }
    body[..4].copy_from_slice(&count.to_be_bytes());
    body
}

/// One message inside a run body.
#[derive(Debug, Clone, Copy)]
pub(super) struct RunMessage<'a> {
    /// Its seq.
    pub seq: u64,
    /// Its timestamp.
    pub ts: u64,
    /// Its envelope.
    pub envelope: &'a [u8],
}

/// The messages of the run stored under `last`, in seq order.
pub(super) fn decode_run(last: u64, body: &[u8]) -> Result<Vec<RunMessage<'_>>, LogError> {
    let mut r = Reader {
        body,
        at: 0,
        what: "a run of messages",
    };
    let count = r.u32()? as u64;
    let first = (last + 1)
        .checked_sub(count)
        .filter(|&f| f >= 1 && count >= 1)
        .ok_or_else(|| corrupt("a run of messages"))?;
    let mut out = Vec::with_capacity(count as usize);
    for seq in first..=last {
        let ts = r.u64()?;
        let len = r.u32()? as usize;
        out.push(RunMessage {
            seq,
            ts,
            envelope: r.take(len)?,
        });
    }
    r.done()?;
    Ok(out)
}

/// The messages of a decoded run, shared as the log hands them out.
pub(super) fn run_messages(topic: &Topic, run: &[RunMessage<'_>]) -> Vec<Arc<Message>> {
    run.iter()
        .map(|m| {
            Arc::new(Message::from_envelope(
                topic.clone(),
                m.seq,
                m.ts,
                Bytes::copy_from_slice(m.envelope),
            ))
        })
        .collect()
}

/// Bytes `entry` takes in a pass body.
fn pass_len(e: &LogEntry) -> usize {
    e.message.topic.as_str().len()
        + e.message.envelope().len()
        + e.idempotency.as_ref().map_or(0, |(k, _)| k.len())
        + 38
}

/// The body of a pass: every entry one append wrote.
pub(super) fn encode_pass(entries: &[LogEntry]) -> Vec<u8> {
    let size: usize = entries.iter().map(pass_len).sum();
    let mut body = Vec::with_capacity(size + 4);
    body.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for e in entries {
        let m = &e.message;
        let topic = m.topic.as_str().as_bytes();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic);
        body.extend_from_slice(&m.seq.to_be_bytes());
        put_message(&mut body, m.ts, m.envelope());
        match &e.idempotency {
            Some((key, expires_at)) => {
                body.extend_from_slice(&(key.len() as u32).to_be_bytes());
                body.extend_from_slice(key.as_bytes());
                body.extend_from_slice(&expires_at.to_be_bytes());
            }
            None => body.extend_from_slice(&u32::MAX.to_be_bytes()),
        }
    }
    body
}

/// The entries of a pass body.
pub(super) fn decode_pass(body: &[u8]) -> Result<Vec<LogEntry>, LogError> {
    let mut r = Reader {
        body,
        at: 0,
        what: "a pass of messages",
    };
    let count = r.u32()? as usize;
    let mut out = Vec::with_capacity(count.min(body.len() / 24));
    for _ in 0..count {
        let len = r.u16()? as usize;
        let name = std::str::from_utf8(r.take(len)?).map_err(|_| corrupt(r.what))?;
        let topic = Topic::parse(name).map_err(|_| corrupt(r.what))?;
        let seq = r.u64()?;
        let ts = r.u64()?;
        let len = r.u32()? as usize;
        let envelope = Bytes::copy_from_slice(r.take(len)?);
        let idempotency = match r.u32()? {
            u32::MAX => None,
            len => {
                let key = std::str::from_utf8(r.take(len as usize)?)
                    .map_err(|_| corrupt(r.what))?
                    .to_string();
                Some((key, r.u64()?))
            }
        };
        out.push(LogEntry {
            message: Arc::new(Message::from_envelope(topic, seq, ts, envelope)),
            idempotency,
        });
    }
    r.done()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_round_trips_and_its_seqs_end_at_its_key() {
        let body = encode_run([(5, &b"{\"a\":1}"[..]), (6, &b"{}"[..])]);
        let run = decode_run(9, &body).unwrap();
        assert_eq!(run.len(), 2);
        assert_eq!(
            (run[0].seq, run[0].ts, run[0].envelope),
            (8, 5, &b"{\"a\":1}"[..])
        );
        assert_eq!((run[1].seq, run[1].ts, run[1].envelope), (9, 6, &b"{}"[..]));
        // A count past the key's seq, a short body, trailing bytes.
        assert!(decode_run(1, &body).is_err());
        assert!(decode_run(9, &body[..body.len() - 1]).is_err());
        let mut long = body.clone();
        long.push(0);
        assert!(decode_run(9, &long).is_err());
        assert!(decode_run(9, &encode_run([])).is_err());
    }

    #[test]
    fn a_pass_round_trips_with_its_keys() {
        let t = Topic::parse("a.b").unwrap();
        let entries = vec![
            LogEntry {
                message: Message::new(t.clone(), 3, 70, "1"),
                idempotency: Some(("k".into(), 99)),
            },
            LogEntry {
                message: Message::new(Topic::parse("c").unwrap(), 1, 71, "\"x\""),
                idempotency: None,
            },
        ];
        let back = decode_pass(&encode_pass(&entries)).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in entries.iter().zip(&back) {
            assert_eq!(a.message.topic, b.message.topic);
            assert_eq!((a.message.seq, a.message.ts), (b.message.seq, b.message.ts));
            assert_eq!(a.message.envelope(), b.message.envelope());
            assert_eq!(a.idempotency, b.idempotency);
        }
        let body = encode_pass(&entries);
        for cut in 0..body.len() {
            assert!(decode_pass(&body[..cut]).is_err(), "cut at {cut}");
        }
    }
}
