//! A sequenced message and its wire encodings, built once and shared by every
//! subscriber of every transport.

use std::sync::{Arc, OnceLock};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    binary::BinaryDelivery,
    topic::Topic,
    websocket::{self, OpCode},
};

const TOPIC_KEY: &[u8] = b"{\"topic\":\"";
const SEQ_KEY: &[u8] = b"\",\"seq\":";
const TS_KEY: &[u8] = b",\"ts\":";
const TRACEPARENT_KEY: &[u8] = b",\"traceparent\":\"";
const DATA_KEY: &[u8] = b",\"data\":";
/// How a binary message's envelope ends, after its base64 `data` string.
/// JSON data cannot end an envelope this way: its last `"` would have to
/// close a string that `,"encoding":"` had already closed.
const BINARY_TAIL: &[u8] = b",\"encoding\":\"base64\"}";

/// What a publisher sends: JSON, or raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The `data` value as compact JSON text.
    Json(String),
    /// Raw bytes, any content.
    Binary(Bytes),
}

impl Payload {
    /// Bytes counted against the payload limit: the compact JSON text, or
    /// the raw bytes (not their base64 form).
    pub fn len(&self) -> usize {
        match self {
            Payload::Json(s) => s.len(),
            Payload::Binary(b) => b.len(),
        }
    }

    /// Whether the payload has no bytes (only a binary one can).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether this is raw bytes.
    pub fn is_binary(&self) -> bool {
        matches!(self, Payload::Binary(_))
    }
}

/// Fixed cost counted per queued message on top of its envelope, so a queue
/// of tiny messages is bounded too.
pub const QUEUE_OVERHEAD_BYTES: usize = 64;

/// One accepted publish, immutable once sequenced.
#[derive(Debug)]
pub struct Message {
    /// Topic the message was published to.
    pub topic: Topic,
    /// Position in the topic, from 1.
    pub seq: u64,
    /// Publish time set by the broker, ms since the Unix epoch.
    pub ts: u64,
    /// `{"topic":..,"seq":..,"ts":..,"data":..}`: what SSE, long-poll and
    /// history send, and what the log stores. A binary message's `data` is
    /// its bytes in base64, followed by `"encoding":"base64"`.
    envelope: Bytes,
    /// Raw bytes (published as binary), not JSON.
    binary: bool,
    /// `{"type":"message",...envelope fields}` framed as a WebSocket text
    /// frame, built on first use by the first WebSocket subscriber that
    /// takes JSON.
    ws_text: OnceLock<Bytes>,
    /// A binary message's binary delivery frame, built on first use.
    ws_binary: OnceLock<Bytes>,
}

impl Message {
    /// Builds a message from compact JSON `data` (see [`crate::json::compact`]).
    pub fn new(topic: Topic, seq: u64, ts: u64, data: &str) -> Arc<Self> {
        Self::traced(topic, seq, ts, data, None)
    }

    /// As [`Message::new`], carrying a W3C `traceparent` (already
    /// validated) in the envelope, before `data`.
    pub fn traced(
        topic: Topic,
        seq: u64,
        ts: u64,
        data: &str,
        traceparent: Option<&str>,
    ) -> Arc<Self> {
        Self::build(topic, seq, ts, traceparent, data.len(), |buf| {
            buf.put_slice(data.as_bytes());
        })
    }

    /// A message from either kind of payload; raw bytes get a base64
    /// `data` with `"encoding":"base64"` in the envelope.
    pub fn with_payload(
        topic: Topic,
        seq: u64,
        ts: u64,
        payload: &Payload,
        traceparent: Option<&str>,
    ) -> Arc<Self> {
        match payload {
            Payload::Json(data) => Self::traced(topic, seq, ts, data, traceparent),
            Payload::Binary(raw) => {
                let encoded = raw.len().div_ceil(3) * 4;
                // `"`, the base64, `"`, and the tail but its closing `}`.
                let data_len = encoded + 2 + BINARY_TAIL.len() - 1;
                Self::build(topic, seq, ts, traceparent, data_len, |buf| {
                    buf.put_u8(b'"');
                    let at = buf.len();
                    buf.resize(at + encoded, 0);
                    let n = STANDARD
                        .encode_slice(raw, &mut buf[at..])
                        .expect("sized for the encoding");
                    debug_assert_eq!(n, encoded);
                    buf.put_u8(b'"');
                    buf.put_slice(&BINARY_TAIL[..BINARY_TAIL.len() - 1]);
                })
            }
        }
    }

    fn build(
        topic: Topic,
        seq: u64,
        ts: u64,
        traceparent: Option<&str>,
        data_len: usize,
        put_data: impl FnOnce(&mut BytesMut),
    ) -> Arc<Self> {
        let (mut seq_text, mut ts_text) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (seq_text, ts_text) = (seq_text.format(seq), ts_text.format(ts));
        let tp_len = traceparent.map_or(0, |tp| TRACEPARENT_KEY.len() + tp.len() + 1);
        // Sized exactly: a buffer that grew would double, and a staged
        // message keeps its envelope's whole allocation until compaction.
        let len = TOPIC_KEY.len()
            + topic.as_str().len()
            + SEQ_KEY.len()
            + seq_text.len()
            + TS_KEY.len()
            + ts_text.len()
            + tp_len
            + DATA_KEY.len()
            + data_len
            + 1;
        let mut buf = BytesMut::with_capacity(len);
        buf.put_slice(TOPIC_KEY);
        // Topic names are [A-Za-z0-9_.-]: nothing to escape.
        buf.put_slice(topic.as_str().as_bytes());
        buf.put_slice(SEQ_KEY);
        buf.put_slice(seq_text.as_bytes());
        buf.put_slice(TS_KEY);
        buf.put_slice(ts_text.as_bytes());
        if let Some(tp) = traceparent {
            // Validated W3C text: hex and dashes, nothing to escape.
            buf.put_slice(TRACEPARENT_KEY);
            buf.put_slice(tp.as_bytes());
            buf.put_u8(b'"');
        }
        buf.put_slice(DATA_KEY);
        put_data(&mut buf);
        buf.put_u8(b'}');
        debug_assert_eq!(buf.len(), len, "the envelope's size is computed exactly");
        Arc::new(Self::from_envelope(topic, seq, ts, buf.freeze()))
    }

