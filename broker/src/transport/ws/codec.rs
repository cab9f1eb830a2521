//! Client frames in, whole messages out, with every limit applied before
//! anything is buffered.
//!
//! The header of each frame is read first (`wire::websocket`). A data frame
//! that declares more than the message limit — alone, or added to the
//! fragments before it — fails the connection with 1009 at once, so a client
//! can never make the node hold more than one message's worth of its bytes,
//! whatever it declares or streams. Fragmented text is checked for UTF-8 as
//! it arrives (fail fast, RFC 6455 §8.1).

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use crate::wire::websocket::{self, CloseError, HeaderError, OpCode};

/// A whole client message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A text message.
    Text(ByteString),
    /// A binary message.
    Binary(Bytes),
    /// A ping, to be answered with a pong carrying `payload`.
    Ping(Bytes),
    /// A pong.
    Pong,
    /// The client closes, with its code if it gave one.
    Close(Option<u16>),
}

/// Why the connection must fail, and with which close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A frame or message over the limit (1009).
    #[error("message too big")]
    TooBig,
    /// Text that is not UTF-8 (1007).
    #[error("invalid UTF-8 in text")]
    BadUtf8,
    /// A framing error (1002).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

impl Violation {
    /// The close code RFC 6455 gives this failure.
    pub fn close_code(self) -> u16 {
        match self {
            Violation::TooBig => super::close::MESSAGE_TOO_BIG,
            Violation::BadUtf8 => super::close::INVALID_DATA,
            Violation::Protocol(_) => super::close::PROTOCOL_ERROR,
        }
    }

    /// The close reason sent to the client.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::TooBig => "message too big",
            Violation::BadUtf8 => "invalid UTF-8 in text frame",
            Violation::Protocol(why) => why,
        }
    }
}

impl From<HeaderError> for Violation {
    fn from(e: HeaderError) -> Self {
        Violation::Protocol(match e {
            HeaderError::ReservedBits => "reserved bits set",
            HeaderError::ReservedOpcode(_) => "reserved opcode",
            HeaderError::Unmasked => "client frames must be masked",
            HeaderError::FragmentedControl => "fragmented control frame",
            HeaderError::LongControl => "control frame too long",
            HeaderError::BadLength => "invalid payload length",
        })
    }
}

/// A fragmented message being put together.
#[derive(Debug)]
struct Partial {
    text: bool,
    data: BytesMut,
    /// Bytes of `data` known to be valid UTF-8 so far (text only).
    checked: usize,
}

/// Turns the bytes a client sends into [`Incoming`] items.
#[derive(Debug)]
pub struct Decoder {
    max_message: usize,
    partial: Option<Partial>,
}

impl Decoder {
    /// A decoder taking messages (whole or reassembled) up to `max_message`
    /// bytes.
    pub fn new(max_message: usize) -> Self {
        Decoder {
            max_message,
            partial: None,
        }
    }

    /// Bytes the decoder holds of a message in fragments.
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.data.len())
    }

    /// Takes the next item out of `buf`: `Ok(None)` until `buf` holds a
    /// whole frame (after reserving room for the rest of it, within the
    /// limit), and nothing of `buf` is consumed then.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, Violation> {
        loop {
            let Some(header) = websocket::parse_client_header(buf)? else {
                return Ok(None);
            };
            let len = header.payload_len;
            if !header.opcode.is_control() {
                let before = self.buffered() as u64;
                if len.saturating_add(before) > self.max_message as u64 {
                    return Err(Violation::TooBig);
                }
            }
            // Within the limit (or ≤ 125 for control frames), so this fits.
            let len = len as usize;
            let frame_len = header.header_len + len;
            if buf.len() < frame_len {
                buf.reserve(frame_len - buf.len());
                return Ok(None);
            }
            buf.advance(header.header_len);
            let mut payload = buf.split_to(len);
            websocket::apply_mask(&mut payload, header.mask, 0);
            if let Some(item) = self.frame(header.fin, header.opcode, payload)? {
                return Ok(Some(item));
            }
        }
    }

    /// One whole frame; `None` for a fragment that completes nothing yet.
    fn frame(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, Violation> {
        match opcode {
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(Violation::Protocol(
                        "new message before the fragmented one ended",
                    ));
                }
                let text = opcode == OpCode::Text;
                if fin {
                    return finish(text, payload.freeze()).map(Some);
                }
                let mut partial = Partial {
                    text,
                    data: payload,
                    checked: 0,
                };
                check_prefix(&mut partial)?;
                self.partial = Some(partial);
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(Violation::Protocol("continuation without a message"));
                };
                partial.data.extend_from_slice(&payload);
                check_prefix(partial)?;
                if !fin {
                    return Ok(None);
                }
                let partial = self.partial.take().expect("checked above");
                finish(partial.text, partial.data.freeze()).map(Some)
            }
            OpCode::Ping => Ok(Some(Incoming::Ping(payload.freeze()))),
            OpCode::Pong => Ok(Some(Incoming::Pong)),
            OpCode::Close => match websocket::parse_close(&payload) {
                Ok(code) => Ok(Some(Incoming::Close(code))),
                Err(CloseError::BadCode) => Err(Violation::Protocol("invalid close frame")),
                Err(CloseError::BadReason) => Err(Violation::BadUtf8),
            },
        }
    }
}

fn finish(text: bool, data: Bytes) -> Result<Incoming, Violation> {
    if text {
        ByteString::try_from(data)
            .map(Incoming::Text)
            .map_err(|_| Violation::BadUtf8)
    } else {
        Ok(Incoming::Binary(data))
    }
}

