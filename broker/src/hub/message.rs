//! A sequenced message and its wire encodings, built once and shared by every
//! subscriber of every transport.

use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::topic::Topic;

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
    /// `{"type":"message",...envelope fields}`: the WebSocket delivery frame,
    /// built on first use by the first WebSocket subscriber.
    ws_frame: OnceLock<ByteString>,
}

impl Message {
    /// Builds a message from compact JSON `data` (see [`crate::json::compact`]).
    pub fn new(topic: Topic, seq: u64, ts: u64, data: &str) -> Arc<Self> {
        let mut buf = BytesMut::with_capacity(48 + topic.as_str().len() + data.len());
        buf.put_slice(b"{\"topic\":\"");
        // Topic names are [A-Za-z0-9_.-]: nothing to escape.
        buf.put_slice(topic.as_str().as_bytes());
        buf.put_slice(b"\",\"seq\":");
        buf.put_slice(itoa::Buffer::new().format(seq).as_bytes());
        buf.put_slice(b",\"ts\":");
        buf.put_slice(itoa::Buffer::new().format(ts).as_bytes());
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
            ws_frame: OnceLock::new(),
        }
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

    /// The WebSocket text frame for this message (shared, built once).
    pub fn ws_frame(&self) -> &ByteString {
        self.ws_frame.get_or_init(|| {
            let mut buf = BytesMut::with_capacity(self.envelope.len() + 16);
            buf.put_slice(b"{\"type\":\"message\",");
            buf.put_slice(&self.envelope[1..]);
            ByteString::try_from(buf.freeze()).expect("envelope is UTF-8 JSON")
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
        assert_eq!(
            &m.ws_frame()[..],
            r#"{"type":"message","topic":"orders.eu","seq":42,"ts":1764000000123,"data":{"a":[1,"x"]}}"#
        );
        assert_eq!(m.data(), br#"{"a":[1,"x"]}"#);
        let v: serde_json::Value = serde_json::from_slice(m.envelope()).unwrap();
        assert_eq!(v["seq"], 42);
    }
}
