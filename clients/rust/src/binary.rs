//! Binary payloads: the WebSocket delivery frame (kind 0x02) and the base64
//! form a binary message takes in JSON envelopes (`"encoding":"base64"`).
//! All integers are big-endian (protocol-spec, binary WebSocket frames v1.1).

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use crate::Error;

/// Kind byte of a server → client binary delivery frame.
const DELIVERY_KIND: u8 = 0x02;
/// Bytes before the topic: kind, flags, seq, ts, topic length.
const HEADER: usize = 20;

/// A message's payload: a JSON value, or raw bytes (a binary message).
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    /// A JSON message's `data`.
    Json(Value),
    /// A binary message's bytes, exactly as published.
    Binary(Bytes),
}

/// One delivered message, whatever its form on the wire.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Delivery {
    pub topic: String,
    pub seq: u64,
    pub ts: u64,
    pub payload: Payload,
}

impl Delivery {
    /// As a subscription yields it.
    pub fn into_event(self) -> crate::Event {
        let Delivery {
            topic,
            seq,
            ts,
            payload,
        } = self;
        match payload {
            Payload::Json(data) => crate::Event::Message {
                topic,
                seq,
                ts,
                data,
            },
            Payload::Binary(data) => crate::Event::Binary {
                topic,
                seq,
                ts,
                data,
            },
        }
    }
}

/// A JSON envelope as SSE, long-poll and history carry it.
#[derive(Debug, Deserialize)]
pub(crate) struct Envelope {
    topic: String,
    seq: u64,
    ts: u64,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    encoding: Option<String>,
}

impl Envelope {
    /// Its delivery, binary data decoded.
    pub fn delivery(self) -> Result<Delivery, Error> {
        let payload = payload(self.data, self.encoding.as_deref())?;
        Ok(Delivery {
            topic: self.topic,
            seq: self.seq,
            ts: self.ts,
            payload,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// The payload of an envelope's `data` given its `encoding`: absent (or
/// null) is JSON, `base64` is a binary message; anything else is a
/// protocol error.
pub(crate) fn payload(data: Value, encoding: Option<&str>) -> Result<Payload, Error> {
    match (encoding, data) {
        (None, data) => Ok(Payload::Json(data)),
        (Some("base64"), Value::String(text)) => base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(|b| Payload::Binary(Bytes::from(b)))
            .map_err(|e| Error::Protocol(format!("invalid base64 payload: {e}"))),
        (Some(other), _) => Err(Error::Protocol(format!(
            "message with encoding {other:?} and data that is not a base64 string"
        ))),
    }
}

/// Decodes a binary delivery frame (kind 0x02).
pub(crate) fn decode_delivery(frame: &[u8]) -> Result<Delivery, Error> {
    let bad = |why: String| Error::Protocol(format!("undecodable binary frame: {why}"));
    if frame.len() < HEADER {
        return Err(bad(format!(
            "{} bytes, shorter than the header",
            frame.len()
        )));
    }
    if frame[0] != DELIVERY_KIND {
        return Err(bad(format!("kind {:#04x}", frame[0])));
    }
    let flags = frame[1];
    if flags & !1 != 0 {
        return Err(bad(format!("reserved flag bits {flags:#04x}")));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&frame[at..at + 8]);
        u64::from_be_bytes(b)
    };
    let (seq, ts) = (u64_at(2), u64_at(10));
    let topic_len = usize::from(u16::from_be_bytes([frame[18], frame[19]]));
    let mut at = HEADER + topic_len;
    let topic = frame
        .get(HEADER..at)
        .ok_or_else(|| bad("the topic runs past the frame".into()))?;
    let topic = std::str::from_utf8(topic)
        .map_err(|_| bad("the topic is not UTF-8".into()))?
        .to_string();
    if flags & 1 != 0 {
        // The traceparent: its length byte, then its bytes (skipped here).
        let len = *frame
            .get(at)
            .ok_or_else(|| bad("the traceparent length is missing".into()))?;
        at += 1 + usize::from(len);
        if at > frame.len() {
            return Err(bad("the traceparent runs past the frame".into()));
        }
    }
    Ok(Delivery {
        topic,
        seq,
        ts,
        payload: Payload::Binary(Bytes::copy_from_slice(&frame[at..])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_frames_decode_from_hand_made_bytes() {
        let frame = [
            0x02, 0x00, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0x01, 0x9a, 0xd2, 0x3b, 0x1c, 0x7b,
            0x00, 0x03, b'a', b'.', b'b', 0x00, 0xff, 0xc3, 0x28,
        ];
        let d = decode_delivery(&frame).unwrap();
        assert_eq!(
            (d.topic.as_str(), d.seq, d.ts),
            ("a.b", 258, 0x019a_d23b_1c7b)
        );
        assert_eq!(
            d.payload,
            Payload::Binary(Bytes::from_static(b"\x00\xff\xc3\x28"))
        );
        let traced = [
            0x02, 0x01, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0x00, 0x01, b't', 0x02,
            b't', b'p',
        ];
        let d = decode_delivery(&traced).unwrap();
        assert_eq!((d.seq, d.ts), (1, 2));
        assert_eq!(d.payload, Payload::Binary(Bytes::new()));
        let mut bad_utf8 = frame[..18].to_vec();
        bad_utf8.extend_from_slice(&[0x00, 0x02, 0xc3, 0x28]);
        let mut wrong_kind = frame.to_vec();
        wrong_kind[0] = 0x01;
        let mut reserved = frame.to_vec();
        reserved[1] = 0x02;
        for (bytes, why) in [
            (&frame[..19], "shorter"),
            (&wrong_kind[..], "kind"),
            (&reserved[..], "reserved"),
            (&frame[..22], "runs past"),
            (&bad_utf8[..], "not UTF-8"),
            (&traced[..22], "runs past"),
        ] {
            match decode_delivery(bytes) {
                Err(Error::Protocol(text)) => assert!(text.contains(why), "{text}"),
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn base64_envelopes_are_binary_and_plain_ones_json() {
        let binary: Envelope = serde_json::from_str(
            r#"{"topic":"t","seq":1,"ts":2,"data":"AP/DKA==","encoding":"base64"}"#,
        )
        .unwrap();
        assert_eq!(
            binary.delivery().unwrap().payload,
            Payload::Binary(Bytes::from_static(b"\x00\xff\xc3\x28"))
        );
        let json: Envelope =
            serde_json::from_str(r#"{"topic":"t","seq":1,"ts":2,"data":"AP/DKA=="}"#).unwrap();
        assert_eq!(
            json.delivery().unwrap().payload,
            Payload::Json(Value::String("AP/DKA==".into()))
        );
        assert!(payload(Value::String("A".into()), Some("base64")).is_err());
        assert!(payload(Value::String("AA==".into()), Some("hex")).is_err());
        assert_eq!(
            payload(Value::String(String::new()), Some("base64")).unwrap(),
            Payload::Binary(Bytes::new())
        );
    }
}