/// Fails fast on text fragments that can no longer become UTF-8; a
/// sequence cut at the end of a fragment may still be completed.
fn check_prefix(partial: &mut Partial) -> Result<(), Violation> {
    if !partial.text {
        return Ok(());
    }
    match std::str::from_utf8(&partial.data[partial.checked..]) {
        Ok(_) => partial.checked = partial.data.len(),
        Err(e) if e.error_len().is_some() => return Err(Violation::BadUtf8),
        Err(e) => partial.checked += e.valid_up_to(),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        websocket::apply_mask(&mut body, mask, 0);
        out.extend_from_slice(&body);
        out
    }

    fn decode_all(decoder: &mut Decoder, wire: &[u8]) -> Result<Vec<Incoming>, Violation> {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        while let Some(item) = decoder.decode(&mut buf)? {
            out.push(item);
        }
        Ok(out)
    }

    #[test]
    fn a_huge_declared_frame_fails_before_its_payload_arrives() {
        let mut header = vec![0x81, 0xff];
        header.extend_from_slice(&(1u64 << 40).to_be_bytes());
        header.extend_from_slice(&[1, 2, 3, 4]);
        let mut buf = BytesMut::from(&header[..]);
        let err = Decoder::new(1024).decode(&mut buf).unwrap_err();
        assert_eq!(err.close_code(), 1009);
        assert!(buf.capacity() < 4096, "reserved {}", buf.capacity());
    }

    #[test]
    fn fragments_over_the_limit_fail_at_the_fragment_that_crosses_it() {
        let mut decoder = Decoder::new(100);
        let mut wire = client_frame(1, false, &[b'a'; 60]);
        wire.extend(client_frame(0, false, &[b'a'; 30]));
        assert!(decode_all(&mut decoder, &wire).unwrap().is_empty());
        // The header alone is enough to refuse the next one.
        let next = client_frame(0, true, &[b'a'; 20]);
        let mut buf = BytesMut::from(&next[..6]);
        assert_eq!(decoder.decode(&mut buf), Err(Violation::TooBig));
    }

    #[test]
    fn reassembles_fragments_with_control_frames_between() {
        let mut decoder = Decoder::new(1024);
        let mut wire = client_frame(1, false, "hé".as_bytes());
        wire.extend(client_frame(9, true, b"p"));
        wire.extend(client_frame(0, true, b"llo"));
        wire.extend(client_frame(2, true, &[0, 0xff]));
        wire.extend(client_frame(8, true, b"\x03\xe8"));
        let items = decode_all(&mut decoder, &wire).unwrap();
        assert_eq!(
            items,
            [
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Text("héllo".into()),
                Incoming::Binary(Bytes::from_static(&[0, 0xff])),
                Incoming::Close(Some(1000)),
            ]
        );
    }

    #[test]
    fn refusals_carry_their_close_codes() {
        let cases: [(Vec<u8>, u16); 6] = [
            (client_frame(0, true, b"x"), 1002),
            (
                [client_frame(1, false, b"a"), client_frame(1, true, b"b")].concat(),
                1002,
            ),
            (client_frame(1, true, &[0xc3, 0x28]), 1007),
            // Invalid in the first fragment already: fails without the rest.
            (client_frame(1, false, &[0xff]), 1007),
            (client_frame(8, true, b"\x03"), 1002),
            (client_frame(8, true, b"\x03\xe8\xff"), 1007),
        ];
        for (wire, code) in cases {
            let err = decode_all(&mut Decoder::new(1024), &wire).unwrap_err();
            assert_eq!(err.close_code(), code, "{wire:?}");
        }
        // A character split across fragments is fine.
        let mut wire = client_frame(1, false, &[0xc3]);
        wire.extend(client_frame(0, true, &[0xa9]));
        assert_eq!(
            decode_all(&mut Decoder::new(1024), &wire).unwrap(),
            [Incoming::Text("é".into())]
        );
    }

    proptest! {
        /// However the bytes are cut into reads, the same items come out.
        #[test]
        fn any_read_boundaries_give_the_same_items(
            messages in prop::collection::vec(
                (any::<bool>(), prop::collection::vec(any::<u8>(), 0..300), 1usize..4),
                1..6,
            ),
            cuts in prop::collection::vec(1usize..97, 1..40),
        ) {
            let mut wire = Vec::new();
            let mut expected = Vec::new();
            for (text, data, pieces) in &messages {
                let data = if *text {
                    String::from_utf8_lossy(data).into_owned().into_bytes()
                } else {
                    data.clone()
                };
                let step = data.len().div_ceil(*pieces).max(1);
                let chunks: Vec<&[u8]> = if data.is_empty() { vec![&[][..]] } else { data.chunks(step).collect() };
                for (i, chunk) in chunks.iter().enumerate() {
                    let op = if i > 0 { 0 } else if *text { 1 } else { 2 };
                    wire.extend(client_frame(op, i + 1 == chunks.len(), chunk));
                }
                expected.push(if *text {
                    Incoming::Text(String::from_utf8(data).unwrap().into())
                } else {
                    Incoming::Binary(Bytes::from(data))
                });
            }
            let mut decoder = Decoder::new(1 << 20);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut at = 0;
            let mut cut = cuts.iter().cycle();
            while at < wire.len() {
                let end = (at + cut.next().unwrap()).min(wire.len());
                buf.extend_from_slice(&wire[at..end]);
                at = end;
                while let Some(item) = decoder.decode(&mut buf).unwrap() {
                    got.push(item);
                }
            }
            prop_assert_eq!(got, expected);
            prop_assert!(buf.is_empty());
        }
    }
}
