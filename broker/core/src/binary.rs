//! Herald's binary WebSocket frames (protocol v1.1): the header a client
//! puts before a raw publish (kind `0x01`) and the one the server puts
//! before a raw delivery (kind `0x02`). All integers are big-endian.
//!
//! ```text
//! publish:  kind=0x01 | flags | u16 T | topic | [u8 I id] [u8 K key] [u8 P traceparent] | payload
//! delivery: kind=0x02 | flags | u64 seq | u64 ts | u16 T | topic | [u8 P traceparent] | payload
//! ```
//!
//! Publish flags: bit 0 id, bit 1 idempotency key, bit 2 traceparent.
//! Delivery flags: bit 0 traceparent. Every other flag bit must be 0.
//! The payload is everything after the header, any bytes, possibly none.

use bytes::{BufMut, Bytes, BytesMut};

/// Kind byte of a client's binary publish.
pub const KIND_PUBLISH: u8 = 0x01;
/// Kind byte of a server's binary delivery.
pub const KIND_DELIVERY: u8 = 0x02;

/// Publish flag: an id follows the topic.
pub const FLAG_ID: u8 = 0b001;
/// Publish flag: an idempotency key follows.
pub const FLAG_IDEMPOTENCY_KEY: u8 = 0b010;
/// Publish flag: a traceparent follows.
pub const FLAG_TRACEPARENT: u8 = 0b100;
/// Delivery flag: a traceparent follows the topic.
pub const DELIVERY_FLAG_TRACEPARENT: u8 = 0b001;

/// Longest delivery header: kind, flags, seq, ts, topic length, a topic
/// of 255 bytes, and a traceparent of 255.
pub const MAX_DELIVERY_HEADER: usize = 2 + 8 + 8 + 2 + 255 + 1 + 255;

/// A binary publish frame, borrowed from the frame's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryPublish<'a> {
    /// Destination topic as sent (the broker checks its grammar).
    pub topic: &'a str,
    /// Request id, echoed in the JSON reply.
    pub id: Option<&'a str>,
    /// Idempotency key.
    pub idempotency_key: Option<&'a str>,
    /// W3C trace context (ASCII; the broker checks its form).
    pub traceparent: Option<&'a str>,
    /// The raw payload.
    pub payload: &'a [u8],
}

/// A binary delivery frame, borrowed from the frame's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryDelivery<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Seq.
    pub seq: u64,
    /// Publish time, ms since the epoch.
    pub ts: u64,
    /// W3C trace context the message carries.
    pub traceparent: Option<&'a str>,
    /// The raw payload.
    pub payload: &'a [u8],
}

/// What is wrong with a binary frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BinaryErrorKind {
    /// The frame ends inside its header.
    #[error("binary frame is shorter than its header")]
    Short,
    /// The first byte is not a known kind.
    #[error("unknown binary frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A flag bit the format reserves is set.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// The topic length is 0.
    #[error("binary frame has an empty topic")]
    EmptyTopic,
    /// A field that must be UTF-8 is not.
    #[error("binary frame field '{0}' is not valid UTF-8")]
    BadUtf8(&'static str),
}

/// A refused binary frame, with the request id when it could be read (so
/// the error reply can carry it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct BinaryError<'a> {
    /// What is wrong.
    pub kind: BinaryErrorKind,
    /// The publish's id, if the header got that far and it is UTF-8.
    pub id: Option<&'a str>,
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BinaryErrorKind> {
        let end = self.at.checked_add(n).ok_or(BinaryErrorKind::Short)?;
        let out = self.buf.get(self.at..end).ok_or(BinaryErrorKind::Short)?;
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, BinaryErrorKind> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, BinaryErrorKind> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u64(&mut self) -> Result<u64, BinaryErrorKind> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    /// A `u8`-length-prefixed field, if its flag is set.
    fn short_field(&mut self, present: bool) -> Result<Option<&'a [u8]>, BinaryErrorKind> {
        if !present {
            return Ok(None);
        }
        let n = self.u8()?;
        self.take(n as usize).map(Some)
    }

    fn rest(&self) -> &'a [u8] {
        &self.buf[self.at..]
    }
}

fn text<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, BinaryErrorKind> {
    std::str::from_utf8(bytes).map_err(|_| BinaryErrorKind::BadUtf8(field))
}

fn opt_text<'a>(
    bytes: Option<&'a [u8]>,
    field: &'static str,
) -> Result<Option<&'a str>, BinaryErrorKind> {
    bytes.map(|b| text(b, field)).transpose()
}

/// Header field lengths are `u8`/`u16`: longer values cannot be framed.
fn short_len(value: &str) -> u8 {
    u8::try_from(value.len()).expect("a binary frame field is at most 255 bytes")
}

