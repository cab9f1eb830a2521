//! A sequenced message and its wire encodings, built once and shared by every
//! subscriber of every transport.

use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    topic::Topic,
    websocket::{self, OpCode},
};

const TRACEPARENT_KEY: &[u8] = b",\"traceparent\":\"";

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
    /// history send, and what the log stores.
    envelope: Bytes,
    /// `{"type":"message",...envelope fields}` framed as a WebSocket text
    /// frame, built on first use by the first WebSocket subscriber.
    ws_wire: OnceLock<Bytes>,
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
        let mut buf = BytesMut::with_capacity(48 + topic.as_str().len() + data.len());
        buf.put_slice(b"{\"topic\":\"");
        // Topic names are [A-Za-z0-9_.-]: nothing to escape.
        buf.put_slice(topic.as_str().as_bytes());
        buf.put_slice(b"\",\"seq\":");
        buf.put_slice(itoa::Buffer::new().format(seq).as_bytes());
        buf.put_slice(b",\"ts\":");
        buf.put_slice(itoa::Buffer::new().format(ts).as_bytes());
        if let Some(tp) = traceparent {
            // Validated W3C text: hex and dashes, nothing to escape.
            buf.put_slice(TRACEPARENT_KEY);
            buf.put_slice(tp.as_bytes());
            buf.put_u8(b'"');
        }
        buf.put_slice(b",\"data\":");
        buf.put_slice(data.as_bytes());
        buf.put_u8(b'}');
        Arc::new(Self::from_envelope(topic, seq, ts, buf.freeze()))
    }

    /// Wraps an envelope read back from the log or received from a peer.
    pub fn from_envelope(topic: Topic, seq: u64, ts: u64, envelope: Bytes) -> Self {
        Message {
            topic,
            seq,
            ts,
            envelope,
            ws_wire: OnceLock::new(),
        }
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

    /// The `data` field as raw JSON text.
    pub fn data(&self) -> &[u8] {
        let key = b",\"data\":";
        let start = memchr::memmem::find(&self.envelope, key).map_or(0, |i| i + key.len());
        &self.envelope[start..self.envelope.len() - 1]
    }

    /// The WebSocket delivery frame for this message, header included:
    /// server frames are unmasked, so every subscriber is sent these same
    /// bytes (shared, built once).
    pub fn ws_wire(&self) -> &Bytes {
        self.ws_wire.get_or_init(|| {
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
mod tests {
    use super::*;

    #[test]
    fn encodings_agree() {
        let m = Message::new(
            Topic::parse("orders.eu").unwrap(),
            42,
            1764000000123,
            r#"{"a":[1,"x"]}"#,
        );
        assert_eq!(
            &m.envelope()[..],
            br#"{"topic":"orders.eu","seq":42,"ts":1764000000123,"data":{"a":[1,"x"]}}"#
        );
        let text = r#"{"type":"message","topic":"orders.eu","seq":42,"ts":1764000000123,"data":{"a":[1,"x"]}}"#;
        let wire = m.ws_wire();
        assert_eq!(
            wire[..2],
            [0x81, text.len() as u8],
            "FIN text frame, unmasked"
        );
        assert_eq!(&wire[2..], text.as_bytes());
        assert_eq!(m.data(), br#"{"a":[1,"x"]}"#);
        assert_eq!(m.traceparent(), None);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = Message::traced(
            Topic::parse("a.b").unwrap(),
            1,
            2,
            r#"{"traceparent":"x"}"#,
            Some(tp),
        );
        assert_eq!(
            &t.envelope()[..],
            format!(r#"{{"topic":"a.b","seq":1,"ts":2,"traceparent":"{tp}","data":{{"traceparent":"x"}}}}"#).as_bytes()
        );
        assert_eq!(t.traceparent(), Some(tp));
        assert_eq!(t.data(), br#"{"traceparent":"x"}"#);
        let plain = Message::new(Topic::parse("a.b").unwrap(), 1, 2, r#"{"traceparent":"x"}"#);
        assert_eq!(plain.traceparent(), None, "user data is not looked at");
        let v: serde_json::Value = serde_json::from_slice(m.envelope()).unwrap();
        assert_eq!(v["seq"], 42);
    }
}

/// The newest committed message of a topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicHead {
    /// Highest seq assigned and durable (0 if none yet).
    pub last_seq: u64,
    /// Its publish time in ms.
    pub last_ts: u64,
}
