//! What sled holds for each run ([`RunRef`]: where its body is and what
//! it holds), and why a body could not be had ([`RunError`]).

use crate::log::run::{decode_run, RunMessage};

/// Where a run's body is, and what it holds: the body of its sled value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::log) struct RunRef {
    /// The run file.
    pub file: u64,
    /// Byte offset of the body in it.
    pub offset: u64,
    /// Length of the body.
    pub len: u32,
    /// crc32c of the run's key and body.
    pub crc: u32,
    /// Messages in the body.
    pub count: u32,
    /// Leading messages of the body retention removed (they are no longer
    /// part of the log).
    pub skip: u32,
    /// Timestamp of its last message.
    pub last_ts: u64,
}

/// Bytes of an encoded [`RunRef`].
const REF_LEN: usize = 40;

impl RunRef {
    /// The ref as stored (big-endian fields, in declaration order).
    pub fn encode(&self) -> [u8; REF_LEN] {
        let mut out = [0u8; REF_LEN];
        out[..8].copy_from_slice(&self.file.to_be_bytes());
        out[8..16].copy_from_slice(&self.offset.to_be_bytes());
        out[16..20].copy_from_slice(&self.len.to_be_bytes());
        out[20..24].copy_from_slice(&self.crc.to_be_bytes());
        out[24..28].copy_from_slice(&self.count.to_be_bytes());
        out[28..32].copy_from_slice(&self.skip.to_be_bytes());
        out[32..].copy_from_slice(&self.last_ts.to_be_bytes());
        out
    }

    /// A stored ref; `None` when `body` is not one.
    pub fn decode(body: &[u8]) -> Option<Self> {
        let body: &[u8; REF_LEN] = body.try_into().ok()?;
        let u64_at = |at: usize| u64::from_be_bytes(body[at..at + 8].try_into().expect("8"));
        let u32_at = |at: usize| u32::from_be_bytes(body[at..at + 4].try_into().expect("4"));
        let r = RunRef {
            file: u64_at(0),
            offset: u64_at(8),
            len: u32_at(16),
            crc: u32_at(20),
            count: u32_at(24),
            skip: u32_at(28),
            last_ts: u64_at(32),
        };
        (r.count >= 1 && r.skip < r.count).then_some(r)
    }

    /// The messages of `body` (the run stored under `last`) still in the
    /// log: decoded, its count checked against this ref, what retention
    /// skipped left out. The error says what is wrong.
    pub fn messages<'a>(&self, last: u64, body: &'a [u8]) -> Result<Vec<RunMessage<'a>>, String> {
        let mut run = decode_run(last, body).map_err(|e| e.to_string())?;
        if run.len() != self.count as usize {
            return Err("its count does not match its reference".into());
        }
        run.drain(..self.skip as usize);
        Ok(run)
    }

    /// The first seq of the body stored under `last`, trimmed or not.
    pub fn body_first_seq(&self, last: u64) -> Option<u64> {
        (last + 1)
            .checked_sub(u64::from(self.count))
            .filter(|&f| f >= 1)
    }

    /// The first seq of the run stored under `last` still in the log.
    pub fn first_seq(&self, last: u64) -> Option<u64> {
        self.body_first_seq(last).map(|f| f + u64::from(self.skip))
    }
}

/// Why a body could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(in crate::log) enum RunError {
    /// The bytes are not what the ref names: a missing or short file, or a
    /// checksum mismatch. Damage.
    #[error("{0}")]
    Damaged(String),
    /// The file could not be read (descriptors exhausted, an I/O error):
    /// not evidence of damage.
    #[error("{0}")]
    Io(String),
}