    /// Wraps an envelope read back from the log or received from a peer.
    pub fn from_envelope(topic: Topic, seq: u64, ts: u64, envelope: Bytes) -> Self {
        Message {
            topic,
            seq,
            ts,
            binary: envelope.ends_with(BINARY_TAIL),
            envelope,
            ws_text: OnceLock::new(),
            ws_binary: OnceLock::new(),
        }
    }

    /// Whether the message is raw bytes (published as binary).
    pub fn is_binary(&self) -> bool {
        self.binary
    }

    /// The `traceparent` the message carries, if any. It sits between
    /// `ts` and `data`, so the search never reaches into user data.
    pub fn traceparent(&self) -> Option<&str> {
        let data_at = memchr::memmem::find(&self.envelope, b",\"data\":")?;
        let head = &self.envelope[..data_at];
        let start = memchr::memmem::find(head, TRACEPARENT_KEY)? + TRACEPARENT_KEY.len();
        let end = start + memchr::memchr(b'"', &head[start..])?;
        std::str::from_utf8(&head[start..end]).ok()
    }

    /// The envelope JSON.
    pub fn envelope(&self) -> &Bytes {
        &self.envelope
    }

    /// The `data` field as raw JSON text (a binary message's is its
    /// base64 string).
    pub fn data(&self) -> &[u8] {
        let start = self.data_at();
        let end = if self.binary {
            self.envelope.len() - BINARY_TAIL.len()
        } else {
            self.envelope.len() - 1
        };
        &self.envelope[start..end]
    }

    fn data_at(&self) -> usize {
        memchr::memmem::find(&self.envelope, DATA_KEY).map_or(0, |i| i + DATA_KEY.len())
    }

    /// A binary message's raw bytes (`None` for JSON, or if the stored
    /// base64 does not decode).
    pub fn raw_data(&self) -> Option<Vec<u8>> {
        if !self.binary {
            return None;
        }
        let data = self.data();
        STANDARD
            .decode(data.get(1..data.len().checked_sub(1)?)?)
            .ok()
    }

    /// The payload as published.
    pub fn payload(&self) -> Payload {
        match self.raw_data() {
            Some(raw) => Payload::Binary(raw.into()),
            None => Payload::Json(String::from_utf8_lossy(self.data()).into_owned()),
        }
    }

    /// The WebSocket delivery frame for this message, header included: a
    /// text frame for JSON, a binary delivery frame for raw bytes. Server
    /// frames are unmasked, so every subscriber is sent these same bytes
    /// (shared, built once).
    pub fn ws_wire(&self) -> &Bytes {
        if !self.binary {
            return self.ws_text_wire();
        }
        if let Some(wire) = self.ws_binary.get() {
            return wire;
        }
        match self.binary_frame() {
            Some(frame) => self.ws_binary.get_or_init(|| frame),
            // Stored base64 that does not decode (the log checks every
            // record, so this is not expected): the text form still says
            // what is there.
            None => self.ws_text_wire(),
        }
    }

    fn binary_frame(&self) -> Option<Bytes> {
        let data = self.data();
        let b64 = data.get(1..data.len().checked_sub(1)?)?;
        let tp = self.traceparent();
        let head = BinaryDelivery {
            topic: self.topic.as_str(),
            seq: self.seq,
            ts: self.ts,
            traceparent: tp,
            payload: &[],
        };
        let padding = b64.iter().rev().take(2).filter(|&&c| c == b'=').count();
        let raw_len = (b64.len() / 4 * 3).checked_sub(padding)?;
        let len = head.header_len() + raw_len;
        let mut wire = BytesMut::with_capacity(websocket::header_len(len) + len);
        websocket::put_header(&mut wire, OpCode::Binary, len);
        head.put(&mut wire);
        let at = wire.len();
        wire.resize(at + raw_len, 0);
        let n = STANDARD.decode_slice(b64, &mut wire[at..]).ok()?;
        if n != raw_len {
            return None;
        }
        Some(wire.freeze())
    }

    /// The delivery as a JSON text frame, for WebSocket subscribers that
    /// take binary messages as base64 (and for every JSON message).
    pub fn ws_text_wire(&self) -> &Bytes {
        self.ws_text.get_or_init(|| {
            const PREFIX: &[u8] = b"{\"type\":\"message\",";
            let len = PREFIX.len() + self.envelope.len() - 1;
            let mut wire = BytesMut::with_capacity(websocket::header_len(len) + len);
            websocket::put_header(&mut wire, OpCode::Text, len);
            wire.put_slice(PREFIX);
            wire.put_slice(&self.envelope[1..]);
            wire.freeze()
        })
    }

    /// Bytes this message is charged against a subscriber's queue limit.
    pub fn queue_weight(&self) -> usize {
        self.envelope.len() + QUEUE_OVERHEAD_BYTES
    }
}

#[cfg(test)]
mod tests;

/// The newest committed message of a topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicHead {
    /// Highest seq assigned and durable (0 if none yet).
    pub last_seq: u64,
    /// Its publish time in ms.
    pub last_ts: u64,
}