impl<'a> BinaryPublish<'a> {
    /// Parses a client's binary frame. The whole header is split first, so
    /// the id is known (when present and UTF-8) even if another field is
    /// refused.
    pub fn parse(frame: &'a [u8]) -> Result<Self, BinaryError<'a>> {
        let mut r = Reader { buf: frame, at: 0 };
        let bare = |kind| BinaryError { kind, id: None };
        let kind = r.u8().map_err(bare)?;
        if kind != KIND_PUBLISH {
            return Err(bare(BinaryErrorKind::UnknownKind(kind)));
        }
        let flags = r.u8().map_err(bare)?;
        let reserved = flags & !(FLAG_ID | FLAG_IDEMPOTENCY_KEY | FLAG_TRACEPARENT);
        if reserved != 0 {
            return Err(bare(BinaryErrorKind::ReservedFlags(reserved)));
        }
        let topic_len = r.u16().map_err(bare)?;
        let topic = r.take(topic_len as usize).map_err(bare)?;
        let id = r.short_field(flags & FLAG_ID != 0).map_err(bare)?;
        let id = match opt_text(id, "id") {
            Ok(id) => id,
            Err(kind) => return Err(bare(kind)),
        };
        let with_id = |kind| BinaryError { kind, id };
        let key = r
            .short_field(flags & FLAG_IDEMPOTENCY_KEY != 0)
            .map_err(with_id)?;
        let traceparent = r
            .short_field(flags & FLAG_TRACEPARENT != 0)
            .map_err(with_id)?;
        if topic_len == 0 {
            return Err(with_id(BinaryErrorKind::EmptyTopic));
        }
        Ok(BinaryPublish {
            topic: text(topic, "topic").map_err(with_id)?,
            id,
            idempotency_key: opt_text(key, "idempotency_key").map_err(with_id)?,
            traceparent: opt_text(traceparent, "traceparent").map_err(with_id)?,
            payload: r.rest(),
        })
    }

    /// The frame's bytes (without the WebSocket header). Panics if the
    /// topic is longer than 65535 bytes or another field longer than 255:
    /// the caller validates them first.
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        for (present, bit) in [
            (self.id.is_some(), FLAG_ID),
            (self.idempotency_key.is_some(), FLAG_IDEMPOTENCY_KEY),
            (self.traceparent.is_some(), FLAG_TRACEPARENT),
        ] {
            if present {
                flags |= bit;
            }
        }
        let mut out = Vec::with_capacity(4 + self.topic.len() + 800 + self.payload.len());
        out.push(KIND_PUBLISH);
        out.push(flags);
        let topic_len = u16::try_from(self.topic.len()).expect("topic fits a u16 length");
        out.extend_from_slice(&topic_len.to_be_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        for field in [self.id, self.idempotency_key, self.traceparent]
            .into_iter()
            .flatten()
        {
            out.push(short_len(field));
            out.extend_from_slice(field.as_bytes());
        }
        out.extend_from_slice(self.payload);
        out
    }
}

impl<'a> BinaryDelivery<'a> {
    /// Parses a server's binary delivery frame.
    pub fn parse(frame: &'a [u8]) -> Result<Self, BinaryErrorKind> {
        let mut r = Reader { buf: frame, at: 0 };
        let kind = r.u8()?;
        if kind != KIND_DELIVERY {
            return Err(BinaryErrorKind::UnknownKind(kind));
        }
        let flags = r.u8()?;
        if flags & !DELIVERY_FLAG_TRACEPARENT != 0 {
            return Err(BinaryErrorKind::ReservedFlags(
                flags & !DELIVERY_FLAG_TRACEPARENT,
            ));
        }
        let seq = r.u64()?;
        let ts = r.u64()?;
        let topic_len = r.u16()?;
        let topic = r.take(topic_len as usize)?;
        let traceparent = r.short_field(flags & DELIVERY_FLAG_TRACEPARENT != 0)?;
        if topic_len == 0 {
            return Err(BinaryErrorKind::EmptyTopic);
        }
        Ok(BinaryDelivery {
            topic: text(topic, "topic")?,
            seq,
            ts,
            traceparent: opt_text(traceparent, "traceparent")?,
            payload: r.rest(),
        })
    }

    /// Bytes the header takes before the payload.
    pub fn header_len(&self) -> usize {
        20 + self.topic.len() + self.traceparent.map_or(0, |t| 1 + t.len())
    }

    /// Appends the frame's bytes (without the WebSocket header) to `out`.
    pub fn put(&self, out: &mut BytesMut) {
        out.put_u8(KIND_DELIVERY);
        out.put_u8(if self.traceparent.is_some() {
            DELIVERY_FLAG_TRACEPARENT
        } else {
            0
        });
        out.put_u64(self.seq);
        out.put_u64(self.ts);
        out.put_u16(u16::try_from(self.topic.len()).expect("topic fits a u16 length"));
        out.put_slice(self.topic.as_bytes());
        if let Some(tp) = self.traceparent {
            out.put_u8(short_len(tp));
            out.put_slice(tp.as_bytes());
        }
        out.put_slice(self.payload);
    }

    /// The frame's bytes (without the WebSocket header).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(self.header_len() + self.payload.len());
        self.put(&mut out);
        out.freeze()
    }
}

#[cfg(test)]
mod tests;
